"""One request and its answer: authorize it, forward it, stream the response back.

An `Exchange` belongs to a `ClientConnection` (gateway.proxy) and, while forwarding, to one
`UpstreamConnection` (gateway.upstream). Its `state` moves waiting -> inspecting (reading the
body for the app id) -> connecting -> forwarding -> answered; every refusal goes through
`answer`, every outcome is counted once by `log`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.core import decision as decide
from gateway.core.decision import AMBIGUOUS_REQUEST, KeySnapshot
from gateway.core.iprules import client_ip
from gateway.core.routes import RouteMatch
from gateway.proxy.upstream import UpstreamConnection
from gateway.wire.ambiguous import (
    AMBIGUOUS,
    IDEMPOTENT,
    METHOD_OVERRIDES,
    body_app_id,
    canonical,
    header_app_id,
    is_json_media_type,
    query_app_id,
    target_is_ambiguous,
)
from gateway.wire.refusals import BAD_REQUEST, CONTINUE, deny_response, status_line

if TYPE_CHECKING:
    from gateway.proxy.connection import ClientConnection

# Reasons to stop reading from a client; reading resumes when none is left.
PIPELINE, UPSTREAM_FULL, BUFFER_FULL = 1, 2, 4
HIGH_WATER = 256 * 1024
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
# Request headers the gateway sets itself (framing, forwarding, identity), compared after
# `canonical` so that `X_Forwarded_For` goes with `X-Forwarded-For`.
REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
}
RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
LAST_CHUNK = b"0\r\n\r\n"
NO_TOKENS: frozenset[bytes] = frozenset()


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def tokens(value: bytes) -> set[bytes]:
    """The lower-cased tokens of a comma-separated header such as Connection."""
    return {token.strip().lower() for token in value.split(b",")}


class ProtocolError(Exception):
    """The request breaks HTTP framing rules; answer with `deny` and close."""

    def __init__(self, deny: decide.Deny) -> None:
        self.deny = deny


class Exchange:
    """One request and its answer: authorize, forward, stream the response back."""

    __slots__ = (
        "ambiguous",
        "app_id",
        "body",
        "body_size",
        "bytes_out",
        "chunked_in",
        "chunked_out",
        "client",
        "client_host",
        "close_delimited",
        "conn",
        "connecting",
        "connection_tokens",
        "content_encoded",
        "content_length",
        "content_types",
        "expect_continue",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "headers",
        "keep_alive",
        "key",
        "key_sent",
        "logged",
        "lowers",
        "method",
        "plugin",
        "presented",
        "replay",
        "request_complete",
        "response_bytes",
        "response_complete",
        "response_started",
        "route",
        "sent_at",
        "started",
        "state",
        "status",
        "upgrade",
        "upstream",
        "upstream_keep_alive",
        "upstream_paused",
        "upstream_seen",
        "url",
        "version",
    )

    def __init__(
        self,
        conn: ClientConnection,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.url = url
        self.headers = headers
        self.lowers: list[bytes] = []  # each header's name, lower-cased, `_` read as `-`
        self.keep_alive = keep_alive
        self.ambiguous = target_is_ambiguous(url)
        self.content_types: list[bytes] = []
        self.content_encoded = False
        self.presented = b""
        self.key_sent = False
        self.plugin = False
        self.client_host = b""
        self.connection_tokens: frozenset[bytes] | set[bytes] = NO_TOKENS
        self.forwarded_for: list[bytes] = []
        self.forwarded_proto = b""
        self.forwarded_host = b""
        self.version = b"1.1"
        self.chunked_in = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.upgrade = False
        self.state = "waiting"  # waiting | inspecting | connecting | forwarding | answered
        self.key: KeySnapshot | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.request_complete = False
        self.upstream: UpstreamConnection | None = None
        self.connecting: asyncio.Task | None = None
        self.replay = False
        self.response_started = False
        self.response_complete = False
        self.response_bytes = False
        self.chunked_out = False
        self.close_delimited = False
        self.upstream_keep_alive = False
        self.upstream_paused = False
        self.upstream_seen = conn.server.now
        self.started = time.monotonic()
        self.sent_at = 0.0
        self.route: RouteMatch | None = None
        self.app_id: str | None = None
        self.client = conn.peer
        self.bytes_out = 0
        self.status = 0
        self.logged = False

    # request side
    def scan_headers(self, version: str) -> None:
        """One pass over the request headers for everything the exchange needs later; refuse
        ambiguous framing (both CL and TE, differing CLs, any TE but `chunked`) at once, and
        mark the request ambiguous when the upstream could read its key, method or host
        differently (a second key header, a method override naming another method, two Hosts)."""
        self.version = version.encode()
        server = self.conn.server
        auth_header, plugin_header = server.auth_header, server.plugin_header
        trusted = self.conn.peer_trusted
        lengths: set[bytes] = set()
        codings = []
        lowers = self.lowers
        key_headers = hosts = 0
        for name, value in self.headers:
            lower = name.lower()
            canon = canonical(lower)
            lowers.append(canon)
            if canon == auth_header:
                key_headers += 1
                stripped = value.strip()
                self.key_sent = bool(stripped)
                self.presented = self._key_from(stripped, server.auth_scheme)
            elif lower == b"host":
                hosts += 1
                self.client_host = value
            elif lower == b"content-length":
                lengths.add(value.strip())
            elif lower == b"transfer-encoding":
                codings.append(value.strip().lower())
            elif lower == b"connection":
                self.connection_tokens = self.connection_tokens | tokens(value)
            elif lower == b"content-type":
                self.content_types.append(value)
            elif lower == b"content-encoding":
                self.content_encoded = True
            elif canon == plugin_header:
                self.plugin = True  # present, even empty
            elif lower == b"x-forwarded-for":
                self.forwarded_for.append(value)
            elif lower == b"upgrade":
                self.upgrade = True
            elif lower == b"expect":
                if value.strip().lower() != b"100-continue":
                    raise ProtocolError(BAD_REQUEST)
                self.expect_continue = version == "1.1"
            elif canon in METHOD_OVERRIDES:
                if value.strip().upper() != self.method:
                    self.ambiguous = True
            elif trusted and lower == b"x-forwarded-proto":
                self.forwarded_proto = value
            elif trusted and lower == b"x-forwarded-host":
                self.forwarded_host = value
        if key_headers > 1 or hosts > 1:
            self.ambiguous = True
        if codings:
            if lengths or codings != [b"chunked"] or version != "1.1":
                raise ProtocolError(BAD_REQUEST)
            self.chunked_in = True
        elif lengths:
            if len(lengths) > 1:
                raise ProtocolError(BAD_REQUEST)
            (text,) = lengths
            if not text.isdigit():
                raise ProtocolError(BAD_REQUEST)
            self.content_length = int(text)

    @property
    def has_body(self) -> bool:
        return self.chunked_in or bool(self.content_length)

    def start(self) -> None:
        """This exchange is now the one being answered: decide."""
        if self.ambiguous:
            self.answer(decide.AMBIGUOUS_REQUEST)
            return
        conn = self.conn
        server = conn.server
        method = self.method.decode("latin-1")
        path = self.url.partition(b"?")[0].decode("latin-1")
        route = server.routes.match(method, path)
        self.route = route
        app_id = None
        if route is not None:
            source = route.app_source
            if source == "path":
                app_id = route.app_id
            elif source == "query" or source == "header":
                found = self._app_id_from(route)
                if found is AMBIGUOUS:
                    self.answer(decide.AMBIGUOUS_REQUEST)
                    return
                app_id = found  # type: ignore[assignment]
        self.app_id = app_id
        key = server.keyring.lookup(self.presented) if self.presented else None
        self.key = key
        ip = conn.peer_ip
        if conn.peer_trusted and self.forwarded_for:
            self.client = server.trusted.client(conn.peer, b",".join(self.forwarded_for).decode("latin-1"))
            ip = client_ip(self.client)
        decision = decide.authorize(key, self.key_sent, ip, self.plugin, route, app_id, server.unknown_allowed)
        if isinstance(decision, decide.Deny):
            self.answer(decision)
        elif decision is decide.NEED_BODY:
            if self.content_length is not None and self.content_length > server.max_inspect:
                self.answer(decide.BODY_TOO_LARGE)
                return
            if self.has_body and (self.content_encoded or not is_json_media_type(self.content_types)):
                self.answer(decide.UNSUPPORTED_MEDIA_TYPE)
                return
            self.state = "inspecting"
            if self.expect_continue and not self.request_complete:
                conn.write(CONTINUE)
            if self.request_complete:
                self.inspect_body()
        else:
            self.forward()

    @staticmethod
    def _key_from(value: bytes, scheme: bytes) -> bytes:
        if not scheme:
            return value
        given, _, rest = value.partition(b" ")
        if given.lower() != scheme:
            return b""
        return rest.strip()

    def _app_id_from(self, route: RouteMatch) -> object:
        """The app id from the query or a header: a str, None, or AMBIGUOUS."""
        if route.app_source == "query":
            return query_app_id(self.url.partition(b"?")[2].decode("latin-1"), route.app_key or "")
        wanted = canonical((route.app_key or "").encode())
        return header_app_id(
            [value for (_, value), lower in zip(self.headers, self.lowers, strict=True) if lower == wanted]
        )

    def on_request_body(self, data: bytes) -> None:
        state = self.state
        if state == "forwarding":
            self.upstream.write(chunk(data) if self.chunked_in else data)  # type: ignore[union-attr]
            return
        if state == "answered":
            return
        self.body.append(data)
        self.body_size += len(data)
        if state == "inspecting":
            if self.body_size > self.conn.server.max_inspect:
                self.answer(decide.BODY_TOO_LARGE)
        elif self.body_size > HIGH_WATER:
            self.conn.pause_reading(BUFFER_FULL)

    def on_request_complete(self) -> None:
        self.request_complete = True
        state = self.state
        if state == "inspecting":
            self.inspect_body()
        elif state == "forwarding":
            if self.chunked_in:
                self.upstream.write(LAST_CHUNK)  # type: ignore[union-attr]
            self.upstream_seen = self.conn.server.now
        elif state == "answered" and self.response_complete:
            self.conn.finished(self)

    def inspect_body(self) -> None:
        route = self.route
        assert route is not None and self.key is not None
        app_id = body_app_id(b"".join(self.body), route.app_key or "")
        if app_id is AMBIGUOUS:
            self.answer(decide.AMBIGUOUS_REQUEST)
            return
        self.app_id = app_id  # type: ignore[assignment]
        decision = decide.authorize_app(self.key, app_id)
        if isinstance(decision, decide.Deny):
            self.answer(decision)
        else:
            self.replay = self.method in IDEMPOTENT  # the whole body is in hand
            self.forward()

    def forward(self) -> None:
        conn = self.conn
        server = conn.server
        server.usage.touch(self.key.id)  # type: ignore[union-attr]
        if self.expect_continue and not self.request_complete and self.state != "inspecting":
            conn.write(CONTINUE)
        if not self.has_body and self.method in IDEMPOTENT:
            self.replay = True
        upstream = server.pool.take_idle()
        if upstream is not None:
            self.attach(upstream)
        else:
            self.state = "connecting"
            self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        try:
            upstream = await self.conn.server.pool.connect()
        except TimeoutError:
            self.connecting = None
            self.answer(decide.UPSTREAM_TIMEOUT)
            return
        except OSError as err:
            self.connecting = None
            self.conn.server.upstream_failed(err)
            self.answer(decide.UPSTREAM_UNAVAILABLE)
            return
        self.connecting = None
        if self.state != "connecting":  # the client went away meanwhile
            self.conn.server.pool.release(upstream)
            return
        upstream.reused = False
        self.attach(upstream)

    def attach(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        upstream.exchange = self
        self.state = "forwarding"
        self.upstream_seen = self.conn.server.now
        self.sent_at = time.monotonic()
        parts = [self.request_head()]
        if self.body:
            if self.chunked_in:
                parts.extend(chunk(piece) for piece in self.body)
            else:
                parts.extend(self.body)
            if not self.replay:
                self.body = []
        if self.request_complete and self.chunked_in:
            parts.append(LAST_CHUNK)
        upstream.write(b"".join(parts))
        self.conn.resume_reading(BUFFER_FULL)

    def request_head(self) -> bytes:
        conn = self.conn
        server = conn.server
        key = self.key
        assert key is not None
        client_host = self.client_host
        forwarded_for = b", ".join(self.forwarded_for) if conn.peer_trusted else b""
        forwarded_proto = self.forwarded_proto
        forwarded_host = self.forwarded_host
        drop_connection_tokens = self.connection_tokens
        peer = conn.peer.encode()
        lines = [
            b"%s %s HTTP/1.1\r\n" % (self.method, self.url),
            b"Host: %s\r\n" % (client_host if server.preserve_host and client_host else server.pool.host_header),
        ]
        append = lines.append
        auth_header = server.auth_header if server.strip_auth else None
        for (name, value), lower in zip(self.headers, self.lowers, strict=True):
            if (
                lower in REQUEST_DROP
                or lower == auth_header
                or lower.startswith(b"x-gateway-")
                or lower in drop_connection_tokens
            ):
                continue
            append(b"%s: %s\r\n" % (name, value))
        append(b"X-Forwarded-For: %s\r\n" % (forwarded_for + b", " + peer if forwarded_for else peer))
        append(b"X-Real-IP: %s\r\n" % self.client.encode())
        append(b"X-Forwarded-Proto: %s\r\n" % (forwarded_proto or server.scheme))
        if forwarded_host or client_host:
            append(b"X-Forwarded-Host: %s\r\n" % (forwarded_host or client_host))
        append(key.identity_headers)
        if self.chunked_in:
            append(b"Transfer-Encoding: chunked\r\n")
        elif self.content_length is not None:
            append(b"Content-Length: %d\r\n" % self.content_length)
        append(b"\r\n")
        return b"".join(lines)

    # response side
    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], upstream_keep_alive: bool
    ) -> None:
        self.response_started = True
        self.status = status
        self.upstream_keep_alive = upstream_keep_alive
        self.conn.server.metrics.observe_upstream(time.monotonic() - self.sent_at)
        length: bytes | None = None
        upstream_chunked = False
        drop_tokens: set[bytes] = set()
        lowers = [name.lower() for name, _ in headers]
        for (_, value), lower in zip(headers, lowers, strict=True):
            if lower == b"content-length":
                length = value.strip()
            elif lower == b"transfer-encoding":
                upstream_chunked = True
            elif lower == b"connection":
                drop_tokens |= tokens(value)
        lines = [status_line(status, reason)]
        append = lines.append
        for (name, value), lower in zip(headers, lowers, strict=True):
            if lower in RESPONSE_DROP or lower in drop_tokens:
                continue
            append(b"%s: %s\r\n" % (name, value))
        if self.method == b"HEAD" or status in (204, 304):  # no body follows
            if length is not None and status != 204:
                append(b"Content-Length: %s\r\n" % length)
        elif length is not None and not upstream_chunked:
            append(b"Content-Length: %s\r\n" % length)
        else:
            self.close_delimited = not upstream_chunked
            if self.version == b"1.1":
                self.chunked_out = True
                append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False
        if not self.keep_alive or not self.request_complete:
            self.keep_alive = False
            append(b"Connection: close\r\n")
        elif self.version == b"1.0":
            append(b"Connection: keep-alive\r\n")
        append(b"\r\n")
        self.conn.write(b"".join(lines))
        if self.method == b"HEAD":
            self.upstream_keep_alive = False  # the parser would wait for a body that never comes
            self.on_response_complete()

    def on_response_body(self, data: bytes) -> None:
        if self.response_complete:
            return
        self.bytes_out += len(data)
        self.conn.write(chunk(data) if self.chunked_out else data)

    def on_response_complete(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        if self.chunked_out:
            self.conn.write(LAST_CHUNK)
        upstream = self.upstream
        self.upstream = None
        self.state = "answered"
        self.log(self.status, "allowed")
        if upstream is not None:
            upstream.exchange = None
            if self.upstream_paused and upstream.transport is not None:
                self.upstream_paused = False
                upstream.transport.resume_reading()
            if self.upstream_keep_alive and self.request_complete and not upstream.closed:
                self.conn.server.pool.release(upstream)
            else:
                upstream.abort()
        self.conn.finished(self)

    def on_upstream_lost(self) -> None:
        upstream = self.upstream
        if upstream is None or self.response_complete:
            return
        upstream.exchange = None
        self.upstream = None
        if not self.response_started:
            if upstream.reused and not self.response_bytes and self.replay:
                self.state = "connecting"  # a stale keep-alive connection: try once on a new one
                self.connecting = asyncio.ensure_future(self._connect())
                return
            self.answer(decide.UPSTREAM_UNAVAILABLE)
        elif self.close_delimited:
            self.on_response_complete()
        else:
            self.log(self.status, "upstream_aborted")
            self.conn.abort()  # truncated: the client must see a broken response, not a short one

    def on_upstream_timeout(self) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.abort()
        if self.response_started:
            self.log(self.status, "upstream_timeout")
            self.conn.abort()
        else:
            self.answer(decide.UPSTREAM_TIMEOUT)

    def answer(self, deny: decide.Deny) -> None:
        """Answer with a refusal; close the connection if the request was not read in full."""
        if self.response_started:
            self.log(self.status, deny.reason)
            self.conn.abort()
            return
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        self.state = "answered"
        self.log(deny.status, deny.reason)
        self.response_started = True
        self.response_complete = True
        self.body = []
        # A request without a body is framed by its head alone: the connection can serve the
        # next one. A body we refused before reading it would have to be read first: close.
        # So does a request that could be read two ways: its sender may be probing for a desync.
        close = not self.keep_alive or (self.has_body and not self.request_complete) or deny is AMBIGUOUS_REQUEST
        self.keep_alive = not close
        conn = self.conn
        conn.write(deny_response(deny, close, conn.server.config.auth.scheme))
        if close:
            conn.close()
        elif self.request_complete:
            conn.finished(self)
        # else: on_request_complete (right after this head) hands the connection on

    def upstream_full(self) -> None:
        """The upstream cannot take more body yet: stop reading the client."""
        self.conn.pause_reading(UPSTREAM_FULL)

    def upstream_drained(self) -> None:
        self.conn.resume_reading(UPSTREAM_FULL)

    def pause_upstream(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not self.upstream_paused:
            self.upstream_paused = True
            upstream.transport.pause_reading()

    def resume_upstream(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and self.upstream_paused:
            self.upstream_paused = False
            upstream.transport.resume_reading()

    def log(self, status: int, reason: str) -> None:
        """Count the outcome once, and queue its access-log line."""
        if self.logged:
            return
        self.logged = True
        key, route = self.key, self.route
        self.conn.server.record(
            status,
            reason,
            self.client,
            key,
            route.interface if route is not None else None,
            self.app_id,
            time.monotonic() - self.started,
            self.bytes_out,
        )

    def on_client_lost(self) -> None:
        """The client is gone: never reuse an upstream connection mid-exchange."""
        if not self.response_complete:
            self.log(499, "client_closed")
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self.state = "answered"
        upstream = self.upstream
        self.upstream = None
        if upstream is not None and not self.response_complete:
            upstream.abort()

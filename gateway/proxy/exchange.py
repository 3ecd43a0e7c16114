"""One request and its answer: decide, forward, stream the response back.

An `Exchange` is made by a `ClientConnection` for each request head and talks back to it
through a narrow seam (write, cork/uncork, pause/resume reading, finished, close/abort).
While forwarding it owns one `UpstreamConnection`, which calls the `on_response_*` methods.
The HTTP rules live in `gateway.wire`, the decision in `gateway.core.decision`; this object
only sequences them. Its phases and the moves between them are the table `PHASES`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from gateway.core import decision as decide
from gateway.core.decision import KeySnapshot
from gateway.core.iprules import client_ip
from gateway.core.routes import RouteMatch
from gateway.proxy.upstream import UpstreamConnection
from gateway.wire.ambiguous import AMBIGUOUS, IDEMPOTENT, body_app_id, header_app_id, is_json_media_type, query_app_id
from gateway.wire.refusals import CONTINUE, deny_response
from gateway.wire.request import RequestHead, upstream_head
from gateway.wire.response import LAST_CHUNK, ResponsePlan, chunk, plan_response

if TYPE_CHECKING:
    from gateway.proxy.connection import ClientConnection

# Reasons to stop reading from a client; reading resumes when none is left.
PIPELINE, UPSTREAM_FULL, BUFFER_FULL = 1, 2, 4
HIGH_WATER = 256 * 1024  # request body bytes held while the decision is pending

WAITING, INSPECTING, CONNECTING, FORWARDING, ANSWERED = "waiting", "inspecting", "connecting", "forwarding", "answered"
PHASES: dict[str, frozenset[str]] = {
    WAITING: frozenset({INSPECTING, CONNECTING, FORWARDING, ANSWERED}),  # decided on the head
    INSPECTING: frozenset({CONNECTING, FORWARDING, ANSWERED}),  # decided on the body's app id
    CONNECTING: frozenset({FORWARDING, ANSWERED}),  # a new upstream connection, or a refusal
    FORWARDING: frozenset({CONNECTING, ANSWERED}),  # a replay on a fresh connection, or done
    ANSWERED: frozenset({ANSWERED}),
}


class Exchange:
    __slots__ = (
        "app_id",
        "body",
        "body_size",
        "bytes_out",
        "client",
        "conn",
        "connecting",
        "head",
        "keep_alive",
        "key",
        "plan",
        "recorded",
        "replay",
        "request_complete",
        "response_complete",
        "response_started",
        "reused",
        "route",
        "sent_at",
        "started",
        "state",
        "status",
        "upstream",
        "upstream_paused",
        "upstream_seen",
        "upstream_spoke",
    )

    def __init__(self, conn: ClientConnection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.keep_alive = head.keep_alive
        self.state = WAITING
        self.client = conn.peer  # the client IP the decision uses (after X-Forwarded-For)
        self.key: KeySnapshot | None = None
        self.route: RouteMatch | None = None
        self.app_id: str | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.request_complete = False
        self.upstream: UpstreamConnection | None = None
        self.connecting: asyncio.Task | None = None
        self.reused = False  # the upstream connection came from the idle pool
        self.replay = False  # the request may be sent again on a fresh connection
        self.upstream_spoke = False  # a byte of an answer arrived from the upstream
        self.upstream_paused = False
        self.upstream_seen = conn.server.now
        self.plan: ResponsePlan | None = None
        self.response_started = False
        self.response_complete = False
        self.started = time.monotonic()
        self.sent_at = 0.0
        self.status = 0
        self.bytes_out = 0
        self.recorded = False

    def _enter(self, phase: str) -> None:
        assert phase in PHASES[self.state], f"{self.state} -> {phase}"
        self.state = phase

    # the decision
    def start(self) -> None:
        """This exchange is now the one being answered: decide on the head."""
        head = self.head
        if head.ambiguous:
            self.refuse(decide.AMBIGUOUS_REQUEST)
            return
        server = self.conn.server
        route = server.routes.match(head.method.decode("latin-1"), head.path.decode("latin-1"))
        self.route = route
        if route is not None:
            if route.app_source == "path":
                self.app_id = route.app_id
            elif route.app_source == "query" or route.app_source == "header":
                found = self._app_id_from(route)
                if found is AMBIGUOUS:
                    self.refuse(decide.AMBIGUOUS_REQUEST)
                    return
                self.app_id = found  # type: ignore[assignment]
        key = server.keyring.lookup(head.presented) if head.presented else None
        self.key = key
        ip = self.conn.peer_ip
        if self.conn.peer_trusted and head.forwarded_for:
            self.client = server.trusted.client(self.client, b",".join(head.forwarded_for).decode("latin-1"))
            ip = client_ip(self.client)
        verdict = decide.authorize(key, head.key_sent, ip, head.plugin, route, self.app_id, server.unknown_allowed)
        if isinstance(verdict, decide.Deny):
            self.refuse(verdict)
        elif verdict is decide.NEED_BODY:
            if head.content_length is not None and head.content_length > server.max_inspect:
                self.refuse(decide.BODY_TOO_LARGE)
            elif head.has_body and (head.content_encoded or not is_json_media_type(head.content_types)):
                self.refuse(decide.UNSUPPORTED_MEDIA_TYPE)
            else:
                self._enter(INSPECTING)
                if self.request_complete:
                    self.inspect_body()
                elif head.expect_continue:
                    self.conn.write(CONTINUE)
        else:
            self.forward()

    def _app_id_from(self, route: RouteMatch) -> object:
        """The app id from the query or a header: a str, None, or AMBIGUOUS."""
        if route.app_source == "query":
            return query_app_id(self.head.url.partition(b"?")[2].decode("latin-1"), route.app_key or "")
        return header_app_id(self.head.values((route.app_key or "").replace("_", "-").encode()))

    def on_request_body(self, data: bytes) -> None:
        state = self.state
        if state == FORWARDING:
            self.upstream.write(chunk(data) if self.head.chunked else data)  # type: ignore[union-attr]
        elif state != ANSWERED:
            self.body.append(data)
            self.body_size += len(data)
            if state == INSPECTING:
                if self.body_size > self.conn.server.max_inspect:
                    self.refuse(decide.BODY_TOO_LARGE)
            elif self.body_size > HIGH_WATER:
                self.conn.pause_reading(BUFFER_FULL)

    def on_request_complete(self) -> None:
        self.request_complete = True
        state = self.state
        if state == INSPECTING:
            self.inspect_body()
        elif state == FORWARDING:
            if self.head.chunked:
                self.upstream.write(LAST_CHUNK)  # type: ignore[union-attr]
            self.upstream_seen = self.conn.server.now
        elif state == ANSWERED and self.response_complete:
            self.conn.finished(self)

    def inspect_body(self) -> None:
        assert self.route is not None and self.key is not None
        app_id = body_app_id(b"".join(self.body), self.route.app_key or "")
        if app_id is AMBIGUOUS:
            self.refuse(decide.AMBIGUOUS_REQUEST)
            return
        self.app_id = app_id  # type: ignore[assignment]
        verdict = decide.authorize_app(self.key, self.app_id)
        if isinstance(verdict, decide.Deny):
            self.refuse(verdict)
        else:
            self.forward()

    # forwarding
    def forward(self) -> None:
        conn = self.conn
        head = self.head
        conn.server.usage.touch(self.key.id)  # type: ignore[union-attr]
        if head.expect_continue and not self.request_complete and self.state != INSPECTING:
            conn.write(CONTINUE)
        # sent again only when repeating it is harmless and the whole body is in hand
        self.replay = head.method in IDEMPOTENT and (not head.has_body or self.state == INSPECTING)
        upstream = conn.server.pool.take_idle()
        if upstream is not None:
            self.reused = True
            self.attach(upstream)
        else:
            self._enter(CONNECTING)
            self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        server = self.conn.server
        try:
            upstream = await server.pool.connect()
        except TimeoutError:
            self.connecting = None
            self.refuse(decide.UPSTREAM_TIMEOUT)
            return
        except OSError as err:
            self.connecting = None
            server.upstream_failed(err)
            self.refuse(decide.UPSTREAM_UNAVAILABLE)
            return
        self.connecting = None
        if self.state != CONNECTING:  # the client went away meanwhile
            server.pool.release(upstream)
            return
        self.reused = False
        self.attach(upstream)

    def attach(self, upstream: UpstreamConnection) -> None:
        conn = self.conn
        server = conn.server
        self.upstream = upstream
        upstream.exchange = self
        self._enter(FORWARDING)
        self.upstream_seen = server.now
        self.sent_at = time.monotonic()
        head = self.head
        identity = self.key.identity_headers  # type: ignore[union-attr]
        parts = [
            upstream_head(head, server.head_rules, conn.peer_trusted, conn.peer_bytes, self.client.encode(), identity)
        ]
        if self.body:
            parts.extend(chunk(piece) for piece in self.body) if head.chunked else parts.extend(self.body)
            if not self.replay:
                self.body = []
        if self.request_complete and head.chunked:
            parts.append(LAST_CHUNK)
        upstream.write(b"".join(parts))
        conn.resume_reading(BUFFER_FULL)

    # the response, called by the upstream connection
    def receiving(self) -> None:
        """A burst of upstream bytes begins: the answer is under way; collect client writes."""
        self.upstream_seen = self.conn.server.now
        self.upstream_spoke = True
        self.conn.cork()

    def received(self) -> None:
        self.conn.uncork()

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], upstream_keep_alive: bool
    ) -> None:
        self.response_started = True
        self.status = status
        self.conn.server.metrics.observe_upstream(time.monotonic() - self.sent_at)
        head = self.head
        plan = plan_response(
            head.method, head.version, status, reason, headers, self.keep_alive and self.request_complete
        )
        self.plan = plan
        self.keep_alive = plan.keep_alive
        self.conn.write(plan.head)
        if head.method == b"HEAD":
            self.on_response_complete(reusable=False)  # the parser would wait for a body that never comes
        elif not upstream_keep_alive and self.upstream is not None:
            self.upstream.keep = False

    def on_response_body(self, data: bytes) -> None:
        if not self.response_complete:
            self.bytes_out += len(data)
            self.conn.write(chunk(data) if self.plan.chunked else data)  # type: ignore[union-attr]

    def on_response_complete(self, reusable: bool = True) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        if self.plan is not None and self.plan.chunked:
            self.conn.write(LAST_CHUNK)
        upstream = self.upstream
        self.upstream = None
        self._enter(ANSWERED)
        self.record(self.status, "allowed")
        if upstream is not None:
            self.resume_upstream(upstream)
            upstream.exchange = None
            if reusable and upstream.keep and self.request_complete and not upstream.closed:
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
            if self.reused and self.replay and not self.upstream_spoke:
                self._enter(CONNECTING)  # a stale pooled connection: once more on a new one
                self.connecting = asyncio.ensure_future(self._connect())
            else:
                self.refuse(decide.UPSTREAM_UNAVAILABLE)
        elif self.plan is not None and self.plan.close_delimited:
            self.on_response_complete()
        else:
            self.record(self.status, "upstream_aborted")
            self.conn.abort()  # truncated: the client must see a broken response, not a short one

    def on_upstream_timeout(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()
        if self.response_started:
            self.record(self.status, "upstream_timeout")
            self.conn.abort()
        else:
            self.refuse(decide.UPSTREAM_TIMEOUT)

    # flow control: the upstream's writes follow the client's reads, and back
    def upstream_full(self) -> None:
        self.conn.pause_reading(UPSTREAM_FULL)

    def upstream_drained(self) -> None:
        self.conn.resume_reading(UPSTREAM_FULL)

    def pause_upstream(self) -> None:
        if self.upstream is not None and not self.upstream_paused:
            self.upstream_paused = True
            self.upstream.pause_reading()

    def resume_upstream(self, upstream: UpstreamConnection | None = None) -> None:
        upstream = upstream or self.upstream
        if upstream is not None and self.upstream_paused:
            self.upstream_paused = False
            upstream.resume_reading()

    # endings
    def refuse(self, deny: decide.Deny) -> None:
        """Answer with a refusal, or break the connection if an answer is already under way."""
        if self.response_started:
            self.record(self.status, deny.reason)
            self.conn.abort()
            return
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        self._enter(ANSWERED)
        self.record(deny.status, deny.reason)
        self.response_started = self.response_complete = True
        self.body = []
        # A request without a body is framed by its head alone: the connection can serve the
        # next one. A body we refused before reading it would have to be read first: close.
        # So does a request that could be read two ways: its sender may be probing for a desync.
        close = (
            not self.keep_alive
            or (self.head.has_body and not self.request_complete)
            or deny is decide.AMBIGUOUS_REQUEST
        )
        self.keep_alive = not close
        conn = self.conn
        conn.write(deny_response(deny, close, conn.server.config.auth.scheme))
        if close:
            conn.close()
        elif self.request_complete:
            conn.finished(self)
        # else: on_request_complete (right after this head) hands the connection on

    def record(self, status: int, reason: str) -> None:
        """Count the outcome once (metrics, access log)."""
        if not self.recorded:
            self.recorded = True
            interface = self.route.interface if self.route is not None else None
            latency = time.monotonic() - self.started
            self.conn.server.record(
                status, reason, self.client, self.key, interface, self.app_id, latency, self.bytes_out
            )

    def on_client_lost(self) -> None:
        """The client is gone: never reuse an upstream connection mid-exchange."""
        if not self.response_complete:
            self.record(499, "client_closed")
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self.state = ANSWERED
        upstream, self.upstream = self.upstream, None
        if upstream is not None and not self.response_complete:
            upstream.abort()

    # what the connection asks
    @property
    def reusable(self) -> bool:
        """Answered in full on a connection that may serve the next request."""
        return self.keep_alive and self.request_complete

    def expired(self, now: float, idle_since: float, idle_timeout: float, read_timeout: float) -> bool:
        """Check the upstream's read timeout; True if the client stalled mid-body."""
        if self.upstream is not None and self.request_complete and not self.response_complete:
            if now - self.upstream_seen > read_timeout:
                self.on_upstream_timeout()
            return False
        return not self.request_complete and now - idle_since > idle_timeout

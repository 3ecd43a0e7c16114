"""Keep-alive connections to the upstream, parsed with httptools.

One `UpstreamConnection` carries one relay at a time; the pool hands out idle ones
newest first (they are the least likely to have been closed by the upstream). A connection
goes back to the pool only when its answer ended exactly where its framing said and nothing
else came in that read: bytes after an answer are an answer to nobody, and the next request
on that connection would get them as its own (a response desync).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools

from gateway.config import Upstream
from gateway.proxy.outbox import Outbox
from gateway.proxy.seams import Receiver
from gateway.wire.response import ResponseShapes


class Overrun(Exception):
    """Raised from a parser callback: the upstream sent more than its answer, or a head over
    the limit; the connection is dropped."""


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "body_size",
        "chunk",
        "closed",
        "ended",
        "feeding",
        "head_bytes",
        "headers",
        "heads",
        "idle",
        "in_head",
        "interim",
        "keep",
        "keep_alive",
        "parser",
        "pool",
        "reason",
        "relay",
        "settle",
        "status",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.relay: Receiver | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.interim = False
        self.keep = True  # False once the upstream said it closes this connection after its answer
        self.closed = False
        self.idle = True  # the parser stands between two messages
        self.chunk: bytes | None = None  # the read being parsed, when its head may be learnt
        self.status = 0
        self.keep_alive = True  # what the head being read says of the connection
        self.body_size = 0
        self.in_head = False
        self.head_bytes = 0  # of the head being read: over the pool's max_head, the answer is refused
        self.heads = 0  # heads begun: tells whether a read held only one head's bytes
        self.feeding = False  # inside parser.feed_data
        self.ended = False  # a final answer ended in the read being parsed
        self.settle: bool | None = None  # pool or drop, decided at the end of the read (see finish)

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None:  # nothing was asked: an upstream talking out of turn
            self.abort()
            return
        if self.idle and not relay.head_only:
            whole = self.pool.shapes.whole(data)  # (exactly one answer: nothing after it)
            if whole is not None:  # a known head and all of its body: no parser needed
                relay.on_whole_response(*whole)
                return
            self.chunk = data if self.pool.shapes.learning() else None
        relay.receiving()
        heads = self.heads
        self.feeding = True
        try:
            self.parser.feed_data(data)
            if self.in_head and self.heads == heads:  # the whole read belongs to the head being read
                self.head_bytes += len(data)
                if self.head_bytes > self.pool.max_head:
                    raise httptools.HttpParserError("upstream head too large")
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # (a 101 or a tunnel: never ours)
            self.closed = True
            if self.relay is relay:
                relay.on_upstream_lost()
            self.abort()
        finally:
            self.feeding = False
            self.ended = False
            relay.received()
            settle, self.settle = self.settle, None
            if settle is not None:
                self._settle(settle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        relay = self.relay
        if relay is not None:
            relay.on_upstream_lost()

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.upstream_full()

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.upstream_drained()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.ended:
            raise Overrun  # a second answer, or bytes past the first one's framing
        self.idle = False
        self.headers = []
        self.reason = b""
        self.body_size = 0
        self.in_head = True
        self.head_bytes = 0
        self.heads += 1

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        self.head_bytes += len(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.pool.max_head:
            raise Overrun

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.status = status = self.parser.get_status_code()
        if status < 200:
            self.interim = True  # 1xx: not forwarded; the final answer follows
            return
        self.keep_alive = keep_alive = self.parser.should_keep_alive()
        relay = self.relay
        if relay is not None:
            relay.on_response_head(status, self.reason, self.headers, keep_alive)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        relay = self.relay
        if relay is not None:
            relay.on_response_body(body)

    def on_message_complete(self) -> None:
        self.idle = True
        chunk, self.chunk = self.chunk, None  # a later message in this read did not start it
        if self.interim:
            self.interim = False
            return
        if chunk is not None:
            self.pool.shapes.learn(chunk, self.status, self.reason, self.headers, self.keep_alive, self.body_size)
        self.ended = True
        relay = self.relay
        if relay is not None:
            relay.on_response_complete()

    # the seam a relay uses
    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.pool.outbox.send(self.transport, data)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def finish(self, reusable: bool) -> None:
        """The relay is done with this connection: back to the pool if `reusable`, once the
        read being parsed (if any) is known to have held nothing after the answer."""
        self.relay = None
        if self.feeding:
            self.settle = reusable
        elif reusable and self.keep and not self.closed:
            self.pool.release(self)
        else:
            self.abort()

    def _settle(self, reusable: bool) -> None:
        if reusable and self.keep and not self.closed:
            self.pool.release(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        self.relay = None
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    def __init__(self, config: Upstream, outbox: Outbox, max_head: int = 65536) -> None:
        self.outbox = outbox
        url = urlsplit(config.url)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host_text = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host_text if default_port else f"{host_text}:{self.port}").encode()
        self.connect_timeout = config.connect_timeout
        self.read_timeout = config.read_timeout
        self.max_idle = config.max_idle_connections
        self.max_head = max_head
        self.ssl: ssl.SSLContext | None = None
        if self.tls:
            self.ssl = ssl.create_default_context()
            if not config.verify_tls:
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        self.idle: list[UpstreamConnection] = []
        self.shapes = ResponseShapes()  # response heads seen before (see wire.response)

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):  # not wait_for: it can swallow a cancel
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.relay = None
        if conn.closed or len(self.idle) >= self.max_idle:
            conn.abort()
            return
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        self.outbox.flush()
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()

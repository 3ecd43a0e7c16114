"""The upstream side of one allowed request: get a connection, send the request, stream the
answer back to the client.

A `Relay` is made by an `Exchange` once the decision allows the request, and handed the
exchange (`seams.Requester`), the client connection (`seams.Client`: where the answer goes)
and the upstream side (`seams.RelayServices`). It takes an idle pooled connection or opens
one, writes the upstream head and whatever body is in hand, and then receives the
`UpstreamConnection`'s callbacks. It reports back through three calls: `exchange.answered()`
(the answer went out in full), `exchange.refuse(deny)` (no answer came) and
`exchange.record()`. A request is sent a second time only when `replay` allows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from gateway.core import decision as decide
from gateway.proxy.seams import Client, RelayServices, Requester, UpstreamLink
from gateway.wire.request import upstream_head
from gateway.wire.response import LAST_CHUNK, ResponsePlan, ResponseShape, chunk, plan_response

UPSTREAM_FULL = 2  # a reason for the client connection to stop reading (see proxy.exchange)


class Relay:
    __slots__ = (
        "client",
        "connecting",
        "exchange",
        "head_only",
        "paused",
        "plan",
        "replay",
        "reused",
        "seen",
        "sent_at",
        "services",
        "spoke",
        "upstream",
    )

    def __init__(self, exchange: Requester, client: Client, services: RelayServices, replay: bool) -> None:
        self.exchange = exchange
        self.client = client
        self.services = services
        self.replay = replay  # the request may go again on a fresh connection
        self.upstream: UpstreamLink | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.reused = False  # the connection came from the idle pool
        self.spoke = False  # a byte of an answer arrived
        self.paused = False  # reading from the upstream is paused (the client reads slowly)
        self.seen = services.clock.now  # the upstream's last sign of life
        self.sent_at = 0.0
        self.plan: ResponsePlan | None = None
        self.head_only = exchange.head.method == b"HEAD"  # the answer has a head and no body

    def start(self) -> None:
        upstream = self.services.pool.take_idle()
        if upstream is not None:
            self.reused = True
            self.attach(upstream)
        else:
            self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        server = self.services
        try:
            upstream = await server.pool.connect()
        except OSError as err:  # TimeoutError included
            self.connecting = None
            if not isinstance(err, TimeoutError):
                server.upstream_failed(err)
            self.exchange.refuse(
                decide.UPSTREAM_TIMEOUT if isinstance(err, TimeoutError) else decide.UPSTREAM_UNAVAILABLE
            )
            return
        self.connecting = None
        if not self.exchange.relaying(self):  # the client went away meanwhile
            upstream.finish(True)
            return
        self.reused = False
        self.attach(upstream)

    def attach(self, upstream: UpstreamLink) -> None:
        exchange, conn, server = self.exchange, self.client, self.services
        self.upstream = upstream
        upstream.relay = self
        self.seen = server.clock.now
        self.sent_at = time.monotonic()
        head = exchange.head
        assert exchange.key is not None
        identity = exchange.key.identity_headers
        client = exchange.client.encode()
        parts = [upstream_head(head, server.head_rules, conn.peer_trusted, conn.peer_bytes, client, identity)]
        held = exchange.body_sent(keep=self.replay)  # what arrived while deciding and connecting
        if held:
            parts.extend([chunk(piece) for piece in held] if head.chunked else held)
        if exchange.request_complete and head.chunked:
            parts.append(LAST_CHUNK)
        upstream.write(b"".join(parts))

    # the request body, as the client sends it
    def send_body(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(chunk(data) if self.exchange.head.chunked else data)

    def request_sent(self) -> None:
        self.seen = self.services.clock.now
        if self.upstream is not None and self.exchange.head.chunked:
            self.upstream.write(LAST_CHUNK)

    # the answer, called by the upstream connection
    def receiving(self) -> None:
        """A burst of upstream bytes begins: the answer is under way; collect client writes."""
        self.seen = self.services.clock.now
        self.spoke = True
        self.client.cork()

    def received(self) -> None:
        self.client.uncork()

    def on_response_head(
        self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], upstream_keep_alive: bool
    ) -> None:
        exchange = self.exchange
        head = exchange.head
        self.answer(
            status,
            plan_response(head.method, head.version, status, reason, headers, exchange.reusable),
            upstream_keep_alive,
        )

    def on_whole_response(self, shape: ResponseShape, body: bytes) -> None:
        """The whole answer arrived in one read, its head known (see wire.response): the shape
        keeps the client heads planned from it; head and body leave in one write."""
        exchange = self.exchange
        self.seen = self.services.clock.now
        self.spoke = True
        head = exchange.head
        self.answer(shape.status, shape.plan(head.method, head.version, exchange.reusable), shape.keep_alive, body)
        self.on_response_complete()

    def answer(self, status: int, plan: ResponsePlan, upstream_keep_alive: bool, body: bytes = b"") -> None:
        """The answer's head goes to the client as `plan` says; its body follows, or comes with
        it as `body` when the whole answer is in hand (a known head: a Content-Length, no chunks)."""
        exchange = self.exchange
        self.services.metrics.observe_upstream(time.monotonic() - self.sent_at)
        self.plan = plan
        exchange.answering(status, plan.keep_alive)
        if body:
            assert not plan.chunked
            exchange.delivering(len(body))
        self.client.write(plan.head_with(exchange.head_ending) + body)
        if exchange.head.method == b"HEAD":
            self.on_response_complete(reusable=False)  # the parser would wait for a body that never comes
        elif not upstream_keep_alive and self.upstream is not None:
            self.upstream.keep = False

    def on_response_body(self, data: bytes) -> None:
        exchange = self.exchange
        if not exchange.response_complete:
            exchange.delivering(len(data))
            assert self.plan is not None
            self.client.write(chunk(data) if self.plan.chunked else data)

    def on_response_complete(self, reusable: bool = True) -> None:
        exchange = self.exchange
        if exchange.response_complete:
            return
        if self.plan is not None and self.plan.chunked:
            self.client.write(LAST_CHUNK)
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            if self.paused:
                self.resume(upstream)
            upstream.finish(reusable and exchange.request_complete)
        exchange.answered()

    def on_upstream_lost(self) -> None:
        upstream, self.upstream = self.upstream, None
        exchange = self.exchange
        if upstream is None or exchange.response_complete:
            return
        upstream.relay = None
        if not exchange.response_started:
            if self.reused and self.replay and not self.spoke:
                self.connecting = asyncio.ensure_future(self._connect())  # stale pooled connection: once more
            else:
                exchange.refuse(decide.UPSTREAM_UNAVAILABLE)
        elif self.plan is not None and self.plan.close_delimited:
            self.on_response_complete()
        else:
            exchange.record(exchange.status, "upstream_aborted")
            self.client.abort()  # truncated: the client must see a broken response, not a short one

    def check_timeout(self, now: float) -> None:
        if self.upstream is not None and now - self.seen > self.services.pool.read_timeout:
            upstream, self.upstream = self.upstream, None
            upstream.abort()
            self.exchange.refuse(decide.UPSTREAM_TIMEOUT)

    # flow control: the upstream's writes follow the client's reads, and back
    def upstream_full(self) -> None:
        self.client.pause_reading(UPSTREAM_FULL)

    def upstream_drained(self) -> None:
        self.client.resume_reading(UPSTREAM_FULL)

    def pause(self) -> None:
        if self.upstream is not None and not self.paused:
            self.paused = True
            self.upstream.pause_reading()

    def resume(self, upstream: UpstreamLink | None = None) -> None:
        upstream = upstream or self.upstream
        if upstream is not None and self.paused:
            self.paused = False
            upstream.resume_reading()

    def cancel(self) -> None:
        """The client is gone or the exchange refused: drop the upstream side."""
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.relay = None
            upstream.abort()

"""The upstream side of one allowed request: get a connection, send the request, stream the
answer back to the client.

A `Relay` is made by an `Exchange` once the decision allows the request, and handed the
exchange (`seams.Requester`), the client connection (`seams.Client`: where the answer goes)
and the upstream side (`seams.RelayServices`). It takes an idle pooled connection or opens
one, writes the upstream head and whatever body is in hand, and then receives the
`UpstreamConnection`'s callbacks. It reports back through three calls: `exchange.answered()`
(the answer went out in full), `exchange.refuse(deny)` (no answer came) and
`exchange.record()`.

Which target: the upstream of the request's route (`services.upstream_for`) picks one per try
(proxy.balance). A request goes to another target only when nothing of it can have been run
twice: its connect failed (nothing was written: any method), or, when `replay` allows it
(idempotent, body whole in hand), a fresh connection closed before any answer byte. A pooled
connection found closed is replaced by a fresh one to the same target, under `replay` only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from gateway.core import decision as decide
from gateway.proxy.seams import Chooser, Client, RelayServices, Requester, UpstreamLink, Upstreams
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
        "retries",
        "reused",
        "seen",
        "sent_at",
        "services",
        "spoke",
        "target",
        "tried",
        "upstream",
        "upstreams",
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
        # Set by start: `target`, the target of the current try (its load counts it, until
        # let_go); `retries`, how many other targets it may still try; and when there is a
        # choice, `upstreams` (the upstream it goes to) and `tried` (the targets tried before).
        self.target: Upstreams | None
        self.retries: int
        self.upstreams: Chooser
        self.tried: list[Upstreams] | None

    def start(self) -> None:
        target = self.services.single  # one upstream of one target: nothing to choose
        if target is None:
            upstreams = self.upstreams = self.services.upstream_for(self.exchange.head)
            self.tried = None
            target = upstreams.pick(None)
            if target is None:  # every target is out: the least recently failed one, once
                target = upstreams.fallback()
                self.retries = 0
            else:
                self.retries = upstreams.retries
        else:
            self.retries = 0
        self.send_to(target)

    def send_to(self, target: Upstreams) -> None:
        self.target = target
        target.active += 1
        target.requests += 1
        upstream = target.take_idle()
        if upstream is not None:
            self.reused = True
            self.attach(upstream)
        else:
            self.reused = False
            self.connecting = asyncio.ensure_future(self._connect(target))

    def let_go(self) -> Upstreams | None:
        """The current try is over: its target carries one request less."""
        target, self.target = self.target, None
        if target is not None:
            target.active -= 1
        return target

    def retry(self, failed: Upstreams) -> bool:
        """Try another target, if one is left and retries are: the caller has checked that
        nothing of the request reached `failed`, or that it may be sent again."""
        if self.retries <= 0:
            return False
        tried = self.tried
        if tried is None:
            tried = self.tried = [failed]
        else:
            tried.append(failed)
        target = self.upstreams.pick(tried)
        if target is None:
            return False
        self.retries -= 1
        self.spoke = False
        self.send_to(target)
        return True

    async def _connect(self, target: Upstreams) -> None:
        try:
            upstream = await target.connect()
        except OSError as err:  # TimeoutError included: nothing of the request was written
            self.connecting = None
            timeout = isinstance(err, TimeoutError)
            target.failed("connect timed out" if timeout else f"connect failed: {err.strerror or err}")
            self.let_go()
            if self.exchange.relaying(self) and not self.retry(target):
                self.exchange.refuse(decide.UPSTREAM_TIMEOUT if timeout else decide.UPSTREAM_UNAVAILABLE)
            return
        self.connecting = None
        if not self.exchange.relaying(self):  # the client went away meanwhile
            upstream.finish(True)
            return
        self.attach(upstream)

    def attach(self, upstream: UpstreamLink) -> None:
        exchange, conn, target = self.exchange, self.client, self.target
        assert target is not None
        self.upstream = upstream
        upstream.relay = self
        self.seen = self.services.clock.now
        self.sent_at = time.monotonic()
        head = exchange.head
        assert exchange.key is not None
        identity = exchange.key.identity_headers
        client = exchange.client.encode()
        parts = [upstream_head(head, target.rules, conn.peer_trusted, conn.peer_bytes, client, identity)]
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
        seconds = time.monotonic() - self.sent_at
        self.services.metrics.observe_upstream(seconds)
        target = self.target
        if target is not None:
            target.answers += 1
            target.latency += seconds
            if target.failures:
                target.recovered()
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
        target = self.target
        if target is not None:  # (let_go, inline: every answer passes here)
            self.target = None
            target.active -= 1
        exchange.answered()

    def on_upstream_lost(self) -> None:
        upstream, self.upstream = self.upstream, None
        exchange = self.exchange
        if upstream is None or exchange.response_complete:
            return
        upstream.relay = None
        if not exchange.response_started:
            target = self.target
            assert target is not None
            if self.spoke:  # an answer began and broke off, or could not be read
                self.let_go()
                exchange.refuse(decide.UPSTREAM_UNAVAILABLE)
            elif self.reused:  # a pooled connection the upstream had closed: no fault of the target's
                if self.replay:
                    self.reused = False
                    self.connecting = asyncio.ensure_future(self._connect(target))  # once more, on a fresh one
                else:
                    self.let_go()
                    exchange.refuse(decide.UPSTREAM_UNAVAILABLE)
            else:  # a fresh connection closed before any answer byte: the target failed
                target.failed("closed before answering")
                self.let_go()
                if not (self.replay and self.retry(target)):
                    exchange.refuse(decide.UPSTREAM_UNAVAILABLE)
        elif self.plan is not None and self.plan.close_delimited:
            self.on_response_complete()
        else:
            exchange.record(exchange.status, "upstream_aborted")
            self.client.abort()  # truncated: the client must see a broken response, not a short one

    def check_timeout(self, now: float) -> None:
        target = self.target
        if self.upstream is not None and target is not None and now - self.seen > target.read_timeout:
            upstream, self.upstream = self.upstream, None
            upstream.abort()
            if not self.spoke:
                target.failed("read timed out")
            self.let_go()
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
        self.let_go()

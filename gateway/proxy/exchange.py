"""One request and its answer: decide, then hand the allowed ones to a `Relay`.

An `Exchange` is made by a `ClientConnection` for each request head and talks back to it
through a narrow seam (`seams.Client`: write, cork/uncork, pause/resume reading, finished,
close/abort); what it decides with (keyring, routes, limiter, usage) comes as
`seams.ExchangeServices`.
The HTTP rules live in `gateway.wire`, the decision in `gateway.core`; this object only
sequences them. Its phases and the moves between them are the table `PHASES`.
"""

from __future__ import annotations

import asyncio
import time

from gateway.core import decision as decide
from gateway.core.decision import KeySnapshot
from gateway.core.iprules import client_ip
from gateway.core.routes import RouteMatch
from gateway.keyring.limits import Admission, LimiterUnavailable, Pending, Refused
from gateway.proxy.relay import UPSTREAM_FULL, Relay
from gateway.proxy.seams import Client, ExchangeServices
from gateway.wire.ambiguous import IDEMPOTENT
from gateway.wire.refusals import CONTINUE, deny_response
from gateway.wire.request import RequestHead
from gateway.wire.verdict import judge_body, judge_head

# Reasons to stop reading from a client; reading resumes when none is left.
PIPELINE, BUFFER_FULL = 1, 4
assert UPSTREAM_FULL not in (PIPELINE, BUFFER_FULL)
HIGH_WATER = 256 * 1024  # request body bytes held while the decision is pending
CHECK_ALLOWED = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nCache-Control: no-store\r\n"

# The exchange's one table: the decision's phases, then the answer's. Every move is checked
# (`_enter`); the request side has one move of its own (`request_complete`, set once when the
# parser or the shape reads its end), and the pair decides what follows an answer (`reusable`).
WAITING, INSPECTING, LIMITING = "waiting", "inspecting", "limiting"
FORWARDING, STREAMING, ANSWERED = "forwarding", "streaming", "answered"
PHASES: dict[str, frozenset[str]] = {
    WAITING: frozenset({INSPECTING, LIMITING, FORWARDING, ANSWERED}),  # decided on the head
    INSPECTING: frozenset({LIMITING, FORWARDING, ANSWERED}),  # decided on the body's app id
    LIMITING: frozenset({FORWARDING, ANSWERED}),  # the shared rate-limit backend answered
    FORWARDING: frozenset({STREAMING, ANSWERED}),  # the upstream's answer began, or never came
    STREAMING: frozenset({ANSWERED}),  # the answer went out in full, or broke off
    ANSWERED: frozenset(),
}


class PhaseError(AssertionError):
    """A move the table forbids: a bug in the data path, never something a client can cause."""


class Exchange:
    __slots__ = (
        "app_id",
        "body",
        "body_size",
        "bytes_out",
        "client",
        "conn",
        "head",
        "head_ending",
        "inspected",
        "keep_alive",
        "key",
        "limiting",
        "now",
        "recorded",
        "relay",
        "request_complete",
        "response_complete",
        "response_started",
        "route",
        "services",
        "started",
        "state",
        "status",
    )

    def __init__(self, conn: Client, head: RequestHead, services: ExchangeServices) -> None:
        self.conn = conn
        self.services = services
        self.head = head
        self.keep_alive = head.keep_alive
        self.state = WAITING
        self.client = conn.peer  # the client IP the decision uses (after X-Forwarded-For)
        self.key: KeySnapshot | None = None
        self.route: RouteMatch | None = None
        self.app_id: str | None = None
        self.body: list[bytes] = []  # held while the decision or the connection is pending
        self.body_size = 0
        self.request_complete = False
        self.relay: Relay | None = None
        self.inspected = False  # the whole body was read for the app id
        self.limiting: asyncio.Task[None] | None = None  # a check with the shared rate-limit backend
        self.head_ending = b""  # RateLimit-* lines and the blank line that end the answer's head
        self.response_started = False
        self.response_complete = False
        self.started = time.monotonic()
        self.now = 0.0  # the wall clock when the decision began (expiry, rate windows, last use)
        self.status = 0
        self.bytes_out = 0
        self.recorded = False

    def _enter(self, phase: str) -> None:
        """Every move goes through the table, always (one dict and one set lookup: ~40 ns)."""
        if phase not in PHASES[self.state]:
            raise PhaseError(f"{self.state} -> {phase}")
        self.state = phase

    # the decision
    def start(self) -> None:
        """This exchange is now the one being answered: decide on the head."""
        head, conn, server = self.head, self.conn, self.services
        self.now = time.time()
        if not head.ambiguous:
            shape = head.shape  # the requests of one shape share their route (see wire.request.RequestShape)
            if shape is not None and shape.route_known:
                route = shape.route
            else:
                route = server.routes.match(head.method.decode("latin-1"), head.path.decode("latin-1"))
                if shape is not None:
                    shape.route, shape.route_known = route, True
            self.route = route
        self.key = server.keyring.lookup(head.presented) if head.presented else None
        ip = conn.peer_ip
        if conn.peer_trusted and head.forwarded_for:
            self.client = server.trusted.client(self.client, b",".join(head.forwarded_for).decode("latin-1"))
            ip = client_ip(self.client)
        decision, self.app_id = judge_head(
            head,
            self.route,
            self.key,
            ip,
            server.unknown_allowed,
            server.max_inspect,
            server.head_rules.malformed_key,
            self.now,
        )
        self.act(decision)

    def act(self, decision: decide.Decision) -> None:
        if isinstance(decision, decide.Deny):
            self.refuse(decision)
        elif decision is decide.NEED_BODY:
            self._enter(INSPECTING)
            if self.request_complete:
                self.inspect_body()
            elif self.head.expect_continue:
                self.conn.write(CONTINUE)
        else:
            self.admit()

    # rate limits, checked last so that a refused request consumes nothing
    def admit(self) -> None:
        assert self.key is not None
        answer = self.services.limiter.admit(self.key, self.now)
        if answer.__class__ is bytes:  # allowed: the common case, without a call
            self.head_ending = answer
            self.forward()
        else:
            self.admitted(answer)

    def admitted(self, answer: Admission) -> None:
        if isinstance(answer, bytes):
            self.head_ending = answer
            self.forward()
        elif isinstance(answer, Refused):
            self.refuse(answer.deny, answer.lines)
        else:
            assert isinstance(answer, Pending)
            self._enter(LIMITING)
            self.limiting = asyncio.ensure_future(self._check_shared(answer))

    async def _check_shared(self, pending: Pending) -> None:
        try:
            answer = await pending.decide()
        except LimiterUnavailable:
            self.limiting = None
            if self.state == LIMITING:
                self.forward() if self.services.limits_fail_open else self.refuse(decide.RATE_LIMIT_UNAVAILABLE)
            return
        self.limiting = None
        if self.state == LIMITING:  # not if the client left meanwhile
            self.admitted(answer)

    def on_request_body(self, data: bytes) -> None:
        state = self.state
        if state == FORWARDING and self.relay is not None and self.relay.upstream is not None:
            self.relay.send_body(data)
        elif state != ANSWERED:
            self.body.append(data)
            self.body_size += len(data)
            if state == INSPECTING:
                if self.body_size > self.services.max_inspect:
                    self.refuse(decide.BODY_TOO_LARGE)
            elif self.body_size > HIGH_WATER:
                self.conn.pause_reading(BUFFER_FULL)

    def on_request_complete(self) -> None:
        self.request_complete = True
        state = self.state
        if state == INSPECTING:
            self.inspect_body()
        elif state == FORWARDING and self.relay is not None:
            self.relay.request_sent()
        elif state == ANSWERED and self.response_complete:
            self.conn.finished(self)

    def inspect_body(self) -> None:
        assert self.route is not None and self.key is not None
        self.inspected = True
        decision, self.app_id = judge_body(b"".join(self.body), self.route, self.key, self.head)
        self.act(decision)

    # forwarding
    def forward(self) -> None:
        head, key = self.head, self.key
        assert key is not None
        self.services.usage.touch(key.id, self.now)
        if self.services.decide_only:
            self.allow_check(key)
            return
        if head.expect_continue and not self.request_complete and not self.inspected:
            self.conn.write(CONTINUE)
        # sent again only when repeating it is harmless and the whole body is in hand
        replay = head.method in IDEMPOTENT and (not head.has_body or self.inspected)
        if FORWARDING not in PHASES[self.state]:  # (`_enter`, written out on the hot path)
            raise PhaseError(f"{self.state} -> {FORWARDING}")
        self.state = FORWARDING
        self.relay = Relay(self, self.conn, self.services.relays, replay)
        self.relay.start()

    def allow_check(self, key: KeySnapshot) -> None:
        """On the forward-authorization port the answer is the decision: 200, the key's
        identity and its RateLimit lines, no body; nothing is forwarded."""
        self._enter(FORWARDING)
        self.answering(200, self.keep_alive)
        ending = self.head_ending or b"\r\n"
        close = b"" if self.keep_alive else b"Connection: close\r\n"
        self.conn.write(CHECK_ALLOWED + key.identity_headers + close + ending)
        self.response_complete = True
        self._enter(ANSWERED)
        self.record(200, "allowed")
        self.conn.finished(self)

    def relaying(self, relay: object) -> bool:
        """Whether `relay` still forwards for this exchange (the client may have left)."""
        return self.relay is relay

    def body_sent(self, keep: bool) -> list[bytes]:
        """The relay takes the body held so far (kept for a replay if `keep`); the rest
        streams, so reading may resume."""
        held = self.body
        if not keep:
            self.body = []
        if self.conn.paused:
            self.conn.resume_reading(BUFFER_FULL)
        return held

    def answering(self, status: int, keep_alive: bool) -> None:
        """The upstream's answer begins; after it the connection stays open only if `keep_alive`."""
        if STREAMING not in PHASES[self.state]:  # (`_enter`, written out on the hot path)
            raise PhaseError(f"{self.state} -> {STREAMING}")
        self.state = STREAMING
        self.response_started = True
        self.status = status
        self.keep_alive = keep_alive

    def delivering(self, size: int) -> None:
        self.bytes_out += size

    def answered(self) -> None:
        """The relay delivered the upstream's answer in full."""
        self.response_complete = True
        self.relay = None
        if ANSWERED not in PHASES[self.state]:  # (`_enter`, written out on the hot path)
            raise PhaseError(f"{self.state} -> {ANSWERED}")
        self.state = ANSWERED
        self.record(self.status, "allowed")
        self.conn.finished(self)

    # endings
    def refuse(self, deny: decide.Deny, extra: bytes = b"") -> None:
        """Answer with a refusal, or break the connection if an answer is already under way."""
        if self.response_started:
            self.record(self.status, deny.reason)
            self.conn.abort()
            return
        if self.relay is not None:
            self.relay.cancel()
            self.relay = None
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
        conn.write(deny_response(deny, close, self.services.auth_scheme, extra))
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
            self.services.record(status, reason, self.client, self.key, interface, self.app_id, latency, self.bytes_out)

    def on_client_lost(self) -> None:
        """The client is gone: never reuse an upstream connection mid-exchange."""
        if not self.response_complete:
            self.record(499, "client_closed")
        if self.state != ANSWERED:
            self._enter(ANSWERED)  # from any phase
        if self.limiting is not None:
            self.limiting.cancel()
        if self.relay is not None:
            self.relay.cancel()
            self.relay = None

    # what the connection asks
    @property
    def reusable(self) -> bool:
        """The request was read in full on a connection that may serve the next one."""
        return self.keep_alive and self.request_complete

    def expired(self, now: float, idle_since: float) -> bool:
        """Check the upstream's read timeout; True if the client stalled mid-body, or sends a
        body read for its app id slower than `limits.body_timeout` allows in total."""
        limits = self.services.limits
        if self.relay is not None and self.request_complete and not self.response_complete:
            self.relay.check_timeout(now)
            return False
        if self.request_complete:
            return False
        if self.state == INSPECTING and now - self.started > limits.body_timeout:
            return True
        return now - idle_since > limits.idle_timeout

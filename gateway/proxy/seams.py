"""The seams between the parts of the data path: what each part may ask of another.

    listener -> connection -> exchange -> relay -> upstream

Each part is handed what it uses, typed as a Protocol from here, never as a class above it:
an exchange gets its client connection (`Client`) and the process's decision inputs
(`ExchangeServices`); a relay gets its exchange (`Requester`), the client (`Client`) and the
upstream side (`RelayServices`); an upstream connection gets its relay (`Receiver`). So the
modules import strictly downwards, and each part's reach into another is written down here,
checked by mypy (`make lint`). The process's `proxy.shared.DataPath` satisfies both services.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.config import Limits
from gateway.core.decision import Deny, KeySnapshot
from gateway.core.routes import RouteMatch
from gateway.keyring.limits import LocalLimiter, RedisLimiter
from gateway.wire.forwarded import TrustedProxies
from gateway.wire.request import HeadRules, RequestHead
from gateway.wire.response import ResponseShape


class Client(Protocol):
    """What an exchange and its relay ask of the client connection."""

    peer: str
    peer_bytes: bytes
    peer_ip: int | None
    peer_trusted: bool
    paused: int  # why reading is paused (a bit per reason); 0: reading

    def write(self, data: bytes) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def finished(self, exchange: Requester) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Swept(Protocol):
    """A client connection as the listener sees it: swept for timeouts, closed on stop."""

    @property
    def busy(self) -> bool: ...  # a request is being read or answered
    def check_timeouts(self, now: float) -> None: ...
    def close(self) -> None: ...


class KeyLookup(Protocol):
    def lookup(self, presented: bytes) -> KeySnapshot | None: ...


class RouteLookup(Protocol):
    def match(self, method: str, path: str) -> RouteMatch | None: ...


class UsageLog(Protocol):
    def touch(self, key_id: str, now: float) -> None: ...


class ExchangeServices(Protocol):
    """What an exchange decides with: one per process, shared by every exchange."""

    @property
    def keyring(self) -> KeyLookup: ...
    @property
    def routes(self) -> RouteLookup: ...
    @property
    def trusted(self) -> TrustedProxies: ...
    @property
    def head_rules(self) -> HeadRules: ...
    @property
    def limiter(self) -> LocalLimiter | RedisLimiter: ...
    @property
    def usage(self) -> UsageLog: ...
    @property
    def unknown_allowed(self) -> bool: ...
    @property
    def max_inspect(self) -> int: ...
    @property
    def limits_fail_open(self) -> bool: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def auth_scheme(self) -> str: ...
    @property
    def decide_only(self) -> bool: ...  # the forward-authorization port: allowed is 200, never forwarded
    @property
    def relays(self) -> RelayServices: ...

    def record(
        self,
        status: int,
        reason: str,
        client: str,
        key: KeySnapshot | None = None,
        interface: str | None = None,
        app: str | None = None,
        latency: float = 0.0,
        size: int = 0,
    ) -> None: ...


class UpstreamLink(Protocol):
    """One upstream connection, as a relay drives it."""

    relay: Receiver | None
    keep: bool

    def write(self, data: bytes) -> None: ...
    def finish(self, reusable: bool) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abort(self) -> None: ...


class Upstreams(Protocol):
    """One target of an upstream, as a relay uses it: its connections, the head rules that
    write its Host, its load and its passive health (proxy.balance.target.Target)."""

    read_timeout: float
    rules: HeadRules
    active: int  # requests in flight on it
    requests: int
    answers: int
    latency: float
    failures: int  # in a row, since its last answer

    def take_idle(self) -> UpstreamLink | None: ...
    async def connect(self) -> UpstreamLink: ...
    def failed(self, why: str) -> None: ...
    def recovered(self) -> None: ...


class Chooser(Protocol):
    """One named upstream: which target a request tries (proxy.balance.Balancer)."""

    retries: int  # other targets a request may try when nothing of it was sent

    def pick(self, tried: Sequence[object] | None) -> Upstreams | None: ...
    def fallback(self) -> Upstreams: ...


class Clock(Protocol):
    now: float  # the loop's coarse clock, moved four times a second


class Observer(Protocol):
    def observe_upstream(self, seconds: float) -> None: ...


class RelayServices(Protocol):
    """What a relay forwards with: one per process."""

    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> Observer: ...
    @property
    def single(self) -> Upstreams | None: ...  # the only target, when no rule or upstream offers a choice
    def upstream_for(self, head: RequestHead) -> Chooser: ...


class Requester(Protocol):
    """What a relay asks of the exchange it forwards for."""

    head: RequestHead
    key: KeySnapshot | None
    client: str
    request_complete: bool
    response_started: bool
    response_complete: bool
    status: int
    head_ending: bytes

    @property
    def reusable(self) -> bool: ...
    def relaying(self, relay: object) -> bool: ...
    def body_sent(self, keep: bool) -> list[bytes]: ...
    def answering(self, status: int, keep_alive: bool) -> None: ...
    def delivering(self, size: int) -> None: ...
    def answered(self) -> None: ...
    def refuse(self, deny: Deny, extra: bytes = b"") -> None: ...
    def record(self, status: int, reason: str) -> None: ...


class Receiver(Protocol):
    """What an upstream connection asks of the relay it carries."""

    head_only: bool  # the request was HEAD: its answer has no body, whatever its head says

    def receiving(self) -> None: ...
    def received(self) -> None: ...
    def on_response_head(
        self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], upstream_keep_alive: bool
    ) -> None: ...
    def on_whole_response(self, shape: ResponseShape, body: bytes) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self, reusable: bool = True) -> None: ...
    def on_upstream_lost(self) -> None: ...
    def upstream_full(self) -> None: ...
    def upstream_drained(self) -> None: ...

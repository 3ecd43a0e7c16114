"""Rate-limit arithmetic. Pure: the rules, the windows, the counting; the caller gives `now`.

A limit of N per window (second, minute, hour, day) must allow at most N requests in ANY such
window, not only in calendar ones. Each window is kept as SLOTS counters of 1/SLOTS of its
length; a request is allowed when the SPAN counters ending at the current slot hold fewer than
N. SPAN is one slot more than the window, so any window ending now lies inside it: that never
allows more than N in any window, costs fixed memory per key whatever N, and frees capacity at
most one slot (1/60 of the window) later than an exact log would.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.errors import RuleError

WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
SLOTS = 60
SPAN = SLOTS + 1  # counters kept: a window ending mid-slot starts in the slot SLOTS back
MAX_REQUESTS = 1_000_000
MAX_LIMITS = 4
LINES = b"RateLimit-Limit: %d\r\nRateLimit-Remaining: %%d\r\nRateLimit-Reset: %%d\r\n"


@dataclass(frozen=True, slots=True)
class Limit:
    requests: int
    per: str
    seconds: int = field(init=False, repr=False, compare=False)  # the window's length
    scale: float = field(init=False, repr=False, compare=False)  # slots per second: a time's slot is int(now * scale)
    slot_seconds: float = field(init=False, repr=False, compare=False)  # a slot's length
    ending: bytes = field(init=False, repr=False, compare=False)  # a head's RateLimit lines, % (remaining, reset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", WINDOWS[self.per])
        object.__setattr__(self, "scale", SLOTS / self.seconds)  # (float arithmetic: a float's // is slow)
        object.__setattr__(self, "slot_seconds", self.seconds / SLOTS)
        object.__setattr__(self, "ending", LINES % self.requests + b"\r\n")

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "per": self.per}


def parse_limits(value: Any, field: str = "rate_limits") -> tuple[Limit, ...]:
    """A list of at most 4 `{requests: 1..1000000, per: second|minute|hour|day}`, one per `per`."""
    if not isinstance(value, list):
        raise RuleError(field, f"{field} must be a list of {{requests, per}}")
    if len(value) > MAX_LIMITS:
        raise RuleError(field, f"{field} holds at most {MAX_LIMITS} limits, one per window")
    limits: list[Limit] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict) or set(item) != {"requests", "per"}:
            raise RuleError(where, f"{where} must be {{requests, per}}")
        requests, per = item["requests"], item["per"]
        if isinstance(requests, bool) or not isinstance(requests, int) or not 1 <= requests <= MAX_REQUESTS:
            raise RuleError(where, f"{where}.requests must be a whole number from 1 to {MAX_REQUESTS}")
        if not isinstance(per, str) or per not in WINDOWS:  # (a list or object is not hashable)
            raise RuleError(where, f"{where}.per must be one of {', '.join(WINDOWS)}")
        if any(limit.per == per for limit in limits):
            raise RuleError(where, f"{where}: one limit per window; {per} is given twice")
        limits.append(Limit(requests, per))
    return tuple(sorted(limits, key=lambda limit: limit.seconds))


def parse_rate(text: str) -> Limit:
    """The command line's `5/second`."""
    requests, _, per = text.partition("/")
    if not requests.isdigit() or per not in WINDOWS:
        raise RuleError("rate", f"expected N/second, N/minute, N/hour or N/day, got {text!r}")
    return parse_limits([{"requests": int(requests), "per": per}], "rate")[0]


class Window:
    """The counters of one limit for one key or account: only the slots that hold requests,
    oldest first (their numbers in `slots`, their requests in `counts`), with their running
    total. A request costs a comparison and an increment; a slot leaving the span costs two
    pops and a subtraction, however long the window was idle (no walk over empty slots)."""

    __slots__ = ("counts", "epoch", "last", "slots", "total")

    def __init__(self, epoch: float = 0.0) -> None:
        # Slots are numbered from `epoch` (a whole day, so every window's slots line up with
        # the calendar's): numbers then stay under 2**30, which CPython adds and compares fastest.
        self.epoch = epoch
        self.slots: deque[int] = deque()
        self.counts: deque[int] = deque()
        self.last = -1  # the newest slot number seen; requests are counted there
        self.total = 0

    def used(self, limit: Limit, now: float) -> int:
        """The requests counted in the span ending now (forgetting slots that left it)."""
        slot = int((now - self.epoch) * limit.scale)
        if slot > self.last:  # (a clock stepping back keeps counting in the newest slot)
            self.last = slot
            slots = self.slots
            if slots and slots[0] <= slot - SPAN:
                self._forget(slot - SPAN)
        return self.total

    def _forget(self, gone: int) -> None:
        """Drop the slots numbered `gone` and older: they left the span."""
        slots, counts = self.slots, self.counts
        while slots and slots[0] <= gone:
            slots.popleft()
            self.total -= counts.popleft()

    def add(self) -> None:
        """Count one request in the slot of the last `used` call."""
        if self.slots and self.slots[-1] == self.last:
            self.counts[-1] += 1
        else:
            self.slots.append(self.last)
            self.counts.append(1)
        self.total += 1

    def reset_after(self, limit: Limit, now: float) -> int:
        """Whole seconds (at least 1) until the oldest counted slot leaves the span."""
        if not self.slots:
            return 1
        return max(1, math.ceil((self.slots[0] + SPAN) * limit.slot_seconds - (now - self.epoch)))

    def absolute(self, slot: int, limit: Limit) -> int:
        """A slot's number counted from the Unix epoch (as Redis counts them)."""
        return slot + round(self.epoch * limit.scale)

    def take(self, limit: Limit, now: float) -> bytes | None:
        """`used`, `add` and `reset_after` in one call, for a window that decides alone (a key
        with one limit and no account limit, the common case): when the request is counted, the
        end of its answer's head (the RateLimit lines and the blank line); None when the window
        is full (nothing is counted)."""
        now -= self.epoch
        slot = int(now * limit.scale)
        slots = self.slots
        if slot > self.last:
            self.last = slot
            if slots and slots[0] <= slot - SPAN:
                self._forget(slot - SPAN)
        total = self.total
        if total >= limit.requests:
            return None
        if slots and slots[-1] == self.last:
            self.counts[-1] += 1
        else:
            slots.append(self.last)
            self.counts.append(1)
        self.total = total + 1
        reset = math.ceil((slots[0] + SPAN) * limit.slot_seconds - now)
        return limit.ending % (limit.requests - total - 1, reset if reset > 1 else 1)


class Taker(Protocol):
    def take(self, limit: Limit, now: float) -> bytes | None: ...


class Binding:
    """A key snapshot's place for the window that decides alone for that key (one limit, no
    account limit), filled by the limiter that owns the window: later requests with the same
    snapshot reach the window without a lookup, while `owner` is the limiter's current token.
    A new snapshot (any edit) starts empty. `window.take` answers None when it cannot decide
    alone: the request then goes the general way."""

    __slots__ = ("limit", "owner", "window")

    def __init__(self) -> None:
        self.owner: object = None  # the token of the limiter that filled it; until then, placeholders
        self.window: Taker = _UNBOUND[0]
        self.limit = _UNBOUND[1]

    def bind(self, owner: object, window: Taker, limit: Limit) -> None:
        self.window, self.limit = window, limit
        self.owner = owner


_UNBOUND = (Window(), Limit(1, "second"))


def epoch_of(now: float) -> float:
    """The day `now` falls in, as a `Window` epoch."""
    return now // 86400 * 86400


class Verdict:
    """The outcome of a rate check: `allowed`, and the window with the fewest remaining
    requests (for the RateLimit-* headers and Retry-After)."""

    __slots__ = ("allowed", "limit", "remaining", "reset")

    def __init__(self, allowed: bool, limit: int, remaining: int, reset: int) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset = reset

    def headers(self) -> bytes:
        return LINES % self.limit % (self.remaining, self.reset)


def tightest(states: list[tuple[Limit, int, int]], allowed: bool) -> Verdict:
    """From (limit, used after this request, reset) per window, the one with the fewest remaining."""
    limit, used, reset = min(states, key=lambda state: state[0].requests - state[1])
    return Verdict(allowed, limit.requests, max(0, limit.requests - used), reset)


def check(counters: list[tuple[Window, Limit, int]], now: float) -> tuple[int | None, Verdict]:
    """Count one request against every (window, limit, group) at once, all or nothing: if any
    window is full, nothing is counted (a refused request consumes nothing). Returns the
    lowest group holding a full window (None: allowed) and the verdict for the headers."""
    full: int | None = None
    for window, limit, group in counters:
        if window.used(limit, now) >= limit.requests and (full is None or group < full):
            full = group
    if full is not None:
        states = [
            (limit, window.total, window.reset_after(limit, now))
            for window, limit, group in counters
            if group == full and window.total >= limit.requests
        ]
        return full, tightest(states, False)
    tight: tuple[Window, Limit] | None = None
    fewest = 0
    for window, limit, _ in counters:
        window.add()
        remaining = limit.requests - window.total
        if tight is None or remaining < fewest:
            tight, fewest = (window, limit), remaining
    assert tight is not None
    return None, Verdict(True, tight[1].requests, fewest, tight[0].reset_after(tight[1], now))

"""Rate-limit counters: in this process (`LocalLimiter`), or one budget for every worker and
replica in Redis (`RedisLimiter`).

Both answer `try_local(groups, now)` at once when they can, else `check(groups, now)` (awaited),
where groups are [(kind, id, limits)] in the contract's order (the account first, then the
key; `groups(key)` makes them): the index of the first group that is over its limit, or None,
and the verdict whose numbers go into the RateLimit-* headers. `groups(key)` also binds a key
whose one window decides alone (one limit, no account limit: the common case) to its snapshot
(`core.ratelimit.Binding`; Redis's only while it answers), so its next requests go straight to
that window's `take`.

Redis, without a round trip per request: a process leases spares of a window from Redis (the
script counts them in the window as soon as they are granted, used or not) and decides its
requests alone while it holds some. What it decided is settled into the window's slots, and its
lease renewed, in one script for many windows on a tick of SYNC_SECONDS (when spares run low, a
window near its limit has used one, or a lease is due a look); an idle window's lease is given
back. A slice is at most 1/LEASE_DIVISOR of what the window has left, so slices shrink as the
budget runs out, and the last requests, and every request of a limit under FAST_MIN, are counted
by Redis one by one. A request that finds no spare asks Redis (`check`); requests of one process
waiting for the same window share the exchange under way. However many processes, the total
stays under the limit plus 1/OVERBOOK of it (see LEASE_SCRIPT), and a window Redis found full
is refused here until it frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import uuid
from typing import Any

from gateway.core.decision import ACCOUNT_RATE_LIMITED, KEY_RATE_LIMITED, Deny, KeySnapshot
from gateway.core.ratelimit import SLOTS, SPAN, WINDOWS, Limit, Verdict, Window, check, epoch_of, tightest

log = logging.getLogger("gateway.ratelimit")
Groups = list[tuple[str, str, tuple[Limit, ...]]]


class LimiterUnavailable(Exception):
    """The shared backend did not answer."""


class Refused:
    """`admit`'s answer for a request over a limit: the refusal and its header lines."""

    __slots__ = ("deny", "lines")

    def __init__(self, deny: Deny, lines: bytes) -> None:
        self.deny = deny
        self.lines = lines


class Pending:
    """`admit`'s answer when only the shared backend can decide: await `decide()`."""

    __slots__ = ("groups", "limiter")

    def __init__(self, limiter: Policy, groups: Groups) -> None:
        self.limiter = limiter
        self.groups = groups

    async def decide(self) -> bytes | Refused:
        """The answer once the backend answered (LimiterUnavailable if it did not)."""
        group, verdict = await self.limiter.check(self.groups, time.time())
        return self.limiter.settle(self.groups, group, verdict)


# What `admit` answers: the RateLimit lines and blank line that end an allowed answer's head
# (b"" when no limit applies), a refusal, or a decision that waits for the shared backend.
Admission = bytes | Refused | Pending


class Policy:
    """The limits that apply to a key: the configured account limits, and the key's own or,
    when it sets none, the configured default. `admit` is the one call the data path makes;
    how a key is bound to its windows (ratelimit.Binding) is this class's business."""

    def __init__(self, account_limits: tuple[Limit, ...] = (), default_key_limits: tuple[Limit, ...] = ()) -> None:
        self.account_limits = account_limits
        self.default_key_limits = default_key_limits
        self.always = bool(account_limits or default_key_limits)  # every key is limited
        self.epoch = epoch_of(time.time())  # windows count their slots from this day
        self.token = object()  # what key snapshots are bound with (see ratelimit.Binding); a new one unbinds all

    def groups(self, key: KeySnapshot) -> Groups:
        """The key's groups; a key whose one window decides alone is bound to it as well."""
        groups = [("a", key.account, self.account_limits)] if self.account_limits else []
        limits = key.rate_limits or self.default_key_limits
        if limits:
            groups.append(("k", key.id, limits))
            if len(groups) == 1 and len(limits) == 1:
                self.bind(key, limits)
        return groups

    def bind(self, key: KeySnapshot, limits: tuple[Limit, ...]) -> None:
        """Bind `key.counters` to its one window (see ratelimit.Binding), if this limiter can."""

    def admit(self, key: KeySnapshot, now: float) -> Admission:
        """Count one request of `key` at `now` against every limit that applies to it (the
        request is allowed by every other check). Rate limits are checked last, so a refused
        request has consumed nothing."""
        if not (key.rate_limits or self.always):
            return b""  # no limit applies
        bound = key.counters
        if bound.owner is self.token:  # the common case: one window decides (see ratelimit.Binding)
            ending = bound.window.take(bound.limit, now)
            if ending is not None:
                return ending
        groups = self.groups(key)
        answer = self.try_local(groups, now)
        if answer is None:
            return Pending(self, groups)
        return self.settle(groups, *answer)

    def settle(self, groups: Groups, group: int | None, verdict: Verdict) -> bytes | Refused:
        """The admission a verdict means: allowed (its RateLimit lines) or the refusal of the
        group it failed in, an account's or the key's."""
        if group is None:
            return verdict.headers() + b"\r\n"
        deny = ACCOUNT_RATE_LIMITED if groups[group][0] == "a" else KEY_RATE_LIMITED
        return Refused(deny, verdict.headers() + b"Retry-After: %d\r\n" % verdict.reset)

    def try_local(self, groups: Groups, now: float) -> tuple[int | None, Verdict] | None:
        """Decide here if this process can (None: only the shared backend can)."""
        raise NotImplementedError

    async def check(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        raise NotImplementedError


class LocalLimiter(Policy):
    """Exact within this process; with several workers each counts alone. It always decides
    at once, so `check` is never needed."""

    def __init__(self, account_limits: tuple[Limit, ...] = (), default_key_limits: tuple[Limit, ...] = ()) -> None:
        super().__init__(account_limits, default_key_limits)
        # (kind, id) -> its limits and one window per limit: bounded by keys and accounts
        self._groups: dict[tuple[str, str], tuple[tuple[Limit, ...], list[Window]]] = {}

    def bind(self, key: KeySnapshot, limits: tuple[Limit, ...]) -> None:
        key.counters.bind(self.token, self._windows(key.id, limits)[0], limits[0])

    def _windows(self, ident: str, limits: tuple[Limit, ...], kind: str = "k") -> list[Window]:
        found = self._groups.get((kind, ident))
        if found is None or found[0] is not limits:
            found = self._groups[(kind, ident)] = (limits, self._windows_for(found, limits))
        return found[1]

    def try_local(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        counters = []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit, window in zip(limits, self._windows(ident, limits, kind), strict=True):
                counters.append((window, limit, index))
        return check(counters, now)

    def _windows_for(
        self, found: tuple[tuple[Limit, ...], list[Window]] | None, limits: tuple[Limit, ...]
    ) -> list[Window]:
        """Windows for new limits: a window's counts carry over when its length stays (an
        edit of a key's limits does not hand out a fresh budget)."""
        epoch = self.epoch
        kept = {} if found is None else {limit.per: window for limit, window in zip(*found, strict=True)}
        return [kept.get(limit.per) or Window(epoch) for limit in limits]

    async def check(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        return self.try_local(groups, now)

    async def close(self) -> None:
        pass


# Redis keeps one hash per window, `gateway:rl2:<kind>:<id>:<per>` (releases before leases used
# `gateway:rl:`, and their script fails on a lease field: while both run, in a rolling upgrade,
# they count apart instead). Its numeric fields are slots as in core.ratelimit (numbered
# from the Unix epoch on Redis's clock, so every replica counts on one clock), holding the
# requests settled there. `l:<lease id>` holds what one process has on lease from the window:
# spares it may still decide alone, and the ones it decided and has not settled yet;
# `e:<lease id>` is when that lease ends (ms on Redis's clock). The window's count is its slots
# in the span plus every live lease, so a leased request is counted from the moment it is
# granted, whether used or not, and a settled one in a slot no earlier than its own.
#
# KEYS: windows. ARGV[1]: this process's lease id. ARGV[2]: "1" counts one request in every
# window, all or nothing; "0" only settles and leases. ARGV[2 + i], for KEYS[i]: "<limit>
# <window seconds> <used> <back> <want>": `used` spares were decided (they move from the lease
# into the current slot), `back` spares are given back, and `want` >= 0 keeps the lease
# (extends it and grants up to `want` more spares) while -1 lets it end.
#
# A request is allowed while the settled requests are under the limit and the whole count,
# leases included, is under the limit plus 1/OVERBOOK of it: spares left unused in one process
# cannot starve another, and nothing passes the limit by more than that. Spares are granted
# only within the limit: at most 1/LEASE_DIVISOR of what the window has left, so slices shrink
# as the budget runs out, and none below LEASE_LEAST (the last requests are counted one by one).
#
# Returns: the index (1-based) of the first window that refuses, or 0; Redis's time; then per
# window its count after this call, its oldest slot, the spares granted, and this process's
# lease after this call.
FAST_MIN = 200  # smaller limits lease nothing: Redis counts each of their requests
LEASE_DIVISOR = 8
LEASE_LEAST = 2
OVERBOOK = 10
LEASE_SECONDS = 4.0  # spares are decided here for this long after the exchange that kept the lease
LEASE_GRACE = 2.0  # Redis keeps a lease this much longer, so that late settlements still find it
LEASE_TTL_MS = int((LEASE_SECONDS + LEASE_GRACE) * 1000)
LEASE_SCRIPT = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ms = math.floor(now * 1000)
local me = ARGV[1]
local counting = ARGV[2] == '1'
local args, slots, settled, others, mine, oldest = {{}}, {{}}, {{}}, {{}}, {{}}, {{}}
local full = 0
for i = 1, #KEYS do
  local key, a = KEYS[i], {{}}
  for word in string.gmatch(ARGV[i + 2], '%S+') do a[#a + 1] = tonumber(word) end
  args[i] = a
  local limit, seconds, used, back = a[1], a[2], a[3], a[4]
  local slot = math.floor(now * {SLOTS} / seconds)
  local fields = redis.call('HGETALL', key)
  local holds, ends, total, old, held, own = {{}}, {{}}, 0, slot, 0, 0
  for j = 1, #fields, 2 do
    local name, value = fields[j], tonumber(fields[j + 1])
    local kind = string.sub(name, 1, 2)
    if kind == 'l:' then holds[string.sub(name, 3)] = value
    elseif kind == 'e:' then ends[string.sub(name, 3)] = value
    elseif tonumber(name) <= slot - {SPAN} then redis.call('HDEL', key, name)
    else
      total = total + value
      if tonumber(name) < old then old = tonumber(name) end
    end
  end
  for id, value in pairs(holds) do
    if ends[id] == nil or ends[id] <= ms then redis.call('HDEL', key, 'l:' .. id, 'e:' .. id)
    elseif id == me then own = value
    else held = held + value end
  end
  for id, _ in pairs(ends) do
    if holds[id] == nil then redis.call('HDEL', key, 'e:' .. id) end
  end
  if used > 0 then
    redis.call('HINCRBY', key, slot, used)
    total = total + used
  end
  own = own - used - back
  if own < 0 then own = 0 end
  slots[i], settled[i], others[i], mine[i], oldest[i] = slot, total, held, own, old
  if counting and full == 0 and (total >= limit or total + held + own >= limit + math.floor(limit / {OVERBOOK})) then
    full = i
  end
end
local out = {{full, tostring(now)}}
for i = 1, #KEYS do
  local key, a = KEYS[i], args[i]
  local limit, seconds, want = a[1], a[2], a[5]
  local total, own, grant = settled[i], mine[i], 0
  if full == 0 then
    if counting then
      redis.call('HINCRBY', key, slots[i], 1)
      total = total + 1
    end
    if want > 0 then
      grant = math.floor((limit - total - others[i] - own) / {LEASE_DIVISOR})
      if grant > want then grant = want end
      if grant < {LEASE_LEAST} then grant = 0 end
      own = own + grant
    end
  end
  if own > 0 then
    redis.call('HSET', key, 'l:' .. me, own)
    if want >= 0 then redis.call('HSET', key, 'e:' .. me, string.format('%d', ms + {LEASE_TTL_MS})) end
  else
    redis.call('HDEL', key, 'l:' .. me, 'e:' .. me)
  end
  redis.call('EXPIRE', key, math.max(math.ceil(seconds * {SPAN} / {SLOTS}) + 1, {LEASE_TTL_MS // 1000 + 1}))
  table.insert(out, total + others[i] + own)
  table.insert(out, oldest[i])
  table.insert(out, grant)
  table.insert(out, own)
end
return out
"""
LEASE_MIN = 8  # spares asked for at least; else twice what was decided since the last exchange
RENEW_AFTER = 3.0  # a lease is looked at this long after its last exchange: kept if the window is active
SETTLE_SHARE = 32  # a window far from its limit is settled after limit // 32 decided spares...
TIGHT_SHARE = 0.5  # ...one counted at half its limit or more after every one (at the next tick)
SYNC_SECONDS = 0.02  # the tick of the exchanges that settle and renew leases in the background
BATCH_WINDOWS = 500  # windows per script, so one script holds Redis briefly
PROBE_TICKS = 5  # while Redis is down, it is asked every 100 ms whether it is back
SWEEP_TICKS = 3000  # every minute, windows idle for two days are forgotten
ACTIVE_SECONDS = 2.0  # a lease of a window used this recently is renewed; of one idle longer, given back
NEVER = float("inf")


class SharedWindow:
    """What this process knows of one window in Redis, and its lease there. One exchange with
    Redis at a time per window (`busy`), so the lease's arithmetic needs no locks."""

    __slots__ = (
        "back",
        "busy",
        "due",
        "frees",
        "full_until",
        "limit",
        "low",
        "name",
        "queued",
        "seen",
        "spare",
        "total",
        "until",
        "used",
    )

    def __init__(self, name: str, limit: Limit) -> None:
        self.name = name  # the window's hash in Redis
        self.limit = limit  # the limit its lease is for
        self.spare = 0  # leased requests this process may still decide alone...
        self.until = 0.0  # ...until then (Redis keeps the lease LEASE_GRACE longer)
        self.low = 0  # `take` decides while more spares than this are left; then try_local, which asks for an exchange
        self.used = 0  # spares decided since the last exchange: in the lease in Redis, not yet in a slot
        self.back = 0  # spares given up here, to give back at the next exchange
        self.total = 0  # the window's count at the last exchange, every lease (this one's spares too) included
        self.frees = 0.0  # when its oldest counted slot leaves the span
        self.full_until = 0.0  # Redis refused a request: refused here until then
        self.seen = 0.0  # last use
        self.due = NEVER  # when the lease is looked at next
        self.queued = False  # in the limiter's heap of looks (once, however often `due` moves)
        self.busy: asyncio.Future[None] | None = None  # the exchange under way for this window

    def take(self, limit: Limit, now: float) -> bytes | None:
        """One request decided on a spare of the lease (no Redis): the end of the answer's head,
        as `Window.take`; None: the general way decides."""
        spare = self.spare
        if spare > self.low and now < self.until:
            self.spare = spare = spare - 1
            self.used += 1
            self.seen = now
            remaining = limit.requests - self.total + spare
            reset = math.ceil(self.frees - now)
            return limit.ending % (remaining if remaining > 0 else 0, reset if reset > 1 else 1)
        return None


class RedisLimiter(Policy):
    """One budget across every worker and replica; an outage is logged once, and each request
    then follows `on_backend_error` until Redis answers again (redis-py reconnects by itself)."""

    def __init__(
        self,
        url: str,
        account_limits: tuple[Limit, ...] = (),
        default_key_limits: tuple[Limit, ...] = (),
        timeout: float = 0.5,
    ) -> None:
        super().__init__(account_limits, default_key_limits)
        import redis.asyncio as redis  # only deployments that use Redis need the package

        self._client: Any = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(LEASE_SCRIPT)
        self._errors = (redis.RedisError, OSError, TimeoutError)
        self._down = False
        self._id = uuid.uuid4().hex[:16]  # this process's leases in Redis
        self._windows: dict[tuple[str, str, str], SharedWindow] = {}  # (kind, id, per)
        self._soon: set[SharedWindow] = set()  # windows to settle or renew at the next tick
        self._looks: list[tuple[float, int, SharedWindow]] = []  # a heap of (due, n, window): leases to look at
        self._looked = 0  # (n: ties in the heap never compare windows)
        self._ticking: asyncio.Task[None] | None = None

    @staticmethod
    def _name(kind: str, ident: str, limit: Limit) -> str:
        return f"gateway:rl2:{kind}:{ident}:{limit.per}"

    def _window(self, kind: str, ident: str, limit: Limit) -> SharedWindow:
        state = self._windows.get((kind, ident, limit.per))
        if state is None:
            state = self._windows[(kind, ident, limit.per)] = SharedWindow(self._name(kind, ident, limit), limit)
        elif state.limit is not limit:
            if state.limit.requests != limit.requests and state.spare:  # an edit: the old limit's spares go back
                state.back += state.spare
                state.spare = 0
                self._soon.add(state)
            state.limit = limit
        return state

    def bind(self, key: KeySnapshot, limits: tuple[Limit, ...]) -> None:
        if not self._down and limits[0].requests >= FAST_MIN:
            key.counters.bind(self.token, self._window("k", key.id, limits[0]), limits[0])

    def try_local(self, groups: Groups, now: float) -> tuple[int | None, Verdict] | None:
        """Decide here when every window holds a spare, or one is known full; None: ask Redis."""
        if self._down:
            return None
        if self._ticking is None:
            self._ticking = asyncio.ensure_future(self._tick_forever())
        picked = []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit in limits:
                state = self._window(kind, ident, limit)
                state.seen = now
                if state.full_until > now:
                    return index, Verdict(False, limit.requests, 0, max(1, math.ceil(state.full_until - now)))
                if state.spare <= 0 or now >= state.until:
                    return None
                picked.append((state, limit))
        tight, fewest = None, 0
        for state, limit in picked:
            if state.spare <= state.low:  # running low, or settled after each request: exchange at the next tick
                self._soon.add(state)
                state.low = 0  # (`take` may spend the rest meanwhile)
            state.spare -= 1
            state.used += 1
            remaining = max(0, limit.requests - state.total + state.spare)
            if tight is None or remaining < fewest:
                tight, fewest = (state, limit), remaining
        assert tight is not None
        return None, Verdict(True, tight[1].requests, fewest, max(1, math.ceil(tight[0].frees - now)))

    async def check(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        """Asks Redis: settles these windows' leases, counts this request (all or nothing) and
        leases spares for the next ones. A request whose leasing window is in an exchange
        already waits for it, then tries its spares (windows of small limits hold no lease, and
        their requests never wait for each other)."""
        if self._down:
            return await self._counted(groups)  # each request asks, until Redis answers again
        if self._ticking is None:
            self._ticking = asyncio.ensure_future(self._tick_forever())
        windows = [(self._window(kind, ident, limit), limit) for kind, ident, limits in groups for limit in limits]
        leasing = [state for state, limit in windows if limit.requests >= FAST_MIN]
        while True:
            busy = {state.busy for state in leasing if state.busy is not None}
            if not busy:
                break
            await asyncio.wait(busy)
            if self._down:
                raise LimiterUnavailable("the exchange under way failed")
            answer = self.try_local(groups, time.time())
            if answer is not None:
                return answer
        done = asyncio.get_running_loop().create_future()
        for state in leasing:
            state.busy = done
        exchange = asyncio.ensure_future(self._decide(groups, [(s, limit, False) for s, limit in windows], done))
        exchange.add_done_callback(_retrieve)  # (a request that left meanwhile no longer waits for it)
        return await asyncio.shield(exchange)

    async def _decide(
        self, groups: Groups, windows: list[tuple[SharedWindow, Limit, bool]], done: asyncio.Future[None]
    ) -> tuple[int | None, Verdict]:
        try:
            full, resets = await self._exchange(windows, counting=True)
        finally:
            for state, _, _ in windows:
                if state.busy is done:
                    state.busy = None
            done.set_result(None)
        owners = [index for index, (_, _, limits) in enumerate(groups) for _ in limits]
        if full:
            state, limit, _ = windows[full - 1]
            state.full_until = state.frees  # (to the slot: a second's window frees every 1/60 s)
            return owners[full - 1], Verdict(False, limit.requests, 0, resets[full - 1])
        states = [
            (limit, state.total - state.spare, reset) for (state, limit, _), reset in zip(windows, resets, strict=True)
        ]
        return None, tightest(states, True)

    async def _counted(self, groups: Groups) -> tuple[int | None, Verdict]:
        """While Redis is down: one request counted, no lease touched (the next exchange of
        each window settles what it holds)."""
        keys: list[str] = []
        args: list[str | bytes] = [self._id, b"1"]
        owners = []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit in limits:
                keys.append(self._name(kind, ident, limit))
                args.append(b"%d %d 0 0 -1" % (limit.requests, limit.seconds))
                owners.append((index, limit))
        sent = time.time()
        try:
            answer = await self._script(keys=keys, args=args)
        except self._errors as err:
            self._outage(err)
            raise LimiterUnavailable(str(err)) from None
        self._back()
        full, clock = int(answer[0]), float(answer[1])
        states = []
        for i, (_, limit) in enumerate(owners):
            count, oldest = int(answer[2 + 4 * i]), int(answer[3 + 4 * i])
            reset = max(1, math.ceil(sent + (oldest + SPAN) * limit.slot_seconds - clock - time.time()))
            states.append((limit, count, reset))
        if full:
            index, limit = owners[full - 1]
            return index, Verdict(False, limit.requests, 0, states[full - 1][2])
        return None, tightest(states, True)

    async def _exchange(self, windows: list[tuple[SharedWindow, Limit, bool]], counting: bool) -> tuple[int, list[int]]:
        """One script for these windows (each (window, limit, let its lease end)): settle what
        was decided on spares, give back what is given up, count one request when `counting`,
        and keep or end each lease. Then what this process knows of them is brought up to date.
        Returns the window that refused (1-based, 0: none) and each window's reset."""
        sent = time.time()
        keys: list[str] = []
        args: list[str | bytes] = [self._id, b"1" if counting else b"0"]
        sent_used = []
        for state, limit, ending in windows:
            used, back = state.used, state.back
            if ending or sent >= state.until:  # an idle window's lease ends; an expired one's spares go back
                back += state.spare
                state.spare = 0
            if ending or limit.requests < FAST_MIN:
                want = -1
            else:
                want = max(0, max(LEASE_MIN, 2 * (used + 1 if counting else used)) - state.spare)
            state.used = state.back = 0
            keys.append(state.name)
            args.append(b"%d %d %d %d %d" % (limit.requests, limit.seconds, used, back, want))
            sent_used.append(used)
        try:
            answer = await self._script(keys=keys, args=args)
        except self._errors as err:
            for (state, _, _), used in zip(windows, sent_used, strict=True):
                if used:  # settled again next time (counted twice if this did reach Redis: never too few)
                    state.used += used
                    self._soon.add(state)
            self._outage(err)
            raise LimiterUnavailable(str(err)) from None
        self._back()
        full, clock = int(answer[0]), float(answer[1])
        resets = []
        now = time.time()
        for i, (state, limit, ending) in enumerate(windows):
            count, oldest, _, mine = (int(x) for x in answer[2 + 4 * i : 6 + 4 * i])
            state.total = count
            state.frees = sent + (oldest + SPAN) * limit.slot_seconds - clock
            resets.append(max(1, math.ceil(state.frees - now)))
            # the lease now holds the spares left and those decided while the script ran
            spare = mine - state.used - state.back
            if ending or spare <= 0:
                state.spare = 0
                state.due = NEVER
            else:
                state.spare = spare
                state.until = sent + LEASE_SECONDS
                state.due = sent + RENEW_AFTER
                if not state.queued:
                    self._look(state)
            tight = count >= limit.requests * TIGHT_SHARE
            state.low = max(state.spare // 4, state.spare - (0 if tight else max(1, limit.requests // SETTLE_SHARE)))
            if state.used and (tight or state.spare <= 0):
                self._soon.add(state)
        return full, resets

    def _look(self, state: SharedWindow) -> None:
        self._looked += 1
        heapq.heappush(self._looks, (state.due, self._looked, state))
        state.queued = True

    async def _tick_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            ticks += 1
            with contextlib.suppress(LimiterUnavailable):  # said once by _outage; retried
                if self._down:
                    if ticks % PROBE_TICKS == 0:
                        await self._probe()
                    continue
                await self._tick(time.time())
                if ticks % SWEEP_TICKS == 0:
                    self._sweep(time.time())

    async def _tick(self, now: float) -> None:
        """Exchange, in batches, the windows that asked for it and the leases due a look: an
        active window's lease is renewed, an idle one's ends."""
        looks, soon = self._looks, self._soon
        while looks and looks[0][0] <= now:
            _, _, state = heapq.heappop(looks)
            state.queued = False
            if state.due <= now:
                soon.add(state)
            elif state.due != NEVER:  # a later exchange moved its look
                self._look(state)
        if not soon:
            return
        ready = [state for state in soon if state.busy is None]
        soon.difference_update(ready)
        for start in range(0, len(ready), BATCH_WINDOWS):
            batch = [(s, s.limit, now - s.seen >= ACTIVE_SECONDS) for s in ready[start : start + BATCH_WINDOWS]]
            done = asyncio.get_running_loop().create_future()
            for state, _, _ in batch:
                state.busy = done
            try:
                await self._exchange(batch, counting=False)
            finally:
                for state, _, _ in batch:
                    if state.busy is done:
                        state.busy = None
                done.set_result(None)

    async def _probe(self) -> None:
        try:
            await self._client.ping()
        except self._errors:
            return
        self._back()

    def _sweep(self, now: float) -> None:
        """Forget windows idle for two days that hold nothing."""
        for where, state in list(self._windows.items()):
            if now - state.seen > WINDOWS["day"] * 2 and not (state.spare or state.used or state.back or state.busy):
                del self._windows[where]
                self._soon.discard(state)

    def _outage(self, err: Exception) -> None:
        if not self._down:
            log.warning("rate-limit backend unavailable: %s", err)
            self._down = True
            self.token = object()  # every request asks the backend (and follows on_backend_error)
            for state in self._windows.values():  # a lease may end while Redis is away: the next exchange says
                state.spare = 0

    def _back(self) -> None:
        if self._down:
            log.info("rate-limit backend is back")
            self._down = False

    async def close(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
        await self._client.aclose()


def _retrieve(task: asyncio.Task[object]) -> None:
    """An exchange's outcome is read even when the request that began it left."""
    if not task.cancelled():
        task.exception()


def open_limiter(
    backend: str, account_limits: tuple[Limit, ...] = (), default_key_limits: tuple[Limit, ...] = ()
) -> LocalLimiter | RedisLimiter:
    if backend == "local":
        return LocalLimiter(account_limits, default_key_limits)
    return RedisLimiter(backend, account_limits, default_key_limits)

"""Rate-limit counters: in this process (`LocalLimiter`), or one budget for every worker and
replica in Redis (`RedisLimiter`).

Both answer `try_local(groups, now)` at once when they can, else `check(groups, now)` (awaited),
where groups are [(kind, id, limits)] in the contract's order (the account first, then the
key; `groups(key)` makes them): the index of the first group that is over its limit, or None,
and the verdict whose numbers go into the RateLimit-* headers. `groups(key)` also binds a key
whose one window decides alone (one limit, no account limit: the common case) to its snapshot
(`core.ratelimit.Binding`; Redis's only while it answers), so its next requests go straight to
that window's `take`.

Redis, without a round trip per request: a window far from its limit (fewer than
FAST_MARGIN of it used, by the last known global count plus this process's own requests) is
decided here and its increments are pushed, with every active window's global count pulled
back, in one script every SYNC_SECONDS (every CALM_TICKS-th time only for windows under
CALM_SHARE of their limit). A window near its limit, or with a small limit, goes
to Redis for every request (exact), and a window Redis found full is refused here until it
frees. Staleness can only matter far from the limit, where it cannot push a window over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from gateway.core.decision import KeySnapshot
from gateway.core.ratelimit import SLOTS, SPAN, WINDOWS, Limit, Verdict, Window, check, epoch_of, tightest

log = logging.getLogger("gateway.ratelimit")
Groups = list[tuple[str, str, tuple[Limit, ...]]]


class LimiterUnavailable(Exception):
    """The shared backend did not answer."""


class Policy:
    """The limits that apply to a key: the configured account limits, and the key's own or,
    when it sets none, the configured default."""

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


# The same counting as core.ratelimit, atomically in Redis: one hash per window, a field per
# slot. ARGV: for each window its limit and length in seconds. Redis's own clock is the time,
# so every replica counts on one clock. Returns: the index (1-based) of the first full window
# or 0, then per window the count (after this request if allowed) and the oldest live slot.
SCRIPT = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local slots, used, full = {{}}, {{}}, 0
for i = 1, #KEYS do
  local limit, seconds = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local slot = math.floor(now * {SLOTS} / seconds)
  local total, fields = 0, redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) <= slot - {SPAN} then redis.call('HDEL', KEYS[i], fields[j])
    else total = total + tonumber(fields[j + 1]) end
  end
  slots[i], used[i] = slot, total
  if total >= limit and full == 0 then full = i end
end
local out = {{full, tostring(now)}}
for i = 1, #KEYS do
  local seconds = tonumber(ARGV[2 * i])
  if full == 0 then
    redis.call('HINCRBY', KEYS[i], slots[i], 1)
    redis.call('EXPIRE', KEYS[i], math.ceil(seconds * {SPAN} / {SLOTS}) + 1)
    used[i] = used[i] + 1
  end
  local oldest = slots[i]
  for _, field in ipairs(redis.call('HKEYS', KEYS[i])) do
    local s = tonumber(field)
    if s < oldest then oldest = s end
  end
  table.insert(out, used[i])
  table.insert(out, oldest)
end
return out
"""


# The batch: ARGV[i] is "<window seconds> <slot>:<count> ..." for KEYS[i] (one argument per
# window keeps the command small); pushes the counts, returns each window's total in its span.
SYNC_SCRIPT = f"""
local out = {{}}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local seconds, pushed = nil, false
  for word in string.gmatch(ARGV[i], '%S+') do
    if seconds == nil then seconds = tonumber(word)
    else
      local slot, count = string.match(word, '^(%d+):(%d+)$')
      redis.call('HINCRBY', KEYS[i], slot, tonumber(count))
      pushed = true
    end
  end
  if pushed then redis.call('EXPIRE', KEYS[i], math.ceil(seconds * {SPAN} / {SLOTS}) + 1) end
  local slot = math.floor(now * {SLOTS} / seconds)
  local total, fields = 0, redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) > slot - {SPAN} then total = total + tonumber(fields[j + 1]) end
  end
  table.insert(out, total)
end
return out
"""
SYNC_SECONDS = 0.02
FAST_MIN = 200  # limits smaller than this always ask Redis: a few requests decide them
FAST_MARGIN = 0.8  # decide here while less than this share of the limit is used
CALM_SHARE = 0.5  # windows using less than this share sync every CALM_TICKS-th tick only
CALM_TICKS = 5  # (100 ms: far from the limit, a fresher count changes no decision)
ACTIVE_SECONDS = 2.0  # windows used this recently are synced
LENGTHS = {per: Limit(1, per) for per in WINDOWS}  # a window's length, as `Window.used` takes it


class SharedWindow:
    """What this process knows of one window in Redis."""

    __slots__ = ("calm", "full_until", "name", "others", "own", "pending", "per", "seen")

    def __init__(self, name: str, per: str, epoch: float) -> None:
        self.name = name  # the window's hash in Redis
        self.per = per
        self.own = Window(epoch)  # this process's own requests
        self.pending: dict[int, int] = {}  # slot -> own requests not yet pushed
        self.others = 0  # the other processes' requests in the span, as of the last sync
        self.full_until = 0.0  # Redis found the window full: refuse here until then
        self.seen = 0.0  # last use: windows idle for a while are no longer synced
        self.calm = False  # under CALM_SHARE of its limit used at the last local decision

    def take(self, limit: Limit, now: float) -> bytes | None:
        """`RedisLimiter.try_local` for this window alone, when it changes nothing but counts
        (far from the limit, not known full, no change of calm): the end of the answer's head, as
        `Window.take`; None: the general way decides."""
        requests = limit.requests
        used = self.own.used(limit, now) + self.others
        if self.full_until > now or not far(requests, used) or (used < requests * CALM_SHARE) is not self.calm:
            return None
        self.seen = now
        self.count()
        return limit.ending % (requests - used - 1, self.own.reset_after(limit, now))

    def count(self) -> None:
        """One request of this process, in the slot of the last `own.used`; pushed later."""
        self.own.add()
        slot = self.own.last
        self.pending[slot] = self.pending.get(slot, 0) + 1


def far(requests: int, used: int) -> bool:
    """A window this process may decide alone: a limit large enough, far enough from it."""
    return requests >= FAST_MIN and used < requests * FAST_MARGIN


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
        self._script = self._client.register_script(SCRIPT)
        self._sync_script = self._client.register_script(SYNC_SCRIPT)
        self._errors = (redis.RedisError, OSError, TimeoutError)
        self._down = False
        self._windows: dict[tuple[str, str, str], SharedWindow] = {}  # (kind, id, per)
        self._eager: set[SharedWindow] = set()  # windows synced every tick: new, or not calm
        self._syncing: asyncio.Task | None = None

    @staticmethod
    def _name(kind: str, ident: str, limit: Limit) -> str:
        return f"gateway:rl:{kind}:{ident}:{limit.per}"

    def _window(self, kind: str, ident: str, limit: Limit) -> SharedWindow:
        state = self._windows.get((kind, ident, limit.per))
        if state is None:
            state = self._windows[(kind, ident, limit.per)] = SharedWindow(
                self._name(kind, ident, limit), limit.per, self.epoch
            )
            self._eager.add(state)  # its global count is not known yet
        return state

    def bind(self, key: KeySnapshot, limits: tuple[Limit, ...]) -> None:
        if not self._down:
            key.counters.bind(self.token, self._window("k", key.id, limits[0]), limits[0])

    def try_local(self, groups: Groups, now: float) -> tuple[int | None, Verdict] | None:
        """Decide here when every window is far from its limit or known full; None: ask Redis."""
        if self._down:
            return None
        if self._syncing is None:
            self._syncing = asyncio.ensure_future(self._sync_forever())
        picked = []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit in limits:
                state = self._window(kind, ident, limit)
                state.seen = now
                if state.full_until > now:
                    return index, Verdict(False, limit.requests, 0, max(1, int(state.full_until - now + 0.999)))
                used = state.own.used(limit, now) + state.others
                if not far(limit.requests, used):
                    if state.calm:
                        state.calm = False
                        self._eager.add(state)
                    return None
                calm = used < limit.requests * CALM_SHARE
                if calm is not state.calm:
                    state.calm = calm
                    (self._eager.discard if calm else self._eager.add)(state)
                picked.append((state, limit, used))
        tight, fewest = None, 0
        for state, limit, used in picked:
            state.count()
            remaining = limit.requests - used - 1
            if tight is None or remaining < fewest:
                tight, fewest = (state, limit), remaining
        assert tight is not None
        return None, Verdict(True, tight[1].requests, fewest, tight[0].own.reset_after(tight[1], now))

    async def _sync_forever(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            tick += 1
            with contextlib.suppress(LimiterUnavailable):  # said once by _outage; retried
                await self._sync(every=tick % CALM_TICKS == 0)

    async def _sync(self, every: bool = True) -> None:
        """Push this process's increments and pull the active windows' global counts: all of
        them if `every`, else only the eager ones (new, or using half their limit or more)."""
        now = time.time()
        if every:  # a full pass, which also forgets windows long idle
            active = []
            for where, state in list(self._windows.items()):
                idle = now - state.seen
                if idle < ACTIVE_SECONDS or state.pending:
                    active.append(state)
                elif idle > WINDOWS["day"] * 2:
                    del self._windows[where]
                    self._eager.discard(state)
        else:  # only the eager ones: no pass over every window 50 times a second
            active = [state for state in self._eager if now - state.seen < ACTIVE_SECONDS or state.pending]
        await self._exchange(active, now)

    async def _exchange(self, active: list[SharedWindow], now: float) -> None:
        """One script: push these windows' pending increments, pull their global counts."""
        if not active:
            return
        keys, args, taken = [], [], []
        for state in active:
            pending, state.pending = state.pending, {}
            taken.append(pending)
            keys.append(state.name)
            length, at = LENGTHS[state.per], state.own.absolute
            args.append(b"%d" % length.seconds + b"".join([b" %d:%d" % (at(s, length), n) for s, n in pending.items()]))
        try:
            totals = await self._sync_script(keys=keys, args=args)
        except self._errors as err:
            for state, pending in zip(active, taken, strict=True):  # keep them for the next try
                for slot, count in pending.items():
                    state.pending[slot] = state.pending.get(slot, 0) + count
            self._outage(err)
            raise LimiterUnavailable(str(err)) from None
        self._back()
        for state, total in zip(active, totals, strict=True):
            own = state.own.used(LENGTHS[state.per], now)
            state.others = max(0, int(total) - own - sum(state.pending.values()))

    def _outage(self, err: Exception) -> None:
        if not self._down:
            log.warning("rate-limit backend unavailable: %s", err)
            self._down = True
            self.token = object()  # every request asks the backend (and follows on_backend_error)

    def _back(self) -> None:
        if self._down:
            log.info("rate-limit backend is back")
            self._down = False

    async def check(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        """The exact path: this request's windows' pending increments first (so Redis counts
        them), then one atomic script."""
        mine = [self._windows.get((kind, ident, limit.per)) for kind, ident, limits in groups for limit in limits]
        held = [state for state in mine if state is not None and state.pending]
        if held:
            await self._exchange(held, time.time())
        keys, args, owners, wheres = [], [], [], []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit in limits:
                keys.append(self._name(kind, ident, limit))
                wheres.append((kind, ident, limit.per))
                args += [limit.requests, limit.seconds]
                owners.append((index, limit))
        try:
            answer = await self._script(keys=keys, args=args)
        except self._errors as err:
            self._outage(err)
            raise LimiterUnavailable(str(err)) from None
        self._back()
        full, clock = int(answer[0]), float(answer[1])
        states = []
        for i, (_, limit) in enumerate(owners):
            used, oldest = int(answer[2 + 2 * i]), int(answer[3 + 2 * i])
            reset = max(1, int((oldest + SPAN) * limit.seconds / SLOTS - clock + 0.999))
            states.append((limit, used, reset))
        if full:
            index, limit = owners[full - 1]
            state = self._windows.get(wheres[full - 1])
            if state is not None:
                state.full_until = now + states[full - 1][2]
            return index, tightest([s for s, (i, _) in zip(states, owners, strict=True) if i == index], False)
        return None, tightest(states, True)

    async def close(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
        await self._client.aclose()


def open_limiter(
    backend: str, account_limits: tuple[Limit, ...] = (), default_key_limits: tuple[Limit, ...] = ()
) -> LocalLimiter | RedisLimiter:
    if backend == "local":
        return LocalLimiter(account_limits, default_key_limits)
    return RedisLimiter(backend, account_limits, default_key_limits)

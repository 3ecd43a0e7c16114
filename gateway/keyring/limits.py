"""Rate-limit counters: in this process (`LocalLimiter`), or one budget for every worker and
replica in Redis (`RedisLimiter`, one atomic script per limited request).

Both answer `check(groups, now)` where groups are [(kind, id, limits)] in the contract's order
(the account first, then the key): the index of the first group that is over its limit, or
None, and the verdict whose numbers go into the RateLimit-* headers.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.core.ratelimit import SLOTS, SPAN, Limit, Verdict, Window, check, tightest

log = logging.getLogger("gateway.ratelimit")
Groups = list[tuple[str, str, tuple[Limit, ...]]]


class LimiterUnavailable(Exception):
    """The shared backend did not answer."""


class LocalLimiter:
    """Exact within this process; with several workers each counts alone."""

    shared = False

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, str], Window] = {}  # (kind, id, per): bounded by keys and accounts

    def check_now(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        counters = []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit in limits:
                window = self._windows.get((kind, ident, limit.per))
                if window is None:
                    window = self._windows[(kind, ident, limit.per)] = Window()
                counters.append((window, limit, index))
        return check(counters, now)

    async def check(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        return self.check_now(groups, now)

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


class RedisLimiter:
    """One budget across every worker and replica; an outage is logged once, and each request
    then follows `on_backend_error` until Redis answers again (redis-py reconnects by itself)."""

    shared = True

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        import redis.asyncio as redis  # only deployments that use Redis need the package

        self._client: Any = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._client.register_script(SCRIPT)
        self._errors = (redis.RedisError, OSError, TimeoutError)
        self._down = False

    async def check(self, groups: Groups, now: float) -> tuple[int | None, Verdict]:
        keys, args, owners = [], [], []
        for index, (kind, ident, limits) in enumerate(groups):
            for limit in limits:
                keys.append(f"gateway:rl:{kind}:{ident}:{limit.per}")
                args += [limit.requests, limit.seconds]
                owners.append((index, limit))
        try:
            answer = await self._script(keys=keys, args=args)
        except self._errors as err:
            if not self._down:
                log.warning("rate-limit backend unavailable: %s", err)
                self._down = True
            raise LimiterUnavailable(str(err)) from None
        if self._down:
            log.info("rate-limit backend is back")
            self._down = False
        full, clock = int(answer[0]), float(answer[1])
        states = []
        for i, (_, limit) in enumerate(owners):
            used, oldest = int(answer[2 + 2 * i]), int(answer[3 + 2 * i])
            reset = max(1, int((oldest + SPAN) * limit.seconds / SLOTS - clock + 0.999))
            states.append((limit, used, reset))
        if full:
            index, _ = owners[full - 1]
            return index, tightest([s for s, (i, _) in zip(states, owners, strict=True) if i == index], False)
        return None, tightest(states, True)

    async def close(self) -> None:
        await self._client.aclose()


def open_limiter(backend: str) -> LocalLimiter | RedisLimiter:
    return LocalLimiter() if backend == "local" else RedisLimiter(backend)

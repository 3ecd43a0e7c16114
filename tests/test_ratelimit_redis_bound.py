"""One Redis budget across real worker processes stays within 10% of the limit (§7.1): a burst
of 40 connections x 12 pipelined requests on a 200/minute key through a gateway of two
workers, in front of a real upstream, with a Redis of the test's own; once as is, once with
that Redis stopped (SIGSTOP) for 0.35 s in the middle of the burst, under its 0.5 s timeout."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Process
from tests.rawhttp import RawClient
from tests.redisserver import PrivateRedis

CONNECTIONS, PIPELINED, LIMIT = 40, 12, 200


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


def admin(proc: Process, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(proc.admin_url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {proc.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def listening(port: int) -> int:
    """How many sockets listen on this port (each worker has its own, SO_REUSEPORT)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def two_workers(spawn: Any, upstream: str, redis: str) -> Process:
    proc = spawn(f"upstream: {{url: '{upstream}'}}\nrate_limits: {{backend: '{redis}'}}\n", workers=2)
    port = int(proc.proxy_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 20
    while listening(port) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listening(port) == 2
    return proc


def known_everywhere(proc: Process, key: str) -> None:
    """Until the key is known to every worker: new connections land on either, and a request
    out of the key's interfaces is refused (403) before its limit counts anything."""
    deadline, streak = time.monotonic() + 20, 0
    while streak < 20 and time.monotonic() < deadline:
        request = urllib.request.Request(proc.proxy_url + "/api/v5/corp/user/list", method="POST", data=b"")
        request.add_header("Authorization", f"Bearer {key}")
        try:
            urllib.request.urlopen(request, timeout=10)
            status = 200
        except urllib.error.HTTPError as err:
            status = err.code
        assert status in (401, 403), status
        streak = streak + 1 if status == 403 else 0
    assert streak == 20


async def burst(port: int, key: str, redis: PrivateRedis | None = None) -> tuple[list[int], int]:
    """Every connection opened first, then each writes its 12 requests at once. With `redis`,
    that Redis is stopped for 0.35 s once a tenth of the answers are in. Returns the statuses and
    how many answers had arrived when Redis stopped."""
    request = (
        f"POST /api/v5/workflow/task/approve HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    clients = [await RawClient.connect(port) for _ in range(CONNECTIONS)]
    total = CONNECTIONS * PIPELINED
    progress = asyncio.Event()

    def answered() -> int:
        return sum(1 for c in clients for r in c.collector.responses if r.complete)

    async def one(client: RawClient) -> None:
        client.writer.write(request * PIPELINED)
        while sum(1 for r in client.collector.responses if r.complete) < PIPELINED:
            data = await asyncio.wait_for(client.reader.read(65536), 10)
            assert data, "the gateway closed a connection in the burst"
            client.parser.feed_data(data)
            progress.set()

    async def pause_midway() -> int:
        while answered() < total // 10:
            progress.clear()
            await progress.wait()
        at = answered()
        assert redis is not None
        redis.pause()
        try:
            await asyncio.sleep(0.35)
        finally:
            redis.resume()
        return at

    pausing = asyncio.ensure_future(pause_midway()) if redis is not None else None
    try:
        await asyncio.gather(*(one(c) for c in clients))
        at = await pausing if pausing is not None else 0
    finally:
        for client in clients:
            await client.close()
    return [r.status for c in clients for r in c.collector.responses], at


@pytest.mark.parametrize("paused", [False, True], ids=["steady", "redis-paused"])
async def test_a_burst_on_two_workers_stays_within_ten_percent(
    spawn: Any, upstream_process: str, redis_server: PrivateRedis, paused: bool
) -> None:
    proc = two_workers(spawn, upstream_process, redis_server.url)
    key = admin(
        proc,
        "POST",
        "/api/v1/keys",
        {"interfaces": ["workflow"], "rate_limits": [{"requests": LIMIT, "per": "minute"}]},
    )
    known_everywhere(proc, key["key"])
    port = int(proc.proxy_url.rsplit(":", 1)[1])
    statuses, at = await burst(port, key["key"], redis_server if paused else None)
    assert len(statuses) == CONNECTIONS * PIPELINED
    allowed = statuses.count(200)
    assert statuses.count(429) == len(statuses) - allowed, sorted(set(statuses))
    assert LIMIT <= allowed <= LIMIT * 1.1, allowed
    if paused:
        assert at < len(statuses)  # Redis stopped while the burst was still going


# The same bound at the limiter's level: several limiters on one Redis are several processes.


async def decide(limiter: Any, groups: list, now: float | None = None) -> int | None:
    """As the proxy asks: on the binding or here if it can, else Redis. -1: allowed."""
    answer = limiter.try_local(groups, time.time() if now is None else now)
    if answer is None:
        answer = await limiter.check(groups, time.time())
    group, _ = answer
    return -1 if group is None else group


@pytest.mark.parametrize("processes", [2, 3, 6])
async def test_leases_keep_many_processes_within_ten_percent(redis_server: PrivateRedis, processes: int) -> None:
    """Account and key limits at once, requests from every process interleaved: each budget
    is used to its limit and passed by at most a tenth of it."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring.limits import RedisLimiter

    account, key = (Limit(300, "minute"),), (Limit(200, "minute"), Limit(1000, "hour"))
    limiters = [RedisLimiter(redis_server.url) for _ in range(processes)]
    try:
        first = [("a", "acme", account), ("k", "one", key)]
        second = [("a", "acme", account), ("k", "two", ())]  # a key with no limit of its own

        async def client(n: int) -> list[tuple[int, int | None]]:
            out = []
            for i in range(120):
                groups = first if (n + i) % 3 else second
                out.append((0 if groups is first else 1, await decide(limiters[n % processes], groups)))
                if i % 7 == 0:
                    await asyncio.sleep(0)
            return out

        results = [r for rs in await asyncio.gather(*(client(n) for n in range(12))) for r in rs]
        by_account = sum(1 for _, group in results if group == -1)
        by_key = sum(1 for which, group in results if which == 0 and group == -1)
        assert 300 <= by_account <= 330, by_account
        assert by_key <= 220, by_key
        refused_by_key = sum(1 for which, group in results if which == 0 and group == 1)
        assert refused_by_key == 0 or by_key >= 200  # the key refused only once its own budget was used
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_a_lease_is_counted_at_once_and_ends_with_its_process(redis_server: PrivateRedis) -> None:
    """Spares leased by one process count for every other from the moment they are granted;
    a lease whose end has passed (its process is gone) counts no more."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring.limits import LEASE_MIN, RedisLimiter

    a, b = RedisLimiter(redis_server.url), RedisLimiter(redis_server.url)
    try:
        groups = [("k", "leased", (Limit(1000, "minute"),))]
        assert await decide(a, groups) == -1
        _, verdict = await b.check(groups, time.time())
        assert verdict.remaining == 1000 - 2 - LEASE_MIN  # both requests, and A's spares (B's own are B's to use)
        await b._client.hset("gateway:rl2:k:leased:minute", f"e:{a._id}", 1)  # A's lease ended long ago
        _, verdict = await b.check(groups, time.time())
        assert verdict.remaining == 1000 - 3  # A's spares count no more
        assert not await b._client.hexists("gateway:rl2:k:leased:minute", f"l:{a._id}")
    finally:
        await a.close()
        await b.close()


async def test_a_quiet_window_gives_its_lease_back(redis_server: PrivateRedis, monkeypatch: Any) -> None:
    """A lease is looked at RENEW_AFTER after its last exchange: renewed while its window is in
    use, given back (in the batch, without any request) once it has been quiet."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring import limits

    monkeypatch.setattr(limits, "RENEW_AFTER", 0.2)
    monkeypatch.setattr(limits, "ACTIVE_SECONDS", 0.3)
    limiter = limits.RedisLimiter(redis_server.url)
    name = "gateway:rl2:k:quiet:minute"
    try:
        groups = [("k", "quiet", (Limit(1000, "minute"),))]
        assert await decide(limiter, groups) == -1
        assert int(await limiter._client.hget(name, f"l:{limiter._id}")) == limits.LEASE_MIN
        for _ in range(5):  # in use: the lease is renewed (and what was decided settled)
            await asyncio.sleep(0.1)
            assert await decide(limiter, groups) == -1
        assert await limiter._client.hexists(name, f"l:{limiter._id}")
        await asyncio.sleep(0.8)  # quiet: given back
        assert not await limiter._client.hexists(name, f"l:{limiter._id}")
        slots = {k: int(v) for k, v in (await limiter._client.hgetall(name)).items() if k.isdigit()}
        assert sum(slots.values()) == 6  # every request decided, settled; nothing else
        assert limiter._windows[("k", "quiet", "minute")].spare == 0
    finally:
        await limiter.close()


async def test_an_edited_limit_gives_the_old_spares_back(redis_server: PrivateRedis) -> None:
    """Spares leased for a key's old limit are not spent under its new one: they go back with
    the next exchange, and the new limit leases its own."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring.limits import LEASE_MIN, RedisLimiter

    limiter = RedisLimiter(redis_server.url)
    name = "gateway:rl2:k:edited:minute"
    try:
        assert await decide(limiter, [("k", "edited", (Limit(1000, "minute"),))]) == -1
        state = limiter._windows[("k", "edited", "minute")]
        assert state.spare == LEASE_MIN
        edited = [("k", "edited", (Limit(300, "minute"),))]
        assert limiter.try_local(edited, time.time()) is None  # the old spares are not the new limit's
        assert (state.spare, state.back) == (0, LEASE_MIN)
        group, verdict = await limiter.check(edited, time.time())
        assert group is None and verdict.limit == 300 and verdict.remaining == 300 - 2
        assert int(await limiter._client.hget(name, f"l:{limiter._id}")) == state.spare == LEASE_MIN
    finally:
        await limiter.close()


async def test_a_process_decides_no_more_than_its_spares(redis_server: PrivateRedis) -> None:
    """However the spares are spent (the general way, which asks for an exchange when they run
    low, then the binding's `take`), a process decides alone exactly as many requests as it
    leased, and the next one asks Redis."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring.limits import LEASE_MIN, RedisLimiter

    limiter = RedisLimiter(redis_server.url)
    limiter._ticking = asyncio.get_running_loop().create_future()  # no batch: the spares are not renewed
    limit = Limit(1000, "minute")
    groups = [("k", "spent", (limit,))]
    try:
        assert await decide(limiter, groups) == -1
        state = limiter._windows[("k", "spent", "minute")]
        state.low = state.spare  # as for a window near its limit: the next request asks for an exchange
        decided = 0
        while (answer := limiter.try_local(groups, time.time())) is not None:
            assert answer[0] is None
            decided += 1
            while state.take(limit, time.time()) is not None:
                decided += 1
        assert decided == LEASE_MIN and state.spare == 0 and state.used == LEASE_MIN
        assert state in limiter._soon
    finally:
        await limiter.close()


async def test_the_previous_release_never_reads_a_lease(redis_server: PrivateRedis) -> None:
    """The previous release's script reads every field of `gateway:rl:<kind>:<id>:<per>` as a
    slot number, and fails on a lease field: the leasing windows live under a name of their
    own, so a rolling upgrade leaves the old replicas counting, apart, instead of failing open."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring.limits import RedisLimiter

    limiter = RedisLimiter(redis_server.url)
    try:
        assert await decide(limiter, [("k", "upgraded", (Limit(1000, "minute"),))]) == -1
        assert await limiter._client.keys("gateway:rl:*") == []
        fields = await limiter._client.hkeys("gateway:rl2:k:upgraded:minute")
        assert f"l:{limiter._id}".encode() in fields
    finally:
        await limiter.close()

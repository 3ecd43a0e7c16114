"""Rate limits through real gateways: per key and per account, local and in Redis (two
replicas sharing one budget), and Redis cut and restored through a relay the test controls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Proxy
from tests.redisserver import redis_url
from tests.tcpproxy import TcpRelay

V5_LIST = "/api/v5/app/entry/data/list"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only: the counters live in memory or Redis, not in the key store."""
    yield f"sqlite:///{tmp_path}/gateway.db"


def second(n: int) -> list[dict[str, Any]]:
    return [{"requests": n, "per": "second"}]


async def call(proxy: Proxy, key: str, path: str = "/api/v5/app/list") -> tuple[int, dict[str, str], Any]:
    status, headers, body = await proxy.request("POST", path, key=key)
    return status, headers, body


async def test_a_burst_of_n_plus_one_then_recovery(proxy: Proxy) -> None:
    key = await proxy.admin.create(rate_limits=second(5))
    assert key["rate_limits"] == second(5)
    answers = [await call(proxy, key["key"]) for _ in range(6)]
    assert [status for status, _, _ in answers] == [200] * 5 + [429]
    assert [h["RateLimit-Remaining"] for _, h, _ in answers] == ["4", "3", "2", "1", "0", "0"]
    assert all(h["RateLimit-Limit"] == "5" and int(h["RateLimit-Reset"]) >= 1 for _, h, _ in answers)
    _, headers, body = answers[-1]
    assert b'"code": 8304' in body and b'"reason": "key_rate_limited"' in body
    assert int(headers["Retry-After"]) >= 1
    assert len(proxy.upstream.recorder.requests) == 5
    await asyncio.sleep(1.1)
    assert (await call(proxy, key["key"]))[0] == 200


async def test_refused_requests_consume_nothing(proxy: Proxy) -> None:
    key = await proxy.admin.create(rate_limits=second(2), interfaces=["app"])
    for _ in range(5):  # refused by the interface scope before the limit is counted
        assert (await call(proxy, key["key"], "/api/v5/corp/user/list"))[0] == 403
    assert [(await call(proxy, key["key"]))[0] for _ in range(3)] == [200, 200, 429]


async def test_per_account_limits_and_defaults(start_proxy: Any) -> None:
    proxy: Proxy = await start_proxy(
        rate_limits={"per_account": [{"requests": 3, "per": "minute"}], "default_per_key": second(2)}
    )
    acme = f"acme-{uuid.uuid4().hex[:6]}"
    one = (await proxy.admin.create(account=acme))["key"]
    two = (await proxy.admin.create(account=acme, rate_limits=second(50)))["key"]
    other = (await proxy.admin.create(account="globex"))["key"]
    assert [(await call(proxy, k))[0] for k in (one, one, two)] == [200, 200, 200]
    status, _, body = await call(proxy, two)
    assert status == 429 and b'"code": 8303' in body and b"account_rate_limited" in body
    assert (await call(proxy, other))[0] == 200  # another account's budget is its own
    assert (await call(proxy, other))[0] == 200
    status, _, body = await call(proxy, other)  # the default per-key limit: 2 per second
    assert status == 429 and b"key_rate_limited" in body


async def test_an_edit_of_a_limit_applies_to_the_next_request(proxy: Proxy) -> None:
    """A key with one limit is counted through its snapshot's binding; an edit makes a new
    snapshot, so the new limit holds at once and the counts so far carry over."""
    key = await proxy.admin.create(rate_limits=second(5))
    assert [(await call(proxy, key["key"]))[0] for _ in range(3)] == [200] * 3
    status, _ = await proxy.admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"rate_limits": second(4)})
    assert status == 200
    answers = [await call(proxy, key["key"]) for _ in range(2)]
    assert [(s, h["RateLimit-Limit"], h["RateLimit-Remaining"]) for s, h, _ in answers] == [
        (200, "4", "0"),
        (429, "4", "0"),
    ]
    status, _ = await proxy.admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"rate_limits": []})
    assert (await call(proxy, key["key"]))[:1] == (200,) and "RateLimit-Limit" not in (await call(proxy, key["key"]))[1]


async def test_keys_without_limits_carry_no_headers(proxy: Proxy) -> None:
    key = await proxy.admin.create()
    status, headers, _ = await call(proxy, key["key"])
    assert status == 200 and "RateLimit-Limit" not in headers


@pytest.mark.parametrize(
    "value", [[{"requests": 0, "per": "second"}], [{"requests": 5, "per": "fortnight"}], "5/second"]
)
async def test_bad_limits_are_field_errors(proxy: Proxy, value: Any) -> None:
    status, body = await proxy.admin.call("POST", "/api/v1/keys", {"rate_limits": value})
    assert status == 422 and body["error"]["field"].startswith("rate_limits")


async def test_two_replicas_share_one_budget_in_redis(start_proxy: Any) -> None:
    backend = redis_url()
    a: Proxy = await start_proxy(rate_limits={"backend": backend})
    b: Proxy = await start_proxy(rate_limits={"backend": backend})  # same database, same Redis
    key = await a.admin.create(rate_limits=[{"requests": 10, "per": "minute"}])
    await asyncio.sleep(0.6)  # the key reaches replica B
    statuses = [(await call(replica, key["key"]))[0] for _ in range(8) for replica in (a, b)]
    assert statuses.count(200) == 10 and statuses.count(429) == 6
    assert statuses[:10] == [200] * 10


@contextlib.asynccontextmanager
async def proxy_behind_relay(start_proxy: Any, mode: str) -> AsyncIterator[tuple[Proxy, TcpRelay]]:
    """A gateway whose Redis is reached through a relay the test can cut and restore."""
    server = urlsplit(redis_url())
    relay = TcpRelay(server.hostname or "127.0.0.1", server.port or 6379)
    await relay.start()
    try:
        backend = f"redis://127.0.0.1:{relay.port}{server.path or '/0'}"
        yield await start_proxy(rate_limits={"backend": backend, "on_backend_error": mode}), relay
    finally:
        await relay.close()


async def assert_outage_answer(proxy: Proxy, key: str, mode: str) -> None:
    status, headers, body = await call(proxy, key)
    if mode == "allow":
        assert status == 200 and "RateLimit-Limit" not in headers
    else:
        assert status == 503 and b"rate_limit_unavailable" in body


async def logged(caplog: Any, text: str, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds * 10)):
        if any(text in r.getMessage() for r in caplog.records):
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize("mode", ["allow", "deny"])
async def test_a_redis_outage_fails_open_or_closed_and_recovers(start_proxy: Any, caplog: Any, mode: str) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ratelimit")
    async with proxy_behind_relay(start_proxy, mode) as (proxy, relay):
        key = await proxy.admin.create(rate_limits=second(100))
        open_key = await proxy.admin.create()  # no limits: Redis is never asked
        assert (await call(proxy, key["key"]))[0] == 200
        relay.cut()
        for _ in range(3):
            await assert_outage_answer(proxy, key["key"], mode)
            assert (await call(proxy, open_key["key"]))[0] == 200
        outages = [r for r in caplog.records if "rate-limit backend unavailable" in r.getMessage()]
        assert len(outages) == 1  # logged once, not per request
        relay.restore()
        await asyncio.sleep(0.2)
        status, headers, _ = await call(proxy, key["key"])
        assert status == 200 and headers["RateLimit-Limit"] == "100"
        assert any("rate-limit backend is back" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", ["allow", "deny"])
async def test_an_outage_reaches_keys_decided_locally(start_proxy: Any, caplog: Any, mode: str) -> None:
    """A large limit is decided in this process, without Redis; once the batch finds Redis
    gone, those keys too follow on_backend_error, and count again when it is back."""
    caplog.set_level(logging.INFO, logger="gateway.ratelimit")
    async with proxy_behind_relay(start_proxy, mode) as (proxy, relay):
        key = await proxy.admin.create(rate_limits=[{"requests": 100_000, "per": "minute"}])
        for _ in range(3):
            status, headers, _ = await call(proxy, key["key"])
            assert status == 200 and headers["RateLimit-Limit"] == "100000"
        relay.cut()
        assert await logged(caplog, "rate-limit backend unavailable")  # the batch (every 20 ms) notices
        for _ in range(3):
            await assert_outage_answer(proxy, key["key"], mode)
        relay.restore()
        assert await logged(caplog, "rate-limit backend is back")
        status, headers, _ = await call(proxy, key["key"])
        assert status == 200 and headers["RateLimit-Limit"] == "100000"


async def test_a_large_limit_is_decided_locally_and_stays_within_it_across_replicas(start_proxy: Any) -> None:
    """Each replica decides alone within the spares it leased from Redis, and slices shrink as
    the budget runs out (the last requests are counted one by one): under load across two
    replicas the whole limit is used, and passed by no more than the contract's 10%."""
    backend = redis_url()
    a: Proxy = await start_proxy(rate_limits={"backend": backend})
    b: Proxy = await start_proxy(rate_limits={"backend": backend})
    key = await a.admin.create(rate_limits=[{"requests": 1000, "per": "minute"}])
    await asyncio.sleep(0.6)
    semaphore = asyncio.Semaphore(16)

    async def one(n: int) -> int:
        async with semaphore:
            return (await call(a if n % 2 else b, key["key"]))[0]

    statuses = await asyncio.gather(*(one(n) for n in range(1300)))
    allowed = statuses.count(200)
    assert 1000 <= allowed <= 1100, allowed
    assert statuses.count(429) == 1300 - allowed


async def test_a_check_settles_only_its_own_windows() -> None:
    """A request that must ask Redis settles what this process decided on the spares of ITS
    windows (moved from the lease into a slot, in the same script), and leaves the other
    windows to the batch: no pass over every window."""
    from gateway.core.ratelimit import Limit
    from gateway.keyring.limits import LEASE_MIN, RedisLimiter

    limiter = RedisLimiter(redis_url())
    limiter._ticking = asyncio.get_running_loop().create_future()  # no batch: only check() talks to Redis
    ident = uuid.uuid4().hex
    large, small = (Limit(1000, "minute"),), (Limit(5, "minute"),)

    async def in_redis(name: str) -> tuple[int, int]:
        """The window's settled requests, and what this process holds on lease."""
        fields = {
            k.decode(): int(v) for k, v in (await limiter._client.hgetall(f"gateway:rl2:k:{name}:minute")).items()
        }
        return sum(v for k, v in fields.items() if k.isdigit()), fields.get(f"l:{limiter._id}", 0)

    try:
        now = time.time()
        far = [("k", f"far-{ident}", large)]
        assert (await limiter.check(far, now))[0] is None  # counted in Redis, and spares leased
        far_window = limiter._windows[("k", f"far-{ident}", "minute")]
        assert far_window.spare == LEASE_MIN and await in_redis(f"far-{ident}") == (1, LEASE_MIN)
        for _ in range(3):
            decided = limiter.try_local(far, now)
            assert decided is not None and decided[0] is None  # decided here on a spare
        assert far_window.used == 3 and far_window.spare == LEASE_MIN - 3
        assert await in_redis(f"far-{ident}") == (1, LEASE_MIN)  # still in the lease
        near = [("k", f"near-{ident}", small), ("k", f"far-{ident}", large)]
        group, verdict = await limiter.check(near, now)
        assert group is None and verdict.remaining == 4  # the small window decides the headers
        assert far_window.used == 0  # settled first: part of this request
        settled, held = await in_redis(f"far-{ident}")
        assert settled == 1 + 3 + 1 and held == far_window.spare
        assert await in_redis(f"near-{ident}") == (1, 0)  # a small limit leases nothing
        other = [("k", f"other-{ident}", large)]
        await limiter.check(other, now)
        for _ in range(2):
            limiter.try_local(other, now)
        other_window = limiter._windows[("k", f"other-{ident}", "minute")]
        await limiter.check([("k", f"near2-{ident}", small)], now)
        assert other_window.used == 2  # not this request's: left for the batch
        assert await in_redis(f"other-{ident}") == (1, LEASE_MIN)
    finally:
        await limiter.close()

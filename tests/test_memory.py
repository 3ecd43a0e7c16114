"""Memory an anonymous client can make the gateway hold: none that grows with its traffic.

A real `gateway serve` process takes tens of thousands of unauthenticated requests, each
with a unique 30 KB key value or a unique 30 KB path; its resident set (from /proc) after a
warm-up must not grow by more than a few MiB whatever the count.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp

VALUE_SIZE = 30_000
CONNECTIONS = 16


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def unique_value(n: int) -> bytes:
    """30 KB of key-header alphabet, unique per n."""
    return (b"%08d" % n) * (VALUE_SIZE // 8)


def key_request(n: int) -> bytes:
    return b"GET /api/v5/app/list HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer " + unique_value(n) + b"\r\n\r\n"


def path_request(n: int) -> bytes:
    return b"GET /api/v5/corp/" + unique_value(n) + b" HTTP/1.1\r\nHost: g\r\n\r\n"


async def blast(port: int, build: Any, numbers: range) -> dict[int, int]:
    """Send every request over CONNECTIONS keep-alive connections, one at a time on each;
    count the answers by status."""
    counter = iter(numbers)
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in counter:
                writer.write(build(n))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
                if b"connection: close" in head.lower():
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return statuses


async def test_unauthenticated_traffic_leaves_no_memory_behind(spawn: Any) -> None:
    gateway = spawn()
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {gateway.token}"}
        async with session.post(gateway.admin_url + "/api/v1/keys", json={}, headers=headers) as response:
            assert response.status == 201
    port = int(gateway.proxy_url.rsplit(":", 1)[1])
    pid = gateway.process.pid
    numbers = itertools.count()
    for build in (key_request, path_request):  # warm-up: caches, allocator arenas, log buffers
        start = next(numbers) * 100_000
        assert await blast(port, build, range(start, start + 2_000)) == {401: 2_000}
    await asyncio.sleep(0.5)
    before = rss_bytes(pid)
    for build in (key_request, path_request):
        start = next(numbers) * 100_000
        assert await blast(port, build, range(start, start + 10_000)) == {401: 10_000}
    await asyncio.sleep(0.5)  # the access log flushes every 200 ms
    grown = rss_bytes(pid) - before
    assert grown < 10 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB over 20,000 requests"

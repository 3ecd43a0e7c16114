"""Holding the gateway's memory, connections or time without a valid key, and long pipelines.

Over real sockets: any number of pipelined requests in one write is answered in order; a
long run of refusals behind a slow request is answered without recursion; blank lines and a
dribbled body are cut off by their timeouts; the connection limits close what is over them
at once, while other clients and the admin port keep working.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp

from tests import test_upstream_framing as framing
from tests.rawhttp import RawClient
from tests.test_upstream_framing import ScriptedUpstream, get

scripted = framing.scripted  # an upstream answering each path with the bytes it is scripted to (a fixture)


async def start(start_gateway: Any, scripted: ScriptedUpstream, **limits: Any) -> Any:
    return await start_gateway(
        upstream={"url": f"http://127.0.0.1:{scripted.port}"},
        routes={"unknown": "allow"},
        limits={"header_timeout": 1.0, "idle_timeout": 10.0, "body_timeout": 1.0, **limits},
    )


async def test_ten_thousand_pipelined_requests_in_one_write_are_answered_in_order(
    start_gateway: Any, scripted: ScriptedUpstream
) -> None:
    running = await start(start_gateway, scripted)
    key = (await running.admin.create())["key"]
    stream = b"".join(get(b"/p?n=%d" % n, key) for n in range(10_000))
    assert len(stream) > 64 * 1024 * 10  # many reads' worth: heads straddle read boundaries
    client = await RawClient.connect(running.gateway.proxy.port)
    client.raw = b"x" * 65536  # (keep no copy of a megabyte of answers)
    try:
        await client.send(stream)
        responses = await client.read_responses(10_000, timeout=60.0)
    finally:
        await client.close()
    odd = [(n, r.status, bytes(r.body)) for n, r in enumerate(responses) if r.status != 200]
    assert odd == []
    assert [bytes(r.body) for r in responses] == [b'{"for": "/p?n=%d"}' % n for n in range(10_000)]


async def test_three_thousand_refusals_behind_a_slow_request_are_answered_in_order(
    start_gateway: Any, scripted: ScriptedUpstream
) -> None:
    running = await start(start_gateway, scripted)
    key = (await running.admin.create())["key"]
    refused = get(b"/p", "x" * 40)  # a key of the right shape that no one holds: 401, connection kept
    client = await RawClient.connect(running.gateway.proxy.port)
    client.raw = b"x" * 65536
    try:
        await client.send(get(b"/slow", key) + refused * 3000 + get(b"/last", key))
        responses = await client.read_responses(3002, timeout=30.0)
    finally:
        await client.close()
    assert [r.status for r in responses] == [200] + [401] * 3000 + [200]
    assert bytes(responses[-1].body) == b'{"for": "/last"}'


async def test_blank_lines_count_against_the_header_timeout(start_gateway: Any, scripted: ScriptedUpstream) -> None:
    running = await start(start_gateway, scripted)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.gateway.proxy.port)
    started = time.monotonic()
    received = b""
    try:
        while time.monotonic() - started < 6.0:
            try:
                writer.write(b"\r\n")
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.4)
            except TimeoutError:
                continue
            received += data
            if not data:
                break
    finally:
        writer.close()
    assert time.monotonic() - started < 3.0, "blank lines kept the connection open"
    assert received.startswith(b"HTTP/1.1 408 ")


async def test_a_dribbled_body_read_for_its_app_id_is_cut_off(start_gateway: Any, scripted: ScriptedUpstream) -> None:
    running = await start(start_gateway, scripted)
    key = (await running.admin.create(apps=["A1"]))["key"]
    head = (
        b"POST /api/v5/app/entry/data/list HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{" % key.encode()
    )
    client = await RawClient.connect(running.gateway.proxy.port)
    started = time.monotonic()
    try:
        await client.send(head)
        for _ in range(30):  # a byte every 0.2 s: never idle for long, never done
            if client.closed:
                break
            try:
                await client.send(b" ")
            except (ConnectionResetError, BrokenPipeError):
                break
            try:
                await client.read_responses(1, timeout=0.2)
                break
            except TimeoutError:
                pass
        responses = await client.read_responses(1, timeout=3.0)
    finally:
        await client.close()
    assert responses[0].status == 408
    assert time.monotonic() - started < 3.5
    assert scripted.paths == []


async def served(port: int, source: str, key: str) -> bool:
    """A new client from `source` is answered 200."""
    client = await RawClient.connect(port, source)
    try:
        await client.send(get(b"/p", key))
        (response,) = await client.read_responses(1, timeout=3.0)
        return response.status == 200
    finally:
        await client.close()


async def admin_answers(running: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{running.gateway.admin_port}/healthz") as answer,
    ):
        assert answer.status == 200


def open_idle(port: int, source: str, count: int) -> list[socket.socket]:
    """(Called in a thread: the in-process gateway must go on accepting meanwhile.)"""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


def closed_at_once(sock: socket.socket) -> bool:
    sock.settimeout(2.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_connections_over_the_limits_are_closed_at_once(start_gateway: Any, scripted: ScriptedUpstream) -> None:
    running = await start(start_gateway, scripted, max_connections=20, max_connections_per_ip=5)
    port = running.gateway.proxy.port
    key = (await running.admin.create())["key"]
    held = await asyncio.to_thread(open_idle, port, "127.0.0.2", 5)
    try:
        (sixth,) = await asyncio.to_thread(open_idle, port, "127.0.0.2", 1)
        assert await asyncio.to_thread(closed_at_once, sixth)
        sixth.close()
        for n in range(3, 6):  # 20 open in all
            held += await asyncio.to_thread(open_idle, port, f"127.0.0.{n}", 5)
        (over,) = await asyncio.to_thread(open_idle, port, "127.0.0.9", 1)
        assert await asyncio.to_thread(closed_at_once, over)
        over.close()
        await admin_answers(running)  # the admin port keeps its own budget
        for sock in held[-5:]:  # room again: a client gets in and is served
            sock.close()
        await asyncio.sleep(0.1)
        assert await served(port, "127.0.0.9", key)
    finally:
        for sock in held:
            sock.close()


async def test_a_thousand_idle_connections_lock_no_one_out(start_gateway: Any, scripted: ScriptedUpstream) -> None:
    """1,100 idle unauthenticated connections used to exhaust a 1,024 soft descriptor limit."""
    running = await start(start_gateway, scripted)
    port = running.gateway.proxy.port
    key = (await running.admin.create())["key"]
    held: list[socket.socket] = []
    try:
        for n in range(2, 13):
            held += await asyncio.to_thread(open_idle, port, f"127.0.1.{n}", 100)
        await asyncio.sleep(0.1)
        assert await served(port, "127.0.2.1", key)
        await admin_answers(running)
    finally:
        for sock in held:
            sock.close()


def flood_without_reading(port: int, data: bytes) -> None:
    """Write `data` as fast as the gateway takes it and never read; stop when it stops taking."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(2.0)
    try:
        view = memoryview(data)
        while view:
            try:
                sent = sock.send(view[:65536])
            except (TimeoutError, OSError):
                break  # the gateway stopped reading: what it holds is bounded
            view = view[sent:]
    finally:
        sock.close()


async def test_a_client_that_never_reads_its_answers_cannot_fill_our_memory(
    start_gateway: Any, scripted: ScriptedUpstream
) -> None:
    """Pipelined requests refused at once (no key) make answers; a client that never reads
    them used to have them all queued in the gateway (10 MB of requests: +114 MiB)."""
    running = await start(start_gateway, scripted, idle_timeout=1.0)
    port = running.gateway.proxy.port
    flood = b"GET / HTTP/1.1\r\n\r\n" * 300_000
    flooding = asyncio.gather(*(asyncio.to_thread(flood_without_reading, port, flood) for _ in range(4)))
    held = 0  # the most the gateway held queued for these clients at once (its transports' buffers)
    while not flooding.done():
        transports = [conn.transport for conn in running.gateway.proxy.connections]
        held = max(held, sum(t.get_write_buffer_size() for t in transports if t is not None))
        await asyncio.sleep(0.01)
    await flooding
    assert held < 8 * 1024 * 1024, f"the gateway queued {held >> 20} MiB of answers nobody reads"
    for _ in range(40):  # and the connections are gone within the idle timeout and the linger
        if not running.gateway.proxy.connections:
            break
        await asyncio.sleep(0.25)
    assert not running.gateway.proxy.connections


async def test_the_framing_of_a_chunked_body_is_bounded_like_a_head(
    start_gateway: Any, scripted: ScriptedUpstream
) -> None:
    """An endless trailer (or chunk extension) used to be read without limit, quadratically."""
    running = await start(start_gateway, scripted)
    key = (await running.admin.create())["key"]
    head = b"POST /p HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"
    for tail in (b"1\r\na\r\n0\r\nX-T: ", b"1;" + b"e" * 10):
        client = await RawClient.connect(running.gateway.proxy.port)
        started = time.monotonic()
        try:
            await client.send(head % key.encode() + tail)
            for _ in range(200):  # up to 12.8 MB of one trailer line
                try:
                    await client.send(b"a" * 65536)
                except (ConnectionResetError, BrokenPipeError):
                    break
                if client.closed:
                    break
            responses = await client.read_responses(1, timeout=5.0)
        finally:
            await client.close()
        assert responses and responses[-1].status == 431
        assert time.monotonic() - started < 5.0

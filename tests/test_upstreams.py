"""Several upstreams on real servers: each target is a process of its own (SERVER below) that
logs every request it executes to a file, flushed before it answers, so a killed process
still tells what it did. The properties: weights hold; a target killed mid-stream costs no
GET and runs no POST twice; a target that resets after reading gets GETs retried elsewhere
and POSTs a 502, executed at most once; active checks take a target out and bring it back;
when every target is down the answer is a quick 502; rules choose upstreams; the admin API,
metrics and log lines show it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.certs import make_cert
from tests.conftest import Running, free_port, wait_for_port
from tests.rawhttp import RawClient

# An upstream process: `python -c SERVER port log name mode`. Modes: `ok` answers 200 with
# `name|Host` (`slow`: 50 ms after executing); `reset` reads each request in full, logs it as
# read (not executed) and resets the connection (SO_LINGER 0). `GET /healthz` answers 503
# while the file `log + ".down"` exists.
SERVER = r"""
import asyncio, os, socket, struct, sys
port, log_path, name, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target, _ = lines[0].split(b" ", 2)
            length, host = 0, b""
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
                elif key.strip().lower() == b"host":
                    host = value.strip()
            if length:
                await reader.readexactly(length)
            if target.startswith(b"/healthz"):
                down = os.path.exists(log_path + ".down")
                status = b"503 Down" if down else b"200 OK"
                body = b"down" if down else b"ok"
            elif mode == "reset":
                os.write(log, b"read %s %s\n" % (method, target))
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            else:
                os.write(log, b"done %s %s\n" % (method, target))
                if mode == "slow":  # executed, then a while before the answer
                    await asyncio.sleep(0.05)
                status, body = b"200 OK", name.encode() + b"|" + host
            head = b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
            writer.write(head + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.transport.abort()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


class Server:
    def __init__(self, directory: Path, name: str, mode: str = "ok") -> None:
        self.name = name
        self.port = free_port()
        self.log = directory / f"{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(self.port), str(self.log), name, mode],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def down(self, down: bool) -> None:
        marker = Path(str(self.log) + ".down")
        if down:
            marker.touch()
        else:
            marker.unlink()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The data path never reads the store: SQLite only."""
    return f"sqlite:///{tmp_path}/gateway.db"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(name: str, mode: str = "ok") -> Server:
        server = Server(tmp_path, name, mode)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill()


def group(*targets: Server | str, **more: Any) -> dict[str, Any]:
    urls = [t.url if isinstance(t, Server) else t for t in targets]
    return {"targets": [{"url": url} for url in urls], **more}


class Gateway:
    def __init__(self, running: Running, key: str, session: aiohttp.ClientSession) -> None:
        self.running = running
        self.key = key
        self.session = session
        self.url = f"http://127.0.0.1:{running.gateway.proxy.port}"

    async def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with self.session.request(method, self.url + path, headers=headers, data=body) as response:
            return response.status, await response.text()

    async def upstreams(self) -> dict[str, Any]:
        status, body = await self.running.admin.call("GET", "/api/v1/upstreams")
        assert status == 200, body
        return {item["name"]: item for item in body["items"]}


@pytest.fixture
async def gateway(start_gateway: Any) -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(**config: Any) -> Gateway:
        config.setdefault("routes", {"unknown": "allow"})
        running = await start_gateway(**config)
        key = (await running.admin.create())["key"]
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
        sessions.append(session)
        return Gateway(running, key, session)

    yield start
    for session in sessions:
        await session.close()


def executed(servers: list[Server], method: str) -> Counter[str]:
    """How many times each path was executed, over every server."""
    counts: Counter[str] = Counter()
    for server in servers:
        for line in server.lines():
            verb, seen_method, path = line.split(" ", 2)
            if verb == "done" and seen_method == method:
                counts[path] += 1
    return counts


async def test_weights_hold_within_ten_percent(servers: Any, gateway: Any) -> None:
    a, b, c = servers("a"), servers("b"), servers("c")
    spec = {"targets": [{"url": a.url, "weight": 1}, {"url": b.url, "weight": 2}, {"url": c.url, "weight": 3}]}
    gw = await gateway(upstreams={"default": spec})
    answers = await asyncio.gather(*(gw.call("GET", f"/w/{i}") for i in range(600)))
    names = Counter(body.split("|")[0] for status, body in answers if status == 200)
    assert sum(names.values()) == 600
    for name, share in (("a", 100), ("b", 200), ("c", 300)):
        assert abs(names[name] - share) <= share * 0.1, names
    # each target got its own Host, and its own keep-alive pool (reused: few connections each)
    assert {body.split("|")[1] for _, body in answers} == {f"127.0.0.1:{s.port}" for s in (a, b, c)}


async def test_a_target_killed_mid_stream_costs_no_get_and_runs_no_post_twice(servers: Any, gateway: Any) -> None:
    three = [servers("a"), servers("b"), servers("c")]
    gw = await gateway(upstreams={"default": group(*three, health={"passive": {"failures": 2, "eject_for": 30}})})
    results: dict[str, int] = {}
    sent = 0

    async def client(worker: int) -> None:
        nonlocal sent
        for i in range(60):
            method = "POST" if i % 2 else "GET"
            path = f"/k/{worker}-{i}"
            status, _ = await gw.call(method, path, b'{"n": 1}' if method == "POST" else None)
            results[f"{method} {path}"] = status
            sent += 1
            if sent == 120:
                three[1].kill()

    await asyncio.gather(*(client(w) for w in range(6)))
    assert len(results) == 360 and three[1].process.poll() is not None
    gets = Counter(status for request, status in results.items() if request.startswith("GET"))
    posts = Counter(status for request, status in results.items() if request.startswith("POST"))
    assert gets == {200: 180}, gets  # a retry is allowed for every GET: none failed
    assert set(posts) <= {200, 502}, posts
    runs = executed(three, "POST")
    assert max(runs.values()) == 1  # no POST ran twice
    for request, status in results.items():
        method, path = request.split(" ")
        if method == "POST" and status == 200:
            assert runs[path] == 1
    status = await gw.upstreams()
    killed = next(t for t in status["default"]["targets"] if t["url"] == three[1].url)
    assert killed["ejected_until"] is not None and killed["healthy"] is True


async def test_a_target_killed_with_requests_in_flight(servers: Any, gateway: Any) -> None:
    """Killed while it holds requests: the GETs it never answered go elsewhere, the POSTs it
    may have run are 502s, and no POST runs twice."""
    three = [servers("sa", "slow"), servers("sb", "slow"), servers("sc", "slow")]
    gw = await gateway(upstreams={"default": group(*three)})
    results: dict[str, int] = {}

    async def client(worker: int) -> None:
        for i in range(20):
            method = "POST" if (worker + i) % 2 else "GET"
            path = f"/f/{worker}-{i}"
            results[f"{method} {path}"] = (await gw.call(method, path, b"{}" if method == "POST" else None))[0]

    async def killer() -> None:
        """Kill it while it holds a POST it has run and not answered (it answers 50 ms later)."""
        await asyncio.sleep(0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            held = [line.split(" ")[2] for line in three[0].lines() if line.startswith("done POST")]
            if any(f"POST {path}" not in results for path in held):
                break
            await asyncio.sleep(0.005)
        three[0].kill()

    await asyncio.gather(killer(), *(client(w) for w in range(12)))
    gets = Counter(status for request, status in results.items() if request.startswith("GET"))
    posts = Counter(status for request, status in results.items() if request.startswith("POST"))
    assert gets == {200: 120}, gets
    assert set(posts) <= {200, 502} and posts[502] >= 1, posts  # the POSTs it held when it died
    runs = executed(three, "POST")
    assert max(runs.values()) == 1
    for request, status in results.items():
        method, path = request.split(" ")
        if method == "POST" and status == 200:
            assert runs[path] == 1
    gets_run = executed(three, "GET")
    assert set(gets_run) == {r.split(" ")[1] for r in results if r.startswith("GET")}


async def test_a_target_resetting_after_reading_gets_gets_retried_and_posts_refused(servers: Any, gateway: Any) -> None:
    good, bad = servers("good"), servers("bad", "reset")
    gw = await gateway(upstreams={"default": group(good, bad, health={"passive": {"failures": 50}})})
    gets = [await gw.call("GET", f"/g/{i}") for i in range(20)]
    assert [status for status, _ in gets] == [200] * 20
    assert sum(1 for line in bad.lines() if line.startswith("read GET")) >= 5  # they did reach it first
    posts = {}
    for i in range(20):  # one at a time, so the round robin alternates
        posts[f"/p/{i}"] = (await gw.call("POST", f"/p/{i}", b"{}"))[0]
    assert set(posts.values()) == {200, 502}
    refused = {path for path, status in posts.items() if status == 502}
    read_by_bad = {line.split(" ")[2] for line in bad.lines() if line.startswith("read POST")}
    assert refused == read_by_bad  # each refused POST went to the resetting target only
    runs = executed([good], "POST")
    assert set(runs) == set(posts) - refused and set(runs.values()) == {1}


async def test_a_post_is_retried_only_when_nothing_of_it_was_sent(servers: Any, gateway: Any) -> None:
    alive = servers("alive")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the connect is refused
    gw = await gateway(upstreams={"default": group(closed, alive)})
    answers = [await gw.call("POST", f"/r/{i}", b"{}") for i in range(10)]
    assert [status for status, _ in answers] == [200] * 10
    assert executed([alive], "POST") == Counter({f"/r/{i}": 1 for i in range(10)})


async def test_a_post_that_reached_a_target_is_never_sent_to_another(servers: Any, gateway: Any) -> None:
    """Raw sockets, pipelined POSTs: one written to a target that then closes without answering
    is a 502 and is never resent, to that target or another, retries notwithstanding."""
    good, bad = servers("good2"), servers("bad2", "reset")
    gw = await gateway(upstreams={"default": group(bad, good, retries=2)})
    client = await RawClient.connect(gw.running.gateway.proxy.port)
    try:
        for i in range(4):
            await client.send(
                f"POST /s/{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode()
            )
        responses = await client.read_responses(4)
    finally:
        await client.close()
    statuses = [r.status for r in responses]
    assert sorted(statuses) == [200, 200, 502, 502]
    read_by_bad = [line for line in bad.lines() if line.startswith("read POST")]
    assert len(read_by_bad) == 2 and len(executed([good], "POST")) == 2
    assert not set(executed([good], "POST")) & {line.split(" ")[2] for line in read_by_bad}


async def test_active_checks_take_a_target_out_and_bring_it_back(
    servers: Any, gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.upstream")
    a, b = servers("ha"), servers("hb")
    active = {"path": "/healthz", "interval": 0.1, "timeout": 1, "healthy": 2, "unhealthy": 2}
    gw = await gateway(upstreams={"default": group(a, b, health={"active": active})})

    async def healthy_of(server: Server, wanted: bool) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            targets = (await gw.upstreams())["default"]["targets"]
            if next(t for t in targets if t["url"] == server.url)["healthy"] is wanted:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{server.name} never became healthy={wanted}")

    b.down(True)
    await healthy_of(b, False)
    assert "is unhealthy" in caplog.text
    answers = [await gw.call("GET", f"/h/{i}") for i in range(10)]
    assert {body.split("|")[0] for _, body in answers} == {"ha"}
    b.down(False)
    await healthy_of(b, True)
    assert f"target {b.url} is back" in caplog.text
    answers = [await gw.call("GET", f"/h/{i}") for i in range(10)]
    assert {body.split("|")[0] for _, body in answers} == {"ha", "hb"}


async def test_every_target_down_is_a_quick_502_and_it_shows(
    servers: Any, gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.upstream")
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    gw = await gateway(upstreams={"default": group(*dead)})
    for _ in range(4):  # three targets, two tries each before they are all ejected
        status, body = await gw.call("GET", "/x")
        assert status == 502 and "upstream_unavailable" in body
    started = time.monotonic()
    status, _ = await gw.call("POST", "/x", b"{}")  # every target ejected: the last resort, once
    assert status == 502 and time.monotonic() - started < 1.0
    assert caplog.text.count("ejected for 10 s") == 3
    targets = (await gw.upstreams())["default"]["targets"]
    assert [t["url"] for t in targets] == dead
    for target in targets:
        assert set(target) >= {"url", "weight", "healthy", "ejected_until", "active_requests", "failures"}
        assert target["ejected_until"] is not None and target["active_requests"] == 0
        assert target["weight"] == 1 and target["failures"] >= 3
    status, metrics = await gw.running.admin.call("GET", "/metrics")
    assert status == 200
    for url in dead:
        assert f'gateway_upstream_ejections_total{{target="{url}",upstream="default"}} 1.0' in metrics
        assert f'gateway_upstream_target_up{{target="{url}",upstream="default"}} 0.0' in metrics


async def test_rules_choose_their_upstream_and_metrics_and_the_api_show_each(servers: Any, gateway: Any) -> None:
    main, orders1, orders2 = servers("main"), servers("o1"), servers("o2")
    routes = {
        "preset": "none",
        "unknown": "allow",
        "rules": [
            {"path": "/v1/orders/**", "interface": "crm.orders_{rest}", "upstream": "orders"},
            {"path": "/v1/orders/special", "interface": "crm.special"},  # a literal wins: default
        ],
    }
    orders = group(orders1, orders2, balance="least_requests", host="orders.internal")
    gw = await gateway(upstream={"url": main.url}, upstreams={"orders": orders}, routes=routes)
    answers = [await gw.call("GET", f"/v1/orders/{i}") for i in range(6)]
    assert Counter(body for _, body in answers) == {"o1|orders.internal": 3, "o2|orders.internal": 3}
    assert (await gw.call("GET", "/v1/orders/special"))[1] == f"main|127.0.0.1:{main.port}"
    assert (await gw.call("GET", "/v1/other"))[1] == f"main|127.0.0.1:{main.port}"
    status = await gw.upstreams()
    assert list(status) == ["default", "orders"]
    assert [t["requests"] for t in status["orders"]["targets"]] == [3, 3]
    _, metrics = await gw.running.admin.call("GET", "/metrics")
    assert f'gateway_upstream_requests_total{{target="{orders1.url}",upstream="orders"}} 3.0' in metrics
    assert f'gateway_upstream_target_latency_seconds_count{{target="{main.url}",upstream="default"}} 2.0' in metrics
    # the permission: metrics:read, and a token without an account
    status_code, token = await gw.running.admin.call(
        "POST", "/api/v1/tokens", {"name": "reader", "permissions": ["keys:read"]}
    )
    assert status_code == 201
    refused, _ = await gw.running.admin.call("GET", "/api/v1/upstreams", token=token["token"])
    assert refused == 403


def test_the_server_script_is_plain_python() -> None:
    compile(SERVER, "SERVER", "exec")
    assert os.path.basename(sys.executable)


async def test_tls_verification_is_per_upstream(tmp_path: Path, gateway: Any) -> None:
    cert, key = make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    routes = {
        "unknown": "allow",
        "rules": [
            {"path": "/strict/**", "interface": "crm.{rest}", "upstream": "strict"},
            {"path": "/lax/**", "interface": "crm.{rest}", "upstream": "lax"},
        ],
    }
    try:
        gw = await gateway(routes=routes, upstreams={"strict": group(url), "lax": group(url, verify_tls=False)})
        assert await gw.call("GET", "/lax/a") == (200, "tls")
        status, body = await gw.call("GET", "/strict/a")  # a self-signed certificate: not trusted
        assert status == 502 and "upstream_unavailable" in body
    finally:
        server.close()

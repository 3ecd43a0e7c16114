"""The gateway as an HTTP/1.1 intermediary: forwarding, streaming, framing, failures."""

from __future__ import annotations

import asyncio
import hashlib
import json

import aiohttp
import pytest
from yarl import URL

from tests.conftest import Proxy
from tests.rawhttp import RawClient
from tests.upstream import pattern

PATH = "/api/v5/workflow/task/approve"
MiB = 1024 * 1024


def head(method: str, path: str, key: str, *lines: str) -> bytes:
    text = f"{method} {path} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {key}\r\n"
    return (text + "".join(line + "\r\n" for line in lines) + "\r\n").encode()


@pytest.fixture
async def key(proxy: Proxy) -> str:
    return (await proxy.admin.create(account="acme"))["key"]


async def test_headers_forwarded_and_rewritten(proxy: Proxy, key: str) -> None:
    sent = {
        "X-Custom": "kept as is",
        "X-Gateway-Key-Id": "forged",
        "X-Gateway-Account": "forged",
        "X-Gateway-Other": "forged",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "dropped",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic x",
        "Host": "client.example:8443",
    }
    status, body = await proxy.json("POST", PATH + "?q=1", key=key, headers=sent)
    assert status == 200
    got = {}
    for name, value in body["headers"]:
        got.setdefault(name.lower(), []).append(value)
    assert got["x-custom"] == ["kept as is"]
    assert "authorization" not in got and key not in json.dumps(body)
    assert got["x-gateway-account"] == ["acme"]
    assert got["x-gateway-key-id"][0].startswith("k_") and len(got["x-gateway-key-id"]) == 1
    assert "x-gateway-other" not in got
    for hop in ("x-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in got, hop
    assert got["host"] == [f"127.0.0.1:{proxy.upstream.port}"]
    assert got["x-forwarded-host"] == ["client.example:8443"]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["x-forwarded-for"] == ["127.0.0.1"]


async def test_preserve_host_and_no_strip(start_proxy) -> None:
    proxy: Proxy = await start_proxy(upstream={"preserve_host": True}, auth={"strip": False})
    key = (await proxy.admin.create())["key"]
    status, body = await proxy.json("POST", PATH, key=key, headers={"Host": "client.example"})
    assert status == 200
    headers = {k.lower(): v for k, v in body["headers"]}
    assert headers["host"] == "client.example"
    assert headers["authorization"] == f"Bearer {key}"


async def test_custom_key_header_without_scheme(start_proxy) -> None:
    proxy: Proxy = await start_proxy(auth={"header": "X-Api-Key", "scheme": ""})
    key = (await proxy.admin.create())["key"]
    status, body = await proxy.json("POST", PATH, headers={"X-Api-Key": key})
    assert status == 200
    assert "x-api-key" not in {k.lower() for k, _ in body["headers"]}
    status, _ = await proxy.json("POST", PATH, key=key)  # Authorization is not the key header now
    assert status == 401


async def test_response_headers_and_status(proxy: Proxy, key: str) -> None:
    status, headers, body = await proxy.request("POST", PATH + "?status=201", key=key)
    assert status == 201
    assert headers["X-Upstream"] == "yes" and "Keep-Alive" not in headers
    assert json.loads(body)["method"] == "POST"


async def test_large_bodies_stream_both_ways(proxy: Proxy, key: str) -> None:
    upload = pattern(24 * MiB + 17)
    status, body = await proxy.json("POST", PATH, key=key, data=upload)
    assert status == 200
    assert body["body_size"] == len(upload) and body["body_sha256"] == hashlib.sha256(upload).hexdigest()

    async def chunks():
        for i in range(0, len(upload), MiB):
            yield upload[i : i + MiB]

    status, body = await proxy.json("POST", PATH, key=key, data=chunks())  # chunked upload
    assert body["body_chunked"] is True and body["body_sha256"] == hashlib.sha256(upload).hexdigest()
    for extra in ("", "&chunked=1"):
        status, headers, data = await proxy.request("GET", f"{PATH}?size={32 * MiB + 5}{extra}", key=key)
        assert status == 200 and len(data) == 32 * MiB + 5 and data == pattern(32 * MiB + 5)
        assert ("Transfer-Encoding" in headers) == bool(extra)


async def test_upstream_down_is_502(start_gateway) -> None:
    from tests.conftest import free_port

    running = await start_gateway(upstream={"url": f"http://127.0.0.1:{free_port()}"})
    key = await running.admin.create()
    proxy = Proxy(running, None, f"http://127.0.0.1:{running.gateway.proxy.port}", running.gateway.proxy.port)  # type: ignore[arg-type]
    status, body = await proxy.json("POST", PATH, key=key["key"])
    assert (status, body["code"], body["reason"]) == (502, 502, "upstream_unavailable")


async def test_upstream_slow_is_504(start_proxy) -> None:
    proxy: Proxy = await start_proxy(upstream={"read_timeout": 0.5})
    key = (await proxy.admin.create())["key"]
    status, body = await proxy.json("POST", PATH + "?sleep=3", key=key)
    assert (status, body["code"], body["reason"]) == (504, 504, "upstream_timeout")
    status, _ = await proxy.json("POST", PATH, key=key)  # the gateway is fine afterwards
    assert status == 200


async def test_pipelined_requests_answered_in_order(proxy: Proxy, key: str) -> None:
    client = await RawClient.connect(proxy.port)
    batch = b"".join(
        [
            head("POST", PATH + "?sleep=0.3&n=1", key, "Content-Length: 0"),
            head("POST", "/unknown?n=2", key, "Content-Length: 0"),
            head("POST", PATH + "?n=3", key, "Content-Length: 5") + b"hello",
            head("GET", PATH + "?n=4", "bad-key"),
            head("POST", PATH + "?sleep=0.1&n=5", key, "Transfer-Encoding: chunked") + b"3\r\nabc\r\n0\r\n\r\n",
        ]
    )
    await client.send(batch)
    responses = await client.read_responses(5)
    assert [r.status for r in responses] == [200, 404, 200, 401, 200]
    assert json.loads(responses[0].body)["raw_path"].endswith("n=1")
    assert json.loads(responses[2].body)["body_size"] == 5
    assert json.loads(responses[4].body)["raw_path"].endswith("n=5")
    await client.close()


async def test_chunked_both_ways(proxy: Proxy, key: str) -> None:
    client = await RawClient.connect(proxy.port)
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"abc", b"x" * 70000, b"z")) + b"0\r\n\r\n"
    await client.send(head("POST", PATH + "?chunked=1", key, "Transfer-Encoding: chunked") + body)
    (response,) = await client.read_responses(1)
    assert response.status == 200
    assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
    seen = json.loads(response.body)
    assert seen["body_size"] == 70004 and seen["body_chunked"] is True
    await client.close()


async def test_expect_100_continue(proxy: Proxy, key: str) -> None:
    client = await RawClient.connect(proxy.port)
    await client.send(head("POST", PATH, key, "Content-Length: 4", "Expect: 100-continue"))
    data = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert data == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"body")
    (response,) = await client.read_responses(1)
    assert response.status == 200 and json.loads(response.body)["body_size"] == 4
    assert "expect" not in {k.lower() for k, _ in json.loads(response.body)["headers"]}
    await client.close()
    # a refused key gets its final answer straight away, without 100, and the connection closes
    client = await RawClient.connect(proxy.port)
    await client.send(head("POST", PATH, "wrong", "Content-Length: 4", "Expect: 100-continue"))
    (response,) = await client.read_responses(1)
    assert response.status == 401 and not client.raw.startswith(b"HTTP/1.1 100")
    assert await client.wait_closed()


@pytest.mark.parametrize(
    "framing",
    [
        ("Content-Length: 3", "Transfer-Encoding: chunked"),
        ("Content-Length: 3", "Content-Length: 4"),
        ("Transfer-Encoding: xchunked",),
        ("Transfer-Encoding: chunked, identity",),
        ("Transfer-Encoding: gzip, chunked",),
        ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding : chunked",),
        ("Content-Length: -1",),
        ("Content-Length: 1e3",),
    ],
)
async def test_ambiguous_framing_is_400_and_closed(proxy: Proxy, key: str, framing: tuple[str, ...]) -> None:
    client = await RawClient.connect(proxy.port)
    await client.send(head("POST", PATH, key, *framing) + b"3\r\nabc\r\n0\r\n\r\n")
    responses = await client.read_responses(1)
    assert responses[0].status == 400
    assert json.loads(responses[0].body)["reason"] == "bad_request"
    assert await client.wait_closed()
    assert proxy.upstream.recorder.requests == []


async def test_upgrade_is_501(proxy: Proxy, key: str) -> None:
    client = await RawClient.connect(proxy.port)
    await client.send(head("GET", PATH, key, "Connection: Upgrade", "Upgrade: websocket"))
    (response,) = await client.read_responses(1)
    assert response.status == 501 and json.loads(response.body)["reason"] == "upgrade_not_supported"
    assert await client.wait_closed()


async def test_connection_close_and_http10(proxy: Proxy, key: str) -> None:
    client = await RawClient.connect(proxy.port)
    await client.send(head("GET", PATH, key, "Connection: close"))
    (response,) = await client.read_responses(1)
    assert response.status == 200 and response.headers["connection"] == "close"
    assert await client.wait_closed()
    client = await RawClient.connect(proxy.port)
    await client.send(f"GET {PATH}?chunked=1 HTTP/1.0\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    (response,) = await client.read_responses(1)
    assert response.status == 200 and "transfer-encoding" not in response.headers
    assert json.loads(response.body)["method"] == "GET"  # close-delimited body for a 1.0 client
    assert await client.wait_closed()


async def test_head_request(proxy: Proxy, key: str) -> None:
    client = await RawClient.connect(proxy.port)
    await client.send(head("HEAD", PATH + f"?size={MiB}", key))
    responses = await client.read_responses(1, head_only=True)
    assert responses[0].status == 200 and responses[0].headers["content-length"] == str(MiB)
    assert client.raw.endswith(b"\r\n\r\n")  # no body bytes follow the head
    client.reset_parser()
    await client.send(head("GET", PATH, key))  # the client connection is still usable
    responses = await client.read_responses(2)
    assert responses[-1].status == 200 and json.loads(responses[-1].body)["method"] == "GET"
    await client.close()


async def test_upstream_closes_mid_response(proxy: Proxy, key: str) -> None:
    url = URL(proxy.url + PATH + "?size=1000000&close_after=50000", encoded=True)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == 200
                await response.read()
    status, _ = await proxy.json("POST", PATH, key=key)
    assert status == 200


async def test_client_disconnect_mid_upload_drops_the_upstream_connection(proxy: Proxy, key: str) -> None:
    status, _ = await proxy.json("POST", PATH, key=key)  # warm the pool
    pool = proxy.running.gateway.proxy.pool
    assert len(pool.idle) == 1
    client = await RawClient.connect(proxy.port)
    await client.send(head("POST", PATH, key, f"Content-Length: {10 * MiB}") + b"x" * MiB)
    await asyncio.sleep(0.3)
    assert len(pool.idle) == 0  # the pooled connection carries the unfinished upload
    client.writer.transport.abort()
    await asyncio.sleep(0.3)
    assert len(pool.idle) == 0  # and it was closed, not put back
    peers_before = set(proxy.upstream.recorder.peers)
    status, body = await proxy.json("POST", PATH, key=key)
    assert status == 200 and body["body_size"] == 0
    assert proxy.upstream.recorder.peers - peers_before  # a fresh upstream connection served it


async def test_slow_reader_does_not_make_the_gateway_buffer(proxy: Proxy, key: str) -> None:
    total = 64 * MiB
    client = await RawClient.connect(proxy.port)
    client.writer.transport.pause_reading()
    await client.send(head("GET", PATH + f"?size={total}", key))
    await asyncio.sleep(1.5)
    connections = list(proxy.running.gateway.proxy.connections)
    buffered = max(c.transport.get_write_buffer_size() for c in connections)
    assert buffered < 4 * MiB, buffered
    client.writer.transport.resume_reading()
    (response,) = await client.read_responses(1, timeout=60)
    assert len(response.body) == total
    await client.close()


async def test_large_upload_to_a_slow_upstream_is_not_buffered(proxy: Proxy, key: str) -> None:
    total = 96 * MiB
    client = await RawClient.connect(proxy.port)
    await client.send(head("POST", PATH + "?slow_read=2", key, f"Content-Length: {total}"))
    block = pattern(MiB)
    sent = 0

    async def upload() -> None:
        nonlocal sent
        while sent < total:
            client.writer.write(block)
            await client.writer.drain()  # blocks once the gateway stops reading
            sent += len(block)

    uploading = asyncio.ensure_future(upload())
    await asyncio.sleep(1.5)  # the upstream is not reading yet
    gateway = proxy.running.gateway.proxy
    client_conn = next(iter(gateway.connections))
    upstream_conn = client_conn.current.relay.upstream
    assert upstream_conn is not None
    buffered = upstream_conn.transport.get_write_buffer_size() + client_conn.current.body_size
    assert buffered < 8 * MiB, buffered  # the gateway holds a few MiB at most, not the upload
    assert sent < 48 * MiB, sent  # and the client was made to wait
    await asyncio.wait_for(uploading, 60)
    (response,) = await client.read_responses(1, timeout=60)
    seen = json.loads(response.body)
    assert seen["body_size"] == total
    assert seen["body_sha256"] == hashlib.sha256(block * 96).hexdigest()
    await client.close()


async def test_header_limits(start_proxy) -> None:
    proxy: Proxy = await start_proxy(limits={"max_headers": 20, "max_header_bytes": 4096})
    key = (await proxy.admin.create())["key"]
    many = [f"X-H{i}: v" for i in range(30)]
    big = ["X-Big: " + "a" * 8000]
    for lines in (many, big):
        client = await RawClient.connect(proxy.port)
        await client.send(head("GET", PATH, key, *lines))
        (response,) = await client.read_responses(1)
        assert response.status == 431
        assert await client.wait_closed()
    status, _ = await proxy.json("GET", PATH, key=key, headers={f"X-H{i}": "v" for i in range(10)})
    assert status == 200


async def test_slow_headers_time_out(start_proxy) -> None:
    proxy: Proxy = await start_proxy(limits={"header_timeout": 0.5, "idle_timeout": 0.8})
    client = await RawClient.connect(proxy.port)
    await client.send(b"GET / HTTP/1.1\r\nX-Slow: ")
    (response,) = await client.read_responses(1, timeout=5)
    assert response.status == 408
    assert await client.wait_closed()
    idle = await RawClient.connect(proxy.port)
    assert await idle.wait_closed(timeout=5)  # an idle connection is closed after idle_timeout
    key = (await proxy.admin.create())["key"]
    slow = await RawClient.connect(proxy.port)  # a body that stops arriving
    await slow.send(head("POST", PATH, key, "Content-Length: 100") + b"only part of it")
    (response,) = await slow.read_responses(1, timeout=5)
    assert response.status == 408
    assert await slow.wait_closed()


async def test_https_upstream_is_verified(start_gateway, tmp_path) -> None:
    import ssl

    from aiohttp import web

    from tests.certs import make_cert
    from tests.upstream import build_upstream

    cert, private_key = make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, private_key)
    app, _ = build_upstream()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        for verify, expected in ((True, 502), (False, 200)):
            running = await start_gateway(upstream={"url": f"https://localhost:{port}", "verify_tls": verify})
            key = await running.admin.create()
            proxy = Proxy(running, None, f"http://127.0.0.1:{running.gateway.proxy.port}", 0)  # type: ignore[arg-type]
            status, _ = await proxy.json("POST", PATH, key=key["key"])
            assert status == expected, verify
    finally:
        await runner.cleanup()


class ScriptedUpstream(asyncio.Protocol):
    """Answers the n-th request head it reads with the n-th scripted answer, each in one write
    (`None` for the head first and the body in a later write)."""

    answers: list[tuple[bytes, bytes | None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            first, later = self.answers.pop(0)
            self.transport.write(first)  # type: ignore[attr-defined]
            if later is not None:
                asyncio.get_running_loop().call_later(0.05, self.transport.write, later)  # type: ignore[attr-defined]


async def test_repeated_upstream_heads_are_read_without_the_parser_and_framed_right(start_gateway) -> None:
    """A head seen before and its whole body in one read take the parser-free path; a HEAD
    request, a body arriving later and two answers in one read still go through the parser."""
    ok = b"HTTP/1.1 200 OK\r\nX-Up: 1\r\nContent-Length: 5\r\n\r\n"
    ScriptedUpstream.answers = [
        (ok + b"first", None),
        (ok + b"again", None),  # known head, whole body: no parser
        (ok, None),  # the answer to a HEAD request: the same head, and no body
        (ok, b"later"),  # the body in a second read
        (ok + b"fifth", None),
    ]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ScriptedUpstream, "127.0.0.1", 0)
    running = await start_gateway(upstream={"url": f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"})
    key = (await running.admin.create())["key"]
    client = await RawClient.connect(running.gateway.proxy.port)
    bodies = []
    for n, method in enumerate(("GET", "GET", "HEAD", "GET", "GET")):
        await client.send(head(method, PATH, key))
        response = (await client.read_responses(n + 1, head_only=method == "HEAD"))[n]
        if method == "HEAD":
            client.reset_parser()
        assert response.status == 200 and response.headers["content-length"] == "5"
        assert response.headers["x-up"] == "1"
        bodies.append(response.body)
    assert bodies == [b"first", b"again", b"", b"later", b"fifth"]
    assert len(running.gateway.proxy.pool.shapes._memo) == 1  # learnt once, from the first answer
    assert running.gateway.proxy.pool.shapes.misses == 1
    await client.close()
    server.close()


@pytest.mark.parametrize(
    ("start", "to", "allowed"),
    [
        ("waiting", "inspecting", True),
        ("waiting", "forwarding", True),
        ("inspecting", "limiting", True),
        ("forwarding", "answered", True),
        ("forwarding", "streaming", True),
        ("streaming", "answered", True),
        ("streaming", "forwarding", False),
        ("waiting", "streaming", False),
        ("forwarding", "waiting", False),
        ("answered", "forwarding", False),
        ("limiting", "inspecting", False),
    ],
)
def test_an_exchange_moves_only_as_its_phase_table_says(start: str, to: str, allowed: bool) -> None:
    from gateway.proxy import exchange

    moving = exchange.Exchange.__new__(exchange.Exchange)
    moving.state = start
    if allowed:
        moving._enter(to)
        assert moving.state == to
    else:
        with pytest.raises(exchange.PhaseError):
            moving._enter(to)

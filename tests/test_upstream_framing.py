"""An upstream that says more than it was asked, or too much at once: the connection it spoke
on is never reused, and the client never gets another request's answer.

A scripted upstream answers each request with raw bytes chosen by its path: a second,
unsolicited answer in the same write, body bytes past its Content-Length, a head of tens of
megabytes. Through the gateway, on one client connection, the request after each of them must
get its own answer at once (no desync, no read timeout), and a head over
`limits.max_upstream_head` is a 502 with nothing of it relayed.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator
from typing import Any

import httptools
import pytest

from tests.rawhttp import RawClient

OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"


def answer_for(path: bytes) -> list[bytes]:
    """The writes the scripted upstream makes for a request to `path`."""
    own = b'{"for": "%s"}' % path
    if path == b"/twice":  # an unsolicited second answer in the same write
        return [OK % (len(own), own) + OK % (len(b"smuggled"), b"smuggled")]
    if path == b"/extra":  # five bytes more than the framing said
        return [OK % (len(own), own) + b"12345"]
    if path == b"/extra-head":  # the start of another head after the answer
        return [OK % (len(own), own) + b"HTTP/1.1 200 OK\r\nContent-Le"]
    if path == b"/switch":  # a 101 to a request that asked for no upgrade
        return [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW"]
    if path.startswith(b"/tunnel"):  # a CONNECT-style answer, then whatever comes is the tunnel's
        return [b"HTTP/1.1 200 Connection Established\r\nContent-Length: 0\r\n\r\n"]
    if path == b"/crlf":  # a blank line after the answer: harmless, the parser skips it
        return [OK % (len(own), own) + b"\r\n"]
    if path == b"/huge-head":  # ~30 MB of header lines, sent as fast as the socket takes them
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        return [b"HTTP/1.1 200 OK\r\n"] + [line * 1000] * 30 + [b"Content-Length: 2\r\n\r\nok"]
    if path == b"/big-value":  # one header value of 200 KB
        return [b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 200_000 + b"\r\nContent-Length: 2\r\n\r\nok"]
    if path == b"/head-at-limit":  # a head just under 64 KiB: relayed
        return [b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 60_000 + b"\r\n" + (OK % (len(own), own))[17:]]
    return [OK % (len(own), own)]


class ScriptedUpstream:
    def __init__(self) -> None:
        self.paths: list[bytes] = []
        self.connections = 0
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(lambda: _Scripted(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class _Scripted(asyncio.Protocol):
    def __init__(self, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        upstream.connections += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        self.upstream.paths.append(self.url)
        delay = 0.5 if self.url.startswith(b"/slow") else 0.0
        for piece in answer_for(self.url):
            asyncio.get_running_loop().call_later(delay, self.transport.write, piece)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def setup(start_gateway: Any, scripted: ScriptedUpstream) -> tuple[int, str]:
    running = await start_gateway(
        upstream={"url": f"http://127.0.0.1:{scripted.port}", "read_timeout": 5},
        routes={"unknown": "allow"},
    )
    key = (await running.admin.create())["key"]
    return running.gateway.proxy.port, key


def get(path: bytes, key: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n" % (path, key.encode())


@pytest.mark.parametrize("path", [b"/twice", b"/extra", b"/extra-head", b"/crlf"])
async def test_bytes_after_an_answer_never_reach_the_next_request(
    setup: tuple[int, str], scripted: ScriptedUpstream, path: bytes
) -> None:
    port, key = setup
    client = await RawClient.connect(port)
    try:
        for n, sent in enumerate([path, b"/next", b"/after", path, b"/last"]):
            await client.send(get(sent, key))
            responses = await client.read_responses(n + 1, timeout=2.0)  # a desync would wait for read_timeout
            assert responses[n].status == 200
            assert bytes(responses[n].body) == b'{"for": "%s"}' % sent
    finally:
        await client.close()
    assert scripted.paths == [path, b"/next", b"/after", path, b"/last"]
    if path == b"/crlf":
        assert scripted.connections == 1  # nothing but a blank line: the connection is still good
    else:
        assert scripted.connections == 3  # the connections that overran were dropped, not pooled


@pytest.mark.parametrize("path", [b"/huge-head", b"/big-value"])
async def test_an_upstream_head_over_the_limit_is_a_502_and_nothing_of_it_is_relayed(
    setup: tuple[int, str], scripted: ScriptedUpstream, path: bytes
) -> None:
    port, key = setup
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client = await RawClient.connect(port)
    try:
        await client.send(get(path, key))
        (response,) = await client.read_responses(1, timeout=10.0)
        assert response.status == 502
        assert b"upstream_unavailable" in bytes(response.body)
        assert b"X-Filler" not in client.raw and b"vvvv" not in client.raw
        await client.send(get(b"/next", key))  # the client connection is still good
        responses = await client.read_responses(2, timeout=2.0)
        assert responses[1].status == 200
    finally:
        await client.close()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB; the test and gateway share it
    assert grown < 40 * 1024, f"the peak memory grew by {grown} KiB while reading a large head"


async def test_a_head_under_the_limit_is_relayed(setup: tuple[int, str]) -> None:
    port, key = setup
    client = await RawClient.connect(port)
    try:
        await client.send(get(b"/head-at-limit", key))
        (response,) = await client.read_responses(1, timeout=5.0)
        assert response.status == 200 and bytes(response.body) == b'{"for": "/head-at-limit"}'
    finally:
        await client.close()


async def test_an_upstream_switching_protocols_unasked_is_a_502_and_no_crash(
    setup: tuple[int, str], scripted: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    port, key = setup
    client = await RawClient.connect(port)
    try:
        await client.send(get(b"/switch", key))
        (response,) = await client.read_responses(1, timeout=5.0)
        assert response.status == 502 and b"RAW" not in client.raw
    finally:
        await client.close()
    assert not [r for r in caplog.records if r.name == "asyncio"], "an exception escaped a protocol callback"


async def test_connect_is_never_forwarded_so_no_tunnel_enters_the_pool(
    setup: tuple[int, str], scripted: ScriptedUpstream
) -> None:
    """A CONNECT with a path as its target used to be forwarded; an upstream answering it as
    a tunnel then held a pooled connection that carried the next client's request."""
    port, key = setup
    for target in (b"/tunnel", b"/api/v5/workflow/x", b"upstream.internal:443"):
        client = await RawClient.connect(port)
        try:
            connect = b"CONNECT %s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n" % (target, key.encode())
            await client.send(connect + get(b"/after", key))
            responses = await client.read_responses(2, timeout=2.0)
            assert [r.status for r in responses] == [400]
            assert b"ambiguous_request" in bytes(responses[0].body)
        finally:
            await client.close()
    assert scripted.paths == []

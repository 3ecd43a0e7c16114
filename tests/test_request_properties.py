"""Properties of the data path under random requests (hypothesis), over real sockets.

Random methods, targets built from the pieces that fool path parsers, header sets, framings,
pipelines and packet splits go to a real gateway in front of a raw recording upstream. For
every example:
- whatever reached the upstream was a request the key may make, read the same way by the
  gateway and by the most permissive reading an upstream could take (path parameters cut,
  percent-decoded until stable, dot segments resolved, first- or last-wins duplicates);
- the gateway closes the connection by itself within its timeouts;
- it still answers a plain request afterwards (it never crashed).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiohttp
import httptools
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.core.routes import split_path
from gateway.runtime.gateway import Gateway
from tests.conftest import make_config
from tests.rawupstream import RawUpstream

TIMEOUT = 0.3  # the gateway's header and idle timeouts in these tests
CLOSE_WITHIN = TIMEOUT + 0.25 + 2.0  # plus one timer tick, plus a loaded machine's slack
SCOPE = {"app.list", "crm.query", "crm.header", "data.list"}
RULES = [
    {"path": "/q/{x}", "interface": "crm.query", "app_id": "query.app_id"},
    {"path": "/h/{x}", "interface": "crm.header", "app_id": "header.X-App-Id"},
]


@dataclass
class Live:
    gateway: Gateway
    upstream: RawUpstream
    loop: asyncio.AbstractEventLoop
    port: int
    key: str
    account: str

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One gateway and upstream for all examples, on an event loop in a thread of their own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    upstream = RawUpstream()
    folder = tmp_path_factory.mktemp("props")

    async def start() -> tuple[Gateway, str]:
        await upstream.start()
        limits = {"header_timeout": TIMEOUT, "idle_timeout": TIMEOUT}
        gateway = Gateway(make_config(folder, upstream={"url": upstream.url}, routes={"rules": RULES}, limits=limits))
        await gateway.start()
        headers = {"Authorization": f"Bearer {gateway.token}"}
        body = {"account": "acme", "apps": ["A1"], "interfaces": ["app.list", "crm", "data.list"]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{gateway.admin_port}/api/v1/keys", json=body, headers=headers) as answer,
        ):
            assert answer.status == 201
            return gateway, (await answer.json())["key"]

    gateway, key = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    live = Live(gateway, upstream, loop, gateway.proxy.port, key, "acme")
    yield live
    live.call(gateway.stop())
    live.call(upstream.stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


# Pieces that path parsers disagree on, mixed into the targets.
BASES = [
    "/api/v5/app/list",
    "/api/v1/app/retrieve_all",
    "/q/1",
    "/h/1",
    "/api/v5/app/entry/data/list",
    "/api/v5/corp/x",
]
TRICKS = [
    "",
    ";",
    ";x=1",
    "/..;",
    "/..",
    "/.",
    "/%2e%2e",
    "/%2E",
    "/%252e%252e",
    "%3b",
    "%3B",
    "#frag",
    "//",
    "%2f..",
    "%5c..",
    "\\..",
    "%00",
    "/../../api/v5/app/list",
    "/x",
    "%20",
    "%25",
]
QUERIES = ["", "?app_id=A1", "?app_id=A2", "?app_id=A1&app_id=A2", "?app_id=A1;app_id=A2", "?app%5Fid=A1", "?x=1;y=2"]
HEADERS = [
    ("X-App-Id", "A1"),
    ("X-App-Id", "A2"),
    ("X_App_Id", "A2"),
    ("X-App-Id", "A1, A2"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X_HTTP_Method_Override", "GET"),
    ("X-Plugin-Id", ""),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X_Forwarded_For", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6"),
    ("X-Real-IP", "6.6.6.6"),
    ("X_Gateway_Account", "evil"),
    ("X-Gateway-Account", "evil"),
    ("Content-Type", "application/json"),
    ("Content-Type", "text/plain"),
    ("Content-Encoding", "gzip"),
    ("Connection", "close"),
    ("Connection", "keep-alive"),
    ("Expect", "100-continue"),
    ("Host", "second.example"),
    ("Authorization", "Bearer junk"),
    ("Transfer-Encoding", "chunked"),
    ("Content-Length", "3"),
]
BODIES = [
    None,
    b'{"app_id": "A1"}',
    b'{"app_id": "A2"}',
    b'{"app_id": "A1", "app_id": "A2"}',
    b'{"app_id": "A2", "APP_ID": "A1"}',
    b'{"app\\u005fid": "A2", "app_id": "A1"}',
    b"[[[[",
    b"",
]


@st.composite
def one_request(draw: st.DrawFn, key: str) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]))
    # plain pieces weigh more, so that many examples are forwarded and the checks on what
    # reached the upstream have something to check
    trick = draw(st.sampled_from([""] * len(TRICKS) + TRICKS))
    query = draw(st.sampled_from(["", "?app_id=A1"] * len(QUERIES) + QUERIES))
    target = draw(st.sampled_from(BASES)) + trick + query
    target = draw(st.sampled_from([target] * 9 + ["*", "http://h" + target, "//h" + target]))
    version = draw(st.sampled_from(["HTTP/1.1"] * 5 + ["HTTP/1.0"]))
    lines = [f"{method} {target} {version}", "Host: api.example"]
    lines += draw(st.sampled_from([[f"Authorization: Bearer {key}"]] * 5 + [[]]))
    plain_headers = [("Accept", "*/*"), ("X-App-Id", "A1"), ("Content-Type", "application/json")] * 4
    lines += [
        f"{name}: {value}" for name, value in draw(st.lists(st.sampled_from(plain_headers + HEADERS), max_size=3))
    ]
    body = draw(st.sampled_from([b'{"app_id": "A1"}'] * len(BODIES) + BODIES))
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    raw = "\r\n".join(lines).encode()
    if body is None or framing == "none":
        return raw + b"\r\n\r\n"
    if framing == "length":
        return raw + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    cut = draw(st.integers(0, len(body)))
    chunks = [piece for piece in (body[:cut], body[cut:]) if piece]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in chunks)
    return raw + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded + b"0\r\n\r\n"


def permissive_segments(url: bytes) -> list[str]:
    """The path the most permissive upstream reading could route: fragment and query cut,
    path parameters cut, `\\` as `/`, percent-decoded until stable, dot segments resolved."""
    path = url.decode("latin-1").split("#", 1)[0].split("?", 1)[0]
    for _ in range(4):
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
        path = unquote(path).replace("\\", "/")
    resolved: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if resolved:
                resolved.pop()
            continue
        resolved.append(segment)
    return resolved


def app_ids_an_upstream_could_read(seen: Any, interface: str) -> set[Any]:
    """Every app id a first-wins, last-wins or case-folding parser could take from the request."""
    if interface == "crm.query":
        query = seen.url.decode("latin-1").partition("?")[2]
        pairs = [p for sep in ("&", ";") for p in parse_qsl(query, keep_blank_values=True, separator=sep)]
        return {value for name, value in pairs if name == "app_id"} or {None}
    if interface == "crm.header":
        values = [value for name, value in seen.headers if name.lower().replace(b"_", b"-") == b"x-app-id"]
        return {piece.strip().decode() for value in values for piece in value.split(b",")} or {None}
    if interface == "data.list":
        members = json.loads(seen.body, object_pairs_hook=list)  # every member, duplicates kept
        return {value for name, value in members if name.casefold() == "app_id"} or {None}
    return {"A1"}  # app.list is account-level


def exchange(port: int, pieces: list[bytes]) -> tuple[bytes, float | None]:
    """Send the pieces, then read until the gateway closes; the time it took to close, or None."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received = b""
    try:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break
        sent = time.monotonic()
        sock.settimeout(CLOSE_WITHIN)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return received, time.monotonic() - sent
            except TimeoutError:
                return received, None
            if not data:
                return received, time.monotonic() - sent
            received += data
    finally:
        sock.close()


def assert_the_key_may_make(live: Live, seen: Any) -> None:
    """What reached the upstream is a request the key may make, however an upstream reads it."""
    strict = split_path(seen.url.decode("latin-1").partition("?")[0])
    assert strict is not None and strict == permissive_segments(seen.url), seen.url
    route = live.gateway.proxy.routes.match(seen.method, seen.url.decode("latin-1").partition("?")[0])
    assert route is not None and route.interface in SCOPE, seen.url
    assert app_ids_an_upstream_could_read(seen, route.interface) == {"A1"}, seen
    assert seen.header("X-Gateway-Account") == [live.account.encode()]
    assert seen.header("X-Real-IP") == [b"127.0.0.1"]
    assert seen.header("X-Forwarded-For") == [b"127.0.0.1"]
    assert not [name for name, _ in seen.headers if b"_" in name and b"gateway" in name.lower()]
    assert not seen.header("Forwarded")
    overrides = seen.header("X-HTTP-Method-Override") + seen.header("X_HTTP_Method_Override")
    assert all(value.strip().upper() == seen.method.encode() for value in overrides)


@settings(
    max_examples=int(os.environ.get("GATEWAY_PROPERTY_EXAMPLES", "80")),
    deadline=None,
    derandomize=True,  # the same examples on every CI run; raise the count locally to explore
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_requests_never_get_past_the_gateway(live: Live, data: st.DataObject) -> None:
    requests = data.draw(st.lists(one_request(live.key), min_size=1, max_size=3), label="requests")
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4), label="cuts"))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if stream[a:b]]
    before = len(live.upstream.seen)
    received, closed_after = exchange(live.port, pieces)

    forwarded = live.upstream.seen[before:]
    event(f"requests forwarded: {len(forwarded)} of {len(requests)}")
    assert closed_after is not None, "the gateway held the connection past its timeouts"
    assert not received or received.startswith(b"HTTP/1.1 ")
    for seen in forwarded:
        assert any(seen.url in request.split(b"\r\n", 1)[0] for request in requests), seen.url
        assert_the_key_may_make(live, seen)

    plain = b"GET /api/v5/app/list HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer %s\r\n\r\n"
    answer, _ = exchange(live.port, [plain % live.key.encode()])
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


SHAPE_BODY = b'{"app_id":"A1"}'
BODIES = [b'{"app_id":"A2"}', b'{"APP_ID":"A2"}', b'{"app_id":1234}', b'["app_id","A1"]', b'{"app_id":"A1"}']
ODD_BYTES = b" ,;:\t\r\n\"'\\_-./\x00\x7f\xff"


def shaped_request(key: bytes, body: bytes = SHAPE_BODY) -> bytes:
    return (
        b"POST /api/v5/app/entry/data/list HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (key, len(body), body)
    )


KEY_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@st.composite
def mutation(draw: st.DrawFn, key: bytes, kind: str) -> bytes:
    """The learnt request with the same length, its key slot, body or any other byte changed."""
    odd = st.sampled_from(KEY_LETTERS + ODD_BYTES)
    slot, body = key, SHAPE_BODY
    if kind in ("key", "key and body"):  # another key of key bytes: unknown to the gateway
        slot = bytes(KEY_LETTERS[c % 64] for c in draw(st.binary(min_size=len(key), max_size=len(key))))
    if kind == "odd key":  # the key with some bytes a parser reads as something else
        slot = bytearray(key)
        for _ in range(draw(st.integers(1, 3))):
            slot[draw(st.integers(0, len(key) - 1))] = draw(st.sampled_from(ODD_BYTES))
        slot = bytes(slot)
    if kind in ("body", "key and body"):
        body = draw(st.one_of(st.sampled_from(BODIES), st.lists(odd, min_size=15, max_size=15).map(bytes)))
    if kind == "body length":  # as many Content-Length digits (10 to 99 bytes), or more or fewer
        filler = draw(st.text(alphabet="abc", min_size=0, max_size=120))
        body = draw(st.sampled_from([b'{"app_id":"A1","x":"%s"}', b'{"app_id":"A2","x":"%s"}'])) % filler.encode()
    raw = bytearray(shaped_request(slot, body))
    if kind == "odd length":  # the Content-Length digits changed to other bytes
        at = raw.index(b"Content-Length: ") + len(b"Content-Length: ")
        raw[at + draw(st.integers(0, 1))] = draw(st.sampled_from(b"0123456789 +-x\xd9"))
    if kind == "odd byte":  # any byte of the head or body
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.sampled_from(b"Aa0 :\r\n" + ODD_BYTES))
    return bytes(raw)


def of_the_shape(variant: bytes, key: bytes) -> bool:
    """Whether the variant differs from the learnt request only in a key of key bytes, the
    Content-Length digits (as many) and a body of that length."""
    base = shaped_request(key)
    start, length = base.index(key), base.index(b"Content-Length: ") + len(b"Content-Length: ")
    end, body = start + len(key), len(base) - len(SHAPE_BODY)
    digits = variant[length : length + 2]
    return (
        variant[:start] == base[:start]
        and variant[end:length] == base[end:length]
        and variant[length + 2 : body] == base[length + 2 : body]
        and not variant[start:end].translate(None, KEY_LETTERS)
        and digits.isdigit()
        and len(variant) == body + int(digits)
    )


class Answers:
    """Responses read off a raw socket, counted as they complete."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())


def converse(port: int, requests: list[bytes]) -> list[int | None]:
    """Send each request after the answer to the one before; a status per request, None when
    the gateway closed instead of answering (nothing is sent after that)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(CLOSE_WITHIN)
    answers, results = Answers(), []
    try:
        for request in requests:
            sock.sendall(request)
            wanted = len(answers.statuses) + 1
            while len(answers.statuses) < wanted:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    data = b""
                if not data:
                    return [*results, None]
                answers.parser.feed_data(data)
            results.append(answers.statuses[-1])
        return results
    finally:
        sock.close()


@pytest.mark.parametrize(
    "kind", ["again", "key", "body", "key and body", "body length", "odd key", "odd length", "odd byte"]
)
@settings(
    max_examples=max(10, int(os.environ.get("GATEWAY_PROPERTY_EXAMPLES", "80")) // 5),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_request_like_a_learnt_one_is_decided_as_a_fresh_parse_decides_it(
    live: Live, kind: str, data: st.DataObject
) -> None:
    """A connection that learnt its client's request shape reads the next request without the
    parser when only the key and the body differ: every variant must get the answer it gets on a
    fresh connection, and reach the upstream only as a request the key may make."""
    key = live.key.encode()
    variant = data.draw(mutation(key, kind), label="variant")
    before = len(live.upstream.seen)
    learnt = converse(live.port, [shaped_request(key), variant])
    assert learnt[0] == 200
    fresh = converse(live.port, [variant])
    event(f"answer: {fresh[0]}, read without the parser: {of_the_shape(variant, key)}")
    assert learnt[1:] == fresh, (variant, learnt, fresh)
    for seen in live.upstream.seen[before:]:
        assert_the_key_may_make(live, seen)

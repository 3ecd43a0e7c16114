"""The data path tried as an attacker would: raw bytes over real sockets, and for every case
what the client got AND what reached the upstream (a raw recording server, not a framework).

Each class of the security issue has its own table of variants: path and target tricks,
body and media-type tricks, duplicated app ids, replays, pipelining after a refusal,
header leftovers, trailers. A request the upstream could read differently from the gateway
must be refused before it is forwarded; a refused request must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Admin
from tests.rawhttp import RawClient, Response
from tests.rawupstream import RawUpstream

V5_LIST = b"/api/v5/app/entry/data/list"
APP_LIST = b"/api/v5/app/list"
RULES = [
    {"path": "/q/{x}", "interface": "crm.query", "app_id": "query.app_id"},
    {"path": "/h/{x}", "interface": "crm.header", "app_id": "header.X-App-Id"},
]


@dataclass
class Gate:
    port: int
    admin: Admin
    upstream: RawUpstream
    proxy: Any = None  # the gateway's data path, for tests that look at a connection's state

    async def key(self, **fields: Any) -> str:
        return (await self.admin.create(**fields))["key"]

    async def exchange(
        self, *pieces: bytes, count: int = 1, source: str = "127.0.0.1", timeout: float = 5.0, linger: float = 0.0
    ) -> tuple[list[Response], bool]:
        """Send the pieces (one write each), read up to `count` answers; also say whether the
        gateway closed the connection (waiting up to `linger` seconds for it to)."""
        client = await RawClient.connect(self.port, source)
        try:
            for piece in pieces:
                try:
                    await client.send(piece)
                except (ConnectionResetError, BrokenPipeError):
                    break  # the gateway hung up: what it answered is still read below
                await asyncio.sleep(0)
            responses = await client.read_responses(count, timeout=timeout)
            closed = client.closed or (linger > 0 and await client.wait_closed(linger))
            return responses, closed
        finally:
            await client.close()


@pytest.fixture
async def gate(start_gateway: Any, raw_upstream: RawUpstream) -> Gate:
    running = await start_gateway(upstream={"url": raw_upstream.url}, routes={"rules": RULES})
    return Gate(running.gateway.proxy.port, running.admin, raw_upstream, running.gateway.proxy)


def request(
    method: bytes,
    target: bytes,
    key: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    lines = [b"%s %s %s" % (method, target, version), b"Host: api.example"]
    if key is not None:
        lines.append(b"Authorization: Bearer " + key.encode())
    for name, value in headers or []:
        lines.append(name + b": " + value)
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chunked(method: bytes, target: bytes, key: str, pieces: list[bytes], trailer: bytes = b"") -> bytes:
    head = request(method, target, key, [(b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"application/json")])
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer + b"\r\n"


def reason(response: Response) -> str:
    return json.loads(bytes(response.body))["reason"]


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# 2. Targets a servlet container, a proxy behind us or a double-decoding upstream would
# route elsewhere than the gateway authorized.
AMBIGUOUS_TARGETS = [
    b"/api/v5/app/list;jsessionid=1",
    b"/api/v5/app;x=1/list",
    b"/api/v5/app/..;/app/list",
    b"/api/v1/app/A1/entry/E/data/..;/..;/..;/..;/A2/entry/E/data_delete",
    b"/api/v1/app/A1/entry/E/data_retrieve/..;/data_delete",
    b"/api/v5/app/list%3b",
    b"/api/v5/app/list%3B.json",
    b"/api/v5/app/list#/../../corp/x",
    b"/api/v5/app/list?x=1#frag",
    b"/api/v5/app/list#",
    b"http://127.0.0.1/api/v5/app/list",
    b"HTTP://upstream.internal/api/v5/app/list",
    b"https://evil.example:443/api/v5/app/list",
    b"//evil.example/api/v5/app/list",
    b"/api/v5/app/%252e%252e/list",
    b"/api/v5/corp/%25%32%65%25%32%65/app/list",
    # dot segments, also once trimmed or NFKC-normalised by a lenient server
    b"/api/v5/corp/../app/list",
    b"/api/v5/corp/./app/list",
    b"/api/v5/corp/%2e%2e/app/list",
    b"/api/v5/corp/..%20/app/list",
    b"/api/v5/corp/..%09/app/list",
    b"/api/v5/corp/%20../app/list",
    b"/api/v5/corp/%ef%bc%8e%ef%bc%8e/app/list",
    b"/api/v5/corp/%e2%80%8b..%c2%a0/app/list",
]


@pytest.mark.parametrize("target", AMBIGUOUS_TARGETS)
async def test_ambiguous_targets_are_refused_before_anything(gate: Gate, target: bytes) -> None:
    key = await gate.key(interfaces=["app.list"])
    for method in (b"GET", b"POST", b"DELETE"):
        for sent_key in (key, None):  # ambiguity is the first check: it does not depend on the key
            (answer,), closed = await gate.exchange(request(method, target, sent_key), linger=2.0)
            assert (answer.status, reason(answer)) == (400, "ambiguous_request")
            assert closed and answer.headers["connection"] == "close"
    # the same bytes one at a time: the parser's view does not depend on packet boundaries
    (answer,), _ = await gate.exchange(*split_every(request(b"GET", target, key), 1))
    assert (answer.status, reason(answer)) == (400, "ambiguous_request")
    assert gate.upstream.seen == []


async def test_asterisk_and_connect_targets(gate: Gate) -> None:
    key = await gate.key()
    for raw in (
        request(b"OPTIONS", b"*", key),
        request(b"CONNECT", b"upstream.internal:443", key),
        request(b"CONNECT", b"127.0.0.1:22", key),
    ):
        (answer,), closed = await gate.exchange(raw, linger=2.0)
        assert (answer.status, reason(answer)) == (400, "ambiguous_request")
        assert closed
    assert gate.upstream.seen == []


async def test_plain_targets_pass_unchanged(gate: Gate) -> None:
    key = await gate.key(interfaces=["app.list"])
    targets = [APP_LIST, APP_LIST + b"?a=1;b=2", APP_LIST + b"?next=%2F..%2F", b"/api/v5/app/l%69st"]
    for target in targets:
        (answer,), _ = await gate.exchange(request(b"POST", target, key))
        assert answer.status == 200, target
    assert [seen.url for seen in gate.upstream.seen] == targets


# 3. Bodies: duplicate members and media types a JSON-reading upstream would read otherwise.
DUPLICATE_BODIES = [
    b'{"app_id": "A1", "app_id": "A2"}',
    b'{"app_id": "A2", "app_id": "A1"}',
    b'{"app_id": "A1", "app\\u005fid": "A2"}',
    b'{"\\u0061pp_id": "A2", "app_id": "A1"}',
    b'{"app_id": "A1", "\\u0061\\u0070\\u0070\\u005f\\u0069\\u0064": "A1"}',
    b'{"app_id": "A1", "APP_ID": "A2"}',
    b'{"App_Id": "A2", "app_id": "A1", "entry_id": "E"}',
    b'{"entry_id": "E", "app_id": "A1", "x": [1, {"y": 2}], "app_id": "A2"}',
]


@pytest.mark.parametrize("body", DUPLICATE_BODIES)
async def test_duplicate_app_id_members_are_ambiguous(gate: Gate, body: bytes) -> None:
    key = await gate.key(apps=["A1"])
    json_type = [(b"Content-Type", b"application/json")]
    (answer,), _ = await gate.exchange(request(b"POST", V5_LIST, key, json_type, body))
    assert (answer.status, reason(answer)) == (400, "ambiguous_request")
    # chunked, each chunk a few bytes, in separate packets
    pieces = split_every(chunked(b"POST", V5_LIST, key, split_every(body, 3)), 7)
    (answer,), _ = await gate.exchange(*pieces)
    assert (answer.status, reason(answer)) == (400, "ambiguous_request")
    assert gate.upstream.seen == []


async def test_nested_members_do_not_count(gate: Gate) -> None:
    key = await gate.key(apps=["A1"])
    body = b'{"app_id": "A1", "filter": {"app_id": "A2"}, "list": [{"app_id": "A3"}]}'
    (answer,), _ = await gate.exchange(request(b"POST", V5_LIST, key, [(b"Content-Type", b"application/json")], body))
    assert answer.status == 200
    assert gate.upstream.seen[0].body == body


MEDIA_TYPES = [
    ([b"application/x-www-form-urlencoded"], [], 415),
    ([b"text/plain"], [], 415),
    ([b"multipart/form-data; boundary=x"], [], 415),
    ([b"application/jsonp"], [], 415),
    ([b"application/json; charset=utf-16"], [], 415),
    ([b"application/json; charset=iso-8859-1"], [], 415),
    ([b"application/json", b"text/plain"], [], 415),
    ([b"application/json", b"application/json"], [], 415),
    ([b"application/json"], [b"gzip"], 415),
    ([b"application/json"], [b"identity"], 415),
    ([], [b"br"], 415),
    ([b"application/json"], [], 200),
    ([b'Application/JSON; charset="UTF-8"'], [], 200),
    ([b"application/vnd.api+json"], [], 200),
    ([b"application/merge-patch+json; charset=utf-8"], [], 200),
    ([], [], 200),
]


@pytest.mark.parametrize(("types", "encodings", "status"), MEDIA_TYPES)
async def test_inspected_bodies_must_be_plain_json(
    gate: Gate, types: list[bytes], encodings: list[bytes], status: int
) -> None:
    key = await gate.key(apps=["A1"])
    headers = [(b"Content-Type", t) for t in types] + [(b"Content-Encoding", e) for e in encodings]
    body = b'{"app_id": "A1"}'
    (answer,), _ = await gate.exchange(request(b"POST", V5_LIST, key, headers, body))
    assert answer.status == status
    if status == 415:
        assert reason(answer) == "unsupported_media_type"
        assert gate.upstream.seen == []
    else:
        assert [seen.body for seen in gate.upstream.seen] == [body]


@pytest.mark.parametrize(
    "body",
    [
        '{"app_id": "A1"}'.encode("utf-16"),
        '{"app_id": "A1"}'.encode("utf-16-le"),
        '{"app_id": "A1"}'.encode("utf-32"),
        b"\xef\xbb\xbf" + b'{"app_id": "A1"}',
        b'{"app_id": "A1"} {"app_id": "A2"}',
        b'{"app_id": "A\\ud800"}',
        b'{"app_id": ["A1"]}',
        b'{"app_id": 1}',
        b'["app_id", "A1"]',
        b'[["app_id", "A1"]]',
        b"[" * 200_000,
        b'{"a":' * 100_000,
    ],
)
async def test_bodies_that_are_not_one_utf8_json_object_find_no_app(gate: Gate, body: bytes) -> None:
    key = await gate.key(apps=["A1"])
    (answer,), _ = await gate.exchange(request(b"POST", V5_LIST, key, [(b"Content-Type", b"application/json")], body))
    assert (answer.status, reason(answer)) == (403, "app_not_allowed")
    assert gate.upstream.seen == []


# 4. App ids in the query or a header, given twice or splittable.
@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        (b"/q/1?app_id=A1&app_id=A2", [], 400),
        (b"/q/1?app_id=A2&app_id=A1", [], 400),
        (b"/q/1?app_id=A1&app_id=A1", [], 400),
        (b"/q/1?app_id=A1&app%5Fid=A2", [], 400),
        (b"/q/1?app_id=A1&app%5fid=A1", [], 400),
        (b"/q/1?app_id=A1;app_id=A2", [], 400),
        (b"/q/1?app_id=A1;x=1", [], 400),
        (b"/q/1?x=1&app_id=A1&y=2", [], 200),
        (b"/q/1?app%5Fid=A1", [], 200),
        (b"/q/1?app_id=A%31", [], 200),
        (b"/q/1?app_id=A2", [], 403),
        (b"/q/1?app_id=", [], 403),
        (b"/q/1", [], 403),
        (b"/h/1", [(b"X-App-Id", b"A1"), (b"X-App-Id", b"A2")], 400),
        (b"/h/1", [(b"X-App-Id", b"A1"), (b"X-App-Id", b"A1")], 400),
        (b"/h/1", [(b"X-App-Id", b"A1"), (b"X_App_Id", b"A2")], 400),
        (b"/h/1", [(b"x_app_id", b"A2"), (b"X-APP-ID", b"A1")], 400),
        (b"/h/1", [(b"X-App-Id", b"A1, A2")], 400),
        (b"/h/1", [(b"x-app-id", b" A1 ")], 200),
        (b"/h/1", [(b"X_App_Id", b"A1")], 200),
        (b"/h/1", [(b"X-App-Id", b"A2")], 403),
        (b"/h/1", [], 403),
    ],
)
async def test_app_ids_in_query_and_headers(
    gate: Gate, target: bytes, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    key = await gate.key(apps=["A1"], interfaces=["crm"])
    (answer,), _ = await gate.exchange(request(b"GET", target, key, headers))
    assert answer.status == status, bytes(answer.body)
    if status == 400:
        assert reason(answer) == "ambiguous_request"
    assert len(gate.upstream.seen) == (1 if status == 200 else 0)


# 5. Replays: only idempotent requests are sent again after a pooled connection dies.
@pytest.mark.parametrize(
    ("method", "body", "replayed"),
    [
        (b"GET", None, True),
        (b"HEAD", None, True),
        (b"OPTIONS", None, True),
        (b"DELETE", None, True),
        (b"PUT", None, True),
        (b"POST", None, False),
        (b"POST", b'{"app_id": "A1"}', False),
        (b"PATCH", b'{"app_id": "A1"}', False),
        (b"PUT", b'{"app_id": "A1"}', True),
    ],
)
async def test_only_idempotent_requests_are_replayed(
    gate: Gate, method: bytes, body: bytes | None, replayed: bool
) -> None:
    key = await gate.key(apps=["A1"])
    json_type = [(b"Content-Type", b"application/json")]
    client = await RawClient.connect(gate.port)
    try:
        await client.send(request(b"POST", V5_LIST + b"?warm", key, json_type, b'{"app_id": "A1"}'))
        await client.read_responses(1)
        assert len(gate.upstream.seen) == 1  # one pooled upstream connection now idle
        await client.send(request(method, V5_LIST + b"?drop-once", key, json_type, body or b'{"app_id": "A1"}'))
        responses = await client.read_responses(2, head_only=method == b"HEAD")
    finally:
        await client.close()
    dropped = [seen for seen in gate.upstream.seen if b"drop-once" in seen.url]
    assert dropped[0].connection == gate.upstream.seen[0].connection  # it went out on the pooled one
    if replayed:
        assert responses[1].status == 200
        assert len(dropped) == 2 and dropped[1].connection != dropped[0].connection
    else:
        assert (responses[1].status, reason(responses[1])) == (502, "upstream_unavailable")
        assert len(dropped) == 1  # the upstream executed it once; the client was told it failed


# 6. Pipelining: nothing after a `Connection: close` answer or a last request is forwarded.
async def test_nothing_is_forwarded_after_a_closing_refusal(gate: Gate) -> None:
    key = await gate.key(apps=["A1"])
    good = request(b"POST", APP_LIST, key)
    json_type = [(b"Content-Type", b"application/json")]
    refusals = [
        (request(b"POST", APP_LIST, None, body=b"{}"), 401),  # body not read: close
        (request(b"POST", V5_LIST, key, [(b"Content-Type", b"text/plain")], b'{"app_id": "A1"}'), 415),
        (request(b"POST", V5_LIST, key, json_type, b"x" * 2_000_000), 413),
        (request(b"POST", APP_LIST + b";x", key, body=b"{}"), 400),
        (request(b"GET", APP_LIST, "x" * 32, [(b"Connection", b"close")]), 401),
        (request(b"GET", APP_LIST, None, version=b"HTTP/1.0"), 401),
    ]
    for refused, status in refusals:
        for pieces in ([refused + good + good], [refused, good], split_every(refused + good, 4096)):
            responses, closed = await gate.exchange(*pieces, count=3, timeout=2.0, linger=2.0)
            assert [r.status for r in responses] == [status]
            assert responses[0].headers.get("connection") == "close"
            assert closed
    assert gate.upstream.seen == []


async def test_nothing_is_forwarded_after_a_last_request(gate: Gate) -> None:
    key = await gate.key()
    last_requests = [
        request(b"POST", APP_LIST + b"?first", key, [(b"Connection", b"close")]),
        request(b"POST", APP_LIST + b"?first", key, [(b"Connection", b"keep-alive, close")]),
        request(b"POST", APP_LIST + b"?first", key, version=b"HTTP/1.0"),
    ]
    for first in last_requests:
        gate.upstream.seen.clear()
        second = request(b"POST", APP_LIST + b"?second", key)
        responses, closed = await gate.exchange(first + second, count=2, linger=2.0)
        assert [r.status for r in responses] == [200]
        assert closed
        assert [seen.url for seen in gate.upstream.seen] == [APP_LIST + b"?first"]


async def test_refusals_without_a_body_keep_the_connection(gate: Gate) -> None:
    key = await gate.key(interfaces=["app.list"])
    pieces = request(b"GET", APP_LIST) + request(b"GET", b"/api/v5/corp/x", key) + request(b"GET", APP_LIST, key)
    responses, closed = await gate.exchange(pieces, count=3, linger=0.3)
    assert [r.status for r in responses] == [401, 403, 200]
    assert "connection" not in responses[0].headers
    assert not closed
    assert [seen.url for seen in gate.upstream.seen] == [APP_LIST]


async def test_malformed_body_pipelined_behind_another_is_answered(gate: Gate) -> None:
    key = await gate.key(apps=["A1"])
    json_type = [(b"Content-Type", b"application/json")]
    first = request(b"POST", V5_LIST + b"?slow", key, json_type, b'{"app_id": "A1"}')
    for bad in (b"[" * 300_000, b'{"app_id": "A1", "x": ' + b"{" * 50_000, b"{not json", b"\xff\xfe"):
        second = request(b"POST", V5_LIST, key, json_type, bad)
        third = request(b"POST", V5_LIST, key, json_type, b'{"app_id": "A1"}')
        responses, closed = await gate.exchange(first + second + third, count=3, timeout=5.0, linger=0.3)
        assert [r.status for r in responses] == [200, 403, 200]
        assert reason(responses[1]) == "app_not_allowed"
        assert not closed


# 7. Header leftovers: what the upstream gets is what the gateway decided, and nothing else.
async def test_identity_and_forwarding_headers_cannot_be_forged(gate: Gate) -> None:
    created = await gate.admin.create(account="acme")
    forged = [
        (b"X-Gateway-Account", b"evil"),
        (b"X-Gateway-Anything", b"1"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"Forwarded", b"for=6.6.6.6;proto=https"),
        (b"X-Real-IP", b"6.6.6.6"),
        (b"True-Client-IP", b"6.6.6.6"),
        (b"CF-Connecting-IP", b"6.6.6.6"),
        (b"X-Client-IP", b"6.6.6.6"),
        (b"X-Cluster-Client-IP", b"6.6.6.6"),
        (b"Fastly-Client-IP", b"6.6.6.6"),
        (b"X-Originating-IP", b"6.6.6.6"),
        (b"X-Remote-IP", b"6.6.6.6"),
        (b"X-Remote-Addr", b"6.6.6.6"),
        (b"Client-IP", b"6.6.6.6"),
        (b"X-Host", b"evil.example"),
        (b"X-Original-URL", b"/api/v5/app/entry/data/delete"),
        (b"X-Rewrite-URL", b"/api/v5/app/entry/data/delete"),
        (b"X-Forwarded-Port", b"8443"),
        (b"X-Forwarded-Prefix", b"/admin"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Connection", b"X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
    ]
    raw = request(b"POST", APP_LIST, created["key"], forged, b"hello")
    (answer,), _ = await gate.exchange(raw, source="127.0.0.3")
    assert answer.status == 200
    (seen,) = gate.upstream.seen
    assert seen.header("X-Gateway-Account") == [b"acme"]
    assert seen.header("X-Gateway-Key-Id") == [created["id"].encode()]
    assert seen.header("X-Forwarded-For") == [b"127.0.0.3"]
    assert seen.header("X-Real-IP") == [b"127.0.0.3"]
    assert seen.header("Content-Length") == [b"5"] and seen.body == b"hello"
    names = seen.names()
    assert not names & {"forwarded", "authorization", "proxy-connection", "x-secret-hop", "x-gateway-anything"}
    assert not names & {"true-client-ip", "cf-connecting-ip", "x-client-ip", "x-cluster-client-ip", "fastly-client-ip"}
    assert not names & {"x-originating-ip", "x-remote-ip", "x-remote-addr", "client-ip", "x-host"}
    assert not names & {"x-original-url", "x-rewrite-url", "x-forwarded-port", "x-forwarded-prefix"}


@pytest.mark.parametrize(
    "twin",
    [
        b"X_Gateway_Account",
        b"x_gateway_key_id",
        b"X_Gateway_Anything",
        b"X_Forwarded_For",
        b"x_forwarded_host",
        b"X_Forwarded_Proto",
        b"X_Forwarded_Port",
        b"X_Real_IP",
        b"Content_Length",
        b"Transfer_Encoding",
        b"Proxy_Authorization",
        b"Proxy_Connection",
        b"Keep_Alive",
    ],
)
async def test_a_framing_or_gateway_header_spelt_with_underscores_is_ambiguous(gate: Gate, twin: bytes) -> None:
    """A CGI-style server reads `Content_Length` as Content-Length, most parsers ignore it:
    whichever the gateway believed, one of them would act on another request."""
    key = await gate.key()
    raw = request(b"POST", APP_LIST, key, [(twin, b"5")], b"hello")
    answers, closed = await gate.exchange(raw + request(b"GET", APP_LIST, key), count=1, linger=0.3)
    assert [(a.status, reason(a)) for a in answers] == [(400, "ambiguous_request")]
    assert closed and gate.upstream.seen == []


async def test_a_key_header_under_another_spelling(start_gateway: Any, raw_upstream: RawUpstream) -> None:
    running = await start_gateway(upstream={"url": raw_upstream.url}, auth={"header": "X-Api-Key", "scheme": ""})
    gate = Gate(running.gateway.proxy.port, running.admin, raw_upstream)
    key = (await gate.admin.create())["key"].encode()
    (answer,), _ = await gate.exchange(request(b"GET", APP_LIST, headers=[(b"x-API-key", key)]))
    assert answer.status == 200
    assert "x-api-key" not in gate.upstream.seen[0].names()
    for headers in (
        [(b"X_Api_Key", key)],
        [(b"X-Api-Key", key), (b"X_Api_Key", key)],
        [(b"x-api-key", key), (b"X-API-KEY", b"other")],
    ):
        (answer,), _ = await gate.exchange(request(b"GET", APP_LIST, headers=headers))
        assert (answer.status, reason(answer)) == (400, "ambiguous_request")
    assert len(gate.upstream.seen) == 1


async def test_two_key_headers_or_two_hosts_are_ambiguous(gate: Gate) -> None:
    key = await gate.key()
    for extra in (
        [(b"Authorization", b"Bearer " + key.encode())],
        [(b"authorization", b"Bearer x")],
        [(b"Host", b"b")],
    ):
        (answer,), _ = await gate.exchange(request(b"GET", APP_LIST, key, extra))
        assert (answer.status, reason(answer)) == (400, "ambiguous_request")
    assert gate.upstream.seen == []


@pytest.mark.parametrize(
    "plugin", [(b"X-Plugin-Id", b""), (b"X-Plugin-Id", b"   "), (b"X_Plugin_Id", b"p1"), (b"x-plugin-id", b"p1")]
)
async def test_the_plugin_header_counts_when_present(gate: Gate, plugin: tuple[bytes, bytes]) -> None:
    key = await gate.key(ip_whitelist=["127.0.0.*"])
    (answer,), _ = await gate.exchange(request(b"GET", APP_LIST, key, [plugin]))
    assert (answer.status, reason(answer)) == (403, "plugin_not_allowed")
    (answer,), _ = await gate.exchange(request(b"GET", APP_LIST, key))
    assert answer.status == 200
    open_key = await gate.key()
    (answer,), _ = await gate.exchange(request(b"GET", APP_LIST, open_key, [plugin]))
    assert answer.status == 200  # a key without a whitelist serves plugins; the header goes on
    assert gate.upstream.seen[-1].header(plugin[0].decode()) == [plugin[1].strip()]


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        (b"X-HTTP-Method-Override", b"DELETE", 400),
        (b"X-HTTP-Method", b"PUT", 400),
        (b"X-Method-Override", b"GET", 400),
        (b"X_HTTP_Method_Override", b"DELETE", 400),
        (b"x-http-method-override", b"", 400),
        (b"X-HTTP-Method-Override", b"POST", 200),
        (b"X-HTTP-Method-Override", b" post ", 200),
    ],
)
async def test_method_overrides_naming_another_method(gate: Gate, header: bytes, value: bytes, status: int) -> None:
    key = await gate.key()
    (answer,), _ = await gate.exchange(request(b"POST", APP_LIST, key, [(header, value)]))
    assert answer.status == status
    assert len(gate.upstream.seen) == (1 if status == 200 else 0)


@pytest.mark.parametrize("size", [1, 5, 4096])
async def test_chunked_request_with_trailers(gate: Gate, size: int) -> None:
    key = await gate.key(apps=["A1"])
    body = b'{"app_id": "A1", "pad": "' + b"p" * 3000 + b'"}'
    trailer = b"X-Injected: 1\r\nAuthorization: Bearer other\r\nX-Gateway-Account: evil\r\n"
    for target in (V5_LIST, APP_LIST):  # inspected, and streamed
        raw = chunked(b"POST", target, key, split_every(body, 700), trailer)
        (answer,), _ = await gate.exchange(*split_every(raw, size))
        assert answer.status == 200
        seen = gate.upstream.seen[-1]
        assert seen.body == body and seen.complete
        assert "x-injected" not in seen.names() and "authorization" not in seen.names()
    assert len(gate.upstream.seen) == 2
    # framing in a trailer is a framing error, answered and closed
    raw = chunked(b"POST", V5_LIST, key, [body], b"Content-Length: 3\r\n")
    (answer,), closed = await gate.exchange(*split_every(raw, size), linger=2.0)
    assert (answer.status, closed) == (400, True)
    assert len(gate.upstream.seen) == 2


@pytest.mark.parametrize(
    ("broken", "status"),
    [
        (b"GET /x HTTP/1.1\r\nBad Header: 1\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /x HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", 501),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # ambiguous_request, in its turn
    ],
)
async def test_a_broken_request_behind_one_in_flight_is_answered_in_turn(
    gate: Gate, broken: bytes, status: int
) -> None:
    """The request in flight keeps its answer (its upstream already ran it); the broken one
    behind it gets its refusal after that, and the connection closes."""
    key = await gate.key()
    first = request(b"POST", APP_LIST + b"?first", key, body=b"{}")
    after = request(b"POST", APP_LIST + b"?never", key)
    responses, closed = await gate.exchange(first + broken + after, count=3, linger=2.0)
    assert [r.status for r in responses] == [200, status]
    assert closed
    assert [seen.url for seen in gate.upstream.seen] == [APP_LIST + b"?first"]


# 12. Requests recognised by their bytes: a read that equals the connection's last parsed
# request but for the key (same length, letters and digits) and the body (same length) skips
# the parser. Each such request must still be decided and forwarded with its own key and body.
def shaped(key: str, app: bytes) -> bytes:
    return request(b"POST", V5_LIST, key, [(b"Content-Type", b"application/json")], b'{"app_id":"%s"}' % app)


async def test_requests_of_one_shape_are_each_decided_on_their_own_key_and_body(gate: Gate) -> None:
    first = await gate.admin.create(account="acme", apps=["A1"])
    second = await gate.admin.create(account="acme", apps=["A2"])
    other_account = await gate.admin.create(account="other", apps=["A1"], enabled=False)
    unknown = "Q" * len(first["key"])
    client = await RawClient.connect(gate.port)
    steps = [
        (first["key"], b"A1", 200, None),  # parsed, and learnt as this connection's shape
        (second["key"], b"A2", 200, None),  # the same shape: another key, another body
        (second["key"], b"A1", 403, "app_not_allowed"),  # the body decides, not the first request
        (first["key"], b"A1", 200, None),
    ]
    for n, (key, app, status, why) in enumerate(steps):
        await client.send(shaped(key, app))
        answer = (await client.read_responses(n + 1))[n]
        assert answer.status == status and (why is None or reason(answer) == why), n
    (connection,) = gate.proxy.connections
    assert connection.shapes.shape is not None and connection.shapes.misses == 1  # only the first one was parsed
    for status, key, why in ((403, other_account["key"], "key_disabled"), (401, unknown, "invalid_key")):
        await client.send(shaped(key, b"A1"))  # refused on its head, before its body: then closed
        answer = (await client.read_responses(len(steps) + 1))[-1]
        assert (answer.status, reason(answer)) == (status, why)
        assert connection.shapes.misses == 1 and await client.wait_closed()
        await client.close()
        client = await RawClient.connect(gate.port)  # learn the shape again on a new connection
        steps = [(first["key"], b"A1", 200, None)]
        await client.send(shaped(first["key"], b"A1"))
        await client.read_responses(1)
        (connection,) = [c for c in gate.proxy.connections if not c.closing]
    await client.close()
    ids = [seen.header("X-Gateway-Key-Id")[0].decode() for seen in gate.upstream.seen]
    assert ids == [first["id"], second["id"], first["id"], first["id"], first["id"]]
    assert [json.loads(seen.body)["app_id"] for seen in gate.upstream.seen] == ["A1", "A2", "A1", "A1", "A1"]
    assert all(seen.header("Authorization") == [] for seen in gate.upstream.seen)


@pytest.mark.parametrize(
    "slot",
    [
        b" " * 4,  # "Bearer AAAA    " reads as another key
        b"\r\nX:",  # a line break in the slot: a header of its own
        b",A,B",
        b'"A"B',
    ],
)
async def test_a_slot_holding_other_bytes_is_read_by_the_parser(
    start_gateway: Any, raw_upstream: RawUpstream, slot: bytes
) -> None:
    running = await start_gateway(upstream={"url": raw_upstream.url})
    created = await running.admin.create(account="acme", apps=["A1"])
    client = await RawClient.connect(running.gateway.proxy.port)
    await client.send(shaped(created["key"], b"A1"))
    assert (await client.read_responses(1))[0].status == 200
    (connection,) = running.gateway.proxy.connections
    assert connection.shapes.shape is not None
    forged = shaped(created["key"], b"A1").replace(created["key"].encode(), created["key"][:-4].encode() + slot)
    assert len(forged) == len(shaped(created["key"], b"A1"))
    await client.send(forged)
    answers = await client.read_responses(2)
    assert len(answers) == 2 and answers[1].status in (400, 401)
    assert connection.shapes.misses == 2  # it went to the parser
    assert len(raw_upstream.seen) == 1  # nothing of it was forwarded
    await client.close()


async def test_two_requests_of_one_shape_in_one_read_are_both_answered_in_order(gate: Gate) -> None:
    first = await gate.admin.create(account="acme", apps=["A1"])
    second = await gate.admin.create(account="acme", apps=["A2"])
    client = await RawClient.connect(gate.port)
    await client.send(shaped(first["key"], b"A1"))
    await client.read_responses(1)
    await client.send(shaped(second["key"], b"A2") + shaped(first["key"], b"A1"))
    answers = await client.read_responses(3)
    assert [a.status for a in answers] == [200, 200, 200]
    ids = [seen.header("X-Gateway-Key-Id")[0].decode() for seen in gate.upstream.seen]
    assert ids == [first["id"], second["id"], first["id"]]
    await client.close()


@pytest.mark.parametrize(
    ("target", "headers", "body", "expected"),
    [
        (V5_LIST + b"?app_id=A2", [], b'{"app_id": "A1"}', 400),  # body A1, query A2
        (V5_LIST + b"?app%5Fid=A2", [], b'{"app_id": "A1"}', 400),
        (V5_LIST + b"?APP_ID=A2", [], b'{"app_id": "A1"}', 400),  # names matched without case, as ASP.NET does
        (V5_LIST, [(b"App-Id", b"A2")], b'{"app_id": "A1"}', 400),
        (V5_LIST, [(b"App_Id", b"A2")], b'{"app_id": "A1"}', 400),
        (V5_LIST + b"?app_id=A1", [(b"App-Id", b"A1")], b'{"app_id": "A1"}', 200),  # the same app: fine
        (b"/api/v1/app/A1/entry/E/data?app_id=A2", [], b"{}", 400),  # path A1, query A2
        (b"/api/v1/app/A1/entry/E/data", [(b"App-Id", b"A2")], b"{}", 400),
        (b"/api/v1/app/A1/entry/E/data?app_id=A1", [], b"{}", 200),
        (b"/q/1?app_id=A1", [(b"App-Id", b"A2")], None, 400),  # query A1, header A2
        (b"/h/1?x-app-id=A2", [(b"X-App-Id", b"A1")], None, 400),  # header A1, query A2
    ],
)
async def test_an_app_id_in_a_second_place_must_agree(
    gate: Gate, target: bytes, headers: list, body: bytes | None, expected: int
) -> None:
    """A backend that reads request parameters would act on the app in the second place."""
    key = await gate.key(apps=["A1"], interfaces=["data", "crm"])
    json_type = [(b"Content-Type", b"application/json")] if body is not None else []
    method = b"POST" if body is not None else b"GET"
    (answer,), _ = await gate.exchange(request(method, target, key, json_type + headers, body))
    assert answer.status == expected
    if expected == 400:
        assert reason(answer) == "ambiguous_request" and gate.upstream.seen == []

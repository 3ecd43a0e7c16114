"""Every admin route, walked with hostile input over a real socket (DESIGN §4 and §7.1).

The routes come from the admin app's own router (`build_admin_app`: ROUTE_TABLE and the
console), so a new route is walked without anyone adding it here. Each one gets undecodable
and absurd `Authorization` headers, bodies in every `Content-Encoding` (and in none that
decodes), bad UTF-8, deep nesting, huge and non-finite numbers, absurd times, bad query
strings, path ids and methods. Every answer must be a 2xx (the input was valid after all) or a
4xx carrying §4's error shape; never a 500.

The requests go over a raw socket, byte for byte, to an in-process gateway on a real SQLite
file: no client library tidies the input up first.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.admin.api import OPEN_PATHS, ROUTE_TABLE, build_admin_app
from gateway.runtime.gateway import Gateway
from tests.conftest import make_config
from tests.rawhttp import RawClient

# What each status may carry (§4; 405 and 413 are the admin port's own, same shape).
CODES = {
    400: {"invalid_json"},
    401: {"unauthorized"},
    403: {"forbidden"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"key_limit_reached"},
    413: {"body_too_large"},
    422: {"invalid_field", "ipv6_not_supported", "too_many_ips", "immutable_field"},
}
MAX_BODY = 64 * 1024


def served_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the admin app serves, taken from the app itself:
    ROUTE_TABLE, the console and anything added beside them. HEAD rides along with GET."""
    app = build_admin_app(None, None, "token", MAX_BODY, None)  # type: ignore[arg-type]
    routes = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}
    # The route of every other path and method ("*"), walked as a GET of a path nobody serves.
    return sorted(("GET", path) if method == "*" else (method, path) for method, path in routes if method != "HEAD")


ROUTES = served_routes()
EXPIRY_ROUTES = {("POST", "/api/v1/keys"), ("PATCH", "/api/v1/keys/{id}")}


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/console/")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    """A running gateway, its root token, and a key and a token to aim the `{id}` routes at."""

    gateway: Gateway
    token: str
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.gateway.admin_port

    async def send(self, data: bytes, head_only: bool = False) -> Answer:
        client = await RawClient.connect(self.port)
        try:
            await client.send(data)
            wanted = 1
            while True:
                responses = await client.read_responses(wanted, timeout=30, head_only=head_only)
                if len(responses) < wanted or responses[-1].status >= 200 or client.closed:
                    break
                wanted += 1  # an interim answer (100 Continue): the real one follows
        finally:
            await client.close()
        assert responses, f"no answer at all to {data[:200]!r}"
        response = responses[-1]
        return Answer(response.status, response.headers, bytes(response.body))

    async def call(self, method: str, path: str, body: Any = None) -> Answer:
        raw = None if body is None else json.dumps(body).encode()
        auth = [(b"Authorization", b"Bearer " + self.token.encode())]
        return await self.send(request(method, path.encode(), auth, raw))

    async def refresh(self) -> None:
        """A fresh key and token for the `{id}` routes (after a walk deleted them)."""
        key = await self.call("POST", "/api/v1/keys", {"name": "walked"})
        assert key.status == 201, key
        token = await self.call("POST", "/api/v1/tokens", {"name": "walked", "permissions": ["keys:read"]})
        assert token.status == 201, token
        self.ids = {"key": json.loads(key.body)["id"], "token": json.loads(token.body)["id"]}

    def path(self, template: str, ident: str | None = None) -> str:
        """The route's path with its `{...}` part filled: a real key id, token id or console
        file, or `ident`."""
        if template.startswith("/console/"):
            own = "app.js"
        elif template == "/{tail}":
            own = "api/v1/nothing-here"
        else:
            own = self.ids["token"] if template.startswith("/api/v1/tokens/") else self.ids["key"]
        return re.sub(r"\{[^}]+\}", ident if ident is not None else own, template)


def request(method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: admin", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    config = make_config(tmp_path, f"sqlite:///{tmp_path}/hostile.db", admin={"max_body": MAX_BODY})
    gateway = Gateway(config)
    await gateway.start()
    try:
        running = Target(gateway, gateway.token)
        await running.refresh()
        yield running
    finally:
        await gateway.stop()


def shape_problems(answer: Answer, head: bool = False, static: bool = False) -> list[str]:
    """What is wrong with an answer: a 5xx, or a 4xx that is not §4's JSON error. The console's
    files are files, not the API: a Range past their end is the usual empty 416."""
    if answer.status >= 500 or answer.status < 200:
        return [f"status {answer.status}"]
    if answer.status < 400 or head or (static and answer.status == 416):
        return []
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return [f"{answer.status} with Content-Type {answer.headers.get('content-type')!r}"]
    try:
        body = json.loads(answer.body)
    except ValueError:
        return [f"{answer.status} with a body that is not JSON"]
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return [f"{answer.status} with a body not shaped {{'error': {{...}}}}"]
    error = body["error"]
    problems = []
    if not {"code", "message"} <= set(error) <= {"code", "message", "field"}:
        problems.append(f"error members {sorted(error)}")
    if error.get("code") not in CODES.get(answer.status, set()):
        problems.append(f"status {answer.status} with code {error.get('code')!r}")
    if not isinstance(error.get("message"), str) or not error["message"]:
        problems.append("no message")
    if "field" in error and not isinstance(error["field"], str):
        problems.append("field is not a string")
    return problems


def error_of(answer: Answer) -> tuple[int, str | None, str | None]:
    try:
        error = json.loads(answer.body)["error"]
    except (ValueError, KeyError, TypeError):
        return answer.status, None, None
    return answer.status, error.get("code"), error.get("field")


# hostile inputs
def bad_authorizations(token: bytes) -> Iterator[bytes]:
    """Values of `Authorization` that are never a valid token."""
    yield b"Bearer \xff\xfe"  # not UTF-8
    yield b"Bearer \xc3\x28"
    yield b"Bearer \x80"
    yield b"Bearer \xed\xa0\x80"  # a surrogate spelled in UTF-8
    yield b"Bearer \xf4\x90\x80\x80"  # past U+10FFFF
    yield b"\xff\xfe"
    yield b"\xff\xfe " + token
    yield b"Bearer " + token + b"\xff"
    yield b"Bearer \xff" + token
    yield b"Bearer " + token[:-1]
    yield b"Bearer " + token + b"x"
    yield b"Bearer " + token + b" " + token
    yield b"Bearer"
    yield b"Bearer "
    yield b"Bearer \t"
    yield b"Basic " + base64.b64encode(b"root:" + token)
    yield b"Token " + token
    yield b"Bearer Bearer " + token
    yield b"Bearer " + b"a" * 8000
    yield b"Bearer " + "\u00e9".encode() * 3000
    yield b"Bearer " + "\u2028".encode()
    yield b"Bearer %ff%fe"
    yield b"Bearer " + b"\xff" * 5000


def encoded_bodies() -> Iterator[tuple[str, bytes, bytes]]:
    """(label, Content-Encoding, body): codings that do not decode, or decode to junk."""
    valid = b'{"name": "encoded"}'
    zipped = gzip.compress(valid)
    yield "gzip garbage", b"gzip", b"this is not gzip"
    yield "gzip magic then garbage", b"gzip", b"\x1f\x8b\x08\x00garbage"
    yield "gzip cut short", b"gzip", zipped[:-5]
    yield "gzip then junk", b"gzip", zipped + b"junk"
    yield "gzip of bad UTF-8", b"gzip", gzip.compress(b'{"name": "\xff\xfe"}')
    yield "gzip of deep nesting", b"gzip", gzip.compress(b"[" * 200_000)
    yield "gzip bomb", b"gzip", gzip.compress(b"[" * (MAX_BODY * 40))
    yield "gzip of nothing", b"gzip", b""
    yield "x-gzip garbage", b"x-gzip", b"garbage"
    yield "deflate garbage", b"deflate", b"this is not deflate"
    yield "deflate bomb", b"deflate", zlib.compress(b" " * (MAX_BODY * 40))
    yield "br garbage", b"br", b"this is not brotli"
    yield "br of JSON", b"br", valid
    yield "zstd garbage", b"zstd", b"\x28\xb5\x2f\xfdgarbage"
    yield "compress", b"compress", b"garbage"
    yield "unknown coding", b"frobnicate", valid
    yield "a coding not UTF-8", b"\xff\xfe", valid
    yield "an empty coding list", b",", valid
    yield "two codings, one unknown", b"gzip, br", zipped
    yield "a thousand codings", b", ".join([b"gzip"] * 1000), zipped
    yield "identity of bad UTF-8", b"identity", b"\xff\xfe"
    yield "valid gzip", b"gzip", zipped
    yield "valid deflate", b"deflate", zlib.compress(valid)


ABSURD_TIMES: list[Any] = [
    "9999-12-31T23:59:59-23:59",  # year 10000 once in UTC
    "9999-12-31T23:59:60Z",  # a leap second past the last one there is
    "0001-01-01T00:00:00+23:59",
    "0000-01-01T00:00:00Z",
    "99999-01-01T00:00:00Z",
    "2099-W01-1T00:00Z",
    "2099-W53-7T00:00:00Z",
    "2099-001T00:00:00Z",
    "20990101T000000Z",
    "2099-01-01T00:00:00",
    "2099-01-01T00:00:00+99:99",
    "2099-01-01T00:00:00." + "9" * 5000 + "Z",
    "2099-02-30T00:00:00Z",
    "\u0662\u0660\u0669\u0669-01-01T00:00:00Z",
    "2099-01-01T00:00:00Z\x00",
    "\ud800",
    "",
    1e308,
    -1,
    10**400,
    True,
    [],
    {"$date": "2099-01-01T00:00:00Z"},
]


def hostile_bodies() -> Iterator[tuple[str, bytes]]:
    """(label, raw JSON-ish body) sent as they are."""
    yield "bad UTF-8", b"\xff\xfe"
    yield "bad UTF-8 in a string", b'{"name": "\xff"}'
    yield "a surrogate spelled in UTF-8", b'{"name": "\xed\xa0\x80"}'
    yield "an escaped lone surrogate as a name", b'{"name": "\\ud800"}'
    yield "an escaped lone surrogate as a member", b'{"\\ud800": 1}'
    yield "overlong UTF-8", b'{"name": "\xc0\xaf"}'
    yield "a BOM", b'\xef\xbb\xbf{"name": "x"}'
    yield "UTF-16", '{"name": "x"}'.encode("utf-16")
    yield "NUL", b'{"name": "x\x00"}'
    yield "deep arrays", b"[" * 100_000
    yield "deep arrays closed", b"[" * 100_000 + b"]" * 100_000
    yield "deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    yield "deep nesting in a field", b'{"apps": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    yield "a huge integer", b'{"grace_seconds": 1' + b"0" * 5000 + b"}"
    yield "a big integer", b'{"grace_seconds": 1' + b"0" * 400 + b"}"
    yield "infinity", b'{"grace_seconds": 1e999}'
    yield "minus infinity", b'{"grace_seconds": -1e999}'
    yield "NaN", b'{"grace_seconds": NaN}'
    yield "Infinity literal", b'{"grace_seconds": Infinity}'
    yield "minus zero", b'{"grace_seconds": -0.0}'
    yield "a fraction", b'{"grace_seconds": 0.5}'
    yield "a tiny float", b'{"grace_seconds": 1e-999}'
    yield "a string number", b'{"grace_seconds": "60"}'
    yield "rate limit infinity", b'{"rate_limits": [{"requests": 1e999, "per": "second"}]}'
    yield "rate limit NaN", b'{"rate_limits": [{"requests": NaN, "per": "day"}]}'
    yield "rate limit huge", b'{"rate_limits": [{"requests": 1' + b"0" * 400 + b', "per": "day"}]}'
    yield "rate limit odd window", b'{"rate_limits": [{"requests": 1, "per": 1e999}]}'
    yield "rate limits by the thousand", json.dumps({"rate_limits": [{"requests": 1, "per": "day"}] * 2000}).encode()
    yield "rate limit nested", b'{"rate_limits": [[{"requests": 1, "per": "day"}]]}'
    yield "whitelist absurd prefix", b'{"ip_whitelist": ["10.0.0.0/99999999999999999999999"]}'
    yield "whitelist negative prefix", b'{"ip_whitelist": ["10.0.0.0/-1"]}'
    yield "whitelist huge octet", b'{"ip_whitelist": ["99999999999999999999999.1.1.1"]}'
    yield "whitelist fullwidth", '{"ip_whitelist": ["\uff11.2.3.4"]}'.encode()
    yield "whitelist Arabic-Indic", '{"ip_whitelist": ["1.2.3.\u0664"]}'.encode()
    yield "whitelist NUL", b'{"ip_whitelist": ["1.2.3.4\\u0000"]}'
    yield "whitelist stars", b'{"ip_whitelist": ["*.*.*.*"]}'
    yield "whitelist by the ten thousand", json.dumps({"ip_whitelist": ["1.2.3.4"] * 10_000}).encode()
    yield "interfaces absurd", json.dumps({"interfaces": ["data." + "x" * 60_000]}).encode()
    yield "interfaces not strings", b'{"interfaces": [null, 1e999, [], {}]}'
    yield "apps not strings", b'{"apps": [{}]}'
    yield "name an object", b'{"name": {"$gt": ""}}'
    yield "name a huge number", b'{"name": 1e999}'
    yield "duplicate members", b'{"name": "a", "name": "b"}'
    yield "a long member name", b'{"' + b"x" * 60_000 + b'": 1}'
    yield "account absurd", b'{"account": 1e999}'
    yield "permissions nested", b'{"name": "t", "permissions": [["keys:read"]]}'
    yield "permissions objects", b'{"name": "t", "permissions": [{"keys:read": 1}]}'
    yield "permissions absurd", b'{"name": "t", "permissions": [1e999, NaN]}'
    yield "permissions a string", b'{"name": "t", "permissions": "keys:read"}'
    yield "token account absurd", b'{"name": "t", "account": [], "permissions": ["keys:read"]}'
    yield "null", b"null"
    yield "true", b"true"
    yield "a number", b"1e999"
    yield "a string", b'"\\ud800"'
    yield "empty", b""
    yield "whitespace", b" \r\n\t "
    yield "trailing data", b"{} {}"
    yield "over admin.max_body", b'{"name": "' + b"x" * (MAX_BODY + 10) + b'"}'
    for value in ABSURD_TIMES:
        yield f"expires_at {value!r:.40}", json.dumps({"expires_at": value}).encode()
    for slot in NESTING_SLOTS:
        for depth in (1, 900, 995, 5000):  # around the depth where json.loads gives up
            for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
                nested = opening * depth + (b"1" if opening != b"[" else b"") + closing * depth
                yield f"{depth} deep in {slot[:30]!r}", slot.replace(b"%s", nested)


# Where a nested value goes: every field of every body. (`rate_limits[0].per` is left to
# test_a_rate_limit_window_that_is_not_a_string below.)
NESTING_SLOTS = [
    b'{"name": %s}',
    b'{"account": %s}',
    b'{"apps": %s}',
    b'{"apps": [%s]}',
    b'{"interfaces": %s}',
    b'{"interfaces": [%s]}',
    b'{"ip_whitelist": %s}',
    b'{"ip_whitelist": [%s]}',
    b'{"enabled": %s}',
    b'{"expires_at": %s}',
    b'{"rate_limits": %s}',
    b'{"rate_limits": [%s]}',
    b'{"rate_limits": [{"requests": %s, "per": "day"}]}',
    b'{"grace_seconds": %s}',
    b'{"name": "t", "permissions": %s}',
    b'{"name": "t", "permissions": [%s]}',
    b'{"name": "t", "account": %s, "permissions": ["keys:read"]}',
    b"%s",  # the body itself
]


QUERIES = [
    "limit=1e999",
    "limit=99999999999999999999999999",
    "limit=-0",
    "limit=0x10",
    "limit=",
    "limit=%00",
    "limit=%ff",
    "limit=%EF%BC%91",  # fullwidth 1
    "limit=1&limit=600",
    "cursor=%ff%fe",
    "cursor=%00",
    "cursor=====",
    "cursor=" + "A" * 6000,
    "cursor=-1",
    "cursor=1e999",
    "cursor=99999999999999999999999999999",
    "key_id=%ff",
    "key_id=%00",
    "key_id=k_" + "0" * 26 + "%00",
    "account=%ff%fe",
    "account=%ED%A0%80",
    "account=" + "a" * 6000,
    "q=%ff%fe",
    "q=%00",
    "q=%ED%A0%80",
    "q=" + "%F0%9F%98%80" * 200,
    "status=%ff",
    "status=enabled&status=disabled",
    "from=9999-12-31T23:59:59-23:59&to=0000-01-01T00:00:00Z&step=%ff",
    "%=%",
    "&&&=&=",
    "a=%zz",
    "x=" + "%" * 3000,
]
IDS = [
    "k_00000000000000000000000000",
    "t_00000000000000000000000000",
    "%ff%fe",
    "%00",
    "%ED%A0%80",
    "%F0%9F%98%80",
    "x" * 3000,
    "%2e%2e",
    "%2F",
    "k_" + "z" * 26,
    "k_0000000000000000000000000%C3%A9",
]
OTHER_METHODS = ["PUT", "OPTIONS", "TRACE", "PROPFIND", "HEAD"]


async def walk(target: Target, method: str, template: str) -> list[str]:
    """Every hostile request to one route; returns what went wrong, one line each."""
    failures: list[str] = []
    token = target.token.encode()
    auth = [(b"Authorization", b"Bearer " + token)]

    async def check(label: str, method: str, raw_target: bytes, headers: list, body: bytes | None, expect=None):
        answer = await target.send(request(method, raw_target, headers, body), head_only=method == "HEAD")
        problems = shape_problems(answer, head=method == "HEAD", static=is_open(template) and template != "/healthz")
        if expect is not None and not problems:
            wanted = expect(answer)
            if wanted:
                problems.append(wanted)
        if problems:
            failures.append(
                f"{label}: {method} {raw_target[:80]!r} -> {answer.status} {answer.body[:160]!r}: {problems}"
            )
        if method == "DELETE" and answer.status == 204:
            await target.refresh()  # keep walking a key and a token that exist

    path = target.path(template).encode()
    body_or_none = None if method in ("GET", "DELETE") else b"{}"

    def unauthorized(answer: Answer) -> str | None:
        if is_open(template):
            return None
        return None if error_of(answer)[:2] == (401, "unauthorized") else "a bad token must be 401 unauthorized"

    for value in bad_authorizations(token):
        await check(
            f"Authorization {value[:20]!r}", method, path, [(b"Authorization", value)], body_or_none, unauthorized
        )
    await check("no Authorization", method, path, [], body_or_none, unauthorized)
    await check(
        "two Authorization headers, the first bad",
        method,
        path,
        [(b"Authorization", b"Bearer \xff"), (b"Authorization", b"Bearer " + token)],
        body_or_none,
    )

    for label, coding, raw in encoded_bodies():
        await check(label, method, path, [*auth, (b"Content-Encoding", coding)], raw)
        await check(label + ", no token", method, path, [(b"Content-Encoding", coding)], raw, unauthorized)

    def bad_expiry(answer: Answer) -> str | None:
        if error_of(answer) == (422, "invalid_field", "expires_at"):
            return None
        return "an absurd expires_at must be 422 invalid_field naming expires_at"

    for label, raw in hostile_bodies():
        expect = bad_expiry if label.startswith("expires_at") and (method, template) in EXPIRY_ROUTES else None
        await check(label, method, path, [*auth, (b"Content-Type", b"application/json")], raw, expect)

    for query in QUERIES:
        await check(f"query {query[:30]}", method, path + b"?" + query.encode(), auth, body_or_none)

    if "{" in template:
        for ident in IDS:
            await check(f"id {ident[:30]}", method, target.path(template, ident).encode(), auth, body_or_none)

    for other in OTHER_METHODS:
        if (other, template) not in ROUTES:
            await check(f"method {other}", other, path, auth, None)

    odd_headers = [
        (b"Content-Type", b"application/json; charset=\xff"),
        (b"Content-Type", b"\xff\xfe/\xff"),
        (b"Content-Type", b"multipart/form-data; boundary=x"),
        (b"Expect", b"100-continue"),
        (b"Expect", b"the-unexpected"),
        (b"Accept", b"text/html"),
        (b"Accept-Encoding", b"\xff, br;q=1e999"),
        (b"Origin", b"http://\xff"),
        (b"Cookie", b"\xff=\xfe"),
        (b"X-Forwarded-For", b"\xff"),
        (b"Range", b"bytes=99999999999999999999999-"),
        (b"If-Modified-Since", b"9999-12-31T23:59:59-23:59"),
        (b"If-None-Match", b"\xff"),
    ]
    for header in odd_headers:
        await check(f"header {header[0]!r}: {header[1][:20]!r}", method, path, [*auth, header], body_or_none)
    return failures


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_route_survives_hostile_input(target: Target, method: str, template: str) -> None:
    failures = await walk(target, method, template)
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures)
    status, _, _ = error_of(await target.call("GET", "/api/v1/keys"))
    assert status == 200  # and the gateway still answers


def test_the_walk_covers_every_route() -> None:
    table = {(method, path) for method, path, _, _ in ROUTE_TABLE}
    assert table <= set(ROUTES)
    assert {("GET", path) for path in OPEN_PATHS} <= set(ROUTES)
    assert ("GET", "/console/{name}") in ROUTES


# Requests that are not HTTP/1.1 at all: aiohttp's parser refuses them before any route (or
# the guard) runs, with its own plain-text 400; the admin app has no say in that answer.
MALFORMED = [
    ("a method llhttp does not know", b"FOO /api/v1/keys HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("NUL in a header value", b"GET /api/v1/keys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\x00b\r\n\r\n"),
    (
        "a header line over 8 KiB",
        b"GET /api/v1/keys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + b"a" * 9000 + b"\r\n\r\n",
    ),
    ("raw bytes in the path", b"GET /api/v1/keys/\xff HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("raw bytes in the query", b"GET /api/v1/keys?limit=\xff HTTP/1.1\r\nHost: a\r\n\r\n"),
    (
        "a bad chunk",
        b"POST /api/v1/keys HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ),
    ("Content-Length not a number", b"POST /api/v1/keys HTTP/1.1\r\nHost: a\r\nContent-Length: 1e999\r\n\r\n{}"),
    (
        "two framings",
        b"POST /api/v1/keys HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ),
]


@pytest.mark.parametrize(("label", "data"), MALFORMED, ids=[label for label, _ in MALFORMED])
async def test_malformed_http_is_a_4xx(target: Target, label: str, data: bytes) -> None:
    answer = await target.send(data)
    assert 400 <= answer.status < 500, (answer.status, answer.body[:200])
    assert (await target.call("GET", "/api/v1/keys")).status == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v1/nothing-here", 404, "not_found"),
        ("GET", "/console/", 404, "not_found"),
        ("PUT", "/api/v1/keys", 405, "method_not_allowed"),
        ("GET", "/api/v1/keys", 200, None),
    ],
)
async def test_an_unknown_expectation_is_no_plain_text_417(
    target: Target, method: str, path: str, status: int, code: str | None
) -> None:
    """aiohttp checks `Expect` before any middleware, even for a path with no route."""
    headers = [(b"Authorization", b"Bearer " + target.token.encode()), (b"Expect", b"the-unexpected")]
    answer = await target.send(request(method, path.encode(), headers, None))
    assert not shape_problems(answer), answer
    assert error_of(answer)[:2] == (status, code)


@pytest.mark.parametrize("per", [[], {}, [["day"]]])
async def test_a_rate_limit_window_that_is_not_a_string(target: Target, per: Any) -> None:
    for method, path in (("POST", "/api/v1/keys"), ("PATCH", target.path("/api/v1/keys/{id}"))):
        answer = await target.call(method, path, {"rate_limits": [{"requests": 1, "per": per}]})
        assert error_of(answer) == (422, "invalid_field", "rate_limits[0]"), answer

"""The admin API (aiohttp): key management over JSON, behind the admin token.

`ROUTE_TABLE` at the bottom is the whole surface: each route's method, path, handler, the
permission the guard checks, and what it reads and answers. The router, the guard and the
OpenAPI document (openapi.py) are all made from it, so they cannot drift apart.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web

from gateway.admin.service import KeyService
from gateway.core.errors import RuleError
from gateway.core.record import iso_time
from gateway.core.routes import RouteTable
from gateway.core.tokens import PERMISSIONS, ROOT, Principal
from gateway.store import STORE_ERRORS

log = logging.getLogger("gateway.admin")
STATUS_OF = {
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "key_limit_reached": 409,
    "read_only_store": 409,
    "body_too_large": 413,
    "store_unavailable": 503,
    # the field rules' codes (error_response sends any code not listed as 422 too)
    "invalid_field": 422,
    "ipv6_not_supported": 422,
    "too_many_ips": 422,
    "immutable_field": 422,
}
CONSOLE = Path(__file__).resolve().parent / "console"
CONSOLE_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")  # app.js, style.css, ...
# The console runs no inline script and loads nothing from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
SERVICE = web.AppKey("service", KeyService)
METRICS: web.AppKey[Callable[[], Awaitable[bytes]]] = web.AppKey("metrics")
DOCUMENT: web.AppKey[Mapping[str, Any] | None] = web.AppKey("document")
ROUTES = web.AppKey("routes", RouteTable)
TOKEN = web.AppKey("token", bytes)
MAX_BODY = web.AppKey("max_body", int)
PRINCIPAL = web.RequestKey("principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITES = frozenset({"keys:write", "tokens:manage"})  # refused as read_only_store by a DB-less store


def error_response(code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=STATUS_OF.get(code, 422))


def _presented(request: web.Request) -> str:
    """The bearer token, or "" when there is none. Header bytes that are not UTF-8 reach us as
    lone surrogates: no token is spelled that way, so such a value is no token at all."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return ""
    token = token.strip()
    try:
        token.encode()
    except UnicodeEncodeError:
        return ""
    return token


async def _principal(request: web.Request) -> Principal | None:
    """Who calls: the root token (constant-time comparison), or a stored token by its digest."""
    presented = _presented(request)
    if not presented:
        return None
    if hmac.compare_digest(presented.encode(), request.app[TOKEN]):
        return ROOT
    return await request.app[SERVICE].authenticate(presented)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that checks who may call what: the token, then the route's permission
    (the PERMISSIONS table); account scoping follows the principal into the service. Every
    failure becomes the contract's JSON error."""
    try:
        if request.path in OPEN_PATHS or request.path.startswith("/console/"):
            return await handler(request)
        principal = await _principal(request)
        if principal is None:
            return error_response("unauthorized", "a valid admin token is required (Authorization: Bearer ...)")
        route = request.match_info.route
        needed = ROUTE_PERMISSIONS.get((request.method, route.resource.canonical if route.resource else ""))
        if needed is not None:
            principal.require(needed)
            if needed == "metrics:read" and principal.account is not None:
                raise RuleError(None, "metrics cover every account: they need a token without an account", "forbidden")
            if needed in WRITES and request.method != "GET" and request.app[SERVICE].read_only:
                message = "the keys come from a file (DB-less mode, database: file:///...): change the file instead"
                raise RuleError(None, message, "read_only_store")
        request[PRINCIPAL] = principal
        return await handler(request)
    except RuleError as err:
        return error_response(err.code, err.message, err.field)
    except STORE_ERRORS as err:
        log.warning("key store error on %s %s: %s", request.method, request.path, err)
        return error_response("store_unavailable", "the key store is unavailable; try again")
    except web.HTTPRequestEntityTooLarge:
        return error_response("body_too_large", "the request body is too large")
    except web.HTTPMethodNotAllowed:
        return error_response("method_not_allowed", f"{request.method} is not allowed here")
    except web.HTTPNotFound:
        return error_response("not_found", f"no such path {request.path}")


# Content codings the admin API reads (aiohttp's own decoding is off: it answers a coding it
# cannot decode outside our error shape, and a bad gzip stream as a 500). At most a few, in the
# order applied, each inflated into at most admin.max_body bytes.
CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
MAX_CODINGS = 3


def _invalid_body(message: str) -> RuleError:
    return RuleError(None, message, "invalid_json")


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    """One coding undone, into at most `limit` bytes. gzip may hold several members; deflate
    is the zlib format, or (as some clients send it) raw deflate."""
    wbits = CODINGS[coding]
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error:
            if coding == "deflate" and wbits > 0 and not out:
                wbits = -zlib.MAX_WBITS
                continue
            raise _invalid_body(f"the body is not valid {coding} data") from None
        if len(out) > limit:
            raise RuleError(None, f"the request body is larger than {limit} bytes once decoded", "body_too_large")
        if not inflater.eof:
            raise _invalid_body(f"the {coding} data of the body ends too soon")
        data = inflater.unused_data
        if not data:
            return bytes(out)
        if wbits != CODINGS["gzip"]:
            raise _invalid_body(f"the body holds data after its {coding} stream")


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body with its `Content-Encoding` undone (codings listed in the order applied)."""
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if len(codings) > MAX_CODINGS:
        raise _invalid_body(f"the body has {len(codings)} content codings; at most {MAX_CODINGS} are read")
    for coding in reversed(codings):
        if coding not in CODINGS:
            shown = coding[:40].encode("ascii", "backslashreplace").decode()
            raise _invalid_body(f"Content-Encoding {shown} is not supported: send gzip, deflate or no coding")
        raw = _inflate(raw, coding, limit)
    return raw


async def read_body(request: web.Request) -> bytes:
    """The body as sent, its content codings undone; empty when none was sent."""
    raw = await request.read()
    coding = request.headers.get("Content-Encoding")
    if not raw or coding is None:
        return raw
    return decode_body(raw, coding, request.app[MAX_BODY])


async def read_json(request: web.Request, optional: bool = False) -> Any:
    """The JSON body; with `optional`, None when the body is empty."""
    raw = await read_body(request)
    if optional and not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RuleError(None, "the body is not valid JSON", "invalid_json") from None
    except RecursionError:
        raise RuleError(None, "the body is nested too deeply", "invalid_json") from None


def _key_response(key: Any, secret: str | None = None, status: int = 200) -> web.Response:
    body = key.to_json()
    if secret is not None:
        body["key"] = secret
    return web.json_response(body, status=status)


def _page(items: list[Any], cursor: str | None) -> web.Response:
    """One page of a listing: the items as JSON, and the cursor of the next page (or null)."""
    return web.json_response({"items": [item.to_json() for item in items], "next_cursor": cursor})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def create_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    key, secret = await request.app[SERVICE].create(body, request[PRINCIPAL])
    return _key_response(key, secret, status=201)


async def list_keys(request: web.Request) -> web.Response:
    query = request.query
    keys, cursor = await request.app[SERVICE].list_keys(
        query.get("account"),
        query.get("cursor"),
        query.get("limit"),
        request[PRINCIPAL],
        search=query.get("q"),
        status=query.get("status"),
    )
    return _page(keys, cursor)


async def get_key(request: web.Request) -> web.Response:
    return _key_response(await request.app[SERVICE].get(request.match_info["id"], request[PRINCIPAL]))


async def reveal_key(request: web.Request) -> web.Response:
    key_id = request.match_info["id"]
    secret = await request.app[SERVICE].reveal(key_id, request[PRINCIPAL])
    return web.json_response({"id": key_id, "key": secret}, headers={"Cache-Control": "no-store"})


async def update_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    return _key_response(await request.app[SERVICE].update(request.match_info["id"], body, request[PRINCIPAL]))


async def copy_key(request: web.Request) -> web.Response:
    key, secret = await request.app[SERVICE].copy(request.match_info["id"], request[PRINCIPAL])
    return _key_response(key, secret, status=201)


async def rotate_key(request: web.Request) -> web.Response:
    body = await read_json(request, optional=True)
    key, secret = await request.app[SERVICE].rotate(request.match_info["id"], body, request[PRINCIPAL])
    return _key_response(key, secret)


async def delete_key(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete(request.match_info["id"], request[PRINCIPAL])
    return web.Response(status=204)


async def audit(request: web.Request) -> web.Response:
    query = request.query
    entries, cursor = await request.app[SERVICE].audit(
        query.get("key_id"), query.get("cursor"), query.get("limit"), request[PRINCIPAL]
    )
    return _page(entries, cursor)


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request)
    token, secret = await request.app[SERVICE].create_token(body, request[PRINCIPAL])
    return web.json_response({**token.to_json(), "token": secret}, status=201, headers={"Cache-Control": "no-store"})


async def list_tokens(request: web.Request) -> web.Response:
    tokens = await request.app[SERVICE].list_tokens(request[PRINCIPAL])
    return web.json_response({"items": [token.to_json() for token in tokens]})


async def revoke_token(request: web.Request) -> web.Response:
    await request.app[SERVICE].revoke_token(request.match_info["id"], request[PRINCIPAL])
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    """Who this token is and what it may do: the console shows only what it can use."""
    principal = request[PRINCIPAL]
    permissions = [p for p in PERMISSIONS if principal.may(p)]
    return web.json_response({"actor": principal.id, "account": principal.account, "permissions": permissions})


async def openapi(request: web.Request) -> web.Response:
    """The document the runtime handed to build_admin_app (openapi.py, made from ROUTE_TABLE)."""
    described = request.app[DOCUMENT]
    if described is None:
        raise RuleError(None, "this admin app was built without its OpenAPI document", "not_found")
    return web.json_response(described)


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS]()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# What the proxy reports of its upstreams (proxy.shared.DataPath.upstream_status), set by the runtime.
UPSTREAMS: web.AppKey[Callable[[], list[dict[str, Any]]]] = web.AppKey("upstreams")


async def upstreams(request: web.Request) -> web.Response:
    """Every upstream and its targets: weight, health, ejection, load (this process's view)."""
    report = request.app.get(UPSTREAMS)
    items = report() if report is not None else []
    for item in items:
        for target in item["targets"]:
            until = target["ejected_until"]
            target["ejected_until"] = None if until is None else iso_time(until)
    return web.json_response({"items": items})


async def console_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(CONSOLE / "index.html")


async def console_file(request: web.Request) -> web.FileResponse:
    """A file of the console: a plain file (no link) directly in its folder, by a plain name.
    Anything else is the API's 404, before the file system is asked (a name too long for it
    would otherwise be a 500)."""
    name = request.match_info["name"]
    path = CONSOLE / name
    if not CONSOLE_FILE.fullmatch(name) or path.is_symlink() or not path.is_file():
        raise RuleError(None, f"no such path {request.path}", "not_found")
    return web.FileResponse(path)


async def settings(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    limits = service.limits
    return web.json_response(
        {
            "limits": {"keys_per_account": limits.keys_per_account, "ips_per_key": limits.ips_per_key},
            "accounts": await service.account_counts(request[PRINCIPAL]),
        }
    )


async def no_route(request: web.Request) -> web.Response:
    """Every path and method that no other route serves. Without this route aiohttp would
    answer them itself, and check `Expect` (a plain-text 417) before the guard runs."""
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not own and (await resource.resolve(request))[1]:
            raise RuleError(None, f"{request.method} is not allowed here", "method_not_allowed")
    raise RuleError(None, f"no such path {request.path}", "not_found")


async def favicon(request: web.Request) -> web.FileResponse:
    """Browsers ask for it on their own, without the token: answer, do not refuse."""
    return web.FileResponse(CONSOLE / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` gets its interim answer, so the client sends the body. Any other
    expectation is ignored (RFC 9110 §10.1.1 allows it) instead of answered with a plain-text
    417 that no client of this API expects."""
    expectation = request.headers.get("Expect", "").strip().lower()
    if expectation == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not the response's first byte


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


async def interfaces(request: web.Request) -> web.Response:
    table = request.app[ROUTES]
    categories = []
    for c in table.listed():
        ids = table.catalogue.get(c, [])
        named = {i: table.interface_names[i] for i in ids if i in table.interface_names}
        name = table.category_names[c]
        categories.append(
            {
                "id": c,
                "name": {"en": name.en, "zh": name.zh},
                "interfaces": list(ids),
                "interface_names": {i: {"en": n.en, "zh": n.zh} for i, n in named.items()},
            }
        )
    return web.json_response({"categories": categories})


def build_admin_app(
    service: KeyService,
    routes: RouteTable,
    token: str,
    max_body: int,
    render_metrics: Callable[[], Awaitable[bytes]],
    document: Mapping[str, Any] | None = None,
) -> web.Application:
    """`document`: the OpenAPI document served at /api/v1/openapi.json. It is handed in,
    because openapi.py reads ROUTE_TABLE and so cannot be imported from here."""
    # Bodies are decoded by read_body, not by aiohttp (see CODINGS).
    app = web.Application(middlewares=[guard], client_max_size=max_body, handler_args={"auto_decompress": False})
    app[SERVICE] = service
    app[METRICS] = render_metrics
    app[ROUTES] = routes
    app[TOKEN] = token.encode()
    app[MAX_BODY] = max_body
    app[DOCUMENT] = document
    for method, path, handler, _ in ROUTE_TABLE:
        app.router.add_route(method, path, handler, expect_handler=expect_continue)
    for method, path, handler in CONSOLE_ROUTES:
        app.router.add_route(method, path, handler, expect_handler=expect_continue)
    app.router.add_route("*", "/{tail:.*}", no_route, expect_handler=expect_continue)  # last
    app.on_response_prepare.append(security_headers)
    return app


@dataclass(frozen=True, slots=True)
class Operation:
    """What a route needs and answers: the guard reads `permission`, openapi.py the rest.

    `answers` maps each status the route itself produces to a schema of openapi.py (None: no
    body). The errors that follow from the route's shape are added by openapi.py: 401 and 503
    (the token is checked), 403 (a permission), 404 (an `{id}`), 400, 413 and 422 (a body),
    422 (query parameters).
    """

    permission: str | None  # None: any valid token
    summary: str
    answers: Mapping[int, str | None]
    request: str | None = None  # the body's schema; None: the route reads no body
    body_required: bool = True
    query: tuple[str, ...] = ()  # query parameters, by name (openapi.QUERY)
    open: bool = False  # answers without a token


class Route(NamedTuple):
    method: str
    path: str
    handler: Handler
    about: Operation


def route(
    method: str,
    path: str,
    handler: Handler,
    permission: str | None,
    summary: str,
    answers: Mapping[int, str | None],
    *,
    request: str | None = None,
    body_required: bool = True,
    query: tuple[str, ...] = (),
    open: bool = False,
) -> Route:
    return Route(method, path, handler, Operation(permission, summary, answers, request, body_required, query, open))


KEY_QUERY = ("account", "limit", "cursor", "q", "status")
# Every admin route: the one description of the admin surface.
ROUTE_TABLE: tuple[Route, ...] = (
    route("GET", "/healthz", healthz, None, "Liveness; needs no token", {200: "Health"}, open=True),
    route(
        "POST",
        "/api/v1/keys",
        create_key,
        "keys:write",
        "Create a key; its secret is in this answer only",
        {201: "KeyWithSecret", 409: "Error"},
        request="KeyCreate",
    ),
    route("GET", "/api/v1/keys", list_keys, "keys:read", "List keys, oldest first", {200: "KeyPage"}, query=KEY_QUERY),
    route("GET", "/api/v1/keys/{id}", get_key, "keys:read", "Show a key", {200: "Key"}),
    route(
        "PATCH",
        "/api/v1/keys/{id}",
        update_key,
        "keys:write",
        "Change a key; the very next request sees it",
        {200: "Key"},
        request="KeyChanges",
    ),
    route("DELETE", "/api/v1/keys/{id}", delete_key, "keys:write", "Delete a key; refused at once", {204: None}),
    route(
        "GET", "/api/v1/keys/{id}/secret", reveal_key, "keys:reveal", "Reveal a key's secret (audited)", {200: "Secret"}
    ),
    route(
        "POST",
        "/api/v1/keys/{id}/copy",
        copy_key,
        "keys:write",
        "Copy a key: the same fields, a new secret",
        {201: "KeyWithSecret", 409: "Error"},
    ),
    route(
        "POST",
        "/api/v1/keys/{id}/rotate",
        rotate_key,
        "keys:write",
        "A new secret; the previous one keeps working for grace_seconds (audited)",
        {200: "KeyWithSecret"},
        request="Rotation",
        body_required=False,
    ),
    route("GET", "/api/v1/interfaces", interfaces, "keys:read", "The interface catalogue", {200: "Interfaces"}),
    route("GET", "/api/v1/settings", settings, "keys:read", "The limits, and the keys per account", {200: "Settings"}),
    route(
        "GET",
        "/api/v1/audit",
        audit,
        "audit:read",
        "The audit trail of admin writes and reveals, oldest first",
        {200: "AuditPage"},
        query=("key_id", "limit", "cursor"),
    ),
    route(
        "POST",
        "/api/v1/tokens",
        create_token,
        "tokens:manage",
        "Create an admin token; its secret is in this answer only",
        {201: "TokenWithSecret"},
        request="TokenRequest",
    ),
    route("GET", "/api/v1/tokens", list_tokens, "tokens:manage", "The tokens this token manages", {200: "TokenList"}),
    route("DELETE", "/api/v1/tokens/{id}", revoke_token, "tokens:manage", "Revoke an admin token", {204: None}),
    route("GET", "/api/v1/me", me, None, "The calling token: its id, account and permissions", {200: "Me"}),
    route("GET", "/api/v1/openapi.json", openapi, None, "This document", {200: "Document"}),
    route("GET", "/metrics", metrics, "metrics:read", "Prometheus metrics of every worker", {200: "Metrics"}),
    route(
        "GET",
        "/api/v1/upstreams",
        upstreams,
        "metrics:read",
        "Every upstream's targets: weight, healthy, ejected_until, active_requests, failures",
        {200: None},
    ),
)
ROUTE_PERMISSIONS = {(method, path): about.permission for method, path, _, about in ROUTE_TABLE}
# The console: static files, no token, not part of the API (nor of its document).
CONSOLE_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/", console_index),
    ("GET", "/favicon.ico", favicon),
    ("GET", "/console/{name}", console_file),
)
# Answered without a token: the open routes and the console (every file under /console/ too).
OPEN_PATHS = frozenset(
    [path for _, path, _, about in ROUTE_TABLE if about.open]
    + [path for _, path, _ in CONSOLE_ROUTES if "{" not in path]
)

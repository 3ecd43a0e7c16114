"""The admin API (aiohttp): key management over JSON, behind the admin token."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.admin.openapi import document
from gateway.admin.service import KeyService
from gateway.core.errors import RuleError
from gateway.core.record import CATEGORIES
from gateway.core.routes import RouteTable
from gateway.store import STORE_ERRORS

log = logging.getLogger("gateway.admin")
STATUS_OF = {
    "invalid_json": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "key_limit_reached": 409,
    "body_too_large": 413,
    "store_unavailable": 503,
}
OPEN_PATHS = frozenset({"/healthz", "/"})  # and the console's static files under /console/
CONSOLE = Path(__file__).resolve().parent / "console"
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
METRICS = web.AppKey("metrics", Callable[[], Awaitable[bytes]])
ROUTES = web.AppKey("routes", RouteTable)
TOKEN = web.AppKey("token", bytes)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(code: str, message: str, field: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=STATUS_OF.get(code, 422))


def _authorized(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), request.app[TOKEN])


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token check first, then every failure becomes the contract's JSON error."""
    if request.path not in OPEN_PATHS and not request.path.startswith("/console/") and not _authorized(request):
        return error_response("unauthorized", "a valid admin token is required (Authorization: Bearer ...)")
    try:
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


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
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


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def create_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    key, secret = await request.app[SERVICE].create(body)
    return _key_response(key, secret, status=201)


async def list_keys(request: web.Request) -> web.Response:
    query = request.query
    keys, cursor = await request.app[SERVICE].list(query.get("account"), query.get("cursor"), query.get("limit"))
    return web.json_response({"items": [key.to_json() for key in keys], "next_cursor": cursor})


async def get_key(request: web.Request) -> web.Response:
    return _key_response(await request.app[SERVICE].get(request.match_info["id"]))


async def reveal_key(request: web.Request) -> web.Response:
    key_id = request.match_info["id"]
    secret = await request.app[SERVICE].reveal(key_id)
    return web.json_response({"id": key_id, "key": secret}, headers={"Cache-Control": "no-store"})


async def update_key(request: web.Request) -> web.Response:
    body = await read_json(request)
    return _key_response(await request.app[SERVICE].update(request.match_info["id"], body))


async def copy_key(request: web.Request) -> web.Response:
    key, secret = await request.app[SERVICE].copy(request.match_info["id"])
    return _key_response(key, secret, status=201)


async def delete_key(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete(request.match_info["id"])
    return web.Response(status=204)


async def audit(request: web.Request) -> web.Response:
    query = request.query
    entries, cursor = await request.app[SERVICE].audit(query.get("key_id"), query.get("cursor"), query.get("limit"))
    return web.json_response({"items": [entry.to_json() for entry in entries], "next_cursor": cursor})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS]()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def console_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(CONSOLE / "index.html")


async def settings(request: web.Request) -> web.Response:
    limits = request.app[SERVICE].limits
    return web.json_response(
        {"limits": {"keys_per_account": limits.keys_per_account, "ips_per_key": limits.ips_per_key}}
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


async def interfaces(request: web.Request) -> web.Response:
    catalogue = request.app[ROUTES].catalogue
    categories = [{"id": c, "interfaces": list(catalogue.get(c, []))} for c in CATEGORIES]
    return web.json_response({"categories": categories})


def build_admin_app(
    service: KeyService,
    routes: RouteTable,
    token: str,
    max_body: int,
    render_metrics: Callable[[], Awaitable[bytes]],
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=max_body)
    app[SERVICE] = service
    app[METRICS] = render_metrics
    app[ROUTES] = routes
    app[TOKEN] = token.encode()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/keys", create_key)
    app.router.add_get("/api/v1/keys", list_keys)
    app.router.add_get("/api/v1/keys/{id}", get_key)
    app.router.add_patch("/api/v1/keys/{id}", update_key)
    app.router.add_delete("/api/v1/keys/{id}", delete_key)
    app.router.add_get("/api/v1/keys/{id}/secret", reveal_key)
    app.router.add_post("/api/v1/keys/{id}/copy", copy_key)
    app.router.add_get("/api/v1/interfaces", interfaces)
    app.router.add_get("/api/v1/audit", audit)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/settings", settings)
    app.router.add_get("/", console_index)
    app.router.add_static("/console/", CONSOLE, show_index=False, follow_symlinks=False)
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/metrics", metrics)
    return app

"""Forward authorization: the proxies people already run ask the gateway "may this pass?".

The `forward_auth` port decides every request like the proxy port and never forwards it:
200 with the key's identity and RateLimit headers, or the refusal of the proxy port. Tried
as Envoy's ext_authz sends it (the original request itself), as Traefik's ForwardAuth and
nginx's auth_request send it (a check naming the request in headers, believed only from
`forward_auth.trusted`), and through a real nginx with `auth_request` in front of a real
upstream.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_for_port
from tests.rawhttp import RawClient, Response
from tests.rawupstream import RawUpstream

WORKFLOW = b"/api/v5/workflow/task/approve"
DELETE = b"/api/v5/app/entry/data/delete"


@pytest.fixture
async def checks(start_gateway: Any, raw_upstream: RawUpstream) -> Any:
    running = await start_gateway(
        upstream={"url": raw_upstream.url},
        forward_auth={"listen": {"host": "127.0.0.1", "port": 0}, "trusted": ["127.0.0.1/32"]},
    )
    return running


def check(method: bytes, target: bytes, key: str | None = None, headers: list[tuple[bytes, bytes]] = ()) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: auth"]
    if key is not None:
        lines.append(b"Authorization: Bearer " + key.encode())
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def ask(port: int, data: bytes, source: str = "127.0.0.1") -> Response:
    client = await RawClient.connect(port, source)
    try:
        await client.send(data)
        (answer,) = await client.read_responses(1, timeout=5.0)
        return answer
    finally:
        await client.close()


def reason(answer: Response) -> str:
    return json.loads(bytes(answer.body))["reason"]


def header(answer: Response, name: str) -> list[str]:
    return [value for key, value in answer.raw_headers if key == name.lower()]


async def test_an_allowed_request_is_200_with_identity_and_nothing_is_forwarded(
    checks: Any, raw_upstream: RawUpstream
) -> None:
    port = checks.gateway.checks.port
    created = await checks.admin.create(
        account="acme", interfaces=["workflow"], rate_limits=[{"requests": 5, "per": "minute"}]
    )
    answer = await ask(port, check(b"POST", WORKFLOW, created["key"]))
    assert answer.status == 200 and bytes(answer.body) == b""
    assert header(answer, "X-Gateway-Key-Id") == [created["id"]]
    assert header(answer, "X-Gateway-Account") == ["acme"]
    assert header(answer, "RateLimit-Limit") == ["5"] and header(answer, "RateLimit-Remaining") == ["4"]
    assert raw_upstream.seen == []


@pytest.mark.parametrize(
    ("target", "key_fields", "expected"),
    [
        (WORKFLOW, None, (401, "missing_key")),
        (DELETE, {"interfaces": ["workflow"]}, (403, "interface_not_allowed")),
        (WORKFLOW, {"enabled": False}, (403, "key_disabled")),
        (b"/not/an/api", {}, (404, "unknown_interface")),
        (b"/api/v5/app/..;/corp/x", {}, (400, "ambiguous_request")),
    ],
)
async def test_a_refusal_is_the_proxy_ports_refusal(
    checks: Any, raw_upstream: RawUpstream, target: bytes, key_fields: dict | None, expected: tuple[int, str]
) -> None:
    key = (await checks.admin.create(**key_fields))["key"] if key_fields is not None else None
    answer = await ask(checks.gateway.checks.port, check(b"POST", target, key))
    assert (answer.status, reason(answer)) == expected
    assert raw_upstream.seen == []


@pytest.mark.parametrize(
    "names",
    [(b"X-Forwarded-Method", b"X-Forwarded-Uri"), (b"X-Original-Method", b"X-Original-URI")],
    ids=["traefik", "nginx"],
)
async def test_a_trusted_proxy_names_the_request_in_headers(checks: Any, names: tuple[bytes, bytes]) -> None:
    port = checks.gateway.checks.port
    key = (await checks.admin.create(interfaces=["workflow"]))["key"]
    method, uri = names
    asked = check(b"GET", b"/auth", key, [(method, b"POST"), (uri, WORKFLOW + b"?x=1")])
    assert (await ask(port, asked)).status == 200
    refused = check(b"GET", b"/auth", key, [(method, b"POST"), (uri, DELETE)])
    assert reason(await ask(port, refused)) == "interface_not_allowed"
    # from a peer outside forward_auth.trusted the headers are not believed: /auth itself is decided
    assert reason(await ask(port, asked, source="127.0.0.2")) == "unknown_interface"
    # half a pair, two pairs that disagree, a dot segment in the named target: ambiguous
    for headers in (
        [(method, b"POST")],
        [
            (method, b"POST"),
            (uri, WORKFLOW),
            (b"X-Original-Method" if method != b"X-Original-Method" else b"X-Forwarded-Method", b"GET"),
            (b"X-Original-URI" if uri != b"X-Original-URI" else b"X-Forwarded-Uri", DELETE),
        ],
        [(method, b"POST"), (uri, b"/api/v5/workflow/../app/entry/data/delete")],
        [(method, b"CONNECT"), (uri, WORKFLOW)],
    ):
        assert reason(await ask(port, check(b"GET", b"/auth", key, headers))) == "ambiguous_request"


async def test_the_client_ip_comes_from_the_trusted_proxys_forwarded_for(checks: Any) -> None:
    port = checks.gateway.checks.port
    key = (await checks.admin.create(interfaces=["workflow"], ip_whitelist=["10.1.1.1"]))["key"]
    via = [(b"X-Original-Method", b"POST"), (b"X-Original-URI", WORKFLOW)]
    assert (await ask(port, check(b"GET", b"/auth", key, [*via, (b"X-Forwarded-For", b"10.1.1.1")]))).status == 200
    refused = await ask(port, check(b"GET", b"/auth", key, [*via, (b"X-Forwarded-For", b"10.9.9.9")]))
    assert reason(refused) == "ip_not_allowed"
    spoofed = await ask(port, check(b"POST", WORKFLOW, key, [(b"X-Forwarded-For", b"10.1.1.1")]), source="127.0.0.2")
    assert reason(spoofed) == "ip_not_allowed"  # an untrusted peer's X-Forwarded-For is not read


async def test_a_body_route_needs_the_body_when_the_key_lists_apps(checks: Any) -> None:
    port = checks.gateway.checks.port
    key = (await checks.admin.create(apps=["A1"], interfaces=["data"]))["key"]
    list_v5 = b"/api/v5/app/entry/data/list"
    nginx_like = [(b"X-Original-Method", b"POST"), (b"X-Original-URI", list_v5)]
    assert reason(await ask(port, check(b"GET", b"/auth", key, nginx_like))) == "app_not_allowed"
    body = b'{"app_id": "A1"}'
    envoy_like = check(b"POST", list_v5, key, [(b"Content-Type", b"application/json"), (b"Content-Length", b"16")])
    assert (await ask(port, envoy_like + body)).status == 200
    other = envoy_like + b'{"app_id": "A2"}'
    assert reason(await ask(port, other)) == "app_not_allowed"


async def test_rate_limits_and_usage_count_as_on_the_proxy_port(checks: Any) -> None:
    created = await checks.admin.create(interfaces=["workflow"], rate_limits=[{"requests": 2, "per": "minute"}])
    key = created["key"]
    assert (await ask(checks.gateway.checks.port, check(b"POST", WORKFLOW, key))).status == 200
    assert (await ask(checks.gateway.proxy.port, check(b"POST", WORKFLOW, key))).status == 200
    third = await ask(checks.gateway.checks.port, check(b"POST", WORKFLOW, key))
    assert (third.status, reason(third)) == (429, "key_rate_limited") and header(third, "Retry-After")
    status, shown = await checks.admin.call("GET", f"/api/v1/keys/{created['id']}")
    assert status == 200 and shown["last_used_at"] is not None


# A real nginx with auth_request in front of the raw upstream.
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_gateway_check;
      auth_request_set $gateway_key $upstream_http_x_gateway_key_id;
      auth_request_set $gateway_account $upstream_http_x_gateway_account;
      proxy_set_header X-Gateway-Key-Id $gateway_key;
      proxy_set_header X-Gateway-Account $gateway_account;
      proxy_pass http://127.0.0.1:{upstream};
    }}
    location = /_gateway_check {{
      internal;
      proxy_pass http://127.0.0.1:{checks};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
    }}
  }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    processes: list[subprocess.Popen] = []

    def start(upstream: int, checks: int) -> int:
        port, work = free_port(), tmp_path / "nginx"
        work.mkdir()
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, port=port, upstream=upstream, checks=checks))
        processes.append(subprocess.Popen([binary, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL))
        wait_for_port(port)
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


async def test_through_a_real_nginx_with_auth_request(checks: Any, raw_upstream: RawUpstream, nginx: Any) -> None:
    port = await asyncio.to_thread(nginx, raw_upstream.port, checks.gateway.checks.port)
    created = await checks.admin.create(account="acme", interfaces=["workflow"])
    key = created["key"]
    allowed = await ask(port, check(b"POST", WORKFLOW, key, [(b"Content-Length", b"0")]))
    assert allowed.status == 200 and bytes(allowed.body) == b'{"upstream": "raw"}'
    (seen,) = raw_upstream.seen
    assert seen.url == WORKFLOW and seen.header("X-Gateway-Key-Id") == [created["id"].encode()]
    assert seen.header("X-Gateway-Account") == [b"acme"]
    assert (await ask(port, check(b"POST", DELETE, key, [(b"Content-Length", b"0")]))).status == 403
    assert (await ask(port, check(b"POST", WORKFLOW, None, [(b"Content-Length", b"0")]))).status == 401
    started = time.monotonic()
    assert (await ask(port, check(b"POST", WORKFLOW, "x" * 40, [(b"Content-Length", b"0")]))).status == 401
    assert time.monotonic() - started < 2.0
    assert len(raw_upstream.seen) == 1  # refused requests never reached the upstream

"""Day two: metrics, access log, audit trail, TLS, graceful shutdown, crash safety."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.certs import make_cert
from tests.conftest import Proxy

WORKFLOW = "/api/v5/workflow/task/approve"


async def scrape(proxy: Proxy, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token or proxy.admin.token}"}
    async with proxy.admin.session.get(proxy.admin.url + "/metrics", headers=headers) as response:
        return response.status, await response.text()


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in metrics")


async def test_metrics(proxy: Proxy) -> None:
    key = await proxy.admin.create(account="acme", ip_whitelist=["127.0.0.1"])
    await proxy.admin.create(account="acme")
    for _ in range(3):
        assert (await proxy.json("POST", WORKFLOW, key=key["key"]))[0] == 200
    await proxy.json("POST", WORKFLOW)
    await proxy.json("POST", WORKFLOW, key=key["key"], source="127.0.0.2")
    status, _ = await scrape(proxy, token="wrong")
    assert status == 401
    status, text = await scrape(proxy)
    assert status == 200
    assert sample(text, "gateway_requests_total", reason="allowed", status="200") == 3
    assert sample(text, "gateway_requests_total", reason="missing_key", status="401") == 1
    assert sample(text, "gateway_requests_total", reason="ip_not_allowed", status="403") == 1
    assert sample(text, "gateway_upstream_latency_seconds_count") == 3
    assert sample(text, "gateway_keys", account="acme") == 2
    assert sample(text, "gateway_keyring_size", worker="0") == 2
    assert sample(text, "gateway_store_errors_total") == 0
    assert sample(text, "gateway_access_log_dropped_total") == 0
    assert "gateway_propagation_lag_seconds" in text


async def test_access_log_lines(proxy: Proxy) -> None:
    sink = io.BytesIO()
    proxy.running.gateway.access.stream = sink
    key = await proxy.admin.create(account="acme", apps=["A1"])
    await proxy.json("POST", "/api/v5/app/entry/data/list", key=key["key"], json={"app_id": "A1"}, source="127.0.0.7")
    await proxy.json("POST", "/api/v5/app/entry/data/list", key=key["key"], json={"app_id": "B"})
    await proxy.json("GET", "/nope", key="garbage")
    await asyncio.sleep(0.6)
    lines = [json.loads(line) for line in sink.getvalue().decode().splitlines()]
    assert len(lines) == 3
    allowed, refused, unknown = lines
    assert allowed["client_ip"] == "127.0.0.7" and allowed["key_id"] == key["id"] and allowed["account"] == "acme"
    assert allowed["interface"] == "data.list" and allowed["app"] == "A1"
    assert (allowed["reason"], allowed["status"]) == ("allowed", 200) and allowed["bytes"] > 0
    assert allowed["latency_ms"] >= 0 and allowed["time"].endswith("Z")
    assert (refused["reason"], refused["status"], refused["app"]) == ("app_not_allowed", 403, "B")
    assert (unknown["reason"], unknown["key_id"]) == ("invalid_key", None)
    assert key["key"] not in sink.getvalue().decode() and "garbage" not in sink.getvalue().decode()


async def test_access_log_can_be_turned_off(start_proxy) -> None:
    proxy: Proxy = await start_proxy(log={"access": False})
    sink = io.BytesIO()
    proxy.running.gateway.access.stream = sink
    key = await proxy.admin.create()
    await proxy.json("POST", WORKFLOW, key=key["key"])
    await asyncio.sleep(0.5)
    assert sink.getvalue() == b""


async def test_audit_trail(proxy: Proxy) -> None:
    admin = proxy.admin
    key = await admin.create(name="Orders", apps=["A1"])
    key_id = key["id"]
    await admin.call("PATCH", f"/api/v1/keys/{key_id}", {"name": "Orders v2", "apps": ["A1"]})
    await admin.call("PATCH", f"/api/v1/keys/{key_id}", {"name": "Orders v2"})  # no change: no entry
    await admin.call("PATCH", f"/api/v1/keys/{key_id}", {"bogus": 1})  # refused: no entry
    await admin.call("GET", f"/api/v1/keys/{key_id}/secret")
    _, copy = await admin.call("POST", f"/api/v1/keys/{key_id}/copy")
    await admin.call("DELETE", f"/api/v1/keys/{key_id}")
    status, page = await admin.call("GET", f"/api/v1/audit?key_id={key_id}")
    assert status == 200
    entries = page["items"]
    assert [e["action"] for e in entries] == ["create", "update", "reveal", "delete"]
    assert entries[0]["changes"]["name"] == {"before": None, "after": "Orders"}
    assert entries[1]["changes"] == {"name": {"before": "Orders", "after": "Orders v2"}}
    assert entries[3]["changes"]["apps"] == {"before": ["A1"], "after": None}
    status, page = await admin.call("GET", f"/api/v1/audit?key_id={copy['id']}")
    assert page["items"][0]["action"] == "copy"
    assert page["items"][0]["changes"]["copied_from"] == {"before": None, "after": key_id}
    everything = json.dumps((await admin.call("GET", "/api/v1/audit?limit=500"))[1])
    assert key["key"] not in everything and copy["key"] not in everything
    seen, cursor = [], None
    while True:
        _, page = await admin.call("GET", "/api/v1/audit?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen.extend(e["id"] for e in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(set(seen)) and len(seen) == 5
    status, body = await admin.call("GET", "/api/v1/audit?cursor=abc")
    assert status == 422 and body["error"]["field"] == "cursor"


async def test_tls_on_the_proxy_port(start_proxy, tmp_path: Path) -> None:
    cert, private_key = make_cert(tmp_path)
    proxy: Proxy = await start_proxy(listen={"tls": {"cert": str(cert), "key": str(private_key)}})
    key = await proxy.admin.create()
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://localhost:{proxy.port}{WORKFLOW}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, headers={"Authorization": f"Bearer {key['key']}"}, ssl=context) as response:
            assert response.status == 200
            seen = await response.json()
        assert ["X-Forwarded-Proto", "https"] in seen["headers"]
        async with session.post(url, ssl=context) as response:
            assert response.status == 401
    with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port is not answered as HTTP
        async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{proxy.port}{WORKFLOW}") as r:
            await r.read()


def _admin(url: str, token: str, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return response.status, json.loads(raw) if raw else None


def test_graceful_shutdown(spawn, upstream_process, tmp_path: Path) -> None:
    proc = spawn(f"upstream: {{url: '{upstream_process}'}}\n")
    port = int(proc.proxy_url.rsplit(":", 1)[1])
    _, key = _admin(proc.admin_url, proc.token, "POST", "/api/v1/keys", {})
    result: dict = {}

    def slow_call() -> None:
        request = urllib.request.Request(proc.proxy_url + WORKFLOW + "?sleep=2", data=b"", method="POST")
        request.add_header("Authorization", f"Bearer {key['key']}")
        with urllib.request.urlopen(request, timeout=20) as response:
            result["status"] = response.status
            result["body"] = response.read()

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.7)  # the request is at the upstream now
    proc.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    thread.join(20)
    assert result["status"] == 200 and json.loads(result["body"])["method"] == "POST"
    assert proc.process.wait(20) == 0
    # usage was flushed at shutdown: the key shows its use after a restart
    again = spawn()
    _, shown = _admin(again.admin_url, again.token, "GET", f"/api/v1/keys/{key['id']}")
    assert shown["request_count"] == 1 and shown["last_used_at"] is not None


def test_crash_mid_stream_loses_no_acknowledged_write(spawn, tmp_path: Path) -> None:
    proc = spawn()
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                status, key = _admin(proc.admin_url, proc.token, "POST", "/api/v1/keys", {"name": f"w{n}-{i}"})
                assert status == 201
                with lock:
                    acknowledged[key["id"]] = key["name"]
                status, key = _admin(
                    proc.admin_url, proc.token, "PATCH", f"/api/v1/keys/{key['id']}", {"name": f"r{n}-{i}"}
                )
                assert status == 200
                with lock:
                    acknowledged[key["id"]] = key["name"]
            except OSError:
                return  # the server died mid-call: that write was never acknowledged

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    os.kill(proc.process.pid, signal.SIGKILL)
    proc.process.wait()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) > 10
    integrity = (
        "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"
    )
    check = subprocess.run(
        [sys.executable, "-c", integrity, str(tmp_path / "data" / "gateway.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "ok"
    again = spawn()
    for key_id, name in acknowledged.items():
        status, shown = _admin(again.admin_url, again.token, "GET", f"/api/v1/keys/{key_id}")
        assert status == 200 and shown["name"] in (name, name.replace("w", "r", 1)), (key_id, name, shown["name"])

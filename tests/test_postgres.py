"""Several replicas on one PostgreSQL: changes everywhere at once, the limit, and outages."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import POSTGRES, Proxy, drop_schema, make_config
from tests.tcpproxy import TcpRelay

WORKFLOW = "/api/v5/workflow/task/approve"


@pytest.fixture
def schema_url():
    """A schema of the test's own. List it before start_gateway: pytest tears fixtures down in
    reverse order, and the schema must outlive the gateways using it."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield schema, f"{POSTGRES}?schema={schema}"
    drop_schema(schema)


async def replica(start_gateway, upstream, tmp_path: Path, url: str, name: str, **overrides) -> Proxy:
    directory = tmp_path / name
    directory.mkdir(exist_ok=True)
    config = make_config(directory, url, upstream={"url": upstream.url}, **overrides)
    running = await start_gateway(config)
    return Proxy(running, upstream, f"http://127.0.0.1:{running.gateway.proxy.port}", running.gateway.proxy.port)


async def wait_for_status(proxy: Proxy, key: str, wanted: int, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status, _ = await proxy.json("POST", WORKFLOW, key=key)
        if status == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise AssertionError(f"status {wanted} not seen within {timeout} s")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_changes_reach_the_other_replica_fast(schema_url, start_gateway, upstream, tmp_path) -> None:
    _, url = schema_url
    a = await replica(start_gateway, upstream, tmp_path, url, "a")
    b = await replica(start_gateway, upstream, tmp_path, url, "b")
    key = await a.admin.create()
    delays = [await wait_for_status(b, key["key"], 200)]
    for enabled, wanted in ((False, 403), (True, 200), (False, 403), (True, 200)):
        await a.admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"enabled": enabled})
        delays.append(await wait_for_status(b, key["key"], wanted))
    await a.admin.call("DELETE", f"/api/v1/keys/{key['id']}")
    delays.append(await wait_for_status(b, key["key"], 401))
    assert max(delays) < 0.25, delays
    # B serves the admin API over the same data
    status, shown = await b.admin.call("GET", "/api/v1/keys")
    assert status == 200 and shown["items"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_limit_holds_across_replicas(schema_url, start_gateway, upstream, tmp_path) -> None:
    _, url = schema_url
    a = await replica(start_gateway, upstream, tmp_path, url, "a", limits={"keys_per_account": 25})
    b = await replica(start_gateway, upstream, tmp_path, url, "b", limits={"keys_per_account": 25})
    calls = [r.admin.call("POST", "/api/v1/keys", {"account": "acme"}) for r in (a, b) for _ in range(30)]
    statuses = [status for status, _ in await asyncio.gather(*calls)]
    assert statuses.count(201) == 25 and statuses.count(409) == 35


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_outage_serves_from_memory_and_resyncs(schema_url, start_gateway, upstream, tmp_path, caplog) -> None:
    schema, url = schema_url
    server = urlsplit(POSTGRES)
    relay = TcpRelay(server.hostname or "127.0.0.1", server.port or 5432)
    await relay.start()
    relayed = url.replace(server.netloc.split("@")[-1], f"127.0.0.1:{relay.port}")
    try:
        a = await replica(start_gateway, upstream, tmp_path, relayed, "a")
        b = await replica(start_gateway, upstream, tmp_path, relayed, "b")
        revoked = await a.admin.create()
        kept = await a.admin.create()
        await wait_for_status(b, revoked["key"], 200)
        caplog.set_level(logging.INFO, logger="gateway")
        relay.cut()
        await asyncio.sleep(0.5)
        # requests keep being authorized from memory
        for proxy in (a, b):
            assert (await proxy.json("POST", WORKFLOW, key=revoked["key"]))[0] == 200
        # admin writes are refused with a clear 503
        status, body = await a.admin.call("PATCH", f"/api/v1/keys/{kept['id']}", {"name": "x"})
        assert status == 503 and body["error"]["code"] == "store_unavailable"
        # a write made elsewhere during the outage (straight into the database)
        conn = await asyncpg.connect(POSTGRES, server_settings={"search_path": schema})
        await conn.execute("UPDATE keys SET enabled = false WHERE id = $1", revoked["id"])
        await conn.close()
        for _ in range(20):  # many requests and polls during the outage ...
            await b.json("POST", WORKFLOW, key=kept["key"])
        await asyncio.sleep(1.5)
        relay.restore()
        for proxy in (a, b):  # ... and after reconnecting, everyone has the revocation
            await wait_for_status(proxy, revoked["key"], 403, timeout=10)
            assert (await proxy.json("POST", WORKFLOW, key=kept["key"]))[0] == 200
        status, _ = await a.admin.call("PATCH", f"/api/v1/keys/{kept['id']}", {"name": "after"})
        assert status == 200
        lost = [r for r in caplog.records if "lost PostgreSQL" in r.getMessage()]
        assert len(lost) == 2  # once per replica, not per request or per retry
        assert len([r for r in caplog.records if "is back" in r.getMessage()]) == 2
    finally:
        await relay.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_terminated_backends_are_replaced(schema_url, start_gateway, upstream, tmp_path) -> None:
    _, url = schema_url
    a = await replica(start_gateway, upstream, tmp_path, url, "a")
    b = await replica(start_gateway, upstream, tmp_path, url, "b")
    key = await a.admin.create()
    await wait_for_status(b, key["key"], 200)
    conn = await asyncpg.connect(POSTGRES)
    killed = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'gateway'"
    )
    await conn.close()
    assert killed >= 4  # each replica's pool and listener
    await asyncio.sleep(0.5)
    for _ in range(3):  # the pool replaces dead connections: at most one failed call each
        status, _ = await a.admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"enabled": False})
        if status == 200:
            break
    assert status == 200
    await wait_for_status(b, key["key"], 403, timeout=5)


def test_migrate_command(schema_url, tmp_path: Path) -> None:
    schema, url = schema_url
    (tmp_path / "config.yaml").write_text(f"database: '{url}'\n")
    command = [sys.executable, "-m", "gateway", "migrate", "--config", str(tmp_path / "config.yaml")]
    for _ in range(2):  # idempotent
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout

    async def version() -> int:
        conn = await asyncpg.connect(POSTGRES, server_settings={"search_path": schema})
        try:
            return await conn.fetchval("SELECT version FROM schema_version")
        finally:
            await conn.close()

    assert asyncio.run(version()) == 5  # one version number for every database (store/migrations.py)
    (tmp_path / "bad.yaml").write_text("database: 'postgresql://nobody@127.0.0.1:1/none'\n")
    result = subprocess.run([*command[:-1], str(tmp_path / "bad.yaml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("gateway: database: cannot connect")

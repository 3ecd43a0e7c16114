"""Keys as files (§7.4): `gateway keys export` and `keys apply` as real processes on real SQLite
files, and the keys they move checked through a real proxy."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SECRET, Proxy, make_config

WORKFLOW = "/api/v5/workflow/task/approve"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Export and apply are about files: one store (SQLite) is enough."""
    return f"sqlite:///{tmp_path}/a.db"


def cli(*args: str, cwd: Path, secret: str = SECRET) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_SECRET_KEY"] = secret
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def config_for(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"database: sqlite:///{tmp_path}/{name}.db\n")
    return str(path)


def rows(tmp_path: Path, name: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / f"{name}.db") as db:
        return db.execute("SELECT id, name, digest, sealed, ip_whitelist, enabled FROM keys ORDER BY id").fetchall()


async def proxy_on(start_gateway: Any, upstream: Any, tmp_path: Path, database: str, **overrides: Any) -> Proxy:
    running = await start_gateway(make_config(tmp_path, database, upstream={"url": upstream.url}, **overrides))
    port = running.gateway.proxy.port
    return Proxy(running, upstream, f"http://127.0.0.1:{port}", port)


async def eventually(check: Any, timeout: float = 2.0) -> float:
    """Seconds until `check()` (a coroutine function) is true."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, "not within the timeout"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_export_then_apply_on_a_fresh_store_keeps_every_secret_working(
    start_proxy, start_gateway, upstream, tmp_path: Path
) -> None:
    source = await start_proxy()
    made = [
        await source.admin.create(name="Orders", account="acme", ip_whitelist=["127.0.0.1", "10.0.0.*"]),
        await source.admin.create(name="Reports", account="acme", rate_limits=[{"requests": 50, "per": "second"}]),
        await source.admin.create(name="Paused", account="beta", enabled=False, interfaces=["workflow"]),
    ]
    exported = cli("export", "--config", config_for(tmp_path, "a"), "--output", "keys.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "keys.yaml").read_text()
    assert oct((tmp_path / "keys.yaml").stat().st_mode & 0o777) == "0o600"
    assert all(key["key"] not in text for key in made)  # sealed, never plain
    document = yaml.safe_load(text)
    assert [entry["id"] for entry in document["keys"]] == sorted(key["id"] for key in made)
    shown_fields = set(made[0]) - {"key"}
    assert all(shown_fields | {"sealed"} == set(entry) for entry in document["keys"])

    applied = cli("apply", "keys.yaml", "--config", config_for(tmp_path, "b"), cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "3 to add, 0 to change, 0 to delete, 0 unchanged" in applied.stdout
    again = cli("apply", "keys.yaml", "--config", config_for(tmp_path, "b"), cwd=tmp_path)
    assert again.stdout.strip() == "0 to add, 0 to change, 0 to delete, 3 unchanged"
    before = rows(tmp_path, "b")
    as_json = cli("export", "--json", "--config", config_for(tmp_path, "a"), "-o", "keys.json", cwd=tmp_path)
    assert as_json.returncode == 0 and json.loads((tmp_path / "keys.json").read_text())["keys"]
    quiet = yaml.safe_load(cli("export", "--no-usage", "--config", config_for(tmp_path, "a"), cwd=tmp_path).stdout)
    assert all("request_count" not in entry and "last_used_at" not in entry for entry in quiet["keys"])
    same = cli("apply", "keys.json", "--config", config_for(tmp_path, "b"), cwd=tmp_path)
    assert same.stdout.strip() == "0 to add, 0 to change, 0 to delete, 3 unchanged"

    target = await proxy_on(start_gateway, upstream, tmp_path, f"sqlite:///{tmp_path}/b.db")
    orders, reports, paused = made
    status, _ = await target.json("POST", WORKFLOW, key=orders["key"])
    assert status == 200
    status, body = await target.json("POST", WORKFLOW, key=orders["key"], source="127.0.0.2")
    assert (status, body["reason"]) == (403, "ip_not_allowed")
    status, headers, _ = await target.request("POST", WORKFLOW, key=reports["key"])
    assert status == 200 and headers["RateLimit-Limit"] == "50"
    status, body = await target.json("POST", WORKFLOW, key=paused["key"])
    assert (status, body["reason"]) == (403, "key_disabled")
    status, revealed = await target.admin.call("GET", f"/api/v1/keys/{orders['id']}/secret")
    assert revealed["key"] == orders["key"]
    status, audit = await target.admin.call("GET", "/api/v1/audit")
    assert {(item["actor"], item["action"]) for item in audit["items"]} >= {("apply", "create")}
    assert rows(tmp_path, "b") == before  # the second apply wrote nothing

    # another secret key cannot open the file, and says so; nothing is written
    wrong = cli(
        "apply", "keys.yaml", "--config", config_for(tmp_path, "c"), cwd=tmp_path, secret="another-key-0123456789abcdef"
    )
    assert wrong.returncode == 1 and "sealed: cannot be opened with this secret key" in wrong.stderr
    assert "keys[0]" in wrong.stderr and "nothing changed" in wrong.stderr


async def test_apply_shows_a_diff_prunes_and_reaches_a_running_gateway(start_proxy, tmp_path: Path) -> None:
    proxy = await start_proxy()
    keep = await proxy.admin.create(name="Keep", account="acme")
    edit = await proxy.admin.create(name="Edit me", account="acme")
    gone = await proxy.admin.create(name="Not in the file", account="acme")
    other = await proxy.admin.create(name="Other account", account="zeta")
    config = config_for(tmp_path, "a")
    assert cli("export", "--config", config, "--account", "acme", "-o", "acme.yaml", cwd=tmp_path).returncode == 0
    document = yaml.safe_load((tmp_path / "acme.yaml").read_text())
    assert {entry["account"] for entry in document["keys"]} == {"acme"}
    entries = {entry["id"]: entry for entry in document["keys"]}
    entries[edit["id"]]["name"] = "Edited"
    entries[edit["id"]]["ip_whitelist"] = ["10.1.2.*"]
    del entries[gone["id"]]
    new_secret = "NewSecretFromTheFile0123456789ab"
    added = {"name": "Added", "account": "acme", "key": new_secret}
    (tmp_path / "acme.yaml").write_text(yaml.safe_dump({"keys": [*entries.values(), added]}))

    dry = cli("apply", "acme.yaml", "--config", config, "--prune", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "dry run: nothing changed" in dry.stdout
    assert len(rows(tmp_path, "a")) == 4
    done = cli("apply", "acme.yaml", "--config", config, "--prune", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"~ {edit['id']}  Edited (account acme)" in lines
    assert '    name: "Edit me" -> "Edited"' in lines
    assert '    ip_whitelist: [] -> ["10.1.2.*"]' in lines
    assert f"- {gone['id']}  Not in the file (account acme)" in lines
    assert any(line.startswith("+ k_") and "Added (account acme)" in line for line in lines)
    assert lines[-1] == "1 to add, 1 to change, 1 to delete, 1 unchanged"

    # the running gateway follows the store's change log: the next requests see the file
    async def applied() -> bool:
        removed = (await proxy.json("POST", WORKFLOW, key=gone["key"]))[0] == 401
        return removed and (await proxy.json("POST", WORKFLOW, key=new_secret))[0] == 200

    print(f"apply reached the running gateway in {await eventually(applied):.3f} s")
    assert (await proxy.json("POST", WORKFLOW, key=edit["key"]))[0] == 403  # 127.0.0.1 is not in 10.1.2.*
    assert (await proxy.json("POST", WORKFLOW, key=keep["key"]))[0] == 200
    assert (await proxy.json("POST", WORKFLOW, key=other["key"]))[0] == 200  # another account: not pruned
    _, audit = await proxy.admin.call("GET", "/api/v1/audit?limit=500")
    by_apply = {(item["action"], item["key_id"]) for item in audit["items"] if item["actor"] == "apply"}
    assert ("update", edit["id"]) in by_apply and ("delete", gone["id"]) in by_apply
    assert (
        cli("apply", "acme.yaml", "--config", config, "--prune", cwd=tmp_path)
        .stdout.strip()
        .endswith("0 to add, 0 to change, 0 to delete, 3 unchanged")
    )


GOOD = [{"name": "Fine", "account": "acme", "key": "GoodSecretNumberOne0123456789abc"}]


def _hostile(name: str, tmp_path: Path) -> tuple[bytes, str]:
    """A file that must be refused, and what the error must say."""
    entry = {"name": "Fine too", "account": "acme", "key": "GoodSecretNumberTwo0123456789abc"}
    same_id = "k_01m8v53gz9mm09g6htramgad78"
    cases: dict[str, tuple[Any, str]] = {
        "huge": (b"keys:\n" + b"# padding\n" * (4 * 1024 * 1024), "larger than 33554432 bytes (32 MiB)"),
        "deep": (b"keys: " + b"[" * 50_000 + b"]" * 50_000, "keys.yaml: "),
        "bad yaml": (b"keys:\n  - name: [unclosed\n", "not valid YAML at line"),
        "not utf-8": (b"keys:\n  - name: \xff\xfe\n", "not UTF-8"),
        "aliases": (b"a: &a [1, 2]\nkeys: [*a, *a]\n", "aliases"),
        "duplicate ids": (
            yaml.safe_dump({"keys": [{**GOOD[0], "id": same_id}, {**entry, "id": same_id}]}).encode(),
            f"keys[1] ({same_id}): id: also the id of keys[0]",
        ),
        "bad field": (
            yaml.safe_dump({"keys": [*GOOD, {**entry, "ip_whitelist": ["10.0.0.1", "1.2.3.999"]}]}).encode(),
            "keys[1]: ip_whitelist[1]",
        ),
        "unknown field": (yaml.safe_dump({"keys": [*GOOD, {**entry, "colour": "red"}]}).encode(), "keys[1]: colour"),
        "bad secret": (yaml.safe_dump({"keys": [*GOOD, {**entry, "key": "short"}]}).encode(), "keys[1]: key:"),
        "same secret twice": (yaml.safe_dump({"keys": [*GOOD, {**entry, "key": GOOD[0]["key"]}]}).encode(), "keys[1]"),
        "bad interface": (
            yaml.safe_dump({"keys": [*GOOD, {**entry, "interfaces": ["data.lst"]}]}).encode(),
            "keys[1]: interfaces[0]",
        ),
        "not a list": (b"keys: {a: 1}\n", "keys must be a list"),
    }
    return cases[name]


@pytest.mark.parametrize(
    "case",
    [
        "huge",
        "deep",
        "bad yaml",
        "not utf-8",
        "aliases",
        "duplicate ids",
        "bad field",
        "unknown field",
        "bad secret",
        "same secret twice",
        "bad interface",
        "not a list",
    ],
)
def test_a_hostile_file_is_refused_whole_and_named(case: str, tmp_path: Path) -> None:
    config = config_for(tmp_path, "a")
    (tmp_path / "good.yaml").write_text(yaml.safe_dump({"keys": GOOD}))
    assert cli("apply", "good.yaml", "--config", config, cwd=tmp_path).returncode == 0
    before = rows(tmp_path, "a")
    data, says = _hostile(case, tmp_path)
    (tmp_path / "keys.yaml").write_bytes(data)
    started = time.monotonic()
    result = cli("apply", "keys.yaml", "--config", config, "--prune", cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    assert rows(tmp_path, "a") == before
    assert took < 20


def test_the_key_limit_holds_for_the_whole_file(tmp_path: Path) -> None:
    config = tmp_path / "a.yaml"
    config.write_text(f"database: sqlite:///{tmp_path}/a.db\nlimits: {{keys_per_account: 2}}\n")
    keys = [{"name": f"k{i}", "account": "acme", "key": f"LimitSecret{i}" + "x" * 20 + "0"} for i in range(3)]
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}))
    result = cli("apply", "keys.yaml", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1 and "key_limit_reached" in result.stderr
    assert rows(tmp_path, "a") == []


def test_a_refused_plan_changes_nothing(tmp_path: Path) -> None:
    """Errors found while planning against the store (inside the write transaction) roll it back."""
    config = config_for(tmp_path, "a")
    (tmp_path / "good.yaml").write_text(yaml.safe_dump({"keys": GOOD}))
    assert cli("apply", "good.yaml", "--config", config, cwd=tmp_path).returncode == 0
    before = rows(tmp_path, "a")
    moved = [{"name": "New", "account": "zeta", "key": "AnotherSecret0123456789abcdefghi"}, {**GOOD[0], "account": "b"}]
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump({"keys": moved}))
    result = cli("apply", "moved.yaml", "--config", config, cwd=tmp_path)
    assert result.returncode == 1
    assert "keys[1]" in result.stderr and "account: 'acme' in the store" in result.stderr
    assert rows(tmp_path, "a") == before


def test_apply_on_postgresql(shared_postgres: str, tmp_path: Path) -> None:
    """The same plan and transaction on PostgreSQL: add, change, prune, idempotence, rollback."""
    import uuid

    from tests.conftest import drop_schema

    schema = f"t_{uuid.uuid4().hex[:16]}"
    config = tmp_path / "pg.yaml"
    config.write_text(f"database: {shared_postgres}?schema={schema}\nlimits: {{keys_per_account: 3}}\n")
    try:
        keys = [{**GOOD[0], "name": f"k{i}", "key": f"PgSecret{i}" + "y" * 23} for i in range(3)]
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}))
        first = cli("apply", "keys.yaml", "--config", str(config), cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip().endswith("3 to add, 0 to change, 0 to delete, 0 unchanged")
        keys[0]["name"] = "renamed"
        (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": keys[:2]}))
        second = cli("apply", "keys.yaml", "--config", str(config), "--prune", cwd=tmp_path)
        assert second.stdout.strip().endswith("0 to add, 1 to change, 1 to delete, 1 unchanged"), second.stdout
        again = cli("apply", "keys.yaml", "--config", str(config), "--prune", cwd=tmp_path)
        assert again.stdout.strip() == "0 to add, 0 to change, 0 to delete, 2 unchanged"
        over = [*keys[:2], *({**GOOD[0], "name": f"n{i}", "key": f"PgOver{i}" + "z" * 25} for i in range(2))]
        (tmp_path / "over.yaml").write_text(yaml.safe_dump({"keys": over}))
        refused = cli("apply", "over.yaml", "--config", str(config), cwd=tmp_path)
        assert refused.returncode == 1 and "key_limit_reached" in refused.stderr
        exported = cli("export", "--config", str(config), cwd=tmp_path)
        names = sorted(entry["name"] for entry in yaml.safe_load(exported.stdout)["keys"])
        assert names == ["k1", "renamed"]  # the refused file wrote nothing
    finally:
        drop_schema(schema)

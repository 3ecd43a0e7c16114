"""Databases made before the one migration list open with it: every key, token and audit row
survives and works, and the schema ends as a new database's."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.config import parse_config
from gateway.core import sealing
from gateway.core.errors import RuleError
from gateway.core.record import mask_secret
from gateway.store import SchemaTooNew, migrations, open_store, schemes
from gateway.store.postgres import PostgresStore, split_url
from gateway.store.sql import numbered
from gateway.store.sqlite import SQLiteStore
from gateway.store.sqlstore import SQLStore
from tests.conftest import SECRET

WORKFLOW = "/api/v5/workflow/task/approve"

# The schema as the releases before the one list made it (gateway/store/sqlite.py and
# postgres.py at 0543ca4), frozen here: what databases in the field hold.
LIFECYCLE = (
    "ALTER TABLE keys ADD COLUMN expires_at TEXT",
    "ALTER TABLE keys ADD COLUMN previous_digest TEXT",
    "ALTER TABLE keys ADD COLUMN previous_expires_at TEXT",
    "CREATE UNIQUE INDEX keys_by_previous_digest ON keys (previous_digest)",
    "ALTER TABLE audit ADD COLUMN actor TEXT NOT NULL DEFAULT 'root'",
    "ALTER TABLE audit ADD COLUMN account TEXT",
    "CREATE INDEX audit_by_account ON audit (account, seq)",
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        account TEXT,
        permissions TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    )""",
)
RATE_LIMITS = ("ALTER TABLE keys ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]'",)
KEYS = """CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            sealed TEXT NOT NULL,
            key_masked TEXT NOT NULL,
            enabled {} NOT NULL,
            apps TEXT,
            interfaces TEXT,
            ip_whitelist TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_used_at TEXT,
            request_count {} NOT NULL DEFAULT 0
        )"""
AUDIT = """CREATE TABLE audit (
            seq {},
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            key_id TEXT NOT NULL,
            changes TEXT NOT NULL
        )"""
OLD_SQLITE = {
    1: (
        KEYS.format("INTEGER", "INTEGER"),
        "CREATE INDEX keys_by_account ON keys (account, id)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    2: ("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL)",),
    3: (
        "ALTER TABLE changes ADD COLUMN at REAL NOT NULL DEFAULT 0",
        AUDIT.format("INTEGER PRIMARY KEY AUTOINCREMENT"),
        "CREATE INDEX audit_by_key ON audit (key_id, seq)",
    ),
    4: LIFECYCLE,
    5: RATE_LIMITS,
}
OLD_POSTGRES = {
    1: (
        KEYS.format("BOOLEAN", "BIGINT"),
        "CREATE INDEX keys_by_account ON keys (account, id)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE changes (seq BIGSERIAL PRIMARY KEY, key_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
        AUDIT.format("BIGSERIAL PRIMARY KEY"),
        "CREATE INDEX audit_by_key ON audit (key_id, seq)",
    ),
    2: LIFECYCLE,
    3: RATE_LIMITS,
}
# the same schema under its number in the one list
LEVEL = {("sqlite", v): v for v in OLD_SQLITE} | {("postgres", v): v + 2 for v in OLD_POSTGRES}


class OldDatabase:
    """A database at an old version, written with plain SQL as that version's gateway wrote it."""

    def __init__(self, url: str, backend: str, version: int) -> None:
        self.url, self.backend, self.version = url, backend, version
        self.history = OLD_SQLITE if backend == "sqlite" else OLD_POSTGRES
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, table: str, **row: Any) -> None:
        marks = ", ".join("?" * len(row))
        self.statements.append((f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", tuple(row.values())))

    async def build(self) -> None:
        ddl = [statement for version in range(1, self.version + 1) for statement in self.history[version]]
        ddl.append("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        rows = [*self.statements, ("INSERT INTO schema_version VALUES (?)", (self.version,))]
        if self.backend == "sqlite":
            with sqlite3.connect(self.url[len("sqlite:///") :]) as db:
                for statement in ddl:
                    db.execute(statement)
                for statement, params in rows:
                    db.execute(statement, params)
            return
        dsn, schema = split_url(self.url)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            async with conn.transaction():
                for statement in ddl:
                    await conn.execute(statement)
                for statement, params in rows:
                    await conn.execute(numbered(statement), *params)
        finally:
            await conn.close()


@dataclass
class Made:
    """What went into the old database, to check against what the new gateway shows."""

    secrets: dict[str, str] = field(default_factory=dict)  # key id -> secret
    shown: dict[str, dict[str, Any]] = field(default_factory=dict)  # key id -> key object fields
    disabled: set[str] = field(default_factory=set)
    previous: dict[str, str] = field(default_factory=dict)  # key id -> secret before a rotation
    audit: list[dict[str, Any]] = field(default_factory=list)
    token: str | None = None
    changes: int = 0


def fill(old: OldDatabase, level: int) -> Made:
    """Keys of every shape the level allows, with their change log, audit trail and a token."""
    box, made = sealing.SecretBox(SECRET), Made()
    old.add("meta", name="secret", value=box.digest(b"gateway secret fingerprint"))
    shapes: list[dict[str, Any]] = [
        {"account": "acme", "last_used_at": "2025-01-02T03:04:05.000Z", "request_count": 7},
        {"account": "acme", "apps": ["app1"], "interfaces": ["workflow"], "ip_whitelist": ["127.0.0.1", "10.0.0.*"]},
        {"account": "other", "enabled": False},
    ]
    if level >= 4:
        shapes[0]["previous"] = sealing.generate_secret()
        shapes[1]["expires_at"] = "2099-01-01T00:00:00.000Z"
    if level >= 5:
        shapes[1]["rate_limits"] = [{"requests": 100, "per": "minute"}]
    for n, shape in enumerate(shapes):
        key_id, secret = sealing.generate_id(), sealing.generate_secret()
        created = f"2025-01-01T00:00:0{n}.000Z"
        shown = {
            "id": key_id,
            "name": f"old key {n}",
            "account": shape["account"],
            "key_masked": mask_secret(secret),
            "enabled": shape.get("enabled", True),
            "apps": shape.get("apps", "all"),
            "interfaces": shape.get("interfaces", "all"),
            "ip_whitelist": shape.get("ip_whitelist", []),
            "created_at": created,
            "updated_at": created,
            "last_used_at": shape.get("last_used_at"),
            "request_count": shape.get("request_count", 0),
            "expires_at": shape.get("expires_at"),
            "rate_limits": shape.get("rate_limits", []),
            "previous_expires_at": "2099-01-01T00:00:00Z" if "previous" in shape else None,
        }
        row = {
            "id": key_id,
            "account": shown["account"],
            "name": shown["name"],
            "digest": box.digest(secret),
            "sealed": box.encrypt(secret, key_id),
            "key_masked": shown["key_masked"],
            "enabled": shown["enabled"],
            "apps": None if shown["apps"] == "all" else json.dumps(shown["apps"]),
            "interfaces": None if shown["interfaces"] == "all" else json.dumps(shown["interfaces"]),
            "ip_whitelist": json.dumps(shown["ip_whitelist"]),
            "created_at": created,
            "updated_at": created,
            "last_used_at": shown["last_used_at"],
            "request_count": shown["request_count"],
        }
        if level >= 4:
            row["expires_at"] = shown["expires_at"]
            if "previous" in shape:
                row["previous_digest"] = box.digest(shape["previous"])
                row["previous_expires_at"] = shown["previous_expires_at"]
                made.previous[key_id] = shape["previous"]
        if level >= 5:
            row["rate_limits"] = json.dumps(shown["rate_limits"])
        old.add("keys", **row)
        made.secrets[key_id], made.shown[key_id] = secret, shown
        if not shown["enabled"]:
            made.disabled.add(key_id)
        if level >= 2:
            old.add("changes", key_id=key_id, **({"at": 1735689600.0 + n} if level >= 3 else {}))
            made.changes += 1
        if level >= 3:
            changes = {"name": {"before": None, "after": shown["name"]}}
            entry = {"at": created, "action": "create", "key_id": key_id, "changes": json.dumps(changes)}
            if level >= 4:
                entry |= {"actor": "root", "account": shown["account"]}
            old.add("audit", **entry)
            made.audit.append({"action": "create", "key_id": key_id, "actor": "root", "after": {"name": shown["name"]}})
    if level >= 4:
        made.token = sealing.generate_token()
        permissions = json.dumps(["keys:read", "audit:read"])
        old.add(
            "tokens",
            id=sealing.generate_token_id(),
            name="ops",
            account="acme",
            permissions=permissions,
            digest=box.digest(made.token),
            created_at="2025-01-01T00:00:00.000Z",
        )
    return made


async def schema_of(url: str) -> list[Any]:
    """Tables, columns and indexes as the database describes them, with its version."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as db:
            shape = db.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name != 'sqlite_sequence' ORDER BY name"
            ).fetchall()
            return [*shape, db.execute("SELECT version FROM schema_version").fetchall()]
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        # column defaults left out: only changes.at differs (0 when made by the list, none when
        # made by PostgreSQL's old list), and every change is logged with its time
        columns = await conn.fetch(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable"
            " FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 3",
            schema,
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1", schema
        )
        version = await conn.fetch(f'SELECT version FROM "{schema}".schema_version')
        return [
            [tuple(row) for row in columns],
            [(name, text.replace(f"{schema}.", "")) for name, text in indexes],
            [tuple(row) for row in version],
        ]
    finally:
        await conn.close()


async def drop(url: str) -> None:
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def fresh_schema(tmp_path: Path, url: str) -> list[Any]:
    """The schema a new database gets, beside the one at `url` (a file, or a schema)."""
    if url.startswith("sqlite:///"):
        fresh = f"sqlite:///{tmp_path}/fresh.db"
        store: SQLiteStore | PostgresStore = SQLiteStore(fresh[len("sqlite:///") :])
    else:
        fresh = url.replace(f"schema={split_url(url)[1]}", f"schema=fresh_{uuid.uuid4().hex[:12]}")
        store = PostgresStore(fresh)
    await store.open()
    await store.close()
    try:
        return await schema_of(fresh)
    finally:
        if isinstance(store, PostgresStore):
            await drop(fresh)


CASES = [pytest.param(backend, version, id=f"{backend}-v{version}") for backend, version in LEVEL]


@pytest.mark.parametrize(("database_url", "version"), CASES, indirect=["database_url"])
async def test_an_old_database_opens_with_everything_in_it(
    database_url: str, version: int, start_proxy, tmp_path: Path
) -> None:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    level = LEVEL[(backend, version)]
    old = OldDatabase(database_url, backend, version)
    made = fill(old, level)
    await old.build()

    proxy = await start_proxy()
    admin = proxy.admin
    # every key, as it was
    status, listed = await admin.call("GET", "/api/v1/keys")
    assert status == 200 and [key["id"] for key in listed["items"]] == list(made.shown)
    for key in listed["items"]:
        expected = made.shown[key["id"]]
        assert {name: key[name] for name in expected} == expected
    # every secret: still sealed under the same secret key, and still let through (or refused)
    for key_id, secret in made.secrets.items():
        status, revealed = await admin.call("GET", f"/api/v1/keys/{key_id}/secret")
        assert status == 200 and revealed["key"] == secret
        status, _ = await proxy.json("POST", WORKFLOW, key=secret)
        assert status == (403 if key_id in made.disabled else 200), key_id
    for secret in made.previous.values():  # a rotation's grace outlives the upgrade
        assert (await proxy.json("POST", WORKFLOW, key=secret))[0] == 200
    # the audit trail, before the reveals above
    status, trail = await admin.call("GET", "/api/v1/audit?limit=500")
    assert status == 200
    old_entries = trail["items"][: len(made.audit)]
    assert [{name: entry[name] for name in made.audit[0]} for entry in old_entries] == made.audit
    assert [entry["action"] for entry in trail["items"][len(made.audit) :]] == ["reveal"] * len(made.secrets)
    # the admin token signs in and keeps its account and permissions
    if made.token is not None:
        status, seen = await admin.call("GET", "/api/v1/keys", token=made.token)
        assert status == 200 and {key["account"] for key in seen["items"]} == {"acme"}
        assert (await admin.call("POST", "/api/v1/keys", {}, token=made.token))[0] == 403
    # writes carry on after the old change log and audit trail
    store = proxy.running.gateway.store
    assert await store.latest_change() == made.changes
    first = next(iter(made.shown))
    status, patched = await admin.call("PATCH", f"/api/v1/keys/{first}", {"name": "renamed"})
    assert status == 200 and patched["name"] == "renamed"
    assert await store.latest_change() > made.changes
    created = await admin.create(account="acme")
    assert (await proxy.json("POST", WORKFLOW, key=created["key"]))[0] == 200
    # and the schema is a new database's, at the one version
    assert await schema_of(database_url) == await fresh_schema(tmp_path, database_url)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_newer_schema_is_refused_on_both_databases(database_url: str) -> None:
    store = open_store(database_url)
    await store.open()
    assert isinstance(store, SQLStore)
    await store.driver.run("UPDATE schema_version SET version = ?", migrations.SCHEMA_VERSION + 1)
    await store.close()
    with pytest.raises(SchemaTooNew, match=r"^schema v6 is newer than this gateway's \(v5\)$"):
        await store.open()


def test_the_config_accepts_the_registered_database_urls_only() -> None:
    """config.py checks database URLs by the table store.schemes opens them by (core.databases)."""
    for scheme in schemes.SCHEMES:
        url = scheme.prefix + "host/db"
        assert schemes.find(url) is scheme and schemes.problem(url) is None
        assert parse_config({"database": url}, {}).database.startswith(scheme.prefix)
    for url in ("sqlite:///", "mysql://host/db", "sqlite://x.db", "file:///"):
        expected = schemes.problem(url)
        with pytest.raises(RuleError) as caught:
            parse_config({"database": url}, {})
        assert expected is not None and (caught.value.field, caught.value.message) == ("database", expected)

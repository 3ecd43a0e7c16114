"""The embedded store: one SQLite file in WAL mode, synchronous=FULL.

Every write runs in `BEGIN IMMEDIATE`, so the per-account limit holds across processes, and
is committed before the caller answers, so an acknowledged write survives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.core.record import Key
from gateway.core.tokens import Token
from gateway.store import sql
from gateway.store.base import Audit, Changes, KeyLimitReached, SchemaTooNew
from gateway.store.doorbell import Doorbell
from gateway.store.rows import (
    CHANGES_KEPT,
    changes_after,
    encode,
    insert_values,
    row_to_audit,
    row_to_key,
    row_to_token,
    token_values,
)

SCHEMA_VERSION = 5
POLL_SECONDS = 0.25  # a safety net: a peer's doorbell normally arrives first
# where the processes on this file ring each other (store/doorbell.py)
BELL_FOLDER = "SELECT value FROM meta WHERE name = 'doorbell'"
SET_BELL_FOLDER = "INSERT OR REPLACE INTO meta (name, value) VALUES ('doorbell', ?)"
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            sealed TEXT NOT NULL,
            key_masked TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            apps TEXT,
            interfaces TEXT,
            ip_whitelist TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_used_at TEXT,
            request_count INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX keys_by_account ON keys (account, id)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # v2: a change log, so other processes apply admin writes key by key instead of reloading
    2: ("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL)",),
    # v3: when each change was committed (propagation lag), and the audit trail
    3: (
        "ALTER TABLE changes ADD COLUMN at REAL NOT NULL DEFAULT 0",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            key_id TEXT NOT NULL,
            changes TEXT NOT NULL
        )""",
        "CREATE INDEX audit_by_key ON audit (key_id, seq)",
    ),
    # v4: key expiry and rotation, admin tokens, who acted in the audit trail
    4: sql.LIFECYCLE_SCHEMA,
    # v5: per-key rate limits
    5: sql.RATE_LIMITS_SCHEMA,
}


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._marker: int | None = None
        self._doorbell = Doorbell()
        self._keys_changed = False  # this transaction logged a key change: ring when it commits

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA busy_timeout = 10000")
        await self._wal()
        await self.db.execute("PRAGMA synchronous = FULL")
        try:
            await self._migrate()
        except BaseException:
            await self.close()  # an open connection's thread would keep the process alive
            raise
        # Other processes' commits count from now: one landing before the first poll (while
        # the keyring loads) must not be taken as the starting point and missed.
        rows = await self.db.execute_fetchall("PRAGMA data_version")
        self._marker = int(rows[0][0])
        await self._open_doorbell()

    async def _open_doorbell(self) -> None:
        """Listen for peers' bells in the folder the database names, naming a new one if need be
        (in a write transaction, so processes opening the file together agree on one folder)."""
        async with self._transaction() as db:
            rows = await db.execute_fetchall(BELL_FOLDER)
            made = self._doorbell.open(self.path, rows[0][0] if rows else None)
            if made is not None:
                await db.execute(SET_BELL_FOLDER, (made,))

    async def _wal(self) -> None:
        """Switch to WAL. Workers opening a new file together can find it locked: the busy
        timeout does not cover a journal-mode change, so wait here (up to 10 s) instead."""
        deadline = time.monotonic() + 10
        while True:
            try:
                await self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One immediate (write-locked) transaction, committed before the caller answers."""
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            self._keys_changed = False
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")
            if self._keys_changed:
                self._doorbell.ring()

    async def _migrate(self) -> None:
        async with self._transaction() as db:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = await db.execute_fetchall("SELECT version FROM schema_version")
            current = rows[0][0] if rows else 0
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(f"schema v{current} is newer than this gateway's (v{SCHEMA_VERSION})")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    await db.execute(statement)
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    async def close(self) -> None:
        self._doorbell.close()
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _write(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Run statements in one transaction; return each one's rowcount."""
        async with self._transaction() as db:
            return [(await db.execute(sql, params)).rowcount for sql, params in statements]

    async def check_secret(self, fingerprint: str) -> bool:
        async with self._transaction() as db:
            rows = await db.execute_fetchall(sql.SECRET)
            if not rows:
                await db.execute(sql.SET_SECRET, (fingerprint,))
        return not rows or rows[0][0] == fingerprint

    async def create_key(self, key: Key, sealed: str, limit: int, audit: Audit | None = None) -> None:
        await self.create_keys([(key, sealed)], limit, [audit] if audit else [])

    async def create_keys(self, items: list[tuple[Key, str]], limit: int, audit: Sequence[Audit] = ()) -> None:
        """Insert keys in one transaction; all or none, the per-account limit checked for each."""
        async with self._transaction() as db:
            for key, sealed in items:
                await self._insert(db, key, sealed, limit)
            for entry in audit:
                await self._audit(db, entry)

    async def _insert(self, db: aiosqlite.Connection, key: Key, sealed: str, limit: int) -> None:
        rows = await db.execute_fetchall(sql.COUNT_IN_ACCOUNT, (key.account,))
        if rows[0][0] >= limit:
            raise KeyLimitReached(key.account)
        await db.execute(sql.INSERT_KEY, insert_values(key, sealed))
        await self._log_change(db, key.id)

    async def _log_change(self, db: aiosqlite.Connection, key_id: str) -> None:
        self._keys_changed = True
        ((seq,),) = await db.execute_fetchall(sql.LOG_CHANGE, (key_id, time.time()))
        if seq % 1000 == 0:
            await db.execute(sql.PRUNE_CHANGES, (seq - CHANGES_KEPT,))

    async def get_key(self, key_id: str) -> Key | None:
        rows = await self.db.execute_fetchall(sql.GET_KEY, (key_id,))
        return row_to_key(rows[0]) if rows else None

    async def get_sealed(self, key_id: str) -> str | None:
        rows = await self.db.execute_fetchall(sql.GET_SEALED, (key_id,))
        return rows[0][0] if rows else None

    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]:
        if account is None:
            rows = await self.db.execute_fetchall(sql.LIST_KEYS, (after or "", limit))
        else:
            rows = await self.db.execute_fetchall(sql.LIST_ACCOUNT_KEYS, (after or "", account, limit))
        return [row_to_key(row) for row in rows]

    async def count_keys(self) -> dict[str, int]:
        rows = await self.db.execute_fetchall(sql.COUNT_BY_ACCOUNT)
        return {account: count for account, count in rows}

    async def update_key(
        self, key_id: str, changes: dict[str, Any], updated_at: str, audit: Audit | None = None
    ) -> Key | None:
        fields = {name: encode(name, value) for name, value in changes.items()}
        fields["updated_at"] = updated_at
        async with self._transaction() as db:
            cursor = await db.execute(sql.update_key(list(fields)), (*fields.values(), key_id))
            if cursor.rowcount:
                await self._log_change(db, key_id)
                if audit:
                    await self._audit(db, audit)
        return await self.get_key(key_id) if cursor.rowcount else None

    async def delete_key(self, key_id: str, audit: Audit | None = None) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(sql.DELETE_KEY, (key_id,))
            if cursor.rowcount:
                await self._log_change(db, key_id)
                if audit:
                    await self._audit(db, audit)
        return cursor.rowcount > 0

    @staticmethod
    async def _audit(db: aiosqlite.Connection, entry: Audit) -> None:
        values = (entry.at, entry.action, entry.key_id, json.dumps(entry.changes), entry.actor, entry.account)
        await db.execute(sql.INSERT_AUDIT, values)

    async def add_audit(self, entry: Audit) -> None:
        async with self._transaction() as db:
            await self._audit(db, entry)

    async def list_audit(
        self, key_id: str | None, after: int | None, limit: int, account: str | None = None
    ) -> list[Audit]:
        params = [after or 0, *([key_id] if key_id else []), *([account] if account else []), limit]
        rows = await self.db.execute_fetchall(sql.list_audit(bool(key_id), bool(account)), params)
        return [row_to_audit(row) for row in rows]

    async def get_keys(self, key_ids: list[str]) -> list[Key]:
        rows = await self.db.execute_fetchall(sql.get_keys(len(key_ids)), key_ids)
        return [row_to_key(row) for row in rows]

    async def changes_since(self, seq: int) -> Changes:
        rows = await self.db.execute_fetchall(sql.CHANGES_AFTER, (seq,))
        (bounds,) = await self.db.execute_fetchall(sql.CHANGE_BOUNDS)
        return changes_after(seq, rows, *bounds)

    async def record_usage(self, usage: dict[str, tuple[str, int]]) -> None:
        if not usage:
            return
        await self._write([(sql.RECORD_USAGE, row) for row in sql.usage_rows(usage)])

    async def create_token(self, token: Token) -> None:
        await self._write([(sql.INSERT_TOKEN, token_values(token))])

    async def list_tokens(self, account: str | None) -> list[Token]:
        if account is None:
            rows = await self.db.execute_fetchall(sql.LIST_TOKENS)
        else:
            rows = await self.db.execute_fetchall(sql.LIST_ACCOUNT_TOKENS, (account,))
        return [row_to_token(row) for row in rows]

    async def token_by_digest(self, digest: str) -> Token | None:
        rows = await self.db.execute_fetchall(sql.TOKEN_BY_DIGEST, (digest,))
        return row_to_token(rows[0]) if rows else None

    async def delete_token(self, token_id: str, account: str | None) -> bool:
        if account is None:
            (count,) = await self._write([(sql.DELETE_TOKEN, (token_id,))])
        else:
            (count,) = await self._write([(sql.DELETE_ACCOUNT_TOKEN, (token_id, account))])
        return count > 0

    async def touch_token(self, token_id: str, at: str) -> None:
        await self._write([(sql.TOUCH_TOKEN, (at, token_id))])

    async def latest_change(self) -> int:
        rows = await self.db.execute_fetchall(sql.LATEST_CHANGE)
        return int(rows[0][0])

    async def wait_for_change(self) -> str:
        """When a peer rings, or after 250 ms: "changed" if another process committed
        (PRAGMA data_version moved)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):
                await self._doorbell.rung.wait()
        self._doorbell.rung.clear()
        rows = await self.db.execute_fetchall("PRAGMA data_version")
        marker = int(rows[0][0])
        changed = self._marker is not None and marker != self._marker
        self._marker = marker
        return "changed" if changed else "none"

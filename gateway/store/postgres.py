"""The shared store for many replicas: PostgreSQL through asyncpg.

Every write takes one transaction-scoped advisory lock, so writes are serialized across
replicas: the per-account limit holds, and change-log sequence numbers commit in order.
Each write logs the key id and NOTIFYs `gateway_changes`; every replica LISTENs on a
connection of its own and applies the change within milliseconds. If that connection is
lost, whatever the error (a cut, a restart, a failover), the replica keeps serving from memory,
says so once, reconnects with backoff, says so once, and reloads fully.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from gateway.core.record import Key
from gateway.core.tokens import Token
from gateway.store import sql
from gateway.store.base import Audit, Changes, KeyLimitReached, SchemaTooNew, StoreUnavailable
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
from gateway.store.sql import numbered

log = logging.getLogger("gateway.store")
SCHEMA_VERSION = 3
CHANNEL = "gateway_changes"
WRITE_LOCK = 7_412_001  # advisory lock ids: any constant unlikely to clash with the application's
MIGRATION_LOCK = 7_412_002
POLL_SECONDS = 1.0  # a safety net: notifications normally arrive first
CONNECT_TIMEOUT = 3.0
# the listener's reconnect backoff; it starts again from the least only after a connection that
# lasted, so a server that drops every connection at once is not retried (and logged) in a loop
RETRY_SECONDS, RETRY_MAX_SECONDS, STABLE_SECONDS = 0.05, 1.0, 5.0
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            sealed TEXT NOT NULL,
            key_masked TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            apps TEXT,
            interfaces TEXT,
            ip_whitelist TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_used_at TEXT,
            request_count BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX keys_by_account ON keys (account, id)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE changes (seq BIGSERIAL PRIMARY KEY, key_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
        """CREATE TABLE audit (
            seq BIGSERIAL PRIMARY KEY,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            key_id TEXT NOT NULL,
            changes TEXT NOT NULL
        )""",
        "CREATE INDEX audit_by_key ON audit (key_id, seq)",
    ),
    # v2: key expiry and rotation, admin tokens, who acted in the audit trail
    2: sql.LIFECYCLE_SCHEMA,
    # v3: per-key rate limits
    3: sql.RATE_LIMITS_SCHEMA,
}
# A server that is unreachable, shutting down or starting up (AdminShutdown, CannotConnectNow),
# or out of connections: StoreUnavailable (503), not a 500.
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def describe(err: BaseException) -> str:
    """One line for the log: the error's class and message, never a traceback."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class _PoolFloorRetries(logging.Filter):
    """asyncpg's pool logs a warning with a traceback each time it fails to reconnect its idle
    connection during an outage; the listener already says once that PostgreSQL is lost."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to restore the pool connection floor")


_pool_filter = _PoolFloorRetries()
logging.getLogger("asyncpg.pool").addFilter(_pool_filter)


def split_url(url: str) -> tuple[str, str | None]:
    """The DSN for asyncpg, and the `schema` query parameter (our extension) if any."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.dsn, self.schema = split_url(url)
        # every connection: our schema (if any), and a name operators can find in pg_stat_activity
        self.settings = {"application_name": "gateway"} | ({"search_path": self.schema} if self.schema else {})
        self._pool: asyncpg.Pool | None = None
        self._changed = asyncio.Event()
        self._resync = False
        self._listener: asyncio.Task | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not open"
        return self._pool

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT, server_settings=self.settings)

    async def open(self) -> None:
        try:
            if self.schema:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=8,
                timeout=CONNECT_TIMEOUT,
                command_timeout=10,
                server_settings=self.settings,
            )
        except UNAVAILABLE as err:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {err}") from None
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.create_task(self._listen_forever())

    async def _migrate(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(f"schema v{current} is newer than this gateway's (v{SCHEMA_VERSION})")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version VALUES ($1)", SCHEMA_VERSION)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # the change feed
    async def _listen_forever(self) -> None:
        """Hold one LISTEN connection for as long as the store is open. Whatever ends it (a lost
        network, a restart's AdminShutdown, CannotConnectNow while the server starts, a failover)
        is one outage: logged once when it starts and once when it ends, retried with backoff
        (RETRY_SECONDS doubling up to RETRY_MAX_SECONDS), and followed by a full reload, since
        notifications sent meanwhile were lost. Only cancellation (close) ends it."""
        outage_since: float | None = None
        delay = RETRY_SECONDS
        while True:
            conn: asyncpg.Connection | None = None
            up_since: float | None = None
            reason = "the connection closed"
            try:
                conn = await self._connect()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                up_since = time.monotonic()
                if outage_since is not None:
                    log.info("PostgreSQL is back after %.1f s; reloading keys", up_since - outage_since)
                    outage_since = None
                    self._resync = True
                    self._changed.set()
                while not lost.is_set():  # a dead peer is noticed by a periodic round trip
                    try:
                        async with asyncio.timeout(2.0):
                            await lost.wait()
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT)
            except Exception as err:  # any error is an outage; cancellation (close) is not
                reason = describe(err)
            finally:
                if conn is not None:
                    conn.terminate()
            if up_since is not None and time.monotonic() - up_since > STABLE_SECONDS:
                delay = RETRY_SECONDS  # a connection that lasted: retry quickly again
            if outage_since is None:
                outage_since = time.monotonic()
                log.warning("lost PostgreSQL (%s); serving keys from memory, reconnecting", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _notified(self, *args: Any) -> None:
        self._changed.set()

    async def wait_for_change(self) -> str:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the event fires, and the watcher would never stop
        try:
            async with asyncio.timeout(POLL_SECONDS):
                await self._changed.wait()
        except TimeoutError:
            pass
        self._changed.clear()
        if self._resync:
            self._resync = False
            return "resync"
        return "changed"

    # plumbing
    @asynccontextmanager
    async def _connection(self, transaction: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (in a transaction if asked); a lost database is StoreUnavailable."""
        try:
            async with self.pool.acquire() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn
        except UNAVAILABLE as err:
            raise StoreUnavailable(str(err)) from None

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[asyncpg.Connection]:
        """One write transaction, serialized across replicas by an advisory lock."""
        async with self._connection(transaction=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            yield conn

    async def _fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as conn:
            return await conn.fetch(numbered(statement), *args)

    @staticmethod
    async def _log_change(conn: asyncpg.Connection, key_id: str) -> None:
        seq = await conn.fetchval(numbered(sql.LOG_CHANGE), key_id, time.time())
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(seq))
        if seq % 1000 == 0:
            await conn.execute(numbered(sql.PRUNE_CHANGES), seq - CHANGES_KEPT)

    @staticmethod
    async def _audit(conn: asyncpg.Connection, entry: Audit) -> None:
        values = (entry.at, entry.action, entry.key_id, json.dumps(entry.changes), entry.actor, entry.account)
        await conn.execute(numbered(sql.INSERT_AUDIT), *values)

    # the interface
    async def check_secret(self, fingerprint: str) -> bool:
        async with self._writing() as conn:
            stored = await conn.fetchval(sql.SECRET)
            if stored is None:
                await conn.execute(numbered(sql.SET_SECRET), fingerprint)
        return stored is None or stored == fingerprint

    async def create_key(self, key: Key, sealed: str, limit: int, audit: Audit | None = None) -> None:
        await self.create_keys([(key, sealed)], limit, [audit] if audit else [])

    async def create_keys(self, items: list[tuple[Key, str]], limit: int, audit: Sequence[Audit] = ()) -> None:
        async with self._writing() as conn:
            for key, sealed in items:
                count = await conn.fetchval(numbered(sql.COUNT_IN_ACCOUNT), key.account)
                if count >= limit:
                    raise KeyLimitReached(key.account)
                await conn.execute(numbered(sql.INSERT_KEY), *insert_values(key, sealed))
                await self._log_change(conn, key.id)
            for entry in audit:
                await self._audit(conn, entry)

    async def get_key(self, key_id: str) -> Key | None:
        rows = await self._fetch(sql.GET_KEY, key_id)
        return row_to_key(rows[0]) if rows else None

    async def get_keys(self, key_ids: list[str]) -> list[Key]:
        rows = await self._fetch(sql.get_keys(len(key_ids)), *key_ids)
        return [row_to_key(row) for row in rows]

    async def get_sealed(self, key_id: str) -> str | None:
        rows = await self._fetch(sql.GET_SEALED, key_id)
        return rows[0][0] if rows else None

    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]:
        if account is None:
            rows = await self._fetch(sql.LIST_KEYS, after or "", limit)
        else:
            rows = await self._fetch(sql.LIST_ACCOUNT_KEYS, after or "", account, limit)
        return [row_to_key(row) for row in rows]

    async def count_keys(self) -> dict[str, int]:
        rows = await self._fetch(sql.COUNT_BY_ACCOUNT)
        return {row[0]: row[1] for row in rows}

    async def update_key(
        self, key_id: str, changes: dict[str, Any], updated_at: str, audit: Audit | None = None
    ) -> Key | None:
        fields = {name: encode(name, value) for name, value in changes.items()}
        fields["updated_at"] = updated_at
        async with self._writing() as conn:
            status = await conn.execute(numbered(sql.update_key(list(fields))), *fields.values(), key_id)
            updated = status.endswith(" 1")
            if updated:
                await self._log_change(conn, key_id)
                if audit:
                    await self._audit(conn, audit)
        return await self.get_key(key_id) if updated else None

    async def delete_key(self, key_id: str, audit: Audit | None = None) -> bool:
        async with self._writing() as conn:
            status = await conn.execute(numbered(sql.DELETE_KEY), key_id)
            deleted = status.endswith(" 1")
            if deleted:
                await self._log_change(conn, key_id)
                if audit:
                    await self._audit(conn, audit)
        return deleted

    async def record_usage(self, usage: dict[str, tuple[str, int]]) -> None:
        if not usage:
            return
        async with self._connection(transaction=True) as conn:
            await conn.executemany(numbered(sql.RECORD_USAGE), sql.usage_rows(usage))

    async def create_token(self, token: Token) -> None:
        async with self._connection() as conn:
            await conn.execute(numbered(sql.INSERT_TOKEN), *token_values(token))

    async def list_tokens(self, account: str | None) -> list[Token]:
        if account is None:
            rows = await self._fetch(sql.LIST_TOKENS)
        else:
            rows = await self._fetch(sql.LIST_ACCOUNT_TOKENS, account)
        return [row_to_token(row) for row in rows]

    async def token_by_digest(self, digest: str) -> Token | None:
        rows = await self._fetch(sql.TOKEN_BY_DIGEST, digest)
        return row_to_token(rows[0]) if rows else None

    async def delete_token(self, token_id: str, account: str | None) -> bool:
        async with self._connection() as conn:
            if account is None:
                status = await conn.execute(numbered(sql.DELETE_TOKEN), token_id)
            else:
                status = await conn.execute(numbered(sql.DELETE_ACCOUNT_TOKEN), token_id, account)
        return status.endswith(" 1")

    async def touch_token(self, token_id: str, at: str) -> None:
        async with self._connection() as conn:
            await conn.execute(numbered(sql.TOUCH_TOKEN), at, token_id)

    async def latest_change(self) -> int:
        rows = await self._fetch(sql.LATEST_CHANGE)
        return int(rows[0][0])

    async def changes_since(self, seq: int) -> Changes:
        rows = await self._fetch(sql.CHANGES_AFTER, seq)
        (bounds,) = await self._fetch(sql.CHANGE_BOUNDS)
        return changes_after(seq, rows, *bounds)

    async def add_audit(self, entry: Audit) -> None:
        async with self._connection() as conn:
            await self._audit(conn, entry)

    async def list_audit(
        self, key_id: str | None, after: int | None, limit: int, account: str | None = None
    ) -> list[Audit]:
        params = [after or 0, *([key_id] if key_id else []), *([account] if account else []), limit]
        rows = await self._fetch(sql.list_audit(bool(key_id), bool(account)), *params)
        return [row_to_audit(row) for row in rows]

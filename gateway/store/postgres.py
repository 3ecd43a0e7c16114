"""The shared database for many replicas: PostgreSQL through asyncpg.

Every serialized write (keys, the secret) takes one transaction-scoped advisory lock, so the
per-account limit holds across replicas and change-log sequence numbers commit in order.
Each key write logs the key id and NOTIFYs `gateway_changes`; every replica LISTENs on a
connection of its own and applies the change within milliseconds. If that connection is
lost, whatever the error (a cut, a restart, a failover), the replica keeps serving from memory,
says so once, reconnects with backoff, says so once, and reloads fully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from gateway.store.base import StoreUnavailable
from gateway.store.driver import Row
from gateway.store.migrations import LEGACY_POSTGRES
from gateway.store.sql import numbered
from gateway.store.sqlstore import SQLStore

log = logging.getLogger("gateway.store")
CHANNEL = "gateway_changes"
WRITE_LOCK = 7_412_001  # advisory lock ids: any constant unlikely to clash with the application's
MIGRATION_LOCK = 7_412_002
POLL_SECONDS = 1.0  # a safety net: notifications normally arrive first
CONNECT_TIMEOUT = 3.0
TYPES = {"serial": "BIGSERIAL PRIMARY KEY", "bool": "BOOLEAN", "bigint": "BIGINT", "real": "DOUBLE PRECISION"}
# the listener's reconnect backoff; it starts again from the least only after a connection that
# lasted, so a server that drops every connection at once is not retried (and logged) in a loop
RETRY_SECONDS, RETRY_MAX_SECONDS, STABLE_SECONDS = 0.05, 1.0, 5.0
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


def affected(status: str) -> int:
    """The row count in a command status (`UPDATE 1`, `INSERT 0 1`); 0 for one without."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


class _Session:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, statement: str, *params: Any) -> list[Row]:
        return await self.conn.fetch(numbered(statement), *params)

    async def execute(self, statement: str, *params: Any) -> int:
        return affected(await self.conn.execute(numbered(statement), *params))

    async def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(numbered(statement), rows)

    async def announce(self, seq: int) -> None:
        await self.conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(seq))  # delivered at commit


class PostgresDriver:
    types = TYPES
    legacy_versions = LEGACY_POSTGRES

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

    async def connect(self) -> None:
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

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever())

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

    # statements
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

    async def fetch(self, statement: str, *params: Any) -> list[Row]:
        async with self._connection() as conn:
            return await conn.fetch(numbered(statement), *params)

    async def run(self, statement: str, *params: Any) -> int:
        async with self._connection() as conn:
            return affected(await conn.execute(numbered(statement), *params))

    @asynccontextmanager
    async def write(self, serialized: bool = True) -> AsyncIterator[_Session]:
        """One transaction; a serialized one first takes an advisory lock that every replica's
        serialized writes take too."""
        async with self._connection(transaction=True) as conn:
            if serialized:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            yield _Session(conn)

    @asynccontextmanager
    async def migrating(self) -> AsyncIterator[_Session]:
        async with self._connection(transaction=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            yield _Session(conn)


class PostgresStore(SQLStore):
    """The store on one PostgreSQL database (or schema of one)."""

    def __init__(self, url: str) -> None:
        self.postgres = PostgresDriver(url)
        super().__init__(self.postgres)

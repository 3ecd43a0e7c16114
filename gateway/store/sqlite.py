"""The embedded database: one SQLite file in WAL mode, synchronous=FULL.

Every write runs in `BEGIN IMMEDIATE`, which takes the file's one write lock, so writes are
serialized across the processes on the file. A commit that logged a key change rings the
other processes' doorbells (store/doorbell.py); a 250 ms poll of `PRAGMA data_version` is the
safety net. SQLite's own errors (a full disk, a damaged or vanished file, a lock held too long)
become `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from gateway.store.base import StoreUnavailable
from gateway.store.doorbell import Doorbell
from gateway.store.driver import Row
from gateway.store.sqlstore import SQLStore

POLL_SECONDS = 0.25  # a safety net: a peer's doorbell normally arrives first
TYPES = {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "bool": "INTEGER", "bigint": "INTEGER", "real": "REAL"}
# where the processes on this file ring each other (store/doorbell.py)
BELL_FOLDER = "SELECT value FROM meta WHERE name = 'doorbell'"
SET_BELL_FOLDER = "INSERT OR REPLACE INTO meta (name, value) VALUES ('doorbell', ?)"


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as err:
        raise StoreUnavailable(str(err)) from err


class _Session:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.announced = False

    async def fetch(self, statement: str, *params: Any) -> list[Row]:
        return list(await self.db.execute_fetchall(statement, params))

    async def execute(self, statement: str, *params: Any) -> int:
        return (await self.db.execute(statement, params)).rowcount

    async def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.db.executemany(statement, rows)

    async def announce(self, seq: int) -> None:
        self.announced = True


class SQLiteDriver:
    types = TYPES
    legacy_versions: dict[int, int] = {}  # the one list's numbers are SQLite's

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._marker: int | None = None
        self.doorbell = Doorbell()

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    async def connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _unavailable():
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self.db.execute("PRAGMA busy_timeout = 10000")
            await self._wal()
            await self.db.execute("PRAGMA synchronous = FULL")

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

    async def start(self) -> None:
        # Other processes' commits count from now: one landing before the first poll (while
        # the keyring loads) must not be taken as the starting point and missed.
        self._marker = await self._data_version()
        await self._open_doorbell()

    async def _open_doorbell(self) -> None:
        """Listen for peers' bells in the folder the database names, naming a new one if need be
        (in a write transaction, so processes opening the file together agree on one folder)."""
        async with self.write() as session:
            rows = await session.fetch(BELL_FOLDER)
            made = self.doorbell.open(self.path, rows[0][0] if rows else None)
            if made is not None:
                await session.execute(SET_BELL_FOLDER, made)

    async def close(self) -> None:
        self.doorbell.close()
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def fetch(self, statement: str, *params: Any) -> list[Row]:
        with _unavailable():
            return list(await self.db.execute_fetchall(statement, params))

    async def run(self, statement: str, *params: Any) -> int:
        async with self.write() as session:
            return await session.execute(statement, *params)

    @asynccontextmanager
    async def write(self, serialized: bool = True) -> AsyncIterator[_Session]:
        """One immediate (write-locked) transaction, committed before the caller answers. Every
        write is serialized: SQLite has one write lock per file."""
        async with self._write_lock:
            with _unavailable():
                await self.db.execute("BEGIN IMMEDIATE")
                session = _Session(self.db)
                try:
                    yield session
                except BaseException:
                    await self.db.execute("ROLLBACK")
                    raise
                await self.db.execute("COMMIT")
            if session.announced:
                self.doorbell.ring()

    migrating = write

    async def _data_version(self) -> int:
        rows = await self.fetch("PRAGMA data_version")
        return int(rows[0][0])

    async def wait_for_change(self) -> str:
        """When a peer rings, or after 250 ms: "changed" if another process committed
        (PRAGMA data_version moved)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):
                await self.doorbell.rung.wait()
        self.doorbell.rung.clear()
        marker = await self._data_version()
        changed = self._marker is not None and marker != self._marker
        self._marker = marker
        return "changed" if changed else "none"


class SQLiteStore(SQLStore):
    """The store on one SQLite file."""

    def __init__(self, path: str) -> None:
        self.sqlite = SQLiteDriver(path)
        super().__init__(self.sqlite)

    @property
    def _doorbell(self) -> Doorbell:
        return self.sqlite.doorbell

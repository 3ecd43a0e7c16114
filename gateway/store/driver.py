"""What a database must provide under `SQLStore`: the few things that differ between them.

Statements arrive written once (`?` placeholders, see sql.py); a driver binds them its own way,
runs them on its connections, wraps writes in its own transactions and locks, tells the other
processes of a key change its own way, and raises `StoreUnavailable` for a failing database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = Sequence[Any]


class Session(Protocol):
    """One connection inside one transaction."""

    async def fetch(self, statement: str, *params: Any) -> list[Row]: ...
    async def execute(self, statement: str, *params: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def announce(self, seq: int) -> None:
        """Change `seq` was logged: tell the other processes once this transaction commits."""
        ...


class Driver(Protocol):
    @property
    def types(self) -> Mapping[str, str]:
        """The column types that migrations.py leaves open."""
        ...

    @property
    def legacy_versions(self) -> Mapping[int, int]:
        """Version numbers of this database's own older list -> the one list's."""
        ...

    async def connect(self) -> None:
        """Reach the database (before the schema is migrated)."""
        ...

    async def start(self) -> None:
        """Start hearing other processes' changes (once the schema is current)."""
        ...

    async def close(self) -> None:
        """Release everything; safe after a failed or partial connect."""
        ...

    async def fetch(self, statement: str, *params: Any) -> list[Row]: ...
    async def run(self, statement: str, *params: Any) -> int:
        """One write on its own, committed; the number of rows it changed."""
        ...

    def write(self, serialized: bool = True) -> AbstractAsyncContextManager[Session]:
        """A write transaction, committed on exit. `serialized`: one at a time across every
        process (the per-account limit and the change log's order need it)."""
        ...

    def migrating(self) -> AbstractAsyncContextManager[Session]:
        """The transaction that migrates, one process at a time."""
        ...

    async def wait_for_change(self) -> str: ...

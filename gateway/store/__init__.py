"""Persistent key storage behind one interface; pick the backend from the database URL."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.model import Key


class KeyLimitReached(Exception):
    """The account already holds its maximum number of keys."""


class StoreUnavailable(Exception):
    """The database cannot be reached; callers answer 503."""


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def check_secret(self, fingerprint: str) -> bool:
        """Record the secret-key fingerprint on first use; False if a different one is stored."""
        ...

    async def create_key(self, key: Key, sealed: str, limit: int) -> None: ...
    async def get_key(self, key_id: str) -> Key | None: ...
    async def get_sealed(self, key_id: str) -> str | None: ...
    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]: ...
    async def count_keys(self) -> dict[str, int]: ...
    async def update_key(self, key_id: str, changes: dict[str, Any], updated_at: str) -> Key | None: ...
    async def delete_key(self, key_id: str) -> bool: ...
    async def all_keys(self) -> list[Key]: ...
    async def record_usage(self, usage: dict[str, tuple[str, int]]) -> None: ...
    async def change_marker(self) -> int:
        """A number that changes whenever another process commits (cheap to poll)."""
        ...


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :])
    raise ValueError(f"unsupported database URL {url!r}")

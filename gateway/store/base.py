"""The store's interface: what every backend provides, the records it returns, its errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.record import Key
from gateway.core.tokens import Token


@dataclass(frozen=True)
class Changes:
    """Admin writes logged after a position: `key_ids` None means "pruned: reload everything"."""

    latest: int
    key_ids: list[str] | None
    newest_at: float  # commit time (epoch seconds) of the newest change, 0 if none


@dataclass(frozen=True)
class Audit:
    """One audit entry: an admin write or a reveal. `changes`: field -> {before, after}."""

    at: str
    action: str
    key_id: str
    changes: dict[str, Any]
    seq: int = 0
    actor: str = "root"  # the admin token that acted: its id, or "root"
    account: str | None = None  # the key's account, so account-scoped readers see their own

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "key_id": self.key_id,
            "before": {field: change["before"] for field, change in self.changes.items() if isinstance(change, dict)},
            "after": {field: change["after"] for field, change in self.changes.items() if isinstance(change, dict)},
            "changes": self.changes,
        }


class KeyLimitReached(Exception):
    """The account already holds its maximum number of keys."""


class SchemaTooNew(Exception):
    """The database was migrated by a newer gateway than this one."""


class StoreUnavailable(Exception):
    """The database cannot be reached or fails; callers answer 503."""


# What a failing database raises through the store interface: each driver turns its own
# library's errors (a lost PostgreSQL; SQLite's full disk, damaged or vanished file, a lock held
# too long) into StoreUnavailable, so nothing above the store imports a database module.
STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable,)


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def check_secret(self, fingerprint: str) -> bool:
        """Record the secret-key fingerprint on first use; False if a different one is stored."""
        ...

    async def create_key(self, key: Key, sealed: str, limit: int, audit: Audit | None = None) -> None: ...
    async def create_keys(self, items: list[tuple[Key, str]], limit: int, audit: Sequence[Audit] = ()) -> None: ...
    async def add_audit(self, entry: Audit) -> None: ...
    async def list_audit(
        self, key_id: str | None, after: int | None, limit: int, account: str | None = None
    ) -> list[Audit]: ...
    async def create_token(self, token: Token) -> None: ...
    async def list_tokens(self, account: str | None) -> list[Token]: ...
    async def token_by_digest(self, digest: str) -> Token | None: ...
    async def delete_token(self, token_id: str, account: str | None) -> bool: ...
    async def touch_token(self, token_id: str, at: str) -> None: ...
    async def get_keys(self, key_ids: list[str]) -> list[Key]: ...
    async def changes_since(self, seq: int) -> Changes: ...
    async def latest_change(self) -> int: ...
    async def get_key(self, key_id: str) -> Key | None: ...
    async def get_sealed(self, key_id: str) -> str | None: ...
    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]: ...
    async def count_keys(self) -> dict[str, int]: ...
    async def update_key(
        self, key_id: str, changes: dict[str, Any], updated_at: str, audit: Audit | None = None
    ) -> Key | None: ...
    async def delete_key(self, key_id: str, audit: Audit | None = None) -> bool: ...

    async def record_usage(self, usage: dict[str, tuple[str, int]]) -> None: ...
    async def wait_for_change(self) -> str:
        """Wait a little for other processes' writes: "none", "changed" (read the change log),
        or "resync" (the connection to the store was lost and is back: reload everything)."""
        ...

"""The keyring kept current from the store's change feed.

Every process holds every key in memory (the data path never awaits the database). Other
processes' admin writes reach it through the store's change log: applied key by key, or by a
full reload when the log cannot say what changed (it was pruned past our position, or the
connection to the store was lost and is back). This process's own admin writes are applied
at once (`put`, `remove`), so the very next request sees them.

keyring imports core only (import-linter), so the store arrives as `KeySource`: the five
calls this needs, typed here, which `gateway.store.Store` satisfies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.core.record import Key
from gateway.keyring.index import Keyring, Rebuild

log = logging.getLogger("gateway.keyring")
LOAD_BATCH = 2000  # keys per read: a reload never holds every row at once, statements stay bounded


class ChangeLog(Protocol):
    """Admin writes logged after a position (`gateway.store.Changes`)."""

    @property
    def latest(self) -> int: ...
    @property
    def key_ids(self) -> list[str] | None:
        """The keys written since; None: the log was pruned past the position, reload all."""
        ...

    @property
    def newest_at(self) -> float:
        """Commit time (epoch seconds) of the newest change, 0 if none."""
        ...


class KeySource(Protocol):
    """What the feed reads from the store."""

    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]: ...
    async def get_keys(self, key_ids: list[str]) -> list[Key]: ...
    async def latest_change(self) -> int: ...
    async def changes_since(self, seq: int) -> ChangeLog: ...
    async def wait_for_change(self) -> str:
        """ "none", "changed" (read the log) or "resync" (the connection is back: reload all)."""
        ...


class KeyFeed:
    """Keeps one keyring equal to the store. `lock` is held across every read of the store and
    the keyring update it leads to, and admin writes of this process hold it across their store
    write and `put`/`remove`: otherwise a key read before a local write could be put after it,
    and the keyring would hold the older version until the next change of that key."""

    def __init__(self, store: KeySource, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring
        self.position = 0  # the change-log position the keyring reflects
        self.lock = asyncio.Lock()

    async def load(self) -> None:
        """Rebuild the keyring from the store. The position is read first: a write that lands
        during the load is applied once more later, never missed."""
        async with self.lock:
            self.position = await self.store.latest_change()
            await self._load_all()

    async def catch_up(self) -> ChangeLog:
        """Apply the writes logged after our position, key by key."""
        async with self.lock:
            changes = await self.store.changes_since(self.position)
            ids = changes.key_ids
            if ids is None:
                await self._load_all()
            elif ids:
                found: dict[str, Key] = {}
                for start in range(0, len(ids), LOAD_BATCH):
                    found.update((key.id, key) for key in await self.store.get_keys(ids[start : start + LOAD_BATCH]))
                for key_id in ids:
                    key = found.get(key_id)
                    if key is None:
                        self.keyring.remove(key_id)
                    else:
                        self.keyring.put(key)
            self.position = changes.latest
            return changes

    async def follow(self) -> ChangeLog | None:
        """Wait a little for the store's next report and act on it; the log applied, if any."""
        what = await self.store.wait_for_change()
        if what == "resync":
            await self.load()
            log.info("keyring reloaded from the store (%d keys)", len(self.keyring))
        elif what == "changed":
            return await self.catch_up()
        return None

    def put(self, key: Key) -> None:
        """A key this process just wrote (the caller holds `lock`)."""
        self.keyring.put(key)

    def remove(self, key_id: str) -> None:
        """A key this process just deleted (the caller holds `lock`)."""
        self.keyring.remove(key_id)

    async def _load_all(self) -> None:
        fresh = Rebuild()
        after = None
        while True:
            batch = await self.store.list_keys(None, after, LOAD_BATCH)
            fresh.add(batch)
            if len(batch) < LOAD_BATCH:
                break
            after = batch[-1].id
        self.keyring.install(fresh)

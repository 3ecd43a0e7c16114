"""The in-memory index the data path reads: lookup digest -> immutable key snapshot.

The hot path never touches the database. Admin writes in this process update the index
before they answer; other processes' writes arrive through the store's change feed.
Lookups go by HMAC digest, so a dict probe compares digests, never the secret itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from gateway.core.decision import Interner, KeySnapshot
from gateway.core.memo import remember
from gateway.core.record import Key
from gateway.core.sealing import could_be_secret

HOT_CACHE_SIZE = 65536


class Rebuild:
    """A keyring under construction, filled batch by batch so a reload of many keys never
    holds every row at once (the transient rows would stay in the process's memory)."""

    def __init__(self) -> None:
        self.by_digest: dict[bytes, KeySnapshot] = {}
        self.shared = Interner()

    def add(self, keys: Iterable[Key]) -> None:
        now = time.time()
        for key in keys:
            snapshot = KeySnapshot.of(key, self.shared)
            self.by_digest[bytes.fromhex(key.digest)] = snapshot
            if key.previous_digest and key.previous_live(now):
                self.by_digest[bytes.fromhex(key.previous_digest)] = snapshot.retired(key.previous_expires_at or "")


class Keyring:
    def __init__(self, digest: Callable[[bytes], bytes], hot_size: int = HOT_CACHE_SIZE) -> None:
        self._digest = digest
        self._hot_size = hot_size
        self._by_digest: dict[bytes, KeySnapshot] = {}
        self._digests_of_id: dict[str, tuple[bytes, ...]] = {}  # a key's digests: current, previous
        # presented value -> snapshot: hot clients skip the HMAC and the big index. Only
        # values of real keys enter it (never misses, so junk cannot evict them); it is
        # bounded in entries, and every entry is one secret long. Emptied on every change,
        # so a revocation applies to the very next request.
        self._hot: dict[bytes, KeySnapshot] = {}
        self._shared = Interner()

    def __len__(self) -> int:
        return len(self._by_digest)

    def put(self, key: Key) -> None:
        for old in self._digests_of_id.pop(key.id, ()):
            self._by_digest.pop(old, None)
        snapshot = KeySnapshot.of(key, self._shared)
        digests = [bytes.fromhex(key.digest)]
        self._by_digest[digests[0]] = snapshot
        if key.previous_digest and key.previous_live(time.time()):
            digests.append(bytes.fromhex(key.previous_digest))
            self._by_digest[digests[1]] = snapshot.retired(key.previous_expires_at or "")
        self._digests_of_id[key.id] = tuple(digests)
        self._hot.clear()

    def remove(self, key_id: str) -> None:
        for digest in self._digests_of_id.pop(key_id, ()):
            self._by_digest.pop(digest, None)
        self._hot.clear()

    def replace_all(self, keys: Iterable[Key]) -> None:
        fresh = Rebuild()
        fresh.add(keys)
        self.install(fresh)

    def install(self, fresh: Rebuild) -> None:
        """Swap in a keyring built off to the side (one assignment each: no half state)."""
        digests: dict[str, list[bytes]] = {}
        for digest, snapshot in fresh.by_digest.items():  # current first: it was added first
            digests.setdefault(snapshot.id, []).append(digest)
        self._digests_of_id = {key_id: tuple(found) for key_id, found in digests.items()}
        self._by_digest = fresh.by_digest
        self._shared = fresh.shared
        self._hot = {}

    def lookup(self, presented: bytes) -> KeySnapshot | None:
        """The snapshot for a presented key value, None if no key has that value."""
        snapshot = self._hot.get(presented)
        if snapshot is not None:
            return snapshot
        if not could_be_secret(presented):
            return None
        snapshot = self._by_digest.get(self._digest(presented))
        if snapshot is not None and self._hot_size:
            remember(self._hot, presented, snapshot, self._hot_size)
        return snapshot


class Usage:
    """Per-key request counts and last use, kept in memory and flushed in batches."""

    def __init__(self) -> None:
        self._pending: dict[str, list[float | int]] = {}

    def touch(self, key_id: str, now: float) -> None:
        entry = self._pending.get(key_id)
        if entry is None:
            self._pending[key_id] = [now, 1]
        else:
            entry[0] = now
            entry[1] += 1

    def peek(self, key_id: str) -> tuple[float, int] | None:
        entry = self._pending.get(key_id)
        return None if entry is None else (float(entry[0]), int(entry[1]))

    def take(self) -> dict[str, tuple[float, int]]:
        pending, self._pending = self._pending, {}
        return {key_id: (float(at), int(count)) for key_id, (at, count) in pending.items()}

    def restore(self, batch: dict[str, tuple[float, int]]) -> None:
        """Put back a batch whose flush failed, merged with what arrived since."""
        for key_id, (at, count) in batch.items():
            entry = self._pending.get(key_id)
            if entry is None:
                self._pending[key_id] = [at, count]
            else:
                entry[0] = max(float(entry[0]), at)
                entry[1] += count

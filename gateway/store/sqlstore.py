"""The store, written once for every SQL database: the logic here, the differences in a driver.

Every admin write logs the changed key id in the same transaction (other processes apply it
key by key) and is committed before the caller answers, so an acknowledged write survives a
crash. Key writes are serialized across processes, so the per-account limit holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from gateway.core.record import Key
from gateway.core.tokens import Token
from gateway.store import migrations, sql
from gateway.store.base import Audit, Changes, KeyLimitReached, SchemaTooNew
from gateway.store.driver import Driver, Session
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


class SQLStore:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def open(self) -> None:
        try:
            await self.driver.connect()
            await self._migrate()
            await self.driver.start()
        except BaseException:
            await self.driver.close()  # an open connection's thread would keep the process alive
            raise

    async def _migrate(self) -> None:
        async with self.driver.migrating() as session:
            await session.execute(migrations.VERSION_TABLE)
            ((found,),) = await session.fetch(migrations.READ_VERSION)
            found = found or 0
            current = self.driver.legacy_versions.get(found, found)
            if current > migrations.SCHEMA_VERSION:
                raise SchemaTooNew(f"schema v{found} is newer than this gateway's (v{migrations.SCHEMA_VERSION})")
            for statement in migrations.steps(current, self.driver.types):
                await session.execute(statement)
            await session.execute(migrations.CLEAR_VERSION)
            await session.execute(migrations.WRITE_VERSION, migrations.SCHEMA_VERSION)

    async def close(self) -> None:
        await self.driver.close()

    async def wait_for_change(self) -> str:
        return await self.driver.wait_for_change()

    # writes, each in one transaction
    async def check_secret(self, fingerprint: str) -> bool:
        """Record the secret-key fingerprint on first use; False if a different one is stored."""
        async with self.driver.write() as session:
            rows = await session.fetch(sql.SECRET)
            if not rows:
                await session.execute(sql.SET_SECRET, fingerprint)
        return not rows or rows[0][0] == fingerprint

    async def create_key(self, key: Key, sealed: str, limit: int, audit: Audit | None = None) -> None:
        await self.create_keys([(key, sealed)], limit, [audit] if audit else [])

    async def create_keys(self, items: list[tuple[Key, str]], limit: int, audit: Sequence[Audit] = ()) -> None:
        """Insert keys in one transaction; all or none, the per-account limit checked for each."""
        async with self.driver.write() as session:
            for key, sealed in items:
                ((count,),) = await session.fetch(sql.COUNT_IN_ACCOUNT, key.account)
                if count >= limit:
                    raise KeyLimitReached(key.account)
                await session.execute(sql.INSERT_KEY, *insert_values(key, sealed))
                await _log_change(session, key.id)
            for entry in audit:
                await session.execute(sql.INSERT_AUDIT, *_audit_values(entry))

    async def update_key(
        self, key_id: str, changes: dict[str, Any], updated_at: str, audit: Audit | None = None
    ) -> Key | None:
        fields = {name: encode(name, value) for name, value in changes.items()}
        fields["updated_at"] = updated_at
        async with self.driver.write() as session:
            updated = await session.execute(sql.update_key(list(fields)), *fields.values(), key_id)
            if updated:
                await _log_change(session, key_id)
                if audit:
                    await session.execute(sql.INSERT_AUDIT, *_audit_values(audit))
        return await self.get_key(key_id) if updated else None

    async def delete_key(self, key_id: str, audit: Audit | None = None) -> bool:
        async with self.driver.write() as session:
            deleted = await session.execute(sql.DELETE_KEY, key_id)
            if deleted:
                await _log_change(session, key_id)
                if audit:
                    await session.execute(sql.INSERT_AUDIT, *_audit_values(audit))
        return deleted > 0

    async def record_usage(self, usage: dict[str, tuple[str, int]]) -> None:
        """Usage changes no key's rules: not serialized with the admin writes, and not announced."""
        if not usage:
            return
        async with self.driver.write(serialized=False) as session:
            await session.executemany(sql.RECORD_USAGE, sql.usage_rows(usage))

    async def add_audit(self, entry: Audit) -> None:
        await self.driver.run(sql.INSERT_AUDIT, *_audit_values(entry))

    async def create_token(self, token: Token) -> None:
        await self.driver.run(sql.INSERT_TOKEN, *token_values(token))

    async def delete_token(self, token_id: str, account: str | None) -> bool:
        if account is None:
            return await self.driver.run(sql.DELETE_TOKEN, token_id) > 0
        return await self.driver.run(sql.DELETE_ACCOUNT_TOKEN, token_id, account) > 0

    async def touch_token(self, token_id: str, at: str) -> None:
        await self.driver.run(sql.TOUCH_TOKEN, at, token_id)

    # reads
    async def get_key(self, key_id: str) -> Key | None:
        rows = await self.driver.fetch(sql.GET_KEY, key_id)
        return row_to_key(rows[0]) if rows else None

    async def get_keys(self, key_ids: list[str]) -> list[Key]:
        rows = await self.driver.fetch(sql.get_keys(len(key_ids)), *key_ids)
        return [row_to_key(row) for row in rows]

    async def get_sealed(self, key_id: str) -> str | None:
        rows = await self.driver.fetch(sql.GET_SEALED, key_id)
        return rows[0][0] if rows else None

    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]:
        if account is None:
            rows = await self.driver.fetch(sql.LIST_KEYS, after or "", limit)
        else:
            rows = await self.driver.fetch(sql.LIST_ACCOUNT_KEYS, after or "", account, limit)
        return [row_to_key(row) for row in rows]

    async def count_keys(self) -> dict[str, int]:
        rows = await self.driver.fetch(sql.COUNT_BY_ACCOUNT)
        return {row[0]: row[1] for row in rows}

    async def list_audit(
        self, key_id: str | None, after: int | None, limit: int, account: str | None = None
    ) -> list[Audit]:
        params = [after or 0, *([key_id] if key_id else []), *([account] if account else []), limit]
        rows = await self.driver.fetch(sql.list_audit(bool(key_id), bool(account)), *params)
        return [row_to_audit(row) for row in rows]

    async def list_tokens(self, account: str | None) -> list[Token]:
        if account is None:
            rows = await self.driver.fetch(sql.LIST_TOKENS)
        else:
            rows = await self.driver.fetch(sql.LIST_ACCOUNT_TOKENS, account)
        return [row_to_token(row) for row in rows]

    async def token_by_digest(self, digest: str) -> Token | None:
        rows = await self.driver.fetch(sql.TOKEN_BY_DIGEST, digest)
        return row_to_token(rows[0]) if rows else None

    async def latest_change(self) -> int:
        rows = await self.driver.fetch(sql.LATEST_CHANGE)
        return int(rows[0][0])

    async def changes_since(self, seq: int) -> Changes:
        rows = await self.driver.fetch(sql.CHANGES_AFTER, seq)
        (bounds,) = await self.driver.fetch(sql.CHANGE_BOUNDS)
        return changes_after(seq, rows, *bounds)


async def _log_change(session: Session, key_id: str) -> None:
    """Log a key change for the other processes, and prune the log every 1000 changes."""
    ((seq,),) = await session.fetch(sql.LOG_CHANGE, key_id, time.time())
    await session.announce(seq)
    if seq % 1000 == 0:
        await session.execute(sql.PRUNE_CHANGES, seq - CHANGES_KEPT)


def _audit_values(entry: Audit) -> tuple[Any, ...]:
    return (entry.at, entry.action, entry.key_id, json.dumps(entry.changes), entry.actor, entry.account)

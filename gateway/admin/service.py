"""The key lifecycle behind the admin API: validate, persist, then update the keyring.

Every write is committed to the store before the in-memory keyring changes, and the keyring
changes before the call answers, so the very next proxied request sees it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from gateway.config import Limits
from gateway.core import sealing
from gateway.core.errors import RuleError
from gateway.core.record import (
    DEFAULT_ACCOUNT,
    DEFAULT_NAME,
    Key,
    iso_time,
    mask_secret,
    parse_account,
    parse_changes,
    utc_now,
)
from gateway.keyring.index import Keyring, Rebuild, Usage
from gateway.store import Audit, Changes, KeyLimitReached, Store

audit_log = logging.getLogger("gateway.audit")
MAX_PAGE = 500
LOAD_BATCH = 2000
DEFAULT_PAGE = 50


def _visible(key: Key) -> dict[str, Any]:
    """The editable fields as the API shows them: what the audit trail records."""
    shown = key.to_json()
    return {name: shown[name] for name in ("name", "account", "apps", "interfaces", "ip_whitelist", "enabled")}


def encode_cursor(key_id: str) -> str:
    return base64.urlsafe_b64encode(key_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        key_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        key_id = ""
    if not sealing.is_id(key_id):
        raise RuleError("cursor", "cursor is not one this API returned")
    return key_id


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_PAGE:
        raise RuleError("limit", f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(text)


class KeyService:
    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        box: sealing.SecretBox,
        limits: Limits,
        usage: Usage,
        known_interface: Callable[[str], bool],
    ) -> None:
        self.known_interface = known_interface  # the route table's catalogue
        self.store = store
        self.keyring = keyring
        self.box = box
        self.limits = limits
        self.usage = usage
        # Admin writes are serialized so a write and its keyring update are never interleaved
        # with another write (an update must not re-insert a key a delete just removed).
        self._lock = asyncio.Lock()

    def _with_usage(self, key: Key) -> Key:
        """Merge usage not yet flushed, so `last_used_at` is current in this process."""
        pending = self.usage.peek(key.id)
        if pending is None:
            return key
        at, count = pending
        last = iso_time(at)
        if key.last_used_at is not None and key.last_used_at > last:
            last = key.last_used_at
        return dataclasses.replace(key, last_used_at=last, request_count=key.request_count + count)

    async def _insert(
        self, fields: dict[str, Any], action: str = "create", origin: str | None = None
    ) -> tuple[Key, str]:
        secret = sealing.generate_secret()
        now = utc_now()
        key = Key(
            id=sealing.generate_id(),
            name=fields.get("name", DEFAULT_NAME),
            account=fields.get("account", DEFAULT_ACCOUNT),
            key_masked=mask_secret(secret),
            digest=self.box.digest(secret),
            enabled=fields.get("enabled", True),
            apps=fields.get("apps"),
            interfaces=fields.get("interfaces"),
            ip_whitelist=fields.get("ip_whitelist", ()),
            created_at=now,
            updated_at=now,
        )
        changes = {name: {"before": None, "after": value} for name, value in _visible(key).items()}
        if origin is not None:
            changes["copied_from"] = {"before": None, "after": origin}
        audit = Audit(now, action, key.id, changes)
        try:
            await self.store.create_key(key, self.box.encrypt(secret, key.id), self.limits.keys_per_account, audit)
        except KeyLimitReached:
            limit = self.limits.keys_per_account
            message = f"account {key.account!r} already has {limit} keys, the most allowed"
            raise RuleError("account", message, "key_limit_reached") from None
        self.keyring.put(key)
        return key, secret

    async def create(self, body: Any) -> tuple[Key, str]:
        fields = parse_changes(body, self.limits.ips_per_key, creating=True, known=self.known_interface)
        async with self._lock:
            return await self._insert(fields)

    async def get(self, key_id: str) -> Key:
        key = await self.store.get_key(key_id) if sealing.is_id(key_id) else None
        if key is None:
            raise RuleError(None, f"no key {key_id}", "not_found")
        return self._with_usage(key)

    async def list(self, account: str | None, cursor: str | None, limit: str | None) -> tuple[list[Key], str | None]:
        page = parse_limit(limit)
        after = decode_cursor(cursor) if cursor else None
        account = parse_account(account) if account else None
        keys = await self.store.list_keys(account, after, page + 1)
        more = len(keys) > page
        keys = keys[:page]
        next_cursor = encode_cursor(keys[-1].id) if more else None
        return [self._with_usage(key) for key in keys], next_cursor

    async def update(self, key_id: str, body: Any) -> Key:
        changes = parse_changes(body, self.limits.ips_per_key, creating=False, known=self.known_interface)
        async with self._lock:
            key = await self.get(key_id)
            before = _visible(key)
            after = _visible(dataclasses.replace(key, **changes))
            diff = {f: {"before": before[f], "after": after[f]} for f in after if before[f] != after[f]}
            if diff:
                now = utc_now()
                key = await self.store.update_key(key_id, changes, now, Audit(now, "update", key_id, diff))
                if key is None:
                    raise RuleError(None, f"no key {key_id}", "not_found")
                self.keyring.put(key)
        return self._with_usage(key)

    async def copy(self, key_id: str) -> tuple[Key, str]:
        async with self._lock:
            source = await self.get(key_id)
            fields = {
                "name": source.name,
                "account": source.account,
                "apps": source.apps,
                "interfaces": source.interfaces,
                "ip_whitelist": source.ip_whitelist,
                "enabled": source.enabled,
            }
            return await self._insert(fields, "copy", source.id)

    async def delete(self, key_id: str) -> None:
        async with self._lock:
            key = await self.get(key_id)
            changes = {name: {"before": value, "after": None} for name, value in _visible(key).items()}
            if not await self.store.delete_key(key_id, Audit(utc_now(), "delete", key_id, changes)):
                raise RuleError(None, f"no key {key_id}", "not_found")
            self.keyring.remove(key_id)

    async def reveal(self, key_id: str) -> str:
        sealed = await self.store.get_sealed(key_id) if sealing.is_id(key_id) else None
        if sealed is None:
            raise RuleError(None, f"no key {key_id}", "not_found")
        await self.store.add_audit(Audit(utc_now(), "reveal", key_id, {}))
        audit_log.info("reveal key=%s", key_id)
        return self.box.decrypt(sealed, key_id)

    async def audit(self, key_id: str | None, cursor: str | None, limit: str | None) -> tuple[list[Audit], str | None]:
        page = parse_limit(limit)
        after = None
        if cursor:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
                raise RuleError("cursor", "cursor is not one this API returned")
            after = int(cursor)
        if key_id is not None and not sealing.is_id(key_id):
            raise RuleError("key_id", "key_id is not a key id (k_ and 26 characters)")
        entries = await self.store.list_audit(key_id, after, page + 1)
        more = len(entries) > page
        entries = entries[:page]
        return entries, str(entries[-1].seq) if more else None

    async def _load_keyring(self) -> None:
        fresh = Rebuild()
        after = None
        while True:
            batch = await self.store.list_keys(None, after, LOAD_BATCH)
            fresh.add(batch)
            if len(batch) < LOAD_BATCH:
                break
            after = batch[-1].id
        self.keyring.install(fresh)

    async def reload(self) -> int:
        """Rebuild the keyring from the store; returns the change-log position it reflects."""
        async with self._lock:
            seq = await self.store.latest_change()
            await self._load_keyring()
            return seq

    async def apply_changes(self, seq: int) -> Changes:
        """Apply other processes' writes logged after `seq`, key by key."""
        async with self._lock:
            changes = await self.store.changes_since(seq)
            ids = changes.key_ids
            if ids is None:  # the log was pruned past our position: start over
                await self._load_keyring()
            elif ids:
                found: dict[str, Key] = {}
                for start in range(0, len(ids), LOAD_BATCH):  # bounded statement size on both backends
                    found.update((key.id, key) for key in await self.store.get_keys(ids[start : start + LOAD_BATCH]))
                for key_id in ids:
                    key = found.get(key_id)
                    if key is None:
                        self.keyring.remove(key_id)
                    else:
                        self.keyring.put(key)
            return changes

"""The key lifecycle behind the admin API: validate, persist, then update the keyring.

Every write is committed to the store before the in-memory keyring changes, and the keyring
changes (through the feed, `gateway.keyring.feed`) before the call answers, so the very next
proxied request in this process sees it; other processes learn of it from the change log.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import time
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
    parse_time,
    utc_now,
)
from gateway.core.tokens import Principal, Token, parse_token_request, principal_of
from gateway.keyring.feed import KeyFeed
from gateway.keyring.index import Usage
from gateway.store import Audit, KeyLimitReached, Store

audit_log = logging.getLogger("gateway.audit")
MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_GRACE = 604_800  # a week: the longest a rotated-out secret keeps working
TOKEN_TOUCH_SECONDS = 60  # a token's last_used_at is written at most this often


def _visible(key: Key) -> dict[str, Any]:
    """The editable fields as the API shows them: what the audit trail records."""
    shown = key.to_json()
    fields = ("name", "account", "apps", "interfaces", "ip_whitelist", "enabled", "expires_at", "rate_limits")
    return {name: shown[name] for name in fields}


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


def parse_grace(body: Any) -> int:
    """`{grace_seconds?: 0..604800}` for a rotation; an empty body means 0."""
    if body is None:
        return 0
    if not isinstance(body, dict):
        raise RuleError(None, "the body must be a JSON object", "invalid_json")
    for field in body:
        if field != "grace_seconds":
            raise RuleError(field, f"unknown field {field}")
    grace = body.get("grace_seconds", 0)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE:
        raise RuleError("grace_seconds", f"grace_seconds must be a whole number from 0 to {MAX_GRACE}")
    return grace


MAX_SEARCH = 100


def key_filter(search: str | None, status: str | None) -> Callable[[Key], bool] | None:
    """The listing's filters as one test, None when there is none. `search` matches a name
    (any case, any part), a key id (from its start) or a masked key (any part of it)."""
    if status not in (None, "", "enabled", "disabled"):
        raise RuleError("status", "status must be enabled or disabled")
    text = (search or "").strip()
    if len(text) > MAX_SEARCH:
        raise RuleError("q", f"q must be at most {MAX_SEARCH} characters")
    if not text and not status:
        return None
    folded = text.casefold()
    enabled = None if not status else status == "enabled"

    def wanted(key: Key) -> bool:
        if enabled is not None and key.enabled != enabled:
            return False
        return not text or folded in key.name.casefold() or key.id.startswith(text) or text in key.key_masked

    return wanted


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
        feed: KeyFeed,
        box: sealing.SecretBox,
        limits: Limits,
        usage: Usage,
        known_interface: Callable[[str], bool],
        prefix: str = "",
    ) -> None:
        self.known_interface = known_interface  # the route table's catalogue
        self.prefix = prefix  # keys.prefix: the start of every new secret
        self.store = store
        self.feed = feed
        self.box = box
        self.limits = limits
        self.usage = usage
        # Admin writes hold the feed's lock across their store write and keyring update, so
        # they never interleave with another write (an update must not re-insert a key a
        # delete just removed) nor with the feed applying the change log.
        self._lock = feed.lock

    @property
    def read_only(self) -> bool:
        """The store is a keys file (DB-less mode): admin writes answer 409 read_only_store."""
        return bool(getattr(self.store, "read_only", False))

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
        self, fields: dict[str, Any], actor: Principal, action: str = "create", origin: str | None = None
    ) -> tuple[Key, str]:
        secret = sealing.generate_secret(self.prefix)
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
            expires_at=fields.get("expires_at"),
            rate_limits=fields.get("rate_limits", ()),
        )
        changes = {name: {"before": None, "after": value} for name, value in _visible(key).items()}
        if origin is not None:
            changes["copied_from"] = {"before": None, "after": origin}
        audit = Audit(now, action, key.id, changes, actor=actor.id, account=key.account)
        try:
            await self.store.create_key(key, self.box.encrypt(secret, key.id), self.limits.keys_per_account, audit)
        except KeyLimitReached:
            limit = self.limits.keys_per_account
            message = f"account {key.account!r} already has {limit} keys, the most allowed"
            raise RuleError("account", message, "key_limit_reached") from None
        self.feed.put(key)
        return key, secret

    async def create(self, body: Any, actor: Principal) -> tuple[Key, str]:
        fields = parse_changes(body, self.limits.ips_per_key, creating=True, known=self.known_interface)
        account = actor.account_for(fields.get("account"))
        if account is not None:
            fields["account"] = account
        async with self._lock:
            return await self._insert(fields, actor)

    async def get(self, key_id: str, actor: Principal) -> Key:
        """The key, if it exists and the caller's account may see it (else 404 either way)."""
        key = await self.store.get_key(key_id) if sealing.is_id(key_id) else None
        if key is None or not actor.sees(key.account):
            raise RuleError(None, f"no key {key_id}", "not_found")
        return self._with_usage(key)

    async def list_keys(
        self,
        account: str | None,
        cursor: str | None,
        limit: str | None,
        actor: Principal,
        search: str | None = None,
        status: str | None = None,
    ) -> tuple[list[Key], str | None]:
        """A page of keys in id order. `search` (name, id or masked key) and `status`
        (enabled/disabled) filter it: the store is read in batches until the page is full."""
        page = parse_limit(limit)
        after = decode_cursor(cursor) if cursor else None
        account = parse_account(account) if account else None
        if actor.account is not None:
            account = actor.account_for(account)
        wanted = key_filter(search, status)
        if wanted is None:
            keys = await self.store.list_keys(account, after, page + 1)
        else:
            keys = []
            while len(keys) <= page:
                batch = await self.store.list_keys(account, after, MAX_PAGE)
                keys += [key for key in batch if wanted(key)]
                if len(batch) < MAX_PAGE:
                    break
                after = batch[-1].id
        more = len(keys) > page
        keys = keys[:page]
        next_cursor = encode_cursor(keys[-1].id) if more else None
        return [self._with_usage(key) for key in keys], next_cursor

    async def account_counts(self, actor: Principal) -> dict[str, int]:
        """Keys per account, as far as the token may see."""
        counts = await self.store.count_keys()
        if actor.account is not None:
            return {actor.account: counts.get(actor.account, 0)}
        return counts

    async def update(self, key_id: str, body: Any, actor: Principal) -> Key:
        changes = parse_changes(body, self.limits.ips_per_key, creating=False, known=self.known_interface)
        async with self._lock:
            key = await self.get(key_id, actor)
            before = _visible(key)
            after = _visible(dataclasses.replace(key, **changes))
            diff = {f: {"before": before[f], "after": after[f]} for f in after if before[f] != after[f]}
            if diff:
                now = utc_now()
                audit = Audit(now, "update", key_id, diff, actor=actor.id, account=key.account)
                updated = await self.store.update_key(key_id, changes, now, audit)
                if updated is None:
                    raise RuleError(None, f"no key {key_id}", "not_found")
                key = updated
                self.feed.put(key)
        return self._with_usage(key)

    async def rotate(self, key_id: str, body: Any, actor: Principal) -> tuple[Key, str]:
        """A new secret on the same key; the previous one is still accepted for `grace_seconds`."""
        grace = parse_grace(body)
        async with self._lock:
            key = await self.get(key_id, actor)
            secret = sealing.generate_secret(self.prefix)
            now = time.time()
            stamp = iso_time(now)
            changes: dict[str, Any] = {
                "digest": self.box.digest(secret),
                "sealed": self.box.encrypt(secret, key.id),
                "key_masked": mask_secret(secret),
                "previous_digest": key.digest if grace else None,
                "previous_expires_at": iso_time(now + grace) if grace else None,
            }
            diff = {
                "key_masked": {"before": key.key_masked, "after": changes["key_masked"]},
                "previous_expires_at": {"before": None, "after": changes["previous_expires_at"]},
            }
            audit = Audit(stamp, "rotate", key_id, diff, actor=actor.id, account=key.account)
            updated = await self.store.update_key(key_id, changes, stamp, audit)
            if updated is None:
                raise RuleError(None, f"no key {key_id}", "not_found")
            self.feed.put(updated)
        audit_log.info("rotate key=%s grace=%ds", key_id, grace)
        return self._with_usage(updated), secret

    async def copy(self, key_id: str, actor: Principal) -> tuple[Key, str]:
        async with self._lock:
            source = await self.get(key_id, actor)
            fields = {
                "name": source.name,
                "account": source.account,
                "apps": source.apps,
                "interfaces": source.interfaces,
                "ip_whitelist": source.ip_whitelist,
                "enabled": source.enabled,
                "expires_at": source.expires_at,
                "rate_limits": source.rate_limits,
            }
            return await self._insert(fields, actor, "copy", source.id)

    async def delete(self, key_id: str, actor: Principal) -> None:
        async with self._lock:
            key = await self.get(key_id, actor)
            changes = {name: {"before": value, "after": None} for name, value in _visible(key).items()}
            audit = Audit(utc_now(), "delete", key_id, changes, actor=actor.id, account=key.account)
            if not await self.store.delete_key(key_id, audit):
                raise RuleError(None, f"no key {key_id}", "not_found")
            self.feed.remove(key_id)

    async def reveal(self, key_id: str, actor: Principal) -> str:
        key = await self.get(key_id, actor)
        sealed = await self.store.get_sealed(key_id)
        if sealed is None:
            raise RuleError(None, f"no key {key_id}", "not_found")
        await self.store.add_audit(Audit(utc_now(), "reveal", key_id, {}, actor=actor.id, account=key.account))
        audit_log.info("reveal key=%s by=%s", key_id, actor.id)
        return self.box.decrypt(sealed, key_id)

    # admin tokens
    async def authenticate(self, presented: str) -> Principal | None:
        """The principal of a non-root admin token, None if no such token exists."""
        if not presented or len(presented) > 200:
            return None
        token = await self.store.token_by_digest(self.box.digest(presented))
        if token is None:
            return None
        now = time.time()
        if token.last_used_at is None or parse_time(token.last_used_at) < now - TOKEN_TOUCH_SECONDS:
            await self.store.touch_token(token.id, iso_time(now))
        return principal_of(token)

    async def create_token(self, body: Any, actor: Principal) -> tuple[Token, str]:
        name, account, permissions = parse_token_request(body, actor)
        secret = sealing.generate_token()
        token = Token(sealing.generate_token_id(), name, account, permissions, self.box.digest(secret), utc_now())
        await self.store.create_token(token)
        audit_log.info("token created id=%s by=%s permissions=%s", token.id, actor.id, ",".join(permissions))
        return token, secret

    async def list_tokens(self, actor: Principal) -> list[Token]:
        """The tokens `actor` manages: in its account, holding none of the permissions it lacks."""
        return [token for token in await self.store.list_tokens(actor.account) if actor.manages(token)]

    async def revoke_token(self, token_id: str, actor: Principal) -> None:
        """Revoke a token `actor` manages; any other, existing or not, is 404 alike. Tokens never
        change, so the check cannot go stale before the delete."""
        managed = {token.id for token in await self.list_tokens(actor)}
        if token_id not in managed or not await self.store.delete_token(token_id, actor.account):
            raise RuleError(None, f"no token {token_id[:40]}", "not_found")
        audit_log.info("token revoked id=%s by=%s", token_id, actor.id)

    async def audit(
        self, key_id: str | None, cursor: str | None, limit: str | None, actor: Principal
    ) -> tuple[list[Audit], str | None]:
        page = parse_limit(limit)
        after = None
        if cursor:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
                raise RuleError("cursor", "cursor is not one this API returned")
            after = int(cursor)
        if key_id is not None and not sealing.is_id(key_id):
            raise RuleError("key_id", "key_id is not a key id (k_ and 26 characters)")
        entries = await self.store.list_audit(key_id, after, page + 1, actor.account)
        more = len(entries) > page
        entries = entries[:page]
        return entries, str(entries[-1].seq) if more else None

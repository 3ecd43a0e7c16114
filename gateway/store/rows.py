"""How a key is laid out in a table row; shared by every backend."""

from __future__ import annotations

import json
from typing import Any

from gateway.core.ratelimit import Limit
from gateway.core.record import Key
from gateway.core.tokens import Token
from gateway.store.base import Audit, Changes

COLUMNS = (
    "id, account, name, digest, key_masked, enabled, apps, interfaces, ip_whitelist,"
    " created_at, updated_at, last_used_at, request_count, expires_at, previous_digest, previous_expires_at,"
    " rate_limits"
)
INSERT_COLUMNS = (
    "id, account, name, digest, sealed, key_masked, enabled, apps, interfaces, ip_whitelist, created_at, updated_at,"
    " expires_at, rate_limits"
)
TOKEN_COLUMNS = "id, name, account, permissions, digest, created_at, last_used_at"
JSON_FIELDS = ("apps", "interfaces", "ip_whitelist")
CHANGES_KEPT = 100_000  # change-log rows kept; a process further behind reloads everything


def encode(field: str, value: Any) -> Any:
    if field == "rate_limits":
        return json.dumps([limit.to_json() for limit in value])
    if field in JSON_FIELDS:
        return None if value is None else json.dumps(list(value))
    if field == "enabled":
        return bool(value)
    return value


def insert_values(key: Key, sealed: str) -> tuple[Any, ...]:
    """The values for INSERT_COLUMNS."""
    return (
        key.id,
        key.account,
        key.name,
        key.digest,
        sealed,
        key.key_masked,
        bool(key.enabled),
        encode("apps", key.apps),
        encode("interfaces", key.interfaces),
        encode("ip_whitelist", key.ip_whitelist),
        key.created_at,
        key.updated_at,
        key.expires_at,
        encode("rate_limits", key.rate_limits),
    )


def row_to_key(row: Any) -> Key:
    apps, interfaces, whitelist = row[6], row[7], row[8]
    return Key(
        id=row[0],
        account=row[1],
        name=row[2],
        digest=row[3],
        key_masked=row[4],
        enabled=bool(row[5]),
        apps=None if apps is None else tuple(json.loads(apps)),
        interfaces=None if interfaces is None else tuple(json.loads(interfaces)),
        ip_whitelist=tuple(json.loads(whitelist)),
        created_at=row[9],
        updated_at=row[10],
        last_used_at=row[11],
        request_count=row[12],
        expires_at=row[13],
        previous_digest=row[14],
        previous_expires_at=row[15],
        rate_limits=tuple(Limit(item["requests"], item["per"]) for item in json.loads(row[16] or "[]")),
    )


def token_values(token: Token) -> tuple[Any, ...]:
    """The values for TOKEN_COLUMNS."""
    permissions = json.dumps(list(token.permissions))
    return (token.id, token.name, token.account, permissions, token.digest, token.created_at, token.last_used_at)


def row_to_token(row: Any) -> Token:
    return Token(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5], row[6])


AUDIT_COLUMNS = "seq, at, action, key_id, changes, actor, account"


def row_to_audit(row: Any) -> Audit:
    return Audit(row[1], row[2], row[3], json.loads(row[4]), row[0], row[5], row[6])


def changes_after(seq: int, rows: Any, oldest: int, latest: int) -> Changes:
    """Interpret the change-log rows (seq, key_id, at) logged after `seq`, given the lowest
    and highest sequence numbers still logged. Sequence numbers may have gaps (rolled-back
    transactions); only a log pruned past `seq` forces a full reload."""
    if not rows:
        return Changes(max(seq, latest), [], 0.0)
    newest, newest_at = rows[-1][0], rows[-1][2]
    if oldest > seq + 1:
        return Changes(newest, None, newest_at)
    return Changes(newest, list(dict.fromkeys(row[1] for row in rows)), newest_at)

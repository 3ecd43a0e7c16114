"""Every statement both stores run, written once.

Statements use `?` placeholders and SQL that SQLite and PostgreSQL both read (booleans travel
as Python `bool`, which both drivers bind; no dialect-only functions). `numbered` turns the
placeholders into PostgreSQL's `$1, $2, ...`. The schema's few column types that differ are
filled in by each driver (migrations.py).
"""

from __future__ import annotations

import functools

from gateway.store.rows import AUDIT_COLUMNS, COLUMNS, INSERT_COLUMNS, TOKEN_COLUMNS


def marks(count: int) -> str:
    return ", ".join("?" * count)


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """PostgreSQL's placeholders: the n-th `?` becomes `$n` (no statement here quotes a `?`)."""
    pieces = sql.split("?")
    return "".join(piece + (f"${i}" if i < len(pieces) else "") for i, piece in enumerate(pieces, start=1))


SECRET = "SELECT value FROM meta WHERE name = 'secret'"
SET_SECRET = "INSERT INTO meta VALUES ('secret', ?)"
COUNT_IN_ACCOUNT = "SELECT count(*) FROM keys WHERE account = ?"
INSERT_KEY = f"INSERT INTO keys ({INSERT_COLUMNS}) VALUES ({marks(INSERT_COLUMNS.count(',') + 1)})"
GET_KEY = f"SELECT {COLUMNS} FROM keys WHERE id = ?"
GET_SEALED = "SELECT sealed FROM keys WHERE id = ?"
LIST_KEYS = f"SELECT {COLUMNS} FROM keys WHERE id > ? ORDER BY id LIMIT ?"
LIST_ACCOUNT_KEYS = f"SELECT {COLUMNS} FROM keys WHERE id > ? AND account = ? ORDER BY id LIMIT ?"
COUNT_BY_ACCOUNT = "SELECT account, count(*) FROM keys GROUP BY account"
DELETE_KEY = "DELETE FROM keys WHERE id = ?"
# usage counts merge: the later of two last-used times wins (ISO 8601 strings sort by time)
RECORD_USAGE = (
    "UPDATE keys SET request_count = request_count + ?,"
    " last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END"
    " WHERE id = ?"
)
LOG_CHANGE = "INSERT INTO changes (key_id, at) VALUES (?, ?) RETURNING seq"
PRUNE_CHANGES = "DELETE FROM changes WHERE seq <= ?"
LATEST_CHANGE = "SELECT coalesce(max(seq), 0) FROM changes"
CHANGES_AFTER = "SELECT seq, key_id, at FROM changes WHERE seq > ? ORDER BY seq"
CHANGE_BOUNDS = "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM changes"
INSERT_AUDIT = "INSERT INTO audit (at, action, key_id, changes, actor, account) VALUES (?, ?, ?, ?, ?, ?)"


def list_audit(by_key: bool, by_account: bool) -> str:
    where = "seq > ?" + (" AND key_id = ?" if by_key else "") + (" AND account = ?" if by_account else "")
    return f"SELECT {AUDIT_COLUMNS} FROM audit WHERE {where} ORDER BY seq LIMIT ?"


INSERT_TOKEN = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ({marks(TOKEN_COLUMNS.count(',') + 1)})"
LIST_TOKENS = f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"
LIST_ACCOUNT_TOKENS = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE account = ? ORDER BY id"
TOKEN_BY_DIGEST = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE digest = ?"
DELETE_TOKEN = "DELETE FROM tokens WHERE id = ?"
DELETE_ACCOUNT_TOKEN = "DELETE FROM tokens WHERE id = ? AND account = ?"
TOUCH_TOKEN = "UPDATE tokens SET last_used_at = ? WHERE id = ?"


def get_keys(count: int) -> str:
    return f"SELECT {COLUMNS} FROM keys WHERE id IN ({marks(count)})"


def update_key(fields: list[str]) -> str:
    return f"UPDATE keys SET {', '.join(f'{name} = ?' for name in fields)} WHERE id = ?"


def usage_rows(usage: dict[str, tuple[str, int]]) -> list[tuple[int, str, str, str]]:
    """RECORD_USAGE's parameters for each key: count, last use (twice), id."""
    return [(count, last_used, last_used, key_id) for key_id, (last_used, count) in usage.items()]

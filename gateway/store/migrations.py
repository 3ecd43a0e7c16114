"""The schema's history: one list of changes and one version number for every database.

A statement names a column type that differs between databases as `{serial}`, `{bool}`,
`{bigint}` or `{real}`; each driver's `TYPES` fills them in. The numbers are SQLite's (its
list was the longer one); PostgreSQL's own list, before there was one, squashed SQLite's 1-3
into its 1, so a PostgreSQL database reads its old 1, 2, 3 as 3, 4, 5 (`LEGACY_POSTGRES`).
"""

from __future__ import annotations

from collections.abc import Mapping

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            sealed TEXT NOT NULL,
            key_masked TEXT NOT NULL,
            enabled {bool} NOT NULL,
            apps TEXT,
            interfaces TEXT,
            ip_whitelist TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_used_at TEXT,
            request_count {bigint} NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX keys_by_account ON keys (account, id)",
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # v2: a change log, so other processes apply admin writes key by key instead of reloading
    2: ("CREATE TABLE changes (seq {serial}, key_id TEXT NOT NULL)",),
    # v3: when each change was committed (propagation lag), and the audit trail
    3: (
        "ALTER TABLE changes ADD COLUMN at {real} NOT NULL DEFAULT 0",
        """CREATE TABLE audit (
            seq {serial},
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            key_id TEXT NOT NULL,
            changes TEXT NOT NULL
        )""",
        "CREATE INDEX audit_by_key ON audit (key_id, seq)",
    ),
    # v4: key expiry and rotation, admin tokens, who acted in the audit trail
    4: (
        "ALTER TABLE keys ADD COLUMN expires_at TEXT",
        "ALTER TABLE keys ADD COLUMN previous_digest TEXT",
        "ALTER TABLE keys ADD COLUMN previous_expires_at TEXT",
        "CREATE UNIQUE INDEX keys_by_previous_digest ON keys (previous_digest)",
        "ALTER TABLE audit ADD COLUMN actor TEXT NOT NULL DEFAULT 'root'",
        "ALTER TABLE audit ADD COLUMN account TEXT",
        "CREATE INDEX audit_by_account ON audit (account, seq)",
        """CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        account TEXT,
        permissions TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    )""",
    ),
    # v5: per-key rate limits
    5: ("ALTER TABLE keys ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]'",),
}

# PostgreSQL's numbers before the one list -> the same schema's number here. Unambiguous: those
# gateways wrote nothing above 3, and this list never leaves a database below SCHEMA_VERSION.
LEGACY_POSTGRES = {1: 3, 2: 4, 3: 5}

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
READ_VERSION = "SELECT max(version) FROM schema_version"
CLEAR_VERSION = "DELETE FROM schema_version"
WRITE_VERSION = "INSERT INTO schema_version VALUES (?)"


def steps(current: int, types: Mapping[str, str]) -> list[str]:
    """The statements that bring a database at `current` to SCHEMA_VERSION, in one dialect."""
    return [
        statement.format_map(types)
        for version in range(current + 1, SCHEMA_VERSION + 1)
        for statement in MIGRATIONS[version]
    ]

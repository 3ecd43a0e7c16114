"""Persistent key storage behind one interface (`base.Store`); `open_store` picks the
backend from the database URL."""

from __future__ import annotations

from gateway.store.base import (
    STORE_ERRORS,
    Audit,
    Changes,
    KeyLimitReached,
    SchemaTooNew,
    Store,
    StoreUnavailable,
)

__all__ = [
    "STORE_ERRORS",
    "Audit",
    "Changes",
    "KeyLimitReached",
    "SchemaTooNew",
    "Store",
    "StoreUnavailable",
    "open_store",
]


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :])
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}")

"""Persistent key storage behind one interface (`base.Store`): one SQL store over a driver per
database; `open_store` picks the driver from the database URL (schemes.py)."""

from __future__ import annotations

from gateway.store import schemes
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
    return schemes.open_url(url)

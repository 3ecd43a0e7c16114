"""The database URLs the gateway knows, in one table: `open_store` opens a store by it and the
config check names its entries, so a new database is one row here. Drivers are imported only
when opened (asyncpg is an optional dependency)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store.base import Store


@dataclass(frozen=True)
class Scheme:
    prefix: str
    example: str | None  # what the config error shows; None for an alias
    open: Callable[[str], Store]  # the whole URL -> a store, not yet opened
    empty: str | None = None  # the config error when nothing follows the prefix


def _sqlite(url: str) -> Store:
    from gateway.store.sqlite import SQLiteStore

    return SQLiteStore(url[len("sqlite:///") :])


def _postgres(url: str) -> Store:
    from gateway.store.postgres import PostgresStore

    return PostgresStore(url)


SCHEMES = (
    Scheme("sqlite:///", "sqlite:///path", _sqlite, empty="sqlite URL has no file path"),
    Scheme("postgresql://", "postgresql://...", _postgres),
    Scheme("postgres://", None, _postgres),
)


def find(url: str) -> Scheme | None:
    return next((scheme for scheme in SCHEMES if url.startswith(scheme.prefix)), None)


def problem(url: str) -> str | None:
    """What is wrong with a database URL, in the words of the config error; None if nothing."""
    scheme = find(url)
    if scheme is None:
        examples = " or ".join(s.example for s in SCHEMES if s.example is not None)
        return f"expected {examples}, got {url!r}"
    if scheme.empty is not None and url == scheme.prefix:
        return scheme.empty
    return None

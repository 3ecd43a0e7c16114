"""How each kind of database URL (the table in core.databases) opens a store. Drivers are
imported only when opened (asyncpg is an optional dependency)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.core.databases import SCHEMES, Scheme, find, problem

if TYPE_CHECKING:
    from gateway.store.base import Store

__all__ = ["OPENERS", "SCHEMES", "Scheme", "find", "open_url", "problem"]


def _sqlite(url: str) -> Store:
    from gateway.store.sqlite import SQLiteStore

    return SQLiteStore(url[len("sqlite:///") :])


def _postgres(url: str) -> Store:
    from gateway.store.postgres import PostgresStore

    return PostgresStore(url)


def _file(url: str) -> Store:
    from gateway.store.file import FileStore, file_path

    return FileStore(file_path(url))


OPENERS: dict[str, Callable[[str], Store]] = {"sqlite": _sqlite, "postgres": _postgres, "file": _file}


def open_url(url: str) -> Store:
    """The store a URL names, not yet opened; a URL no scheme knows is a ValueError."""
    scheme = find(url)
    if scheme is None:
        raise ValueError(problem(url))
    return OPENERS[scheme.kind](url)

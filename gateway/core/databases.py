"""The database URLs the gateway knows, in one table: the config check names its entries and
`store.schemes` opens a store by the entry's `kind`, so a new kind of store is one row here
and one opener there. Pure: it reads URLs, it opens nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    prefix: str
    kind: str  # which store opens it (store.schemes.OPENERS)
    example: str | None  # what the config error shows; None for an alias
    empty: str | None = None  # the config error when nothing follows the prefix


SCHEMES = (
    Scheme("sqlite:///", "sqlite", "sqlite:///path", empty="sqlite URL has no file path"),
    Scheme("postgresql://", "postgres", "postgresql://..."),
    Scheme("postgres://", "postgres", None),
    Scheme("file:///", "file", "file:///path/keys.yaml", empty="file URL has no path"),  # DB-less (§7.4)
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

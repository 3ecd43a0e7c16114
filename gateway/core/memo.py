"""Bounded memos for the data path: a dict emptied when it is full.

Every cache a client can fill is bounded in entries and in bytes (a client sending endless
new header names, paths or content types must not grow the process). Callers probe the dict
themselves, a plain `get` on the fast path, and store through `remember`, which holds the
entry bound; the byte bound is the caller's: it remembers only small keys and values.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, entries: int) -> V:
    """Store `value` under `key`, emptying the memo first when it holds `entries` already."""
    if len(memo) >= entries:
        memo.clear()
    memo[key] = value
    return value

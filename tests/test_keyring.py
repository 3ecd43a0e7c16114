"""The in-memory keyring: lookups by presented value, and changes visible at once."""

from __future__ import annotations

import dataclasses

from gateway.core.record import Key
from gateway.core.sealing import SecretBox
from gateway.keyring.index import Keyring, Usage
from tests.conftest import make_key

BOX = SecretBox("keyring-test-secret-0123456789")


def secret(n: int) -> str:
    """A value shaped like the secrets the gateway issues (32 letters and digits)."""
    return f"Secret{n}".ljust(32, "x")


def key(n: int, **fields) -> Key:
    return make_key(id="k_" + "0" * 25 + str(n), digest=BOX.digest(secret(n)), **fields)


def value(n: int) -> bytes:
    return secret(n).encode()


def test_lookup_put_update_remove() -> None:
    ring = Keyring(BOX.raw_digest)
    first = key(1)
    ring.put(first)
    assert ring.lookup(value(1)).enabled is True
    assert ring.lookup(value(2)) is None
    ring.put(dataclasses.replace(first, enabled=False))  # the cached answer must not survive
    assert ring.lookup(value(1)).enabled is False
    ring.put(key(2))  # a value looked up before it existed is found once it does
    assert ring.lookup(value(2)) is not None
    ring.remove(first.id)
    assert ring.lookup(value(1)) is None
    assert len(ring) == 1


def test_replace_all_and_shared_scopes() -> None:
    ring = Keyring(BOX.raw_digest)
    ring.put(key(1))
    assert ring.lookup(value(1)) is not None
    apps = ("a1", "a2")
    ring.replace_all([key(3, apps=apps, ip_whitelist=("10.0.0.*",)), key(4, apps=apps)])
    assert ring.lookup(value(1)) is None
    three, four = ring.lookup(value(3)), ring.lookup(value(4))
    assert three.apps is four.apps  # equal scopes are shared, not copied per key
    assert three.whitelist is not None and four.whitelist is None


def test_values_that_cannot_be_keys_are_neither_hashed_nor_cached() -> None:
    hashed: list[bytes] = []

    def digest(presented: bytes) -> bytes:
        hashed.append(presented)
        return BOX.raw_digest(presented)

    ring = Keyring(digest)
    ring.put(key(1))
    junk_values = (
        b"x" * 30_000,
        b"short",
        value(1) + b"-",  # the 32 after a prefix must be letters and digits
        value(1)[:-1] + b"-",
        "Ä".encode().ljust(32, b"x"),
        b"!" + value(1),  # a prefix is letters, digits, _ and -
        b"p" * 17 + value(1),  # and at most 16 of them
    )
    for junk in junk_values:
        assert ring.lookup(junk) is None
    assert hashed == []
    assert ring.lookup(value(2)) is None  # well-shaped but unknown: hashed, and not kept
    assert ring.lookup(value(1)) is not None
    assert ring.lookup(value(1)) is not None  # the second lookup comes from the hot map
    assert hashed == [value(2), value(1)]
    assert list(ring._hot) == [value(1)]


def test_usage_batches() -> None:
    usage = Usage()
    for at in (10.0, 12.0, 11.0):
        usage.touch("k1", at)
    usage.touch("k2", 5.0)
    batch = usage.take()
    assert batch == {"k1": (11.0, 3), "k2": (5.0, 1)}  # the last request's time, and the count
    assert usage.take() == {}
    usage.touch("k1", 20.0)
    usage.restore(batch)  # a failed flush is merged back, nothing lost
    assert {k: n for k, (_, n) in usage.take().items()} == {"k1": 4, "k2": 1}


def test_a_memo_is_bounded_in_entries() -> None:
    from gateway.core.memo import remember

    memo: dict[int, int] = {}
    for n in range(10):
        assert remember(memo, n, n * n, 4) == n * n
        assert len(memo) <= 4 and memo[n] == n * n
    assert memo == {8: 64, 9: 81}  # emptied when full, then filled again


def test_ids_sort_in_the_order_they_were_made() -> None:
    """Many ids within one millisecond still sort as they were made (cursor paging and the
    listing's order rely on it), and stay unique and well formed."""
    from gateway.core.sealing import ID_ALPHABET, generate_id

    made = [generate_id() for _ in range(5000)]  # far more than one per millisecond
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(i) == 28 and i.startswith("k_") and set(i[2:]) <= set(ID_ALPHABET) for i in made)

"""The in-memory keyring: lookups by presented value, and changes visible at once."""

from __future__ import annotations

import dataclasses

from gateway.keyring import Keyring, Usage
from gateway.model import Key
from gateway.secrets import SecretBox
from tests.conftest import make_key

BOX = SecretBox("keyring-test-secret-0123456789")


def key(secret: str, **fields) -> Key:
    return make_key(id="k_" + "0" * 25 + secret[-1], digest=BOX.digest(secret), **fields)


def test_lookup_put_update_remove() -> None:
    ring = Keyring(BOX.raw_digest)
    first = key("secret-1")
    ring.put(first)
    assert ring.lookup(b"secret-1").enabled is True
    assert ring.lookup(b"secret-2") is None
    ring.put(dataclasses.replace(first, enabled=False))  # the cached answer must not survive
    assert ring.lookup(b"secret-1").enabled is False
    ring.put(key("secret-2"))  # a value looked up before it existed is found once it does
    assert ring.lookup(b"secret-2") is not None
    ring.remove(first.id)
    assert ring.lookup(b"secret-1") is None
    assert len(ring) == 1


def test_replace_all_and_shared_scopes() -> None:
    ring = Keyring(BOX.raw_digest)
    ring.put(key("secret-1"))
    assert ring.lookup(b"secret-1") is not None
    apps = ("a1", "a2")
    ring.replace_all([key("secret-3", apps=apps, ip_whitelist=("10.0.0.*",)), key("secret-4", apps=apps)])
    assert ring.lookup(b"secret-1") is None
    three, four = ring.lookup(b"secret-3"), ring.lookup(b"secret-4")
    assert three.apps is four.apps  # equal scopes are shared, not copied per key
    assert three.whitelist is not None and four.whitelist is None


def test_usage_batches() -> None:
    usage = Usage()
    for _ in range(3):
        usage.touch("k1")
    usage.touch("k2")
    batch = usage.take()
    assert {k: n for k, (_, n) in batch.items()} == {"k1": 3, "k2": 1}
    assert usage.take() == {}
    usage.touch("k1")
    usage.restore(batch)  # a failed flush is merged back, nothing lost
    assert {k: n for k, (_, n) in usage.take().items()} == {"k1": 4, "k2": 1}

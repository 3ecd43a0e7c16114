"""Create the benchmark's keys directly in a gateway database, in one transaction.

    python bench/setup_keys.py DATABASE_URL SECRET_KEY COUNT OUT_FILE [ACTIVE]

Keys are scoped like a real tenant's: 50 apps, the `data` category, a 2-entry whitelist
that admits 127.0.0.1. ACTIVE of their secrets (default 1000) are written to OUT_FILE for
the load generator.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.core import sealing
from gateway.core.record import Key, mask_secret, utc_now
from gateway.store import open_store

APPS = tuple(f"app{i}" for i in range(50))


def make_keys(box: sealing.SecretBox, count: int) -> list[tuple[Key, str, str]]:
    now = utc_now()
    made = []
    for i in range(count):
        secret = sealing.generate_secret()
        key = Key(
            id=sealing.generate_id(),
            name=f"bench {i}",
            account=f"acct{i // 500}",
            key_masked=mask_secret(secret),
            digest=box.digest(secret),
            enabled=True,
            apps=APPS,
            interfaces=("data",),
            ip_whitelist=("127.0.0.1", "10.0.0.*"),
            created_at=now,
            updated_at=now,
        )
        made.append((key, box.encrypt(secret, key.id), secret))
    return made


async def main(url: str, secret_key: str, count: int, out: str, active: int) -> None:
    box = sealing.SecretBox(secret_key)
    store = open_store(url)
    await store.open()
    await store.check_secret(box.digest(b"gateway secret fingerprint"))
    made = make_keys(box, count)
    await store.create_keys([(key, sealed) for key, sealed, _ in made], limit=500)
    await store.close()
    with open(out, "w") as handle:
        handle.writelines(secret + "\n" for _, _, secret in made[:: max(1, count // active)][:active])


if __name__ == "__main__":
    url, secret_key, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    asyncio.run(main(url, secret_key, count, out, int(sys.argv[5]) if len(sys.argv) > 5 else 1000))

"""The decision itself (route match + key lookup + authorize), and keyring memory per key.

    .venv/bin/python bench/decision.py

Prints ns per decision at 10, 10,000 and 100,000 keys (the same 1,000 active clients each
time, the same scopes as bench/run.py), the ratio to the 10-key run, the memory the keyring adds
per key, and the resident memory of a real gateway process with 0 and 100,000 keys. Times
are medians of several passes.
"""

from __future__ import annotations

import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import SECRET, free_port, spawn_gateway, wait_for_port

from gateway.config import Routes
from gateway.core import decision as decide
from gateway.core.iprules import client_ip
from gateway.core.record import Key
from gateway.core.routes import compile_routes
from gateway.core.sealing import SecretBox, generate_id, generate_secret
from gateway.keyring.index import Keyring

ROOT = Path(__file__).resolve().parent.parent
APPS = tuple(f"app{i}" for i in range(50))
PATH = "/api/v1/app/app7/entry/e1/data_create"
ACTIVE = 1000
PASSES = 11


def build(box: SecretBox, count: int, hot_size: int) -> tuple[Keyring, list[bytes]]:
    keyring = Keyring(box.raw_digest, hot_size)
    secrets = []
    keys = []
    for i in range(count):
        secret = generate_secret()
        secrets.append(secret.encode())
        keys.append(
            Key(
                id=generate_id(),
                name=f"bench {i}",
                account=f"acct{i // 500}",
                key_masked="x",
                digest=box.digest(secret),
                enabled=True,
                apps=APPS,
                interfaces=("data",),
                ip_whitelist=("127.0.0.1", "10.0.0.*"),
                created_at="t",
                updated_at="t",
            )
        )
    keyring.replace_all(keys)
    return keyring, secrets


def one_pass(keyring: Keyring, presented: list[bytes], iterations: int) -> float:
    """ns per decision over `iterations` decisions, cycling through the presented keys."""
    routes = compile_routes(Routes())
    ip = client_ip("127.0.0.1")
    authorize = decide.authorize
    match = routes.match
    lookup = keyring.lookup
    start = time.perf_counter_ns()
    for i in range(iterations):
        key = lookup(presented[i % len(presented)])
        route = match("POST", PATH)
        result = authorize(key, True, ip, False, route, route.app_id if route else None)
        if result is not decide.ALLOW:
            raise SystemExit(f"unexpected decision {result}")
    return (time.perf_counter_ns() - start) / iterations


def main() -> None:
    box = SecretBox("bench-secret-key-0123456789abcdef")
    rng = random.Random(7)
    setups = {}
    for count in (10, 10_000, 100_000):
        for hot in (True, False):  # the hot map on (steady clients) and off (every request new)
            keyring, secrets = build(box, count, 65536 if hot else 0)
            setups[(count, hot)] = (keyring, [rng.choice(secrets) for _ in range(ACTIVE)])
    gc.collect()
    samples: dict[tuple[int, bool], list[float]] = {setup: [] for setup in setups}
    for _ in range(PASSES):  # interleaved, so machine noise hits every size alike
        for setup, (keyring, active) in setups.items():
            samples[setup].append(one_pass(keyring, active, 50_000))
    results = {setup: statistics.median(values) for setup, values in samples.items()}
    del setups
    print("keys      ns/decision  x 10 keys   no hot map (HMAC + index each time)  x 10 keys")
    for count in (10, 10_000, 100_000):
        hot, cold = results[(count, True)], results[(count, False)]
        print(
            f"{count:>7,}  {hot:>11.0f}  {hot / results[(10, True)]:>9.2f}"
            f"   {cold:>34.0f}  {cold / results[(10, False)]:>9.2f}"
        )

    process_memory()


def gateway_rss(count: int, work: Path) -> int:
    """Resident memory of a real `gateway serve` process holding `count` keys (bytes)."""
    db = f"sqlite:///{work}/rss-{count}.db"
    keys_file = work / f"keys-{count}.txt"
    setup = [sys.executable, str(ROOT / "bench" / "setup_keys.py"), db, SECRET, str(count), str(keys_file), "1"]
    subprocess.run(setup, check=True)
    proxy, admin = free_port(), free_port()
    process = spawn_gateway(work, f"rss-{count}", proxy, admin, db, "log: {access: false}\n")
    try:
        wait_for_port(proxy, 120)
        time.sleep(1.0)
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise SystemExit("no VmRSS")
    finally:
        process.terminate()
        process.wait(20)


def process_memory() -> None:
    with tempfile.TemporaryDirectory(prefix="gateway-rss-") as tmp:
        work = Path(tmp)
        empty = gateway_rss(0, work)
        full = gateway_rss(100_000, work)
    per_thousand = (full - empty) / 100
    print(
        f"gateway process RSS: {empty / 2**20:.1f} MiB with no keys, {full / 2**20:.1f} MiB with 100,000 keys"
        f" -> {per_thousand / 1024:.0f} KiB per 1,000 keys ({(full - empty) / 100_000:.0f} bytes per key)"
    )


if __name__ == "__main__":
    main()

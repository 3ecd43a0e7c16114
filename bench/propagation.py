"""How fast a revocation made on one replica reaches another.

    .venv/bin/python bench/propagation.py [--backend postgres|sqlite] [--rounds 50]

postgres: two replicas (two processes, two ports) share one PostgreSQL schema; the key is
disabled and re-enabled through replica A's admin API, and replica B is polled until it
refuses / accepts. sqlite: one gateway with `workers: 2`; each poll is a new connection
(the kernel picks the worker), and a change counts as arrived after 10 answers in a row
agree. Prints p50, p99 and max in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import free_port, spawn_gateway, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("GATEWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PATH = "/api/v5/workflow/task/approve"
TOKEN = "bench-admin-token-0123456789"


def call(port: int, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key or TOKEN}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else b"", headers=headers)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, json.loads(raw) if raw else {}


def start(work: Path, name: str, database: str, upstream: int, workers: int = 1) -> tuple[subprocess.Popen, int, int]:
    proxy, admin = free_port(), free_port()
    extra = f"upstream: {{url: 'http://127.0.0.1:{upstream}'}}\nworkers: {workers}\nlog: {{access: false}}\n"
    process = spawn_gateway(work, name, proxy, admin, database, extra)
    wait_for_port(admin)
    wait_for_port(proxy)
    return process, proxy, admin


def until(port: int, key: str, wanted: int, agree: int) -> float:
    started = time.monotonic()
    streak = 0
    while time.monotonic() - started < 10:
        status, _ = call(port, "POST", PATH, key=key)
        streak = streak + 1 if status == wanted else 0
        if streak >= agree:
            return (time.monotonic() - started) * 1000
    raise SystemExit(f"status {wanted} not seen within 10 s")


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    p50 = statistics.median(samples)
    print(f"{name:<10} n={len(samples):<4} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {max(samples):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-propagation-"))
    processes = []
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        upstream_port = free_port()
        processes.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / "upstream.py"), str(upstream_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(upstream_port)
        if args.backend == "postgres":
            database = f"{POSTGRES}?schema={schema}"
            a, _, a_admin = start(work, "a", database, upstream_port)
            b, b_proxy, _ = start(work, "b", database, upstream_port)
            processes += [a, b]
            agree = 1
        else:
            a, b_proxy, a_admin = start(work, "a", f"sqlite:///{work}/g.db", upstream_port, workers=2)
            processes.append(a)
            time.sleep(1.0)
            agree = 10
        _, key = call(a_admin, "POST", "/api/v1/keys", {})
        until(b_proxy, key["key"], 200, agree)
        refuse, accept = [], []
        for _ in range(args.rounds):
            call(a_admin, "PATCH", f"/api/v1/keys/{key['id']}", {"enabled": False})
            refuse.append(until(b_proxy, key["key"], 403, agree))
            call(a_admin, "PATCH", f"/api/v1/keys/{key['id']}", {"enabled": True})
            accept.append(until(b_proxy, key["key"], 200, agree))
        where = (
            "replica A -> replica B (PostgreSQL)" if args.backend == "postgres" else "worker 0 -> both workers (SQLite)"
        )
        print(f"propagation {where}, {args.rounds} rounds")
        report("refuse", refuse)
        report("accept", accept)
        report("all", refuse + accept)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)
        if args.backend == "postgres":
            drop = f'SET client_min_messages = warning; DROP SCHEMA IF EXISTS "{schema}" CASCADE'
            subprocess.run(["psql", POSTGRES, "-qc", drop], check=False)


if __name__ == "__main__":
    main()

"""`workers: 2`: two processes share the proxy port; admin writes reach both within 1 s."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.conftest import Process, wait_for_port, workflow_status


def admin(proc: Process, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(proc.admin_url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {proc.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


def call(proc: Process, key: str) -> int:
    return workflow_status(proc.proxy_url, key)


def test_two_workers_share_the_port_and_see_changes(spawn, upstream_process) -> None:
    proc = spawn(f"upstream: {{url: '{upstream_process}'}}\n", workers=2)
    wait_for_port(int(proc.proxy_url.rsplit(":", 1)[1]))
    time.sleep(1.0)  # both workers up
    key = admin(proc, "POST", "/api/v1/keys", {})
    deadline = time.monotonic() + 1.5
    statuses: list[int] = []
    while time.monotonic() < deadline:  # every new connection may land on either worker
        statuses.append(call(proc, key["key"]))
    assert statuses[-20:] == [200] * 20, statuses
    admin(proc, "PATCH", f"/api/v1/keys/{key['id']}", {"enabled": False})
    time.sleep(1.0)
    assert {call(proc, key["key"]) for _ in range(40)} == {403}
    admin(proc, "PATCH", f"/api/v1/keys/{key['id']}", {"enabled": True})
    time.sleep(1.0)
    assert {call(proc, key["key"]) for _ in range(40)} == {200}
    admin(proc, "DELETE", f"/api/v1/keys/{key['id']}")
    time.sleep(1.0)
    assert {call(proc, key["key"]) for _ in range(40)} == {401}
    # metrics merge both workers' counts (each worker publishes a snapshot every second)
    time.sleep(1.5)
    request = urllib.request.Request(proc.admin_url + "/metrics")
    request.add_header("Authorization", f"Bearer {proc.token}")
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    total = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("gateway_requests_total{")
    )
    assert total == len(statuses) + 3 * 40
    assert 'gateway_keyring_size{worker="0"}' in text and 'gateway_keyring_size{worker="1"}' in text
    # 40 new connections all landing on one of two workers is a 1-in-2^39 event: both saw each change
    children = Path(f"/proc/{proc.process.pid}/task/{proc.process.pid}/children").read_text().split()
    workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 2


def test_workers_do_not_outlive_a_killed_supervisor(spawn, upstream_process) -> None:
    import os
    import signal

    proc = spawn(f"upstream: {{url: '{upstream_process}'}}\n", workers=2)
    time.sleep(1.0)
    pid = proc.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 2
    os.kill(pid, signal.SIGKILL)
    proc.process.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    alive = [
        w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]
    ]
    assert alive == [], "workers outlived their supervisor"


async def test_a_commit_rings_the_other_processes_on_the_file(tmp_path: Path, monkeypatch) -> None:
    """The doorbell, not the poll, wakes a peer: with the poll set to a minute, a peer still
    sees a key change at once, and a write that changes no key rings nobody."""
    import asyncio

    from gateway.store import sqlite
    from tests.conftest import make_key

    monkeypatch.setattr(sqlite, "POLL_SECONDS", 60.0)
    writer, reader = sqlite.SQLiteStore(str(tmp_path / "g.db")), sqlite.SQLiteStore(str(tmp_path / "g.db"))
    await writer.open()
    await reader.open()
    try:
        waiting = asyncio.create_task(reader.wait_for_change())
        await writer.record_usage({"k_nobody": ("2026-01-01T00:00:00Z", 1)})  # no key changed
        await asyncio.sleep(0.3)
        assert not waiting.done()
        key = make_key()
        await writer.create_key(key, "sealed", 500)
        assert await asyncio.wait_for(waiting, 5) == "changed"
        assert [k.id for k in await reader.get_keys([key.id])] == [key.id]
        # and the other way round: every process on the file is a peer
        assert writer._doorbell.ring() == 1
    finally:
        await writer.close()
        await reader.close()

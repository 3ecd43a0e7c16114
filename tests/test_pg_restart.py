"""A real PostgreSQL restart under two real gateway replicas: the change feed comes back by
itself (changes reach the other replica in milliseconds again, not by the 1 s poll), the
outage is logged once each way, and nothing prints a traceback, not even on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port, workflow_status
from tests.pgserver import Throwaway

WORKFLOW = "/api/v5/workflow/task/approve"
TOKEN = "restart-test-admin-token-0123456789"
SECRET = "restart-test-secret-key-0123456789"


@pytest.fixture
def postgres() -> Iterator[Throwaway]:
    """A server of this test's own: restarting the session's shared one would break other tests."""
    try:
        server = Throwaway()
    except RuntimeError as err:  # PostgreSQL's binaries are not installed here
        pytest.skip(str(err))
    yield server
    server.remove()


class Replica:
    def __init__(self, folder: Path, database: str, upstream: str) -> None:
        folder.mkdir()
        self.admin_port, self.proxy_port = free_port(), free_port()
        (folder / "config.yaml").write_text(
            f"listen: {{host: 127.0.0.1, port: {self.proxy_port}}}\n"
            f"admin: {{host: 127.0.0.1, port: {self.admin_port}}}\n"
            f"database: '{database}'\n"
            f"upstream: {{url: '{upstream}'}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env |= {"GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_SECRET_KEY": SECRET}
        self.output = folder / "gateway.out"
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(folder / "config.yaml")],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.admin_port)
        wait_for_port(self.proxy_port)

    def admin(self, method: str, path: str, body: object = None) -> tuple[int, dict | None]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def status(self, key: str) -> int:
        return workflow_status(f"http://127.0.0.1:{self.proxy_port}", key)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} not logged {count}x:\n{self.log()}"
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def seen_within(replica: Replica, key: str, wanted: int, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if replica.status(key) == wanted:
            return time.monotonic() - started
        time.sleep(0.002)
    raise AssertionError(f"status {wanted} not seen within {timeout} s")


def change(replica: Replica, key_id: str, enabled: bool) -> None:
    """PATCH through `replica`; its pool may hand out one dead connection after the restart."""
    for _ in range(5):
        status, body = replica.admin("PATCH", f"/api/v1/keys/{key_id}", {"enabled": enabled})
        if status == 200:
            return
        assert status == 503, (status, body)
        time.sleep(0.1)
    raise AssertionError("the write never succeeded after the restart")


def outage(postgres: Throwaway, how: str) -> None:
    if how == "restart":
        postgres.restart()  # pg_ctl restart: about 0.2 s down
    else:
        postgres.stop()  # long enough for failed reconnects and asyncpg's pool retries
        time.sleep(2.5)
        postgres.start()


@pytest.mark.parametrize("how", ["restart", "stop-start"])
def test_a_real_restart_restores_the_change_feed(
    postgres: Throwaway, upstream_process: str, tmp_path: Path, how: str
) -> None:
    a = Replica(tmp_path / "a", postgres.url, upstream_process)
    b = Replica(tmp_path / "b", postgres.url, upstream_process)
    replicas = (a, b)
    try:
        status, key = a.admin("POST", "/api/v1/keys", {})
        assert status == 201 and key is not None
        seen_within(b, key["key"], 200)
        for enabled, wanted in ((False, 403), (True, 200)):  # the feed works before the restart
            change(a, key["id"], enabled)
            assert seen_within(b, key["key"], wanted) < 0.3

        outage(postgres, how)
        for replica in replicas:
            replica.wait_for_log("is back")

        delays = []
        for source, target in ((a, b), (b, a), (a, b), (b, a)):
            enabled = len(delays) % 2 == 1
            change(source, key["id"], enabled)
            delays.append(seen_within(target, key["key"], 200 if enabled else 403))
        # the 1 s poll would put these anywhere up to 1 s; the feed puts them in milliseconds
        assert max(delays) < 0.3, delays
    finally:
        codes = [replica.stop() for replica in replicas]
    assert codes == [0, 0]
    for replica in replicas:
        output = replica.log()
        assert "Traceback" not in output, output
        assert output.count("lost PostgreSQL") == 1, output
        assert output.count("is back") == 1, output


def test_sigterm_during_an_outage_stops_cleanly(postgres: Throwaway, upstream_process: str, tmp_path: Path) -> None:
    replica = Replica(tmp_path / "a", postgres.url, upstream_process)
    try:
        postgres.stop()
        replica.wait_for_log("lost PostgreSQL")
        time.sleep(1.5)  # reconnect attempts under way
        started = time.monotonic()
        code = replica.stop()
        took = time.monotonic() - started
    finally:
        replica.stop()
    output = replica.log()
    assert code == 0 and "Traceback" not in output, output
    assert took < 10, took

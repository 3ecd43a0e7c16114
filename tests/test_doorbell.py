"""The doorbell between processes on one SQLite file, against another local user.

Over real sockets, pipes and processes: another user who squats the names the bells use (or
used to use), pre-creates or takes over their folder, or floods them, neither silences the
bells nor costs the gateway more than a bounded amount of CPU; a bell that cannot be set up is
logged once and the poll does the work. "Another user" is `nobody`, so those tests need root.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import doorbell, sqlite
from tests.conftest import make_key, wait_for_port, workflow_status

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root (runuser)")
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class Intruder:
    """Python code run as `nobody`: a local user other than the gateway's. It prints `ready`
    once its work is done, then holds what it made (sockets) until stopped."""

    def __init__(self, code: str) -> None:
        body = textwrap.dedent(code)
        script = f"import os, socket, resource, sys, time\n{body}\nprint('ready', flush=True)\nsys.stdin.read()\n"
        self.process = subprocess.Popen(
            ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the intruder failed: {line!r}"

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every local user may write in, like /tmp (sticky): the worst place for a database."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-bells-test-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def abstract_names(database: Path, pids: list[int], per_pid: int) -> list[str]:
    """The names the abstract-namespace doorbell used: predictable from the file and a pid."""
    info = database.stat()
    prefix = "gateway-bell-" + hashlib.sha256(f"{info.st_dev}:{info.st_ino}".encode()).hexdigest()[:20] + "-"
    return [f"{prefix}{pid}.{n}" for pid in pids for n in range(per_pid)]


def squat(names: list[str], database: Path, folder: Path | None = None) -> Intruder:
    """As another user: bind every predictable socket name first, and pre-create (open to
    everyone) in `folder` every folder name one might guess for the bells."""
    guesses = [f"{database.name}.bells", f"{database.name}.bells-", f".{database.name}.bells", "bells"]
    if folder is None:
        guesses = []
    return Intruder(
        f"""
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        held = []
        for name in {names!r}:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind("\\0" + name)
            held.append(sock)
        for guess in {guesses!r}:
            os.mkdir(os.path.join({str(folder)!r}, guess))
            os.chmod(os.path.join({str(folder)!r}, guess), 0o777)
        """
    )


async def open_stores(database: Path) -> tuple[sqlite.SQLiteStore, sqlite.SQLiteStore]:
    writer, reader = sqlite.SQLiteStore(str(database)), sqlite.SQLiteStore(str(database))
    await writer.open()
    await reader.open()
    return writer, reader


async def rung_at_once(writer: sqlite.SQLiteStore, reader: sqlite.SQLiteStore, timeout: float = 2.0) -> float:
    """With the poll at a minute, only a bell can tell the reader of a change within `timeout`."""
    waiting = asyncio.create_task(reader.wait_for_change())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await writer.create_key(make_key(id=f"k_{time.monotonic_ns()}", digest=str(time.monotonic_ns())), "sealed", 500)
    try:
        assert await asyncio.wait_for(waiting, timeout) == "changed"
    except TimeoutError:
        raise AssertionError("the change was not rung: the reader would have waited for the poll") from None
    return time.monotonic() - started


@ROOT_ONLY
async def test_squatted_names_do_not_silence_the_bells(shared_folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(sqlite, "POLL_SECONDS", 60.0)
    database = shared_folder / "gateway.db"
    database.touch()  # the file's identity is what the old names were made of
    intruder = squat(abstract_names(database, [os.getpid()], 200), database, shared_folder)
    try:
        writer, reader = await open_stores(database)
        try:
            assert await rung_at_once(writer, reader) < 0.5
            assert await rung_at_once(reader, writer) < 0.5
            folder = reader._doorbell.where
            assert folder is not None and folder.parent == shared_folder
            info = folder.lstat()
            assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700
        finally:
            await writer.close()
            await reader.close()
    finally:
        intruder.stop()


def take_over(how: str, folder: Path) -> Intruder | None:
    """Make the recorded bell folder unsafe the way `how` says (another user where it can)."""
    if how == "opened-up":  # ours, but made accessible to others
        folder.chmod(0o755)
        return None
    shutil.rmtree(folder)  # gone (a cleaner, or a crash): another user makes the name first
    made = {
        "another-user": "os.mkdir(path, 0o700)",
        "another-user-open": "os.mkdir(path, 0o777); os.chmod(path, 0o777)",
        "symlink": "os.symlink('/tmp', path)",
        "file": "open(path, 'w').close()",
    }[how]
    return Intruder(f"path = {str(folder)!r}\n{made}")


@ROOT_ONLY
@pytest.mark.parametrize("how", ["another-user", "another-user-open", "opened-up", "symlink", "file"])
async def test_a_bell_folder_that_is_not_ours_alone_is_refused(
    shared_folder: Path, monkeypatch, caplog, how: str
) -> None:
    monkeypatch.setattr(sqlite, "POLL_SECONDS", 60.0)
    database = shared_folder / "gateway.db"
    first = sqlite.SQLiteStore(str(database))
    await first.open()
    recorded = first._doorbell.where
    await first.close()
    assert recorded is not None
    intruder = take_over(how, recorded)
    caplog.set_level(logging.INFO, logger="gateway.store")
    try:
        writer, reader = await open_stores(database)
        try:
            refused = [r for r in caplog.records if "refused the change-notification folder" in r.getMessage()]
            assert len(refused) == 1 and str(recorded) in refused[0].getMessage(), caplog.text
            assert refused[0].levelno == logging.WARNING
            for store in (writer, reader):  # both moved to one fresh folder of ours
                assert store._doorbell.where is not None and store._doorbell.where != recorded
            assert writer._doorbell.where == reader._doorbell.where
            assert await rung_at_once(writer, reader) < 0.5
            assert "no change notifications" not in caplog.text
        finally:
            await writer.close()
            await reader.close()
    finally:
        if intruder is not None:
            intruder.stop()
    assert recorded.exists() or recorded.is_symlink()  # another user's things are left alone


FLOOD = 100_000


async def test_a_flood_of_bells_costs_bounded_cpu(tmp_path: Path, monkeypatch) -> None:
    """100k bells from a peer as fast as it can send them: the reader wakes a bounded number
    of times, spends a bounded amount of CPU, and still hears the next real change at once."""
    monkeypatch.setattr(sqlite, "POLL_SECONDS", 60.0)
    writer, reader = await open_stores(tmp_path / "g.db")
    wakes = 0

    async def watch() -> None:  # what the gateway's change watcher does with each wake-up
        nonlocal wakes
        while True:
            await reader.wait_for_change()
            wakes += 1

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.2)
        pipe = reader._doorbell.path
        assert pipe is not None
        flood = textwrap.dedent(
            f"""
            import os, time
            fd = os.open({str(pipe)!r}, os.O_WRONLY | os.O_NONBLOCK)
            sent = 0
            while sent < {FLOOD}:
                try:
                    os.write(fd, b"!")
                    sent += 1
                except BlockingIOError:
                    time.sleep(0.0001)
            """
        )
        wakes_before, cpu_before, started = wakes, time.process_time(), time.monotonic()
        peer = await asyncio.create_subprocess_exec(sys.executable, "-c", flood)
        assert await peer.wait() == 0
        await asyncio.sleep(0.1)
        cpu, wall, woken = time.process_time() - cpu_before, time.monotonic() - started, wakes - wakes_before
        # the abstract-socket doorbell spent 0.5-0.7 s and woke 2,600-5,300 times here
        assert cpu < 0.25, (cpu, wall, woken)
        assert woken <= wall / doorbell.QUIET + 5, (woken, wall)
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        assert await rung_at_once(writer, reader) < 0.1
    finally:
        watcher.cancel()
        await writer.close()
        await reader.close()


async def test_bells_that_cannot_be_set_up_are_logged_once(tmp_path: Path, monkeypatch, caplog) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(doorbell.os, "mkfifo", refuse)
    caplog.set_level(logging.INFO, logger="gateway.store")
    writer, reader = await open_stores(tmp_path / "g.db")
    try:
        lines = [r for r in caplog.records if "no change notifications between processes" in r.getMessage()]
        assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in lines)  # once per store
        assert "Permission denied" in lines[0].getMessage()
        assert writer._doorbell.ring() == 0
        waiting = asyncio.create_task(reader.wait_for_change())
        await writer.create_key(make_key(), "sealed", 500)
        assert await asyncio.wait_for(waiting, 2) == "changed"  # the poll (250 ms) did it
        assert not list(tmp_path.glob("*.bells-*/*"))  # nothing left half made
    finally:
        await writer.close()
        await reader.close()


async def test_ringing_failures_are_logged_once(tmp_path: Path, monkeypatch, caplog) -> None:
    writer, reader = await open_stores(tmp_path / "g.db")
    try:

        def broken(*args, **kwargs):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(doorbell.os, "listdir", broken)
        caplog.set_level(logging.INFO, logger="gateway.store")
        for _ in range(3):
            assert writer._doorbell.ring() == 0
        assert caplog.text.count("cannot ring the other processes") == 1
    finally:
        await writer.close()
        await reader.close()


async def test_a_dead_peers_pipe_is_removed(tmp_path: Path) -> None:
    writer, reader = await open_stores(tmp_path / "g.db")
    try:
        pipe = reader._doorbell.path
        assert pipe is not None
        dead = pipe.with_name("0" * 24 + doorbell.SUFFIX)
        os.mkfifo(dead, 0o600)  # as a crashed process leaves it: no reader
        assert writer._doorbell.ring() == 1
        assert not dead.exists() and pipe.exists()
    finally:
        await writer.close()
        await reader.close()
    assert not pipe.exists()  # a closed store takes its pipe away


def admin(url: str, token: str, method: str, path: str, body: object = None) -> dict | None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


status = workflow_status  # (tests/conftest.py)


@ROOT_ONLY
def test_two_gateway_processes_see_changes_in_milliseconds_despite_squatters(
    spawn, upstream_process, tmp_path: Path
) -> None:
    """Two real gateways on one SQLite file; another user has bound the predictable socket
    names of the next few hundred processes. Each change reaches the other gateway well
    inside the 250 ms poll, every time."""
    config = f"upstream: {{url: '{upstream_process}'}}\n"
    a = spawn(config)
    wait_for_port(int(a.proxy_url.rsplit(":", 1)[1]))
    database = tmp_path / "data" / "gateway.db"
    next_pid = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    intruder = squat(abstract_names(database, list(range(next_pid + 1, next_pid + 500)), 2), database)
    try:
        b = spawn(config)
        wait_for_port(int(b.proxy_url.rsplit(":", 1)[1]))
        key = admin(a.admin_url, a.token, "POST", "/api/v1/keys", {})
        assert key is not None
        delays = []
        for i in range(10):
            enabled = i % 2 == 1
            source, target = (a, b) if i < 6 else (b, a)
            admin(source.admin_url, source.token, "PATCH", f"/api/v1/keys/{key['id']}", {"enabled": enabled})
            started = time.monotonic()
            while status(target.proxy_url, key["key"]) != (200 if enabled else 403):
                assert time.monotonic() - started < 2, "never seen"
                time.sleep(0.002)
            delays.append(time.monotonic() - started)
        assert max(delays) < 0.1, [round(d * 1000, 1) for d in delays]
    finally:
        intruder.stop()
    output = (tmp_path / "gateway.out").read_text()
    assert "no change notifications" not in output and "refused" not in output

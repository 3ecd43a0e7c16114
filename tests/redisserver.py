"""A Redis for the tests: `GATEWAY_TEST_REDIS`, else 127.0.0.1:6379 if it answers, else a
throwaway `redis-server` (Debian's `redis-server`; `make test` installs it when missing) on a
free port, with nothing kept on disk, stopped when the session ends. `PrivateRedis`: one
test's own server, which it may pause."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DEFAULT = "redis://127.0.0.1:6379/15"  # database 15: keys the tests leave behind stay apart


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_url() -> str:
    url = os.environ.get("GATEWAY_TEST_REDIS")
    if url:
        return url
    if _answers(6379):
        return DEFAULT
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        raise RuntimeError(
            "no Redis answers at 127.0.0.1:6379 and redis-server is missing (apt-get install redis-server)"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="gateway-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 15
    while not _answers(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["GATEWAY_TEST_REDIS"] = url
    return url


class PrivateRedis:
    """A `redis-server` of the test's own on a free port (nothing on disk), which the test may
    pause with SIGSTOP/SIGCONT: a Redis that stops answering for a while without closing its
    connections, as one does under a fork for a snapshot or a stalled host. Other tests' Redis
    is left alone."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is missing (apt-get install redis-server)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.folder = folder = tempfile.mkdtemp(prefix="gateway-redis-")
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not _answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)

"""A PostgreSQL for the tests, wherever they run.

`GATEWAY_TEST_POSTGRES` names a server to use. Otherwise the tests use the one at
127.0.0.1:5432 if it answers, and else start a throwaway server of their own: `initdb` into a
temporary folder, `pg_ctl start` on a free port with trust authentication, a database `test`;
it is stopped and removed when the test session ends. The server is looked for (and started)
by the first test that needs it, not when the tests are collected: a session that runs no
PostgreSQL test, such as `make test-fast`, never starts one (`initdb`, `pg_ctl start` and
`createdb` take 1.1-1.2 s here) and needs no `postgresql` package. The binaries come from
Debian's `postgresql` package (`make test` installs it when missing). PostgreSQL refuses to
run as root, so a root session runs it as the `postgres` user the package creates. A test
that must restart or stop its server makes a `Throwaway` of its own (never the shared one).
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlsplit

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    if not found:
        raise RuntimeError(
            f"no PostgreSQL answers at 127.0.0.1:5432 and {name} is not installed (apt-get install postgresql)"
        )
    return found[-1]


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Throwaway:
    """A PostgreSQL of the tests' own: `initdb` into a temporary folder, run on a free port with
    trust authentication and a database `test`. `restart()` restarts it for real (same port,
    same data); `remove()` stops it and deletes the folder."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="gateway-pg-")
        self.data = os.path.join(self.folder, "data")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/test"
        try:
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            self._run([_binary("initdb"), "-D", self.data, "-U", "postgres", "-A", "trust"])
            self._pg_ctl("start")
            self._run([_binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "test"])
        except BaseException:
            self.remove()
            raise

    @staticmethod
    def _run(args: list[str], check: bool = True) -> None:
        subprocess.run(_as_postgres(args), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=check)

    def _pg_ctl(self, action: str, *extra: str, check: bool = True) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        log = os.path.join(self.folder, "log")
        self._run([_binary("pg_ctl"), "-D", self.data, "-l", log, "-o", options, "-w", *extra, action], check=check)
        if action != "stop":
            deadline = time.monotonic() + 30
            while not _answers("127.0.0.1", self.port) and time.monotonic() < deadline:
                time.sleep(0.1)

    def restart(self) -> None:
        """`pg_ctl restart`: a fast shutdown (clients get AdminShutdown), then a start."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._pg_ctl("start")

    def remove(self) -> None:
        self._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _start_throwaway() -> str:
    server = Throwaway()
    atexit.register(server.remove)
    return server.url


_shared: str | None = None


def postgres_url() -> str:
    """The server the tests use (see the module's docstring): found, or started, on the first
    call; every later call in the session answers the same without looking again."""
    global _shared
    if _shared is None:
        _shared = _find_or_start()
    return _shared


def _find_or_start() -> str:
    url = os.environ.get("GATEWAY_TEST_POSTGRES")
    if url:
        return url
    parts = urlsplit(DEFAULT)
    if _answers(parts.hostname or "127.0.0.1", parts.port or 5432):
        return DEFAULT
    url = _start_throwaway()
    os.environ["GATEWAY_TEST_POSTGRES"] = url  # processes the tests start see the same server
    return url

"""A PostgreSQL for the tests, wherever they run.

`GATEWAY_TEST_POSTGRES` names a server to use. Otherwise the tests use the one at
127.0.0.1:5432 if it answers, and else start a throwaway server of their own: `initdb` into a
temporary folder, `pg_ctl start` on a free port with trust authentication, a database `test`;
it is stopped and removed when the test session ends. The binaries come from Debian's
`postgresql` package (`make test` installs it when missing). PostgreSQL refuses to run as
root, so a root session runs it as the `postgres` user the package creates.
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


def _start_throwaway() -> str:
    folder = tempfile.mkdtemp(prefix="gateway-pg-")
    data = os.path.join(folder, "data")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    subprocess.run(_as_postgres([_binary("initdb"), "-D", data, "-U", "postgres", "-A", "trust"]), **quiet)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
    log = os.path.join(folder, "log")
    subprocess.run(_as_postgres([_binary("pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "start"]), **quiet)

    def stop() -> None:
        subprocess.run(
            _as_postgres([_binary("pg_ctl"), "-D", data, "-m", "immediate", "stop"]),
            check=False,
            **{
                "stdout": subprocess.DEVNULL,
                "stderr": subprocess.DEVNULL,
            },
        )
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 30
    while not _answers("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.1)
    subprocess.run(
        _as_postgres([_binary("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "test"]), **quiet
    )
    return f"postgresql://postgres@127.0.0.1:{port}/test"


def postgres_url() -> str:
    """The server the tests use (see the module's docstring)."""
    url = os.environ.get("GATEWAY_TEST_POSTGRES")
    if url:
        return url
    parts = urlsplit(DEFAULT)
    if _answers(parts.hostname or "127.0.0.1", parts.port or 5432):
        return DEFAULT
    url = _start_throwaway()
    os.environ["GATEWAY_TEST_POSTGRES"] = url  # processes the tests start see the same server
    return url

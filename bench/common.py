"""Helpers shared by the benchmark scripts (run as `python bench/<script>.py`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: port {port} did not open")


SECRET = "bench-secret-key-0123456789abcdef"


def spawn_gateway(
    work: Path,
    name: str,
    proxy: int,
    admin: int,
    database: str,
    extra: str = "",
    launcher: tuple[str, ...] = ("-m", "gateway"),
    after: tuple[str, ...] = (),
) -> subprocess.Popen:
    """`gateway serve` in its own process, with a config written to `work`; output discarded.
    `launcher` replaces `-m gateway` (a harness around the CLI); `after` ends its arguments."""
    config = work / f"{name}.yaml"
    config.write_text(
        f"listen: {{host: 127.0.0.1, port: {proxy}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin}, token: bench-admin-token-0123456789}}\n"
        f"database: '{database}'\n{extra}"
    )
    return subprocess.Popen(
        [sys.executable, *launcher, "serve", "--config", str(config), *after],
        cwd=work,
        env={**os.environ, "GATEWAY_SECRET_KEY": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

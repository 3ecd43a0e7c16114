"""Tell the other processes on one SQLite file that a key changed, without waiting for a poll.

SQLite has no notifications, and every process sharing a file runs on one host. Each process
binds a Unix datagram socket in Linux's abstract namespace (no file to clean up, no path-length
limit), named after the database file. After a write commits, the writer sends one byte to
every peer it finds in `/proc/net/unix`; a peer wakes and reads the change log at once. A bell
that is lost (a full buffer, a peer in another network namespace, no /proc) costs nothing but
time: the 250 ms poll stays as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("gateway.store")
PEERS = Path("/proc/net/unix")
_numbers = itertools.count()  # several stores in one process each get a bell of their own


def bell_prefix(database: Path) -> str:
    """The name every process on this database file shares (the file's identity, not its spelling)."""
    try:
        stat = database.stat()
        identity = f"{stat.st_dev}:{stat.st_ino}"
    except OSError:
        identity = str(database.resolve())
    return "gateway-bell-" + hashlib.sha256(identity.encode()).hexdigest()[:20] + "-"


class Doorbell:
    def __init__(self) -> None:
        self._prefix = self._name = ""
        self._sock: socket.socket | None = None
        self.rung = asyncio.Event()

    def open(self, database: Path) -> None:
        """Listen for peers' bells (an unsupported system leaves the poll alone to do the work)."""
        self._prefix = bell_prefix(database)
        self._name = f"{self._prefix}{os.getpid()}.{next(_numbers)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind("\0" + self._name)
        except OSError as err:
            sock.close()
            log.info("no change notifications between processes (%s); polling only", err)
            return
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)
        self._sock = sock

    def _drain(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                self._sock.recv(64)
        self.rung.set()

    def ring(self) -> int:
        """Wake every other process on this file; returns how many were told."""
        if self._sock is None:
            return 0
        told = 0
        for name in self._peers():
            try:
                self._sock.sendto(b"!", "\0" + name)
                told += 1
            except OSError:  # gone, or its buffer is full (it has a wake-up pending anyway)
                continue
        return told

    def _peers(self) -> list[str]:
        try:
            lines = PEERS.read_text().splitlines()
        except OSError:
            return []
        marker = "@" + self._prefix
        names = {line.rsplit(None, 1)[-1][1:] for line in lines[1:] if marker in line}
        names.discard(self._name)
        return sorted(names)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

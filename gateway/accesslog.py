"""The access log: one JSON line per proxied request, written in batches off the hot path.

A request only appends a tuple to a list. Every 200 ms the list is handed to a writer thread
that formats and writes it, so a slow or blocked stdout never stalls the event loop (lines
are dropped, and counted, if the writer falls far behind). The key itself never appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import BinaryIO

FIELDS = ("time", "client_ip", "key_id", "account", "interface", "app", "reason", "status", "latency_ms", "bytes")
FLUSH_SECONDS = 0.2
MAX_PENDING = 100_000  # lines waiting for the writer; beyond this they are dropped


def format_lines(entries: list[tuple]) -> bytes:
    lines = []
    for entry in entries:
        record = dict(zip(FIELDS, entry, strict=True))
        record["time"] = datetime.fromtimestamp(entry[0], UTC).isoformat(timespec="milliseconds")
        record["latency_ms"] = round(entry[8] * 1000, 3)
        lines.append(json.dumps(record, separators=(",", ":")))
    lines.append("")
    return "\n".join(lines).encode()


class AccessLog:
    def __init__(self, enabled: bool, stream: BinaryIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream
        self.pending: list[tuple] = []
        self.queued = 0
        self.dropped = 0
        self._batches: queue.SimpleQueue[list[tuple] | None] = queue.SimpleQueue()
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None

    def record(self, entry: tuple) -> None:
        if len(self.pending) + self.queued < MAX_PENDING:
            self.pending.append(entry)
        else:
            self.dropped += 1

    def start(self) -> None:
        if self.enabled:
            self._thread = threading.Thread(target=self._write_forever, name="access-log", daemon=True)
            self._thread.start()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.hand_over()

    def hand_over(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            self.queued += len(pending)
            self._batches.put(pending)

    def _write_forever(self) -> None:
        while True:
            batch = self._batches.get()
            if batch is None:
                return
            stream = self.stream or sys.stdout.buffer
            try:
                stream.write(format_lines(batch))
                stream.flush()
            except (OSError, ValueError):
                self.dropped += len(batch)
            self.queued -= len(batch)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thread is not None:
            self.hand_over()
            self._batches.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
            self._thread = None

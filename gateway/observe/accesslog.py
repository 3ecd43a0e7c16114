"""The access log: one JSON line per proxied request, written in batches off the hot path.

A request formats its line when it is recorded (a small, steady cost: formatting a whole
batch at flush time held the event loop for milliseconds at a time and doubled the p99
latency). Every 200 ms a task joins the lines and hands the bytes to a writer thread, so a
slow or blocked stdout never stalls the loop: if the writer falls far behind, lines are
dropped and counted. The key itself never appears, only its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sys
import threading
import time
from typing import BinaryIO

from gateway.core.memo import remember

FIELDS = ("time", "client_ip", "key_id", "account", "interface", "app", "reason", "status", "latency_ms", "bytes")
FLUSH_SECONDS = 0.2
MAX_BACKLOG = 64 * 1024 * 1024  # bytes waiting for the writer; beyond this, lines are dropped
MAX_FIELD = 256  # characters of a client-chosen field (interface, app id) kept in a line
MEMO_ENTRIES = 4096
MEMO_LENGTH = 64
_quoted: dict[str | None, str] = {}


def clip(value: str | None) -> str | None:
    """A client-chosen field as a line keeps it: at most MAX_FIELD characters. Done when the
    request is recorded, so the batch waiting for the next flush holds no long strings."""
    return value if value is None or len(value) <= MAX_FIELD else value[:MAX_FIELD] + "..."


def _quote(value: str | None) -> str:
    """JSON for a string field; short values are memoised (ids, accounts and interfaces repeat)."""
    found = _quoted.get(value)
    if found is None:
        if value is not None and len(value) > MEMO_LENGTH:
            return json.dumps(value)
        found = remember(_quoted, value, json.dumps(value), MEMO_ENTRIES)
    return found


class _Clock:
    """`2026-01-02T03:04:05.678Z` with the part before the milliseconds built once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def prefix_of(self, second: int) -> str:
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self.prefix


Who = tuple[str | None, str | None, str | None, str | None, str | None, str]  # client_ip .. reason
_middles: dict[Who, str] = {}


def _middle(who: Who) -> str:
    """The fields from client_ip to reason, as JSON; memoised for short ones (a busy client
    sends the same key, interface and app again and again)."""
    found = _middles.get(who)
    if found is None:
        ip, key_id, account, interface, app, reason = who
        q = _quote
        found = (
            f'"client_ip":{q(ip)},"key_id":{q(key_id)},"account":{q(account)},'
            f'"interface":{q(interface)},"app":{q(app)},"reason":"{reason}"'
        )
        if len(found) <= 4 * MEMO_LENGTH + 128:
            remember(_middles, who, found, MEMO_ENTRIES)
    return found


LINE = '{"time":"%s.%03dZ",%s,"status":%d,"latency_ms":%.3f,"bytes":%d}\n'
# time (epoch seconds), client_ip, key_id, account, interface, app, reason, status, latency (s), bytes
Entry = tuple[float, str, str | None, str | None, str | None, str | None, str, int, float, int]


def format_line(clock: _Clock, entry: Entry) -> str:
    at, ip, key_id, account, interface, app, reason, status, latency, size = entry
    second = int(at)
    prefix = clock.prefix if second == clock.second else clock.prefix_of(second)
    who = (ip, key_id, account, interface, app, reason)
    return LINE % (prefix, (at - second) * 1000, _middles.get(who) or _middle(who), status, latency * 1000, size)


class AccessLog:
    def __init__(self, enabled: bool, stream: BinaryIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream
        self.pending: list[str] = []  # lines not yet handed to the writer
        self.backlog = 0  # bytes handed to the writer and not yet written
        self.dropped = 0
        self._clock = _Clock()
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def record(self, entry: Entry) -> None:
        self.pending.append(format_line(self._clock, entry))

    def start(self) -> None:
        if self.enabled:
            self._thread = threading.Thread(target=self._write_forever, name="access-log", daemon=True)
            self._thread.start()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self._hand_over_pending()

    def _hand_over_pending(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            self._hand_over("".join(pending).encode())

    def _hand_over(self, chunk: bytes) -> None:
        if self.backlog + len(chunk) > MAX_BACKLOG:
            self.dropped += chunk.count(b"\n")
            return
        self.backlog += len(chunk)
        self._chunks.put(chunk)

    def _write_forever(self) -> None:
        while True:
            chunk = self._chunks.get()
            if chunk is None:
                return
            stream = self.stream or sys.stdout.buffer
            try:
                stream.write(chunk)
                stream.flush()
            except (OSError, ValueError):
                self.dropped += chunk.count(b"\n")
            self.backlog -= len(chunk)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thread is not None:
            self._hand_over_pending()
            self._chunks.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
            self._thread = None

"""Active health checks: each target of an upstream with `health.active` is sent
`GET <path>` every `interval` seconds on a connection of its own (never a pooled one).
A 2xx or 3xx status line within `timeout` is a success. `unhealthy` failures in a row take the
target out of the rotation, `healthy` successes in a row bring it back; both are logged.
Each worker process probes for itself (as nginx workers without a shared zone do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from gateway.config import Active
from gateway.proxy.balance.target import Target

log = logging.getLogger("gateway.upstream")
STATUS_LINE = 1024  # bytes of the answer a probe reads: its status line


async def probe(target: Target, path: str, timeout: float) -> bool:
    """One check: True when the target answered `GET path` with 2xx or 3xx in time."""
    request = b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: gateway-health-check\r\nConnection: close\r\n\r\n" % (
        path.encode(),
        target.rules.upstream_host,
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=target.ssl, server_hostname=target.host if target.ssl else None
            )
            writer.write(request)
            line = await reader.readline()
    except (OSError, ValueError):  # TimeoutError included; ValueError: a line over the reader's limit
        return False
    finally:
        if writer is not None:
            writer.transport.abort()
    parts = line[:STATUS_LINE].split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit() and 200 <= int(parts[1]) < 400


class ActiveChecks:
    """The probing tasks of every target that has active checks."""

    def __init__(self, checked: Iterable[tuple[Target, Active]]) -> None:
        self.checked = list(checked)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._watch(target, active)) for target, active in self.checked]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []

    async def _watch(self, target: Target, active: Active) -> None:
        passed = failed = 0
        while True:
            if await probe(target, active.path, active.timeout):
                passed, failed = passed + 1, 0
                if not target.healthy and passed >= active.healthy:
                    target.healthy = True
                    log.warning(
                        "upstream %s: target %s is back (%d health checks passed)", target.upstream, target.url, passed
                    )
            else:
                passed, failed = 0, failed + 1
                target.last_failure = target.clock.now  # (the last resort is the least recently failed)
                if target.healthy and failed >= active.unhealthy:
                    target.healthy = False
                    log.warning(
                        "upstream %s: target %s is unhealthy (%d health checks failed: GET %s)",
                        target.upstream,
                        target.url,
                        failed,
                        active.path,
                    )
            await asyncio.sleep(active.interval)

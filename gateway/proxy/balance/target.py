"""One server of an upstream: its keep-alive pool, its weight, what it is doing now, and its
passive health.

Passive health, as nginx's `max_fails` and Envoy's outlier detection: `failures` failures in a
row (a connect refused or timed out, a fresh connection closed before any answer byte, a read
timeout) eject the target for `eject_for` seconds; each ejection that follows without an answer
in between lasts twice as long, up to 300 s. Once the time is up the target is tried again: an
answer brings it back (logged), one more failure ejects it again. Active probes (health.py) set
`healthy`; a target is chosen only when it is healthy and not ejected.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from gateway.config import MAX_EJECTION, Passive, Upstream
from gateway.proxy.outbox import Outbox
from gateway.proxy.seams import Clock
from gateway.proxy.upstream import UpstreamPool
from gateway.wire.request import HeadRules

log = logging.getLogger("gateway.upstream")


class Target(UpstreamPool):
    __slots__ = (
        "active",
        "answers",
        "clock",
        "ejected_until",
        "ejections",
        "failures",
        "failures_total",
        "healthy",
        "last_failure",
        "latency",
        "passive",
        "requests",
        "rules",
        "streak",
        "upstream",
        "url",
        "weight",
    )

    def __init__(
        self,
        upstream: str,
        config: Upstream,
        weight: int,
        passive: Passive,
        rules: HeadRules,
        host: str,
        clock: Clock,
        outbox: Outbox,
        max_head: int,
    ) -> None:
        """`rules`: the process's head rules; this target's copy differs in the Host it writes
        (`host`, else the target's own host[:port]) and in `config.preserve_host`."""
        super().__init__(config, outbox, max_head)
        self.upstream = upstream  # the name of the upstream it serves
        self.url = config.url
        self.weight = weight
        self.passive = passive
        self.rules = copy.copy(rules)  # (its name memo stays shared: names mean the same everywhere)
        self.rules.upstream_host = host.encode() if host else self.host_header
        self.rules.preserve_host = config.preserve_host
        self.clock = clock
        self.active = 0  # requests it carries now
        self.requests = 0  # requests sent to it (each try counts)
        self.answers = 0  # answers whose head arrived
        self.latency = 0.0  # seconds from sending to the answer's head, summed
        self.failures = 0  # in a row, since the last answer
        self.failures_total = 0
        self.ejections = 0  # times it was ejected
        self.streak = 0  # ejections since its last answer: each doubles the next
        self.ejected_until = 0.0  # on the loop's clock
        self.last_failure = -1e18  # on the loop's clock: the least recently failed is the last resort
        self.healthy = True  # what active probes say (always True without them)

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def failed(self, why: str) -> None:
        """A connect failure or timeout, a close before any answer byte, or a read timeout."""
        now = self.clock.now
        self.failures += 1
        self.failures_total += 1
        self.last_failure = now
        probation = self.streak > 0 and now >= self.ejected_until  # back from an ejection, failing again
        if self.failures >= self.passive.failures or probation:
            if now < self.ejected_until:
                return  # already out (requests sent before it was ejected are still failing)
            seconds = min(self.passive.eject_for * 2**self.streak, MAX_EJECTION)
            self.streak += 1
            self.ejections += 1
            self.ejected_until = now + seconds
            log.warning(
                "upstream %s: target %s ejected for %.0f s after %d failures in a row (last: %s)",
                self.upstream,
                self.url,
                seconds,
                self.failures,
                why,
            )

    def recovered(self) -> None:
        """An answer came after failures: the count starts again, and an ejected target is back."""
        if self.streak:
            log.warning("upstream %s: target %s is back (it answers again)", self.upstream, self.url)
        self.failures = 0
        self.streak = 0
        self.ejected_until = 0.0

    def status(self) -> dict[str, Any]:
        """What GET /api/v1/upstreams shows of it."""
        now = self.clock.now
        until = None
        if now < self.ejected_until:
            until = time.time() + (self.ejected_until - now)
        return {
            "url": self.url,
            "weight": self.weight,
            "healthy": self.healthy,
            "ejected_until": until,
            "active_requests": self.active,
            "failures": self.failures,
            "requests": self.requests,
        }

    def counters(self) -> list[object]:
        """Its numbers for the metrics (observe.metrics.UPSTREAM_FIELDS, in that order)."""
        up = 1 if self.available(self.clock.now) else 0
        return [
            self.upstream,
            self.url,
            self.requests,
            self.failures_total,
            self.ejections,
            self.answers,
            self.latency,
            self.active,
            up,
        ]

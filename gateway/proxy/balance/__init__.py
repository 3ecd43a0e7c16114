"""Named upstreams: weighted targets, one algorithm per file (round_robin, least_requests),
passive health in target.py, active checks in health.py.

A `Balancer` is one upstream: it chooses the target for each try of a request. A relay asks
`pick(tried)` for its first try (tried None) and for each retry (the targets it already tried);
when no target is available for a first try (every one ejected or unhealthy), `fallback()`
names the least recently failed one, which is tried once, without retries.
An upstream with one target skips all of it: `pick` is that target, as before balancing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.config import Config, Upstream, UpstreamGroup
from gateway.proxy.balance.health import ActiveChecks
from gateway.proxy.balance.least_requests import LeastRequests
from gateway.proxy.balance.round_robin import RoundRobin
from gateway.proxy.balance.target import Target
from gateway.proxy.outbox import Outbox
from gateway.proxy.seams import Clock
from gateway.wire.request import HeadRules

__all__ = ["ActiveChecks", "Balancer", "Target", "build_upstreams"]


class Balancer:
    __slots__ = ("clock", "name", "only", "picker", "retries", "targets")

    def __init__(self, name: str, group: UpstreamGroup, targets: Sequence[Target], clock: Clock) -> None:
        self.name = name
        self.targets = tuple(targets)
        self.clock = clock
        self.retries = group.retries if len(self.targets) > 1 else 0
        self.only = self.targets[0] if len(self.targets) == 1 else None
        self.picker = LeastRequests(targets) if group.balance == "least_requests" else RoundRobin(targets)

    def pick(self, tried: Sequence[object] | None) -> Target | None:
        """The target for the next try; None when every target is tried, ejected or unhealthy."""
        only = self.only
        if only is not None:
            return only if tried is None else None
        return self.picker.choose(self.clock.now, tried)

    def fallback(self) -> Target:
        """Every target is out: the one whose last failure is the oldest."""
        return min(self.targets, key=lambda target: target.last_failure)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "targets": [target.status() for target in self.targets]}


def build_upstreams(
    config: Config, outbox: Outbox, rules: HeadRules, clock: Clock
) -> tuple[dict[str, Balancer], ActiveChecks]:
    """Every upstream of the config ("default" first) and the active checks they ask for."""
    balancers: dict[str, Balancer] = {}
    checked = []
    for name, group in config.upstream_groups:
        targets = []
        for spec in group.targets:
            pool = Upstream(
                url=spec.url,
                connect_timeout=group.connect_timeout,
                read_timeout=group.read_timeout,
                preserve_host=group.preserve_host,
                verify_tls=group.verify_tls,
                max_idle_connections=group.max_idle_connections,
            )
            target = Target(
                name,
                pool,
                spec.weight,
                group.health.passive,
                rules,
                group.host,
                clock,
                outbox,
                config.limits.max_upstream_head,
            )
            targets.append(target)
            if group.health.active is not None:
                checked.append((target, group.health.active))
        balancers[name] = Balancer(name, group, targets, clock)
    return balancers, ActiveChecks(checked)

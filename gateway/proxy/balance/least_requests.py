"""Least requests (nginx's `least_conn`, Envoy's LEAST_REQUEST): the target with the fewest
requests in flight for its weight; among equals, smooth weighted round robin, so that idle
targets still share the work by weight."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.proxy.balance.round_robin import LOAD_SCALE, RoundRobin
from gateway.proxy.balance.target import Target


class LeastRequests:
    __slots__ = ("targets", "ties")

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = tuple(targets)
        self.ties = RoundRobin(targets)

    def choose(self, now: float, tried: Sequence[object] | None) -> Target | None:
        lowest: int | None = None
        for target in self.targets:
            if not target.available(now) or (tried is not None and target in tried):
                continue
            load = target.active * LOAD_SCALE // target.weight
            if lowest is None or load < lowest:
                lowest = load
        if lowest is None:
            return None
        return self.ties.choose(now, tried, lowest)

"""Smooth weighted round robin (nginx's): weights 5, 1, 1 give a a b a c a a, not a a a a a b c.

Each choice adds every candidate's weight to its `current`, takes the largest, and takes the
sum of the candidates' weights off the one chosen. Over any run of sum-of-weights choices each
target is chosen weight times, spread out; targets left out (ejected, unhealthy, already tried
for this request) are skipped without disturbing the others' turns.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.proxy.balance.target import Target


class RoundRobin:
    __slots__ = ("current", "targets")

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = tuple(targets)
        self.current = [0] * len(self.targets)

    def choose(self, now: float, tried: Sequence[object] | None, load: int | None = None) -> Target | None:
        """The next target among those available and not `tried`; with `load`, only among
        those whose load (least_requests' score) equals it. None: no candidate."""
        current = self.current
        best = -1
        total = 0
        for i, target in enumerate(self.targets):
            if not target.healthy or now < target.ejected_until or (tried is not None and target in tried):
                continue  # (Target.available, inline)
            if load is not None and target.active * LOAD_SCALE // target.weight != load:
                continue
            current[i] += target.weight
            total += target.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self.targets[best]


LOAD_SCALE = 1 << 20  # active requests per unit of weight, in fixed point (least_requests)

"""Counters of the data path, kept as plain numbers on the hot path and rendered on scrape.

Each worker keeps its own `Metrics`; with several workers each one writes a snapshot file
every second and worker 0 merges them into one Prometheus exposition.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SNAPSHOT_MAX_AGE = 10.0  # a worker file older than this belongs to a worker that is gone
# What each target of each upstream reports (proxy.balance.target.Target.counters), in order.
UPSTREAM_FIELDS = ("upstream", "target", "requests", "failures", "ejections", "answers", "latency", "active", "up")


class Metrics:
    def __init__(self, worker: int = 0) -> None:
        self.worker = worker
        self.requests: dict[tuple[str, int], int] = {}
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.store_errors = 0
        self.propagation_lag = 0.0
        self.keyring_size = 0
        self.access_log_dropped = 0
        # the data path's per-target numbers, read when a snapshot is taken (set by proxy.shared)
        self.upstream_counters: Callable[[], list[list[Any]]] | None = None

    def count(self, reason: str, status: int) -> None:
        key = (reason, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def observe_upstream(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def snapshot(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "at": time.time(),
            "requests": [[reason, status, n] for (reason, status), n in self.requests.items()],
            "latency_counts": self.latency_counts,
            "latency_sum": self.latency_sum,
            "store_errors": self.store_errors,
            "propagation_lag": self.propagation_lag,
            "keyring_size": self.keyring_size,
            "access_log_dropped": self.access_log_dropped,
            "upstreams": self.upstream_counters() if self.upstream_counters is not None else [],
        }

    def write_snapshot(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"worker-{self.worker}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.snapshot()))
        os.replace(temporary, path)


def read_snapshots(directory: Path, own: Metrics) -> list[dict[str, Any]]:
    """This worker's live numbers plus the other workers' recent snapshot files."""
    snapshots = [own.snapshot()]
    if directory.is_dir():
        now = time.time()
        for path in directory.glob("worker-*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("worker") != own.worker and now - data.get("at", 0) < SNAPSHOT_MAX_AGE:
                snapshots.append(data)
    return snapshots


class _Collector:
    def __init__(self, snapshots: list[dict[str, Any]], keys_per_account: dict[str, int]) -> None:
        self.snapshots = snapshots
        self.keys_per_account = keys_per_account

    def collect(self) -> Iterable[Any]:
        requests = CounterMetricFamily(
            "gateway_requests", "Proxied requests by decision reason and status", labels=["reason", "status"]
        )
        merged: dict[tuple[str, int], int] = {}
        for snap in self.snapshots:
            for reason, status, n in snap["requests"]:
                merged[(reason, status)] = merged.get((reason, status), 0) + n
        for (reason, status), n in sorted(merged.items()):
            requests.add_metric([reason, str(status)], n)
        yield requests

        counts = [sum(s["latency_counts"][i] for s in self.snapshots) for i in range(len(LATENCY_BUCKETS) + 1)]
        cumulative, buckets = 0, []
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency = HistogramMetricFamily(
            "gateway_upstream_latency_seconds", "Time from sending a request upstream to its response head"
        )
        latency.add_metric([], buckets, sum(s["latency_sum"] for s in self.snapshots))
        yield latency

        keys = GaugeMetricFamily("gateway_keys", "Keys per account", labels=["account"])
        for account, n in sorted(self.keys_per_account.items()):
            keys.add_metric([account], n)
        yield keys

        size = GaugeMetricFamily("gateway_keyring_size", "Keys held in memory by each worker", labels=["worker"])
        lag = GaugeMetricFamily(
            "gateway_propagation_lag_seconds",
            "Delay between an admin write in another process and this worker applying it (last seen)",
            labels=["worker"],
        )
        for snap in sorted(self.snapshots, key=lambda s: s["worker"]):
            size.add_metric([str(snap["worker"])], snap["keyring_size"])
            lag.add_metric([str(snap["worker"])], snap["propagation_lag"])
        yield size
        yield lag

        errors = CounterMetricFamily("gateway_store_errors", "Failed store operations")
        errors.add_metric([], sum(s["store_errors"] for s in self.snapshots))
        yield errors

        dropped = CounterMetricFamily(
            "gateway_access_log_dropped", "Access-log lines dropped because the log output fell behind"
        )
        dropped.add_metric([], sum(s["access_log_dropped"] for s in self.snapshots))
        yield dropped

        yield from _upstream_families(self.snapshots)


def _upstream_families(snapshots: list[dict[str, Any]]) -> Iterable[Any]:
    """Per upstream and target: counters summed over the workers, `up` only if every worker
    has the target in its rotation."""
    merged: dict[tuple[str, str], list[Any]] = {}
    for snap in snapshots:
        for row in snap.get("upstreams", []):
            values = dict(zip(UPSTREAM_FIELDS, row, strict=False))
            where = (str(values["upstream"]), str(values["target"]))
            seen = merged.get(where)
            numbers = [values[name] for name in UPSTREAM_FIELDS[2:]]
            if seen is None:
                merged[where] = numbers
            else:
                merged[where] = [
                    *(a + b for a, b in zip(seen[:-1], numbers[:-1], strict=True)),
                    min(seen[-1], numbers[-1]),
                ]
    labels = ["upstream", "target"]
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "requests": CounterMetricFamily(
            "gateway_upstream_requests", "Requests sent to each target (each try counts)", labels=labels
        ),
        "failures": CounterMetricFamily(
            "gateway_upstream_failures",
            "Connects refused or timed out, closes before an answer, read timeouts, per target",
            labels=labels,
        ),
        "ejections": CounterMetricFamily(
            "gateway_upstream_ejections", "Times each target was ejected after failures in a row", labels=labels
        ),
        "active": GaugeMetricFamily("gateway_upstream_active_requests", "Requests in flight per target", labels=labels),
        "up": GaugeMetricFamily(
            "gateway_upstream_target_up", "1 when the target is in the rotation (healthy, not ejected)", labels=labels
        ),
    }
    latency = SummaryMetricFamily(
        "gateway_upstream_target_latency_seconds",
        "Time from sending a request to its answer's head, per target",
        labels=labels,
    )
    for (upstream, target), numbers in sorted(merged.items()):
        values = dict(zip(UPSTREAM_FIELDS[2:], numbers, strict=True))
        for name, family in families.items():
            family.add_metric([upstream, target], values[name])
        latency.add_metric([upstream, target], count_value=values["answers"], sum_value=values["latency"])
    yield from families.values()
    yield latency


def render(snapshots: list[dict[str, Any]], keys_per_account: dict[str, int]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshots, keys_per_account))
    return generate_latest(registry)

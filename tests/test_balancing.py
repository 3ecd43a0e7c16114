"""Balancing without sockets: the algorithms' choices, passive ejection, the fallback, and
the `upstreams:` config. (The same code on real servers: tests/test_upstreams.py.)"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.core.errors import RuleError
from gateway.observe.metrics import Metrics, render
from gateway.proxy.balance import Balancer, build_upstreams
from gateway.proxy.balance.target import Target
from gateway.proxy.outbox import Outbox
from gateway.wire.request import HeadRules


class Clock:
    now = 1000.0


def upstreams(raw: dict[str, Any], env: dict[str, str] | None = None) -> tuple[dict[str, Balancer], Clock]:
    clock = Clock()
    config = parse_config(raw, env or {})
    rules = HeadRules("Authorization", "Bearer", "X-Plugin-Id")
    balancers, _ = build_upstreams(config, Outbox(), rules, clock)
    return balancers, clock


def group(*weights: int, **more: Any) -> dict[str, Any]:
    targets = [{"url": f"http://10.0.0.{i + 1}:9000", "weight": w} for i, w in enumerate(weights)]
    return {"upstreams": {"orders": {"targets": targets, **more}}}


def short(target: Target | None) -> str:
    assert target is not None
    return target.url.split(".")[-1].split(":")[0]


def test_smooth_round_robin_spreads_the_heavy_target_out() -> None:
    balancers, _ = upstreams(group(5, 1, 1))
    picks = [short(balancers["orders"].pick(None)) for _ in range(7)]
    assert picks == ["1", "1", "2", "1", "3", "1", "1"]  # nginx's order for 5, 1, 1


@pytest.mark.parametrize("balance", ["round_robin", "least_requests"])
def test_weights_hold_exactly_over_whole_rounds(balance: str) -> None:
    balancers, _ = upstreams(group(1, 2, 3, balance=balance))
    counts = Counter(short(balancers["orders"].pick(None)) for _ in range(600))
    assert counts == {"1": 100, "2": 200, "3": 300}


def test_tried_and_ejected_targets_are_skipped() -> None:
    balancers, clock = upstreams(group(1, 1, 1))
    orders = balancers["orders"]
    first, second, third = orders.targets
    assert {short(orders.pick([first])) for _ in range(10)} == {"2", "3"}
    assert orders.pick([first, second, third]) is None
    second.ejected_until = clock.now + 5
    assert {short(orders.pick([first])) for _ in range(10)} == {"3"}
    third.healthy = False
    assert orders.pick([first]) is None
    clock.now += 5  # the ejection is over
    assert short(orders.pick([first])) == "2"


def test_least_requests_takes_the_least_loaded_for_its_weight() -> None:
    balancers, _ = upstreams(group(1, 1, 2, balance="least_requests"))
    a, b, c = balancers["orders"].targets
    a.active, b.active, c.active = 3, 1, 3  # loads 3, 1, 1.5
    assert balancers["orders"].pick(None) is b
    b.active = 2  # loads 3, 2, 1.5
    assert balancers["orders"].pick(None) is c


def test_passive_ejection_doubles_up_to_300_seconds_and_an_answer_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    balancers, clock = upstreams(group(1, 1, health={"passive": {"failures": 2, "eject_for": 40}}))
    target = balancers["orders"].targets[0]
    caplog.set_level(logging.WARNING, "gateway.upstream")
    target.failed("connect failed")
    assert target.available(clock.now)  # one failure: still in
    target.failed("connect failed")
    assert target.ejected_until == clock.now + 40 and not target.available(clock.now)
    assert "ejected for 40 s" in caplog.text
    lengths = []
    for _ in range(5):  # back on probation after each ejection: one more failure ejects it again
        clock.now = target.ejected_until
        assert target.available(clock.now)
        target.failed("closed before answering")
        lengths.append(target.ejected_until - clock.now)
    assert lengths == [80, 160, 300, 300, 300]
    assert target.ejections == 6
    clock.now = target.ejected_until
    target.recovered()
    assert "is back" in caplog.text
    assert target.failures == 0 and target.available(clock.now)
    target.failed("connect failed")
    assert target.available(clock.now)  # the count and the doubling started again


def test_when_every_target_is_out_the_least_recently_failed_is_the_fallback() -> None:
    balancers, clock = upstreams(group(1, 1, 1))
    orders = balancers["orders"]
    for offset, target in zip((3, 1, 2), orders.targets, strict=True):
        clock.now = 1000 + offset
        for _ in range(3):
            target.failed("connect failed")
    assert orders.pick(None) is None
    assert orders.fallback() is orders.targets[1]


def test_one_target_is_always_picked_and_never_retried() -> None:
    balancers, _ = upstreams({"upstream": {"url": "http://127.0.0.1:9000"}})
    default = balancers["default"]
    only = default.targets[0]
    for _ in range(5):
        only.failed("connect failed")
    assert default.pick(None) is only and default.pick([only]) is None and default.retries == 0


def test_each_target_writes_its_own_host_unless_the_upstream_names_one() -> None:
    balancers, _ = upstreams(
        {
            "upstreams": {
                "orders": {"targets": [{"url": "http://10.0.0.1:9000"}, {"url": "https://api.example.com"}]},
                "billing": {"targets": [{"url": "http://10.0.0.3"}], "host": "billing.internal"},
            }
        }
    )
    assert [t.rules.upstream_host for t in balancers["orders"].targets] == [b"10.0.0.1:9000", b"api.example.com"]
    assert balancers["billing"].targets[0].rules.upstream_host == b"billing.internal"
    assert balancers["default"].targets[0].rules.upstream_host == b"127.0.0.1:9000"


def test_the_single_upstream_form_is_the_default_upstream() -> None:
    config = parse_config({"upstream": {"url": "http://10.1.1.1:81", "connect_timeout": 2, "read_timeout": 7}}, {})
    (name, default), *others = config.upstream_groups
    assert name == "default" and others == []
    assert [t.url for t in default.targets] == ["http://10.1.1.1:81"]
    assert (default.connect_timeout, default.read_timeout) == (2, 7)
    named = parse_config({"upstreams": {"default": {"targets": [{"url": "http://10.0.0.9"}]}}}, {})
    assert [t.url for t in dict(named.upstream_groups)["default"].targets] == ["http://10.0.0.9"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"upstreams": []}, "upstreams"),
        ({"upstreams": {"a b": {"targets": [{"url": "http://x"}]}}}, "upstreams.a b"),
        ({"upstreams": {"o": {}}}, "upstreams.o.targets"),
        ({"upstreams": {"o": {"targets": [{"url": "ftp://x"}]}}}, "upstreams.o.targets[0].url"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x/api"}]}}}, "upstreams.o.targets[0].url"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x", "weight": 0}]}}}, "upstreams.o.targets[0].weight"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x"}, {"url": "http://x/"}]}}}, "upstreams.o.targets"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x"}], "balance": "random"}}}, "upstreams.o.balance"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x"}], "retries": 11}}}, "upstreams.o.retries"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x"}], "read_timeout": 0}}}, "upstreams.o.read_timeout"),
        ({"upstreams": {"o": {"targets": [{"url": "http://x"}], "color": 1}}}, "upstreams.o.color"),
        (
            {"upstreams": {"o": {"targets": [{"url": "http://x"}], "health": {"passive": {"eject_for": 301}}}}},
            "upstreams.o.health.passive.eject_for",
        ),
        (
            {"upstreams": {"o": {"targets": [{"url": "http://x"}], "health": {"active": {"path": "healthz"}}}}},
            "upstreams.o.health.active.path",
        ),
        (
            {"routes": {"rules": [{"path": "/o/**", "interface": "crm.{rest}", "upstream": "o"}]}},
            "routes.rules[0].upstream",
        ),
    ],
)
def test_a_bad_upstream_names_its_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_config(raw, {})
    assert caught.value.field == field


def test_upstreams_default_and_gateway_upstream_are_one_or_the_other() -> None:
    raw = {"upstreams": {"default": {"targets": [{"url": "http://10.0.0.9"}]}}}
    with pytest.raises(RuleError) as caught:
        parse_config(raw, {"GATEWAY_UPSTREAM": "http://10.0.0.8"})
    assert caught.value.field == "GATEWAY_UPSTREAM"


def test_target_metrics_are_summed_over_workers_and_up_only_if_up_in_each() -> None:
    balancers, clock = upstreams(group(1, 1))
    first, second = balancers["orders"].targets
    first.requests, first.answers, first.latency = 3, 2, 0.5
    for _ in range(3):
        second.failed("connect failed")
    worker = Metrics(0)
    worker.upstream_counters = lambda: [t.counters() for b in balancers.values() for t in b.targets]
    one = worker.snapshot()
    first.ejected_until = clock.now + 5  # out in the second worker only
    other = dict(worker.snapshot(), worker=1)
    text = render([one, other], {}).decode()
    where = f'target="{first.url}",upstream="orders"'
    assert f"gateway_upstream_requests_total{{{where}}} 6.0" in text
    assert f"gateway_upstream_target_latency_seconds_count{{{where}}} 4.0" in text
    assert f"gateway_upstream_target_latency_seconds_sum{{{where}}} 1.0" in text
    assert f"gateway_upstream_target_up{{{where}}} 0.0" in text
    assert f'gateway_upstream_ejections_total{{target="{second.url}",upstream="orders"}} 2.0' in text
    assert f'gateway_upstream_failures_total{{target="{second.url}",upstream="orders"}} 6.0' in text

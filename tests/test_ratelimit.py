"""The rate-limit arithmetic as tables: parsing, and never more than N in any window."""

from __future__ import annotations

import random

import pytest

from gateway.core.errors import RuleError
from gateway.core.ratelimit import Limit, Window, check, parse_limits, parse_rate

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("5/second", "rate_limits"),
        ([{"requests": 0, "per": "second"}], "rate_limits[0]"),
        ([{"requests": 1_000_001, "per": "second"}], "rate_limits[0]"),
        ([{"requests": True, "per": "second"}], "rate_limits[0]"),
        ([{"requests": 1.5, "per": "second"}], "rate_limits[0]"),
        ([{"requests": 5, "per": "week"}], "rate_limits[0]"),
        ([{"requests": 5}], "rate_limits[0]"),
        ([{"requests": 5, "per": "second", "burst": 1}], "rate_limits[0]"),
        ([{"requests": 5, "per": "second"}, {"requests": 9, "per": "second"}], "rate_limits[1]"),
        ([{"requests": 1, "per": p} for p in ("second", "minute", "hour", "day", "day")], "rate_limits"),
    ],
)
def test_bad_limits(value, field) -> None:
    with pytest.raises(RuleError) as caught:
        parse_limits(value)
    assert caught.value.field == field


def test_limits_parse_and_sort() -> None:
    limits = parse_limits([{"requests": 1000, "per": "day"}, {"requests": 5, "per": "second"}])
    assert limits == (Limit(5, "second"), Limit(1000, "day"))
    assert parse_rate("5/second") == Limit(5, "second")
    with pytest.raises(RuleError):
        parse_rate("five/second")


def test_a_burst_of_n_plus_one_and_recovery() -> None:
    limits = (Limit(5, "second"),)
    windows = [Window()]
    verdicts = [check(windows, limits, T0 + i * 0.01) for i in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert verdicts[-1].reset >= 1
    assert check(windows, limits, T0 + 0.9).allowed is False  # still inside the window
    assert check(windows, limits, T0 + 1.05).allowed is True  # the burst's slot has left


def test_refusals_consume_nothing_across_windows() -> None:
    limits = (Limit(2, "second"), Limit(3, "minute"))
    windows = [Window(), Window()]
    assert [check(windows, limits, T0 + i * 0.1).allowed for i in range(4)] == [True, True, False, False]
    later = [check(windows, limits, T0 + 2 + i * 0.1) for i in range(3)]
    assert [v.allowed for v in later] == [True, False, False]  # the minute had 2 of 3 left, then 1
    assert later[1].limit == 3 and later[1].remaining == 0  # the tightest window is reported


@pytest.mark.parametrize("seed", range(5))
def test_never_more_than_n_in_any_window(seed: int) -> None:
    rng = random.Random(seed)
    limit = Limit(7, "second")
    window = Window()
    now, allowed = T0, []
    for _ in range(3000):
        now += rng.expovariate(40)
        if check([window], (limit,), now).allowed:
            allowed.append(now)
    for i, start in enumerate(allowed):  # slide a one-second window over every accepted request
        inside = sum(1 for t in allowed[i:] if t < start + 1)
        assert inside <= 7
    assert len(allowed) >= 7 * (now - T0) * 0.9  # and it does not starve: close to the limit

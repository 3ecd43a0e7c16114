"""The rate-limit arithmetic as tables: parsing, and never more than N in any window."""

from __future__ import annotations

import random

import pytest

from gateway.core.errors import RuleError
from gateway.core.ratelimit import Limit, Window, check, epoch_of, parse_limits, parse_rate

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


def one(window: Window, limit: Limit, now: float):
    return check([(window, limit, 0)], now)[1]


def test_a_burst_of_n_plus_one_and_recovery() -> None:
    limit = Limit(5, "second")
    window = Window()
    verdicts = [one(window, limit, T0 + i * 0.01) for i in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert verdicts[-1].reset >= 1
    assert one(window, limit, T0 + 0.9).allowed is False  # still inside the window
    assert one(window, limit, T0 + 1.05).allowed is True  # the burst's slot has left


def test_refusals_consume_nothing_across_windows_and_groups() -> None:
    account, second, minute = Window(), Window(), Window()
    counters = [(account, Limit(10, "minute"), 0), (second, Limit(2, "second"), 1), (minute, Limit(3, "minute"), 1)]
    first = [check(counters, T0 + i * 0.1) for i in range(4)]
    assert [group for group, _ in first] == [None, None, 1, 1]  # the key's limit refuses, group 1
    later = [check(counters, T0 + 2 + i * 0.1) for i in range(3)]
    assert [group for group, _ in later] == [None, 1, 1]  # the minute had 1 of 3 left
    assert later[1][1].limit == 3 and later[1][1].remaining == 0  # the tightest window is reported
    assert account.used(Limit(10, "minute"), T0 + 3) == 3  # refused requests were not counted
    tight = [(Window(), Limit(1, "minute"), 0), (Window(), Limit(5, "second"), 1)]
    assert check(tight, T0)[0] is None and check(tight, T0 + 0.1)[0] == 0  # the account refuses first


@pytest.mark.parametrize("seed", range(5))
def test_never_more_than_n_in_any_window(seed: int) -> None:
    """Busy stretches (40 a second) and quiet ones (gaps of seconds, longer than the span)."""
    rng = random.Random(seed)
    limit = Limit(7, "second")
    window = Window()
    now, allowed = T0, []
    for i in range(3000):
        now += rng.expovariate(40 if i % 600 < 500 else 0.7)
        if one(window, limit, now).allowed:
            allowed.append(now)
    for i, start in enumerate(allowed):  # slide a one-second window over every accepted request
        inside = sum(1 for t in allowed[i:] if t < start + 1)
        assert inside <= 7
    busy_seconds = 5 * 500 / 40  # five busy stretches of about 12.5 s
    assert len(allowed) >= 7 * busy_seconds * 0.9  # and it does not starve: close to the limit


@pytest.mark.parametrize("per", ["second", "minute"])
def test_the_one_window_shortcut_agrees_with_check(per: str) -> None:
    """`Window.take` counts, refuses and reports exactly as `check` does for one window."""
    rng = random.Random(per)
    limit = Limit(5, per)
    general, single = Window(), Window()
    now = T0
    for _ in range(2000):
        now += rng.expovariate(8 / limit.seconds)
        group, verdict = check([(general, limit, 0)], now)
        lines = single.take(limit, now)
        assert (group is None) is (lines is not None)
        if lines is not None:
            assert lines == verdict.headers() + b"\r\n"
        assert (single.total, list(single.slots)) == (general.total, list(general.slots))


@pytest.mark.parametrize("per", ["second", "hour"])
def test_slots_counted_from_a_day_answer_as_from_the_unix_epoch(per: str) -> None:
    """A window numbering its slots from a day (small numbers, fast) decides exactly as one
    numbering them from 1970, and names the same slots when it reports them (to Redis)."""
    rng = random.Random(per)
    limit = Limit(5, per)
    plain, dated = Window(), Window(epoch_of(T0))
    now = T0
    for _ in range(500):
        now += rng.expovariate(8 / limit.seconds)
        assert plain.take(limit, now) == dated.take(limit, now)
        assert [dated.absolute(slot, limit) for slot in dated.slots] == list(plain.slots)
    assert dated.slots[-1] < min(2**30, plain.slots[-1])

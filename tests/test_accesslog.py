"""Access-log lines as a table: each is one JSON object, whatever the fields hold."""

from __future__ import annotations

import calendar
import json

import pytest

from gateway.observe.accesslog import _Clock, format_line

AT = calendar.timegm((2026, 11, 27, 18, 31, 10)) + 0.0456


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            (AT, "1.2.3.4", "k_1", "acme", "data.list", "A1", "allowed", 200, 0.0012345, 41),
            {
                "time": "2026-11-27T18:31:10.045Z",
                "client_ip": "1.2.3.4",
                "key_id": "k_1",
                "account": "acme",
                "interface": "data.list",
                "app": "A1",
                "reason": "allowed",
                "status": 200,
                "latency_ms": 1.234,
                "bytes": 41,
            },
        ),
        (
            (AT + 0.9999, "::1", None, None, None, None, "invalid_key", 401, 0.0, 0),
            {
                "time": "2026-11-27T18:31:11.045Z",
                "client_ip": "::1",
                "key_id": None,
                "account": None,
                "interface": None,
                "app": None,
                "reason": "invalid_key",
                "status": 401,
                "latency_ms": 0.0,
                "bytes": 0,
            },
        ),
        (
            (AT, "1.2.3.4", "k_1", "acme", 'x"\\\n\u2028', "\u6570\x00", "app_not_allowed", 403, 12.5, 0),
            {
                "time": "2026-11-27T18:31:10.045Z",
                "client_ip": "1.2.3.4",
                "key_id": "k_1",
                "account": "acme",
                "interface": 'x"\\\n\u2028',
                "app": "\u6570\x00",
                "reason": "app_not_allowed",
                "status": 403,
                "latency_ms": 12500.0,
                "bytes": 0,
            },
        ),
    ],
)
def test_lines(fields: tuple, expected: dict) -> None:
    line = format_line(_Clock(), fields)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == expected


def test_a_clock_moves_on_with_the_seconds() -> None:
    clock = _Clock()
    first, later, again = (
        json.loads(format_line(clock, (at, "1.2.3.4", None, None, None, None, "missing_key", 401, 0.0, 0)))
        for at in (AT, AT + 61, AT)
    )
    assert (first["time"], later["time"], again["time"]) == (
        "2026-11-27T18:31:10.045Z",
        "2026-11-27T18:32:11.045Z",
        "2026-11-27T18:31:10.045Z",
    )

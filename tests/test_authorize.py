"""The pure decision, row by row in the contract's order."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.core import decision as a
from gateway.core.iprules import client_ip
from gateway.core.routes import RouteMatch
from tests.conftest import make_key


def snapshot(**fields) -> a.KeySnapshot:
    return a.KeySnapshot.of(make_key(**fields))


DATA_BODY = RouteMatch("data.create", "body", "app_id", None)
DATA_PATH = RouteMatch("data.create", "path", "app_id", "app1")
DATA_QUERY = RouteMatch("data.create", "query", "app_id", None)
WORKFLOW = RouteMatch("workflow.task_approve", None, None, None)
IP = client_ip("10.0.0.5")
OTHER_IP = client_ip("10.0.1.5")

CASES = [
    # (name, key, key_sent, ip, plugin, route, app_id, unknown_allowed, expected)
    ("no key", None, False, IP, False, DATA_BODY, None, False, a.MISSING_KEY),
    ("unknown key", None, True, IP, False, DATA_BODY, None, False, a.INVALID_KEY),
    (
        "disabled beats ip",
        snapshot(enabled=False, ip_whitelist=("1.1.1.1",)),
        True,
        IP,
        False,
        None,
        None,
        False,
        a.KEY_DISABLED,
    ),
    (
        "ip not allowed",
        snapshot(ip_whitelist=("10.0.0.*",)),
        True,
        OTHER_IP,
        False,
        DATA_BODY,
        None,
        False,
        a.IP_NOT_ALLOWED,
    ),
    (
        "ip beats plugin",
        snapshot(ip_whitelist=("10.0.0.*",)),
        True,
        OTHER_IP,
        True,
        DATA_BODY,
        None,
        False,
        a.IP_NOT_ALLOWED,
    ),
    (
        "ipv6 never matches",
        snapshot(ip_whitelist=("0.0.0.0/0",)),
        True,
        None,
        False,
        WORKFLOW,
        None,
        False,
        a.IP_NOT_ALLOWED,
    ),
    (
        "plugin with whitelist",
        snapshot(ip_whitelist=("10.0.0.5",)),
        True,
        IP,
        True,
        WORKFLOW,
        None,
        False,
        a.PLUGIN_NOT_ALLOWED,
    ),
    ("plugin without whitelist", snapshot(), True, IP, True, WORKFLOW, None, False, a.ALLOW),
    (
        "plugin beats unknown route",
        snapshot(ip_whitelist=("10.0.0.5",)),
        True,
        IP,
        True,
        None,
        None,
        False,
        a.PLUGIN_NOT_ALLOWED,
    ),
    ("unknown route", snapshot(), True, IP, False, None, None, False, a.UNKNOWN_INTERFACE),
    ("unknown route allowed", snapshot(), True, IP, False, None, None, True, a.ALLOW),
    (
        "unknown allowed, listed interfaces",
        snapshot(interfaces=("data",)),
        True,
        IP,
        False,
        None,
        None,
        True,
        a.INTERFACE_NOT_ALLOWED,
    ),
    ("unknown allowed, listed apps", snapshot(apps=("x",)), True, IP, False, None, None, True, a.APP_NOT_ALLOWED),
    ("unknown beats interface", snapshot(interfaces=()), True, IP, False, None, None, False, a.UNKNOWN_INTERFACE),
    ("interface by category", snapshot(interfaces=("data",)), True, IP, False, DATA_BODY, None, False, a.ALLOW),
    ("interface by id", snapshot(interfaces=("data.create",)), True, IP, False, DATA_BODY, None, False, a.ALLOW),
    (
        "other interface id",
        snapshot(interfaces=("data.list",)),
        True,
        IP,
        False,
        DATA_BODY,
        None,
        False,
        a.INTERFACE_NOT_ALLOWED,
    ),
    ("empty interfaces", snapshot(interfaces=()), True, IP, False, WORKFLOW, None, False, a.INTERFACE_NOT_ALLOWED),
    (
        "interface beats app",
        snapshot(interfaces=("form",), apps=("zzz",)),
        True,
        IP,
        False,
        DATA_PATH,
        "app1",
        False,
        a.INTERFACE_NOT_ALLOWED,
    ),
    ("apps all", snapshot(), True, IP, False, DATA_BODY, None, False, a.ALLOW),
    ("app in body: read it", snapshot(apps=("app1",)), True, IP, False, DATA_BODY, None, False, a.NEED_BODY),
    ("app in path allowed", snapshot(apps=("app1",)), True, IP, False, DATA_PATH, "app1", False, a.ALLOW),
    ("app in path refused", snapshot(apps=("app2",)), True, IP, False, DATA_PATH, "app1", False, a.APP_NOT_ALLOWED),
    ("app in query missing", snapshot(apps=("app1",)), True, IP, False, DATA_QUERY, None, False, a.NO_APP_ID),
    ("empty apps", snapshot(apps=()), True, IP, False, DATA_PATH, "app1", False, a.APP_NOT_ALLOWED),
    ("account-level route, listed apps", snapshot(apps=("app1",)), True, IP, False, WORKFLOW, None, False, a.ALLOW),
    (
        "whitelisted ip allowed",
        snapshot(ip_whitelist=("10.0.0.0/24",)),
        True,
        IP,
        False,
        WORKFLOW,
        None,
        False,
        a.ALLOW,
    ),
]


@pytest.mark.parametrize(
    ("key", "key_sent", "ip", "plugin", "route", "app_id", "unknown_allowed", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision(key, key_sent, ip, plugin, route, app_id, unknown_allowed, expected) -> None:
    assert a.authorize(key, key_sent, ip, plugin, route, app_id, unknown_allowed) is expected


@pytest.mark.parametrize(
    ("apps", "app_id", "expected"),
    [
        (("a",), "a", a.ALLOW),
        (("a",), "b", a.APP_NOT_ALLOWED),
        (("a",), None, a.NO_APP_ID),
        (None, None, a.ALLOW),
    ],
)
def test_app_from_body(apps, app_id, expected) -> None:
    assert a.authorize_app(snapshot(apps=apps), app_id) is expected


def test_answers_match_the_contract() -> None:
    table = {d.reason: (d.status, d.code) for d in a.ALL_DENIALS}
    assert table == {
        "ambiguous_request": (400, 400),
        "missing_key": (401, 8301),
        "invalid_key": (401, 8301),
        "key_expired": (401, 8301),
        "key_disabled": (403, 8302),
        "ip_not_allowed": (403, 8302),
        "plugin_not_allowed": (403, 8302),
        "unknown_interface": (404, 1),
        "interface_not_allowed": (403, 8302),
        "app_not_allowed": (403, 8302),
        "body_too_large": (413, 413),
        "unsupported_media_type": (415, 415),
        "account_rate_limited": (429, 8303),
        "key_rate_limited": (429, 8304),
        "rate_limit_unavailable": (503, 503),
        "upstream_unavailable": (502, 502),
        "upstream_timeout": (504, 504),
    }


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("fields", "now", "expected"),
    [
        ({"expires_at": NOW + 1}, NOW, a.ALLOW),
        ({"expires_at": NOW}, NOW, a.KEY_EXPIRED),
        ({"expires_at": NOW - 1, "enabled": False}, NOW, a.KEY_EXPIRED),  # expiry before status
        ({"retired_at": NOW + 1}, NOW, a.ALLOW),
        ({"retired_at": NOW}, NOW, a.INVALID_KEY),  # a rotated-out secret after its grace period
        ({"retired_at": NOW - 1, "expires_at": NOW - 1}, NOW, a.INVALID_KEY),
        ({"retired_at": NOW + 1, "expires_at": NOW - 1}, NOW, a.KEY_EXPIRED),
    ],
)
def test_expiry_and_rotation(fields, now, expected) -> None:
    key = dataclasses.replace(snapshot(), **fields)
    route = RouteMatch("app.list", None, None, None)
    assert a.authorize(key, True, IP, False, route, None, False, now) is expected

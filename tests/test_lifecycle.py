"""Key expiry, rotation with a grace period, key prefixes, and least-privilege admin tokens,
against real gateways (two replicas on one database where it matters)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Admin, Proxy

V5_LIST = "/api/v5/app/entry/data/list"


def later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def outcome(proxy: Proxy, key: str) -> tuple[int, str | None]:
    status, body = await proxy.json("POST", V5_LIST, key=key, json={"app_id": "A1"})
    return status, (body or {}).get("reason") if status != 200 else None


async def eventually(check: Any, expected: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (found := await check()) != expected:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


# expiry
async def test_a_key_is_refused_the_moment_it_expires(proxy: Proxy) -> None:
    created = await proxy.admin.create(expires_at=later(1.5))
    assert created["expires_at"].endswith("Z")
    assert await outcome(proxy, created["key"]) == (200, None)
    await asyncio.sleep(1.6)
    assert await outcome(proxy, created["key"]) == (401, "key_expired")
    status, _ = await proxy.admin.call("PATCH", f"/api/v1/keys/{created['id']}", {"expires_at": None})
    assert status == 200
    assert await outcome(proxy, created["key"]) == (200, None)


@pytest.mark.parametrize(
    "value", ["2020-01-01T00:00:00Z", "2999-01-01T00:00:00", "tomorrow", 1893456000, "2999-13-01T00:00:00Z", "x" * 50]
)
async def test_bad_expiry_times(admin: Admin, value: Any) -> None:
    status, body = await admin.call("POST", "/api/v1/keys", {"expires_at": value})
    assert status == 422 and body["error"]["field"] == "expires_at"


async def test_expiry_with_an_offset_is_kept_in_utc(admin: Admin) -> None:
    key = await admin.create(expires_at="2999-01-01T08:00:00+08:00")
    assert key["expires_at"] == "2999-01-01T00:00:00.000Z"
    copied = (await admin.call("POST", f"/api/v1/keys/{key['id']}/copy"))[1]
    assert copied["expires_at"] == key["expires_at"]


# rotation
async def test_rotation_keeps_the_previous_secret_for_its_grace_period(start_proxy: Any, tmp_path: Path) -> None:
    a: Proxy = await start_proxy()
    b: Proxy = await start_proxy()  # a second replica on the same database
    created = await a.admin.create(name="rotating")
    old = created["key"]
    status, rotated = await a.admin.call("POST", f"/api/v1/keys/{created['id']}/rotate", {"grace_seconds": 2})
    assert status == 200 and rotated["id"] == created["id"] and rotated["key"] != old
    assert rotated["previous_expires_at"] is not None and rotated["key_masked"] != created["key_masked"]
    new = rotated["key"]
    for replica in (a, b):
        await eventually(lambda replica=replica: outcome(replica, new), (200, None))
        assert await outcome(replica, old) == (200, None)
    await asyncio.sleep(2.1)
    for replica in (a, b):  # the end of the grace period is data: every replica applies it alone
        assert await outcome(replica, old) == (401, "invalid_key")
        assert await outcome(replica, new) == (200, None)
    status, shown = await a.admin.call("GET", f"/api/v1/keys/{created['id']}")
    assert shown["previous_expires_at"] is None
    status, trail = await a.admin.call("GET", f"/api/v1/audit?key_id={created['id']}")
    rotations = [entry for entry in trail["items"] if entry["action"] == "rotate"]
    assert len(rotations) == 1 and rotations[0]["actor"] == "root"


async def test_one_previous_secret_at_most_and_no_grace_means_at_once(proxy: Proxy) -> None:
    created = await proxy.admin.create()
    first = created["key"]
    second = (await proxy.admin.call("POST", f"/api/v1/keys/{created['id']}/rotate", {"grace_seconds": 600}))[1]["key"]
    third = (await proxy.admin.call("POST", f"/api/v1/keys/{created['id']}/rotate", {"grace_seconds": 600}))[1]["key"]
    assert await outcome(proxy, first) == (401, "invalid_key")  # replaced as the previous secret
    assert await outcome(proxy, second) == (200, None)
    assert await outcome(proxy, third) == (200, None)
    status, fourth = await proxy.admin.call("POST", f"/api/v1/keys/{created['id']}/rotate")
    assert status == 200 and fourth["previous_expires_at"] is None
    assert await outcome(proxy, third) == (401, "invalid_key")
    assert await outcome(proxy, fourth["key"]) == (200, None)
    revealed = (await proxy.admin.call("GET", f"/api/v1/keys/{created['id']}/secret"))[1]["key"]
    assert revealed == fourth["key"]


@pytest.mark.parametrize(
    "body",
    [
        {"grace_seconds": -1},
        {"grace_seconds": 604_801},
        {"grace_seconds": "60"},
        {"grace_seconds": True},
        {"grace_seconds": 1.5},
        {"grace": 5},
    ],
)
async def test_bad_grace_periods(admin: Admin, body: dict) -> None:
    key = await admin.create()
    status, answer = await admin.call("POST", f"/api/v1/keys/{key['id']}/rotate", body)
    assert status == 422, answer
    assert (await admin.call("GET", f"/api/v1/keys/{key['id']}"))[1]["key_masked"] == key["key_masked"]


async def test_a_prefix_marks_new_secrets_and_old_ones_keep_working(start_proxy: Any) -> None:
    plain: Proxy = await start_proxy()
    before = await plain.admin.create()
    prefixed: Proxy = await start_proxy(keys={"prefix": "gk_"})  # same database
    after = await prefixed.admin.create()
    assert after["key"].startswith("gk_") and len(after["key"]) == 35 and after["key_masked"].startswith("gk_")
    assert await outcome(prefixed, after["key"]) == (200, None)
    await eventually(lambda: outcome(prefixed, before["key"]), (200, None))


# admin tokens
PERMISSIONS = ["keys:read", "keys:write", "keys:reveal", "audit:read", "tokens:manage", "metrics:read"]


async def make_token(admin: Admin, permissions: list[str], account: str | None = "acme", token: str | None = None):
    status, body = await admin.call(
        "POST", "/api/v1/tokens", {"name": "t", "account": account, "permissions": permissions}, token=token
    )
    assert status == 201, body
    return body


def endpoints(key_id: str) -> list[tuple[str, str, Any, str, int]]:
    """(method, path, body, permission, success status) for every admin endpoint."""
    return [
        ("GET", "/api/v1/keys", None, "keys:read", 200),
        ("GET", f"/api/v1/keys/{key_id}", None, "keys:read", 200),
        ("GET", "/api/v1/interfaces", None, "keys:read", 200),
        ("GET", "/api/v1/settings", None, "keys:read", 200),
        ("POST", "/api/v1/keys", {"name": "new"}, "keys:write", 201),
        ("PATCH", f"/api/v1/keys/{key_id}", {"name": "renamed"}, "keys:write", 200),
        ("POST", f"/api/v1/keys/{key_id}/copy", None, "keys:write", 201),
        ("POST", f"/api/v1/keys/{key_id}/rotate", {"grace_seconds": 0}, "keys:write", 200),
        ("GET", f"/api/v1/keys/{key_id}/secret", None, "keys:reveal", 200),
        ("GET", "/api/v1/audit", None, "audit:read", 200),
        ("GET", "/api/v1/tokens", None, "tokens:manage", 200),
        ("GET", "/metrics", None, "metrics:read", 200),
    ]


@pytest.mark.parametrize("permission", PERMISSIONS)
async def test_every_endpoint_needs_its_permission(admin: Admin, permission: str) -> None:
    key = await admin.create(account="acme")
    token = (await make_token(admin, [permission], account=None if permission == "metrics:read" else "acme"))["token"]
    for method, path, body, needed, ok in endpoints(key["id"]):
        status, answer = await admin.call(method, path, body, token=token)
        if needed == permission:
            assert status == ok, (method, path, answer)
        else:
            assert (status, answer["error"]["code"]) == (403, "forbidden"), (method, path, answer)
    status, _ = await admin.call("DELETE", f"/api/v1/keys/{key['id']}", token=token)
    assert status == (204 if permission == "keys:write" else 403)
    me = (await admin.call("GET", "/api/v1/me", token=token))[1]
    assert me["permissions"] == [permission]


async def test_an_account_token_sees_and_changes_its_account_only(admin: Admin) -> None:
    mine = await admin.create(account="acme")
    theirs = await admin.create(account="globex")
    token = (await make_token(admin, PERMISSIONS[:-1]))["token"]  # all but metrics
    for method, path, body, _, _ in endpoints(theirs["id"]):
        if theirs["id"] in path:
            status, answer = await admin.call(method, path, body, token=token)
            assert (status, answer["error"]["code"]) == (404, "not_found"), (method, path)
    assert (await admin.call("DELETE", f"/api/v1/keys/{theirs['id']}", token=token))[0] == 404
    listed = (await admin.call("GET", "/api/v1/keys", token=token))[1]["items"]
    assert [k["id"] for k in listed] == [mine["id"]]
    assert (await admin.call("GET", "/api/v1/keys?account=globex", token=token))[0] == 403
    created = (await admin.call("POST", "/api/v1/keys", {"name": "x"}, token=token))[1]
    assert created["account"] == "acme"  # a create without account goes to the token's account
    status, body = await admin.call("POST", "/api/v1/keys", {"account": "globex"}, token=token)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    trail = (await admin.call("GET", "/api/v1/audit?limit=500", token=token))[1]["items"]
    assert trail and {entry["key_id"] for entry in trail} <= {mine["id"], created["id"]}
    assert (await admin.call("GET", "/metrics", token=(await make_token(admin, ["metrics:read"]))["token"]))[0] == 403
    # the key it may see is unchanged by the refused calls
    assert (await admin.call("GET", f"/api/v1/keys/{theirs['id']}"))[1]["name"] == theirs["name"]


async def test_token_managers_grant_only_what_they_hold(admin: Admin) -> None:
    manager = (await make_token(admin, ["tokens:manage", "keys:read"]))["token"]
    granted = await make_token(admin, ["keys:read"], token=manager)
    assert granted["account"] == "acme"
    for permissions, account in ((["keys:write"], "acme"), (["keys:read"], "globex"), (["keys:read"], None)):
        body = {"name": "x", "account": account, "permissions": permissions}
        status, answer = await admin.call("POST", "/api/v1/tokens", body, token=manager)
        if account is None:  # no account named: the manager's own
            assert status == 201 and answer["account"] == "acme"
        else:
            assert (status, answer["error"]["code"]) == (403, "forbidden"), answer
    other = await make_token(admin, ["keys:read"], account="globex")
    listed = (await admin.call("GET", "/api/v1/tokens", token=manager))[1]["items"]
    assert other["id"] not in {t["id"] for t in listed} and all(t["account"] == "acme" for t in listed)
    assert (await admin.call("DELETE", f"/api/v1/tokens/{other['id']}", token=manager))[0] == 404
    assert all("token" not in t and "digest" not in t for t in listed)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "t", "permissions": ["keys:everything"]}, "permissions[0]"),
        ({"name": "t", "permissions": []}, "permissions"),
        ({"name": "", "permissions": ["keys:read"]}, "name"),
        ({"name": "t", "account": "bad account", "permissions": ["keys:read"]}, "account"),
        ({"name": "t", "permissions": ["keys:read"], "admin": True}, "admin"),
    ],
)
async def test_token_field_rules(admin: Admin, body: dict, field: str) -> None:
    status, answer = await admin.call("POST", "/api/v1/tokens", body)
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (422, "invalid_field", field)


async def test_revocation_applies_to_the_next_call_on_every_replica(start_gateway: Any) -> None:
    a = await start_gateway()
    b = await start_gateway()  # same database
    token = await make_token(a.admin, ["keys:read"], account=None)
    for replica in (a, b):
        assert (await replica.admin.call("GET", "/api/v1/keys", token=token["token"]))[0] == 200
    assert (await a.admin.call("DELETE", f"/api/v1/tokens/{token['id']}"))[0] == 204
    for replica in (a, b):
        status, answer = await replica.admin.call("GET", "/api/v1/keys", token=token["token"])
        assert (status, answer["error"]["code"]) == (401, "unauthorized")


async def test_the_audit_names_who_acted_and_tokens_are_stored_as_digests(start_gateway: Any) -> None:
    running = await start_gateway()
    admin = running.admin
    token = await make_token(admin, ["keys:write", "keys:reveal"], account=None)
    key = (await admin.call("POST", "/api/v1/keys", {"name": "by token"}, token=token["token"]))[1]
    await admin.call("GET", f"/api/v1/keys/{key['id']}/secret", token=token["token"])
    await admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"name": "by root"})
    trail = (await admin.call("GET", f"/api/v1/audit?key_id={key['id']}"))[1]["items"]
    assert [(e["action"], e["actor"]) for e in trail] == [
        ("create", token["id"]),
        ("reveal", token["id"]),
        ("update", "root"),
    ]
    assert (trail[2]["before"], trail[2]["after"]) == ({"name": "by token"}, {"name": "by root"})
    listed = (await admin.call("GET", "/api/v1/tokens"))[1]["items"]
    assert {t["id"] for t in listed} == {token["id"]} and listed[0]["last_used_at"] is not None
    database = running.config.sqlite_path
    if database is not None:  # the token's secret is nowhere in the file, only its digest
        raw = Path(database).read_bytes() + Path(f"{database}-wal").read_bytes()
        assert token["token"].encode() not in raw
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 1

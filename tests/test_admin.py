"""The admin API contract (DESIGN sections 1 and 4), over HTTP against a real SQLite file."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import zlib

import aiohttp
import pytest

from gateway.core.errors import RuleError
from gateway.core.record import format_time, parse_expiry, parse_rfc3339
from gateway.core.tokens import PERMISSIONS, ROOT, Principal, Token
from gateway.runtime.gateway import Gateway
from tests.conftest import Admin, Running, make_config

KEY_FIELDS = {
    "id",
    "name",
    "account",
    "key_masked",
    "enabled",
    "apps",
    "interfaces",
    "ip_whitelist",
    "expires_at",
    "previous_expires_at",
    "rate_limits",
    "created_at",
    "updated_at",
    "last_used_at",
    "request_count",
}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_create_defaults_and_masking(admin: Admin) -> None:
    key = await admin.create()
    secret = key.pop("key")
    assert set(key) == KEY_FIELDS
    assert key["name"] == "API Key"
    assert key["account"] == "default"
    assert key["apps"] == "all" and key["interfaces"] == "all"
    assert key["ip_whitelist"] == [] and key["enabled"] is True
    assert key["last_used_at"] is None
    assert TIMESTAMP.fullmatch(key["created_at"]) and key["created_at"] == key["updated_at"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", secret)
    assert key["key_masked"] == f"{secret[:4]}****{secret[-4:]}"
    assert key["id"].startswith("k_")


async def test_key_object_never_contains_the_secret(admin: Admin) -> None:
    created = await admin.create(name="Orders sync")
    secret = created["key"]
    status, shown = await admin.call("GET", f"/api/v1/keys/{created['id']}")
    assert status == 200 and "key" not in shown and secret not in str(shown)
    status, listing = await admin.call("GET", "/api/v1/keys")
    assert status == 200 and secret not in str(listing)


async def test_reveal_returns_the_secret(admin: Admin) -> None:
    created = await admin.create()
    status, body = await admin.call("GET", f"/api/v1/keys/{created['id']}/secret")
    assert status == 200
    assert body == {"id": created["id"], "key": created["key"]}


async def test_create_with_every_field(admin: Admin) -> None:
    key = await admin.create(
        name="  Orders sync  ",
        account="acme",
        apps=["app1", "app2", "app1"],
        interfaces=["data", "workflow.approve"],
        ip_whitelist=[" 1.2.3.4 ", "10.0.0.*", "10.0.0.0/8", "1.2.3.4"],
        enabled=False,
    )
    assert key["name"] == "Orders sync"
    assert key["account"] == "acme"
    assert key["apps"] == ["app1", "app2"]
    assert key["interfaces"] == ["data", "workflow.approve"]
    assert key["ip_whitelist"] == ["1.2.3.4", "10.0.0.*", "10.0.0.0/8"]
    assert key["enabled"] is False


async def test_empty_lists_are_valid_and_kept(admin: Admin) -> None:
    key = await admin.create(apps=[], interfaces=[])
    assert key["apps"] == [] and key["interfaces"] == []


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ("2001:db8::1", "ipv6_not_supported"),
        ("::1", "ipv6_not_supported"),
        ("1.*.*.4", "invalid_field"),
        ("1.2.3.1*", "invalid_field"),
        ("01.2.3.4", "invalid_field"),
        ("1.2.3.256", "invalid_field"),
        ("10.0.0.1/8", "invalid_field"),
        ("10.0.0.0/33", "invalid_field"),
        ("10.0.0.0/", "invalid_field"),
        ("1.2.3", "invalid_field"),
        ("", "invalid_field"),
        ("   ", "invalid_field"),
        ("a.b.c.d", "invalid_field"),
        ("1.2.3.4.5", "invalid_field"),
        ("10.*.0.0/8", "invalid_field"),
    ],
)
async def test_invalid_whitelist_entries(admin: Admin, entry: str, code: str) -> None:
    status, body = await admin.call("POST", "/api/v1/keys", {"ip_whitelist": ["1.1.1.1", entry]})
    assert status == 422
    assert body["error"]["code"] == code
    assert body["error"]["field"] == "ip_whitelist[1]"
    assert entry.strip() in body["error"]["message"] or not entry.strip()


async def test_first_bad_whitelist_entry_is_reported(admin: Admin) -> None:
    status, body = await admin.call("POST", "/api/v1/keys", {"ip_whitelist": ["1.1.1.1", "x", "::1"]})
    assert status == 422 and body["error"]["field"] == "ip_whitelist[1]"


async def test_whitelist_limit_after_dedup(admin: Admin) -> None:
    fifty = [f"10.0.0.{i}" for i in range(50)]
    key = await admin.create(ip_whitelist=[*fifty, "10.0.0.0"])  # duplicate: still 50
    assert len(key["ip_whitelist"]) == 50
    status, body = await admin.call("POST", "/api/v1/keys", {"ip_whitelist": [*fifty, "10.0.1.1"]})
    assert status == 422
    assert body["error"]["code"] == "too_many_ips" and body["error"]["field"] == "ip_whitelist"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "a\x85b"}, "name"),
        ({"name": "a\u2028b"}, "name"),
        ({"name": "a\u2029b"}, "name"),
        ({"name": "a\ud800b"}, "name"),
        ({"name": "\udfff"}, "name"),
        ({"account": ""}, "account"),
        ({"account": "a" * 65}, "account"),
        ({"account": "acme corp"}, "account"),
        ({"account": "acme\r\nX-Injected: 1"}, "account"),
        ({"account": "<b>acct</b>"}, "account"),
        ({"account": "\ud800"}, "account"),
        ({"account": "caf\u00e9"}, "account"),
        ({"account": 5}, "account"),
        ({"apps": ["\ud800"]}, "apps[0]"),
        ({"apps": "some"}, "apps"),
        ({"apps": [1]}, "apps[0]"),
        ({"apps": ["ok", ""]}, "apps[1]"),
        ({"interfaces": "data"}, "interfaces"),
        ({"interfaces": ["nope"]}, "interfaces[0]"),
        ({"interfaces": ["data", "data.bad-name"]}, "interfaces[1]"),
        ({"interfaces": ["data."]}, "interfaces[0]"),
        ({"interfaces": ["xyz.create"]}, "interfaces[0]"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"ip_whitelist": "1.2.3.4"}, "ip_whitelist"),
        ({"ip_whitelist": [1234]}, "ip_whitelist[0]"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_fields(admin: Admin, body: dict, field: str) -> None:
    status, answer = await admin.call("POST", "/api/v1/keys", body)
    assert status == 422, answer
    assert answer["error"]["code"] == "invalid_field"
    assert answer["error"]["field"] == field
    assert answer["error"]["message"]


@pytest.mark.parametrize(
    "field", ["key", "id", "key_masked", "created_at", "updated_at", "last_used_at", "previous_expires_at"]
)
async def test_immutable_fields_on_create(admin: Admin, field: str) -> None:
    status, body = await admin.call("POST", "/api/v1/keys", {field: "x"})
    assert status == 422
    assert body["error"] == {"code": "immutable_field", "message": f"{field} cannot be set", "field": field}


@pytest.mark.parametrize("field", ["key", "id", "account", "key_masked", "created_at", "updated_at", "last_used_at"])
async def test_immutable_fields_on_patch(admin: Admin, field: str) -> None:
    key = await admin.create()
    status, body = await admin.call("PATCH", f"/api/v1/keys/{key['id']}", {field: "x", "name": "new"})
    assert status == 422 and body["error"]["code"] == "immutable_field" and body["error"]["field"] == field
    status, after = await admin.call("GET", f"/api/v1/keys/{key['id']}")
    assert after["name"] == "API Key"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
async def test_invalid_json(admin: Admin, raw: bytes) -> None:
    status, body = await admin.call("POST", "/api/v1/keys", raw=raw)
    assert status == 400 and body["error"]["code"] == "invalid_json"
    key = await admin.create()
    status, body = await admin.call("PATCH", f"/api/v1/keys/{key['id']}", raw=raw)
    assert status == 400 and body["error"]["code"] == "invalid_json"


async def test_token_required_everywhere_but_healthz(admin: Admin) -> None:
    key = await admin.create()
    calls = [
        ("POST", "/api/v1/keys"),
        ("GET", "/api/v1/keys"),
        ("GET", f"/api/v1/keys/{key['id']}"),
        ("GET", f"/api/v1/keys/{key['id']}/secret"),
        ("PATCH", f"/api/v1/keys/{key['id']}"),
        ("POST", f"/api/v1/keys/{key['id']}/copy"),
        ("DELETE", f"/api/v1/keys/{key['id']}"),
        ("GET", "/api/v1/interfaces"),
        ("GET", "/api/v1/nothing-here"),
    ]
    for token in ("", "wrong", admin.token + "x", admin.token[:-1]):
        for method, path in calls:
            status, body = await admin.call(method, path, {}, token=token)
            assert status == 401, (method, path)
            assert body["error"]["code"] == "unauthorized"
    async with admin.session.get(admin.url + "/healthz") as response:
        assert response.status == 200 and await response.json() == {"status": "ok"}
    status, _ = await admin.call("GET", f"/api/v1/keys/{key['id']}")
    assert status == 200  # nothing was deleted by the refused calls


async def test_patch_each_field(admin: Admin) -> None:
    key = await admin.create()
    status, updated = await admin.call(
        "PATCH",
        f"/api/v1/keys/{key['id']}",
        {"name": "Renamed", "apps": ["a"], "interfaces": ["form"], "ip_whitelist": ["9.9.9.9"], "enabled": False},
    )
    assert status == 200
    assert (updated["name"], updated["apps"], updated["interfaces"]) == ("Renamed", ["a"], ["form"])
    assert updated["ip_whitelist"] == ["9.9.9.9"] and updated["enabled"] is False
    assert updated["updated_at"] >= key["updated_at"] and updated["created_at"] == key["created_at"]
    assert updated["key_masked"] == key["key_masked"]
    status, back = await admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"apps": "all", "interfaces": "all"})
    assert back["apps"] == "all" and back["interfaces"] == "all"


async def test_rejected_edit_changes_nothing(admin: Admin) -> None:
    key = await admin.create(name="Keep", ip_whitelist=["1.2.3.4"])
    for bad in (
        {"name": "New", "ip_whitelist": ["1.2.3.4", "::1"]},
        {"name": "New", "apps": ["x"], "interfaces": ["bogus"]},
        {"name": "New", "ip_whitelist": [f"10.1.1.{i}" for i in range(51)]},
        {"name": "New", "enabled": "no"},
    ):
        status, _ = await admin.call("PATCH", f"/api/v1/keys/{key['id']}", bad)
        assert status == 422
    status, after = await admin.call("GET", f"/api/v1/keys/{key['id']}")
    key.pop("key")
    assert after == key


async def test_copy_keeps_everything_but_id_and_secret(admin: Admin) -> None:
    source = await admin.create(
        name="Src", account="acme", apps=["a1"], interfaces=["data.create"], ip_whitelist=["1.2.3.*"], enabled=False
    )
    status, copy = await admin.call("POST", f"/api/v1/keys/{source['id']}/copy")
    assert status == 201
    assert copy["id"] != source["id"] and copy["key"] != source["key"]
    assert copy["key_masked"] == f"{copy['key'][:4]}****{copy['key'][-4:]}"
    for field in ("name", "account", "apps", "interfaces", "ip_whitelist", "enabled"):
        assert copy[field] == source[field], field
    status, revealed = await admin.call("GET", f"/api/v1/keys/{copy['id']}/secret")
    assert revealed["key"] == copy["key"]


async def test_delete_then_404(admin: Admin) -> None:
    key = await admin.create()
    status, body = await admin.call("DELETE", f"/api/v1/keys/{key['id']}")
    assert status == 204 and body is None
    for method, path in (
        ("GET", f"/api/v1/keys/{key['id']}"),
        ("GET", f"/api/v1/keys/{key['id']}/secret"),
        ("PATCH", f"/api/v1/keys/{key['id']}"),
        ("POST", f"/api/v1/keys/{key['id']}/copy"),
        ("DELETE", f"/api/v1/keys/{key['id']}"),
    ):
        status, body = await admin.call(method, path, {"name": "x"} if method == "PATCH" else None)
        assert status == 404 and body["error"]["code"] == "not_found", (method, path)


async def test_unknown_ids_are_404(admin: Admin) -> None:
    for key_id in ("k_00000000000000000000000000", "nope", "k_" + "z" * 26):
        status, body = await admin.call("GET", f"/api/v1/keys/{key_id}")
        assert status == 404 and body["error"]["code"] == "not_found"


async def test_key_limit_under_concurrency(start_gateway) -> None:
    running: Running = await start_gateway(limits={"keys_per_account": 30})
    admin = running.admin
    results = await asyncio.gather(*(admin.call("POST", "/api/v1/keys", {"account": "acme"}) for _ in range(80)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 30 and statuses.count(409) == 50
    refused = next(body for status, body in results if status == 409)
    assert refused["error"]["code"] == "key_limit_reached"
    other = await admin.create(account="other")  # the limit is per account
    assert other["account"] == "other"
    status, page = await admin.call("GET", "/api/v1/keys?account=acme&limit=500")
    assert len(page["items"]) == 30
    first = page["items"][0]["id"]
    status, body = await admin.call("POST", f"/api/v1/keys/{first}/copy")
    assert status == 409 and body["error"]["code"] == "key_limit_reached"


async def test_default_limit_is_500_under_concurrency(admin: Admin) -> None:
    results = await asyncio.gather(*(admin.call("POST", "/api/v1/keys", {}) for _ in range(520)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 500 and statuses.count(409) == 20


async def test_paging_never_skips_or_repeats(admin: Admin) -> None:
    created = {(await admin.create(account="a" if i % 3 else "b"))["id"] for i in range(23)}
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
        status, page = await admin.call("GET", "/api/v1/keys" + query)
        assert status == 200 and len(page["items"]) <= 4
        seen.extend(item["id"] for item in page["items"])
        # writes between pages must not make the walk skip or repeat an existing key
        await admin.create(account="c")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert created <= set(seen)
    status, only_b = await admin.call("GET", "/api/v1/keys?account=b&limit=500")
    assert {item["account"] for item in only_b["items"]} == {"b"} and len(only_b["items"]) == 8
    await asyncio.gather(*(admin.create() for _ in range(30)))
    status, default = await admin.call("GET", "/api/v1/keys")
    assert len(default["items"]) == 50 and default["next_cursor"]


BAD_PAGING = [
    "limit=0",
    "limit=501",
    "limit=abc",
    "limit=-1",
    "limit=%C2%B2",  # superscript two: a digit to str.isdigit, not to int()
    "limit=%D9%A1%D9%A0",  # Arabic-Indic digits
    "limit=" + "9" * 5000,
    "limit=%205",
    "cursor=garbage",
    "cursor=a2V5",
    "cursor=" + "A" * 5000,
    "cursor=%ED%A0%80",
]


@pytest.mark.parametrize("query", BAD_PAGING)
async def test_bad_paging_parameters(admin: Admin, query: str) -> None:
    status, body = await admin.call("GET", f"/api/v1/keys?{query}")
    assert status == 422 and body["error"]["code"] == "invalid_field"
    assert body["error"]["field"] == query.split("=")[0]


@pytest.mark.parametrize(
    "query",
    [*BAD_PAGING[:8], "cursor=%C2%B2", "cursor=" + "9" * 5000, "cursor=-1", "key_id=%ED%A0%80", "key_id=k_1"],
)
async def test_bad_audit_parameters(admin: Admin, query: str) -> None:
    status, body = await admin.call("GET", f"/api/v1/audit?{query}")
    assert status == 422 and body["error"]["code"] == "invalid_field"
    assert body["error"]["field"] == query.split("=")[0]


@pytest.mark.parametrize("account", ["%ED%A0%80", "a%20b", "x" * 65, "%00"])
async def test_bad_account_filter(admin: Admin, account: str) -> None:
    status, body = await admin.call("GET", f"/api/v1/keys?account={account}")
    assert status == 422 and body["error"]["field"] == "account"


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
        (b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid_json"),
        (b'{"enabled": 1' + b"0" * 5000 + b"}", 400, "invalid_json"),
        (b'{"name": "x"} trailing', 400, "invalid_json"),
        (b'{"name": "x",}', 400, "invalid_json"),
        (b'{"name": "\xed\xa0\x80"}', 422, "invalid_field"),  # a surrogate spelled in UTF-8
    ],
)
async def test_hostile_json_is_a_clean_error(admin: Admin, raw: bytes, status: int, code: str) -> None:
    answer_status, body = await admin.call("POST", "/api/v1/keys", raw=raw)
    assert (answer_status, body["error"]["code"]) == (status, code)


@pytest.mark.parametrize("body", [{"enabled": 1e308 * 10}, {"name": 10**30}, {"apps": [1e999]}])
async def test_absurd_numbers_are_field_errors(admin: Admin, body: dict) -> None:
    status, answer = await admin.call("POST", "/api/v1/keys", raw=json.dumps(body).encode())
    assert status == 422 and answer["error"]["code"] == "invalid_field"


async def test_a_failing_sqlite_file_is_503_not_500(tmp_path) -> None:
    gateway = Gateway(make_config(tmp_path, f"sqlite:///{tmp_path}/broken.db"))
    await gateway.start()
    async with aiohttp.ClientSession() as session:
        try:
            await _calls_on_a_broken_store(
                Admin(session, f"http://127.0.0.1:{gateway.admin_port}", gateway.token), tmp_path
            )
        finally:
            await gateway.stop()


async def _calls_on_a_broken_store(admin: Admin, tmp_path) -> None:
    key = await admin.create()
    for name in ("broken.db", "broken.db-wal", "broken.db-shm"):  # damaged in place, under the open file
        path = tmp_path / name
        if path.exists():
            with path.open("r+b") as file:
                file.write(b"this is not a database" * (path.stat().st_size // 22 + 1))
    calls = [
        ("GET", "/api/v1/keys", None),
        ("POST", "/api/v1/keys", {}),
        ("GET", f"/api/v1/keys/{key['id']}", None),
        ("PATCH", f"/api/v1/keys/{key['id']}", {"name": "n"}),
        ("GET", f"/api/v1/keys/{key['id']}/secret", None),
        ("DELETE", f"/api/v1/keys/{key['id']}", None),
        ("GET", "/api/v1/audit", None),
    ]
    for method, path, body in calls:
        status, answer = await admin.call(method, path, body)
        assert status == 503, (method, path, answer)
        assert answer["error"]["code"] == "store_unavailable"


async def test_interfaces_catalogue(admin: Admin) -> None:
    status, body = await admin.call("GET", "/api/v1/interfaces")
    assert status == 200
    categories = {c["id"]: c["interfaces"] for c in body["categories"]}
    assert list(categories) == ["contacts", "app", "form", "data", "file", "workflow", "crm"]
    assert categories["data"] == [
        "data.list",
        "data.get",
        "data.create",
        "data.update",
        "data.delete",
        "data.batch_create",
        "data.batch_update",
        "data.batch_delete",
    ]  # the data actions by id, not a data.{action} template
    assert "app.list" in categories["app"] and "contacts.{rest}" in categories["contacts"]
    assert categories["crm"] == []


@pytest.mark.parametrize(
    ("interfaces", "status"),
    [
        (["data.lst"], 422),
        (["data.list", "data.batch_delete"], 201),
        (["app.nope"], 422),
        (["workflow.task_approve", "contacts.user_list"], 201),  # produced by {rest} templates
        (["workflow.approval_comments", "form.widget_list", "file.get_upload_token"], 201),
        (["crm.leads"], 422),  # no route produces it: a key scoped to it could call nothing
        (["crm", "data"], 201),  # categories are always valid
    ],
)
async def test_interface_ids_must_be_in_the_catalogue(admin: Admin, interfaces: list[str], status: int) -> None:
    answer_status, body = await admin.call("POST", "/api/v1/keys", {"interfaces": interfaces})
    assert answer_status == status, body
    if status == 422:
        assert body["error"]["code"] == "invalid_field" and body["error"]["field"].startswith("interfaces[")
        assert "catalogue" in body["error"]["message"]


async def test_wrong_method_and_unknown_path_are_json(admin: Admin) -> None:
    status, body = await admin.call("PUT", "/api/v1/keys")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    status, body = await admin.call("GET", "/api/v2/keys")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_oversized_admin_body(start_gateway) -> None:
    running: Running = await start_gateway(admin={"max_body": 1024})
    status, body = await running.admin.call("POST", "/api/v1/keys", raw=b'{"name": "' + b"x" * 4096 + b'"}')
    assert status == 413 and body["error"]["code"] == "body_too_large"


async def test_listing_searches_and_filters_across_pages(admin: Admin) -> None:
    made = [await admin.create(name=f"Batch {i:02d}", account="acme", enabled=i % 3 != 0) for i in range(30)]
    await admin.create(name="Other batch", account="beta")

    async def listing(query: str) -> list[dict]:
        items, cursor = [], None
        while True:
            status, page = await admin.call(
                "GET", f"/api/v1/keys?limit=4&{query}" + (f"&cursor={cursor}" if cursor else "")
            )
            assert status == 200, page
            items += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    assert [k["name"] for k in await listing("q=batch%201")] == [f"Batch {i}" for i in range(10, 20)]
    assert len(await listing("q=BATCH")) == 31  # any case, every account
    assert [k["id"] for k in await listing(f"q={made[7]['id'][:12]}")] == [made[7]["id"]]
    assert [k["id"] for k in await listing(f"q={made[8]['key_masked'][:4]}")] == [made[8]["id"]]
    disabled = await listing("status=disabled&account=acme")
    assert [k["id"] for k in disabled] == [k["id"] for k in made if not k["enabled"]]
    assert len(await listing("status=enabled")) == 21
    for query, field in (("status=off", "status"), ("q=" + "x" * 101, "q")):
        status, body = await admin.call("GET", f"/api/v1/keys?{query}")
        assert (status, body["error"]["code"], body["error"]["field"]) == (422, "invalid_field", field)
    status, settings = await admin.call("GET", "/api/v1/settings")
    assert settings["accounts"] == {"acme": 30, "beta": 1}
    _, token = await admin.call(
        "POST", "/api/v1/tokens", {"name": "beta", "account": "beta", "permissions": ["keys:read"]}
    )
    _, seen = await admin.call("GET", "/api/v1/settings", token=token["token"])
    assert seen["accounts"] == {"beta": 1}  # a scoped token counts its own account only
    _, found = await admin.call("GET", "/api/v1/keys?q=batch", token=token["token"])
    assert [k["name"] for k in found["items"]] == ["Other batch"]


# expires_at: RFC 3339 only (DESIGN §4 field rules, §7.1)
RFC3339_CASES = [
    # (text, UTC result or None when refused)
    ("2027-01-31T00:00:00Z", "2027-01-31T00:00:00.000Z"),
    ("2027-01-31t00:00:00z", "2027-01-31T00:00:00.000Z"),  # RFC 3339 §5.6: T and Z in any case
    ("2027-01-31T00:00:00z", "2027-01-31T00:00:00.000Z"),
    ("2027-01-31t00:00:00Z", "2027-01-31T00:00:00.000Z"),
    ("2027-01-31T08:00:00+08:00", "2027-01-31T00:00:00.000Z"),
    ("2027-01-31T00:00:00-00:00", "2027-01-31T00:00:00.000Z"),  # unknown local offset: still UTC
    ("2027-01-31T00:00:00.5Z", "2027-01-31T00:00:00.500Z"),
    ("2027-01-31T00:00:00.123456789Z", "2027-01-31T00:00:00.123Z"),
    ("2027-01-31T23:30:00-05:30", "2027-02-01T05:00:00.000Z"),
    ("2028-02-29T00:00:00Z", "2028-02-29T00:00:00.000Z"),  # a leap day
    ("2027-06-30T23:59:60Z", "2027-07-01T00:00:00.000Z"),  # a leap second: the next second
    ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59.000Z"),
    ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ("9999-12-31T23:59:59+23:59", "9999-12-31T00:00:59.000Z"),
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
    ("0001-01-01T23:59:00+23:59", "0001-01-01T00:00:00.000Z"),
    # outside years 1..9999 once in UTC
    ("9999-12-31T23:59:59-23:59", None),
    ("9999-12-31T23:59:59-00:01", None),
    ("0001-01-01T00:00:00+00:01", None),
    ("0000-12-31T23:59:59Z", None),
    ("10000-01-01T00:00:00Z", None),
    # not RFC 3339
    ("2027-01-31T00:00:00", None),  # no offset
    ("2027-01-31 00:00:00Z", None),  # a space for T
    ("2027-01-31", None),
    ("2027-01-31T00:00Z", None),  # no seconds
    ("2027-01-31T00Z", None),
    ("2099-W01-1T00:00Z", None),  # ISO week date
    ("2099-W01-1T00:00:00Z", None),
    ("2099-001T00:00:00Z", None),  # ordinal date
    ("20270131T000000Z", None),  # basic format
    ("2027-01-31T000000Z", None),
    ("2027-01-31T00:00:00+0800", None),  # offset without colon
    ("2027-01-31T00:00:00+08", None),
    ("2027-01-31T00:00:00,5Z", None),  # comma fraction
    ("2027-01-31T00:00:00.Z", None),
    ("2027-01-31T00:00:00UTC", None),
    ("2027-01-31T00:00:00 Z", None),
    (" 2027-01-31T00:00:00Z", None),
    ("2027-01-31T00:00:00Z\n", None),
    ("+2027-01-31T00:00:00Z", None),
    ("2027-1-31T00:00:00Z", None),
    ("\uff12\uff10\uff12\uff17-01-31T00:00:00Z", None),  # fullwidth digits
    ("2027-01-\u06631T00:00:00Z", None),  # an Arabic-Indic digit
    ("2027-13-01T00:00:00Z", None),
    ("2027-00-01T00:00:00Z", None),
    ("2027-02-29T00:00:00Z", None),  # not a leap year
    ("2027-04-31T00:00:00Z", None),
    ("2027-01-31T24:00:00Z", None),
    ("2027-01-31T23:60:00Z", None),
    ("2027-01-31T23:59:61Z", None),
    ("2027-01-31T00:00:00+24:00", None),
    ("2027-01-31T00:00:00+23:60", None),
    ("2027-01-31T00:00:00.1234567890123456789012345Z", None),  # absurdly long
    ("", None),
    ("now", None),
]


@pytest.mark.parametrize(("text", "expected"), RFC3339_CASES)
def test_rfc3339_table(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(RuleError) as caught:
            parse_rfc3339(text, "expires_at")
        assert (caught.value.field, caught.value.code) == ("expires_at", "invalid_field")
    else:
        assert format_time(parse_rfc3339(text, "expires_at")) == expected


@pytest.mark.parametrize("value", [None, 5, 1e999, ["2027-01-31T00:00:00Z"], {"at": 1}, True])
def test_rfc3339_needs_a_string(value: object) -> None:
    with pytest.raises(RuleError):
        parse_rfc3339(value, "expires_at")


def test_expiry_must_be_in_the_future() -> None:
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert parse_expiry(None, now) is None
    assert parse_expiry("2027-01-15T08:00:00.001Z", now) == "2027-01-15T08:00:00.001Z"
    for past in ("2027-01-15T08:00:00Z", "2027-01-15t07:59:59z", "0001-01-01T00:00:00Z"):
        with pytest.raises(RuleError, match="future"):
            parse_expiry(past, now)


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-23:59", "2099-W01-1T00:00Z", "20990101T000000Z", "2099-01-01T00:00:00"]
)
async def test_bad_expiry_over_http_on_create_and_patch(admin: Admin, value: str) -> None:
    status, body = await admin.call("POST", "/api/v1/keys", {"expires_at": value})
    assert (status, body["error"]["code"], body["error"]["field"]) == (422, "invalid_field", "expires_at")
    key = await admin.create()
    status, body = await admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"expires_at": value})
    assert (status, body["error"]["code"], body["error"]["field"]) == (422, "invalid_field", "expires_at")
    assert (await admin.call("GET", f"/api/v1/keys/{key['id']}"))[1]["expires_at"] is None


async def test_lower_case_t_and_z_are_accepted(admin: Admin) -> None:
    key = await admin.create(expires_at="2999-01-01t08:00:00z")
    assert key["expires_at"] == "2999-01-01T08:00:00.000Z"
    status, body = await admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"expires_at": "9999-12-31T23:59:59Z"})
    assert status == 200 and body["expires_at"] == "9999-12-31T23:59:59.000Z"


# request bodies in a Content-Encoding
def _deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


async def _encoded(admin: Admin, method: str, path: str, encoding: str, raw: bytes) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {admin.token}", "Content-Encoding": encoding}
    async with admin.session.request(method, admin.url + path, data=raw, headers=headers) as response:
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        ("gzip", gzip.compress(b'{"name": "zipped"}')),
        ("x-gzip", gzip.compress(b'{"name": "zipped"}')),
        ("GZIP", gzip.compress(b'{"name": "zipped"}')),
        ("deflate", zlib.compress(b'{"name": "zipped"}')),
        ("deflate", _deflate(b'{"name": "zipped"}', -15)),  # raw deflate, as some clients send it
        ("identity", b'{"name": "zipped"}'),
        ("gzip, deflate", zlib.compress(gzip.compress(b'{"name": "zipped"}'))),
        ("gzip", gzip.compress(b'{"name": ') + gzip.compress(b'"zipped"}')),  # two gzip members
        ("identity, gzip", gzip.compress(b'{"name": "zipped"}')),
    ],
)
async def test_encoded_bodies_are_read(admin: Admin, encoding: str, raw: bytes) -> None:
    status, body = await _encoded(admin, "POST", "/api/v1/keys", encoding, raw)
    assert status == 201 and body["name"] == "zipped", body


ZIP_BOMB = gzip.compress(b'{"name": "' + b"x" * 4_000_000 + b'"}')


@pytest.mark.parametrize(
    ("encoding", "raw", "status", "code"),
    [
        ("gzip", b"not gzip at all", 400, "invalid_json"),
        ("gzip", gzip.compress(b'{"name": "x"}')[:-6], 400, "invalid_json"),  # cut short
        ("gzip", gzip.compress(b'{"name": "x"}') + b"junk", 400, "invalid_json"),
        ("gzip", gzip.compress(b"\xff\xfe not json"), 400, "invalid_json"),
        ("deflate", b"not deflate", 400, "invalid_json"),
        ("br", b"not brotli", 400, "invalid_json"),
        ("br", b'{"name": "x"}', 400, "invalid_json"),
        ("zstd", b"\x28\xb5\x2f\xfd garbage", 400, "invalid_json"),
        ("compress", b"garbage", 400, "invalid_json"),
        ("frobnicate", b'{"name": "x"}', 400, "invalid_json"),
        ("gzip, br", b"garbage", 400, "invalid_json"),
        ("gzip", ZIP_BOMB, 413, "body_too_large"),  # small on the wire, 4 MB once inflated
    ],
)
async def test_undecodable_bodies_are_json_errors(admin: Admin, encoding: str, raw: bytes, status: int, code: str):
    key = await admin.create()
    for method, path in (("POST", "/api/v1/keys"), ("PATCH", f"/api/v1/keys/{key['id']}")):
        answer_status, body = await _encoded(admin, method, path, encoding, raw)
        assert (answer_status, body["error"]["code"]) == (status, code), (method, body)


async def test_a_non_utf8_token_is_401(admin: Admin) -> None:
    for raw in (b"Bearer \xff\xfe", b"Bearer \xc3\x28", b"\xff\xfe", b"Bearer " + admin.token.encode() + b"\xff"):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(admin.url.rsplit(":", 1)[1]))
        writer.write(
            b"GET /api/v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + raw + b"\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert json.loads(body)["error"]["code"] == "unauthorized"


# admin tokens: a manager sees and revokes only tokens whose permissions it holds (§4, §7.1)
async def _token(admin: Admin, permissions: list[str], account: str | None, token: str | None = None) -> dict:
    body = {"name": "t", "account": account, "permissions": permissions}
    status, answer = await admin.call("POST", "/api/v1/tokens", body, token=token)
    assert status == 201, answer
    return answer


async def test_a_token_manager_sees_and_revokes_only_what_it_holds(admin: Admin) -> None:
    manager = await _token(admin, ["tokens:manage", "keys:read"], "acme")
    weaker = await _token(admin, ["keys:read"], "acme")
    stronger = await _token(admin, ["keys:read", "keys:write"], "acme")
    root_like = await _token(admin, ["tokens:manage", "keys:read", "keys:reveal"], "acme")
    everywhere = await _token(admin, ["keys:read"], None)
    elsewhere = await _token(admin, ["keys:read"], "globex")
    status, listed = await admin.call("GET", "/api/v1/tokens", token=manager["token"])
    assert status == 200
    assert {t["id"] for t in listed["items"]} == {manager["id"], weaker["id"]}
    for hidden in (stronger, root_like, everywhere, elsewhere):
        status, body = await admin.call("DELETE", f"/api/v1/tokens/{hidden['id']}", token=manager["token"])
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, _ = await admin.call("GET", "/api/v1/keys", token=hidden["token"])
        assert status == 200  # still works: nothing was revoked
    status, _ = await admin.call("DELETE", f"/api/v1/tokens/{weaker['id']}", token=manager["token"])
    assert status == 204
    status, _ = await admin.call("GET", "/api/v1/keys", token=weaker["token"])
    assert status == 401
    status, listed = await admin.call("GET", "/api/v1/tokens")  # the root token sees every token
    assert {t["id"] for t in listed["items"]} == {manager["id"], stronger["id"], root_like["id"]} | {
        everywhere["id"],
        elsewhere["id"],
    }


async def test_a_manager_without_account_sees_every_account_within_its_permissions(admin: Admin) -> None:
    manager = await _token(admin, ["tokens:manage", "keys:read", "keys:write"], None)
    acme = await _token(admin, ["keys:write"], "acme")
    everywhere = await _token(admin, ["keys:read", "keys:write"], None)
    stronger = await _token(admin, ["keys:reveal"], "globex")
    auditor = await _token(admin, ["audit:read"], None)
    status, listed = await admin.call("GET", "/api/v1/tokens", token=manager["token"])
    assert {t["id"] for t in listed["items"]} == {manager["id"], acme["id"], everywhere["id"]}
    for hidden in (stronger, auditor):
        status, _ = await admin.call("DELETE", f"/api/v1/tokens/{hidden['id']}", token=manager["token"])
        assert status == 404
    for visible in (acme, everywhere):
        status, _ = await admin.call("DELETE", f"/api/v1/tokens/{visible['id']}", token=manager["token"])
        assert status == 204
    for garbage in ("t_nope", "%00", "%ED%A0%80", "x" * 300):
        status, body = await admin.call("DELETE", f"/api/v1/tokens/{garbage}", token=manager["token"])
        assert (status, body["error"]["code"]) == (404, "not_found"), garbage


def test_manages_is_subset_and_account() -> None:
    def token(permissions: tuple[str, ...], account: str | None) -> Token:
        return Token("t_1", "t", account, permissions, "d", "now")

    scoped = Principal("m", "acme", frozenset({"tokens:manage", "keys:read"}))
    free = Principal("m", None, frozenset({"tokens:manage", "keys:read"}))
    cases = [
        (scoped, token(("keys:read",), "acme"), True),
        (scoped, token(("keys:read", "tokens:manage"), "acme"), True),
        (scoped, token(("keys:read", "keys:write"), "acme"), False),
        (scoped, token(("keys:read",), "globex"), False),
        (scoped, token(("keys:read",), None), False),  # every account: more than acme
        (free, token(("keys:read",), None), True),
        (free, token(("keys:read",), "globex"), True),
        (free, token(("metrics:read",), None), False),
        (ROOT, token(tuple(PERMISSIONS), None), True),
    ]
    for manager, managed, expected in cases:
        assert manager.manages(managed) is expected, (manager, managed)

"""The admin API contract (DESIGN sections 1 and 4), over HTTP against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

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

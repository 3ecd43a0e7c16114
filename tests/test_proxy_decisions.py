"""Every decision row of the data path, with its exact answer, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from tests.conftest import Proxy

V5_LIST = "/api/v5/app/entry/data/list"
V1_CREATE = "/api/v1/app/{app}/entry/E1/data_create"
WORKFLOW = "/api/v5/workflow/task/approve"


JSON = {"Content-Type": "application/json"}


def refusal(status: int, code: int, reason: str):
    return status, code, reason


async def answer(proxy: Proxy, method: str, path: str, **kwargs) -> tuple[int, int, str]:
    status, body = await proxy.json(method, path, **kwargs)
    return status, body["code"], body["reason"]


async def test_missing_and_invalid_key(proxy: Proxy) -> None:
    assert await answer(proxy, "POST", V5_LIST) == refusal(401, 8301, "missing_key")
    assert await answer(proxy, "POST", V5_LIST, key="not-a-real-key") == refusal(401, 8301, "invalid_key")
    assert await answer(proxy, "POST", V5_LIST, headers={"Authorization": "Basic abc"}) == refusal(
        401, 8301, "invalid_key"
    )
    assert await answer(proxy, "POST", V5_LIST, headers={"Authorization": ""}) == refusal(401, 8301, "missing_key")
    status, headers, body = await proxy.request("POST", V5_LIST)
    assert status == 401 and headers["Content-Type"] == "application/json" and "msg" in json.loads(body)
    assert proxy.upstream.recorder.requests == []


async def test_allowed_request_is_forwarded(proxy: Proxy) -> None:
    key = await proxy.admin.create()
    status, body = await proxy.json("POST", V5_LIST + "?x=1&y=%20z", key=key["key"], json={"app_id": "a"})
    assert status == 200
    assert body["path"] == V5_LIST and body["raw_path"] == V5_LIST + "?x=1&y=%20z"


async def test_disabled_key(proxy: Proxy) -> None:
    key = await proxy.admin.create(enabled=False, ip_whitelist=["10.9.9.9"])
    assert await answer(proxy, "POST", V5_LIST, key=key["key"]) == refusal(403, 8302, "key_disabled")


@pytest.mark.parametrize(
    ("entry", "allowed", "refused"),
    [
        ("127.0.0.2", "127.0.0.2", "127.0.0.3"),
        ("127.0.0.*", "127.0.0.77", "127.0.1.2"),
        ("127.*.0.9", "127.5.0.9", "127.5.0.8"),
        ("127.0.0.0/29", "127.0.0.7", "127.0.0.8"),
    ],
)
async def test_whitelist_from_real_source_addresses(proxy: Proxy, entry: str, allowed: str, refused: str) -> None:
    key = await proxy.admin.create(ip_whitelist=[entry])
    status, _ = await proxy.json("POST", WORKFLOW, key=key["key"], source=allowed)
    assert status == 200
    assert await answer(proxy, "POST", WORKFLOW, key=key["key"], source=refused) == refusal(403, 8302, "ip_not_allowed")


async def test_forwarded_for_from_untrusted_peer_is_ignored(proxy: Proxy) -> None:
    key = await proxy.admin.create(ip_whitelist=["10.1.1.1"])
    spoof = {"X-Forwarded-For": "10.1.1.1"}
    assert await answer(proxy, "POST", WORKFLOW, key=key["key"], headers=spoof) == refusal(403, 8302, "ip_not_allowed")
    open_key = await proxy.admin.create()
    status, body = await proxy.json("POST", WORKFLOW, key=open_key["key"], headers=spoof, source="127.0.0.9")
    assert status == 200
    forwarded = [v for k, v in body["headers"] if k == "X-Forwarded-For"]
    assert forwarded == ["127.0.0.9"]  # replaced by the peer, not appended to


async def test_forwarded_for_from_trusted_proxy(start_proxy) -> None:
    proxy: Proxy = await start_proxy(trusted_proxies=["127.0.0.2/32", "10.0.0.0/8"])
    key = await proxy.admin.create(ip_whitelist=["192.168.1.*"])
    key_secret = key["key"]
    # believed from a trusted peer
    status, body = await proxy.json(
        "POST", WORKFLOW, key=key_secret, source="127.0.0.2", headers={"X-Forwarded-For": "192.168.1.50"}
    )
    assert status == 200
    assert [v for k, v in body["headers"] if k == "X-Forwarded-For"] == ["192.168.1.50, 127.0.0.2"]
    # the rightmost untrusted hop decides, trusted hops are skipped
    hops = {"X-Forwarded-For": "192.168.1.50, 8.8.8.8, 10.0.0.7"}
    assert await answer(proxy, "POST", WORKFLOW, key=key_secret, source="127.0.0.2", headers=hops) == refusal(
        403, 8302, "ip_not_allowed"
    )
    hops = {"X-Forwarded-For": "8.8.8.8, 192.168.1.9, 10.0.0.7"}
    status, _ = await proxy.json("POST", WORKFLOW, key=key_secret, source="127.0.0.2", headers=hops)
    assert status == 200
    # a malformed entry ends the walk: the last believed address (a trusted hop) is the client
    hops = {"X-Forwarded-For": "192.168.1.50, garbage, 10.0.0.7"}
    assert await answer(proxy, "POST", WORKFLOW, key=key_secret, source="127.0.0.2", headers=hops) == refusal(
        403, 8302, "ip_not_allowed"
    )
    # the same header from an untrusted peer is not believed
    spoof = {"X-Forwarded-For": "192.168.1.50"}
    assert await answer(proxy, "POST", WORKFLOW, key=key_secret, source="127.0.0.3", headers=spoof) == refusal(
        403, 8302, "ip_not_allowed"
    )


async def test_plugin_rule_both_ways(proxy: Proxy) -> None:
    plugin = {"X-Plugin-Id": "plg_1"}
    open_key = await proxy.admin.create()
    status, _ = await proxy.json("POST", WORKFLOW, key=open_key["key"], headers=plugin)
    assert status == 200
    listed = await proxy.admin.create(ip_whitelist=["127.0.0.1"])
    assert await answer(proxy, "POST", WORKFLOW, key=listed["key"], headers=plugin) == refusal(
        403, 8302, "plugin_not_allowed"
    )
    status, _ = await proxy.json("POST", WORKFLOW, key=listed["key"])
    assert status == 200


async def test_unknown_route_only_after_the_key_check(proxy: Proxy) -> None:
    assert await answer(proxy, "GET", "/not/an/api") == refusal(401, 8301, "missing_key")
    key = await proxy.admin.create()
    assert await answer(proxy, "GET", "/not/an/api", key=key["key"]) == refusal(404, 1, "unknown_interface")
    disabled = await proxy.admin.create(enabled=False)
    assert await answer(proxy, "GET", "/not/an/api", key=disabled["key"]) == refusal(403, 8302, "key_disabled")
    assert proxy.upstream.recorder.requests == []


async def test_category_and_single_interface_scope(proxy: Proxy) -> None:
    single = await proxy.admin.create(interfaces=["data.create"])
    category = await proxy.admin.create(interfaces=["data"])
    create_v5 = "/api/v5/app/entry/data/create"
    v1_create = V1_CREATE.format(app="A1")
    for path in (create_v5, v1_create):
        status, _ = await proxy.json("POST", path, key=single["key"], json={"app_id": "A1"})
        assert status == 200, path
    assert await answer(proxy, "POST", V5_LIST, key=single["key"], json={"app_id": "A1"}) == refusal(
        403, 8302, "interface_not_allowed"
    )
    for path in (create_v5, V5_LIST, v1_create):
        status, _ = await proxy.json("POST", path, key=category["key"], json={"app_id": "A1"})
        assert status == 200, path
    assert await answer(proxy, "POST", WORKFLOW, key=category["key"]) == refusal(403, 8302, "interface_not_allowed")


async def test_app_scope_from_v5_body(proxy: Proxy) -> None:
    key = await proxy.admin.create(apps=["A1"])
    secret = key["key"]
    status, _ = await proxy.json("POST", V5_LIST, key=secret, json={"app_id": "A1", "entry_id": "E"})
    assert status == 200
    cases = [
        {"json": {"app_id": "A2"}},
        {"json": {"entry_id": "E"}},
        {"json": {"app_id": 5}},
        {"json": ["A1"]},
        {"data": b"app_id=A1", "headers": JSON},
        {"data": b"{not json", "headers": JSON},
        {},
    ]
    for kwargs in cases:
        assert await answer(proxy, "POST", V5_LIST, key=secret, **kwargs) == refusal(403, 8302, "app_not_allowed")
    # A body the upstream would not read as JSON is never inspected as JSON.
    assert await answer(proxy, "POST", V5_LIST, key=secret, data=b'{"app_id": "A1"}') == refusal(
        415, 415, "unsupported_media_type"
    )
    assert len(proxy.upstream.recorder.requests) == 1


async def test_app_scope_from_v1_path(proxy: Proxy) -> None:
    key = await proxy.admin.create(apps=["A1"])
    status, _ = await proxy.json("POST", V1_CREATE.format(app="A1"), key=key["key"])
    assert status == 200
    assert await answer(proxy, "POST", V1_CREATE.format(app="A2"), key=key["key"]) == refusal(
        403, 8302, "app_not_allowed"
    )
    # an account-level interface has no app id: the app scope does not apply
    status, _ = await proxy.json("POST", WORKFLOW, key=key["key"])
    assert status == 200


async def test_app_scope_from_query_and_header(start_proxy) -> None:
    rules = [
        {"path": "/crm/leads", "interface": "crm.leads", "app_id": "query.app"},
        {"path": "/crm/deals", "interface": "crm.deals", "app_id": "header.X-App-Id"},
    ]
    proxy: Proxy = await start_proxy(routes={"rules": rules})
    key = await proxy.admin.create(apps=["A1"])
    status, _ = await proxy.json("GET", "/crm/leads?app=A1", key=key["key"])
    assert status == 200
    assert (await answer(proxy, "GET", "/crm/leads?app=A2", key=key["key"]))[2] == "app_not_allowed"
    status, _ = await proxy.json("GET", "/crm/deals", key=key["key"], headers={"X-App-Id": "A1"})
    assert status == 200
    assert (await answer(proxy, "GET", "/crm/deals", key=key["key"]))[2] == "app_not_allowed"


async def test_body_forwarded_intact_after_inspection(proxy: Proxy) -> None:
    key = await proxy.admin.create(apps=["A1"])
    payload = json.dumps({"app_id": "A1", "data": "x" * 300_000, "unicode": "数据"}).encode()
    status, body = await proxy.json("POST", V5_LIST, key=key["key"], data=payload, headers=JSON)
    assert status == 200
    assert body["body_size"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_body_too_large_to_inspect(start_proxy) -> None:
    proxy: Proxy = await start_proxy(routes={"max_body_inspect": 1000})
    key = await proxy.admin.create(apps=["A1"])
    payload = json.dumps({"app_id": "A1", "pad": "x" * 2000}).encode()
    assert await answer(proxy, "POST", V5_LIST, key=key["key"], data=payload, headers=JSON) == refusal(
        413, 413, "body_too_large"
    )

    async def chunks():
        yield payload[:500]
        yield payload[500:]

    assert await answer(proxy, "POST", V5_LIST, key=key["key"], data=chunks(), headers=JSON) == refusal(
        413, 413, "body_too_large"
    )
    # a key with apps "all" does not need the body read: any size passes
    open_key = await proxy.admin.create()
    status, _ = await proxy.json("POST", V5_LIST, key=open_key["key"], data=payload)
    assert status == 200


async def test_decision_order(proxy: Proxy) -> None:
    key = await proxy.admin.create(enabled=False, ip_whitelist=["10.0.0.1"], interfaces=["form"], apps=["zzz"])
    secret, key_id = key["key"], key["id"]
    path = V5_LIST
    plugin = {"X-Plugin-Id": "p"}
    expected = ["key_disabled", "ip_not_allowed", "plugin_not_allowed", "unknown_interface"]
    assert (await answer(proxy, "POST", path, key=secret, headers=plugin))[2] == expected[0]
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"enabled": True})
    assert (await answer(proxy, "POST", "/nope", key=secret, headers=plugin))[2] == expected[1]
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"ip_whitelist": ["127.0.0.1"]})
    assert (await answer(proxy, "POST", "/nope", key=secret, headers=plugin))[2] == expected[2]
    assert (await answer(proxy, "POST", "/nope", key=secret))[2] == expected[3]
    assert (await answer(proxy, "POST", path, key=secret, json={"app_id": "A"}))[2] == "interface_not_allowed"
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"interfaces": ["data"]})
    assert (await answer(proxy, "POST", path, key=secret, json={"app_id": "A"}))[2] == "app_not_allowed"


async def test_admin_changes_apply_to_the_next_request(proxy: Proxy) -> None:
    key = await proxy.admin.create()
    secret, key_id = key["key"], key["id"]

    async def status() -> int:
        return (await proxy.json("POST", WORKFLOW, key=secret))[0]

    assert await status() == 200
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"enabled": False})
    assert await status() == 403
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"enabled": True})
    assert await status() == 200
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"ip_whitelist": ["10.0.0.1"]})
    assert await status() == 403
    await proxy.admin.call("PATCH", f"/api/v1/keys/{key_id}", {"ip_whitelist": []})
    assert await status() == 200
    _, copy = await proxy.admin.call("POST", f"/api/v1/keys/{key_id}/copy")
    assert (await proxy.json("POST", WORKFLOW, key=copy["key"]))[0] == 200
    await proxy.admin.call("DELETE", f"/api/v1/keys/{key_id}")
    assert await answer(proxy, "POST", WORKFLOW, key=secret) == refusal(401, 8301, "invalid_key")
    assert (await proxy.json("POST", WORKFLOW, key=copy["key"]))[0] == 200


async def test_revocation_on_a_kept_alive_connection(proxy: Proxy) -> None:
    import aiohttp

    key = await proxy.admin.create()
    async with aiohttp.ClientSession() as session:  # one keep-alive connection throughout
        headers = {"Authorization": f"Bearer {key['key']}"}
        async with session.post(proxy.url + WORKFLOW, headers=headers) as response:
            assert response.status == 200
        await proxy.admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"enabled": False})
        async with session.post(proxy.url + WORKFLOW, headers=headers) as response:
            assert response.status == 403


async def test_usage_counts_allowed_requests_only(proxy: Proxy) -> None:
    key = await proxy.admin.create(ip_whitelist=["127.0.0.1"])
    for source in ("127.0.0.2", "127.0.0.3"):
        await proxy.json("POST", WORKFLOW, key=key["key"], source=source)
    _, shown = await proxy.admin.call("GET", f"/api/v1/keys/{key['id']}")
    assert shown["last_used_at"] is None and shown["request_count"] == 0
    for _ in range(3):
        await proxy.json("POST", WORKFLOW, key=key["key"])
    _, shown = await proxy.admin.call("GET", f"/api/v1/keys/{key['id']}")
    assert shown["last_used_at"] is not None and shown["request_count"] == 3
    await proxy.running.gateway.flush_usage()
    await asyncio.sleep(0)
    stored = await proxy.running.gateway.store.get_key(key["id"])
    assert stored.request_count == 3 and stored.last_used_at == shown["last_used_at"]


async def test_ipv6_clients_never_match_a_whitelist(start_proxy) -> None:
    import aiohttp

    proxy: Proxy = await start_proxy(listen={"host": "::1"})
    listed = await proxy.admin.create(ip_whitelist=["0.0.0.0/0"])
    open_key = await proxy.admin.create()
    url = f"http://[::1]:{proxy.port}{WORKFLOW}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, headers={"Authorization": f"Bearer {listed['key']}"}) as response:
            body = await response.json()
            assert (response.status, body["reason"]) == (403, "ip_not_allowed")
        async with session.post(url, headers={"Authorization": f"Bearer {open_key['key']}"}) as response:
            seen = await response.json()
            assert response.status == 200
    assert ["X-Forwarded-For", "::1"] in seen["headers"]


async def test_refusal_messages_say_what_is_wrong(proxy: Proxy) -> None:
    key = await proxy.admin.create(apps=["A1"])
    status, body = await proxy.json("POST", V5_LIST, headers={"Authorization": key["key"]}, json={"app_id": "A1"})
    assert (status, body["reason"]) == (401, "invalid_key")
    assert body["msg"] == "API key is invalid: the header must read 'Authorization: Bearer <key>'"
    status, body = await proxy.json("POST", V5_LIST, key="x" * 32, json={"app_id": "A1"})
    assert (status, body["reason"], body["msg"]) == (401, "invalid_key", "API key is invalid")
    status, body = await proxy.json("POST", V5_LIST, key=key["key"], json={"entry_id": "E"})
    assert (status, body["reason"]) == (403, "app_not_allowed")
    assert body["msg"] == "no app id was found where this interface carries it"
    status, body = await proxy.json("POST", V5_LIST, key=key["key"], json={"app_id": "A2"})
    assert (status, body["reason"], body["msg"]) == (403, "app_not_allowed", "the key may not use this app")

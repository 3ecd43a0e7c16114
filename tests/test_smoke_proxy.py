from tests.conftest import Proxy


async def test_allowed_request_reaches_upstream(proxy: Proxy) -> None:
    key = await proxy.admin.create()
    status, body = await proxy.json("POST", "/api/v5/app/entry/data/list", key=key["key"], json={"app_id": "a"})
    assert status == 200, body
    assert body["path"] == "/api/v5/app/entry/data/list"

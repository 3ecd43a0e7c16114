"""Your own interface catalogue (DESIGN 7.2): `routes.catalogue`, ids of any configured
category, GET /api/v1/interfaces with names, and the "key check only" setup."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import parse_config
from gateway.core.errors import RuleError
from gateway.core.record import parse_interfaces
from gateway.core.routes import CatalogueCategory, CatalogueInterface, Names, RouteRule, Routes, compile_routes

ORDERS: dict[str, Any] = {
    "category": "orders",
    "name": {"en": "Orders", "zh": "订单"},
    "interfaces": [
        {"id": "orders.list", "name": {"en": "List orders", "zh": "查询订单"}},
        {"id": "orders.get", "name": {"en": "Get an order", "zh": "查询单个订单"}},
    ],
}
ORDER_RULES = [
    {"path": "/v1/orders", "interface": "orders.list", "methods": ["GET"]},
    {"path": "/v1/orders/{id}", "interface": "orders.get", "methods": ["GET"]},
]
KEY_CHECK_ONLY: dict[str, Any] = {
    "preset": "none",
    "catalogue": [{"category": "api", "name": {"en": "My API", "zh": "我的接口"}}],
    "rules": [{"path": "/**", "interface": "api.{rest}"}],
}
FIRST_ID = "routes.catalogue[0].interfaces[0].id"
SECRET = {"GATEWAY_SECRET_KEY": "k" * 43}


def _routes(**routes: Any) -> Routes:
    return parse_config({"admin": {"token": "admin-token-for-tests"}, "routes": routes}, SECRET).routes


def test_catalogue_is_parsed_with_names() -> None:
    routes = _routes(catalogue=[ORDERS], rules=ORDER_RULES)
    assert routes.catalogue[0] == CatalogueCategory(
        "orders",
        Names("Orders", "订单"),
        (
            CatalogueInterface("orders.list", Names("List orders", "查询订单")),
            CatalogueInterface("orders.get", Names("Get an order", "查询单个订单")),
        ),
    )
    table = compile_routes(routes)
    match = table.match("GET", "/v1/orders/42")
    assert match is not None and match.interface == "orders.get"
    assert table.accepts("orders") and table.accepts("orders.list") and not table.accepts("orders.lst")
    assert table.listed() == ["contacts", "app", "form", "data", "file", "workflow", "crm", "orders"]


def test_without_the_catalogue_a_category_of_your_own_is_a_config_error() -> None:
    with pytest.raises(RuleError) as caught:
        _routes(rules=ORDER_RULES)
    assert caught.value.field == "routes.rules[0].interface"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({**ORDERS, "category": "or ders"}, "routes.catalogue[0].category"),
        ({**ORDERS, "category": ""}, "routes.catalogue[0].category"),
        ({"category": "orders"}, "routes.catalogue[0].name"),
        ({**ORDERS, "name": {"en": "Orders"}}, "routes.catalogue[0].name.zh"),
        ({**ORDERS, "name": {"en": " ", "zh": "订单"}}, "routes.catalogue[0].name.en"),
        ({**ORDERS, "name": "Orders"}, "routes.catalogue[0].name"),
        ({**ORDERS, "colour": "red"}, "routes.catalogue[0].colour"),
        ({**ORDERS, "interfaces": [{"id": "data.list", "name": ORDERS["name"]}]}, FIRST_ID),
        ({**ORDERS, "interfaces": [{"id": "orders", "name": ORDERS["name"]}]}, FIRST_ID),
        ({**ORDERS, "interfaces": [{"id": "orders.a-b", "name": ORDERS["name"]}]}, FIRST_ID),
        ({**ORDERS, "interfaces": [{"id": "orders.list"}]}, "routes.catalogue[0].interfaces[0].name"),
        (
            {**ORDERS, "interfaces": [ORDERS["interfaces"][0], ORDERS["interfaces"][0]]},
            "routes.catalogue[0].interfaces[1].id",
        ),
    ],
)
def test_bad_catalogue_names_the_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as caught:
        _routes(catalogue=[entry])
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ") and "\n" not in str(caught.value)


def test_a_category_listed_twice_is_refused() -> None:
    with pytest.raises(RuleError) as caught:
        _routes(catalogue=[ORDERS, ORDERS])
    assert caught.value.field == "routes.catalogue[1].category"


def test_key_scopes_name_catalogue_categories_and_ids() -> None:
    table = compile_routes(_routes(catalogue=[ORDERS], rules=ORDER_RULES))
    assert parse_interfaces(["orders", "orders.get", "data"], table.accepts) == ("orders", "orders.get", "data")
    for bad in (["orders.lst"], ["shipping"], ["shipping.list"]):
        with pytest.raises(RuleError) as caught:
            parse_interfaces(bad, table.accepts)
        assert caught.value.field == "interfaces[0]"


def test_key_check_only_routes_everything_to_one_category() -> None:
    table = compile_routes(_routes(**KEY_CHECK_ONLY))
    assert table.listed() == ["api"]
    for path, interface in [("/v1/orders", "api.v1_orders"), ("/health", "api.health"), ("/a/b/c", "api.a_b_c")]:
        match = table.match("POST", path)
        assert match is not None and match.interface == interface and match.app_source is None
    assert table.accepts("api") and table.accepts("api.v1_orders")


def test_preset_none_lists_only_platform_categories_that_rules_use() -> None:
    rules = (RouteRule("/x/{a}", "data.{a}"),)
    table = compile_routes(Routes(preset="none", rules=rules))
    assert table.listed() == ["data"]


async def test_interfaces_answer_lists_preset_and_catalogue_with_names(start_gateway: Any) -> None:
    running = await start_gateway(routes={"catalogue": [ORDERS], "rules": ORDER_RULES})
    status, body = await running.admin.call("GET", "/api/v1/interfaces")
    assert status == 200
    ids = [c["id"] for c in body["categories"]]
    assert ids == ["contacts", "app", "form", "data", "file", "workflow", "crm", "orders"]
    orders = body["categories"][-1]
    assert orders == {
        "id": "orders",
        "name": {"en": "Orders", "zh": "订单"},
        "interfaces": ["orders.list", "orders.get"],
        "interface_names": {
            "orders.list": {"en": "List orders", "zh": "查询订单"},
            "orders.get": {"en": "Get an order", "zh": "查询单个订单"},
        },
    }
    data = body["categories"][3]
    assert data["name"] == {"en": "Data", "zh": "数据"} and "data.list" in data["interfaces"]
    key = await running.admin.create(interfaces=["orders", "data.list", "orders.get"])
    assert key["interfaces"] == ["orders", "data.list", "orders.get"]
    status, answer = await running.admin.call("POST", "/api/v1/keys", {"interfaces": ["orders.lst"]})
    assert (status, answer["error"]["field"]) == (422, "interfaces[0]")


async def test_key_check_only_through_the_proxy(start_proxy: Any) -> None:
    proxy = await start_proxy(routes=KEY_CHECK_ONLY)
    status, body = await proxy.admin.call("GET", "/api/v1/interfaces")
    assert status == 200 and [c["id"] for c in body["categories"]] == ["api"]
    assert body["categories"][0]["name"] == {"en": "My API", "zh": "我的接口"}
    key = (await proxy.admin.create(interfaces=["api"]))["key"]
    status, _, _ = await proxy.request("GET", "/v1/orders", key=key)
    assert status == 200
    only_health = (await proxy.admin.create(interfaces=["api.health"]))["key"]
    assert (await proxy.request("GET", "/health", key=only_health))[0] == 200
    assert (await proxy.request("GET", "/v1/orders", key=only_health))[0] == 403
    assert (await proxy.request("GET", "/v1/orders"))[0] == 401

"""The route table: the jiandaoyun preset, user rules, captures and precedence."""

from __future__ import annotations

import pytest

from gateway.core.routes import RouteRule, Routes, compile_routes

PRESET = compile_routes(Routes())

CASES = [
    ("POST", "/api/v5/app/list", "app.list", None, None),
    ("POST", "/api/v5/app/entry/list", "app.entry_list", "body", None),
    ("POST", "/api/v5/app/entry/widget/list", "form.widget_list", "body", None),
    ("POST", "/api/v5/app/entry/data/list", "data.list", "body", None),
    ("POST", "/api/v5/app/entry/data/batch_create", "data.batch_create", "body", None),
    ("POST", "/api/v6/app/entry/data/create", "data.create", "body", None),
    ("POST", "/api/v5/app/entry/file/get_upload_token", "file.get_upload_token", "body", None),
    ("POST", "/api/v1/app/retrieve_all", "app.list", None, None),
    ("POST", "/api/v1/app/A1/entry_retrieve", "app.entry_list", "path", "A1"),
    ("POST", "/api/v2/app/A1/entry/E1/widgets", "form.widget_list", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data", "data.list", "path", "A1"),
    ("POST", "/api/v3/app/A1/entry/E1/data_retrieve", "data.get", "path", "A1"),
    ("POST", "/api/v4/app/A1/entry/E1/data_create", "data.create", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data_update", "data.update", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data_delete", "data.delete", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data_batch_create", "data.batch_create", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data_batch_update", "data.batch_update", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data_batch_delete", "data.batch_delete", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/file/get_upload_token", "file.get_upload_token", "path", "A1"),
    ("POST", "/api/v1/app/A1/entry/E1/data/D1/approval_comments", "workflow.approval_comments", "path", "A1"),
    ("POST", "/api/v1/workflow/task/approve", "workflow.task_approve", None, None),
    ("POST", "/api/v5/corp/department/user/list", "contacts.department_user_list", None, None),
    ("GET", "/api/v5/app/entry/data/%6Cist", "data.list", "body", None),  # decoded before matching
]


@pytest.mark.parametrize(("method", "path", "interface", "source", "app_id"), CASES)
def test_preset(method: str, path: str, interface: str, source: str | None, app_id: str | None) -> None:
    match = PRESET.match(method, path)
    assert match is not None, path
    assert (match.interface, match.app_source, match.app_id) == (interface, source, app_id)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/v5",
        "/api/v5/app",
        "/api/v5/unknown/thing",
        "/api/5/app/list",
        "/api/v/app/list",
        "/api/v5/workflow",
        "/api/v5/app/entry/data",
        "/api/v5/app/entry/data/list/extra",
        "/api/v5/workflow/../app/entry/data/create",
        "/api/v5/workflow/./x",
        "/api/v5/workflow//x",
        "/api/v5/workflow/a%2F..%2Fb",
        "/api/v5/workflow/%2e%2e/x",
        "/api/v5/workflow/a%5cb",
        "/api/v5/workflow/%ff",
        "relative/path",
    ],
)
def test_no_match(path: str) -> None:
    assert PRESET.match("POST", path) is None


def test_user_rules_and_precedence() -> None:
    rules = (
        RouteRule("/crm/{app}/customers/{op}", "crm.customers_{op}", "path.app", ("GET", "post")),
        RouteRule("/crm/{app}/leads", "crm.leads", "query.app_id"),
        RouteRule("/crm/{app}/deals", "crm.deals", "header.X-App-Id"),
        RouteRule("/crm/special/customers/list", "crm.special", None),
        RouteRule("/api/v5/app/list", "crm.override", None),
        RouteRule("/files/**", "file.{rest}", None),
    )
    table = compile_routes(Routes(rules=rules))
    match = table.match("GET", "/crm/A7/customers/list")
    assert (match.interface, match.app_source, match.app_id) == ("crm.customers_list", "path", "A7")
    assert table.match("DELETE", "/crm/A7/customers/list") is None  # methods restrict the rule
    assert table.match("POST", "/crm/special/customers/list").interface == "crm.special"  # literal wins
    leads = table.match("GET", "/crm/A7/leads")
    assert (leads.app_source, leads.app_key) == ("query", "app_id")
    deals = table.match("GET", "/crm/A7/deals")
    assert (deals.app_source, deals.app_key) == ("header", "x-app-id")
    assert table.match("POST", "/api/v5/app/list").interface == "crm.override"  # user rules first
    assert table.match("GET", "/files/a/b/c").interface == "file.a_b_c"
    assert "crm.customers_{op}" in table.catalogue["crm"]


def test_literal_wins_then_backtracks() -> None:
    # `entry` is a literal under app/ for v5 shapes; a v1 path whose app id is "entry" still matches.
    match = PRESET.match("POST", "/api/v1/app/entry/entry_retrieve")
    assert (match.interface, match.app_id) == ("app.entry_list", "entry")


def test_matching_cost_does_not_grow_with_rules() -> None:
    many = tuple(RouteRule(f"/svc{i}/{{app}}/op{i}", f"crm.op{i}", "path.app") for i in range(5000))
    table = compile_routes(Routes(rules=many))
    assert table.match("GET", "/svc4999/A/op4999").interface == "crm.op4999"
    # the trie visits one node per segment: the root's literal map holds every rule's first segment
    assert len(table._root.literal) >= 5000

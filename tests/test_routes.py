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


# Every path the official demo clients (github jiandaoyun/api-demo) call, as each sends it:
# Python, Node and Java use the v5 shapes, Go (and C#) the older ones. Same operation, same id.
V5 = "python, node, java"
DEMO_CLIENTS = [
    (V5, "/api/v5/app/list", "app.list", None, None),
    (V5, "/api/v5/app/entry/list", "app.entry_list", "body", None),
    (V5, "/api/v5/app/entry/widget/list", "form.widget_list", "body", None),
    *(
        (V5, f"/api/v5/app/entry/data/{op}", f"data.{op}", "body", None)
        for op in ("create", "get", "update", "delete", "batch_create", "list", "batch_update", "batch_delete")
    ),
    (V5, "/api/v5/app/entry/file/get_upload_token", "file.get_upload_token", "body", None),
    *(
        (V5, f"/api/v5/corp/department/{op}", "contacts.department_" + op.replace("/", "_"), None, None)
        for op in ("list", "create", "update", "delete", "dept_no/get", "import", "user/list")
    ),
    *(
        (V5, f"/api/v5/corp/user/{op}", f"contacts.user_{op}", None, None)
        for op in ("get", "create", "update", "delete", "batch_delete", "import")
    ),
    *(
        (V5, f"/api/v5/corp/role/{op}", "contacts.role_" + op.replace("/", "_"), None, None)
        for op in ("list", "create", "update", "delete", "user/list", "add_members", "remove_members")
    ),
    *(
        (V5, f"/api/v5/corp/role_group/{op}", f"contacts.role_group_{op}", None, None)
        for op in ("list", "create", "update", "delete")
    ),
    *(
        (V5, f"/api/v5/corp/guest/{op}", "contacts.guest_" + op.replace("/", "_"), None, None)
        for op in ("department/list", "user/list", "user/get")
    ),
    ("go", "/api/v1/app/retrieve_all", "app.list", None, None),
    ("go", "/api/v1/app/A1/entry_retrieve", "app.entry_list", "path", "A1"),
    ("go", "/api/v2/app/A1/entry/E1/widgets", "form.widget_list", "path", "A1"),
    ("go", "/api/v4/app/A1/entry/E1/data_create", "data.create", "path", "A1"),
    ("go", "/api/v4/app/A1/entry/E1/data_retrieve", "data.get", "path", "A1"),
    ("go", "/api/v4/app/A1/entry/E1/data_update", "data.update", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/data_delete", "data.delete", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/data_batch_create", "data.batch_create", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/data", "data.list", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/data_batch_update", "data.batch_update", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/data_batch_delete", "data.batch_delete", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/file/get_upload_token", "file.get_upload_token", "path", "A1"),
    ("go", "/api/v1/app/A1/entry/E1/data/D1/approval_comments", "workflow.approval_comments", "path", "A1"),
    ("go", "/api/v2/department/1/department_list", "contacts.department_list", None, None),
    ("go", "/api/v2/department/create", "contacts.department_create", None, None),
    ("go", "/api/v2/department/12/update", "contacts.department_update", None, None),
    ("go", "/api/v2/department/12/delete", "contacts.department_delete", None, None),
    ("go", "/api/v2/department/get_deptno_by_integrateid", "contacts.department_dept_no_get", None, None),
    ("go", "/api/v2/department/import", "contacts.department_import", None, None),
    ("go", "/api/v2/department/1/member_list", "contacts.department_user_list", None, None),
    ("go", "/api/v1/department/1/member_list", "contacts.department_user_list", None, None),
    ("go", "/api/v2/user/jane/user_retrieve", "contacts.user_get", None, None),
    ("go", "/api/v2/user/create", "contacts.user_create", None, None),
    ("go", "/api/v2/user/jane/update", "contacts.user_update", None, None),
    ("go", "/api/v2/user/jane/delete", "contacts.user_delete", None, None),
    ("go", "/api/v2/user/batch_delete", "contacts.user_batch_delete", None, None),
    ("go", "/api/v2/user/import", "contacts.user_import", None, None),
    ("go", "/api/v2/role/list", "contacts.role_list", None, None),
    ("go", "/api/v2/role/create", "contacts.role_create", None, None),
    ("go", "/api/v2/role/update", "contacts.role_update", None, None),
    ("go", "/api/v2/role/delete", "contacts.role_delete", None, None),
    ("go", "/api/v2/role/member_list", "contacts.role_user_list", None, None),
    ("go", "/api/v2/role/add_members", "contacts.role_add_members", None, None),
    ("go", "/api/v2/role/remove_members", "contacts.role_remove_members", None, None),
    ("go", "/api/v2/role_group/list", "contacts.role_group_list", None, None),
    ("go", "/api/v2/role_group/create", "contacts.role_group_create", None, None),
    ("go", "/api/v2/role_group/update", "contacts.role_group_update", None, None),
    ("go", "/api/v2/role_group/delete", "contacts.role_group_delete", None, None),
    ("go", "/api/v4/corp_coop/guest/department_list", "contacts.guest_department_list", None, None),
    ("go", "/api/v4/corp_coop/guest/member_list", "contacts.guest_user_list", None, None),
    ("go", "/api/v4/corp_coop/guest/user_retrieve", "contacts.guest_user_get", None, None),
]


@pytest.mark.parametrize(("client", "path", "interface", "source", "app_id"), DEMO_CLIENTS)
def test_every_demo_client_call_is_routed(
    client: str, path: str, interface: str, source: str | None, app_id: str | None
) -> None:
    match = PRESET.match("POST", path)  # every demo client call is a POST
    assert match is not None, (client, path)
    assert (match.interface, match.app_source, match.app_id) == (interface, source, app_id)
    assert PRESET.accepts(interface)


def test_older_contacts_paths_are_exact() -> None:
    for path in (
        "/api/v2/department/1/2/department_list",
        "/api/v2/department/1/other",
        "/api/v2/user/jane",
        "/api/v2/role/nothing",
        "/api/v2/role_group/x/list",
        "/api/v4/corp_coop/department_list",
        "/api/v4/corp_coop/guest/other",
    ):
        assert PRESET.match("POST", path) is None, path
    older = [i for i in PRESET.catalogue["contacts"] if "{" not in i]
    assert "contacts.department_list" in older and "contacts.{rest}" in PRESET.catalogue["contacts"]


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

"""The OpenAPI document against the admin API it describes: every route of the router is in it,
real answers of a running gateway validate against it, the bodies the server accepts validate
and those it refuses do not, and schemathesis drives the API from it."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.admin import openapi
from gateway.admin.api import CONSOLE_ROUTES, ROUTE_PERMISSIONS, ROUTE_TABLE, build_admin_app
from gateway.admin.openapi import document
from gateway.core import record
from tests.conftest import make_key

schema = schemathesis.openapi.from_dict(document())
DOC = document()  # a copy of its own: schemathesis may change the one it reads
ROOT_TOKEN = "schemathesis-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gateway process for the whole module, with a few keys to find."""
    import os
    import subprocess
    import sys

    from tests.conftest import free_port, wait_for_port

    tmp = tmp_path_factory.mktemp("openapi")
    admin_port, proxy_port = free_port(), free_port()
    (tmp / "config.yaml").write_text(
        f"listen: {{host: 127.0.0.1, port: {proxy_port}}}\nadmin: {{host: 127.0.0.1, port: {admin_port}}}\n"
        f"database: sqlite:///{tmp}/gateway.db\nlog: {{access: false}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_ADMIN_TOKEN"] = ROOT_TOKEN
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp / "config.yaml")],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(admin_port)
    url = f"http://127.0.0.1:{admin_port}"
    for name in ("one", "two"):
        request = urllib.request.Request(url + "/api/v1/keys", data=json.dumps({"name": name}).encode(), method="POST")
        request.add_header("Authorization", f"Bearer {ROOT_TOKEN}")
        urllib.request.urlopen(request, timeout=10).close()
    yield url
    process.terminate()
    process.wait(20)


def test_served_document_is_the_same(server) -> None:
    request = urllib.request.Request(server + "/api/v1/openapi.json")
    request.add_header("Authorization", f"Bearer {ROOT_TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == json.loads(json.dumps(document()))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api_conforms(case, server) -> None:
    case.call_and_validate(
        base_url=server,
        headers={"Authorization": f"Bearer {ROOT_TOKEN}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def test_every_route_of_the_router_is_documented() -> None:
    app = build_admin_app(None, None, "token", 1024, None)  # type: ignore[arg-type]
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource and r.method != "HEAD"}
    console = {(method, path) for method, path, _ in CONSOLE_ROUTES} | {("*", "/{tail}")}
    assert served - console == operations(DOC)
    assert {(route.method, route.path) for route in ROUTE_TABLE} == operations(DOC)
    assert {("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/api/v1/keys/{id}/secret")} <= operations(DOC)
    for (method, path), permission in ROUTE_PERMISSIONS.items():
        assert DOC["paths"][path][method.lower()]["x-permission"] == permission
    assert DOC["paths"]["/healthz"]["get"]["security"] == []


def test_every_reference_resolves() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return ([node["$ref"]] if "$ref" in node else []) + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    names = set(DOC["components"]["schemas"])
    assert {ref.removeprefix("#/components/schemas/") for ref in refs(DOC)} <= names


def test_the_key_schemas_follow_the_record() -> None:
    schemas = DOC["components"]["schemas"]
    assert set(schemas["Key"]["properties"]) == set(make_key().to_json())
    assert set(schemas["Key"]["required"]) == set(make_key().to_json())
    assert set(schemas["KeyWithSecret"]["properties"]) == {*make_key().to_json(), "key"}
    assert set(schemas["KeyChanges"]["properties"]) == record.EDITABLE_FIELDS
    assert set(schemas["KeyCreate"]["properties"]) == record.EDITABLE_FIELDS | {"account"}
    assert "rate_limits" in schemas["KeyChanges"]["properties"]


def test_a_new_field_appears_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field the record makes editable is in the bodies' schemas, typed from its annotation,
    without a line in openapi.py."""
    monkeypatch.setattr(record, "EDITABLE_FIELDS", record.EDITABLE_FIELDS | {"previous_digest"})
    changes = openapi.document()["components"]["schemas"]["KeyChanges"]
    assert changes["properties"]["previous_digest"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}


def validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator({**schema, "components": DOC["components"]}, validate_formats=True)


def body_schema(name: str) -> Any:
    return validator({"$ref": f"#/components/schemas/{name}"})


def call(
    server: str, method: str, path: str, body: Any = None, token: str | None = ROOT_TOKEN, **headers: str
) -> tuple[int, str, bytes]:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server + path, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def conforms(answer: tuple[int, str, bytes], method: str, template: str) -> Any:
    """The answer's status is documented for the operation, and its body validates; the body."""
    status, content_type, raw = answer
    responses = DOC["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template}: {status} is not documented ({raw[:200]!r})"
    content = responses[str(status)].get("content")
    if content is None:
        assert raw == b""
        return None
    [(media, item)] = content.items()
    assert content_type.split(";")[0] == media
    body = raw.decode() if media == "text/plain" else json.loads(raw)
    errors = [error.message for error in validator(item["schema"]).iter_errors(body)]
    assert errors == [], f"{method} {template} {status}: {errors}"
    return body


def test_real_answers_validate(server: str) -> None:
    def check(method: str, template: str, path: str | None = None, body: Any = None, **more: Any) -> Any:
        return conforms(call(server, method, path or template, body, **more), method, template)

    def refused(
        status: int, code: str, method: str, template: str, path: str | None = None, body: Any = None, **more: Any
    ) -> None:
        answer = call(server, method, path or template, body, **more)
        assert answer[0] == status, answer
        assert conforms(answer, method, template)["error"]["code"] == code

    assert check("GET", "/healthz", token=None) == {"status": "ok"}
    full = {
        "name": " Orders sync ",
        "account": "acme",
        "apps": ["a1", "a2"],
        "interfaces": ["data", "workflow.approval_comments"],
        "ip_whitelist": ["1.2.3.4", "10.0.0.*", "10.0.0.0/8"],
        "enabled": True,
        "expires_at": "2999-01-31T08:00:00+08:00",
        "rate_limits": [{"requests": 5, "per": "second"}, {"requests": 100, "per": "hour"}],
    }
    key = check("POST", "/api/v1/keys", body=full)
    plain = check("POST", "/api/v1/keys", body={})
    one = f"/api/v1/keys/{key['id']}"
    check("GET", "/api/v1/keys/{id}", one)
    page = check("GET", "/api/v1/keys", "/api/v1/keys?limit=1")
    assert page["next_cursor"] is not None
    check("GET", "/api/v1/keys", f"/api/v1/keys?account=acme&q=orders&status=enabled&cursor={page['next_cursor']}")
    check("PATCH", "/api/v1/keys/{id}", one, {"enabled": False, "expires_at": None, "rate_limits": []})
    rotated = check("POST", "/api/v1/keys/{id}/rotate", one + "/rotate", {"grace_seconds": 60})
    assert rotated["previous_expires_at"] is not None
    check("POST", "/api/v1/keys/{id}/rotate", f"/api/v1/keys/{plain['id']}/rotate")
    copy = check("POST", "/api/v1/keys/{id}/copy", one + "/copy")
    assert check("GET", "/api/v1/keys/{id}/secret", one + "/secret")["key"] == rotated["key"]
    check("GET", "/api/v1/interfaces")
    check("GET", "/api/v1/settings")
    check("GET", "/api/v1/me")
    assert check("GET", "/api/v1/openapi.json") == DOC
    assert "gateway_" in check("GET", "/metrics")
    token = check("POST", "/api/v1/tokens", body={"name": "reader", "account": "acme", "permissions": ["keys:read"]})
    check("GET", "/api/v1/tokens")
    audit = check("GET", "/api/v1/audit", "/api/v1/audit?limit=2")
    assert audit["next_cursor"] is not None
    check("GET", "/api/v1/audit", f"/api/v1/audit?key_id={key['id']}&cursor={audit['next_cursor']}")
    check("DELETE", "/api/v1/keys/{id}", f"/api/v1/keys/{copy['id']}")

    # errors, each with its documented status and code
    refused(401, "unauthorized", "GET", "/api/v1/keys", token=None)
    refused(401, "unauthorized", "GET", "/api/v1/keys", token="wrong")
    refused(403, "forbidden", "POST", "/api/v1/keys", body={"name": "x"}, token=token["token"])
    refused(403, "forbidden", "GET", "/metrics", token=token["token"])
    refused(404, "not_found", "GET", "/api/v1/keys/{id}", f"/api/v1/keys/{copy['id']}")
    refused(404, "not_found", "GET", "/api/v1/keys/{id}", "/api/v1/keys/nope")
    refused(400, "invalid_json", "POST", "/api/v1/keys", body=b"{nope")
    refused(400, "invalid_json", "POST", "/api/v1/keys", body=b"{}", Content_Encoding="br")
    big = gzip.compress(b" " * 2_000_000)
    refused(413, "body_too_large", "POST", "/api/v1/keys", body=big, Content_Encoding="gzip")
    refused(422, "immutable_field", "POST", "/api/v1/keys", body={"id": "k_x"})
    refused(422, "ipv6_not_supported", "POST", "/api/v1/keys", body={"ip_whitelist": ["::1"]})
    refused(422, "too_many_ips", "POST", "/api/v1/keys", body={"ip_whitelist": [f"10.0.0.{i}" for i in range(60)]})
    refused(422, "invalid_field", "PATCH", "/api/v1/keys/{id}", one, {"name": ""})
    refused(422, "invalid_field", "GET", "/api/v1/keys", "/api/v1/keys?limit=0")
    refused(422, "invalid_field", "GET", "/api/v1/audit", "/api/v1/audit?cursor=x")
    refused(422, "invalid_field", "POST", "/api/v1/keys/{id}/rotate", one + "/rotate", {"grace_seconds": -1})
    refused(422, "invalid_field", "POST", "/api/v1/tokens", body={"name": "x", "permissions": ["nope"]})
    check("DELETE", "/api/v1/tokens/{id}", f"/api/v1/tokens/{token['id']}")
    refused(404, "not_found", "DELETE", "/api/v1/tokens/{id}", f"/api/v1/tokens/{token['id']}")
    refused(401, "unauthorized", "GET", "/api/v1/me", token=token["token"])  # revoked


VALID_BODIES = [
    {},
    {"name": "  Orders sync  "},
    {"name": "x" * 100},
    {"name": "\t" + "y" * 100 + " \u3000"},
    {"name": "名前 😀 a\u00a0b"},
    {"account": "acme.co@eu:1_x-y"},
    {"apps": "all"},
    {"apps": []},
    {"apps": [" a1 ", "a1", "a2"]},
    {"interfaces": "all"},
    {"interfaces": []},
    {"interfaces": ["data", " workflow ", "data.create", "contacts.anything_else"]},
    {"ip_whitelist": [" 1.2.3.4", "10.0.0.*", "10.0.0.0/8", "1.2.3.4"]},
    {"enabled": False},
    {"expires_at": None},
    {"expires_at": "2999-01-31T08:00:00.5+08:00"},
    {"expires_at": "2999-01-31t00:00:00z"},
    {"rate_limits": []},
    {"rate_limits": [{"requests": 1, "per": per} for per in ("second", "minute", "hour", "day")]},
    {"rate_limits": [{"requests": 1_000_000, "per": "day"}]},
]
INVALID_BODIES = [
    [],
    {"name": ""},
    {"name": "   "},
    {"name": "x" * 101},
    {"name": "a\u0007b"},
    {"name": "a\u2028b"},
    {"name": 5},
    {"account": "a b"},
    {"account": "x" * 65},
    {"apps": "some"},
    {"apps": [5]},
    # (an unknown category such as "nope" is the server's 422 alone: which categories exist
    # depends on routes.catalogue, which a static document cannot know)
    {"interfaces": ["no pe"]},
    {"interfaces": ["data.x-y"]},
    {"interfaces": "data"},
    {"ip_whitelist": "1.2.3.4"},
    {"enabled": "yes"},
    {"expires_at": "2999-01-31"},
    {"expires_at": "2999-01-31T00:00Z"},
    {"expires_at": "2999-01-31T00:00:00"},
    {"rate_limits": [{"requests": 0, "per": "second"}]},
    {"rate_limits": [{"requests": 5, "per": "week"}]},
    {"rate_limits": [{"requests": 5}]},
    {"rate_limits": [{"requests": 5, "per": "second", "burst": 1}]},
    {"rate_limits": [{"requests": 5, "per": "second"}, {"requests": 6, "per": "second"}]},
    {"id": "k_x"},
    {"key": "x"},
    {"created_at": "2999-01-31T00:00:00Z"},
    {"unknown": 1},
]


def test_bodies_the_server_accepts_validate(server: str) -> None:
    """The document calls valid what the server accepts (the old `additionalProperties: false`
    without rate_limits called a valid request invalid), on create and on change."""
    create, changes = body_schema("KeyCreate"), body_schema("KeyChanges")
    everything = {k: v for body in VALID_BODIES for k, v in body.items()}
    for body in [*VALID_BODIES, everything]:
        assert create.is_valid(body), body
        status, _, raw = call(server, "POST", "/api/v1/keys", body)
        assert status == 201, (body, raw)
        key_id = json.loads(raw)["id"]
        patch = {k: v for k, v in body.items() if k != "account"}
        assert changes.is_valid(patch), patch
        status, _, raw = call(server, "PATCH", f"/api/v1/keys/{key_id}", patch)
        assert status == 200, (patch, raw)
    rotation = body_schema("Rotation")
    for body in ({}, {"grace_seconds": 0}, {"grace_seconds": 604_800}):
        assert rotation.is_valid(body)
    assert not rotation.is_valid({"grace_seconds": 604_801})
    request = body_schema("TokenRequest")
    for body in (
        {"name": "t", "permissions": ["keys:read"]},
        {"name": " t ", "account": None, "permissions": ["keys:read", "keys:read"]},
    ):
        assert request.is_valid(body)
        assert call(server, "POST", "/api/v1/tokens", body)[0] == 201


def test_bodies_the_server_refuses_do_not_validate(server: str) -> None:
    create = body_schema("KeyCreate")
    for body in INVALID_BODIES:
        assert not create.is_valid(body), body
        status, _, raw = call(server, "POST", "/api/v1/keys", body)
        assert status in (400, 422), (body, raw)
    assert not body_schema("KeyChanges").is_valid({"account": "acme"})
    assert call(server, "PATCH", "/api/v1/keys/k_0000000000000000000000000a", {"account": "acme"})[0] == 422

"""schemathesis against the real admin API, driven by its own OpenAPI document."""

from __future__ import annotations

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.admin.openapi import document

schema = schemathesis.openapi.from_dict(document())


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
    env["GATEWAY_ADMIN_TOKEN"] = "schemathesis-token"
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
        request.add_header("Authorization", "Bearer schemathesis-token")
        urllib.request.urlopen(request, timeout=10).close()
    yield url
    process.terminate()
    process.wait(20)


def test_served_document_is_the_same(server) -> None:
    request = urllib.request.Request(server + "/api/v1/openapi.json")
    request.add_header("Authorization", "Bearer schemathesis-token")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == json.loads(json.dumps(document()))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_admin_api_conforms(case, server) -> None:
    case.call_and_validate(
        base_url=server,
        headers={"Authorization": "Bearer schemathesis-token"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )

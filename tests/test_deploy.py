"""The container and Kubernetes recipes hold together: parseable YAML with the structure the
docs promise (no Docker daemon or cluster runs here, so nothing is built or applied)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"]
    return container


def check_gateway_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (secret,) = by_kind(docs, "Secret")
    (deployment,) = by_kind(docs, "Deployment")
    (service,) = by_kind(docs, "Service")
    gateway = gateway_container(deployment)
    env = {item["name"]: item for item in gateway["env"]}
    assert env["GATEWAY_SECRET_KEY_FILE"]["value"].startswith("/run/secrets/")
    assert env["GATEWAY_ADMIN_TOKEN_FILE"]["value"].startswith("/run/secrets/")
    assert env["GATEWAY_DATABASE"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "database-url",
    }
    assert "GATEWAY_UPSTREAM" in env
    for probe in ("readinessProbe", "livenessProbe"):  # /healthz from inside: admin stays on loopback
        command = " ".join(gateway[probe]["exec"]["command"])
        assert "127.0.0.1:8081/healthz" in command
    mounted = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for name, path in mounted.items():
        assert volumes[name]["secret"]["secretName"] == secret["metadata"]["name"]
        files = {item["path"] for item in volumes[name]["secret"]["items"]}
        for variable in ("GATEWAY_SECRET_KEY_FILE", "GATEWAY_ADMIN_TOKEN_FILE"):
            assert env[variable]["value"].removeprefix(path + "/") in files
    assert set(secret["stringData"]) == {"secret-key", "admin-token", "database-url"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["proxy"]
    assert {"containerPort": 8080, "name": "proxy"} in gateway["ports"]
    assert all(p["containerPort"] != 8081 for p in gateway["ports"])  # the admin port is not exposed
    return deployment


def test_sidecar_recipe() -> None:
    deployment = check_gateway_pod(load(K8S / "sidecar.yaml"))
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["api", "gateway"]
    gateway = gateway_container(deployment)
    upstream = {item["name"]: item.get("value") for item in gateway["env"]}["GATEWAY_UPSTREAM"]
    assert upstream == "http://127.0.0.1:9000"  # the API in the same pod, on its loopback


def test_replicas_recipe() -> None:
    deployment = check_gateway_pod(load(K8S / "replicas.yaml"))
    assert deployment["spec"]["replicas"] >= 2


def test_compose_survives_down_and_up() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"upstream", "postgres", "gateway-a", "gateway-b"} <= set(services)
    for name in ("gateway-a", "gateway-b"):
        gateway = services[name]
        env = gateway["environment"]
        assert env["GATEWAY_SECRET_KEY_FILE"] == "/run/secrets/secret_key"  # a file made once, not a new value per up
        assert "GATEWAY_SECRET_KEY" not in env
        assert env["GATEWAY_UPSTREAM"].endswith("http://upstream:9000}")
        assert "host.docker.internal:host-gateway" in gateway["extra_hosts"]
        assert set(gateway["secrets"]) == {"secret_key", "admin_token"}
        assert all(port.startswith("127.0.0.1:") for port in gateway["ports"] if port.endswith(":8081"))
    assert compose["secrets"]["secret_key"]["file"] == "./secrets/secret_key"
    assert "pgdata" in compose["volumes"]


def test_the_build_context_leaves_state_and_secrets_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    assert {".venv", "data", "secrets", ".env", ".git"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER gateway" in dockerfile and "HEALTHCHECK" in dockerfile and "COPY examples" in dockerfile

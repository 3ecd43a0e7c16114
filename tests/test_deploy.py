"""The image, compose and Kubernetes recipes hold together, checked offline: no Docker daemon or
cluster runs here, so nothing is built or applied. The kustomize overlays are rendered by the
real kustomize (`kustomize build`, or `kubectl kustomize`) and every object is validated
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown field fails)."""

from __future__ import annotations

import functools
import importlib.util
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
OVERLAYS = ("base", "overlays/replicas", "overlays/sidecar")
# The oldest Kubernetes the manifests support (preStop `sleep` is 1.30's) and the newest schemas.
KUBERNETES = ("1.30.0", kubernetes_validate.latest_version())
SECRET = "api-key-gateway"
SECRET_KEYS = {"secret-key", "admin-token", "database-url"}
KINDS = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}


# --- the image ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, continuation lines joined, one list per FROM."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def image_user() -> tuple[int, int]:
    final = dockerfile_stages()[-1]
    (user,) = [rest for word, rest in final if word == "USER"]
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: a kubelet can only check a numeric user"
    uid, gid = (int(part) for part in user.split(":"))
    return uid, gid


def test_the_image_runs_as_a_numeric_user_it_creates() -> None:
    uid, gid = image_user()
    assert uid >= 10000 and gid >= 10000  # clear of any system or host account
    run = " ".join(rest for word, rest in dockerfile_stages()[-1] if word == "RUN")
    assert f"groupadd --system --gid {gid} " in run
    assert re.search(rf"useradd --system --uid {uid} --gid {gid} ", run)
    assert f"chown {uid}:{gid} /data" in run


def test_the_image_installs_exactly_the_lock() -> None:
    build, final = dockerfile_stages()
    run = " ".join(rest for word, rest in build if word == "RUN")
    assert "pip install --no-deps -r requirements.lock" in run
    assert "pip install --no-deps --no-build-isolation ." in run  # built with the pinned setuptools
    assert "pip check" in run  # the lock is complete and consistent, or the build fails
    assert ("COPY", "--from=build /opt/gateway /opt/gateway") in final
    assert not any(word == "RUN" and "pip install" in rest for word, rest in final)
    entrypoint = dict(final)["ENTRYPOINT"]
    assert entrypoint == '["gateway", "serve"]'
    healthcheck = dict(final)["HEALTHCHECK"]
    assert "http://127.0.0.1:8081/healthz" in healthcheck


def load_lock_tool() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_lock", ROOT / "deploy" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+!-]*", version), line  # exact pins only
            pins[name] = version
    return pins


def test_the_lock_pins_everything_pyproject_asks_for() -> None:
    """Every distribution `pip install .[postgres]` installs is pinned, and nothing else is but
    the build backend; each pin satisfies pyproject.toml. (Regenerate: deploy/lock.py.)"""
    lock = load_lock_tool()
    pins = lock_pins()
    needed = lock.closure(lock.direct_requirements())
    assert set(pins) == set(needed) | set(lock.BUILD), "stale lock: .venv/bin/python deploy/lock.py > requirements.lock"
    for requirement in lock.direct_requirements():
        assert requirement.specifier.contains(pins[lock.canonical(requirement.name)]), requirement
    for text in lock.project_build_requires():
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[lock.canonical(requirement.name)]), requirement


def ignored(patterns: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    folders decides; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for include, pattern in patterns:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            verdict = not include
    return verdict


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append((include, re.compile(regex)))
    return patterns


def test_the_build_context_holds_what_the_image_copies_and_no_state() -> None:
    patterns = dockerignore()
    copied = [
        source
        for stage in dockerfile_stages()
        for word, rest in stage
        if word == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert "requirements.lock" in copied and "gateway" in copied
    for source in copied:
        assert not ignored(patterns, source), source
        assert (ROOT / source).exists(), source
    assert not ignored(patterns, "gateway/admin/console/app.js")
    for path in (
        ".git/config",
        ".venv/bin/python",
        "data/gateway.db",
        "data/admin.token",
        "secrets/secret_key",
        ".env",
        "gateway/__pycache__/config.cpython-311.pyc",
        "gateway/secrets/x",
        "tests/test_deploy.py",
        "deploy/lock.py",
        "test-output/log",
    ):
        assert ignored(patterns, path), path


# --- docker compose ----------------------------------------------------------------------


def test_compose_builds_one_image_and_restarts_what_it_runs() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"upstream", "postgres", "gateway-a", "gateway-b"} <= set(services)
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["gateway-a"]  # built once ...
    image = services["gateway-a"]["image"]
    assert services["gateway-a"]["pull_policy"] == "build"
    for name in ("upstream", "gateway-b"):  # ... and run by the others, never pulled
        assert services[name]["image"] == image
        assert services[name]["pull_policy"] == "never"
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
    copied_to = {rest.split()[-1] for word, rest in dockerfile_stages()[-1] if word == "COPY"}
    assert services["upstream"]["entrypoint"][1] in copied_to  # the sample upstream is in the image


def test_compose_survives_down_and_up() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name in ("gateway-a", "gateway-b"):
        gateway = services[name]
        env = gateway["environment"]
        assert env["GATEWAY_SECRET_KEY_FILE"] == "/run/secrets/secret_key"  # a file made once, not a new value per up
        assert "GATEWAY_SECRET_KEY" not in env
        assert env["GATEWAY_UPSTREAM"].endswith("http://upstream:9000}")
        assert env["GATEWAY_DATABASE"].startswith("postgresql://")
        assert "host.docker.internal:host-gateway" in gateway["extra_hosts"]
        assert set(gateway["secrets"]) == {"secret_key", "admin_token"}
        assert all(port.startswith("127.0.0.1:") for port in gateway["ports"] if port.endswith(":8081"))
        assert "8081/healthz" in " ".join(gateway["healthcheck"]["test"])
        # shutdown_timeout (30 s by default) fits in the grace period
        assert int(gateway["stop_grace_period"].removesuffix("s")) > 30
    assert compose["secrets"]["secret_key"]["file"] == "./secrets/secret_key"
    assert "pgdata" in compose["volumes"]


# --- Kubernetes --------------------------------------------------------------------------


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl on PATH: the overlays were not rendered")
    done = subprocess.run([*command, str(K8S / overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def only(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (doc,) = [doc for doc in docs if doc["kind"] == kind]
    return doc


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"]
    return container


@pytest.mark.parametrize("version", KUBERNETES)
def test_every_base_file_validates_on_its_own(version: str) -> None:
    """Without kustomize too: each resource the base lists is a complete, valid object."""
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert listed
    for name in listed:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_to_valid_objects(overlay: str, version: str) -> None:
    docs = render(overlay)
    assert {doc["kind"] for doc in docs} == KINDS
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_runs_as_the_images_user(overlay: str) -> None:
    uid, gid = image_user()
    pod = only(render(overlay), "Deployment")["spec"]["template"]["spec"]
    context = gateway_container(only(render(overlay), "Deployment"))["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (uid, gid, True)
    assert pod["securityContext"]["fsGroup"] == gid and pod["securityContext"]["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_shipped_only_referenced(overlay: str) -> None:
    """A Secret in the manifests would be applied over the real one: none is, and the Secret
    the pods read is the one docs/deploy.md creates by command, with the keys they use."""
    docs = render(overlay)
    assert all(doc["kind"] != "Secret" for doc in docs)
    deployment = only(docs, "Deployment")
    gateway = gateway_container(deployment)
    env = {item["name"]: item for item in gateway["env"]}
    assert env["GATEWAY_DATABASE"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "database-url"}
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (name,) = [name for name in mounts if "secret" in volumes[name]]
    secret = volumes[name]["secret"]
    assert secret["secretName"] == SECRET and "optional" not in secret  # no Secret, no start
    files = {item["key"]: f"{mounts[name]}/{item['path']}" for item in secret["items"]}
    assert env["GATEWAY_SECRET_KEY_FILE"]["value"] == files["secret-key"]
    assert env["GATEWAY_ADMIN_TOKEN_FILE"]["value"] == files["admin-token"]
    assert secret["defaultMode"] == 0o440  # the owner and the gateway's group (fsGroup) only
    assert {*secret_keys_used(deployment)} <= SECRET_KEYS
    docs_text = (ROOT / "docs" / "deploy.md").read_text()
    assert f"kubectl create secret generic {SECRET}" in docs_text
    assert all(key in docs_text for key in SECRET_KEYS)


def secret_keys_used(deployment: dict[str, Any]) -> list[str]:
    spec = deployment["spec"]["template"]["spec"]
    keys = [item["key"] for v in spec["volumes"] if "secret" in v for item in v["secret"]["items"]]
    for container in spec["containers"]:
        keys += [e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env", []) if "valueFrom" in e]
    return keys


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_map_is_a_config_the_gateway_accepts(overlay: str, tmp_path: Path) -> None:
    """The gateway's own loader reads the ConfigMap as a pod would (env from the Deployment, the
    secrets as random values), and what the probes, ports and grace period assume holds."""
    docs = render(overlay)
    deployment = only(docs, "Deployment")
    gateway = gateway_container(deployment)
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (name,) = [name for name in mounts if "configMap" in volumes[name]]
    config_map = only(docs, "ConfigMap")
    assert volumes[name]["configMap"]["name"] == config_map["metadata"]["name"]
    (item,) = volumes[name]["configMap"]["items"]
    assert gateway["args"] == ["--config", f"{mounts[name]}/{item['path']}"]
    path = tmp_path / item["path"]
    path.write_text(config_map["data"][item["key"]])
    env = {e["name"]: e["value"] for e in gateway["env"] if "value" in e and not e["name"].endswith("_FILE")}
    env |= {
        "GATEWAY_SECRET_KEY": secrets.token_hex(32),
        "GATEWAY_ADMIN_TOKEN": secrets.token_hex(24),
        "GATEWAY_DATABASE": "postgresql://gateway:pw@postgres:5432/gateway",
    }
    config = load_config(str(path), env)
    assert config.upstream.url == env["GATEWAY_UPSTREAM"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"proxy": config.listen.port}  # the admin port is in no port list, no Service
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(gateway[probe]) & {"exec", "tcpSocket"} == set(), probe  # no process started per probe
        assert gateway[probe]["httpGet"] == {"path": "/healthz", "port": config.admin.port}
    assert config.admin.host == "0.0.0.0"  # else the kubelet's probe finds nothing on the pod's address
    assert config.workers == "1"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert gateway["lifecycle"]["preStop"]["sleep"]["seconds"] + config.shutdown_timeout < grace
    for key in ("trusted_proxies", "routes", "rate_limits"):  # shown, for the operator to fill
        assert re.search(rf"^{key}:", config_map["data"][item["key"]], re.M), key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_proxy_port_is_reachable(overlay: str) -> None:
    docs = render(overlay)
    deployment, service, policy = (only(docs, kind) for kind in ("Deployment", "Service", "NetworkPolicy"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["proxy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == labels
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_survive_a_drain(overlay: str) -> None:
    docs = render(overlay)
    deployment, budget = only(docs, "Deployment"), only(docs, "PodDisruptionBudget")
    assert deployment["spec"]["replicas"] >= 2
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["labelSelector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_requested_and_memory_capped(overlay: str) -> None:
    """Sized from measurement (docs/deploy.md): 54-56 MiB idle plus about 1.3 KiB per key."""
    resources = gateway_container(only(render(overlay), "Deployment"))["resources"]
    mebibytes = {k: int(v.removesuffix("Mi")) for k, v in resources["requests"].items() if k == "memory"}
    assert 96 <= mebibytes["memory"] <= int(resources["limits"]["memory"].removesuffix("Mi"))
    assert "cpu" in resources["requests"] and "cpu" not in resources["limits"]  # never throttled


def test_the_sidecar_overlay_puts_the_api_behind_the_gateway() -> None:
    docs = render("overlays/sidecar")
    deployment = only(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert sorted(c["name"] for c in containers) == ["api", "gateway"]
    upstream = {e["name"]: e.get("value") for e in gateway_container(deployment)["env"]}["GATEWAY_UPSTREAM"]
    assert upstream == "http://127.0.0.1:9000"  # the API in the same pod, on its loopback
    assert all(doc["metadata"]["name"] == "orders-api" for doc in docs if doc["kind"] != "ConfigMap")


def test_the_replicas_overlay_is_a_tier_of_its_own() -> None:
    deployment = only(render("overlays/replicas"), "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["gateway"]
    upstream = {e["name"]: e.get("value") for e in gateway_container(deployment)["env"]}["GATEWAY_UPSTREAM"]
    assert not upstream.startswith("http://127.0.0.1")


def test_the_plain_examples_are_gone() -> None:
    """The old single-file manifests held placeholder Secrets: they must not come back."""
    assert sorted(p.name for p in K8S.glob("*.yaml")) == []

"""Config loading: defaults, interpolation, env overrides, and one-line errors naming the field."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.core.errors import RuleError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    config = parse_config({}, {})
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8080)
    assert (config.admin.host, config.admin.port, config.admin.token) == ("127.0.0.1", 8081, "")
    assert config.upstream.url == "http://127.0.0.1:9000"
    assert (config.upstream.connect_timeout, config.upstream.read_timeout) == (5.0, 60.0)
    assert config.database == f"sqlite:///{Path.cwd() / 'data' / 'gateway.db'}"  # no file: the working directory
    assert (config.auth.header, config.auth.scheme, config.auth.strip) == ("Authorization", "Bearer", True)
    assert config.trusted_proxies == ()
    assert config.plugins.header == "X-Plugin-Id"
    assert (config.limits.keys_per_account, config.limits.ips_per_key) == (500, 50)
    assert (config.routes.preset, config.routes.unknown, config.routes.max_body_inspect) == (
        "jiandaoyun",
        "deny",
        1048576,
    )
    assert config.worker_count == 1


def test_example_config_loads() -> None:
    config = load_config(str(ROOT / "config.example.yaml"), env={})
    assert config.listen.port == 8080 and config.admin.token == ""


def test_interpolation_and_defaults() -> None:
    raw = {"listen": {"port": "${PORT}"}, "admin": {"token": "${TOK:-fallback-01234567}"}, "upstream": {"url": "${UP}"}}
    config = parse_config(raw, {"PORT": "9999", "UP": "https://api.example.test"})
    assert config.listen.port == 9999
    assert config.admin.token == "fallback-01234567"
    assert config.upstream.url == "https://api.example.test"


def test_env_overrides_win() -> None:
    raw = {"upstream": {"url": "http://a:1"}, "database": "sqlite:///x.db", "admin": {"token": "file"}}
    env = {
        "GATEWAY_UPSTREAM": "http://b:2",
        "GATEWAY_DATABASE": "sqlite:////tmp/y.db",
        "GATEWAY_ADMIN_TOKEN": "env-token-0123456789",
        "GATEWAY_SECRET_KEY": "s" * 32,
    }
    config = parse_config(raw, env)
    assert config.upstream.url == "http://b:2"
    assert config.database == "sqlite:////tmp/y.db" and str(config.sqlite_path) == "/tmp/y.db"
    assert config.admin.token == "env-token-0123456789"
    assert config.secret_key == "s" * 32


def test_relative_and_absolute_sqlite_paths() -> None:
    base = Path("/etc/gateway")
    assert str(parse_config({"database": "sqlite:///./data/g.db"}, {}, base).sqlite_path) == "/etc/gateway/data/g.db"
    assert str(parse_config({"database": "sqlite:///g.db"}, {}, base).sqlite_path) == "/etc/gateway/g.db"
    assert str(parse_config({"database": "sqlite:////var/lib/g.db"}, {}, base).sqlite_path) == "/var/lib/g.db"
    from_env = parse_config({}, {"GATEWAY_DATABASE": "sqlite:///d/g.db"}, base)
    assert str(from_env.sqlite_path) == "/etc/gateway/d/g.db"


def test_relative_paths_follow_the_config_file_not_the_working_directory(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "cert.pem").write_text("x")
    (folder / "key.pem").write_text("x")
    path = folder / "gateway.yaml"
    path.write_text("database: sqlite:///./state/g.db\nlisten: {tls: {cert: cert.pem, key: key.pem}}\n")
    config = load_config(str(path), {})
    assert config.sqlite_path == folder / "state" / "g.db"
    assert config.listen.tls is not None and config.listen.tls.cert == str(folder / "cert.pem")


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token-0123456789\n")
    (tmp_path / "key").write_text("k" * 20 + "\r\n")
    env = {"GATEWAY_ADMIN_TOKEN_FILE": str(tmp_path / "token"), "GATEWAY_SECRET_KEY_FILE": str(tmp_path / "key")}
    config = parse_config({}, env)
    assert (config.admin.token, config.secret_key) == ("file-token-0123456789", "k" * 20)
    (tmp_path / "two").write_text("a" * 16 + "\n\n")
    assert parse_config({}, {"GATEWAY_ADMIN_TOKEN_FILE": str(tmp_path / "two")}).admin.token == "a" * 16 + "\n"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"GATEWAY_SECRET_KEY": "short"}, "GATEWAY_SECRET_KEY"),
        ({"GATEWAY_SECRET_KEY_FILE": "/nonexistent/key"}, "GATEWAY_SECRET_KEY_FILE"),
        ({"GATEWAY_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "GATEWAY_ADMIN_TOKEN_FILE"),
        ({"GATEWAY_ADMIN_TOKEN_FILE": "/dev/null"}, "GATEWAY_ADMIN_TOKEN_FILE"),
        ({"GATEWAY_ADMIN_TOKEN_FILE": "/dev/null", "GATEWAY_ADMIN_TOKEN": "t"}, "GATEWAY_ADMIN_TOKEN_FILE"),
        ({"GATEWAY_ADMIN_TOKEN": "REPLACE: openssl rand -hex 24"}, "GATEWAY_ADMIN_TOKEN"),
        ({"GATEWAY_ADMIN_TOKEN": "changeme-changeme-changeme"}, "GATEWAY_ADMIN_TOKEN"),
        ({"GATEWAY_ADMIN_TOKEN": "short-token"}, "GATEWAY_ADMIN_TOKEN"),
        ({"GATEWAY_SECRET_KEY": "REPLACE: openssl rand -hex 32 (the same for every pod)"}, "GATEWAY_SECRET_KEY"),
        ({"GATEWAY_ADMIN_TOKEN_FILE": "PLACEHOLDER_FILE"}, "GATEWAY_ADMIN_TOKEN_FILE"),
    ],
)
def test_secret_errors_name_the_variable(env: dict, field: str, tmp_path: Path) -> None:
    """Each names what the operator set: the variable, its _FILE twin, or the config field."""
    if env.get("GATEWAY_ADMIN_TOKEN_FILE") == "PLACEHOLDER_FILE":
        env = {"GATEWAY_ADMIN_TOKEN_FILE": str(tmp_path / "token")}
        (tmp_path / "token").write_text("REPLACE: openssl rand -hex 24\n")
    with pytest.raises(RuleError) as caught:
        parse_config({}, env)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"listen": {"port": "http"}}, "listen.port"),
        ({"listen": {"port": 70000}}, "listen.port"),
        ({"listen": {"hots": "x"}}, "listen.hots"),
        ({"listen": "8080"}, "listen"),
        ({"nonsense": 1}, "nonsense"),
        ({"upstream": {"url": "ftp://x"}}, "upstream.url"),
        ({"upstream": {"url": "http://x:notaport"}}, "upstream.url"),
        ({"upstream": {"url": "http://x/path"}}, "upstream.url"),
        ({"upstream": {"read_timeout": -1}}, "upstream.read_timeout"),
        ({"upstream": {"connect_timeout": "soon"}}, "upstream.connect_timeout"),
        ({"database": "mysql://x"}, "database"),
        ({"database": "sqlite:///"}, "database"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, "trusted_proxies[0]"),
        ({"trusted_proxies": ["nope"]}, "trusted_proxies[0]"),
        ({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies"),
        ({"auth": {"strip": "maybe"}}, "auth.strip"),
        ({"auth": {"header": "Bad Header"}}, "auth.header"),
        ({"limits": {"keys_per_account": 0}}, "limits.keys_per_account"),
        ({"routes": {"unknown": "maybe"}}, "routes.unknown"),
        ({"routes": {"preset": "kong"}}, "routes.preset"),
        ({"routes": {"rules": [{"path": "/x"}]}}, "routes.rules[0].interface"),
        ({"routes": {"rules": [{"path": "x", "interface": "data.x"}]}}, "routes.rules[0].path"),
        ({"routes": {"rules": [{"path": "/x", "interface": "nope.x"}]}}, "routes.rules[0].interface"),
        ({"routes": {"rules": [{"path": "/x", "interface": "data.{a}"}]}}, "routes.rules[0].interface"),
        (
            {"routes": {"rules": [{"path": "/x/{a}", "interface": "data.{a}", "app_id": "cookie.a"}]}},
            "routes.rules[0].app_id",
        ),
        ({"routes": {"rules": [{"path": "/x", "interface": "data.x", "app_id": "path.a"}]}}, "routes.rules[0].app_id"),
        ({"routes": {"rules": [{"path": "/**/x", "interface": "data.x"}]}}, "routes.rules[0].path"),
        ({"workers": 0}, "workers"),
        ({"workers": "many"}, "workers"),
        ({"listen": {"tls": {"cert": "/nonexistent.pem", "key": "/nonexistent.key"}}}, "listen.tls.cert"),
        ({"admin": {"token": "${UNSET_VARIABLE}"}}, "admin.token"),
        ({"admin": {"token": "changeme"}}, "admin.token"),
        ({"limits": {"max_connections": 0}}, "limits.max_connections"),
        ({"limits": {"max_connections_per_ip": 0}}, "limits.max_connections_per_ip"),
        ({"limits": {"max_upstream_head": 0}}, "limits.max_upstream_head"),
        ({"limits": {"body_timeout": 0}}, "limits.body_timeout"),
    ],
)
def test_errors_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_config(raw, {})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert "\n" not in str(caught.value)


def _check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("listen: {port: 8080}\n")
    result = _check(good)
    assert result.returncode == 0 and "config ok" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {port: eighty}\n")
    result = _check(bad)
    assert result.returncode == 1
    assert result.stderr.strip() == "gateway: config error: listen.port: expected a whole number, got 'eighty'"
    broken = tmp_path / "broken.yaml"
    broken.write_text("listen: [\n")
    result = _check(broken)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "not valid YAML" in result.stderr and "Traceback" not in result.stderr
    result = _check(tmp_path / "missing.yaml")
    assert result.returncode == 1 and "cannot read" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(good)],
        capture_output=True,
        text=True,
        env={**os.environ, "GATEWAY_SECRET_KEY": "too-short"},
    )
    assert result.returncode == 1  # what serve would refuse, check-config refuses too
    assert result.stderr.strip() == "gateway: config error: GATEWAY_SECRET_KEY: must be at least 16 characters"


def test_serve_with_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: {url: 'nope'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "gateway: config error: upstream.url: expected http://host:port or https://host, got 'nope'"
    ]


@pytest.mark.parametrize("section", ["listen", "admin"])
def test_a_port_in_use_names_its_field(tmp_path: Path, section: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"listen": 0, "admin": 0, section: busy}
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"listen: {{host: 127.0.0.1, port: {ports['listen']}}}\n"
            f"admin: {{host: 127.0.0.1, port: {ports['admin']}, token: t0123456789abcdef}}\n"
            "database: sqlite:///data/g.db\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        )
    assert result.returncode == 1
    assert f"gateway: {section}.port: 127.0.0.1:{busy} is already in use" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert (tmp_path / "data" / "g.db").exists()  # relative to the config file, not the working directory

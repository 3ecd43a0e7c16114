"""The `gateway keys` commands against a running gateway process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import Process


def gw(proc: Process, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "--admin-url", proc.admin_url, *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=30,
    )


def test_cli_round_trip(spawn, tmp_path: Path) -> None:
    proc = spawn()
    tok = ["--token", proc.token]
    created = gw(proc, *tok, "--json", "create", "--name", "CLI key", "--apps", "a1,a2", "--ip", "10.0.0.*")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["name"] == "CLI key" and key["apps"] == ["a1", "a2"] and key["ip_whitelist"] == ["10.0.0.*"]

    # the token from the environment, then from the generated token file via --config
    listing = gw(proc, "--json", "list", env={"GATEWAY_ADMIN_TOKEN": proc.token})
    assert [k["id"] for k in json.loads(listing.stdout)] == [key["id"]]
    table = gw(proc, "--config", str(tmp_path / "config.yaml"), "list", cwd=tmp_path)
    assert table.returncode == 0 and "CLI key" in table.stdout and key["key_masked"] in table.stdout

    revealed = gw(proc, *tok, "reveal", key["id"])
    assert revealed.stdout.strip() == key["key"]
    shown = gw(proc, *tok, "show", key["id"])
    assert key["id"] in shown.stdout and key["key"] not in shown.stdout

    updated = gw(proc, *tok, "--json", "update", key["id"], "--name", "Renamed", "--interfaces", "data,form")
    assert json.loads(updated.stdout)["interfaces"] == ["data", "form"]
    disabled = gw(proc, *tok, "--json", "disable", key["id"])
    assert json.loads(disabled.stdout)["enabled"] is False
    enabled = gw(proc, *tok, "--json", "enable", key["id"])
    assert json.loads(enabled.stdout)["enabled"] is True
    copied = json.loads(gw(proc, *tok, "--json", "copy", key["id"]).stdout)
    assert copied["name"] == "Renamed" and copied["key"] != key["key"]
    unconfirmed = gw(proc, *tok, "delete", key["id"])  # not a terminal: it must be told --yes
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert gw(proc, *tok, "show", key["id"]).returncode == 0
    deleted = gw(proc, *tok, "delete", key["id"], "--yes")
    assert deleted.returncode == 0
    gone = gw(proc, *tok, "show", key["id"])
    assert gone.returncode == 1 and gone.stderr.strip().startswith("gateway: not_found:")


def test_cli_errors_exit_1_with_the_api_message(spawn) -> None:
    proc = spawn()
    bad = gw(proc, "--token", proc.token, "create", "--ip", "::1")
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("gateway: ipv6_not_supported:")
    assert bad.stderr.count("ip_whitelist[0]") == 1  # the field is named once
    unauthorized = gw(proc, "--token", "wrong", "list")
    assert unauthorized.returncode == 1 and "unauthorized" in unauthorized.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "--admin-url", "http://127.0.0.1:1", "--token", "x", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    assert "Traceback" not in bad.stderr + unauthorized.stderr + unreachable.stderr


def cli(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=30,
        input=stdin,
    )


def test_options_on_either_side_and_urls_without_a_scheme(spawn) -> None:
    proc = spawn()
    bare = proc.admin_url.removeprefix("http://")
    created = cli("keys", "create", "--name", "after", "--json", "--token", proc.token, "--admin-url", bare)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    listed = cli("keys", "--admin-url", proc.admin_url, "list", "--token", proc.token, "--json")
    assert [k["id"] for k in json.loads(listed.stdout)] == [key["id"]]
    wrong_port = cli("keys", "list", "--admin-url", proc.proxy_url, "--token", proc.token)
    assert wrong_port.returncode == 1 and "proxy port, not the admin API" in wrong_port.stderr


def test_whitelist_edits_and_a_closed_pipe(spawn) -> None:
    proc = spawn()
    admin = ["--admin-url", proc.admin_url, "--token", proc.token]
    key = json.loads(cli("keys", "create", *admin, "--json", "--ip", "10.0.0.1", "--ip", "10.0.0.2").stdout)
    added = cli("keys", "update", key["id"], *admin, "--json", "--add-ip", "10.0.0.3", "--remove-ip", "10.0.0.1")
    assert json.loads(added.stdout)["ip_whitelist"] == ["10.0.0.2", "10.0.0.3"] and added.stderr == ""
    replaced = cli("keys", "update", key["id"], *admin, "--json", "--ip", "192.168.1.*")
    assert json.loads(replaced.stdout)["ip_whitelist"] == ["192.168.1.*"]
    assert "replacing the whole whitelist" in replaced.stderr
    absent = cli("keys", "update", key["id"], *admin, "--remove-ip", "1.1.1.1")
    assert absent.returncode == 1 and "not in the whitelist: 1.1.1.1" in absent.stderr
    for n in range(200):  # more JSON than a pipe holds, so the writer meets a closed pipe
        request = urllib.request.Request(
            proc.admin_url + "/api/v1/keys",
            data=json.dumps({"name": f"bulk {n}"}).encode(),
            headers={"Authorization": f"Bearer {proc.token}", "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    piped = subprocess.run(
        f"{sys.executable} -m gateway keys list --json --admin-url {proc.admin_url} --token {proc.token} | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert piped.stdout == "[\n  {\n    " and "Traceback" not in piped.stderr and "Broken" not in piped.stderr


def test_migrate_from_another_directory_uses_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "gateway.yaml").write_text("database: sqlite:///./state/gateway.db\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("migrate", "--config", str(folder / "gateway.yaml"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (folder / "state" / "gateway.db").is_file() and list(elsewhere.iterdir()) == []


def test_audit_command(spawn) -> None:
    proc = spawn()
    admin = ["--admin-url", proc.admin_url, "--token", proc.token]
    key = json.loads(cli("keys", "create", *admin, "--json", "--name", "audited").stdout)
    cli("keys", "update", key["id"], *admin, "--name", "renamed")
    cli("keys", "reveal", key["id"], *admin)
    table = cli("audit", *admin)
    assert table.returncode == 0, table.stderr
    actions = [line.split()[1] for line in table.stdout.splitlines()]
    assert actions == ["create", "update", "reveal"]
    assert "name" in table.stdout.splitlines()[1]
    only = json.loads(cli("audit", *admin, "--key", key["id"], "--json", "--all").stdout)
    assert [entry["action"] for entry in only] == ["create", "update", "reveal"]
    assert all(entry["key_id"] == key["id"] for entry in only)


def test_expiry_rotation_and_tokens_from_the_command_line(spawn) -> None:
    proc = spawn()
    admin = ["--admin-url", proc.admin_url, "--token", proc.token]
    key = json.loads(cli("keys", "create", *admin, "--json", "--expires", "30d").stdout)
    days = (datetime.fromisoformat(key["expires_at"]) - datetime.now(UTC)).total_seconds() / 86400
    assert 29.9 < days <= 30
    cleared = json.loads(cli("keys", "update", key["id"], *admin, "--json", "--expires", "never").stdout)
    assert cleared["expires_at"] is None
    rotated = json.loads(cli("keys", "rotate", key["id"], *admin, "--json", "--grace", "1h").stdout)
    assert rotated["key"] != key["key"] and rotated["previous_expires_at"] is not None
    bad = cli("keys", "rotate", key["id"], *admin, "--grace", "soon")
    assert bad.returncode == 1 and "--grace" in bad.stderr
    created = cli("tokens", "create", *admin, "--name", "ci", "--account", "acme", "--permission", "keys:read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    token_id = created.stderr.split(":")[0]
    listed = cli("tokens", "list", *admin)
    assert token_id in listed.stdout and "acme" in listed.stdout and secret not in listed.stdout
    scoped = cli("keys", "list", "--admin-url", proc.admin_url, "--token", secret, "--json")
    assert json.loads(scoped.stdout) == []  # no key in acme
    refused = cli("keys", "create", "--admin-url", proc.admin_url, "--token", secret)
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    assert cli("tokens", "revoke", token_id, *admin).returncode == 0
    gone = cli("keys", "list", "--admin-url", proc.admin_url, "--token", secret)
    assert gone.returncode == 1 and "unauthorized" in gone.stderr


def test_rate_limits_from_the_command_line(spawn) -> None:
    proc = spawn()
    admin = ["--admin-url", proc.admin_url, "--token", proc.token]
    key = json.loads(cli("keys", "create", *admin, "--json", "--rate", "5/second", "--rate", "1000/day").stdout)
    assert key["rate_limits"] == [{"requests": 5, "per": "second"}, {"requests": 1000, "per": "day"}]
    cleared = json.loads(cli("keys", "update", key["id"], *admin, "--json", "--rate", "").stdout)
    assert cleared["rate_limits"] == []
    bad = cli("keys", "create", *admin, "--rate", "5/fortnight")
    assert bad.returncode == 1 and "--rate" in bad.stderr


def test_generated_tokens_never_look_like_an_option() -> None:
    """A token starting with `-` cannot follow `--token` on a command line (one in 64 did)."""
    from gateway.core.sealing import generate_token

    tokens = [generate_token() for _ in range(2000)]
    assert not [token for token in tokens if token.startswith("-")]
    assert len(set(tokens)) == 2000 and {len(token) for token in tokens} == {43}

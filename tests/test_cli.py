"""The `gateway keys` commands against a running gateway process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    deleted = gw(proc, *tok, "delete", key["id"])
    assert deleted.returncode == 0
    gone = gw(proc, *tok, "show", key["id"])
    assert gone.returncode == 1 and gone.stderr.strip().startswith("gateway: not_found:")


def test_cli_errors_exit_1_with_the_api_message(spawn) -> None:
    proc = spawn()
    bad = gw(proc, "--token", proc.token, "create", "--ip", "::1")
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("gateway: ipv6_not_supported:") and "(ip_whitelist[0])" in bad.stderr
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

"""Real processes: restart keeps keys, SIGKILL loses no acknowledged write, no plaintext on disk."""

from __future__ import annotations

import json
import os
import signal
import stat
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import Process


def call(proc: Process, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(proc.admin_url + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {proc.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_generated_token_and_secret_files(spawn, tmp_path: Path) -> None:
    proc = spawn()
    data = tmp_path / "data"
    for name in ("admin.token", "secret.key"):
        mode = stat.S_IMODE((data / name).stat().st_mode)
        assert mode == 0o600, name
    status, _ = call(proc, "GET", "/api/v1/keys")
    assert status == 200
    proc.process.terminate()
    proc.process.wait(timeout=20)
    output = (tmp_path / "gateway.out").read_text()
    assert proc.token not in output  # the token's path is printed, never the token
    assert "admin.token" in output


def test_restart_keeps_keys_and_secrets(spawn, tmp_path: Path) -> None:
    proc = spawn()
    created = [call(proc, "POST", "/api/v1/keys", {"name": f"k{i}", "apps": [f"a{i}"]})[1] for i in range(5)]
    proc.process.terminate()
    assert proc.process.wait(timeout=20) == 0
    again = spawn()
    assert again.token == proc.token  # the generated token is reused
    for key in created:
        status, shown = call(again, "GET", f"/api/v1/keys/{key['id']}")
        assert status == 200 and shown["name"] == key["name"] and shown["apps"] == key["apps"]
        status, revealed = call(again, "GET", f"/api/v1/keys/{key['id']}/secret")
        assert revealed["key"] == key["key"]


def test_database_holds_no_plaintext_secret(spawn, tmp_path: Path) -> None:
    proc = spawn()
    secrets = [call(proc, "POST", "/api/v1/keys", {})[1]["key"] for _ in range(20)]
    copy = call(proc, "POST", f"/api/v1/keys/{call(proc, 'GET', '/api/v1/keys')[1]['items'][0]['id']}/copy")[1]
    secrets.append(copy["key"])
    proc.process.send_signal(signal.SIGKILL)
    proc.process.wait()
    blob = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("gateway.db*") if p.is_file())
    assert len(blob) > 0
    for secret in secrets:
        assert secret.encode() not in blob
        assert secret.encode("utf-16-le") not in blob
        assert secret[4:-4].encode() not in blob  # not even the masked-away middle


def test_acknowledged_writes_survive_sigkill(spawn, tmp_path: Path) -> None:
    proc = spawn()
    acknowledged: dict[str, str] = {}
    for i in range(40):
        status, key = call(proc, "POST", "/api/v1/keys", {"name": f"n{i}"})
        assert status == 201
        acknowledged[key["id"]] = key["name"]
        if i % 4 == 0:
            status, _ = call(proc, "PATCH", f"/api/v1/keys/{key['id']}", {"name": f"renamed{i}"})
            assert status == 200
            acknowledged[key["id"]] = f"renamed{i}"
    os.kill(proc.process.pid, signal.SIGKILL)
    proc.process.wait()
    again = spawn()
    for key_id, name in acknowledged.items():
        status, shown = call(again, "GET", f"/api/v1/keys/{key_id}")
        assert status == 200 and shown["name"] == name


def test_wrong_secret_key_refuses_to_start(spawn, tmp_path: Path) -> None:
    proc = spawn()
    call(proc, "POST", "/api/v1/keys", {})
    proc.process.terminate()
    proc.process.wait(timeout=20)
    (tmp_path / "data" / "secret.key").write_text("a-different-secret-key-entirely\n")
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )
    assert result.returncode == 1
    assert "does not match" in result.stderr and "Traceback" not in result.stderr


def test_schema_newer_than_the_code_refuses_to_start(spawn, tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    proc = spawn()
    proc.process.terminate()
    proc.process.wait(timeout=20)
    db = sqlite3.connect(tmp_path / "data" / "gateway.db")
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    for command in ("serve", "migrate"):
        result = subprocess.run(
            [sys.executable, "-m", "gateway", command, "--config", str(tmp_path / "config.yaml")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert result.returncode == 1, command
        lines = result.stderr.strip().splitlines()
        assert lines == ["gateway: database: schema v99 is newer than this gateway's (v5)"], (command, lines)

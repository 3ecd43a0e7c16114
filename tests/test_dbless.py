"""DB-less mode (`database: file:///.../keys.yaml`, §7.4): a real gateway with 2 workers serving
keys from a file, which is replaced the way Kubernetes updates a mounted Secret."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.sealing import SecretBox
from tests.conftest import SECRET

WORKFLOW = "/api/v5/workflow/task/approve"
FIRST = "FirstSecretInTheFile0123456789ab"
SECOND = "SecondSecretInTheFile0123456789a"
SEALED_ID = "k_01m8v53gz9mm09g6htramgad78"
SEALED_SECRET = "SealedSecretFromExport0123456789"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Unused (the keys file is the store), but the in-process fixtures ask for one."""
    return f"sqlite:///{tmp_path}/unused.db"


def call(url: str, method: str, path: str, key: str | None = None, body: Any = None, token: str | None = None):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=json.dumps(body if body is not None else {}), headers=headers)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    return response.status, json.loads(raw) if raw else None


def statuses(proxy_url: str, key: str, times: int = 10) -> set[int]:
    """Each request on a new connection: with 2 workers sharing the port, both answer some."""
    return {call(proxy_url, "POST", WORKFLOW, key=key)[0] for _ in range(times)}


def keys_document(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"keys": list(entries)})


class SecretVolume:
    """A folder laid out as kubelet lays out a Secret volume: `keys.yaml -> ..data/keys.yaml`,
    `..data -> ..<version>`; an update writes a new version folder and renames a new `..data`
    link over the old one (one atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.version = 0
        (root / "keys.yaml").symlink_to("..data/keys.yaml")

    def publish(self, text: str) -> None:
        self.version += 1
        folder = self.root / f"..v{self.version}"
        folder.mkdir()
        (folder / "keys.yaml").write_text(text)
        (self.root / "..data_tmp").symlink_to(folder.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")

    @property
    def url(self) -> str:
        return f"file://{self.root / 'keys.yaml'}"


def converge(proxy_url: str, allowed: str, refused: str, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while True:
        if statuses(proxy_url, allowed) == {200} and statuses(proxy_url, refused) == {401}:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "the workers did not reload the keys file"
        time.sleep(0.02)


def test_two_workers_follow_a_secret_volume_and_refuse_writes(spawn, upstream_process, tmp_path: Path) -> None:
    box = SecretBox(SECRET)
    volume = SecretVolume(tmp_path / "secret")
    sealed = {
        "id": SEALED_ID,
        "name": "Exported",
        "account": "acme",
        "sealed": box.encrypt(SEALED_SECRET, SEALED_ID),
        "ip_whitelist": ["127.0.0.1"],
    }
    volume.publish(keys_document({"name": "First", "account": "acme", "key": FIRST}, sealed))
    env = {"GATEWAY_SECRET_KEY": SECRET, "GATEWAY_DATABASE": volume.url}
    proc = spawn(f"upstream: {{url: {upstream_process}}}\n", env=env, workers=2)
    assert statuses(proc.proxy_url, FIRST) == {200}
    assert statuses(proc.proxy_url, SEALED_SECRET) == {200}
    assert statuses(proc.proxy_url, SECOND) == {401}

    # a Kubernetes-style update: a new version folder, then one rename of the ..data link
    volume.publish(keys_document({"name": "Second", "account": "acme", "key": SECOND}, sealed))
    took = converge(proc.proxy_url, SECOND, FIRST)
    print(f"symlink swap seen by both workers in {took:.3f} s")
    assert took < 1.0

    # a plain atomic replacement of the file (write a temporary file, rename it over)
    temporary = tmp_path / ".plain.tmp"
    # (the gateway above watches the volume; this checks the same on the volume's target file)
    temporary.write_text(keys_document({"name": "First again", "account": "acme", "key": FIRST}, sealed))
    target = volume.root / f"..v{volume.version}" / "keys.yaml"
    os.replace(temporary, target)
    took = converge(proc.proxy_url, FIRST, SECOND)
    print(f"atomic rename seen by both workers in {took:.3f} s")
    assert took < 1.0

    # an invalid file keeps the last good keys, and the log says why
    volume.publish("keys:\n  - name: [broken\n")
    time.sleep(0.8)
    assert statuses(proc.proxy_url, FIRST) == {200}
    volume.publish(keys_document({"name": "Bad", "account": "acme", "key": SECOND, "ip_whitelist": ["1.2.3.999"]}))
    time.sleep(0.8)
    assert statuses(proc.proxy_url, FIRST) == {200} and statuses(proc.proxy_url, SECOND) == {401}
    log = (tmp_path / "gateway.out").read_text()
    assert "keys file not used, keeping the 2 keys loaded before" in log
    assert "not valid YAML at line" in log and "ip_whitelist[0]" in log

    # the admin API reads, and refuses every write with 409 read_only_store
    token = proc.token
    status, page = call(proc.admin_url, "GET", "/api/v1/keys", token=token)
    assert status == 200 and {item["name"] for item in page["items"]} == {"First again", "Exported"}
    status, revealed = call(proc.admin_url, "GET", f"/api/v1/keys/{SEALED_ID}/secret", token=token)
    assert status == 200 and revealed["key"] == SEALED_SECRET
    writes = [
        ("POST", "/api/v1/keys", {"name": "x"}),
        ("PATCH", f"/api/v1/keys/{SEALED_ID}", {"name": "x"}),
        ("DELETE", f"/api/v1/keys/{SEALED_ID}", None),
        ("POST", f"/api/v1/keys/{SEALED_ID}/rotate", None),
        ("POST", f"/api/v1/keys/{SEALED_ID}/copy", None),
        ("POST", "/api/v1/tokens", {"name": "t", "permissions": ["keys:read"]}),
    ]
    for method, path, body in writes:
        status, answer = call(proc.admin_url, method, path, body=body, token=token)
        assert status == 409, (method, path, answer)
        assert answer["error"]["code"] == "read_only_store" and answer["error"]["message"]
    assert statuses(proc.proxy_url, SEALED_SECRET) == {200}


def test_a_bad_keys_file_at_start_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text(keys_document({"name": "x", "key": "short"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_SECRET_KEY": SECRET, "GATEWAY_DATABASE": f"file://{tmp_path}/keys.yaml"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30
    )
    assert result.returncode == 1
    assert "keys[0]: key: not a secret the proxy accepts" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secret_key_in_the_config_file_opens_sealed_entries(spawn, upstream_process, tmp_path: Path) -> None:
    box = SecretBox(SECRET)
    entry = {"id": SEALED_ID, "name": "Exported", "sealed": box.encrypt(SEALED_SECRET, SEALED_ID)}
    (tmp_path / "keys.yaml").write_text(keys_document(entry))
    config = f"upstream: {{url: {upstream_process}}}\nsecret_key: {SECRET}\n"
    proc = spawn(config, env={"GATEWAY_DATABASE": f"file://{tmp_path}/keys.yaml"}, workers=2)
    assert statuses(proc.proxy_url, SEALED_SECRET) == {200}


async def test_usage_is_counted_in_memory(start_gateway, upstream, tmp_path: Path, monkeypatch) -> None:
    from tests.conftest import Proxy, make_config

    monkeypatch.setenv("GATEWAY_SECRET_KEY", SECRET)
    (tmp_path / "keys.yaml").write_text(keys_document({"name": "First", "key": FIRST}))
    database = f"file://{tmp_path}/keys.yaml"
    running = await start_gateway(make_config(tmp_path, database, upstream={"url": upstream.url}))
    port = running.gateway.proxy.port
    proxy = Proxy(running, upstream, f"http://127.0.0.1:{port}", port)
    for _ in range(3):
        assert (await proxy.json("POST", WORKFLOW, key=FIRST))[0] == 200
    await running.gateway.flush_usage()
    _, page = await running.admin.call("GET", "/api/v1/keys")
    (key,) = page["items"]
    assert key["request_count"] == 3 and key["last_used_at"] is not None
    from gateway.core.record import iso_time

    assert key["created_at"] == iso_time((tmp_path / "keys.yaml").stat().st_mtime)  # not the time of reading
    status, body = await running.admin.call("PATCH", f"/api/v1/keys/{key['id']}", {"name": "x"})
    assert (status, body["error"]["code"]) == (409, "read_only_store")


def test_the_config_takes_file_urls() -> None:
    from gateway.config import parse_config
    from gateway.core.errors import RuleError

    assert parse_config({"database": "file:///etc/gateway/keys.yaml"}, {}).database == "file:///etc/gateway/keys.yaml"
    for url, says in (("file:///", "file URL has no path"), ("file://keys.yaml", "file:///path/keys.yaml")):
        with pytest.raises(RuleError) as err:
            parse_config({"database": url}, {})
        assert says in str(err.value)


async def test_inotify_wakes_the_store_before_the_poll(tmp_path: Path) -> None:
    import asyncio

    from gateway.store.file import POLL_SECONDS, FileStore

    (tmp_path / "live").mkdir()
    (tmp_path / "staging").mkdir()
    path = tmp_path / "live" / "keys.yaml"
    path.write_text(keys_document({"name": "First", "key": FIRST}))
    store = FileStore(str(path), SecretBox(SECRET))
    await store.open()
    try:
        assert store._watch is not None  # Linux: the folder is watched
        assert await store.wait_for_change() == "none"
        (tmp_path / "staging" / "next.yaml").write_text(keys_document({"name": "Second", "key": SECOND}))

        async def replace_soon() -> None:
            await asyncio.sleep(0.01)
            os.replace(tmp_path / "staging" / "next.yaml", path)

        started = time.monotonic()
        replacing = asyncio.create_task(replace_soon())
        assert await store.wait_for_change() == "resync"
        took = time.monotonic() - started
        await replacing
        assert [key.name for key in await store.list_keys(None, None, 10)] == ["Second"]
        print(f"inotify: replacement read {took:.3f} s after the wait began (polling: up to {POLL_SECONDS} s)")
        assert took < POLL_SECONDS
    finally:
        await store.close()
    assert store._watch is None

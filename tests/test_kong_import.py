"""`gateway keys import --from kong` (§7.4): a realistic decK file and the same data as Kong Admin
API pages; the imported secrets then work through a real proxy."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.store.kong import read_kong
from tests.test_keyfiles import WORKFLOW, cli, config_for, proxy_on

ALICE_1 = "5f1d0a6c2b9e4e43a7d3f1b0c8e9a2d4"  # Kong's generated keys: 32 hex characters
ALICE_2 = "0b7c9e2f4a6d8b1c3e5f7a9b2c4d6e8f"
BOB = "BobsOwnChosenKey0123456789abcdef"  # chosen by hand, but of the accepted shape
CAROL = "carol-key"  # too short for the gateway's proxy

DECK = f"""
_format_version: "3.0"
_info:
  select_tags: [billing]
services:
  - name: billing
    url: http://billing.internal:8080
    plugins:
      - name: key-auth
        config: {{key_names: [apikey], key_in_query: false}}
    routes:
      - name: billing-api
        paths: [/billing]
plugins:
  - name: cors
    config: {{origins: ["*"]}}
  - name: rate-limiting
    consumer: bob
    config: {{second: 5, policy: local}}
consumers:
  - username: alice
    custom_id: "1001"
    tags: [team-a]
    keyauth_credentials:
      - id: 8d3b2f4e-1c4a-4f7e-9a51-0a2b3c4d5e6f
        key: {ALICE_1}
      - key: {ALICE_2}
        tags: [rotated]
    plugins:
      - name: ip-restriction
        config: {{allow: ["127.0.0.1", "10.0.0.0/8"], status: 403}}
      - name: rate-limiting
        config: {{minute: 100, hour: 1000, month: 100000, policy: redis}}
  - username: bob
    keyauth_credentials:
      - key: {BOB}
    basicauth_credentials:
      - {{username: bob, password: hunter2}}
    plugins:
      - name: acl
        config: {{allow: [admins]}}
  - username: carol
    keyauth_credentials:
      - key: {CAROL}
  - username: dave
    keyauth_credentials:
      - key: 1234567890abcdef1234567890abcdef
    plugins:
      - name: ip-restriction
        config: {{deny: ["192.168.0.0/16"]}}
  - username: erin from sales
    keyauth_credentials:
      - key: fedcba0987654321fedcba0987654321
"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/a.db"


def accounts(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "a.db") as db:
        return db.execute("SELECT account, ip_whitelist FROM keys ORDER BY account, name").fetchall()


async def test_a_deck_file_imports_and_its_keys_work(start_gateway, upstream, tmp_path: Path) -> None:
    (tmp_path / "kong.yaml").write_text(DECK)
    config = config_for(tmp_path, "a")
    dry = cli("import", "--from", "kong", "kong.yaml", "--config", config, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "3 to add, 0 to change, 0 to delete, 0 unchanged" in dry.stdout and "dry run" in dry.stdout
    assert accounts(tmp_path) == []

    done = cli("import", "--from", "kong", "kong.yaml", "--config", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    notes = done.stderr
    for expected in (
        "consumer carol: key-auth 0: the key is not one the gateway's proxy accepts",
        "consumer dave: ip-restriction deny",
        "consumer erin from sales: username 'erin from sales' is not an account name",
        "consumer bob: basicauth_credentials: not imported",
        "consumer bob: plugin acl: not mapped",
        "consumer alice: rate-limiting month: 100000",
        "consumer alice: rate-limiting counted per consumer in Kong; each of its 2 keys",
        "consumer alice: ip-restriction status: not kept",
        "plugin cors (plugins[0]): not consumer-scoped",
        "services: not imported",
        'key-auth: clients send their keys in apikey: set auth.header to it and auth.scheme: ""',
    ):
        assert expected in notes, (expected, notes)
    assert CAROL not in done.stdout + notes and ALICE_1 not in done.stdout + notes  # secrets never printed
    assert accounts(tmp_path) == [
        ("alice", '["127.0.0.1", "10.0.0.0/8"]'),
        ("alice", '["127.0.0.1", "10.0.0.0/8"]'),
        ("bob", "[]"),
    ]
    again = cli("import", "--from", "kong", "kong.yaml", "--config", config, cwd=tmp_path)
    assert again.stdout.strip().endswith("0 to add, 0 to change, 0 to delete, 3 unchanged")

    proxy = await proxy_on(start_gateway, upstream, tmp_path, f"sqlite:///{tmp_path}/a.db")
    for secret in (ALICE_1, ALICE_2, BOB):
        status, headers, _ = await proxy.request("POST", WORKFLOW, key=secret)
        assert status == 200, secret
    status, headers, _ = await proxy.request("POST", WORKFLOW, key=ALICE_1)
    assert headers["RateLimit-Limit"] == "100"  # the minute window is the tighter one now
    status, body = await proxy.json("POST", WORKFLOW, key=ALICE_1, source="127.0.0.3")
    assert (status, body["reason"]) == (403, "ip_not_allowed")
    _, bob_headers, _ = await proxy.request("POST", WORKFLOW, key=BOB)
    assert bob_headers["RateLimit-Limit"] == "5"  # the top-level plugin naming bob
    status, body = await proxy.json("POST", WORKFLOW, key="1234567890abcdef1234567890abcdef")
    assert (status, body["reason"]) == (401, "invalid_key")  # dave: left out, not opened up

    # as the note says: the header Kong's clients already send, with no scheme word
    kong_like = await proxy_on(
        start_gateway, upstream, tmp_path, f"sqlite:///{tmp_path}/a.db", auth={"header": "apikey", "scheme": ""}
    )
    status, _, _ = await kong_like.request("POST", WORKFLOW, headers={"apikey": ALICE_2})
    assert status == 200


def admin_api_pages() -> dict[str, Any]:
    """The same consumers as Kong's Admin API lists them: /consumers, /key-auths, /plugins."""
    consumers = [
        {"id": "c-alice", "username": "alice", "custom_id": "1001", "created_at": 1700000000, "tags": ["team-a"]},
        {"id": "c-bob", "username": "bob", "custom_id": None, "created_at": 1700000001, "tags": None},
    ]
    key_auths = [
        {
            "id": "8d3b2f4e-1c4a-4f7e-9a51-0a2b3c4d5e6f",
            "key": ALICE_1,
            "consumer": {"id": "c-alice"},
            "created_at": 1700000000,
            "ttl": None,
            "tags": None,
        },
        {"id": "k2", "key": ALICE_2, "consumer": {"id": "c-alice"}, "created_at": 1700000000, "ttl": None},
        {"id": "k3", "key": BOB, "consumer": {"id": "c-bob"}, "created_at": 1700000000, "ttl": 86400},
    ]
    plugins = [
        {
            "id": "p1",
            "name": "ip-restriction",
            "consumer": {"id": "c-alice"},
            "route": None,
            "service": None,
            "enabled": True,
            "config": {"allow": ["127.0.0.1", "10.0.0.0/8"], "deny": None, "status": None, "message": None},
        },
        {
            "id": "p2",
            "name": "rate-limiting",
            "consumer": {"id": "c-bob"},
            "enabled": True,
            "config": {"second": 5, "minute": None, "hour": None, "day": None, "month": None, "year": None},
        },
        {"id": "p3", "name": "cors", "consumer": None, "enabled": True, "config": {}},
    ]
    return {
        "consumers": {"data": consumers, "next": None},
        "key-auths": [{"data": key_auths[:2], "next": "/key-auths?offset=x"}, {"data": key_auths[2:], "next": None}],
        "plugins": {"data": plugins, "next": None},
    }


def test_admin_api_pages_map_like_the_deck_file() -> None:
    pages = admin_api_pages()
    combined = read_kong([pages])
    separate = read_kong([pages["consumers"], *pages["key-auths"], pages["plugins"]])
    assert combined.keys == separate.keys
    by_secret = {entry["key"]: entry for entry in combined.keys}
    assert set(by_secret) == {ALICE_1, ALICE_2, BOB}
    assert by_secret[ALICE_1]["account"] == "alice"
    assert by_secret[ALICE_1]["ip_whitelist"] == ["127.0.0.1", "10.0.0.0/8"]
    assert by_secret[BOB]["rate_limits"] == [{"requests": 5, "per": "second"}]
    assert by_secret[BOB]["expires_at"] == "2023-11-15T22:13:20.000Z"  # created_at + ttl
    assert "plugin cors (p3): not consumer-scoped: not imported" in combined.notes


def test_json_deck_and_bad_input(tmp_path: Path) -> None:
    document = yaml.safe_load(DECK)
    assert read_kong([document]).keys == read_kong([json.loads(json.dumps(document))]).keys
    (tmp_path / "junk.json").write_text(json.dumps({"data": [{"what": 1}]}))
    result = cli("import", "--from", "kong", "junk.json", "--config", config_for(tmp_path, "a"), cwd=tmp_path)
    assert result.returncode == 1 and "not a Kong export this reads" in result.stderr
    twice = {"consumers": [{"username": name, "keyauth_credentials": [{"key": ALICE_1}]} for name in ("x", "y")]}
    (tmp_path / "twice.yaml").write_text(yaml.safe_dump(twice))
    result = cli("import", "--from", "kong", "twice.yaml", "--config", config_for(tmp_path, "a"), cwd=tmp_path)
    assert result.returncode == 1 and "the same secret as keys[0] (keys[1] is Kong y)" in result.stderr


def test_import_to_a_keys_file_for_db_less_mode(tmp_path: Path) -> None:
    from gateway.core.sealing import SecretBox
    from gateway.store.keyfile import parse_keys
    from tests.conftest import SECRET

    (tmp_path / "kong.yaml").write_text(DECK)
    config = config_for(tmp_path, "a")
    result = cli("import", "--from", "kong", "kong.yaml", "--config", config, "--output", "keys.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "a.db").exists()  # no store touched
    text = (tmp_path / "keys.yaml").read_text()
    assert oct((tmp_path / "keys.yaml").stat().st_mode & 0o777) == "0o600"
    assert ALICE_1 not in text and BOB not in text  # sealed
    served = parse_keys(text.encode(), SecretBox(SECRET), need_secrets=True)
    assert {entry.secret for entry in served.entries} == {ALICE_1, ALICE_2, BOB}

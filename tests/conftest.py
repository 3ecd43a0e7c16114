"""Shared fixtures: a real gateway on real ports with a real SQLite file; and the lanes.

The lanes are assigned here, by test module, rather than in each file (see `FAST`):
- `fast`: pure code and tables (core, wire, config, routes, authorization, IP rules, the
  ambiguity rules, the shortcut differential's pure half, the docs) and the admin service on
  SQLite. `make test-fast` runs them (`pytest -m fast`); `make test` runs everything.
- The data path never touches the store, so modules about it run on SQLite only
  (`ONE_STORE`): their PostgreSQL twins are deselected. Every store and admin test keeps both.
- PostgreSQL is found or started by the first test that needs it (`shared_postgres`), never at
  import: the fast lane starts none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from inspect import signature
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.config import Config, parse_config
from gateway.core.record import Key
from gateway.runtime.gateway import Gateway
from tests.pgserver import postgres_url

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-key-0123456789abcdef"

# The lanes, by test module: a file's name without `.py`, or a prefix ending in `*`.
# Every test of these is `fast`: pure code and tables, milliseconds each.
FAST = {
    "test_accesslog",
    "test_ambiguous",
    "test_architecture",
    "test_authorize",
    "test_balancing",
    "test_config",
    "test_deploy",
    "test_docs",
    "test_iprules",
    "test_keyring",
    "test_ratelimit_arithmetic",
    "test_routes",
    "test_wire",
}
FAST_WITHOUT_FIXTURES = {"test_shape_differential"}  # the pure half: the rest drive a live gateway
FAST_ON_SQLITE = {"test_admin"}  # the admin service over HTTP, on SQLite (PostgreSQL: full suite)
# The data path reads the in-memory keyring and never the store: one store is enough for it.
ONE_STORE = {
    "test_adversarial",
    "test_exhaustion",
    "test_forward_auth",
    "test_proxy_decisions",
    "test_proxy_http",
    "test_ratelimit*",
    "test_request_properties",
    "test_shape_differential",
    "test_upstream_framing",
}


def _listed(module: str, names: set[str]) -> bool:
    return any(module == name or (name.endswith("*") and module.startswith(name[:-1])) for name in names)


def _is_fast(item: pytest.Item, database: str | None) -> bool:
    module = item.path.stem
    if database == "postgres":
        return False
    if _listed(module, FAST | FAST_ON_SQLITE):
        return True
    # asks for no fixture: its signature is empty (hypothesis hides what it draws; the autouse
    # fixtures of pytest-asyncio are no concern of the test)
    function = getattr(item, "function", None)
    return _listed(module, FAST_WITHOUT_FIXTURES) and function is not None and not signature(function).parameters


def pytest_configure(config: pytest.Config) -> None:
    """A renamed test file must not leave a lane silently: every name above names a file."""
    here = {path.stem for path in Path(__file__).parent.glob("test_*.py")}
    lanes = FAST | FAST_WITHOUT_FIXTURES | FAST_ON_SQLITE | ONE_STORE
    stale = sorted(name for name in lanes if not any(_listed(module, {name}) for module in here))
    if stale:
        raise pytest.UsageError(f"tests/conftest.py lists test modules that do not exist: {', '.join(stale)}")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m fast` does not import a module that holds no fast test: importing (and rewriting the
    asserts of) all of them costs seconds, and some find or start PostgreSQL at import."""
    if config.getoption("markexpr", "").strip() != "fast":
        return None
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if _listed(collection_path.stem, FAST | FAST_WITHOUT_FIXTURES | FAST_ON_SQLITE):
        return None
    return True


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the fast tests, and deselects the PostgreSQL twin of each data-path test."""
    kept: list[pytest.Item] = []
    twins: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        database = callspec.params.get("database_url") if callspec is not None else None
        if database == "postgres" and _listed(item.path.stem, ONE_STORE):
            twins.append(item)
            continue
        if _is_fast(item, database):
            item.add_marker(pytest.mark.fast)
        kept.append(item)
    if twins:
        config.hook.pytest_deselected(items=twins)
        items[:] = kept


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_key(**fields: Any) -> Key:
    """A key record for the pure-core tests: defaults for every field, overridden by `fields`."""
    base: dict[str, Any] = {
        "id": "k_1",
        "name": "n",
        "account": "acme",
        "key_masked": "x",
        "digest": "d",
        "enabled": True,
        "apps": None,
        "interfaces": None,
        "ip_whitelist": (),
        "created_at": "t",
        "updated_at": "t",
    }
    return Key(**(base | fields))


def __getattr__(name: str) -> str:
    """`from tests.conftest import POSTGRES`: the shared server's URL, looked for (or started)
    when a module imports it rather than when this one loads. The fast lane never imports such
    a module (see `pytest_ignore_collect`); tests written from now on take `shared_postgres`."""
    if name == "POSTGRES":
        return postgres_url()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@pytest.fixture(scope="session")
def shared_postgres() -> str:
    """The session's PostgreSQL (tests/pgserver.py): the machine's, or a throwaway server that
    the first test asking for it starts and the session's end removes."""
    return postgres_url()


def drop_schema(schema: str) -> None:
    import asyncpg  # only the PostgreSQL tests pay for it

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_url())
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test runs on both backends (but see `ONE_STORE`); on PostgreSQL in a schema of its
    own, dropped after. Only the PostgreSQL case asks for the server, so SQLite never waits on it.

    A plain (not async) fixture, so pytest tears it down strictly after the gateways using it.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    server = request.getfixturevalue("shared_postgres")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{server}?schema={schema}"
    drop_schema(schema)


def make_config(tmp_path: Path, database: str | None = None, **overrides: Any) -> Config:
    raw: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0, "token": "admin-token-for-tests"},
        "database": database or f"sqlite:///{tmp_path}/gateway.db",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(raw, {"GATEWAY_SECRET_KEY": SECRET})


class Admin:
    """A client of the admin API of a running gateway."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None, raw: bytes | None = None):
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as response:
            text = await response.text()
            data = None
            if text:
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = text
            return response.status, data

    async def create(self, **fields: Any) -> dict[str, Any]:
        status, body = await self.call("POST", "/api/v1/keys", fields)
        assert status == 201, body
        return body


@dataclasses.dataclass
class Running:
    gateway: Gateway
    admin: Admin
    config: Config


@pytest.fixture
async def start_gateway(tmp_path: Path, database_url: str) -> AsyncIterator[Any]:
    """Start in-process gateways on free ports; all are stopped at the end of the test."""
    started: list[Gateway] = []
    session = aiohttp.ClientSession()

    async def start(config: Config | None = None, **overrides: Any) -> Running:
        config = config or make_config(tmp_path, database_url, **overrides)
        gateway = Gateway(config)
        await gateway.start()
        started.append(gateway)
        url = f"http://127.0.0.1:{gateway.admin_port}"
        return Running(gateway, Admin(session, url, gateway.token), config)

    yield start
    for gateway in started:
        await gateway.stop()
    await session.close()


@pytest.fixture
async def gw(start_gateway: Any) -> Running:
    return await start_gateway()


@pytest.fixture
async def admin(gw: Running) -> Admin:
    return gw.admin


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@dataclasses.dataclass
class Process:
    process: subprocess.Popen
    admin_url: str
    proxy_url: str
    token: str


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Run `python -m gateway serve` as a real process in tmp_path."""
    processes: list[subprocess.Popen] = []

    def run(config_text: str = "", env: dict[str, str] | None = None, workers: int = 1) -> Process:
        admin_port, proxy_port = free_port(), free_port()
        config = tmp_path / "config.yaml"
        config.write_text(
            f"listen: {{host: 127.0.0.1, port: {proxy_port}}}\n"
            f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
            f"database: sqlite:///{tmp_path}/data/gateway.db\n"
            f"workers: {workers}\n" + config_text
        )
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        full_env.update(env or {})
        output = open(tmp_path / "gateway.out", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            cwd=tmp_path,
            env=full_env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        output.close()
        processes.append(process)
        wait_for_port(admin_port)
        token_file = tmp_path / "data" / "admin.token"
        token = full_env.get("GATEWAY_ADMIN_TOKEN") or token_file.read_text().strip()
        return Process(process, f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{proxy_port}", token)

    yield run
    for process in processes:  # SIGTERM first: a supervisor stops its workers on the way out
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclasses.dataclass
class Upstream:
    url: str
    port: int
    recorder: Any
    runner: Any


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    from aiohttp import web

    from tests.upstream import build_upstream

    app, recorder = build_upstream()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Upstream(f"http://127.0.0.1:{port}", port, recorder, runner)
    await runner.cleanup()


@dataclasses.dataclass
class Proxy:
    """A running gateway in front of the test upstream, with helpers to call it."""

    running: Running
    upstream: Upstream
    url: str
    port: int

    @property
    def admin(self) -> Admin:
        return self.running.admin

    async def request(
        self,
        method: str,
        path: str,
        key: str | None = None,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, dict[str, str], bytes]:
        connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        async with (
            aiohttp.ClientSession(connector=connector, auto_decompress=False) as session,
            session.request(method, URL(self.url + path, encoded=True), headers=all_headers, **kwargs) as response,
        ):
            body = await response.read()
            return response.status, dict(response.headers), body

    async def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, body = await self.request(method, path, **kwargs)
        import json

        return status, json.loads(body) if body else None


@pytest.fixture
async def start_proxy(start_gateway: Any, upstream: Upstream) -> Any:
    async def start(**overrides: Any) -> Proxy:
        overrides.setdefault("upstream", {})
        overrides["upstream"] = {"url": upstream.url, **overrides["upstream"]}
        running = await start_gateway(**overrides)
        port = running.gateway.proxy.port
        return Proxy(running, upstream, f"http://127.0.0.1:{port}", port)

    return start


@pytest.fixture
async def proxy(start_proxy: Any) -> Proxy:
    return await start_proxy()


@pytest.fixture
def upstream_process(tmp_path: Path) -> Iterator[str]:
    """The test upstream in its own process, for gateways that run as processes."""
    port = free_port()
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from aiohttp import web\n"
        "from tests.upstream import build_upstream\n"
        f"web.run_app(build_upstream()[0], host='127.0.0.1', port={port}, print=None)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def workflow_status(proxy_url: str, key: str) -> int:
    """The status of one workflow call with `key`, on a new connection (the kernel spreads new
    connections over the workers of a process)."""
    request = urllib.request.Request(proxy_url + "/api/v5/workflow/task/approve", method="POST", data=b"")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Any]:
    """An upstream recording the raw bytes of every request (tests/rawupstream.py)."""
    from tests.rawupstream import RawUpstream

    upstream = RawUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()

"""One gateway process: open the store, load the keyring, serve the admin and proxy ports."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.admin.api import UPSTREAMS, build_admin_app
from gateway.admin.openapi import document
from gateway.admin.service import KeyService
from gateway.config import Config
from gateway.core import sealing
from gateway.core.record import iso_time
from gateway.core.routes import RouteTable, compile_routes
from gateway.keyring.feed import KeyFeed
from gateway.keyring.index import Keyring, Usage
from gateway.observe.accesslog import AccessLog
from gateway.observe.metrics import Metrics, read_snapshots, render
from gateway.proxy.listener import ProxyServer
from gateway.store import SchemaTooNew, Store, StoreUnavailable, open_store

log = logging.getLogger("gateway")
USAGE_FLUSH_SECONDS = 5.0


class StartupError(Exception):
    """The gateway cannot start; str() is the one line an operator sees."""


def read_or_create(path: Path, what: str) -> tuple[str, bool]:
    """Read a generated secret file, or create it 0600. Returns (value, created)."""
    if path.is_file():
        value = path.read_text().strip()
        if value:
            return value, False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = sealing.generate_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    log.info("generated %s in %s", what, path)
    return value, True


def admin_token(config: Config) -> tuple[str, Path | None]:
    if config.admin.token:
        return config.admin.token, None
    path = config.data_dir / "admin.token"
    token, created = read_or_create(path, "admin token")
    if created:
        print(f"admin token written to {path} (mode 0600); keep it safe", flush=True)
    return token, path


def secret_key(config: Config) -> str:
    if config.secret_key:  # its length was checked with the config
        return config.secret_key
    path = config.data_dir / "secret.key"
    value, created = read_or_create(path, "secret key")
    if created:
        print(f"secret key written to {path} (mode 0600); back it up: losing it invalidates every key", flush=True)
    return value


def raise_open_file_limit() -> None:
    """Each client connection is a descriptor: the soft limit (often 1024) would lock every
    client and the admin port out at about a thousand idle connections; the hard one is ours."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, err)


def upstreams_summary(config: Config) -> str:
    """The start line's account of the upstreams: the one URL, or each upstream's targets."""
    groups = config.upstream_groups
    if len(groups) == 1 and len(groups[0][1].targets) == 1:
        return groups[0][1].targets[0].url
    return "; ".join(f"{name}: {', '.join(target.url for target in group.targets)}" for name, group in groups)


class Gateway:
    """Owns the store, keyring and servers of one process."""

    def __init__(self, config: Config, *, admin: bool = True, reuse_port: bool = False, worker: int = 0) -> None:
        raise_open_file_limit()  # before the proxy sizes its connection budget from it
        self.config = config
        self.worker = worker
        self.metrics = Metrics(worker)
        self.access = AccessLog(config.log.access)
        self.serve_admin = admin
        self.reuse_port = reuse_port
        self.routes: RouteTable = compile_routes(config.routes)
        self.store: Store = open_store(config.database)
        self.box = sealing.SecretBox(secret_key(config))
        self.keyring = Keyring(self.box.raw_digest)
        self.usage = Usage()
        self.feed = KeyFeed(self.store, self.keyring)
        self.service = KeyService(
            self.store, self.feed, self.box, config.limits, self.usage, self.routes.accepts, config.keys.prefix
        )
        self.token, self.token_path = admin_token(config)
        self._runner: web.AppRunner | None = None
        self._usage_failing = False
        self._tasks: list[asyncio.Task] = []
        self.admin_port = config.admin.port
        self.proxy = ProxyServer(config, self.keyring, self.routes, self.usage, self.metrics, self.access)
        self.checks: ProxyServer | None = None  # the forward-authorization port, when configured
        if config.forward_auth is not None:
            parts = (config, self.keyring, self.routes, self.usage, self.metrics, self.access)
            self.checks = ProxyServer(*parts, checks_for=self.proxy)
        self.metrics_dir = config.data_dir / "metrics"

    async def start(self) -> None:
        try:
            await self.store.open()
        except (StoreUnavailable, SchemaTooNew) as err:
            raise StartupError(f"database: {err}") from None
        if not await self.store.check_secret(self.box.digest(b"gateway secret fingerprint")):
            raise StartupError(
                "secret key: it does not match the one this database was created with; "
                "set GATEWAY_SECRET_KEY to the original"
            )
        await self.feed.load()
        if self.serve_admin:
            await self._bind("admin", self._start_admin())
        await self._bind("listen", self.proxy.start(reuse_port=self.reuse_port))
        self.proxy.shared.checks.start()  # active health checks of the upstreams that ask for them
        if self.checks is not None:
            await self._bind("forward_auth.listen", self.checks.start(reuse_port=self.reuse_port), self.checks.listen)
        self.access.start()
        self._tasks.append(asyncio.create_task(self._flush_usage_forever()))
        if self.reuse_port and self.worker != 0:
            self._tasks.append(asyncio.create_task(self._share_metrics()))
        self._tasks.append(asyncio.create_task(self._watch_changes()))
        log.info(
            "proxy on %s:%d -> %s; admin API on http://%s:%d (%d keys loaded)",
            self.config.listen.host,
            self.proxy.port,
            upstreams_summary(self.config),
            self.config.admin.host,
            self.admin_port,
            len(self.keyring),
        )

    async def _bind(self, section: str, starting: Awaitable[None], where: Any = None) -> None:
        """Open a listening port; a port in use or an address we cannot bind names its config field."""
        where = where or getattr(self.config, section)
        try:
            await starting
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StartupError(f"{section}.port: {where.host}:{where.port} is already in use") from None
            raise StartupError(f"{section}.host: cannot listen on {where.host}:{where.port}: {err.strerror}") from None

    async def _start_admin(self) -> None:
        app = build_admin_app(
            self.service, self.routes, self.token, self.config.admin.max_body, self.render_metrics, document()
        )
        app[UPSTREAMS] = self.proxy.shared.upstream_status
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.admin.host, self.config.admin.port)
        await site.start()
        server = site._server
        if isinstance(server, asyncio.Server) and server.sockets:  # port 0: report the real one
            self.admin_port = server.sockets[0].getsockname()[1]

    def _read_gauges(self) -> None:
        """Copy the gauges kept elsewhere into this worker's metrics, just before they are read."""
        self.metrics.keyring_size = len(self.keyring)
        self.metrics.access_log_dropped = self.access.dropped

    async def render_metrics(self) -> bytes:
        self._read_gauges()
        try:
            per_account = await self.store.count_keys()
        except Exception:
            self.metrics.store_errors += 1
            per_account = {}
        snapshots = read_snapshots(self.metrics_dir, self.metrics) if self.reuse_port else [self.metrics.snapshot()]
        return render(snapshots, per_account)

    async def _share_metrics(self) -> None:
        """Workers other than 0: publish this worker's numbers for worker 0's /metrics."""
        while True:
            await asyncio.sleep(1.0)
            self._read_gauges()
            try:
                self.metrics.write_snapshot(self.metrics_dir)
            except OSError:
                log.warning("could not write the metrics snapshot", exc_info=True)

    async def flush_usage(self) -> None:
        batch = self.usage.take()
        if not batch:
            return
        try:
            await self.store.record_usage({k: (iso_time(at), n) for k, (at, n) in batch.items()})
            self._usage_failing = False
        except Exception as err:
            self.usage.restore(batch)
            self.metrics.store_errors += 1
            if not self._usage_failing:  # once per outage
                log.warning("could not record key usage (%s); keeping it in memory and retrying", err)
            self._usage_failing = True

    async def _flush_usage_forever(self) -> None:
        while True:
            await asyncio.sleep(USAGE_FLUSH_SECONDS)
            await self.flush_usage()

    async def _watch_changes(self) -> None:
        """Apply other processes' admin writes as the store reports them (the feed); the
        metrics and the outage message stay here, since keyring/ imports core only."""
        failing = False
        while True:
            try:
                changes = await self.feed.follow()
                if changes is not None and changes.newest_at:
                    self.metrics.propagation_lag = max(0.0, time.time() - changes.newest_at)
                failing = False
            except Exception as err:
                self.metrics.store_errors += 1
                if not failing:  # say it once per outage, not every poll
                    log.warning("cannot read changes from the store: %s; serving from memory", err)
                failing = True
                await asyncio.sleep(1.0)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop accepting, let in-flight requests finish for up to `grace` seconds, flush usage."""
        if self.checks is not None:
            await self.checks.stop(grace)
        await self.proxy.stop(grace)
        await self.proxy.shared.checks.stop()
        self.proxy.shared.close_upstreams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        await self.access.stop()
        await self.flush_usage()
        await self.store.close()


async def serve(config: Config, worker: int = 0) -> None:
    """Run one process until SIGTERM/SIGINT. With several workers, worker 0 also serves admin."""
    several = config.worker_count > 1
    gateway = Gateway(config, admin=worker == 0, reuse_port=several, worker=worker)
    try:
        await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if worker == 0:
        token_hint = f"token in {gateway.token_path}" if gateway.token_path else "token from config/environment"
        workers = f", {config.worker_count} workers" if several else ""
        print(
            f"gateway ready: proxy on port {gateway.proxy.port}{workers},"
            f" admin http://{config.admin.host}:{gateway.admin_port} ({token_hint})",
            flush=True,
        )
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %.0f s)", config.shutdown_timeout)
    await gateway.stop(config.shutdown_timeout)

"""The proxy port: one `ProxyServer` per process holds what every connection shares (the
keyring, the route table, the upstream pool, metrics) and sweeps timeouts four times a second.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.config import Config
from gateway.core.decision import KeySnapshot
from gateway.core.routes import RouteTable
from gateway.keyring.index import Keyring, Usage
from gateway.observe.accesslog import AccessLog, clip
from gateway.observe.metrics import Metrics
from gateway.proxy.connection import ClientConnection
from gateway.proxy.upstream import UpstreamPool
from gateway.wire.forwarded import TrustedProxies
from gateway.wire.request import HeadRules

log = logging.getLogger("gateway.proxy")


class ProxyServer:
    """Shared state of the data path in one process."""

    def __init__(
        self,
        config: Config,
        keyring: Keyring,
        routes: RouteTable,
        usage: Usage,
        metrics: Metrics,
        access: AccessLog,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.access = access
        self.draining = False
        self._upstream_logged = -1e9
        self._upstream_failures = 0
        self.keyring = keyring
        self.routes = routes
        self.usage = usage
        self.pool = UpstreamPool(config.upstream)
        self.trusted = TrustedProxies(config.trusted_proxies)
        self.head_rules = HeadRules(
            config.auth.header,
            config.auth.scheme,
            config.plugins.header,
            strip_auth=config.auth.strip,
            preserve_host=config.upstream.preserve_host,
            upstream_host=self.pool.host_header,
            scheme=b"https" if config.listen.tls else b"http",
        )
        self.unknown_allowed = config.routes.unknown == "allow"
        self.max_inspect = config.routes.max_body_inspect
        self.limits = config.limits
        self.connections: set[ClientConnection] = set()
        self.now = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._ticker: asyncio.Task | None = None
        self.port = config.listen.port

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.now = loop.time()
        ssl_context = None
        if self.config.listen.tls is not None:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.config.listen.tls.cert, self.config.listen.tls.key)
        self._server = await loop.create_server(
            lambda: ClientConnection(self),
            self.config.listen.host,
            self.config.listen.port,
            backlog=self.config.listen.backlog,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        """Coarse clock and timeouts: one sweep over the connections every 250 ms."""
        loop = asyncio.get_running_loop()
        while True:
            self.now = loop.time()
            for conn in list(self.connections):
                conn.check_timeouts(self.now)
            await asyncio.sleep(0.25)

    def record(
        self,
        status: int,
        reason: str,
        client: str,
        key: KeySnapshot | None = None,
        interface: str | None = None,
        app: str | None = None,
        latency: float = 0.0,
        size: int = 0,
    ) -> None:
        """Count one outcome, and queue its access-log line (the key's id, never the key)."""
        self.metrics.count(reason, status)
        if self.access.enabled:
            account = key.account if key is not None else None
            key_id = key.id if key is not None else None
            entry = (time.time(), client, key_id, account, clip(interface), clip(app), reason, status, latency, size)
            self.access.record(entry)

    def upstream_failed(self, err: OSError) -> None:
        """Log an upstream outage once per 10 s, with how many connects failed meanwhile."""
        self._upstream_failures += 1
        now = time.monotonic()
        if now - self._upstream_logged >= 10.0:
            log.warning(
                "upstream %s unavailable: %s (%d failed connects)",
                self.config.upstream.url,
                err.strerror or err,
                self._upstream_failures,
            )
            self._upstream_logged = now
            self._upstream_failures = 0

    async def stop(self, timeout: float = 0.0) -> None:
        """Stop accepting, let in-flight exchanges finish (up to `timeout`), then close.

        Idle keep-alive connections close at once; busy ones close after their answer.
        """
        if self._server is not None:
            self._server.close()
        self.draining = True
        for conn in list(self.connections):
            if conn.current is None and not conn.in_head:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.current is not None for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self._ticker is not None:
            self._ticker.cancel()
        self.pool.close()

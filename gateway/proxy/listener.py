"""The proxy port (and the forward-authorization port, which decides the same way and never
forwards): accept connections, sweep timeouts four times a second, drain on stop."""

from __future__ import annotations

import asyncio
import ssl

from gateway.config import Config, Listen
from gateway.core.routes import RouteTable
from gateway.keyring.index import Keyring, Usage
from gateway.observe.accesslog import AccessLog
from gateway.observe.metrics import Metrics
from gateway.proxy.connection import ClientConnection
from gateway.proxy.seams import Swept
from gateway.proxy.shared import DataPath
from gateway.proxy.upstream import UpstreamPool


class ProxyServer:
    """The listening socket and the timeout sweep, over the process's `DataPath`."""

    def __init__(
        self,
        config: Config,
        keyring: Keyring,
        routes: RouteTable,
        usage: Usage,
        metrics: Metrics,
        access: AccessLog,
        checks_for: ProxyServer | None = None,
    ) -> None:
        """`checks_for`: this is the forward-authorization port of that proxy port (its
        rate-limit counters are shared)."""
        self.config = config
        limiter = checks_for.shared.limiter if checks_for is not None else None
        self.shared: DataPath = DataPath(
            config, keyring, routes, usage, metrics, access, limiter, checks_for is not None
        )
        self.listen = config.listen
        self.tls = config.listen.tls
        if checks_for is not None:
            assert config.forward_auth is not None
            self.listen = Listen(config.forward_auth.listen.host, config.forward_auth.listen.port)
            self.tls = None
        self.port = self.listen.port
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    # what the rest of the process (and the tests) look at
    @property
    def connections(self) -> set[Swept]:
        return self.shared.connections

    @property
    def pool(self) -> UpstreamPool:
        return self.shared.pool

    @property
    def routes(self) -> RouteTable:
        return self.shared.routes

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        shared = self.shared
        shared.now = loop.time()
        ssl_context = None
        if self.tls is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.tls.cert, self.tls.key)
        self._server = await loop.create_server(
            lambda: ClientConnection(shared),
            self.listen.host,
            self.listen.port,
            backlog=self.listen.backlog,
            ssl=ssl_context,
            reuse_port=reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        """Coarse clock and timeouts: one sweep over the connections every 250 ms."""
        loop = asyncio.get_running_loop()
        shared = self.shared
        while True:
            shared.now = loop.time()
            for conn in list(shared.connections):
                conn.check_timeouts(shared.now)
            await asyncio.sleep(0.25)

    async def stop(self, timeout: float = 0.0) -> None:
        """Stop accepting, let in-flight exchanges finish (up to `timeout`), then close.

        Idle keep-alive connections close at once; busy ones close after their answer.
        """
        if self._server is not None:
            self._server.close()
        shared = self.shared
        shared.draining = True
        for conn in list(shared.connections):
            if not conn.busy:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.busy for c in shared.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(shared.connections):
            conn.close()
        if self._ticker is not None:
            self._ticker.cancel()
        shared.pool.close()
        if not shared.decide_only:  # (the proxy port's own: it closes it)
            await shared.limiter.close()

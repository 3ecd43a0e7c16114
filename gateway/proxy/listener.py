"""The proxy port: accept connections, sweep timeouts four times a second, drain on stop."""

from __future__ import annotations

import asyncio

from gateway.proxy.connection import ClientConnection
from gateway.proxy.shared import Shared


class ProxyServer(Shared):
    """The shared state plus the listening socket and the timeout sweep."""

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
        await self.limiter.close()

"""What every connection of the data path in one process shares: the keyring, the route
table, the upstream pool, the rules for reading heads, metrics and the access log, and a
coarse clock. The listener (`ProxyServer`) holds one, beside its socket and timer; exchanges
and relays see it only through the Protocols of `proxy.seams` (it satisfies both).
"""

from __future__ import annotations

import logging
import resource
import time

from gateway.config import Config
from gateway.core.decision import KeySnapshot
from gateway.core.routes import RouteTable
from gateway.keyring.index import Keyring, Usage
from gateway.keyring.limits import LocalLimiter, RedisLimiter, open_limiter
from gateway.observe.accesslog import AccessLog, clip
from gateway.observe.metrics import Metrics
from gateway.proxy.outbox import Outbox
from gateway.proxy.seams import Swept
from gateway.proxy.upstream import UpstreamPool
from gateway.wire.ambiguous import canonical
from gateway.wire.forwarded import TrustedProxies
from gateway.wire.request import HeadRules

log = logging.getLogger("gateway.proxy")
RESERVED_FILES = 256  # descriptors kept for the admin port, upstream connections, the store and logs


def connection_budget() -> int:
    """How many client connections the open-file limit leaves room for (the process raises
    its soft limit to the hard one at start: see runtime)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(soft - RESERVED_FILES, soft // 2)


class DataPath:
    """The data path's state in one process; client connections hold it as `server`."""

    def __init__(
        self,
        config: Config,
        keyring: Keyring,
        routes: RouteTable,
        usage: Usage,
        metrics: Metrics,
        access: AccessLog,
        limiter: LocalLimiter | RedisLimiter | None = None,
        decide_only: bool = False,
    ) -> None:
        """`decide_only`: the forward-authorization port (answers 200 where the proxy port
        would forward); it shares the proxy port's `limiter`, so both count one budget."""
        self.config = config
        self.decide_only = decide_only
        self.metrics = metrics
        self.access = access
        self.draining = False
        self._upstream_logged = -1e9
        self._upstream_failures = 0
        self.keyring = keyring
        self.routes = routes
        self.usage = usage
        self.outbox = Outbox()  # every write of the data path leaves through it
        self.pool = UpstreamPool(config.upstream, self.outbox, config.limits.max_upstream_head)
        asking = config.forward_auth.trusted if decide_only and config.forward_auth is not None else ()
        self.askers = TrustedProxies(asking)  # peers whose checks name the request they ask about
        self.trusted = TrustedProxies((*config.trusted_proxies, *asking))
        self.head_rules = HeadRules(
            config.auth.header,
            config.auth.scheme,
            config.plugins.header,
            strip_auth=config.auth.strip,
            preserve_host=config.upstream.preserve_host,
            upstream_host=self.pool.host_header,
            scheme=b"https" if config.listen.tls else b"http",
            app_headers=frozenset(canonical(key.lower().encode()) for key in routes.app_keys),
        )
        rates = config.rate_limits
        if limiter is None:
            limiter = open_limiter(rates.backend, rates.account_limits(), rates.key_defaults())
        self.limiter = limiter
        self.limits_fail_open = rates.on_backend_error == "allow"
        self.unknown_allowed = config.routes.unknown == "allow"
        self.max_inspect = config.routes.max_body_inspect
        self.limits = config.limits
        self.auth_scheme = config.auth.scheme
        self.relays = self  # what a relay is handed (seams.RelayServices)
        self.clock = self  # `now`, the coarse clock
        self.connections: set[Swept] = set()  # every open client connection
        self.per_ip: dict[str, int] = {}  # open connections by peer address
        self.refused_connections = 0
        self._limit_logged = -1e9
        self.max_connections = min(config.limits.max_connections, connection_budget())
        self.now = 0.0

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

    def admit_connection(self, peer: str) -> bool:
        """Count a new client connection, unless it would pass a connection limit."""
        count = self.per_ip.get(peer, 0)
        if len(self.connections) >= self.max_connections or count >= self.limits.max_connections_per_ip:
            self.refused_connections += 1
            now = time.monotonic()
            if now - self._limit_logged >= 10.0:
                self._limit_logged = now
                log.warning(
                    "connection limit reached (%d open, %d from %s): closing new connections (%d so far)",
                    len(self.connections),
                    count,
                    peer,
                    self.refused_connections,
                )
            return False
        self.per_ip[peer] = count + 1
        return True

    def release_connection(self, peer: str) -> None:
        count = self.per_ip.get(peer, 0) - 1
        if count > 0:
            self.per_ip[peer] = count
        else:
            self.per_ip.pop(peer, None)

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

"""What every connection of the data path in one process shares: the keyring, the route
table, the upstreams (proxy.balance), the rules for reading heads, metrics and the access log, and a
coarse clock. The listener (`ProxyServer`) holds one, beside its socket and timer; exchanges
and relays see it only through the Protocols of `proxy.seams` (it satisfies both).
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from typing import Any

from gateway.config import Config
from gateway.core.decision import KeySnapshot
from gateway.core.routes import RouteTable, compile_routes
from gateway.keyring.index import Keyring, Usage
from gateway.keyring.limits import LocalLimiter, RedisLimiter, open_limiter
from gateway.observe.accesslog import AccessLog, clip
from gateway.observe.metrics import Metrics
from gateway.proxy.balance import Balancer, Target, build_upstreams
from gateway.proxy.outbox import Outbox
from gateway.proxy.seams import Swept
from gateway.wire.ambiguous import canonical
from gateway.wire.forwarded import TrustedProxies
from gateway.wire.request import HeadRules, RequestHead

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

    # slots: more than 30 instance attributes would cost every read its specialised lookup
    __slots__ = (
        "_limit_logged",
        "access",
        "askers",
        "auth_scheme",
        "checks",
        "chooser",
        "clock",
        "config",
        "connections",
        "decide_only",
        "default",
        "draining",
        "head_rules",
        "keyring",
        "limiter",
        "limits",
        "limits_fail_open",
        "max_connections",
        "max_inspect",
        "metrics",
        "now",
        "outbox",
        "per_ip",
        "pool",
        "refused_connections",
        "relays",
        "routes",
        "single",
        "trusted",
        "unknown_allowed",
        "upstreams",
        "usage",
    )

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
        self.keyring = keyring
        self.routes = routes
        self.usage = usage
        self.outbox = Outbox()  # every write of the data path leaves through it
        asking = config.forward_auth.trusted if decide_only and config.forward_auth is not None else ()
        self.askers = TrustedProxies(asking)  # peers whose checks name the request they ask about
        self.trusted = TrustedProxies((*config.trusted_proxies, *asking))
        self.head_rules = HeadRules(
            config.auth.header,
            config.auth.scheme,
            config.plugins.header,
            strip_auth=config.auth.strip,
            preserve_host=config.upstream.preserve_host,
            scheme=b"https" if config.listen.tls else b"http",
            app_headers=frozenset(canonical(key.lower().encode()) for key in routes.app_keys),
        )
        # the upstreams; each target writes heads with a copy of head_rules naming its Host
        self.upstreams, self.checks = build_upstreams(config, self.outbox, self.head_rules, self)
        self.default = self.upstreams["default"]
        self.pool: Target = self.default.targets[0]  # the default's first target (tests and bench look in it)
        self.chooser = upstream_chooser(config, self.upstreams)
        # the relay's shortcut: one upstream of one target, no rule choosing (one request, one target)
        self.single: Target | None = self.pool if self.chooser is None and len(self.default.targets) == 1 else None
        if not decide_only:
            metrics.upstream_counters = self.upstream_counters
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

    def upstream_for(self, head: RequestHead) -> Balancer:
        """The upstream a request goes to: its rule's `upstream`, else "default"."""
        chooser = self.chooser
        if chooser is None:  # no rule names an upstream
            return self.default
        table, marks = chooser
        match = table.match(head.method.decode("latin-1"), head.path.decode("latin-1"))
        if match is None or match.app_key is None:
            return self.default
        return marks.get(match.app_key, self.default)

    def upstream_status(self) -> list[dict[str, Any]]:
        """GET /api/v1/upstreams: every upstream and its targets, as this process sees them."""
        return [balancer.status() for balancer in self.upstreams.values()]

    def upstream_counters(self) -> list[list[object]]:
        return [target.counters() for balancer in self.upstreams.values() for target in balancer.targets]

    def close_upstreams(self) -> None:
        """Close every target's idle connections (the listener closes the default's first)."""
        for balancer in self.upstreams.values():
            for target in balancer.targets:
                target.close()


def upstream_chooser(config: Config, upstreams: dict[str, Balancer]) -> tuple[RouteTable, dict[str, Balancer]] | None:
    """Which upstream each route goes to, when a rule names one: a second route table with the
    same rules (so the same rule wins for every request), each rule's app id replaced by a
    mark naming its upstream (`header.x-upstream-<n>`; a route table keeps a rule's app key)."""
    named = [rule.upstream for rule in config.routes.rules if rule.upstream not in (None, "default")]
    if not named:
        return None
    names = list(dict.fromkeys(name for name in named if name is not None))
    marks = {f"x-upstream-{i}": upstreams[name] for i, name in enumerate(names)}
    rules = tuple(
        dataclasses.replace(
            rule,
            app_id=None if rule.upstream in (None, "default") else f"header.x-upstream-{names.index(rule.upstream)}",
        )
        for rule in config.routes.rules
    )
    return compile_routes(dataclasses.replace(config.routes, rules=rules)), marks

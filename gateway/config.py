"""Configuration: YAML file -> frozen dataclasses.

Every value may be written `${VAR}` or `${VAR:-default}`; the GATEWAY_* environment variables
override the file. Every error names the field, so `gateway` can exit with one clear line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

import yaml

from gateway.core import databases
from gateway.core.errors import RuleError
from gateway.core.ratelimit import Limit, parse_limits
from gateway.core.routes import Routes, compile_routes


@dataclass(frozen=True)
class Tls:
    cert: str
    key: str


@dataclass(frozen=True)
class Listen:
    host: str = "0.0.0.0"
    port: int = 8080
    tls: Tls | None = None
    backlog: int = 1024


@dataclass(frozen=True)
class Admin:
    host: str = "127.0.0.1"
    port: int = 8081
    token: str = ""
    max_body: int = 1048576


@dataclass(frozen=True)
class Upstream:
    url: str = "http://127.0.0.1:9000"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    preserve_host: bool = False
    verify_tls: bool = True
    max_idle_connections: int = 64


@dataclass(frozen=True)
class Target:
    """One server of a named upstream."""

    url: str
    weight: int = 1


@dataclass(frozen=True)
class Passive:
    """Ejection after consecutive failures (connect refused or timed out, closed before an
    answer, read timeout): `eject_for` seconds, doubling while it keeps failing, at most 300."""

    failures: int = 3
    eject_for: float = 10.0


@dataclass(frozen=True)
class Active:
    """Probes: `GET path` every `interval` seconds; `unhealthy` failures in a row take the
    target out, `healthy` successes (2xx or 3xx within `timeout`) bring it back."""

    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 2.0
    healthy: int = 2
    unhealthy: int = 3


@dataclass(frozen=True)
class Health:
    passive: Passive = field(default_factory=Passive)
    active: Active | None = None  # off unless set


@dataclass(frozen=True)
class UpstreamGroup:
    """One named upstream of `upstreams:`: weighted targets, how to choose, how to fail over."""

    targets: tuple[Target, ...] = ()
    balance: str = "round_robin"  # or least_requests
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retries: int = 2  # other targets tried when nothing of the request was sent (see docs/upstreams.md)
    verify_tls: bool = True
    host: str = ""  # the Host every target gets; "": each target's own host[:port]
    preserve_host: bool = False
    max_idle_connections: int = 64  # per target
    health: Health = field(default_factory=Health)


BALANCES = ("round_robin", "least_requests")
UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EJECTION = 300.0


@dataclass(frozen=True)
class Auth:
    header: str = "Authorization"
    scheme: str = "Bearer"
    strip: bool = True


@dataclass(frozen=True)
class Plugins:
    header: str = "X-Plugin-Id"


@dataclass(frozen=True)
class Limits:
    keys_per_account: int = 500
    ips_per_key: int = 50
    max_header_bytes: int = 65536
    max_headers: int = 100
    idle_timeout: float = 75.0
    header_timeout: float = 15.0  # from the first byte of a head (blank lines before it included)
    body_timeout: float = 30.0  # for the whole of a body read for its app id
    max_upstream_head: int = 65536  # bytes of an upstream's response head; more is 502
    max_connections: int = 10000  # open connections on the proxy port
    max_connections_per_ip: int = 1000  # open connections from one client address


@dataclass(frozen=True)
class RateRule:
    requests: int
    per: str


@dataclass(frozen=True)
class RateLimits:
    backend: str = "local"  # or redis://host:6379/0: one budget for every worker and replica
    per_account: tuple[RateRule, ...] = ()
    default_per_key: tuple[RateRule, ...] = ()  # for keys that set no rate_limits of their own
    on_backend_error: str = "allow"  # or deny, while the shared backend is unreachable

    def account_limits(self) -> tuple[Limit, ...]:
        return parse_limits([dataclasses.asdict(rule) for rule in self.per_account], "rate_limits.per_account")

    def key_defaults(self) -> tuple[Limit, ...]:
        return parse_limits([dataclasses.asdict(rule) for rule in self.default_per_key], "rate_limits.default_per_key")


@dataclass(frozen=True)
class AuthListen:
    host: str = "127.0.0.1"
    port: int = 8082


@dataclass(frozen=True)
class ForwardAuth:
    """The forward-authorization port: decides like the proxy port and never forwards."""

    listen: AuthListen = field(default_factory=AuthListen)
    trusted: tuple[str, ...] = ("127.0.0.1/32",)  # peers whose X-Original-*/X-Forwarded-* name the request


@dataclass(frozen=True)
class Keys:
    prefix: str = ""  # new secrets start with it (e.g. "gk_"), so secret scanners can spot them


@dataclass(frozen=True)
class Log:
    access: bool = True


@dataclass(frozen=True)
class Config:
    listen: Listen = field(default_factory=Listen)
    admin: Admin = field(default_factory=Admin)
    upstream: Upstream = field(default_factory=Upstream)
    database: str = "sqlite:///./data/gateway.db"
    auth: Auth = field(default_factory=Auth)
    trusted_proxies: tuple[str, ...] = ()
    plugins: Plugins = field(default_factory=Plugins)
    limits: Limits = field(default_factory=Limits)
    routes: Routes = field(default_factory=Routes)
    workers: str = "1"
    log: Log = field(default_factory=Log)
    keys: Keys = field(default_factory=Keys)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    forward_auth: ForwardAuth | None = None  # off unless set
    shutdown_timeout: float = 30.0
    secret_key: str = ""
    # named upstreams, in the file's order: (name, upstream); `upstream:` is "default" unless named here
    upstreams: tuple[tuple[str, UpstreamGroup], ...] = ()

    @property
    def upstream_groups(self) -> tuple[tuple[str, UpstreamGroup], ...]:
        """Every upstream, "default" first: the named one, or the one `upstream:` describes."""
        named = dict(self.upstreams)
        default = named.pop("default", None)
        if default is None:
            one = self.upstream
            default = UpstreamGroup(
                targets=(Target(one.url),),
                connect_timeout=one.connect_timeout,
                read_timeout=one.read_timeout,
                retries=0,
                verify_tls=one.verify_tls,
                preserve_host=one.preserve_host,
                max_idle_connections=one.max_idle_connections,
            )
        return (("default", default), *named.items())

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        return int(self.workers)

    @property
    def sqlite_path(self) -> Path | None:
        if not self.database.startswith("sqlite:///"):
            return None
        return Path(self.database[len("sqlite:///") :])

    @property
    def data_dir(self) -> Path:
        """Where generated files (admin token, secret key) live: next to the database."""
        path = self.sqlite_path
        return path.parent if path is not None else Path("data")


# Docker and Kubernetes secrets: the value is the file's content (one trailing newline ignored)
FILE_OVERRIDES = {"GATEWAY_ADMIN_TOKEN_FILE": "GATEWAY_ADMIN_TOKEN", "GATEWAY_SECRET_KEY_FILE": "GATEWAY_SECRET_KEY"}
MIN_SECRET_KEY = 16
PLACEHOLDERS = ("replace", "changeme", "change-me", "change_me")  # template text, never a secret
ENV_OVERRIDES = {
    "GATEWAY_UPSTREAM": ("upstream", "url"),
    "GATEWAY_DATABASE": ("database",),
    "GATEWAY_ADMIN_TOKEN": ("admin", "token"),
    "GATEWAY_SECRET_KEY": ("secret_key",),
}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TRUE_WORDS = {"true": True, "yes": True, "on": True, "1": True}
FALSE_WORDS = {"false": False, "no": False, "off": False, "0": False}


def _interpolate(value: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise RuleError(path, f"environment variable {name} is not set")

    return VARIABLE.sub(substitute, value)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [t for t in typing.get_args(tp) if t is not type(None)]
        return None if value is None else _convert(options[0], value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise RuleError(path, "expected a list")
        item_type = typing.get_args(tp)[0]
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
            return (TRUE_WORDS | FALSE_WORDS)[value.lower()]
        raise RuleError(path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise RuleError(path, f"expected a whole number, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise RuleError(path, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RuleError(path, f"expected a string, got {value!r}")
        return str(value)
    raise RuleError(path, f"unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleError(path or "config", "expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise RuleError(f"{path}.{key}" if path else str(key), "unknown key")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{path}.{f.name}" if path else f.name)
    try:
        return cls(**kwargs)
    except TypeError:
        required = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs]
        raise RuleError(f"{path}.{required[0]}", "is required") from None


def _check_port(value: int, path: str) -> None:
    if not 0 <= value <= 65535:
        raise RuleError(path, f"port must be 0-65535, got {value}")


def _check_positive(value: float, path: str) -> None:
    if value <= 0:
        raise RuleError(path, f"must be greater than 0, got {value}")


def _check_url(value: str, path: str) -> None:
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RuleError(path, f"expected http://host:port or https://host, got {value!r}")
    try:
        _ = url.port
    except ValueError:
        raise RuleError(path, f"bad port in {value!r}") from None
    if url.path not in ("", "/") or url.query or url.fragment:
        raise RuleError(path, "must not have a path, query or fragment")


def _parse_upstreams(raw: Any) -> tuple[tuple[str, UpstreamGroup], ...]:
    """`upstreams:` is a mapping of names to upstreams; each is checked where it is written."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise RuleError("upstreams", "expected a mapping of names to upstreams")
    groups = []
    for name, body in raw.items():
        where = f"upstreams.{name}"
        if not isinstance(name, str) or not UPSTREAM_NAME.fullmatch(name):
            raise RuleError(where, "a name is 1-64 letters, digits, _ and -")
        group = _build(UpstreamGroup, body, where)
        if not group.targets:
            raise RuleError(f"{where}.targets", "at least one target is required")
        for i, target in enumerate(group.targets):
            _check_url(target.url, f"{where}.targets[{i}].url")
            if not 1 <= target.weight <= 1000:
                raise RuleError(f"{where}.targets[{i}].weight", f"must be 1-1000, got {target.weight}")
        if len({target.url.rstrip("/") for target in group.targets}) != len(group.targets):
            raise RuleError(f"{where}.targets", "a target is listed twice")
        if group.balance not in BALANCES:
            raise RuleError(f"{where}.balance", f"expected round_robin or least_requests, got {group.balance!r}")
        for field_name in ("connect_timeout", "read_timeout"):
            _check_positive(getattr(group, field_name), f"{where}.{field_name}")
        if group.retries > 10:
            raise RuleError(f"{where}.retries", f"must be 0-10, got {group.retries}")
        if group.max_idle_connections < 0:
            raise RuleError(f"{where}.max_idle_connections", "must be 0 or more")
        if group.host and not re.fullmatch(r"[A-Za-z0-9.:\[\]_-]+", group.host):
            raise RuleError(f"{where}.host", f"not a host name: {group.host!r}")
        passive = group.health.passive
        if passive.failures < 1:
            raise RuleError(f"{where}.health.passive.failures", "must be at least 1")
        if not 0 < passive.eject_for <= MAX_EJECTION:
            raise RuleError(f"{where}.health.passive.eject_for", "must be more than 0 and at most 300 seconds")
        active = group.health.active
        if active is not None:
            here = f"{where}.health.active"
            if not active.path.startswith("/") or any(c in active.path for c in " \r\n#"):
                raise RuleError(f"{here}.path", f"expected an origin-form path such as /healthz, got {active.path!r}")
            for field_name in ("interval", "timeout"):
                _check_positive(getattr(active, field_name), f"{here}.{field_name}")
            for field_name in ("healthy", "unhealthy"):
                if getattr(active, field_name) < 1:
                    raise RuleError(f"{here}.{field_name}", "must be at least 1")
        groups.append((name, group))
    return tuple(groups)


def _validate(config: Config, explicit_upstream: bool = False) -> None:
    """`explicit_upstream`: GATEWAY_UPSTREAM is set (it names the default upstream's one URL)."""
    _check_port(config.listen.port, "listen.port")
    _check_port(config.admin.port, "admin.port")
    _check_url(config.upstream.url, "upstream.url")
    for name in ("connect_timeout", "read_timeout"):
        _check_positive(getattr(config.upstream, name), f"upstream.{name}")
    named = dict(config.upstreams)
    if "default" in named and explicit_upstream:
        raise RuleError("GATEWAY_UPSTREAM", "upstreams.default is configured: set one or the other, not both")
    for i, rule in enumerate(config.routes.rules):
        wanted = rule.upstream
        if wanted is not None and wanted != "default" and wanted not in named:
            raise RuleError(f"routes.rules[{i}].upstream", f"no upstream named {wanted!r} under upstreams")
    _check_positive(config.shutdown_timeout, "shutdown_timeout")
    _check_positive(config.limits.idle_timeout, "limits.idle_timeout")
    _check_positive(config.limits.header_timeout, "limits.header_timeout")
    _check_positive(config.limits.body_timeout, "limits.body_timeout")
    db = config.database
    wrong = databases.problem(db)  # the one table of database URLs (core.databases)
    if wrong is not None:
        raise RuleError("database", wrong)
    cidrs = [(f"trusted_proxies[{i}]", cidr) for i, cidr in enumerate(config.trusted_proxies)]
    if config.forward_auth is not None:
        _check_port(config.forward_auth.listen.port, "forward_auth.listen.port")
        cidrs += [(f"forward_auth.trusted[{i}]", cidr) for i, cidr in enumerate(config.forward_auth.trusted)]
    for where, cidr in cidrs:
        try:
            ipaddress.ip_network(cidr.strip(), strict=True)
        except ValueError as err:
            raise RuleError(where, f"not a CIDR: {err}") from None
    for name, value in (("auth.header", config.auth.header), ("plugins.header", config.plugins.header)):
        if not HEADER_NAME.fullmatch(value):
            raise RuleError(name, f"not a header name: {value!r}")
    if " " in config.auth.scheme:
        raise RuleError("auth.scheme", f"must be one word (or empty), got {config.auth.scheme!r}")
    for name in (
        "keys_per_account",
        "ips_per_key",
        "max_header_bytes",
        "max_headers",
        "max_upstream_head",
        "max_connections",
        "max_connections_per_ip",
    ):
        if getattr(config.limits, name) < 1:
            raise RuleError(f"limits.{name}", "must be at least 1")
    if config.routes.unknown not in ("deny", "allow"):
        raise RuleError("routes.unknown", f"expected deny or allow, got {config.routes.unknown!r}")
    if config.routes.preset not in ("jiandaoyun", "none"):
        raise RuleError("routes.preset", f"expected jiandaoyun or none, got {config.routes.preset!r}")
    config.rate_limits.account_limits()  # each raises a RuleError naming the bad entry
    config.rate_limits.key_defaults()
    backend = config.rate_limits.backend
    if backend != "local" and not backend.startswith(("redis://", "rediss://")):
        raise RuleError("rate_limits.backend", f"expected local or redis://host:port/db, got {backend!r}")
    if config.rate_limits.on_backend_error not in ("allow", "deny"):
        raise RuleError("rate_limits.on_backend_error", "expected allow or deny")
    if not re.fullmatch(r"[A-Za-z0-9_-]{0,16}", config.keys.prefix):
        raise RuleError("keys.prefix", "at most 16 letters, digits, _ and -")
    if config.routes.max_body_inspect < 0:
        raise RuleError("routes.max_body_inspect", "must be 0 or more")
    if config.workers != "auto" and not (config.workers.isdigit() and int(config.workers) >= 1):
        raise RuleError("workers", f"expected a number >= 1 or auto, got {config.workers!r}")
    if config.listen.tls is not None:
        for name in ("cert", "key"):
            if not Path(getattr(config.listen.tls, name)).is_file():
                raise RuleError(f"listen.tls.{name}", "file not found")


def _read_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with each GATEWAY_*_FILE replaced by the value it names."""
    env = dict(env)
    for file_var, var in FILE_OVERRIDES.items():
        if file_var not in env:
            continue
        if var in env:
            raise RuleError(file_var, f"set {var} or {file_var}, not both")
        try:
            text = Path(env[file_var]).read_text()
        except OSError as err:
            raise RuleError(file_var, f"cannot read {env[file_var]}: {err.strerror}") from None
        value = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
        if not value:
            raise RuleError(file_var, f"{env[file_var]} is empty")
        env[var] = value
    return env


def _secret_source(var: str, field: str, env: Mapping[str, str]) -> str:
    """The name an operator set a secret by: its _FILE variable, its variable, or the config field."""
    if var + "_FILE" in env:
        return var + "_FILE"
    return var if var in env else field


def _check_secret(value: str, source: str) -> None:
    """A secret that is still a template's placeholder, or too short to guess at, is refused:
    a manifest applied as written must not start a gateway anyone can administer."""
    if not value:
        return  # none given: one is generated
    lowered = value.lower()
    if any(word in lowered for word in PLACEHOLDERS):
        raise RuleError(source, "still holds a placeholder; set a random value (e.g. openssl rand -hex 24)")
    if len(value) < MIN_SECRET_KEY:
        raise RuleError(source, f"must be at least {MIN_SECRET_KEY} characters")


def _anchor(config: Config, base: Path) -> Config:
    """Relative paths in the config are relative to the config file's folder."""
    path = config.sqlite_path
    if path is not None and path.parts and not path.is_absolute():  # an empty path is an error later
        config = dataclasses.replace(config, database=f"sqlite:///{base / path}")
    tls = config.listen.tls
    if tls is not None:
        cert, key = (str(base / p) if not Path(p).is_absolute() else p for p in (tls.cert, tls.key))
        config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, tls=Tls(cert, key)))
    return config


def parse_config(raw: Any, env: Mapping[str, str], base: Path | None = None) -> Config:
    """Build a Config from parsed YAML plus the environment; `base` anchors relative paths
    (the config file's folder; the working directory when there is no file)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RuleError("config", "the file must contain a mapping at the top level")
    env = _read_secret_files(env)
    raw = _interpolate(raw, "", env)
    for var, where in ENV_OVERRIDES.items():
        if var in env:
            node = raw
            for part in where[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
            node[where[-1]] = env[var]
    raw_secret = raw.pop("secret_key", "")
    upstreams = _parse_upstreams(raw.pop("upstreams", None))
    explicit_upstream = "GATEWAY_UPSTREAM" in env
    config = _build(Config, raw, "")
    config = dataclasses.replace(config, secret_key=str(raw_secret), upstreams=upstreams)
    _check_secret(config.secret_key, _secret_source("GATEWAY_SECRET_KEY", "secret_key", env))
    _check_secret(config.admin.token, _secret_source("GATEWAY_ADMIN_TOKEN", "admin.token", env))

    config = _anchor(config, base or Path.cwd())
    _validate(config, explicit_upstream)
    compile_routes(config.routes)
    return config


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load from `path`, else $GATEWAY_CONFIG, else ./config.yaml if present, else defaults."""
    env = os.environ if env is None else env
    chosen = path or env.get("GATEWAY_CONFIG")
    if chosen is None and Path("config.yaml").is_file():
        chosen = "config.yaml"
    raw: Any = {}
    if chosen is not None:
        try:
            text = Path(chosen).read_text()
        except OSError as err:
            raise RuleError("config", f"cannot read {chosen}: {err.strerror}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise RuleError("config", f"{chosen} is not valid YAML{where}") from None
    return parse_config(raw, env, Path(chosen).resolve().parent if chosen is not None else None)

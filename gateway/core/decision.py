"""The decision: may this key make this request? Pure; the contract's order, first failure wins."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gateway.core.iprules import Whitelist
from gateway.core.ratelimit import Binding, Limit
from gateway.core.record import Key, parse_time
from gateway.core.routes import RouteMatch


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """What the data path needs of a key, precomputed so a decision allocates nothing."""

    id: str
    account: str
    enabled: bool
    apps: frozenset[str] | None
    interfaces: frozenset[str] | None
    whitelist: Whitelist | None  # None when the whitelist is empty: any IP, plugins allowed
    identity_headers: bytes  # X-Gateway-Key-Id / X-Gateway-Account lines for the upstream
    rate_limits: tuple[Limit, ...] = ()  # the key's own; none: the configured default applies
    expires_at: float | None = None  # epoch seconds: key_expired from then on
    retired_at: float | None = None  # a rotated-out secret: invalid_key from then on
    counters: Binding = field(default_factory=Binding, compare=False, repr=False)  # see ratelimit.Binding

    @classmethod
    def of(cls, key: Key, shared: Interner | None = None) -> KeySnapshot:
        shared = shared or Interner()
        headers = f"X-Gateway-Key-Id: {key.id}\r\nX-Gateway-Account: ".encode() + key.account.encode() + b"\r\n"
        return cls(
            id=key.id,
            account=shared.text(key.account),
            enabled=key.enabled,
            apps=shared.scope(key.apps),
            interfaces=shared.scope(key.interfaces),
            whitelist=shared.whitelist(key.ip_whitelist),
            identity_headers=headers,
            rate_limits=key.rate_limits,
            expires_at=parse_time(key.expires_at) if key.expires_at else None,
        )

    def retired(self, at: str) -> KeySnapshot:
        """The same key reached through its previous secret, accepted until `at`."""
        return dataclasses.replace(self, retired_at=parse_time(at))


class Interner:
    """Shares equal scopes and whitelists between snapshots: keys often repeat them."""

    def __init__(self) -> None:
        self._scopes: dict[tuple[str, ...], frozenset[str]] = {}
        self._whitelists: dict[tuple[str, ...], Whitelist] = {}
        self._texts: dict[str, str] = {}

    def text(self, value: str) -> str:
        return self._texts.setdefault(value, value)

    def scope(self, items: tuple[str, ...] | None) -> frozenset[str] | None:
        if items is None:
            return None
        found = self._scopes.get(items)
        if found is None:
            found = self._scopes[items] = frozenset(items)
        return found

    def whitelist(self, entries: tuple[str, ...]) -> Whitelist | None:
        if not entries:
            return None
        found = self._whitelists.get(entries)
        if found is None:
            found = self._whitelists[entries] = Whitelist.compile(entries)
        return found


@dataclass(frozen=True, slots=True)
class Deny:
    status: int
    code: int
    reason: str
    msg: str


AMBIGUOUS_REQUEST = Deny(400, 400, "ambiguous_request", "the request could be read in more than one way")
MISSING_KEY = Deny(401, 8301, "missing_key", "API key is missing")
INVALID_KEY = Deny(401, 8301, "invalid_key", "API key is invalid")
KEY_EXPIRED = Deny(401, 8301, "key_expired", "API key has expired")
KEY_DISABLED = Deny(403, 8302, "key_disabled", "API key is disabled")
IP_NOT_ALLOWED = Deny(403, 8302, "ip_not_allowed", "client IP is not in the key's whitelist")
PLUGIN_NOT_ALLOWED = Deny(403, 8302, "plugin_not_allowed", "plugin calls may not use a key with an IP whitelist")
UNKNOWN_INTERFACE = Deny(404, 1, "unknown_interface", "no interface matches this path")
INTERFACE_NOT_ALLOWED = Deny(403, 8302, "interface_not_allowed", "the key may not call this interface")
APP_NOT_ALLOWED = Deny(403, 8302, "app_not_allowed", "the key may not use this app")
NO_APP_ID = Deny(403, 8302, "app_not_allowed", "no app id was found where this interface carries it")
BODY_TOO_LARGE = Deny(413, 413, "body_too_large", "the body is too large to inspect for the app id")
UNSUPPORTED_MEDIA_TYPE = Deny(
    415,
    415,
    "unsupported_media_type",
    "the body must be plain JSON (Content-Type application/json, no Content-Encoding)",
)
ACCOUNT_RATE_LIMITED = Deny(429, 8303, "account_rate_limited", "the account is over its request rate")
KEY_RATE_LIMITED = Deny(429, 8304, "key_rate_limited", "the key is over its request rate")
RATE_LIMIT_UNAVAILABLE = Deny(503, 503, "rate_limit_unavailable", "the rate limits cannot be checked; try again")
UPSTREAM_UNAVAILABLE = Deny(502, 502, "upstream_unavailable", "the upstream service is unavailable")
UPSTREAM_TIMEOUT = Deny(504, 504, "upstream_timeout", "the upstream service timed out")
ALL_DENIALS = (
    AMBIGUOUS_REQUEST,
    MISSING_KEY,
    INVALID_KEY,
    KEY_EXPIRED,
    KEY_DISABLED,
    IP_NOT_ALLOWED,
    PLUGIN_NOT_ALLOWED,
    UNKNOWN_INTERFACE,
    INTERFACE_NOT_ALLOWED,
    APP_NOT_ALLOWED,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    ACCOUNT_RATE_LIMITED,
    KEY_RATE_LIMITED,
    RATE_LIMIT_UNAVAILABLE,
    UPSTREAM_UNAVAILABLE,
    UPSTREAM_TIMEOUT,
)


class Allow:
    """Forward the request."""


class NeedBody:
    """Every check passed but the app id, which is in the JSON body: read it, then `authorize_app`."""


ALLOW = Allow()
NEED_BODY = NeedBody()
Decision = Deny | Allow | NeedBody


def authorize(
    key: KeySnapshot | None,
    key_sent: bool,
    client_ip: int | None,
    plugin_call: bool,
    route: RouteMatch | None,
    app_id: str | None,
    unknown_allowed: bool = False,
    now: float = 0.0,
) -> Decision:
    """Decide in the contract's order. `app_id` is the id from path/query/header, if any;
    `now` (epoch seconds) is compared with the key's expiry and a previous secret's end."""
    if key is None:
        return INVALID_KEY if key_sent else MISSING_KEY
    if key.retired_at is not None and now >= key.retired_at:
        return INVALID_KEY
    if key.expires_at is not None and now >= key.expires_at:
        return KEY_EXPIRED
    if not key.enabled:
        return KEY_DISABLED
    if key.whitelist is not None:
        if not key.whitelist.allows(client_ip):
            return IP_NOT_ALLOWED
        if plugin_call:
            return PLUGIN_NOT_ALLOWED
    if route is None:
        if not unknown_allowed:
            return UNKNOWN_INTERFACE
        if key.interfaces is not None:
            return INTERFACE_NOT_ALLOWED
        return ALLOW if key.apps is None else APP_NOT_ALLOWED
    interfaces = key.interfaces
    if (
        interfaces is not None
        and route.interface not in interfaces
        and route.interface.partition(".")[0] not in interfaces
    ):
        return INTERFACE_NOT_ALLOWED
    if key.apps is None or route.app_source is None:
        return ALLOW
    if route.app_source == "body":
        return NEED_BODY
    return authorize_app(key, app_id)


def authorize_app(key: KeySnapshot, app_id: str | None) -> Decision:
    """The app check once the body gave (or failed to give) the app id."""
    if key.apps is None or (app_id is not None and app_id in key.apps):
        return ALLOW
    return NO_APP_ID if app_id is None else APP_NOT_ALLOWED


def malformed_key(header: str, scheme: str) -> Deny:
    """The refusal when the key header is there but not in the configured form."""
    form = f"{header}: {scheme} <key>" if scheme else f"{header}: <key>"
    return Deny(401, 8301, "invalid_key", f"API key is invalid: the header must read '{form}'")

"""The key record, its JSON form and the admin API's field rules. Pure: no I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.core.errors import RuleError
from gateway.core.iprules import parse_entry
from gateway.core.ratelimit import Limit, parse_limits

CATEGORIES = ("contacts", "app", "form", "data", "file", "workflow", "crm")
IMMUTABLE_FIELDS = frozenset(
    {"key", "id", "account", "key_masked", "created_at", "updated_at", "last_used_at", "previous_expires_at"}
)
EDITABLE_FIELDS = frozenset({"name", "apps", "interfaces", "ip_whitelist", "enabled", "expires_at", "rate_limits"})
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_]+")
MAX_TEXT = 100
# C0 and C1 controls, the line and paragraph separators, and lone surrogates (which no
# UTF-8 encoder can write: such a name would break every JSON and SQL layer after us).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
ACCOUNT = re.compile(r"[A-Za-z0-9._@:-]{1,64}")

DEFAULT_NAME = "API Key"
DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True, slots=True)
class Key:
    """One API key as stored. `apps`/`interfaces` None means "all"."""

    id: str
    name: str
    account: str
    key_masked: str
    digest: str
    enabled: bool
    apps: tuple[str, ...] | None
    interfaces: tuple[str, ...] | None
    ip_whitelist: tuple[str, ...]
    created_at: str
    updated_at: str
    last_used_at: str | None = None
    request_count: int = 0
    expires_at: str | None = None  # refused as key_expired from then on
    previous_digest: str | None = None  # the secret before the last rotation, still accepted ...
    previous_expires_at: str | None = None  # ... until then
    rate_limits: tuple[Limit, ...] = ()  # none: rate_limits.default_per_key applies

    def previous_live(self, now: float) -> bool:
        """Whether the secret before the last rotation is still accepted."""
        return self.previous_expires_at is not None and parse_time(self.previous_expires_at) > now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "account": self.account,
            "key_masked": self.key_masked,
            "enabled": self.enabled,
            "apps": "all" if self.apps is None else list(self.apps),
            "interfaces": "all" if self.interfaces is None else list(self.interfaces),
            "ip_whitelist": list(self.ip_whitelist),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_used_at": self.last_used_at,
            "request_count": self.request_count,
            "expires_at": self.expires_at,
            "previous_expires_at": self.previous_expires_at if self.previous_live(time.time()) else None,
            "rate_limits": [limit.to_json() for limit in self.rate_limits],
        }


def iso_time(seconds: float) -> str:
    """A timestamp as the API shows it: ISO 8601, UTC, milliseconds, `Z`."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return iso_time(time.time())


def parse_time(text: str) -> float:
    """Epoch seconds of a stored timestamp (as `iso_time` writes them)."""
    return datetime.fromisoformat(text).timestamp()


def parse_expiry(value: Any, now: float, field: str = "expires_at") -> str | None:
    """null, or an RFC 3339 time with its offset, in the future; kept as `iso_time` writes it."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise RuleError(field, f"{field} must be null or an RFC 3339 time such as 2027-01-31T00:00:00Z")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RuleError(field, f"{field} must be null or an RFC 3339 time such as 2027-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        raise RuleError(field, f"{field} needs a time zone (Z or +08:00)")
    seconds = moment.timestamp()
    if seconds <= now:
        raise RuleError(field, f"{field} must be in the future")
    return iso_time(seconds)


def mask_secret(secret: str) -> str:
    return f"{secret[:4]}****{secret[-4:]}"


def text_field(value: Any, field: str) -> str:
    """A name-like field: a string, 1-100 characters after trimming, nothing invisible."""
    if not isinstance(value, str):
        raise RuleError(field, f"{field} must be a string")
    text = value.strip()
    if CONTROL.search(text):
        raise RuleError(field, f"{field} must not contain control characters")
    if not 1 <= len(text) <= MAX_TEXT:
        raise RuleError(field, f"{field} must be 1-{MAX_TEXT} characters")
    return text


def parse_account(value: Any, field: str = "account") -> str:
    """1-64 letters, digits and `.` `_` `-` `@` `:`: the account travels in a header."""
    if not isinstance(value, str):
        raise RuleError(field, f"{field} must be a string")
    if not ACCOUNT.fullmatch(value):
        message = f"{field} must be 1-64 characters of letters, digits and . _ - @ :"
        raise RuleError(field, message)
    return value


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_apps(value: Any) -> tuple[str, ...] | None:
    if value == "all":
        return None
    if not isinstance(value, list):
        raise RuleError("apps", 'apps must be "all" or a list of app ids')
    return _unique([text_field(item, f"apps[{i}]") for i, item in enumerate(value)])


def parse_interfaces(value: Any, known: Callable[[str], bool] = lambda _: True) -> tuple[str, ...] | None:
    """`known`: whether the route table's catalogue has this category or interface id."""
    if value == "all":
        return None
    if not isinstance(value, list):
        message = 'interfaces must be "all" or a list of categories and interface ids'
        raise RuleError("interfaces", message)
    entries = []
    for i, item in enumerate(value):
        field = f"interfaces[{i}]"
        if not isinstance(item, str):
            raise RuleError(field, f"{field} must be a string")
        category, dot, name = item.strip().partition(".")
        if category not in CATEGORIES:
            categories = ", ".join(CATEGORIES)
            raise RuleError(field, f"{field}: unknown category (known: {categories})")
        if dot and not INTERFACE_NAME.fullmatch(name):
            message = f"{field}: an interface name is letters, digits and '_'"
            raise RuleError(field, message)
        if dot and not known(item.strip()):
            message = f"{field}: {item.strip()!r} is not in the interface catalogue (GET /api/v1/interfaces)"
            raise RuleError(field, message)
        entries.append(item.strip())
    return _unique(entries)


def parse_whitelist(value: Any, limit: int) -> tuple[str, ...]:
    """Trim, validate in order (first bad entry wins), de-duplicate, then count."""
    if not isinstance(value, list):
        raise RuleError("ip_whitelist", "ip_whitelist must be a list")
    entries = []
    for i, item in enumerate(value):
        field = f"ip_whitelist[{i}]"
        if not isinstance(item, str):
            raise RuleError(field, f"{field} must be a string")
        entry = item.strip()
        try:
            parse_entry(entry)
        except RuleError as err:
            raise RuleError(field, f"{field}: {err.message}", err.code) from None
        entries.append(entry)
    unique = _unique(entries)
    if len(unique) > limit:
        message = f"ip_whitelist has {len(unique)} entries; at most {limit} are allowed"
        raise RuleError("ip_whitelist", message, "too_many_ips")
    return unique


def parse_enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RuleError("enabled", "enabled must be true or false")
    return value


def _check_fields(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RuleError(None, "the body must be a JSON object", "invalid_json")
    for field in body:
        if field in IMMUTABLE_FIELDS and field not in allowed:
            raise RuleError(field, f"{field} cannot be set", "immutable_field")
        if field not in allowed:
            raise RuleError(field, f"unknown field {field}")
    return body


def parse_changes(
    body: Any, ips_limit: int, *, creating: bool, known: Callable[[str], bool] = lambda _: True
) -> dict[str, Any]:
    """Validate a create or PATCH body into normalized field values."""
    allowed = EDITABLE_FIELDS | {"account"} if creating else EDITABLE_FIELDS
    body = _check_fields(body, allowed)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = text_field(body["name"], "name")
    if "account" in body:
        changes["account"] = parse_account(body["account"])
    if "apps" in body:
        changes["apps"] = parse_apps(body["apps"])
    if "interfaces" in body:
        changes["interfaces"] = parse_interfaces(body["interfaces"], known)
    if "ip_whitelist" in body:
        changes["ip_whitelist"] = parse_whitelist(body["ip_whitelist"], ips_limit)
    if "enabled" in body:
        changes["enabled"] = parse_enabled(body["enabled"])
    if "expires_at" in body:
        changes["expires_at"] = parse_expiry(body["expires_at"], time.time())
    if "rate_limits" in body:
        changes["rate_limits"] = parse_limits(body["rate_limits"])
    return changes

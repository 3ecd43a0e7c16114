"""The key record, its JSON form and the admin API's field rules. Pure: no I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


def format_time(moment: datetime) -> str:
    """An aware time as the API shows it: ISO 8601, UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_time(seconds: float) -> str:
    """Epoch seconds as the API shows them (`format_time`)."""
    return format_time(datetime.fromtimestamp(seconds, UTC))


def utc_now() -> str:
    return iso_time(time.time())


def parse_time(text: str) -> float:
    """Epoch seconds of a stored timestamp (as `iso_time` writes them)."""
    return datetime.fromisoformat(text).timestamp()


# RFC 3339 §5.6 date-time, nothing more: full date, `T`, full time with seconds, an optional
# fraction, and `Z` or a `+hh:mm` / `-hh:mm` offset. `T` and `Z` may be lower case (§5.6's note).
# ASCII digits only: `\d` would also take other scripts' digits, which int() reads happily.
RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
MAX_TIME_TEXT = 40  # 2027-01-31T00:00:00.123456789+08:00 is 35


def parse_rfc3339(value: Any, field: str) -> datetime:
    """An RFC 3339 time, as an aware UTC datetime; anything else breaks `field`'s rule.

    Refused: other ISO 8601 forms (week and ordinal dates, the basic format without `-` and
    `:`, a missing seconds part or offset), impossible dates and times, and any time that falls
    outside years 1 to 9999 once moved to UTC (no datetime, and no stored timestamp, holds it).
    A leap second (`:60`) is read as the second after `:59`.
    """
    shape = f"{field} must be an RFC 3339 time such as 2027-01-31T00:00:00Z or 2027-01-31T08:00:00+08:00"
    if not isinstance(value, str) or len(value) > MAX_TIME_TEXT:
        raise RuleError(field, shape)
    match = RFC3339.fullmatch(value)
    if match is None:
        raise RuleError(field, shape)
    year, month, day, hour, minute, second, fraction, sign, offset_hours, offset_minutes = match.groups()
    leap = second == "60"
    micro = int((fraction or "")[:6].ljust(6, "0"))
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), 59 if leap else int(second), micro)
    except ValueError:
        raise RuleError(field, f"{field}: {value!r} is not a date and time that exists") from None
    offset = timedelta()
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise RuleError(field, f"{field}: the offset must be from -23:59 to +23:59")
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        if sign == "-":
            offset = -offset
    try:
        moment = local - offset + timedelta(seconds=leap)
    except OverflowError:
        raise RuleError(field, f"{field} must fall within the years 1 to 9999 in UTC") from None
    return moment.replace(tzinfo=UTC)


def parse_expiry(value: Any, now: float, field: str = "expires_at") -> str | None:
    """null, or an RFC 3339 time in the future (`parse_rfc3339`); kept as `format_time` writes it."""
    if value is None:
        return None
    moment = parse_rfc3339(value, field)
    if moment.timestamp() <= now:
        raise RuleError(field, f"{field} must be in the future")
    return format_time(moment)


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
        if category not in CATEGORIES and not known(category):
            message = f"{field}: unknown category {category!r} (GET /api/v1/interfaces lists the categories)"
            raise RuleError(field, message)
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

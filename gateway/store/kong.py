"""`gateway keys import --from kong`: Kong consumers' key-auth credentials as a keys file.

Reads a decK file (`consumers[].keyauth_credentials`, plugins on the consumer or top-level
plugins naming it) or Kong Admin API JSON (pages of `/consumers`, `/key-auths` and
`/plugins`). The consumer's username becomes the account; each credential a key with the
same secret. What has no faithful equivalent is listed in `notes` and left out; where
leaving it out would let more requests through (a deny list, an allow entry the whitelist
cannot hold), the consumer's keys are left out too. Nothing is guessed.

The mapping, in words: docs/migrate-from-kong.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from gateway.core import sealing
from gateway.core.errors import RuleError
from gateway.core.iprules import parse_entry
from gateway.core.ratelimit import MAX_REQUESTS, WINDOWS
from gateway.core.record import format_time, parse_account

CREDENTIAL_LISTS = (
    "basicauth_credentials",
    "hmacauth_credentials",
    "jwt_secrets",
    "oauth2_credentials",
    "mtls_auth_credentials",
    "acls",
)
CONSUMER_FIELDS = {"username", "custom_id", "id", "tags", "created_at", "updated_at", "type", "username_lower"}
CONSUMER_FIELDS |= {"keyauth_credentials", "plugins", "groups", *CREDENTIAL_LISTS}
KEEP_QUIET = {"id", "created_at", "updated_at", "ws_id"}  # Kong's bookkeeping: nothing to map


class KongError(Exception):
    """The input is not a Kong export this command reads."""


@dataclass
class Consumer:
    ref: str  # how notes name it
    id: str | None
    username: str | None
    credentials: list[dict[str, Any]] = field(default_factory=list)
    plugins: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Imported:
    keys: list[dict[str, Any]] = field(default_factory=list)  # keys-file entries, with plain `key`
    notes: list[str] = field(default_factory=list)


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KongError(f"{where} must be a list")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KongError(f"{where} must be a mapping")
    return value


def _consumer_ref(raw: dict[str, Any], index: int) -> str:
    name = raw.get("username") or raw.get("custom_id") or raw.get("id") or f"#{index}"
    return f"consumer {str(name)[:80]}"


def _unkept(consumer: dict[str, Any], ref: str, notes: list[str]) -> None:
    for name in ("custom_id", "tags"):
        if consumer.get(name):
            notes.append(f"{ref}: {name}: not kept (a key has a name and an account only)")


# reading the two formats
def from_deck(document: dict[str, Any], notes: list[str]) -> list[Consumer]:
    consumers: list[Consumer] = []
    by_name: dict[str, Consumer] = {}
    for index, raw in enumerate(_list(document.get("consumers"), "consumers")):
        raw = _mapping(raw, f"consumers[{index}]")
        ref = _consumer_ref(raw, index)
        consumer = Consumer(ref, raw.get("id"), raw.get("username"))
        for cred_index, cred in enumerate(_list(raw.get("keyauth_credentials"), f"{ref}: keyauth_credentials")):
            consumer.credentials.append(_mapping(cred, f"{ref}: keyauth_credentials[{cred_index}]"))
        for plugin_index, plugin in enumerate(_list(raw.get("plugins"), f"{ref}: plugins")):
            consumer.plugins.append(_mapping(plugin, f"{ref}: plugins[{plugin_index}]"))
        for name in CREDENTIAL_LISTS:
            if raw.get(name):
                notes.append(f"{ref}: {name}: not imported (only key-auth credentials become keys)")
        for name in raw:
            if name not in CONSUMER_FIELDS:
                notes.append(f"{ref}: {name}: not mapped")
        _unkept(raw, ref, notes)
        if raw.get("groups"):
            notes.append(f"{ref}: groups: consumer groups are not mapped (their plugins do not apply to the keys)")
        consumers.append(consumer)
        for handle in (raw.get("username"), raw.get("id"), raw.get("custom_id")):
            if isinstance(handle, str):
                by_name[handle] = consumer
    for index, plugin in enumerate(_list(document.get("plugins"), "plugins")):
        plugin = _mapping(plugin, f"plugins[{index}]")
        owner = plugin.get("consumer")
        owner = owner.get("id") if isinstance(owner, dict) else owner
        plugin_name = plugin.get("name")
        if owner is None:
            notes.append(f"plugin {plugin_name} (plugins[{index}]): not consumer-scoped: not imported")
        elif owner in by_name:
            by_name[owner].plugins.append(plugin)
        else:
            notes.append(f"plugin {plugin_name} (plugins[{index}]): its consumer {owner!r} is not in the file")
    _key_names(document, notes)
    for section in ("services", "routes", "upstreams", "certificates", "ca_certificates", "consumer_groups"):
        if document.get(section):
            notes.append(f"{section}: not imported (routes and upstreams are the gateway's own config)")
    return consumers


def _key_auth_plugins(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The key-auth plugins of a decK file: top level, on services, on their routes, on routes."""
    holders: list[Any] = [document]
    for service in document.get("services") or []:
        if isinstance(service, dict):
            holders += [service, *(service.get("routes") or [])]
    holders += document.get("routes") or []
    return [
        plugin
        for holder in holders
        if isinstance(holder, dict)
        for plugin in holder.get("plugins") or []
        if isinstance(plugin, dict) and plugin.get("name") == "key-auth"
    ]


def _key_names(document: dict[str, Any], notes: list[str]) -> None:
    """Where Kong's clients send their keys: the gateway reads one header (auth.header)."""
    names: set[str] = set()
    for plugin in _key_auth_plugins(document):
        raw_config = plugin.get("config")
        config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
        found = config.get("key_names") or ["apikey"]
        names |= {str(name) for name in found} if isinstance(found, list) else set()
        if config.get("key_in_query", True) is not False:
            notes.append("key-auth: Kong also reads keys from the query string; the gateway reads a header only")
    if names:
        shown = ", ".join(sorted(names))
        notes.append(f'key-auth: clients send their keys in {shown}: set auth.header to it and auth.scheme: ""')


def _entities(page: Any, where: str) -> list[dict[str, Any]]:
    """An Admin API page `{"data": [...], "next": ...}`, a list of pages, or a list of entities."""
    if isinstance(page, dict) and "data" in page:
        return [_mapping(item, f"{where}: data[]") for item in _list(page["data"], f"{where}: data")]
    if isinstance(page, list):
        found: list[dict[str, Any]] = []
        for item in page:
            if isinstance(item, dict) and "data" in item:
                found += _entities(item, where)
            else:
                found.append(_mapping(item, f"{where}[]"))
        return found
    raise KongError(f"{where}: expected an Admin API page ({{data: [...], next}}) or a list")


def _kind(entity: dict[str, Any]) -> str:
    if "key" in entity and "consumer" in entity:
        return "key-auths"
    if "name" in entity and "config" in entity:
        return "plugins"
    if "username" in entity or "custom_id" in entity:
        return "consumers"
    return "unknown"


def from_admin_api(documents: list[Any], notes: list[str]) -> list[Consumer]:
    found: dict[str, list[dict[str, Any]]] = {"consumers": [], "key-auths": [], "plugins": []}
    for number, document in enumerate(documents):
        where = f"file {number + 1}"
        if isinstance(document, dict) and any(name in document for name in found):
            for name in found:
                found[name] += _entities(document.get(name, []), f"{where}: {name}")
            continue
        for entity in _entities(document, where):
            kind = _kind(entity)
            if kind == "unknown":
                raise KongError(f"{where}: an entity that is no consumer, key-auth or plugin: {sorted(entity)[:6]}")
            found[kind].append(entity)
    consumers: dict[str, Consumer] = {}
    for index, raw in enumerate(found["consumers"]):
        consumer_id = raw.get("id")
        if not isinstance(consumer_id, str):
            raise KongError(f"consumers[{index}]: no id (the Admin API gives every consumer one)")
        consumers[consumer_id] = Consumer(_consumer_ref(raw, index), consumer_id, raw.get("username"))
        _unkept(raw, consumers[consumer_id].ref, notes)
    for kind in ("key-auths", "plugins"):
        for entity in found[kind]:
            owner = entity.get("consumer")
            owner_id = owner.get("id") if isinstance(owner, dict) else None
            name = "key-auth" if kind == "key-auths" else f"plugin {entity.get('name')}"
            label = f"{name} ({entity.get('id')})"
            if owner_id is None:
                notes.append(f"{label}: not consumer-scoped: not imported")
            elif owner_id not in consumers:
                notes.append(f"{label}: its consumer {owner_id} is not in the /consumers pages given")
            elif kind == "key-auths":
                consumers[owner_id].credentials.append(entity)
            else:
                consumers[owner_id].plugins.append(entity)
    return list(consumers.values())


# mapping one consumer
def _whitelist(consumer: Consumer, config: dict[str, Any], notes: list[str]) -> list[str] | None:
    """The allow list as whitelist entries; None: it cannot be held faithfully (keys left out)."""
    ref = consumer.ref
    deny = config.get("deny") or config.get("blacklist")
    if deny:
        notes.append(f"{ref}: ip-restriction deny {deny!r}: the gateway has no deny list; its keys are left out")
        return None
    allow = config.get("allow") or config.get("whitelist") or []
    if not isinstance(allow, list):
        notes.append(f"{ref}: ip-restriction allow is not a list; this consumer's keys are left out")
        return None
    entries = []
    for item in allow:
        entry = str(item).strip()
        try:
            parse_entry(entry)
            entries.append(entry)
        except RuleError as err:
            notes.append(
                f"{ref}: ip-restriction allow {item!r}: {err.message}; this consumer's keys are left out"
                " (dropping the entry would refuse its clients, dropping the list would let everyone in)"
            )
            return None
    for name in sorted(set(config) - {"allow", "whitelist", "deny", "blacklist"}):
        if config[name] is not None:
            notes.append(f"{ref}: ip-restriction {name}: not kept (the gateway answers 403 ip_not_allowed)")
    return entries


def _limits(consumer: Consumer, config: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    ref = consumer.ref
    limits = []
    for per in WINDOWS:
        value = config.get(per)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REQUESTS:
            notes.append(f"{ref}: rate-limiting {per}: {value!r} is outside 1..{MAX_REQUESTS}; not kept")
            continue
        limits.append({"requests": value, "per": per})
    for per in ("month", "year"):
        if config.get(per) is not None:
            notes.append(f"{ref}: rate-limiting {per}: {config[per]}: the gateway limits per second to day; not kept")
    limit_by = config.get("limit_by") or "consumer"
    if limit_by not in ("consumer", "credential"):
        notes.append(f"{ref}: rate-limiting limit_by {limit_by}: the gateway counts per key; not kept")
        return []
    if limit_by == "consumer" and len(consumer.credentials) > 1 and limits:
        notes.append(
            f"{ref}: rate-limiting counted per consumer in Kong; each of its {len(consumer.credentials)} keys"
            " gets the limits on its own here"
        )
    return limits


def _expiry(credential: dict[str, Any], ref: str, notes: list[str]) -> str | None:
    ttl = credential.get("ttl")
    if ttl in (None, 0):
        return None
    created = credential.get("created_at")
    if isinstance(ttl, int) and isinstance(created, int | float) and not isinstance(created, bool):
        return format_time(dt.datetime.fromtimestamp(created + ttl, dt.UTC))
    notes.append(f"{ref}: ttl {ttl!r} without created_at: no expiry set")
    return None


def convert(consumers: list[Consumer], notes: list[str]) -> Imported:
    result = Imported(notes=notes)
    for consumer in consumers:
        ref = consumer.ref
        if not consumer.credentials:
            continue
        try:
            account = parse_account(consumer.username)
        except RuleError:
            notes.append(
                f"{ref}: username {consumer.username!r} is not an account name (1-64 of letters, digits, . _ - @ :);"
                " its keys are left out"
            )
            continue
        whitelist: list[str] = []
        limits: list[dict[str, Any]] = []
        usable = True
        for plugin in consumer.plugins:
            name = plugin.get("name")
            config = plugin.get("config") or {}
            if plugin.get("enabled") is False:
                notes.append(f"{ref}: plugin {name}: disabled in Kong; not imported")
            elif not isinstance(config, dict):
                notes.append(f"{ref}: plugin {name}: config is not a mapping; not imported")
            elif name == "ip-restriction":
                mapped = _whitelist(consumer, config, notes)
                usable = usable and mapped is not None
                whitelist = mapped or []
            elif name == "rate-limiting":
                limits = _limits(consumer, config, notes)
            else:
                notes.append(f"{ref}: plugin {name}: not mapped")
        if not usable:
            continue
        for index, credential in enumerate(consumer.credentials):
            label = f"{ref}: key-auth {credential.get('id') or index}"
            secret = credential.get("key")
            if not isinstance(secret, str) or not sealing.could_be_secret(secret.encode()):
                notes.append(
                    f"{label}: the key is not one the gateway's proxy accepts (32 letters and digits after an"
                    f" optional prefix of up to {sealing.MAX_PREFIX} of A-Z a-z 0-9 _ -): left out;"
                    " issue a new key for this client"
                )
                continue
            for extra in sorted(set(credential) - {"key", "consumer", "ttl", *KEEP_QUIET}):
                if credential[extra]:
                    notes.append(f"{label}: {extra}: not kept")
            name = f"Kong {consumer.username}" + (f" {str(credential['id'])[:8]}" if credential.get("id") else "")
            result.keys.append(
                {
                    "name": name[:100],
                    "account": account,
                    "key": secret,
                    "ip_whitelist": whitelist,
                    "rate_limits": limits,
                    "expires_at": _expiry(credential, label, notes),
                }
            )
    return result


def read_kong(documents: list[Any]) -> Imported:
    """Kong's data (parsed YAML/JSON documents, one per file) as keys-file entries and notes."""
    notes: list[str] = []
    first = documents[0] if documents else None
    deck = (
        len(documents) == 1
        and isinstance(first, dict)
        and ("_format_version" in first or "consumers" in first)
        and "key-auths" not in first
        and not (isinstance(first.get("consumers"), dict) and "data" in first["consumers"])
    )
    consumers = from_deck(first, notes) if deck and isinstance(first, dict) else from_admin_api(documents, notes)
    return convert(consumers, notes)

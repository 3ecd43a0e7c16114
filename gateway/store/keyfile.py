"""Keys as a file (DESIGN §7.4): the YAML that `gateway keys export` writes, that `keys apply`
makes the store match, and that a DB-less gateway (`database: file:///...`) serves from.

One entry per key: every field of the key object, and the secret as `sealed` (the stored
ciphertext, base64: only the same secret key opens it) or as a plain `key` (for imports and
hand-written files; it is sealed when stored). Reading a file validates all of it before
anything is changed: the first bad entry is named with its field, and nothing is applied.
Hostile files are bounded: size, number of entries, nesting, and YAML aliases are refused.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag

from gateway.core import sealing
from gateway.core.errors import RuleError
from gateway.core.record import (
    DEFAULT_ACCOUNT,
    DEFAULT_NAME,
    EDITABLE_FIELDS,
    Key,
    format_time,
    mask_secret,
    parse_changes,
    parse_rfc3339,
    utc_now,
)

MAX_FILE_BYTES = 32 * 1024 * 1024  # 32 MiB: about 30 times a file of 100,000 keys' fields
MAX_KEYS = 200_000
# What the key object shows but a file cannot set: ignored when read (they change with use).
# (`quota_used` and `quota_resets_at` are §7.5's, for exports made once quotas exist.)
SHOWN_ONLY = frozenset(
    {
        "key_masked",
        "created_at",
        "updated_at",
        "last_used_at",
        "request_count",
        "previous_expires_at",
        "quota_used",
        "quota_resets_at",
    }
)
SECRET_FIELDS = frozenset({"sealed", "key"})
FINGERPRINT = b"gateway secret fingerprint"  # what the runtime hands `Store.check_secret`


class KeyFileError(Exception):
    """A keys file that cannot be used; str() names the file, the entry and the field."""


@dataclass(frozen=True)
class Entry:
    """One valid entry: `fields` are normalized (as `parse_changes` returns them) and complete."""

    index: int
    id: str | None
    account: str
    fields: dict[str, Any]
    secret: str | None  # plain; None: keep the stored secret, or generate one for a new key
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def label(self) -> str:
        return f"keys[{self.index}]" + (f" ({self.id})" if self.id else "")


@dataclass
class KeysFile:
    entries: list[Entry] = field(default_factory=list)

    @property
    def accounts(self) -> set[str]:
        return {entry.account for entry in self.entries}


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases: `*a` repeated could make a small file expand enormously."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", event.start_mark)
        return super().compose_node(parent, index)


# libyaml's parser when PyYAML has it: about 2.5 times faster. Its aliases are found afterwards,
# as one list or mapping reached twice (_shared), before anything walks the tree.
_FAST = getattr(yaml, "CSafeLoader", None)


def _shared(document: Any) -> bool:
    """Whether a list or mapping is reached twice (a YAML alias); iterative, so depth is no matter."""
    seen: set[int] = set()
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                return True
            seen.add(id(node))
            stack.extend(node.values() if isinstance(node, dict) else node)
    return False


def load_document(data: bytes, source: str) -> Any:
    """Parse JSON or YAML with the bounds above; any failure is a KeyFileError. JSON (a file
    starting with `{`) is read by the json module: a hundred times faster than YAML, for large
    DB-less files (`gateway keys export --json`)."""
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"{source}: larger than {MAX_FILE_BYTES} bytes (32 MiB), the most a keys file may hold")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise KeyFileError(f"{source}: not UTF-8 text (byte {err.start})") from None
    try:
        if text.lstrip().startswith("{"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as err:
                raise KeyFileError(
                    f"{source}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
                ) from None
        if _FAST is None:
            return yaml.load(text, Loader=_Loader)
        document = yaml.load(text, Loader=_FAST)
        if _shared(document):
            raise KeyFileError(f"{source}: not valid here: aliases (*name) are not accepted")
        return document
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise KeyFileError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise KeyFileError(f"{source}: nested too deeply") from None


def derived_id(digest: str) -> str:
    """A key id made from a secret's lookup digest: an entry without `id` but with its secret gets
    the same id every time it is read (every worker, every reload, every apply)."""
    value = int.from_bytes(hashlib.sha256(bytes.fromhex(digest)).digest()[:17], "big") >> 6
    chars = []
    for _ in range(26):
        chars.append(sealing.ID_ALPHABET[value & 31])
        value >>= 5
    return "k_" + "".join(reversed(chars))


def _secret(raw: dict[str, Any], key_id: str | None, box: sealing.SecretBox, label: str) -> str | None:
    if "sealed" in raw and "key" in raw:
        raise KeyFileError(f"{label}: sealed and key: give one of them, not both")
    if "sealed" in raw:
        sealed = raw["sealed"]
        if key_id is None:
            raise KeyFileError(f"{label}: sealed: a sealed secret needs the id it was sealed for")
        if not isinstance(sealed, str) or len(sealed) > 400:
            raise KeyFileError(f"{label}: sealed must be the base64 text that `gateway keys export` wrote")
        try:
            secret = box.decrypt(sealed, key_id)
        except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
            raise KeyFileError(
                f"{label}: sealed: cannot be opened with this secret key"
                " (it opens only with the GATEWAY_SECRET_KEY of the gateway that exported it)"
            ) from None
    elif "key" in raw:
        secret = raw["key"]
        if not isinstance(secret, str):
            raise KeyFileError(f"{label}: key must be a string")
    else:
        return None
    if not sealing.could_be_secret(secret.encode()):
        raise KeyFileError(
            f"{label}: key: not a secret the proxy accepts (32 letters and digits,"
            f" after an optional prefix of up to {sealing.MAX_PREFIX} of A-Z a-z 0-9 _ -)"
        )
    return secret


def _time(raw: dict[str, Any], name: str, label: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    try:
        return format_time(parse_rfc3339(value, name))
    except RuleError as err:
        raise KeyFileError(f"{label}: {err}") from None


def parse_entry(raw: Any, index: int, box: sealing.SecretBox, ips_limit: int, known: Callable[[str], bool]) -> Entry:
    label = f"keys[{index}]"
    if not isinstance(raw, dict):
        raise KeyFileError(f"{label}: each entry must be a mapping of the key's fields")
    key_id = raw.get("id")
    if key_id is not None:
        if not isinstance(key_id, str) or not sealing.is_id(key_id):
            raise KeyFileError(f"{label}: id: not a key id (k_ and 26 characters)")
        label = f"{label} ({key_id})"
    allowed = EDITABLE_FIELDS | SHOWN_ONLY | SECRET_FIELDS | {"id", "account"}
    for name in raw:
        if name not in allowed:
            shown = str(name)[:60]
            raise KeyFileError(f"{label}: {shown}: unknown field")
    secret = _secret(raw, key_id, box, label)
    given = {name: raw[name] for name in EDITABLE_FIELDS if name in raw and name != "expires_at"}
    given["account"] = raw.get("account", DEFAULT_ACCOUNT)
    try:
        fields = parse_changes(given, ips_limit, creating=True, known=known)
    except RuleError as err:
        raise KeyFileError(f"{label}: {err}") from None
    account = fields.pop("account")
    # A file may hold a key that has expired (an export does): unlike the API, the past is allowed.
    expires_at = _time(raw, "expires_at", label)
    complete = {
        "name": DEFAULT_NAME,
        "apps": None,
        "interfaces": None,
        "ip_whitelist": (),
        "enabled": True,
        "rate_limits": (),
        **fields,
        "expires_at": expires_at,
    }
    return Entry(
        index,
        key_id,
        account,
        complete,
        secret,
        _time(raw, "created_at", label),
        _time(raw, "updated_at", label),
    )


def parse_keys(
    data: bytes,
    box: sealing.SecretBox,
    *,
    source: str = "keys file",
    ips_limit: int = 50,
    known: Callable[[str], bool] = lambda _: True,
    need_secrets: bool = False,
) -> KeysFile:
    """Read and check a whole keys file. `need_secrets`: every entry must carry its secret (a
    DB-less file: nothing may be generated, every worker must read the same keys)."""
    document = load_document(data, source)
    return check_document(document, box, source=source, ips_limit=ips_limit, known=known, need_secrets=need_secrets)


def check_document(
    document: Any,
    box: sealing.SecretBox,
    *,
    source: str = "keys file",
    ips_limit: int = 50,
    known: Callable[[str], bool] = lambda _: True,
    need_secrets: bool = False,
) -> KeysFile:
    """Check a parsed keys file (`parse_keys`), or one made by an import."""
    if not isinstance(document, dict) or set(document) - {"keys"}:
        raise KeyFileError(f"{source}: expected a mapping with one field, keys: a list of keys")
    raw_keys = document.get("keys") or []
    if not isinstance(raw_keys, list):
        raise KeyFileError(f"{source}: keys must be a list")
    if len(raw_keys) > MAX_KEYS:
        raise KeyFileError(f"{source}: {len(raw_keys)} keys; at most {MAX_KEYS} are read")
    entries: list[Entry] = []
    ids: dict[str, int] = {}
    digests: dict[str, int] = {}
    for index, raw in enumerate(raw_keys):
        try:
            entry = parse_entry(raw, index, box, ips_limit, known)
        except KeyFileError as err:
            raise KeyFileError(f"{source}: {err}") from None
        if entry.secret is not None:
            digest = box.digest(entry.secret)
            if digest in digests:
                raise KeyFileError(f"{source}: {entry.label}: key: the same secret as keys[{digests[digest]}]")
            digests[digest] = index
            if entry.id is None:
                entry = Entry(index, derived_id(digest), *_rest(entry))
        elif need_secrets:
            raise KeyFileError(f"{source}: {entry.label}: needs its secret (sealed or key) in a DB-less file")
        if entry.id is not None:
            if entry.id in ids:
                raise KeyFileError(f"{source}: {entry.label}: id: also the id of keys[{ids[entry.id]}]")
            ids[entry.id] = index
        entries.append(entry)
    return KeysFile(entries)


def _rest(entry: Entry) -> tuple[Any, ...]:
    return (entry.account, entry.fields, entry.secret, entry.created_at, entry.updated_at)


def make_key(entry: Entry, secret: str, box: sealing.SecretBox, key_id: str, now: str | None = None) -> Key:
    """The key an entry describes, with this secret."""
    now = now or utc_now()
    return Key(
        id=key_id,
        account=entry.account,
        key_masked=mask_secret(secret),
        digest=box.digest(secret),
        created_at=entry.created_at or now,
        updated_at=entry.updated_at or entry.created_at or now,
        **entry.fields,
    )


# writing
USAGE_FIELDS = ("last_used_at", "request_count", "quota_used", "quota_resets_at")  # they change with traffic


def export_entry(key: Key, sealed: str, usage: bool = True) -> dict[str, Any]:
    """One key as the file holds it; without `usage`, the fields that change with traffic are
    left out, so a file kept in git changes only when a key does."""
    shown = key.to_json()
    if not usage:
        shown = {name: value for name, value in shown.items() if name not in USAGE_FIELDS}
    return {**shown, "sealed": sealed}


def dump(entries: Iterable[dict[str, Any]], header: str = "") -> str:
    """The file as YAML: block style for entries, short lists inline."""
    body = yaml.safe_dump(
        {"keys": list(entries)}, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None
    )
    return header + body


# planning: what `apply` changes
COMPARED = ("name", "enabled", "apps", "interfaces", "ip_whitelist", "expires_at", "rate_limits")


def shown(name: str, value: Any) -> Any:
    """A field's value as the key object shows it."""
    if name in ("apps", "interfaces"):
        return "all" if value is None else list(value)
    if name == "ip_whitelist":
        return list(value)
    if name == "rate_limits":
        return [limit.to_json() for limit in value]
    return value.to_json() if hasattr(value, "to_json") else value


@dataclass
class Step:
    kind: str  # "add", "change", "delete"
    key_id: str
    account: str
    name: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (before, after), as shown
    key: Key | None = None  # add: the new key
    sealed: str | None = None  # add, or a new secret
    columns: dict[str, Any] = field(default_factory=dict)  # change: the store's columns to write
    generated: str | None = None  # a secret made here, to print once
    new_id: bool = False  # the entry had no id: the file should get this one


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    unchanged: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for step in self.steps if step.kind == kind)

    def describe(self) -> list[str]:
        lines = []
        marks = {"add": "+", "change": "~", "delete": "-"}
        for step in self.steps:
            lines.append(f"{marks[step.kind]} {step.key_id}  {step.name} (account {step.account})")
            if step.kind == "change":
                for name, (before, after) in step.changes.items():
                    lines.append(f"    {name}: {_json(before)} -> {_json(after)}")
            if step.generated:
                lines.append(f"    key: {step.generated} (generated: shown once, keep it)")
            if step.new_id:
                lines.append(
                    f"    the entry has no id: add id: {step.key_id} to the file, or the next apply adds another"
                )
        lines.append(
            f"{self.count('add')} to add, {self.count('change')} to change,"
            f" {self.count('delete')} to delete, {self.unchanged} unchanged"
        )
        return lines


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def plan(
    keys_file: KeysFile,
    current: Sequence[Key],
    box: sealing.SecretBox,
    *,
    prune: bool = False,
    prefix: str = "",
) -> Plan:
    """The steps that make the store (`current`: every key in it) match the file."""
    by_id = {key.id: key for key in current}
    by_digest = {key.digest: key for key in current}
    result = Plan()
    listed: set[str] = set()
    now = utc_now()
    for entry in keys_file.entries:
        key_id = entry.id or sealing.generate_id()
        listed.add(key_id)
        existing = by_id.get(key_id)
        digest = box.digest(entry.secret) if entry.secret is not None else None
        holder = by_digest.get(digest) if digest is not None else None
        if holder is not None and holder.id != key_id:
            raise KeyFileError(f"{entry.label}: key: the secret of key {holder.id} already in the store")
        if existing is None:
            generated = None
            secret = entry.secret
            if secret is None:
                secret = generated = sealing.generate_secret(prefix)
            key = make_key(entry, secret, box, key_id, now)
            step = Step("add", key_id, entry.account, key.name, key=key, sealed=box.encrypt(secret, key_id))
            step.generated = generated
            step.new_id = entry.id is None
            result.steps.append(step)
            continue
        if existing.account != entry.account:
            raise KeyFileError(
                f"{entry.label}: account: {existing.account!r} in the store; a key cannot move to another account"
            )
        step = Step("change", key_id, entry.account, entry.fields["name"])
        for name, after in entry.fields.items():  # COMPARED, and any editable field added later
            before = getattr(existing, name, after)
            if before != after:
                step.changes[name] = (shown(name, before), shown(name, after))
                step.columns[name] = after
        if entry.secret is not None and digest != existing.digest:
            masked = mask_secret(entry.secret)
            step.changes["key_masked"] = (existing.key_masked, masked)
            step.columns.update(
                digest=digest,
                sealed=box.encrypt(entry.secret, key_id),
                key_masked=masked,
                previous_digest=None,
                previous_expires_at=None,
            )
        if step.changes:
            result.steps.append(step)
        else:
            result.unchanged += 1
    if prune:
        accounts = keys_file.accounts
        for key in current:
            if key.account in accounts and key.id not in listed:
                result.steps.append(Step("delete", key.id, key.account, key.name))
    return result


def audit_changes(step: Step) -> dict[str, Any]:
    """The audit entry's `changes` for a step: field -> {before, after}, as the API shows them."""
    if step.kind == "add" and step.key is not None:
        shown_key = step.key.to_json()
        return {name: {"before": None, "after": shown_key[name]} for name in ("account", *COMPARED)}
    if step.kind == "delete":
        return {"name": {"before": step.name, "after": None}, "account": {"before": step.account, "after": None}}
    return {name: {"before": before, "after": after} for name, (before, after) in step.changes.items()}

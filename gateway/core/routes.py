"""The route table: which interface a request path is, and where its app id lives.

Rules are compiled into a segment trie, so matching costs one dict lookup per path segment
whatever the number of rules. A literal segment wins over a `prefix{name}suffix` segment,
which wins over a `{name}` capture, which wins over `**`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from gateway.core.errors import RuleError
from gateway.core.memo import remember
from gateway.core.record import CATEGORIES

CATEGORY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME_PART = re.compile(r"[A-Za-z0-9_]*")
APP_SOURCES = ("body", "path", "query", "header")
HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
CACHE_ENTRIES = 4096
CACHED_PATH = 256  # characters; with CACHE_ENTRIES, the memo stays under a few MiB


@dataclass(frozen=True)
class RouteRule:
    """One rule as the config writes it; `compile_routes` checks it and names the bad field."""

    path: str
    interface: str
    app_id: str | None = None
    methods: tuple[str, ...] | None = None
    upstream: str | None = None  # the named upstream it goes to (config.upstreams); None: "default"


@dataclass(frozen=True)
class Names:
    """A human-readable name in English and Chinese."""

    en: str
    zh: str


@dataclass(frozen=True)
class CatalogueInterface:
    id: str  # <category>.<name>
    name: Names


@dataclass(frozen=True)
class CatalogueCategory:
    """One category of the operator's own API, with its interfaces (`routes.catalogue`)."""

    category: str
    name: Names
    interfaces: tuple[CatalogueInterface, ...] = ()


@dataclass(frozen=True)
class Routes:
    """The `routes` section of the config."""

    preset: str = "jiandaoyun"
    unknown: str = "deny"
    max_body_inspect: int = 1048576
    rules: tuple[RouteRule, ...] = ()
    catalogue: tuple[CatalogueCategory, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """What the route table knows about a request."""

    interface: str
    app_source: str | None  # "body" | "path" | "query" | "header" | None
    app_key: str | None
    app_id: str | None  # already resolved for path captures


@dataclass(slots=True)
class _Leaf:
    interface_parts: tuple[str | tuple[str], ...]  # literal text, or (param name,)
    params: dict[str, tuple[int, int, int]]  # name -> (segment index, prefix len, suffix len)
    rest_index: int | None
    methods: frozenset[str] | None
    app_source: str | None
    app_key: str | None


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    patterns: dict[tuple[str, str], _Node] = field(default_factory=dict)
    capture: _Node | None = None
    leaves: list[_Leaf] = field(default_factory=list)
    rest: list[_Leaf] = field(default_factory=list)


# The jiandaoyun preset of the contract: (path under /api/v{ver}/, interface, app id source).
_DATA_OPS = {
    "data": "data.list",
    "data_retrieve": "data.get",
    "data_create": "data.create",
    "data_update": "data.update",
    "data_delete": "data.delete",
    "data_batch_create": "data.batch_create",
    "data_batch_update": "data.batch_update",
    "data_batch_delete": "data.batch_delete",
}
_V1_ENTRY = "app/{app_id}/entry/{entry_id}"
# The older contacts paths (v1-v4, without `corp/`) the Go and C# demo clients call, each named
# as the `corp/**` path of the same operation names it (`corp/department/list` is
# contacts.department_list), so one interface scope covers both versions of a call.
_OLDER_CONTACTS = {
    "department/{dept_no}/department_list": "department_list",
    "department/create": "department_create",
    "department/{dept_no}/update": "department_update",
    "department/{dept_no}/delete": "department_delete",
    "department/get_deptno_by_integrateid": "department_dept_no_get",
    "department/import": "department_import",
    "department/{dept_no}/member_list": "department_user_list",
    "user/{username}/user_retrieve": "user_get",
    "user/create": "user_create",
    "user/{username}/update": "user_update",
    "user/{username}/delete": "user_delete",
    "user/batch_delete": "user_batch_delete",
    "user/import": "user_import",
    "role/list": "role_list",
    "role/create": "role_create",
    "role/update": "role_update",
    "role/delete": "role_delete",
    "role/member_list": "role_user_list",
    "role/add_members": "role_add_members",
    "role/remove_members": "role_remove_members",
    "role_group/list": "role_group_list",
    "role_group/create": "role_group_create",
    "role_group/update": "role_group_update",
    "role_group/delete": "role_group_delete",
    "corp_coop/guest/department_list": "guest_department_list",
    "corp_coop/guest/member_list": "guest_user_list",
    "corp_coop/guest/user_retrieve": "guest_user_get",
}
PRESET: tuple[tuple[str, str, str | None], ...] = (
    ("app/list", "app.list", None),
    ("app/entry/list", "app.entry_list", "body.app_id"),
    ("app/entry/widget/list", "form.widget_list", "body.app_id"),
    ("app/entry/data/{action}", "data.{action}", "body.app_id"),
    ("app/entry/file/get_upload_token", "file.get_upload_token", "body.app_id"),
    ("app/retrieve_all", "app.list", None),
    ("app/{app_id}/entry_retrieve", "app.entry_list", "path.app_id"),
    (f"{_V1_ENTRY}/widgets", "form.widget_list", "path.app_id"),
    *((f"{_V1_ENTRY}/{op}", iface, "path.app_id") for op, iface in _DATA_OPS.items()),
    (f"{_V1_ENTRY}/file/get_upload_token", "file.get_upload_token", "path.app_id"),
    (f"{_V1_ENTRY}/data/{{data_id}}/approval_comments", "workflow.approval_comments", "path.app_id"),
    ("corp/**", "contacts.{rest}", None),
    ("workflow/**", "workflow.{rest}", None),
    *((path, f"contacts.{name}", None) for path, name in _OLDER_CONTACTS.items()),
)


# The platform categories' names, shown beside their ids by GET /api/v1/interfaces.
CATEGORY_NAMES: dict[str, Names] = {
    "contacts": Names("Contacts", "通讯录"),
    "app": Names("Apps", "应用"),
    "form": Names("Forms", "表单"),
    "data": Names("Data", "数据"),
    "file": Names("Files", "文件"),
    "workflow": Names("Workflow", "流程"),
    "crm": Names("CRM", "客户管理"),
}


# The preset's data actions are listed by id, not as the `data.{action}` template, so an
# interface scope naming `data.lst` is refused instead of allowing nothing.
PRESET_IDS: dict[str, tuple[str, ...]] = {"data.{action}": tuple(dict.fromkeys(_DATA_OPS.values()))}


def _template_pattern(template: str) -> re.Pattern[str]:
    """`workflow.{rest}` -> a pattern for the ids it can produce (captures: word characters)."""
    return re.compile("".join(r"\w+" if i % 2 else re.escape(part) for i, part in enumerate(PARAM.split(template))))


def preset_rules(name: str) -> tuple[RouteRule, ...]:
    if name != "jiandaoyun":
        return ()
    return tuple(RouteRule(f"/api/v{{ver}}/{path}", iface, app) for path, iface, app in PRESET)


def split_path(path: str) -> list[str] | None:
    """Decode a request path into segments; None when it is unsafe to route.

    Dot segments, empty segments and encoded `/` or `\\` would let the upstream see a
    different path than the one we authorized, so such paths match no route.
    """
    if not path.startswith("/") or "%2f" in path.lower() or "%5c" in path.lower():
        return None
    raw = path[1:]
    if "%" in raw:
        try:
            raw = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
    segments = raw.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or "\\" in segment or "\x00" in segment:
            return None
    return segments


class RouteTable:
    """Compiled rules. `match` is pure and allocation-light; results are memoised."""

    def __init__(self, rules: tuple[RouteRule, ...], catalogue: tuple[CatalogueCategory, ...] = ()) -> None:
        self._root = _Node()
        self.catalogue: dict[str, list[str]] = {c: [] for c in CATEGORIES}
        self.category_names: dict[str, Names] = dict(CATEGORY_NAMES)
        self.interface_names: dict[str, Names] = {}
        self.own: list[str] = []  # catalogue categories in the order the config writes them
        self.preset = "jiandaoyun"
        self._accepted: list[re.Pattern[str]] = []
        self._cache: dict[tuple[str, str], RouteMatch | None] = {}
        self.app_keys: set[str] = set()  # every name an app id is read by (a second place is checked)
        for i, category in enumerate(catalogue):
            self._add_category(category, f"routes.catalogue[{i}]")
        for i, rule in enumerate(rules):
            self._add(rule, f"routes.rules[{i}]")

    def accepts(self, interface: str) -> bool:
        """Whether a key's interface scope may name this id: a category, a listed interface id,
        or an id a listed template (`workflow.{rest}`) produces."""
        if interface in self.catalogue:
            return True
        return any(pattern.fullmatch(interface) for pattern in self._accepted)

    def listed(self) -> list[str]:
        """The categories GET /api/v1/interfaces shows: the platform's seven under a preset
        (crm may be empty), only those with interfaces under `preset: none`, then the catalogue's."""
        order = list(CATEGORIES) + [c for c in self.own if c not in CATEGORIES]
        if self.preset == "none":
            return [c for c in order if c in self.own or self.catalogue[c]]
        return order

    def _add_category(self, entry: CatalogueCategory, where: str) -> None:
        if not CATEGORY_NAME.fullmatch(entry.category):
            raise RuleError(f"{where}.category", f"1-64 letters, digits, _ and -, got {entry.category!r}")
        if entry.category in self.own:
            raise RuleError(f"{where}.category", f"{entry.category!r} is listed twice")
        _check_names(entry.name, f"{where}.name")
        self.own.append(entry.category)
        self.catalogue.setdefault(entry.category, [])
        self.category_names[entry.category] = entry.name
        for j, interface in enumerate(entry.interfaces):
            at = f"{where}.interfaces[{j}]"
            category, dot, name = interface.id.partition(".")
            if category != entry.category or not dot or not name or not NAME_PART.fullmatch(name):
                message = f"expected {entry.category}.<name> (letters, digits and _), got {interface.id!r}"
                raise RuleError(f"{at}.id", message)
            if interface.id in self.interface_names:
                raise RuleError(f"{at}.id", f"{interface.id!r} is listed twice")
            _check_names(interface.name, f"{at}.name")
            self.interface_names[interface.id] = interface.name
            self.catalogue[category].append(interface.id)
            self._accepted.append(_template_pattern(interface.id))

    def _add(self, rule: RouteRule, where: str, catalogue_ids: dict[str, tuple[str, ...]] | None = None) -> None:
        catalogue_ids = catalogue_ids or {}
        if not rule.path.startswith("/") or "//" in rule.path:
            raise RuleError(f"{where}.path", f"must start with / and have no empty segment: {rule.path!r}")
        node = self._root
        params: dict[str, tuple[int, int, int]] = {}
        rest_index = None
        segments = rule.path[1:].split("/")
        for index, segment in enumerate(segments):
            if segment == "**":
                if index != len(segments) - 1:
                    raise RuleError(f"{where}.path", "** must be the last segment")
                rest_index = index
                break
            names = PARAM.findall(segment)
            if len(names) > 1:
                raise RuleError(f"{where}.path", f"one {{name}} per segment at most: {segment!r}")
            if not names:
                if "{" in segment or "}" in segment or "*" in segment:
                    raise RuleError(f"{where}.path", f"bad segment {segment!r}")
                node = node.literal.setdefault(segment, _Node())
                continue
            name = names[0]
            if name in params or name == "rest":
                raise RuleError(f"{where}.path", f"capture {{{name}}} is used twice or reserved")
            prefix, _, suffix = PARAM.sub("\0", segment).partition("\0")
            params[name] = (index, len(prefix), len(suffix))
            if prefix or suffix:
                node = node.patterns.setdefault((prefix, suffix), _Node())
            else:
                node.capture = node.capture or _Node()
                node = node.capture
        leaf = _Leaf(
            interface_parts=self._template(rule.interface, params, rest_index, where, self.catalogue),
            params=params,
            rest_index=rest_index,
            methods=self._methods(rule.methods, where),
            app_source=None,
            app_key=None,
        )
        if rule.app_id is not None:
            source, dot, key = rule.app_id.partition(".")
            if source not in APP_SOURCES or not dot or not key:
                message = "expected body.<key>, path.<capture>, query.<name> or header.<Name>"
                raise RuleError(f"{where}.app_id", f"{message}, got {rule.app_id!r}")
            if source == "path" and key not in params:
                raise RuleError(f"{where}.app_id", f"the path has no {{{key}}} capture")
            if source == "header" and not HTTP_TOKEN.fullmatch(key):
                raise RuleError(f"{where}.app_id", f"not a header name: {key!r}")
            leaf.app_source, leaf.app_key = source, key.lower() if source == "header" else key
            self.app_keys.add(leaf.app_key)
        (node.rest if rest_index is not None else node.leaves).append(leaf)
        category = rule.interface.partition(".")[0]
        for listed in catalogue_ids.get(rule.interface, (rule.interface,)):
            if listed not in self.catalogue[category]:
                self.catalogue[category].append(listed)
                self._accepted.append(_template_pattern(listed))

    @staticmethod
    def _template(
        template: str,
        params: dict[str, tuple[int, int, int]],
        rest_index: int | None,
        where: str,
        categories: dict[str, list[str]],
    ) -> tuple[str | tuple[str], ...]:
        category, dot, name = template.partition(".")
        if category not in categories or not dot or not name:
            known = ", ".join(categories)
            message = f"expected <category>.<name> with category in {known} (or one of routes.catalogue)"
            raise RuleError(f"{where}.interface", message)
        parts: list[str | tuple[str]] = [category + "."]
        for i, piece in enumerate(PARAM.split(name)):
            if i % 2:
                if piece not in params and not (piece == "rest" and rest_index is not None):
                    raise RuleError(f"{where}.interface", f"{{{piece}}} is not captured by the path")
                parts.append((piece,))
            elif piece:
                if not NAME_PART.fullmatch(piece):
                    raise RuleError(f"{where}.interface", "a name is letters, digits, _ and {captures}")
                parts.append(piece)
        return tuple(parts)

    @staticmethod
    def _methods(methods: tuple[str, ...] | None, where: str) -> frozenset[str] | None:
        if methods is None:
            return None
        for i, method in enumerate(methods):
            if not HTTP_TOKEN.fullmatch(method):
                raise RuleError(f"{where}.methods[{i}]", f"not an HTTP method: {method!r}")
        return frozenset(m.upper() for m in methods)

    def match(self, method: str, path: str) -> RouteMatch | None:
        key = (method, path)
        cache = self._cache
        if key in cache:
            return cache[key]
        segments = split_path(path)
        result = None if segments is None else self._resolve(method, segments)
        if len(path) <= CACHED_PATH:  # bounded in bytes too: long paths are resolved each time
            remember(cache, key, result, CACHE_ENTRIES)
        return result

    def _resolve(self, method: str, segments: list[str]) -> RouteMatch | None:
        leaf = _walk(self._root, segments, 0, method)
        if leaf is None:
            return None
        values: dict[str, str] = {}
        for name, (index, prefix, suffix) in leaf.params.items():
            segment = segments[index]
            values[name] = segment[prefix : len(segment) - suffix]
        if leaf.rest_index is not None:
            values["rest"] = "_".join(segments[leaf.rest_index :])
        interface = "".join(p if isinstance(p, str) else values[p[0]] for p in leaf.interface_parts)
        app_id = values[leaf.app_key] if leaf.app_source == "path" and leaf.app_key is not None else None
        return RouteMatch(interface, leaf.app_source, leaf.app_key, app_id)


def _allows(leaf: _Leaf, method: str) -> bool:
    return leaf.methods is None or method in leaf.methods


def _walk(node: _Node, segments: list[str], i: int, method: str) -> _Leaf | None:
    if i == len(segments):
        for leaf in node.leaves:
            if _allows(leaf, method):
                return leaf
        return None
    segment = segments[i]
    child = node.literal.get(segment)
    if child is not None:
        found = _walk(child, segments, i + 1, method)
        if found is not None:
            return found
    for (prefix, suffix), child in node.patterns.items():
        if len(segment) > len(prefix) + len(suffix) and segment.startswith(prefix) and segment.endswith(suffix):
            found = _walk(child, segments, i + 1, method)
            if found is not None:
                return found
    if node.capture is not None:
        found = _walk(node.capture, segments, i + 1, method)
        if found is not None:
            return found
    for leaf in node.rest:
        if _allows(leaf, method):
            return leaf
    return None


def _check_names(names: Names, where: str) -> None:
    for language in ("en", "zh"):
        text = getattr(names, language).strip()
        if not 1 <= len(text) <= 100 or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text):
            raise RuleError(f"{where}.{language}", "1-100 characters, no control characters")


def compile_routes(routes: Routes) -> RouteTable:
    """Catalogue first (rules may name its categories), user rules (they win over an identical
    preset path), then the preset."""
    table = RouteTable(routes.rules, routes.catalogue)
    table.preset = routes.preset
    for rule in preset_rules(routes.preset):
        table._add(rule, "routes.preset", PRESET_IDS)
    return table

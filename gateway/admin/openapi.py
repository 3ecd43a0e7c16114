"""The OpenAPI document of the admin API, served at /api/v1/openapi.json.

Made, not written, so it cannot drift: the paths from `api.ROUTE_TABLE` (each route's method,
path, permission, summary, body and answers), the key object from `Key.to_json`, the bodies
from the record's field rules (`EDITABLE_FIELDS`, and the limits the parsers check). A new
route or field is in the document by itself; a field without a rule here gets a schema from
its type. OpenAPI 3.1, because its schemas are plain JSON Schema (2020-12): any validator
checks a request or an answer against them (tests/test_openapi.py does, on real answers).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from gateway import __version__
from gateway.admin.api import ROUTE_TABLE, STATUS_OF, Route
from gateway.admin.service import DEFAULT_PAGE, MAX_GRACE, MAX_PAGE, MAX_SEARCH
from gateway.core import record, sealing
from gateway.core.ratelimit import MAX_LIMITS, MAX_REQUESTS, WINDOWS
from gateway.core.routes import CATEGORY_NAME
from gateway.core.tokens import PERMISSIONS, Token
from gateway.store import Audit

Schema = dict[str, Any]
NAMES: dict[str, Any] = {  # a name in both languages (routes.catalogue)
    "type": "object",
    "properties": {"en": {"type": "string"}, "zh": {"type": "string"}},
}
AUDIT_ACTIONS = ("create", "update", "copy", "delete", "reveal", "rotate")
CREATE_ONLY = ("account",)  # set on create, never changed (record.parse_changes)
PLAIN_TEXT = {"Metrics": "text/plain"}  # answers that are not JSON


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _or_null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _class(members: Callable[[str], bool], negate: bool = False) -> str:
    """A regex character class of the BMP characters `members` takes, as \\uXXXX ranges that
    Python, ECMAScript and Rust regexes all read (surrogates are left out: no UTF-8 holds one)."""
    ranges: list[list[int]] = []
    for point in range(0x10000):
        if 0xD800 <= point <= 0xDFFF or not members(chr(point)):
            continue
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    body = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


@functools.cache
def _classes() -> tuple[str, str, str]:
    """What str.strip removes; what a name may hold (record.CONTROL); what it may start and end with."""
    space = _class(str.isspace)
    allowed = _class(lambda c: record.CONTROL.match(c) is not None, negate=True)
    visible = _class(lambda c: c.isspace() or record.CONTROL.match(c) is not None, negate=True)
    return space, allowed, visible


def _text_pattern(padded: bool) -> str:
    """record.text_field as a pattern: 1-MAX_TEXT characters once trimmed (str.strip), none of
    them a control character. `padded`: as sent, before trimming."""
    space, allowed, visible = _classes()
    core = f"{visible}(?:{allowed}{{0,{record.MAX_TEXT - 2}}}{visible})?"
    return f"^{space}*{core}{space}*$" if padded else f"^{core}$"


def _text(padded: bool) -> Schema:
    return {"type": "string", "pattern": _text_pattern(padded)}


def _interface(padded: bool) -> Schema:
    """A category, or `category.name` (record.parse_interfaces); the catalogue decides which
    (the platform's seven, and any of `routes.catalogue`: GET /api/v1/interfaces lists them)."""
    entry = f"(?:{CATEGORY_NAME.pattern})(?:\\.{record.INTERFACE_NAME.pattern})?"
    space = _classes()[0]
    pattern = f"^{space}*{entry}{space}*$" if padded else f"^{entry}$"
    return {"type": "string", "pattern": pattern, "description": "a category or an interface id of the catalogue"}


def _scope(item: Schema, unique: bool, what: str) -> Schema:
    """`"all"`, or a list ([] allows nothing)."""
    listed: Schema = {"type": "array", "items": item}
    if unique:
        listed["uniqueItems"] = True
    return {"anyOf": [{"const": "all"}, listed], "description": f'"all", or a list of {what}; [] allows none'}


def _time(sent: bool = False) -> Schema:
    schema: Schema = {"type": "string", "format": "date-time", "pattern": f"^{record.RFC3339.pattern}$"}
    if sent:
        schema["maxLength"] = record.MAX_TIME_TEXT
    return schema


def _id(prefix: str) -> Schema:
    return {"type": "string", "pattern": f"^{prefix}[{sealing.ID_ALPHABET}]{{26}}$"}


ACCOUNT: Schema = {"type": "string", "pattern": f"^{record.ACCOUNT.pattern}$"}
# The shape of every secret the data path accepts (sealing.could_be_secret): a prefix, then letters and digits.
SECRET: Schema = {
    "type": "string",
    "pattern": f"^{sealing.PREFIX.pattern.decode()}[A-Za-z0-9]{{{sealing.SECRET_LENGTH}}}$",
}
RATE_LIMITS: Schema = {
    "type": "array",
    "maxItems": MAX_LIMITS,
    "description": "at most one limit per window",
    "allOf": [
        {"contains": {"properties": {"per": {"const": per}}}, "minContains": 0, "maxContains": 1} for per in WINDOWS
    ],
    "items": {
        "type": "object",
        "required": ["requests", "per"],
        "properties": {
            "requests": {"type": "integer", "minimum": 1, "maximum": MAX_REQUESTS},
            "per": {"enum": list(WINDOWS)},
        },
        "additionalProperties": False,
    },
}


def _stored_rules() -> dict[str, Schema]:
    """The key object's fields as the API shows them (trimmed, de-duplicated, normalized)."""
    return {
        "id": _id("k_"),
        "name": _text(padded=False),
        "account": ACCOUNT,
        "key_masked": {"type": "string", "description": "the secret's first 4 characters, ****, its last 4"},
        "apps": _scope(_text(padded=False), True, "app ids"),
        "interfaces": _scope(_interface(padded=False), True, "categories and interface ids"),
        "ip_whitelist": {
            "type": "array",
            "uniqueItems": True,
            "items": {"type": "string"},
            "description": "IPv4 addresses, one-* ranges (10.0.0.*), CIDR blocks; [] allows any IP",
        },
        "created_at": _time(),
        "updated_at": _time(),
        "last_used_at": _or_null(_time()),
        "request_count": {"type": "integer", "minimum": 0},
        "expires_at": _or_null(_time()),
        "previous_expires_at": _or_null(_time()),
        "rate_limits": RATE_LIMITS,
    }


def _sent_rules() -> dict[str, Schema]:
    """The fields as a body may send them: names and entries are trimmed and lists
    de-duplicated by the server, so padding and repeats are valid."""
    return {
        "name": _text(padded=True),
        "apps": _scope(_text(padded=True), False, "app ids"),
        "interfaces": _scope(_interface(padded=True), False, "categories and interface ids"),
        "ip_whitelist": {
            "type": "array",
            "items": {"type": "string"},
            "description": "IPv4 addresses, one-* ranges (10.0.0.*), CIDR blocks; trimmed, checked in order, "
            "de-duplicated, then counted against limits.ips_per_key (default 50); [] allows any IP",
        },
        "expires_at": _or_null(_time(sent=True)),
    }


def _from_type(hint: Any) -> Schema:
    """A field without a rule here: its JSON type, read from its annotation."""
    simple = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    if hint in simple:
        return {"type": simple[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_from_type(arg) for arg in args]}
    if origin in (tuple, list, frozenset, set):
        return {"type": "array", "items": _from_type(args[0]) if args else {}}
    if origin is dict:
        return {"type": "object"}
    return {}


def _blank(hint: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:
        return None
    origin = typing.get_origin(hint) or hint
    return {str: "", bool: False, int: 0, float: 0.0, tuple: (), list: [], dict: {}}.get(origin)


def _shown_fields(cls: type) -> list[str]:
    """The members of `cls.to_json()`, read off an instance with blank values."""
    hints = typing.get_type_hints(cls)
    blank = {
        field.name: _blank(hints[field.name])
        for field in dataclasses.fields(cls)
        if field.init and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    }
    return list(cls(**blank).to_json())


def _object(fields: list[str], rules: dict[str, Schema], hints: dict[str, Any], required: bool = True) -> Schema:
    properties = {name: rules.get(name) or _from_type(hints.get(name)) for name in fields}
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(fields)
    return schema


def _with(schema: Schema, name: str, member: Schema) -> Schema:
    """`schema` with one more required member (a secret shown once)."""
    return {**schema, "required": [*schema["required"], name], "properties": {**schema["properties"], name: member}}


def _page(item: str) -> Schema:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": _ref(item)}, "next_cursor": _or_null({"type": "string"})},
        "additionalProperties": False,
    }


def schemas() -> dict[str, Schema]:
    """Every named schema of the document."""
    key_hints = typing.get_type_hints(record.Key)
    stored, sent = _stored_rules(), _sent_rules()
    key = _object(_shown_fields(record.Key), stored, key_hints)
    editable = sorted(record.EDITABLE_FIELDS)
    changes = _object(editable, {**stored, **sent}, key_hints, required=False)
    create = _object(sorted([*editable, *CREATE_ONLY]), {**stored, **sent}, key_hints, required=False)
    token = _object(
        _shown_fields(Token),
        {
            "id": _id("t_"),
            "name": _text(padded=False),
            "account": _or_null(ACCOUNT),
            "permissions": {"type": "array", "uniqueItems": True, "items": {"enum": list(PERMISSIONS)}},
            "created_at": _time(),
            "last_used_at": _or_null(_time()),
        },
        typing.get_type_hints(Token),
    )
    entry = _object(
        _shown_fields(Audit),
        {
            "id": {"type": "integer", "minimum": 1},
            "at": _time(),
            "actor": {"type": "string", "description": "the token that acted: its id, or root"},
            "action": {"enum": list(AUDIT_ACTIONS)},
            "key_id": _or_null(_id("k_")),
            "before": {"type": "object"},
            "after": {"type": "object"},
            "changes": {"type": "object", "description": "per field: {before, after}"},
        },
        typing.get_type_hints(Audit),
    )
    return {
        "Key": key,
        "KeyWithSecret": _with(key, "key", SECRET),
        "KeyCreate": create,
        "KeyChanges": changes,
        "KeyPage": _page("Key"),
        "Secret": {
            "type": "object",
            "required": ["id", "key"],
            "properties": {"id": _id("k_"), "key": SECRET},
            "additionalProperties": False,
        },
        "Rotation": {
            "type": "object",
            "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_GRACE, "default": 0}},
            "additionalProperties": False,
        },
        "Token": token,
        "TokenWithSecret": _with(token, "token", {"type": "string", "minLength": 1}),
        "TokenList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": _ref("Token")}},
            "additionalProperties": False,
        },
        "TokenRequest": {
            "type": "object",
            "required": ["name", "permissions"],
            "properties": {
                "name": _text(padded=True),
                "account": _or_null(ACCOUNT),
                "permissions": {"type": "array", "minItems": 1, "items": {"enum": list(PERMISSIONS)}},
            },
            "additionalProperties": False,
        },
        "AuditEntry": entry,
        "AuditPage": _page("AuditEntry"),
        "Interfaces": {
            "type": "object",
            "required": ["categories"],
            "properties": {
                "categories": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "interfaces"],
                        "properties": {
                            "id": {"type": "string", "pattern": f"^{CATEGORY_NAME.pattern}$"},
                            "interfaces": {"type": "array", "items": {"type": "string"}},
                            "name": NAMES,
                            "interface_names": {"type": "object", "additionalProperties": NAMES},
                        },
                    },
                }
            },
            "additionalProperties": False,
        },
        "Settings": {
            "type": "object",
            "required": ["limits", "accounts"],
            "properties": {
                "limits": {
                    "type": "object",
                    "required": ["keys_per_account", "ips_per_key"],
                    "properties": {
                        "keys_per_account": {"type": "integer", "minimum": 1},
                        "ips_per_key": {"type": "integer", "minimum": 1},
                    },
                },
                "accounts": {
                    "type": "object",
                    "description": "keys per account (a token with an account: its own)",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
            },
            "additionalProperties": False,
        },
        "Me": {
            "type": "object",
            "required": ["actor", "account", "permissions"],
            "properties": {
                "actor": {"type": "string"},
                "account": _or_null(ACCOUNT),
                "permissions": {"type": "array", "items": {"enum": list(PERMISSIONS)}},
            },
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
            "additionalProperties": False,
        },
        "Document": {"type": "object", "required": ["openapi", "info", "paths"]},
        "Metrics": {"type": "string", "description": "the Prometheus text format"},
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string", "description": "the field at fault, such as ip_whitelist[3]"},
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        },
    }


QUERY: dict[str, Schema] = {
    "account": {"schema": ACCOUNT, "description": "only this account's keys"},
    "limit": {
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
        "description": "items per page",
    },
    "cursor": {"schema": {"type": "string"}, "description": "next_cursor of the previous page"},
    "q": {
        "schema": {"type": "string", "maxLength": MAX_SEARCH},
        "description": "a name (any part, any case), a key id (its start) or a masked key (any part)",
    },
    "status": {"schema": {"enum": ["enabled", "disabled"]}, "description": "only enabled or disabled keys"},
    "key_id": {"schema": _id("k_"), "description": "only this key's entries"},
}


def _codes() -> dict[int, list[str]]:
    codes: dict[int, list[str]] = {}
    for code, status in STATUS_OF.items():
        codes.setdefault(status, []).append(code)
    return codes


def error_statuses(route: Route) -> set[int]:
    """The errors that follow from a route's shape (api.Operation says which)."""
    about = route.about
    statuses: set[int] = set()
    if not about.open:
        statuses |= {401, 503}  # the token is checked, a stored one in the store
    if about.permission is not None:
        statuses.add(403)
    if "{" in route.path:
        statuses.add(404)
    if about.request is not None:
        statuses |= {400, 413, 422}
    if about.query:
        statuses.add(422)
    return statuses


def _answer(status: int, schema: str | None, codes: dict[int, list[str]]) -> Schema:
    phrase = HTTPStatus(status).phrase
    if schema is None:
        return {"description": phrase}
    if schema == "Error":
        listed = codes.get(status, [])
        code: Schema = {"properties": {"error": {"properties": {"code": {"enum": listed}}}}}
        return {
            "description": f"{phrase}: {', '.join(listed)}",
            "content": {"application/json": {"schema": {"allOf": [_ref("Error"), code]}}},
        }
    media = PLAIN_TEXT.get(schema, "application/json")
    return {"description": phrase, "content": {media: {"schema": _ref(schema)}}}


def operation(route: Route, codes: dict[int, list[str]]) -> Schema:
    """One route of the table as an OpenAPI operation."""
    about = route.about
    answers: dict[int, str | None] = dict.fromkeys(error_statuses(route), "Error")
    answers.update(about.answers)
    if about.open:
        needs = "Needs no token."
    elif about.permission is None:
        needs = "Any valid admin token."
    else:
        needs = f"Needs the `{about.permission}` permission."
    described: Schema = {
        "operationId": route.handler.__name__,
        "summary": about.summary,
        "description": needs,
        "x-permission": about.permission,
    }
    if about.open:
        described["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1] for part in route.path.split("/") if part.startswith("{"))
    ]
    parameters += [{"name": name, "in": "query", "required": False, **QUERY[name]} for name in about.query]
    if parameters:
        described["parameters"] = parameters
    if about.request is not None:
        described["requestBody"] = {
            "required": about.body_required,
            "content": {"application/json": {"schema": _ref(about.request)}},
        }
    described["responses"] = {str(status): _answer(status, answers[status], codes) for status in sorted(answers)}
    return described


def document() -> dict[str, Any]:
    """The whole document, from ROUTE_TABLE and the record's rules; a copy of its own, since
    schemas are shared within it and with this module."""
    codes = _codes()
    paths: dict[str, Schema] = {}
    for route in ROUTE_TABLE:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route, codes)
    described = {
        "openapi": "3.1.0",
        "info": {
            "title": "API-key gateway admin API",
            "version": __version__,
            "description": "Made from the admin API's route table and the key record's field rules.",
        },
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"admin": []}],
        "paths": paths,
    }
    return copy.deepcopy(described)

"""The OpenAPI 3 description of the admin API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.core.record import CATEGORIES
from gateway.core.tokens import PERMISSIONS

ACCOUNT_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9._@:-]{1,64}$"}
SCOPE = {"oneOf": [{"type": "string", "enum": ["all"]}, {"type": "array", "items": {"type": "string"}}]}
TIME = {"type": "string", "format": "date-time"}
KEY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^k_[0-9a-z]{26}$"},
    "name": {"type": "string"},
    "account": ACCOUNT_SCHEMA,
    "key_masked": {"type": "string"},
    "enabled": {"type": "boolean"},
    "apps": SCOPE,
    "interfaces": SCOPE,
    "ip_whitelist": {"type": "array", "items": {"type": "string"}},
    "created_at": TIME,
    "updated_at": TIME,
    "last_used_at": {"oneOf": [TIME, {"type": "null"}]},
    "request_count": {"type": "integer", "minimum": 0},
    "expires_at": {"oneOf": [TIME, {"type": "null"}]},
    "previous_expires_at": {"oneOf": [TIME, {"type": "null"}]},
}
KEY = {"type": "object", "required": list(KEY_PROPERTIES), "properties": KEY_PROPERTIES}
KEY_WITH_SECRET = {
    "allOf": [
        {"$ref": "#/components/schemas/Key"},
        {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}},
    ]
}
EDITABLE = {
    "name": {"type": "string", "minLength": 1, "maxLength": 100},
    "apps": SCOPE,
    "interfaces": SCOPE,
    "ip_whitelist": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
    "enabled": {"type": "boolean"},
    "expires_at": {"type": "string", "format": "date-time", "nullable": True},
}
TOKEN_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^t_[0-9a-z]{26}$"},
    "name": {"type": "string"},
    "account": {"type": "string", "nullable": True},
    "permissions": {"type": "array", "items": {"type": "string", "enum": list(PERMISSIONS)}},
    "created_at": TIME,
    "last_used_at": {"oneOf": [TIME, {"type": "null"}]},
}
TOKEN = {"type": "object", "required": list(TOKEN_PROPERTIES), "properties": TOKEN_PROPERTIES}
TOKEN_WITH_SECRET = {
    "allOf": [
        {"$ref": "#/components/schemas/Token"},
        {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
    ]
}
TOKEN_REQUEST = {
    "type": "object",
    "required": ["name", "permissions"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "account": {**ACCOUNT_SCHEMA, "nullable": True},
        "permissions": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(PERMISSIONS)}},
    },
    "additionalProperties": False,
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
        }
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "invalid JSON",
        401: "missing or wrong admin token",
        403: "the token lacks the permission, or acts in another account",
        404: "no such key",
        409: "key limit reached",
        413: "body too large",
        422: "a field breaks a rule",
        503: "store unavailable",
    }
    return {str(s): _json(_ref("Error"), names[s]) for s in statuses}


ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "string"}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]


def document() -> dict[str, Any]:
    common = (401, 403, 503)
    body = {"required": False, "content": {"application/json": {"schema": _ref("KeyFields")}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "API-key gateway admin API", "version": __version__},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Key": KEY,
                "KeyWithSecret": KEY_WITH_SECRET,
                "KeyFields": {
                    "type": "object",
                    "properties": {**EDITABLE, "account": ACCOUNT_SCHEMA},
                    "additionalProperties": False,
                },
                "Error": ERROR,
                "Token": TOKEN,
            },
        },
        "security": [{"admin": []}],
        "paths": {
            "/api/v1/keys": {
                "post": {
                    "summary": "Create a key",
                    "requestBody": body,
                    "responses": {
                        "201": _json(_ref("KeyWithSecret"), "created"),
                        **_errors(400, 409, 413, 422, *common),
                    },
                },
                "get": {
                    "summary": "List keys",
                    "parameters": [
                        {"name": "account", "in": "query", "schema": {"type": "string"}},
                        *PAGING,
                        {
                            "name": "q",
                            "in": "query",
                            "description": "name (any part, any case), key id (its start) or masked key (any part)",
                            "schema": {"type": "string", "maxLength": 100},
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["enabled", "disabled"]},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items", "next_cursor"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Key")},
                                    "next_cursor": {"type": "string", "nullable": True},
                                },
                            },
                            "a page of keys",
                        ),
                        **_errors(422, *common),
                    },
                },
            },
            "/api/v1/keys/{id}": {
                "parameters": [ID_PARAM],
                "get": {
                    "summary": "Show a key",
                    "responses": {"200": _json(_ref("Key"), "the key"), **_errors(404, *common)},
                },
                "patch": {
                    "summary": "Change a key",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": EDITABLE, "additionalProperties": False}
                            }
                        },
                    },
                    "responses": {"200": _json(_ref("Key"), "the changed key"), **_errors(400, 404, 413, 422, *common)},
                },
                "delete": {
                    "summary": "Delete a key",
                    "responses": {"204": {"description": "deleted"}, **_errors(404, *common)},
                },
            },
            "/api/v1/keys/{id}/secret": {
                "parameters": [ID_PARAM],
                "get": {
                    "summary": "Reveal a key's secret (audited)",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["id", "key"],
                                "properties": {"id": {"type": "string"}, "key": {"type": "string"}},
                            },
                            "the secret",
                        ),
                        **_errors(404, *common),
                    },
                },
            },
            "/api/v1/keys/{id}/copy": {
                "parameters": [ID_PARAM],
                "post": {
                    "summary": "Copy a key: same scopes, a new secret",
                    "responses": {"201": _json(_ref("KeyWithSecret"), "the copy"), **_errors(404, 409, *common)},
                },
            },
            "/api/v1/keys/{id}/rotate": {
                "parameters": [ID_PARAM],
                "post": {
                    "summary": "A new secret for the key; the previous one keeps working for grace_seconds (audited)",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "grace_seconds": {"type": "integer", "minimum": 0, "maximum": 604800}
                                    },
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_ref("KeyWithSecret"), "the key with its new secret"),
                        **_errors(400, 404, 422, *common),
                    },
                },
            },
            "/api/v1/tokens": {
                "post": {
                    "summary": "Create an admin token (its secret is shown once)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": TOKEN_REQUEST}},
                    },
                    "responses": {
                        "201": _json(TOKEN_WITH_SECRET, "the token and its secret"),
                        **_errors(400, 422, *common),
                    },
                },
                "get": {
                    "summary": "List admin tokens (never their secrets)",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items"],
                                "properties": {"items": {"type": "array", "items": _ref("Token")}},
                            },
                            "the tokens this token may manage",
                        ),
                        **_errors(*common),
                    },
                },
            },
            "/api/v1/tokens/{id}": {
                "parameters": [ID_PARAM],
                "delete": {
                    "summary": "Revoke an admin token (refused on its next call everywhere)",
                    "responses": {"204": {"description": "revoked"}, **_errors(404, *common)},
                },
            },
            "/api/v1/me": {
                "get": {
                    "summary": "The calling token: its id (or root), account and permissions",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["actor", "account", "permissions"],
                                "properties": {
                                    "actor": {"type": "string"},
                                    "account": {"type": "string", "nullable": True},
                                    "permissions": {
                                        "type": "array",
                                        "items": {"type": "string", "enum": list(PERMISSIONS)},
                                    },
                                },
                            },
                            "who is calling",
                        ),
                        **_errors(401, 503),
                    },
                }
            },
            "/api/v1/settings": {
                "get": {
                    "summary": "The limits the console shows, and how many keys each account has",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["limits", "accounts"],
                                "properties": {
                                    "limits": {
                                        "type": "object",
                                        "required": ["keys_per_account", "ips_per_key"],
                                        "properties": {
                                            "keys_per_account": {"type": "integer"},
                                            "ips_per_key": {"type": "integer"},
                                        },
                                    },
                                    "accounts": {
                                        "type": "object",
                                        "description": "keys per account (a scoped token: its own)",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                },
                            },
                            "the limits",
                        ),
                        **_errors(*common),
                    },
                }
            },
            "/api/v1/interfaces": {
                "get": {
                    "summary": "The interface catalogue",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["categories"],
                                "properties": {
                                    "categories": {
                                        "type": "array",
                                        "minItems": len(CATEGORIES),
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "interfaces"],
                                            "properties": {
                                                "id": {"type": "string", "enum": list(CATEGORIES)},
                                                "interfaces": {"type": "array", "items": {"type": "string"}},
                                            },
                                        },
                                    }
                                },
                            },
                            "categories and their interfaces",
                        ),
                        **_errors(*common),
                    },
                }
            },
            "/api/v1/audit": {
                "get": {
                    "summary": "The audit trail of admin writes and reveals",
                    "parameters": [{"name": "key_id", "in": "query", "schema": {"type": "string"}}, *PAGING],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items", "next_cursor"],
                                "properties": {
                                    "items": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "at", "action", "key_id", "changes"],
                                            "properties": {
                                                "id": {"type": "integer"},
                                                "at": TIME,
                                                "action": {
                                                    "type": "string",
                                                    "enum": ["create", "update", "copy", "delete", "reveal", "rotate"],
                                                },
                                                "key_id": {"type": "string"},
                                                "actor": {"type": "string"},
                                                "before": {"type": "object"},
                                                "after": {"type": "object"},
                                                "changes": {"type": "object"},
                                            },
                                        },
                                    },
                                    "next_cursor": {"type": "string", "nullable": True},
                                },
                            },
                            "a page of audit entries, oldest first",
                        ),
                        **_errors(422, *common),
                    },
                }
            },
        },
    }

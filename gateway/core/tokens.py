"""Admin tokens and what they may do. Pure: the records, the permission rules, the checks.

The root token (config, environment or generated file) may do everything in every account.
Other tokens carry a list of permissions and optionally one account; they are stored as
digests and created by holders of `tokens:manage`, who may grant only what they hold, and
only within their own account when they have one; they see and revoke only such tokens too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.core.errors import RuleError
from gateway.core.record import parse_account, text_field

PERMISSIONS = ("keys:read", "keys:write", "keys:reveal", "audit:read", "tokens:manage", "metrics:read")
ROOT_ID = "root"


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    name: str
    account: str | None
    permissions: tuple[str, ...]
    digest: str
    created_at: str
    last_used_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "account": self.account,
            "permissions": list(self.permissions),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the admin API: `id` for the audit trail, `account` None for every account."""

    id: str
    account: str | None
    permissions: frozenset[str]

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def sees(self, account: str) -> bool:
        return self.account is None or self.account == account

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise RuleError(None, f"this token lacks the {permission} permission", "forbidden")

    def manages(self, token: Token) -> bool:
        """Whether a holder of `tokens:manage` may see and revoke `token`: it holds every
        permission the token carries, and the token acts within its account when it has one
        (a token without an account acts in every account: only a manager without one may)."""
        if self.account is not None and token.account != self.account:
            return False
        return self.permissions.issuperset(token.permissions)

    def account_for(self, requested: str | None) -> str | None:
        """The account a create acts in: the token's own when it has one; naming another is 403."""
        if self.account is None:
            return requested
        if requested is not None and requested != self.account:
            raise RuleError("account", f"this token acts in account {self.account!r} only", "forbidden")
        return self.account


ROOT = Principal(ROOT_ID, None, frozenset(PERMISSIONS))


def principal_of(token: Token) -> Principal:
    return Principal(token.id, token.account, frozenset(token.permissions))


def parse_token_request(body: Any, creator: Principal) -> tuple[str, str | None, tuple[str, ...]]:
    """`{name, account?, permissions}` -> (name, account, permissions); the creator may grant
    only permissions it holds, in its own account when it has one."""
    if not isinstance(body, dict):
        raise RuleError(None, "the body must be a JSON object", "invalid_json")
    for field in body:
        if field not in ("name", "account", "permissions"):
            raise RuleError(field, f"unknown field {field}")
    name = text_field(body.get("name"), "name")
    account = body.get("account")
    account = None if account is None else parse_account(account)
    permissions = body.get("permissions")
    if not isinstance(permissions, list) or not permissions:
        raise RuleError("permissions", f"permissions must be a non-empty list of: {', '.join(PERMISSIONS)}")
    for i, permission in enumerate(permissions):
        if permission not in PERMISSIONS:
            field = f"permissions[{i}]"
            raise RuleError(field, f"{field}: unknown permission {permission!r} (known: {', '.join(PERMISSIONS)})")
    granted = tuple(dict.fromkeys(permissions))
    missing = [p for p in granted if not creator.may(p)]
    if missing:
        raise RuleError(
            "permissions", f"a token can only grant what it holds; it lacks {', '.join(missing)}", "forbidden"
        )
    return name, creator.account_for(account), granted

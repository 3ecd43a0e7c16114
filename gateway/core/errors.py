"""The one error for input that breaks a rule: a config value, an admin API field, a
whitelist entry, a route rule. It names the field, so every layer can say which one."""

from __future__ import annotations


class RuleError(ValueError):
    """`field` names the culprit (`ip_whitelist[3]`, `routes.rules[0].path`), `message`
    says what is wrong, `code` is the admin API's error code."""

    def __init__(self, field: str | None, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code

    def __str__(self) -> str:
        """One line for an operator: the field, then what is wrong (the field said once)."""
        if self.field and not self.message.startswith(self.field):
            return f"{self.field}: {self.message}"
        return self.message

"""The repository explains itself: every config field is in the reference and the example,
every admin operation is in the API reference, and the documents the README links exist."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import yaml

from gateway.admin.openapi import document
from gateway.config import Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def config_fields(cls: type = Config, prefix: str = "") -> list[str]:
    """Every value a config file may set, dotted (`listen.tls.cert`); sections themselves
    (`listen`) only when they may be null (`listen.tls`)."""
    hints = typing.get_type_hints(cls)
    fields = []
    for field in dataclasses.fields(cls):
        if field.name == "secret_key":  # environment only (GATEWAY_SECRET_KEY)
            continue
        path = f"{prefix}{field.name}"
        kind = hints[field.name]
        nested = [t for t in typing.get_args(kind) if dataclasses.is_dataclass(t)]
        if dataclasses.is_dataclass(kind):
            fields.extend(config_fields(kind, f"{path}."))
        elif nested:  # optional section
            fields.append(path)
            fields.extend(config_fields(nested[0], f"{path}."))
        else:
            fields.append(path)
    return fields


def test_every_config_field_is_in_the_reference() -> None:
    reference = (DOCS / "configuration.md").read_text()
    missing = [path for path in config_fields() if f"`{path}`" not in reference]
    assert missing == []


def test_every_config_field_is_in_the_example() -> None:
    text = (ROOT / "config.example.yaml").read_text()
    example = yaml.safe_load(text)

    def present(path: str) -> bool:
        node = example
        for part in path.split("."):
            if not isinstance(node, dict):
                return False
            if part not in node:
                return False
            node = node[part]
        return True

    def shown(path: str) -> bool:  # a key (at any depth) under an optional section that is null by default
        parent, _, leaf = path.rpartition(".")
        while parent and not present(parent):
            parent = parent.rpartition(".")[0]
        return bool(parent) and re.search(rf"\b{leaf}:", text) is not None

    missing = [path for path in config_fields() if not present(path) and not shown(path)]
    assert missing == []


def test_the_example_is_the_defaults() -> None:
    from gateway.config import load_config

    example = load_config(str(ROOT / "config.example.yaml"), {})
    defaults = load_config(None, {"GATEWAY_CONFIG": str(ROOT / "config.example.yaml")})
    assert example == defaults
    blank = Config()
    for section in ("listen", "upstream", "auth", "plugins", "limits", "routes", "log"):
        assert getattr(example, section) == getattr(blank, section), section
    assert (example.workers, example.shutdown_timeout) == (blank.workers, blank.shutdown_timeout)


def test_every_admin_operation_is_in_the_api_reference() -> None:
    reference = (DOCS / "admin-api.md").read_text()
    operations = [
        f"{method.upper()} {path}"
        for path, item in document()["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
    ]
    assert operations
    missing = [op for op in operations if f"`{op}" not in reference]
    assert missing == []


def test_readme_links_resolve_and_commands_are_there() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        assert (ROOT / target).exists(), target
    for page in DOCS.glob("*.md"):
        assert f"docs/{page.name}" in readme, page.name
    assert (ROOT / "LICENSE").is_file() and (ROOT / "CHANGELOG.md").is_file()

"""`gateway` commands: serve, check-config, and `keys ...` over the admin API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from gateway.config import Config, load_config
from gateway.core.errors import RuleError


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except RuleError as err:
        raise SystemExit(f"gateway: config error: {err}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from gateway.runtime.gateway import StartupError, serve

    try:
        if config.worker_count > 1:
            from gateway.runtime.workers import supervise

            return supervise(config)
        import uvloop

        uvloop.run(serve(config))
    except StartupError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"gateway: cannot start: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the database schema, then exit (serve does this too, at start)."""
    import asyncio

    from gateway.store import SchemaTooNew, StoreUnavailable, open_store

    config = _load(args.config)

    async def migrate() -> None:
        store = open_store(config.database)
        await store.open()
        await store.close()

    try:
        asyncio.run(migrate())
    except (StoreUnavailable, SchemaTooNew) as err:
        print(f"gateway: database: {err}", file=sys.stderr)
        return 1
    print("database schema is up to date")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except RuleError as err:
        print(f"gateway: config error: {err}", file=sys.stderr)
        return 1
    print("config ok")
    return 0


class AdminClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                error = json.loads(raw)["error"]
                field = f" ({error['field']})" if error.get("field") else ""
                message = f"{error['code']}: {error['message']}{field}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {err.code}"
            raise SystemExit(f"gateway: {message}") from None
        except urllib.error.URLError as err:
            raise SystemExit(f"gateway: cannot reach the admin API at {self.url}: {err.reason}") from None
        return json.loads(raw) if raw else None


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return args.token
    if os.environ.get("GATEWAY_ADMIN_TOKEN"):
        return os.environ["GATEWAY_ADMIN_TOKEN"]
    config = _load(args.config)
    if config.admin.token:
        return config.admin.token
    path = config.data_dir / "admin.token"
    if path.is_file():
        return path.read_text().strip()
    raise SystemExit(f"gateway: no admin token: pass --token, set GATEWAY_ADMIN_TOKEN, or create {path}")


def _admin_url(args: argparse.Namespace) -> str:
    if args.admin_url:
        return args.admin_url
    if os.environ.get("GATEWAY_ADMIN_URL"):
        return os.environ["GATEWAY_ADMIN_URL"]
    config = _load(args.config)
    host = "127.0.0.1" if config.admin.host in ("0.0.0.0", "::", "") else config.admin.host
    return f"http://{host}:{config.admin.port}"


def _scope(text: str | None) -> Any:
    if text is None:
        return None
    return "all" if text == "all" else [item.strip() for item in text.split(",") if item.strip()]


def _summary(value: Any) -> str:
    return value if isinstance(value, str) else ",".join(value) or "(none)"


def _print_keys(keys: list[dict[str, Any]]) -> None:
    columns = ("id", "name", "account", "key_masked", "status", "apps", "interfaces", "ips", "last_used_at")
    rows = [
        (
            k["id"],
            k["name"],
            k["account"],
            k["key_masked"],
            "enabled" if k["enabled"] else "disabled",
            _summary(k["apps"]),
            _summary(k["interfaces"]),
            str(len(k["ip_whitelist"])),
            k["last_used_at"] or "-",
        )
        for k in keys
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    for row in (columns, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_key(key: dict[str, Any]) -> None:
    for name, value in key.items():
        shown = value if isinstance(value, str) or value is None else json.dumps(value)
        print(f"{name:>13}: {shown if shown is not None else '-'}")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.apps is not None:
        body["apps"] = _scope(args.apps)
    if args.interfaces is not None:
        body["interfaces"] = _scope(args.interfaces)
    if args.ip is not None:
        body["ip_whitelist"] = [ip for ip in args.ip if ip]
    return body


def cmd_keys(args: argparse.Namespace) -> int:
    client = AdminClient(_admin_url(args), _token(args))
    action = args.action
    result: Any
    if action == "list":
        items, cursor = [], None
        while True:
            query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
            if args.account:
                query += "&account=" + urllib.request.quote(args.account)
            page = client.call("GET", "/api/v1/keys" + query)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        if args.json:
            print(json.dumps(items, indent=2))
        else:
            _print_keys(items)
        return 0
    if action == "create":
        body = _fields(args)
        if args.account:
            body["account"] = args.account
        if args.disabled:
            body["enabled"] = False
        result = client.call("POST", "/api/v1/keys", body)
    elif action == "show":
        result = client.call("GET", f"/api/v1/keys/{args.id}")
    elif action == "reveal":
        result = client.call("GET", f"/api/v1/keys/{args.id}/secret")
        print(json.dumps(result) if args.json else result["key"])
        return 0
    elif action == "update":
        result = client.call("PATCH", f"/api/v1/keys/{args.id}", _fields(args))
    elif action in ("enable", "disable"):
        result = client.call("PATCH", f"/api/v1/keys/{args.id}", {"enabled": action == "enable"})
    elif action == "copy":
        result = client.call("POST", f"/api/v1/keys/{args.id}/copy")
    else:  # delete
        client.call("DELETE", f"/api/v1/keys/{args.id}")
        print(json.dumps({"deleted": args.id}) if args.json else f"deleted {args.id}")
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_key(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="API-key authorization gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config (default: $GATEWAY_CONFIG or ./config.yaml)")
    serve.set_defaults(func=cmd_serve)
    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument("--config", help="YAML config (default: $GATEWAY_CONFIG or ./config.yaml)")
    migrate.set_defaults(func=cmd_migrate)
    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("--config", help="YAML config to check")
    check.set_defaults(func=cmd_check_config)

    keys = commands.add_parser("keys", help="manage API keys through the admin API")
    keys.add_argument("--admin-url", help="admin API URL (default: from the config)")
    keys.add_argument("--token", help="admin token (default: $GATEWAY_ADMIN_TOKEN or the token file)")
    keys.add_argument("--config", help="config used to find the admin URL and token file")
    keys.add_argument("--json", action="store_true", help="print JSON for scripts")
    actions = keys.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list keys")
    listing.add_argument("--account")
    for name in ("create", "update"):
        sub = actions.add_parser(name, help=f"{name} a key")
        if name == "update":
            sub.add_argument("id")
        else:
            sub.add_argument("--account")
            sub.add_argument("--disabled", action="store_true", help="create it disabled")
        sub.add_argument("--name")
        sub.add_argument("--apps", help='"all" or comma-separated app ids ("" for none)')
        sub.add_argument("--interfaces", help='"all" or comma-separated categories / interface ids')
        sub.add_argument("--ip", action="append", help="whitelist entry (repeat; --ip '' clears)")
    for name in ("show", "reveal", "enable", "disable", "copy", "delete"):
        actions.add_parser(name, help=f"{name} a key").add_argument("id")
    keys.set_defaults(func=cmd_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

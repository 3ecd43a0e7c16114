"""`gateway` commands: serve, check-config, and `keys ...` over the admin API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gateway.config import Config, load_config
from gateway.core.errors import RuleError
from gateway.core.ratelimit import parse_rate
from gateway.core.record import iso_time


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except RuleError as err:
        raise SystemExit(f"gateway: config error: {err}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config.database.startswith("file://") and config.secret_key:
        # DB-less: the file store is opened from its URL alone and finds the secret key in the
        # environment (store/file.py); a key given in the config file reaches it (and workers) so
        os.environ["GATEWAY_SECRET_KEY"] = config.secret_key
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
            raise SystemExit(f"gateway: {self._explain(err.code, err.read())}") from None
        except urllib.error.URLError as err:
            raise SystemExit(f"gateway: cannot reach the admin API at {self.url}: {err.reason}") from None
        return json.loads(raw) if raw else None

    def _explain(self, status: int, raw: bytes) -> str:
        """One line from an error answer: the admin API's `{"error": ...}`, or a hint."""
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]
            message = f"{error.get('code')}: {error.get('message')}"
            field = error.get("field")
            return f"{message} ({field})" if field and field not in message else message
        if isinstance(answer, dict) and "reason" in answer:  # the data path's refusal shape
            return f"HTTP {status} from {self.url}: that is the proxy port, not the admin API (--admin-url)"
        return f"HTTP {status} from {self.url}"


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
    given = args.admin_url or os.environ.get("GATEWAY_ADMIN_URL")
    if given:
        return given if "://" in given else f"http://{given}"  # 127.0.0.1:8081 means http
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
    if args.expires is not None:
        body["expires_at"] = None if args.expires in ("", "never") else _expiry(args.expires)
    if args.rate is not None:
        try:
            body["rate_limits"] = [parse_rate(rate).to_json() for rate in args.rate if rate]
        except RuleError as err:
            raise SystemExit(f"gateway: --rate: {err.message}") from None
    return body


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(text: str, flag: str) -> int:
    """`90s`, `15m`, `1h`, `30d`, `2w` (or a plain number of seconds)."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in UNITS else (text, "s")
    if not number.isdigit():
        raise SystemExit(f"gateway: {flag}: expected a duration such as 30d, 12h or 90m, got {text!r}")
    return int(number) * UNITS[unit]


def _expiry(text: str) -> str:
    """A duration from now, or an RFC 3339 time as it is."""
    if text[:1].isdigit() and text[-1] in UNITS and text[:-1].isdigit():
        return iso_time(time.time() + _seconds(text, "--expires"))
    return text


def _whitelist_edit(client: AdminClient, args: argparse.Namespace, body: dict[str, Any]) -> None:
    """`update`: --ip replaces the whole whitelist (said on stderr); --add-ip / --remove-ip edit it."""
    if args.ip is not None and (args.add_ip or args.remove_ip):
        raise SystemExit("gateway: use --ip (replace the whole whitelist) or --add-ip/--remove-ip, not both")
    if args.ip is not None:
        print(f"replacing the whole whitelist with {len(body['ip_whitelist'])} entries", file=sys.stderr)
    elif args.add_ip or args.remove_ip:
        current = client.call("GET", f"/api/v1/keys/{args.id}")["ip_whitelist"]
        removed = set(args.remove_ip or [])
        missing = removed - set(current)
        if missing:
            raise SystemExit(f"gateway: not in the whitelist: {', '.join(sorted(missing))}")
        body["ip_whitelist"] = [ip for ip in current if ip not in removed] + [
            ip for ip in args.add_ip or [] if ip not in current
        ]


def _confirm_delete(client: AdminClient, args: argparse.Namespace) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise SystemExit("gateway: deleting a key cannot be undone; pass --yes to confirm")
    key = client.call("GET", f"/api/v1/keys/{args.id}")
    last = key.get("last_used_at") or "never"
    print(f"Delete {key['id']} ({key['name']}, account {key['account']}, last used {last})?", file=sys.stderr)
    print("Clients using it are refused at once. Type 'yes' to delete: ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() != "yes":
        raise SystemExit("gateway: not deleted")


def cmd_keys(args: argparse.Namespace) -> int:
    client = AdminClient(_admin_url(args), _token(args))
    action = args.action
    result: Any
    if action == "list":
        items, cursor = [], None
        while True:
            query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
            if args.account:
                query += "&account=" + urllib.parse.quote(args.account)
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
        body = _fields(args)
        _whitelist_edit(client, args, body)
        result = client.call("PATCH", f"/api/v1/keys/{args.id}", body)
    elif action == "rotate":
        body = {"grace_seconds": _seconds(args.grace, "--grace")}
        result = client.call("POST", f"/api/v1/keys/{args.id}/rotate", body)
    elif action in ("enable", "disable"):
        result = client.call("PATCH", f"/api/v1/keys/{args.id}", {"enabled": action == "enable"})
    elif action == "copy":
        result = client.call("POST", f"/api/v1/keys/{args.id}/copy")
    else:  # delete
        _confirm_delete(client, args)
        client.call("DELETE", f"/api/v1/keys/{args.id}")
        print(json.dumps({"deleted": args.id}) if args.json else f"deleted {args.id}")
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_key(result)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    """Admin tokens: create (the secret is printed once), list, revoke."""
    client = AdminClient(_admin_url(args), _token(args))
    if args.action == "create":
        body = {"name": args.name, "account": args.account, "permissions": args.permission or []}
        result = client.call("POST", "/api/v1/tokens", body)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(result["token"])
            print(f"{result['id']}: shown once; keep it safe", file=sys.stderr)
        return 0
    if args.action == "list":
        items = client.call("GET", "/api/v1/tokens")["items"]
        if args.json:
            print(json.dumps(items, indent=2))
        for item in [] if args.json else items:
            scope = item["account"] or "(every account)"
            print(
                f"{item['id']}  {item['name']}  {scope}  {','.join(item['permissions'])}  {item['last_used_at'] or '-'}"
            )
        return 0
    client.call("DELETE", f"/api/v1/tokens/{args.id}")
    print(json.dumps({"revoked": args.id}) if args.json else f"revoked {args.id}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The audit trail, oldest first: every admin write and reveal."""
    client = AdminClient(_admin_url(args), _token(args))
    query = f"?limit={args.limit}" + (f"&key_id={urllib.parse.quote(args.key)}" if args.key else "")
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.call("GET", "/api/v1/audit" + query + (f"&cursor={cursor}" if cursor else ""))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor or not args.all:
            break
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for item in items:
        changed = ", ".join(sorted(item["changes"])) if item["changes"] else ""
        print(f"{item['at']}  {item['action']:<8} {item['key_id']}  {changed}".rstrip())
    return 0


# keys as files (DESIGN §7.4): these open the store named by the config, not the admin API
def _box_of(config: Config) -> Any:
    """The secret key, never generated here: a new one could open nothing already sealed."""
    from gateway.core.sealing import SecretBox

    if config.secret_key:
        return SecretBox(config.secret_key)
    path = config.data_dir / "secret.key"
    if path.is_file() and path.read_text().strip():
        return SecretBox(path.read_text().strip())
    raise SystemExit(
        f"gateway: no secret key: set GATEWAY_SECRET_KEY (or _FILE) to the gateway's, or keep it in {path}"
    )


async def _open_store(config: Config, box: Any) -> Any:
    from gateway.store import SchemaTooNew, StoreUnavailable, open_store
    from gateway.store.keyfile import FINGERPRINT

    store = open_store(config.database)
    try:
        await store.open()
        matches = await store.check_secret(box.digest(FINGERPRINT))
    except (StoreUnavailable, SchemaTooNew) as err:
        await store.close()
        raise SystemExit(f"gateway: database: {err}") from None
    if not matches:
        await store.close()
        raise SystemExit("gateway: secret key: it does not match the one this database was created with")
    return store


async def _all_keys(store: Any, account: str | None = None) -> list[Any]:
    keys: list[Any] = []
    after = None
    while True:
        batch = await store.list_keys(account, after, 2000)
        keys += batch
        if len(batch) < 2000:
            return keys
        after = batch[-1].id


def cmd_keys_export(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.store.keyfile import dump, export_entry

    config = _load(args.config)
    box = _box_of(config)

    async def export() -> list[dict[str, Any]]:
        store = await _open_store(config, box)
        try:
            entries = []
            for key in await _all_keys(store, args.account):
                sealed = await store.get_sealed(key.id)
                if sealed is not None:
                    entries.append(export_entry(key, sealed, usage=not args.no_usage))
            return entries
        finally:
            await store.close()

    entries = asyncio.run(export())
    header = (
        f"# gateway keys export, {len(entries)} keys{f' of account {args.account}' if args.account else ''},"
        f" {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        "# `sealed` opens only with this gateway's secret key (GATEWAY_SECRET_KEY). Apply: gateway keys apply FILE\n"
    )
    # --json: the same file as JSON, which loads about a hundred times faster (large DB-less files)
    text = json.dumps({"keys": entries}, indent=1, ensure_ascii=False) + "\n" if args.json else dump(entries, header)
    _write_keys(text, args.output, len(entries))
    return 0


def _write_keys(text: str, output: str | None, count: int) -> None:
    """A keys file to `output` (mode 0600: it holds sealed secrets), or to standard output."""
    if output:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        print(f"{count} keys written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _apply_document(args: argparse.Namespace, read: Any, action: str) -> int:
    """Check a keys file (`read(box)` gives it), show the plan, and apply it unless --dry-run."""
    import asyncio

    from gateway.core.routes import compile_routes
    from gateway.store import KeyLimitReached, StoreUnavailable
    from gateway.store.apply import apply_file
    from gateway.store.keyfile import KeyFileError, plan
    from gateway.store.sqlstore import SQLStore

    config = _load(args.config)
    box = _box_of(config)
    accepts = compile_routes(config.routes).accepts
    try:
        keys_file = read(box, config.limits.ips_per_key, accepts)
    except KeyFileError as err:
        raise SystemExit(f"gateway: keys {action}: {err}; nothing changed") from None
    if getattr(args, "output", None):  # import --output: a keys file (for DB-less mode), no store
        from gateway.store.keyfile import dump, export_entry, make_key

        entries = []
        for entry in keys_file.entries:
            key = make_key(entry, entry.secret, box, entry.id)
            entries.append(export_entry(key, box.encrypt(entry.secret, entry.id)))
        _write_keys(
            dump(entries, f"# gateway keys import --from kong: {len(entries)} keys\n"), args.output, len(entries)
        )
        return 0

    async def run() -> Any:
        store = await _open_store(config, box)
        try:
            if not isinstance(store, SQLStore):
                raise SystemExit(f"gateway: keys {action}: the database is a keys file (DB-less): edit that file")

            def make_plan(current: list[Any]) -> Any:
                return plan(keys_file, current, box, prune=args.prune, prefix=config.keys.prefix)

            return await apply_file(store, make_plan, config.limits.keys_per_account, args.dry_run)
        finally:
            await store.close()

    try:
        steps = asyncio.run(run())
    except KeyFileError as err:
        raise SystemExit(f"gateway: keys {action}: {err}; nothing changed") from None
    except KeyLimitReached as err:
        raise SystemExit(f"gateway: keys {action}: key_limit_reached: {err}; nothing changed") from None
    except StoreUnavailable as err:
        raise SystemExit(f"gateway: keys {action}: database: {err}; nothing changed") from None
    for line in steps.describe():
        print(line)
    if args.dry_run:
        print("dry run: nothing changed")
    return 0


def cmd_keys_apply(args: argparse.Namespace) -> int:
    from gateway.store.keyfile import MAX_FILE_BYTES, KeyFileError, parse_keys

    try:
        with open(args.file, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # one byte more than allowed: enough to refuse it
    except OSError as err:
        raise SystemExit(f"gateway: keys apply: cannot read {args.file}: {err.strerror}") from None

    def read(box: Any, ips: int, known: Any) -> Any:
        if not data.strip():
            raise KeyFileError(f"{args.file}: empty (an empty list is written keys: [])")
        return parse_keys(data, box, source=args.file, ips_limit=ips, known=known)

    return _apply_document(args, read, "apply")


def cmd_keys_import(args: argparse.Namespace) -> int:
    from gateway.store.keyfile import MAX_FILE_BYTES, KeyFileError, check_document, load_document
    from gateway.store.kong import KongError, read_kong

    documents = []
    for name in args.file:
        try:
            with open(name, "rb") as handle:
                documents.append(load_document(handle.read(MAX_FILE_BYTES + 1), name))
        except OSError as err:
            raise SystemExit(f"gateway: keys import: cannot read {name}: {err.strerror}") from None
        except KeyFileError as err:
            raise SystemExit(f"gateway: keys import: {err}") from None
    try:
        imported = read_kong(documents)
    except KongError as err:
        raise SystemExit(f"gateway: keys import: not a Kong export this reads: {err}") from None
    for note in imported.notes:
        print(f"kong: {note}", file=sys.stderr)
    args.prune = False

    def read(box: Any, ips: int, known: Any) -> Any:
        try:
            return check_document({"keys": imported.keys}, box, source="kong", ips_limit=ips, known=known)
        except KeyFileError as err:  # keys[i] of the converted list: say which credential that is
            found = re.search(r"keys\[(\d+)\]", str(err))
            named = f" (keys[{found[1]}] is {imported.keys[int(found[1])]['name']})" if found else ""
            raise KeyFileError(f"{err}{named}") from None

    return _apply_document(args, read, "import")


def _admin_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """The options of every admin command, accepted before or after the subcommand."""
    parser.add_argument("--admin-url", default=default, help="admin API URL (default: from the config)")
    parser.add_argument("--token", default=default, help="admin token (default: $GATEWAY_ADMIN_TOKEN or the file)")
    parser.add_argument("--config", default=default, help="config used to find the admin URL and token file")
    parser.add_argument("--json", action="store_true", default=default or False, help="print JSON for scripts")


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

    # the same options on the subcommands, where they only count when given
    after = argparse.ArgumentParser(add_help=False)
    _admin_options(after, argparse.SUPPRESS)
    keys = commands.add_parser("keys", help="manage API keys through the admin API")
    _admin_options(keys, None)
    actions = keys.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list keys", parents=[after])
    listing.add_argument("--account")
    for name in ("create", "update"):
        sub = actions.add_parser(name, help=f"{name} a key", parents=[after])
        if name == "update":
            sub.add_argument("id")
            sub.add_argument("--add-ip", action="append", help="add a whitelist entry (repeat)")
            sub.add_argument("--remove-ip", action="append", help="remove a whitelist entry (repeat)")
        else:
            sub.add_argument("--account")
            sub.add_argument("--disabled", action="store_true", help="create it disabled")
        sub.add_argument("--name")
        sub.add_argument("--apps", help='"all" or comma-separated app ids ("" for none)')
        sub.add_argument("--interfaces", help='"all" or comma-separated categories / interface ids')
        replaces = "replaces the whole whitelist; " if name == "update" else ""
        sub.add_argument("--ip", action="append", help=f"whitelist entry ({replaces}repeat; --ip '' for none)")
        sub.add_argument("--expires", help="when the key stops working: 30d, 12h, an RFC 3339 time, or never")
        sub.add_argument("--rate", action="append", help="a rate limit such as 5/second (repeat; --rate '' for none)")
    for name in ("show", "reveal", "enable", "disable", "copy", "delete", "rotate"):
        sub = actions.add_parser(name, help=f"{name} a key", parents=[after])
        sub.add_argument("id")
        if name == "delete":
            sub.add_argument("--yes", action="store_true", help="do not ask (needed when not on a terminal)")
        if name == "rotate":
            sub.add_argument("--grace", default="0", help="how long the old secret keeps working: 0, 15m, 1h, 7d")
    keys.set_defaults(func=cmd_keys)
    export = actions.add_parser(
        "export", help="write every key to a YAML file (secrets sealed; --json: as JSON)", parents=[after]
    )
    export.add_argument("--account", help="only this account's keys")
    export.add_argument("--output", "-o", help="file to write (mode 0600; default: standard output)")
    export.add_argument(
        "--no-usage", action="store_true", help="leave out last_used_at and request_count (a file kept in git)"
    )
    export.set_defaults(func=cmd_keys_export)
    apply = actions.add_parser("apply", help="make the store match a keys file; prints the changes", parents=[after])
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true", help="print the changes, change nothing")
    apply.add_argument("--prune", action="store_true", help="delete keys of the file's accounts it does not list")
    apply.set_defaults(func=cmd_keys_apply)
    kong = actions.add_parser("import", help="import Kong consumers' key-auth credentials", parents=[after])
    kong.add_argument("--from", dest="source", required=True, choices=["kong"], help="where the keys come from")
    kong.add_argument("file", nargs="+", help="a decK file, or Admin API JSON (/consumers, /key-auths, /plugins)")
    kong.add_argument("--dry-run", action="store_true", help="print the changes, change nothing")
    kong.add_argument("--output", "-o", help="write a keys file (e.g. for DB-less mode) instead of the store")
    kong.set_defaults(func=cmd_keys_import)

    tokens = commands.add_parser("tokens", help="manage admin tokens")
    _admin_options(tokens, None)
    token_actions = tokens.add_subparsers(dest="action", required=True)
    create_token = token_actions.add_parser("create", help="create a token (printed once)", parents=[after])
    create_token.add_argument("--name", required=True)
    create_token.add_argument("--account", help="act in this account only")
    create_token.add_argument("--permission", action="append", help="keys:read, keys:write, ... (repeat)")
    token_actions.add_parser("list", help="list tokens", parents=[after])
    token_actions.add_parser("revoke", help="revoke a token", parents=[after]).add_argument("id")
    tokens.set_defaults(func=cmd_tokens)

    audit = commands.add_parser("audit", help="read the audit trail (admin writes and reveals)")
    _admin_options(audit, None)
    audit.add_argument("--key", help="only this key's entries")
    audit.add_argument("--limit", type=int, default=100, help="entries per page (1-500)")
    audit.add_argument("--all", action="store_true", help="every page, not only the first")
    audit.set_defaults(func=cmd_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `gateway keys list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

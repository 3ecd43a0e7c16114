"""`gateway keys apply` and `keys import`: a plan (keyfile.plan) made and written in one
transaction: all of it or none, and made from the keys as they are when it is written (an
admin write cannot slip between the reading and the writing).

Each step logs its key in the change log (running gateways apply it within their usual
50 ms) and writes an audit entry with actor `apply`. The per-account key limit is checked
once every step is written, inside the transaction, so a file cannot overfill an account.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.core.record import Key, utc_now
from gateway.store import sql
from gateway.store.base import Audit, KeyLimitReached
from gateway.store.driver import Row, Session
from gateway.store.keyfile import Plan, audit_changes
from gateway.store.rows import encode, insert_values, row_to_key
from gateway.store.sqlstore import SQLStore, _audit_values, _log_change

ACTOR = "apply"
ACTIONS = {"add": "create", "change": "update", "delete": "delete"}
BATCH = 2000


async def _every_key(read: Callable[..., Awaitable[list[Row]]]) -> list[Key]:
    keys: list[Key] = []
    after = ""
    while True:
        rows = await read(sql.LIST_KEYS, after, BATCH)
        keys += [row_to_key(row) for row in rows]
        if len(rows) < BATCH:
            return keys
        after = keys[-1].id


async def apply_file(store: SQLStore, make_plan: Callable[[list[Key]], Plan], limit: int, dry_run: bool) -> Plan:
    """The plan `make_plan` makes from every stored key; written unless `dry_run`. Whatever
    `make_plan` raises, or KeyLimitReached, leaves the store as it was."""
    if dry_run:
        return make_plan(await _every_key(store.driver.fetch))
    async with store.driver.write() as session:
        plan = make_plan(await _every_key(session.fetch))
        await _write(session, plan, limit)
    return plan


async def _write(session: Session, plan: Plan, limit: int) -> None:
    now = utc_now()
    grown: set[str] = set()
    for step in plan.steps:
        if step.kind == "add":
            assert step.key is not None and step.sealed is not None
            await session.execute(sql.INSERT_KEY, *insert_values(step.key, step.sealed))
            grown.add(step.account)
        elif step.kind == "change":
            columns = {name: encode(name, value) for name, value in step.columns.items()}
            columns["updated_at"] = now
            await session.execute(sql.update_key(list(columns)), *columns.values(), step.key_id)
        else:
            await session.execute(sql.DELETE_KEY, step.key_id)
        await _log_change(session, step.key_id)
        entry = Audit(now, ACTIONS[step.kind], step.key_id, audit_changes(step), actor=ACTOR, account=step.account)
        await session.execute(sql.INSERT_AUDIT, *_audit_values(entry))
    for account in sorted(grown):
        ((count,),) = await session.fetch(sql.COUNT_IN_ACCOUNT, account)
        if count > limit:
            raise KeyLimitReached(f"account {account!r} would hold {count} keys; at most {limit} are allowed")

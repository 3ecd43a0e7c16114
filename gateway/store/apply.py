"""`gateway keys apply`: a plan (keyfile.plan) written in one transaction: all of it or none.

Each step logs its key in the change log (running gateways apply it within their usual
50 ms) and writes an audit entry with actor `apply`. The per-account key limit is checked
once every step is written, inside the transaction, so a file cannot overfill an account.
"""

from __future__ import annotations

from gateway.core.record import utc_now
from gateway.store import sql
from gateway.store.base import Audit, KeyLimitReached
from gateway.store.keyfile import Plan, audit_changes
from gateway.store.rows import encode, insert_values
from gateway.store.sqlstore import SQLStore, _audit_values, _log_change

ACTOR = "apply"
ACTIONS = {"add": "create", "change": "update", "delete": "delete"}


async def apply_plan(store: SQLStore, plan: Plan, limit: int) -> None:
    """Write every step of `plan` in one transaction; KeyLimitReached (and nothing written)
    when an account would hold more than `limit` keys."""
    if not plan.steps:
        return
    now = utc_now()
    grown: set[str] = set()
    async with store.driver.write() as session:
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

"""The alert journal: state changes written in the same transaction as the change.

A run's end, a problem appearing or clearing, a task going stale and a replica's loops
being taken over each write one ``alert_events`` row here, inside the transaction that
makes the change, so that no change is lost by a crash and none is announced twice:
the change itself is the once-only step (a conditional UPDATE, an INSERT that loses to
a concurrent one, a DELETE that finds the row gone), and only its winner writes the event.
What happens to an event later (rules, outbox, delivery) is the business of ``observability/alert_*.py``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Collection, Iterable, Sequence

import sqlalchemy as sa

from ..alert_settings import PROBLEM_APPEARED, PROBLEM_CLEARED, REPLICA_DIED, RUN_FAILED, TASK_RECOVERED, TASK_STALE
from ..errors import Problem
from . import dialect
from .freshness import Freshness
from .schema import alert_conditions, alert_events, replicas, tasks
from .times import iso

ERROR_CHARS = 2000  # of a run's error, in an alert
MESSAGES = 5  # problems quoted in one alert, each cut to MESSAGE_CHARS
MESSAGE_CHARS = 500


def add_event(conn: sa.Connection, kind: str, now: datetime, data: dict[str, Any], codops: str | None = None,
              task: str | None = None, run_id: int | None = None) -> None:
    conn.execute(alert_events.insert().values(kind=kind, codops=codops, task=task, run_id=run_id,
                                              data=json.dumps(data, default=str), created_at=now))


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 20] + f"… [{len(text) - limit + 20} more]"


def run_ended(conn: sa.Connection, codops: str, task: str, run_id: int, status: str, error: str | None,
              version: str | None, now: datetime, alerting: bool) -> None:
    """Keep the task's last success and failure streak up to date; journal what changed."""
    row = conn.execute(sa.select(tasks.c.failures_in_row, tasks.c.stale_since, tasks.c.last_success_at)
                       .where(tasks.c.codops == codops, tasks.c.name == task)).first()
    if row is None:
        return
    where = sa.and_(tasks.c.codops == codops, tasks.c.name == task)
    if status == "SUCCESS":
        conn.execute(tasks.update().where(where).values(last_success_at=now, last_success_run_id=run_id,
                                                        failures_in_row=0, stale_since=None))
        if alerting and (row.failures_in_row or row.stale_since is not None):
            add_event(conn, TASK_RECOVERED, now, {
                "status": status, "version": version, "failures_before": row.failures_in_row,
                "was_stale": row.stale_since is not None, "stale_since": iso(row.stale_since),
                "previous_success_at": iso(row.last_success_at)}, codops, task, run_id)
    elif status in ("FAILURE", "TIMEOUT"):
        streak = (row.failures_in_row or 0) + 1
        conn.execute(tasks.update().where(where).values(failures_in_row=streak))
        if alerting:
            add_event(conn, RUN_FAILED, now, {
                "status": status, "version": version, "failures_in_row": streak,
                "error": _cut(error, ERROR_CHARS), "last_success_at": iso(row.last_success_at)},
                codops, task, run_id)


def _insert_once(conn: sa.Connection, key: str, now: datetime) -> bool:
    """Open condition ``key``; True only for the one transaction that opened it."""
    statement = dialect.insert(conn, alert_conditions).values(key=key, opened_at=now).on_conflict_do_nothing(
        index_elements=["key"]).returning(alert_conditions.c.key)
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT.
    return conn.execute(statement).first() is not None


def problems_changed(conn: sa.Connection, groups: Sequence[tuple[str, str, Sequence[Problem], str | None]],
                     now: datetime) -> None:
    """Journal each (kind, scope) whose problems appeared (none -> some) or cleared."""
    for kind, scope, found, codops in groups:
        key = f"problem/{kind}/{scope}"
        data = {"kind": kind, "scope": scope}
        if found:
            if _insert_once(conn, key, now):
                data.update(count=len(found), problems=[
                    {"file": p.file, "line": p.line, "message": _cut(p.message, MESSAGE_CHARS)}
                    for p in list(found)[:MESSAGES]])
                add_event(conn, PROBLEM_APPEARED, now, data, codops)
        elif conn.execute(alert_conditions.delete().where(alert_conditions.c.key == key)).rowcount:
            add_event(conn, PROBLEM_CLEARED, now, data, codops)


def problems_dropped(conn: sa.Connection, kind: str, keep: Collection[str], now: datetime) -> None:
    """Problems of scopes that are gone (a repository removed) clear with them."""
    prefix = f"problem/{kind}/"
    opened = conn.execute(sa.select(alert_conditions.c.key).where(alert_conditions.c.key.startswith(prefix,
                                                                                                     autoescape=True)))
    for key in [k for k in opened.scalars() if k[len(prefix):] not in keep]:
        if conn.execute(alert_conditions.delete().where(alert_conditions.c.key == key)).rowcount:
            scope = key[len(prefix):]
            add_event(conn, PROBLEM_CLEARED, now, {"kind": kind, "scope": scope},
                      scope if kind == "environment" else None)


def mark_stale(conn: sa.Connection, now: datetime, alerting: bool) -> list[tuple[str, str]]:
    """Mark the active tasks that have become stale (once each) and journal it."""
    rows = conn.execute(sa.select(tasks.c.codops, tasks.c.name, tasks.c.freshness_s, tasks.c.last_success_at,
                                  tasks.c.first_seen_at, tasks.c.last_success_run_id)
                        .where(tasks.c.active.is_(True), tasks.c.freshness_s.is_not(None),
                               tasks.c.stale_since.is_(None))).all()
    marked = []
    for r in rows:
        state = Freshness(r.freshness_s, r.last_success_at, r.first_seen_at)
        if not state.stale(now):
            continue
        taken = conn.execute(tasks.update().where(tasks.c.codops == r.codops, tasks.c.name == r.name,
                                                  tasks.c.stale_since.is_(None)).values(stale_since=now)).rowcount
        if taken != 1:
            continue  # another replica marked it first
        marked.append((r.codops, r.name))
        if alerting:
            add_event(conn, TASK_STALE, now, {
                "freshness_s": r.freshness_s, "last_success_at": iso(r.last_success_at),
                "first_seen_at": iso(r.first_seen_at), "stale_since": iso(state.stale_at())},
                r.codops, r.name, r.last_success_run_id)
    return marked


def replica_died(conn: sa.Connection, dead: str, taken_by: str, loops: Iterable[str], now: datetime) -> bool:
    """Journal that ``dead``'s loops were taken over, once per life of that replica."""
    row = conn.execute(sa.select(replicas).where(replicas.c.id == dead)).first()
    started = iso(row.started_at) if row is not None else "unknown"
    if not _insert_once(conn, f"replica/{dead}/{started}", now):
        return False
    add_event(conn, REPLICA_DIED, now, {
        "replica": dead, "host": row.host if row is not None else None, "started_at": started,
        "last_heartbeat_at": iso(row.heartbeat_at) if row is not None else None,
        "taken_over_by": taken_by, "loops": sorted(loops)})
    return True

"""The alert outbox: named queries that route journalled events and hand deliveries out.

Routing turns each new ``alert_events`` row into one ``alert_outbox`` row per matching
rule, in one transaction that also marks the events routed (so a crash routes them
again, never twice). Delivery claims due rows one statement at a time: a row is SENDING
under ``claimed_by`` until ``claimed_until``; two replicas never claim the same row
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one writer at a time on SQLite, and a
conditional UPDATE on both). Times come from the database's clock where it has one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from .schema import alert_conditions, alert_events, alert_outbox
from .times import as_utc, db_now, iso

PENDING, SENDING, SENT, FAILED, SUPPRESSED, DROPPED = "PENDING", "SENDING", "SENT", "FAILED", "SUPPRESSED", "DROPPED"
QUEUED = (PENDING, SENDING)
COUNTED = (PENDING, SENDING, SENT, FAILED)  # what a rule's rate limit counts
DONE = (SENT, FAILED, SUPPRESSED, DROPPED)
ERROR_CHARS = 1000
# Routing takes this advisory lock on PostgreSQL: one replica routes at a time, so each
# rule's rate limit is counted once (any number; it only has to be the same everywhere).
ROUTE_LOCK = 0x7065616368  # "peach"


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    codops: str | None
    task: str | None
    run_id: int | None
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    """What routing makes of one event for one rule."""

    rule: str  # "platform/<name>" or "<codops>/<name>"
    destination: str  # webhook, slack, email
    body: dict[str, Any]  # the alert (no secret)
    limit: int  # the rule's rate limit: at most ``limit`` per ``per`` seconds
    per: float


@dataclass(frozen=True)
class Claimed:
    id: int
    key: str
    rule: str
    destination: str
    body: dict[str, Any]
    attempts: int


class AlertOutbox:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    # -- routing ------------------------------------------------------------------
    def route(self, match: Callable[[Event], list[Delivery]], max_pending: int, batch: int = 200) -> int:
        """Route up to ``batch`` new events; returns how many outbox rows were written."""
        with self.engine.begin() as conn:
            if self.postgres:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ROUTE_LOCK)))
            rows = conn.execute(sa.select(alert_events).where(alert_events.c.routed_at.is_(None))
                                .order_by(alert_events.c.id).limit(batch)).all()
            if not rows:
                return 0
            now = db_now(conn)
            queued = conn.execute(sa.select(sa.func.count()).select_from(alert_outbox)
                                  .where(alert_outbox.c.state.in_(QUEUED))).scalar_one()
            recent: dict[str, int] = {}
            written = []
            unwanted = []  # events no rule wants: gone at once, so the journal stays small
            for row in rows:
                event = Event(row.id, row.kind, row.codops, row.task, row.run_id, json.loads(row.data),
                              as_utc(row.created_at))
                deliveries = match(event)
                if not deliveries:
                    unwanted.append(event.id)
                for delivery in deliveries:
                    if delivery.rule not in recent:
                        recent[delivery.rule] = conn.execute(
                            sa.select(sa.func.count()).select_from(alert_outbox).where(
                                alert_outbox.c.rule == delivery.rule, alert_outbox.c.state.in_(COUNTED),
                                alert_outbox.c.created_at > now - timedelta(seconds=delivery.per))).scalar_one()
                    if queued >= max_pending:
                        state, note = DROPPED, f"the outbox holds {queued} alerts (alerts.delivery.max_pending)"
                    elif recent[delivery.rule] >= delivery.limit:
                        state, note = SUPPRESSED, (f"rate limit of rule {delivery.rule}: {delivery.limit} per "
                                                   f"{delivery.per:g} s")
                    else:
                        state, note = PENDING, None
                        queued += 1
                        recent[delivery.rule] += 1
                    key = uuid.uuid4().hex
                    body = dict(delivery.body, id=key)
                    written.append(dict(key=key, event_id=event.id, rule=delivery.rule,
                                        destination=delivery.destination, body=json.dumps(body), state=state,
                                        attempts=0, next_attempt_at=now, last_error=note, created_at=now))
            if written:
                conn.execute(alert_outbox.insert(), written)
            ids = [row.id for row in rows]
            marked = conn.execute(alert_events.update().where(alert_events.c.id.in_(ids),
                                                              alert_events.c.routed_at.is_(None))
                                  .values(routed_at=now)).rowcount
            if marked != len(ids):  # another router got there first: undo ours
                raise RuntimeError("alert events were routed concurrently; rolled back")
            if unwanted:
                conn.execute(alert_events.delete().where(alert_events.c.id.in_(unwanted)))
            return len(written)

    # -- delivery -----------------------------------------------------------------
    def release_own(self, owner: str) -> int:
        """At start: what an earlier process of ``owner`` was sending is due again now (the
        state_dir lock proves that process gone). It may have reached its receiver just
        before the kill: the receiver dedupes by the alert's key."""
        with self.engine.begin() as conn:
            return conn.execute(alert_outbox.update().where(alert_outbox.c.state == SENDING,
                                                            alert_outbox.c.claimed_by == owner)
                                .values(state=PENDING, claimed_by=None, claimed_until=None)).rowcount

    def claim(self, owner: str, claim_seconds: float, limit: int = 1) -> list[Claimed]:
        """Take up to ``limit`` due rows for ``owner``: PENDING ones whose time has come, and
        SENDING ones whose claimer let the claim expire (it died mid-send)."""
        with self.engine.begin() as conn:
            now = db_now(conn)
            due = sa.or_(sa.and_(alert_outbox.c.state == PENDING, alert_outbox.c.next_attempt_at <= now),
                         sa.and_(alert_outbox.c.state == SENDING, alert_outbox.c.claimed_until < now))
            chosen = sa.select(alert_outbox.c.id).where(due).order_by(alert_outbox.c.id).limit(limit)
            if self.postgres:
                chosen = chosen.with_for_update(skip_locked=True)
            ids = list(conn.execute(chosen).scalars())
            if not ids:
                return []
            rows = conn.execute(alert_outbox.update().where(alert_outbox.c.id.in_(ids), due).values(
                state=SENDING, claimed_by=owner, claimed_until=now + timedelta(seconds=claim_seconds),
                attempts=alert_outbox.c.attempts + 1,
            ).returning(alert_outbox.c.id, alert_outbox.c.key, alert_outbox.c.rule, alert_outbox.c.destination,
                        alert_outbox.c.body, alert_outbox.c.attempts)).all()
        return sorted((Claimed(r.id, r.key, r.rule, r.destination, json.loads(r.body), r.attempts) for r in rows),
                      key=lambda c: c.id)

    def sent(self, row_id: int, owner: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(alert_outbox.update().where(alert_outbox.c.id == row_id,
                                                            alert_outbox.c.claimed_by == owner,
                                                            alert_outbox.c.state == SENDING)
                                .values(state=SENT, sent_at=db_now(conn), claimed_until=None,
                                        last_error=None)).rowcount == 1

    def failed(self, row_id: int, owner: str, error: str, retry_in: float | None) -> None:
        """Back to PENDING, due in ``retry_in`` seconds; None: given up (FAILED)."""
        with self.engine.begin() as conn:
            now = db_now(conn)
            values: dict[str, Any] = dict(last_error=error[:ERROR_CHARS], claimed_until=None)
            if retry_in is None:
                values.update(state=FAILED)
            else:
                values.update(state=PENDING, next_attempt_at=now + timedelta(seconds=retry_in))
            conn.execute(alert_outbox.update().where(alert_outbox.c.id == row_id, alert_outbox.c.claimed_by == owner,
                                                     alert_outbox.c.state == SENDING).values(**values))

    # -- upkeep and views -----------------------------------------------------------
    def prune(self, keep_seconds: float) -> int:
        """Remove finished rows, routed events and replica conditions older than ``keep_seconds``."""
        with self.engine.begin() as conn:
            cutoff = db_now(conn) - timedelta(seconds=keep_seconds)
            removed = conn.execute(alert_outbox.delete().where(alert_outbox.c.state.in_(DONE),
                                                               alert_outbox.c.created_at < cutoff)).rowcount
            removed += conn.execute(alert_events.delete().where(alert_events.c.routed_at < cutoff)).rowcount
            conn.execute(alert_conditions.delete().where(alert_conditions.c.key.startswith("replica/"),
                                                         alert_conditions.c.opened_at < cutoff))
        return removed

    def rows(self, limit: int = 50, states: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The newest outbox rows (``peach-tasks alerts``)."""
        query = sa.select(alert_outbox, alert_events.c.kind, alert_events.c.codops, alert_events.c.task,
                          alert_events.c.run_id).join(alert_events, alert_events.c.id == alert_outbox.c.event_id,
                                                      isouter=True)
        states = list(states)
        if states:
            query = query.where(alert_outbox.c.state.in_(states))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(alert_outbox.c.id.desc()).limit(limit)).all()
        return [{"id": r.id, "key": r.key, "event": r.kind, "codops": r.codops, "task": r.task, "run_id": r.run_id,
                 "rule": r.rule, "destination": r.destination, "state": r.state, "attempts": r.attempts,
                 "next_attempt_at": iso(r.next_attempt_at) if r.state == PENDING else None,
                 "created_at": iso(r.created_at), "sent_at": iso(r.sent_at), "last_error": r.last_error,
                 "summary": json.loads(r.body).get("summary")} for r in rows]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {state: n for state, n in conn.execute(
                sa.select(alert_outbox.c.state, sa.func.count()).group_by(alert_outbox.c.state)).all()}

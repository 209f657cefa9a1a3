"""Times as the store reads and writes them: UTC, with a zone, from the database's clock.

A module of its own (not store.py) so that the store's query modules (alert_journal,
alert_outbox, leases, totals), which store.py imports, can use it without a cycle.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """``value`` with its time zone: SQLite hands back naive datetimes that are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z."""
    if value is None:
        return None
    return as_utc(value).astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def db_now(conn: sa.Connection) -> datetime:
    """The database's clock where it has one (PostgreSQL ``now()``: replicas on different
    machines agree), else this machine's (SQLite: one machine)."""
    if conn.dialect.name == "postgresql":
        return as_utc(conn.execute(sa.text("select now()")).scalar_one())
    return utcnow()

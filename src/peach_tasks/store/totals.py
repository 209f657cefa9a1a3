"""Per-task run totals: written in each run's final-status transaction, read incrementally.

``/metrics`` and ``peach-tasks tasks`` need, per task, how many runs ended in each status,
their durations and the last success. Counting them from ``runs`` grew with the history (a
million runs took a second per scrape) and would shrink when old runs are pruned, which a
Prometheus counter must never do. So ``Store.finish_run`` (the single release path) adds
each run to one row of ``run_totals`` per (codops, task, status), in the same transaction
that ends the run: the totals are exactly the runs that ended, on every replica, and they
survive pruning.

Readers keep a copy in memory (``TotalsCache``) and read only the rows changed since their
last read: every write stamps its row with a new ``seq``. On SQLite writers take turns, so
``seq`` grows in commit order and ``seq > last seen`` misses nothing. On PostgreSQL ``seq``
comes from a sequence, taken just before the commit, so a transaction may commit after one
with a larger ``seq``; readers therefore read again the rows of the last ``WINDOW`` numbers
(each row holds absolute totals, so reading one twice changes nothing), and every
``RESYNC_SECONDS`` read the whole table (one row per task and status) to heal anything
even later. The next run of that task would heal it too.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from . import dialect
from .schema import BUCKET_COLUMNS, DURATION_BUCKETS, TOTALS_SEQUENCE, run_totals
from .times import as_utc

WINDOW = 5000
RESYNC_SECONDS = 600.0

__all__ = ["DURATION_BUCKETS", "Total", "TotalsCache", "add_run"]


def add_run(conn: sa.Connection, codops: str, task: str, status: str, duration: float | None,
            finished_at: datetime) -> None:
    """Count one ended run, inside the transaction that ends it."""
    bucket = BUCKET_COLUMNS[bisect.bisect_left(DURATION_BUCKETS, duration)] if duration is not None else None
    timed = 1 if duration is not None else 0
    if conn.dialect.name == "postgresql":
        seq: Any = sa.func.nextval(TOTALS_SEQUENCE)
    else:  # one writer at a time: the next number is read under the write lock
        seq = sa.select(sa.func.coalesce(sa.func.max(run_totals.c.seq), 0) + 1).scalar_subquery()
    insert: Any = dialect.insert(conn, run_totals)
    values = {c: 0 for c in BUCKET_COLUMNS}
    if bucket is not None:
        values[bucket] = 1
    insert = insert.values(codops=codops, task=task, status=status, runs=1, timed=timed,
                           duration_sum=duration or 0.0, last_finished_at=finished_at, seq=seq, **values)
    t, new = run_totals.c, insert.excluded
    changes: dict[str, Any] = {
        "runs": t.runs + 1, "timed": t.timed + new.timed, "duration_sum": t.duration_sum + new.duration_sum,
        "last_finished_at": sa.case((sa.or_(t.last_finished_at.is_(None), new.last_finished_at > t.last_finished_at),
                                     new.last_finished_at), else_=t.last_finished_at),
        "seq": new.seq,
    }
    if bucket is not None:
        changes[bucket] = t[bucket] + 1
    conn.execute(insert.on_conflict_do_update(index_elements=["codops", "task", "status"], set_=changes))


@dataclass(frozen=True)
class Total:
    """One (codops, task, status): how many runs ended so, their durations, the newest end."""

    runs: int
    timed: int  # runs with a duration (an ABANDONED run found at start has none)
    duration_sum: float
    buckets: tuple[int, ...]  # runs per duration bucket, not cumulative; the last is above every bound
    last_finished_at: datetime | None


def changed_rows(conn: sa.Connection, after_seq: int) -> list[Any]:
    return conn.execute(sa.select(run_totals).where(run_totals.c.seq > after_seq)).all()


class HasEngine(Protocol):
    """What a ``TotalsCache`` reads through: a ``Store``'s engine (a Protocol, so that this
    module does not import ``store.py``, which imports it for ``add_run``)."""

    engine: sa.Engine


class TotalsCache:
    """A reader's copy of ``run_totals``, brought up to date by ``refresh()``.

    Thread-safe: one refresh at a time; readers get whole rows. ``on_change`` callers (the
    metrics' rendering, the freshness checks) learn which organisations changed.
    """

    def __init__(self, store: HasEngine, window: int | None = None, resync_seconds: float = RESYNC_SECONDS) -> None:
        self.store = store
        postgres = store.engine.dialect.name == "postgresql"
        self.window = window if window is not None else (WINDOW if postgres else 0)
        self.resync_seconds = resync_seconds
        # codops -> (task, status) -> Total: an organisation's rows without scanning the others'
        self.rows: dict[str, dict[tuple[str, str], Total]] = {}
        self.watermark = 0
        self.loaded = False
        self.refreshed_at = float("-inf")  # time.monotonic() of the last refresh
        self._resynced_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self) -> set[str]:
        """Read the rows changed since the last refresh (all of them the first time, and
        every ``resync_seconds``); returns the organisations whose totals changed."""
        with self._lock:
            whole = time.monotonic() - self._resynced_at >= self.resync_seconds
            after = 0 if whole else max(self.watermark - self.window, 0)
            with self.store.engine.connect() as conn:
                rows = changed_rows(conn, after)
            changed: set[str] = set()
            for row in rows:
                total = Total(int(row.runs), int(row.timed), float(row.duration_sum),
                              tuple(int(row._mapping[c]) for c in BUCKET_COLUMNS), None if row.last_finished_at is None else as_utc(row.last_finished_at))
                mine = self.rows.setdefault(row.codops, {})
                if mine.get((row.task, row.status)) != total:
                    mine[(row.task, row.status)] = total
                    changed.add(row.codops)
                self.watermark = max(self.watermark, int(row.seq))
            if whole:
                self._resynced_at = time.monotonic()
            self.loaded = True
            self.refreshed_at = time.monotonic()
            return changed

    def last_success(self, codops: str, task: str) -> datetime | None:
        """When the task's newest SUCCESS ended, as of the last refresh (None: never)."""
        total = self.rows.get(codops, {}).get((task, "SUCCESS"))
        return total.last_finished_at if total else None

    def of(self, codops: str) -> list[tuple[tuple[str, str], Total]]:
        """The organisation's rows as ((task, status), Total), sorted."""
        with self._lock:
            return sorted(self.rows.get(codops, {}).items())

    def organisations(self) -> list[str]:
        return sorted(self.rows)

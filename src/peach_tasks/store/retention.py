"""Retention: which runs and logs are old enough to go, and removing them in small batches.

Per task, the newest ``keep_last`` runs (by id) always stay, with their logs. Of the older
ones, a run that ended more than ``runs_days`` ago goes whole (its row, log and outputs);
one that ended more than ``logs_days`` ago keeps its row but its log and outputs are
replaced by one line saying so (``runs.log_pruned_at`` marks it). A RUNNING run never goes.
The totals of ``run_totals`` are left alone: /metrics and the task list go on counting
every run that ended.

The runs that may go are found in id order over all tasks (each task's keep boundary read
once per pass through the (codops, task, id) index), and every batch is one short
transaction bounded by rows and by log bytes: on SQLite a batch holds the write lock for
milliseconds, so a loop writing its run waits no longer than that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .schema import log_chunks, run_outputs, runs, tasks

# A batch removes at most this much log text, whatever its number of runs (at least one run).
BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class Policy:
    runs_days: float | None  # None: runs are never removed
    logs_days: float | None  # None: logs stay as long as their runs
    keep_last: int

    def cutoffs(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        runs_before = now - timedelta(days=self.runs_days) if self.runs_days else None
        logs_before = now - timedelta(days=self.logs_days) if self.logs_days else None
        if runs_before is not None and logs_before is not None and logs_before < runs_before:
            logs_before = runs_before  # a log never outlives its run
        return runs_before, logs_before


@dataclass
class TaskPlan:
    """What retention would remove of one task now."""

    codops: str
    task: str
    runs: int = 0  # runs removed whole
    runs_log_bytes: int = 0
    logs: int = 0  # runs that keep their row but lose their log
    logs_bytes: int = 0
    oldest_kept_id: int | None = None  # the oldest of the keep_last newest runs

    def as_dict(self) -> dict[str, Any]:
        return {"codops": self.codops, "task": self.task, "runs": self.runs, "runs_log_bytes": self.runs_log_bytes,
                "logs": self.logs, "logs_bytes": self.logs_bytes}


@dataclass
class Batch:
    """One transaction's worth of work: whole runs, or logs."""

    run_ids: list[int] = field(default_factory=list)
    log_bytes: int = 0
    # Per task (codops, name): [runs, log bytes] of this batch, to report what was removed.
    tasks: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def task_keys(conn: sa.Connection) -> list[tuple[str, str]]:
    """Every task that ever ran (removed tasks too: their history is pruned the same way)."""
    return [(r.codops, r.name) for r in conn.execute(sa.select(tasks.c.codops, tasks.c.name)
                                                      .order_by(tasks.c.codops, tasks.c.name))]


def keep_boundary(conn: sa.Connection, codops: str, task: str, keep_last: int) -> int | None:
    """The id of the oldest run among the task's ``keep_last`` newest; None: it has no more
    runs than that (nothing of it may go)."""
    return conn.execute(sa.select(runs.c.id).where(runs.c.codops == codops, runs.c.task == task)
                        .order_by(runs.c.id.desc()).offset(keep_last - 1).limit(1)).scalar()


def _old(codops: str, task: str, boundary: int, before: datetime) -> Any:
    return sa.and_(runs.c.codops == codops, runs.c.task == task, runs.c.id < boundary,
                   runs.c.status != "RUNNING", runs.c.finished_at < before)


def plan_task(conn: sa.Connection, codops: str, task: str, policy: Policy, now: datetime) -> TaskPlan:
    """Count what would go (``peach-tasks prune --dry-run``)."""
    plan = TaskPlan(codops, task)
    boundary = keep_boundary(conn, codops, task, policy.keep_last)
    plan.oldest_kept_id = boundary
    if boundary is None:
        return plan
    runs_before, logs_before = policy.cutoffs(now)
    if runs_before is not None:
        n, size = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(runs.c.log_bytes), 0))
                               .where(_old(codops, task, boundary, runs_before))).one()
        plan.runs, plan.runs_log_bytes = int(n), int(size)
    if logs_before is not None:
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(runs.c.log_bytes), 0)).where(
            _old(codops, task, boundary, logs_before), runs.c.log_pruned_at.is_(None))
        if runs_before is not None:
            query = query.where(runs.c.finished_at >= runs_before)  # those go whole
        n, size = conn.execute(query).one()
        plan.logs, plan.logs_bytes = int(n), int(size)
    return plan


def boundaries(conn: sa.Connection, keep_last: int) -> dict[tuple[str, str], int]:
    """Per task with more than ``keep_last`` runs: its keep boundary (``keep_boundary``)."""
    found = {}
    for key in task_keys(conn):
        boundary = keep_boundary(conn, *key, keep_last)
        if boundary is not None:
            found[key] = boundary
    return found


def next_old(conn: sa.Connection, before: datetime, after_id: int, limit: int,
             logs_only: bool = False) -> list[tuple[int, tuple[str, str], int]]:
    """(id, (codops, task), log_bytes) of the runs above ``after_id`` that ended before
    ``before`` (with their log still there: ``logs_only``), in id order, whatever their task.

    Id order is the order runs were written in, so a batch of them sits on a few neighbouring
    pages of each table: removing it writes (and on SQLite locks, on PostgreSQL logs) far less
    than the same number of runs picked task by task, one page each. The caller keeps what
    its task's keep boundary says must stay."""
    query = sa.select(runs.c.id, runs.c.codops, runs.c.task, runs.c.log_bytes).where(
        runs.c.id > after_id, runs.c.status != "RUNNING", runs.c.finished_at < before)
    if logs_only:
        query = query.where(runs.c.log_pruned_at.is_(None))
    rows = conn.execute(query.order_by(runs.c.id).limit(limit)).all()
    return [(int(r.id), (r.codops, r.task), int(r.log_bytes or 0)) for r in rows]


def fill(batch: Batch, found: list[tuple[int, int]], max_runs: int, max_bytes: int = BATCH_BYTES,
         key: tuple[str, str] = ("", "")) -> int:
    """Add the runs of task ``key`` to ``batch`` while it has room (always one to an empty
    batch); returns how many."""
    taken = 0
    for run_id, size in found:
        if batch.run_ids and (len(batch.run_ids) >= max_runs or batch.log_bytes + size > max_bytes):
            break
        batch.run_ids.append(run_id)
        batch.log_bytes += size
        counts = batch.tasks.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += size
        taken += 1
    return taken


def full(batch: Batch, max_runs: int, max_bytes: int = BATCH_BYTES) -> bool:
    return len(batch.run_ids) >= max_runs or batch.log_bytes >= max_bytes


def delete_runs(conn: sa.Connection, run_ids: list[int]) -> None:
    """Remove runs whole: their log, their outputs, their rows. (Their totals stay.)"""
    conn.execute(log_chunks.delete().where(log_chunks.c.run_id.in_(run_ids)))
    conn.execute(run_outputs.delete().where(run_outputs.c.run_id.in_(run_ids)))
    conn.execute(runs.delete().where(runs.c.id.in_(run_ids), runs.c.status != "RUNNING"))


def drop_logs(conn: sa.Connection, run_ids: list[int], note: str, now: datetime) -> None:
    """Replace the runs' logs and outputs by one line saying why they are gone."""
    conn.execute(log_chunks.delete().where(log_chunks.c.run_id.in_(run_ids)))
    conn.execute(run_outputs.delete().where(run_outputs.c.run_id.in_(run_ids)))
    size = len(note.encode())
    conn.execute(log_chunks.insert(), [{"run_id": i, "seq": 1, "part": "h", "nbytes": size, "data": note}
                                       for i in run_ids])
    conn.execute(runs.update().where(runs.c.id.in_(run_ids))
                 .values(log_bytes=size, log_dropped_bytes=0, log_pruned_at=now))

"""What ``Store`` reads for people: tasks, runs, logs, outputs and problems for the command
line, the API, the dashboard, the widget and the metrics (read only).

``Store`` inherits these; its own module keeps what writes (registration, runs' start and
end, problems). The larger queries are in ``views.py``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Collection, Sequence

import sqlalchemy as sa

from . import outputs as outputs_q
from . import views
from .freshness import Freshness
from .logs import read_log
from .schema import problems as problems_t
from .schema import run_totals, runs, tasks
from .times import iso, utcnow


class StoreReads:
    engine: sa.Engine

    # -- views ------------------------------------------------------------------
    def tasks(self, codops: Sequence[str] | None = None, include_inactive: bool = False) -> list[dict[str, Any]]:
        # From the totals kept at each run's end (totals.py): no scan of the history, and
        # what old runs' pruning removed still counts.
        t = run_totals.c
        counts = (sa.select(t.codops, t.task,
                            sa.func.sum(sa.case((t.status == "SUCCESS", t.runs), else_=0)).label("successes"),
                            sa.func.sum(sa.case((t.status.in_(views.FAILED), t.runs), else_=0)).label("failures"))
                  .group_by(t.codops, t.task))
        last = runs.alias("last")
        if codops:
            counts = counts.where(t.codops.in_(list(codops)))
        counts = counts.subquery()
        query = (sa.select(tasks, last.c.status.label("last_status"), last.c.started_at.label("last_started_at"),
                           last.c.duration_s.label("last_duration_s"), last.c.version.label("last_version"),
                           counts.c.successes, counts.c.failures)
                 .outerjoin(last, last.c.id == tasks.c.last_run_id)
                 .outerjoin(counts, sa.and_(counts.c.codops == tasks.c.codops, counts.c.task == tasks.c.name))
                 .order_by(tasks.c.codops, tasks.c.name))
        if codops:
            query = query.where(tasks.c.codops.in_(list(codops)))
        if not include_inactive:
            query = query.where(tasks.c.active.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        now = utcnow()
        return [{
            "codops": r.codops, "name": r.name, "loop": r.loop, "executor": r.executor, "state": r.state,
            "last_status": r.last_status, "last_started_at": iso(r.last_started_at),
            "last_duration_s": r.last_duration_s, "version": r.version,
            "successes": int(r.successes or 0), "failures": int(r.failures or 0),
            "active": bool(r.active), "repo": r.repo, "notebook": r.notebook, "environment": r.environment,
            "defined_at": f"{r.source_file}:{r.source_line}" if r.source_line else r.source_file,
            **_freshness(r, now),
            "last_run_id": r.last_run_id, "method": r.method, "full_notebook": r.full_notebook,
            "timeout_s": r.timeout_s, "dependencies": json.loads(r.dependencies) if r.dependencies else None,
        } for r in rows]

    def runs(self, codops: str, task: str, limit: int = 20, before_id: int | None = None,
             statuses: Collection[str] = (), version: str | None = None) -> list[dict[str, Any]]:
        """A task's runs, newest first; only ``statuses`` and ``version`` when given."""
        query = (sa.select(runs).where(runs.c.codops == codops, runs.c.task == task)
                 .order_by(runs.c.id.desc()).limit(limit))
        if before_id is not None:
            query = query.where(runs.c.id < before_id)
        if statuses:
            query = query.where(runs.c.status.in_(list(statuses)))
        if version is not None:
            query = query.where(runs.c.version == version)
        with self.engine.connect() as conn:
            return [_run_dict(r) for r in conn.execute(query).all()]

    def run(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return _run_dict(row) if row else None

    def log(self, run_id: int) -> str | None:
        with self.engine.connect() as conn:
            dropped = conn.execute(sa.select(runs.c.log_dropped_bytes).where(runs.c.id == run_id)).scalar()
            if dropped is None:
                return None
            return read_log(conn, run_id, dropped)

    def run_outputs(self, run_id: int) -> list[dict[str, Any]]:
        """What the run showed, in order, without the data (``run_output`` reads one)."""
        with self.engine.connect() as conn:
            return outputs_q.list_outputs(conn, run_id)

    def run_output(self, run_id: int, seq: int) -> tuple[str, bytes] | None:
        """(mime type, data) of output ``seq`` of the run, or None."""
        with self.engine.connect() as conn:
            return outputs_q.one_output(conn, run_id, seq)

    def problems(self, codops: Sequence[str] | None = None) -> list[dict[str, Any]]:
        query = sa.select(problems_t).order_by(problems_t.c.kind, problems_t.c.scope, problems_t.c.file,
                                               problems_t.c.line, problems_t.c.id)
        if codops:
            query = query.where(sa.or_(problems_t.c.codops.is_(None), problems_t.c.codops.in_(list(codops))))
        with self.engine.connect() as conn:
            return [{"kind": r.kind, "scope": r.scope, "codops": r.codops, "file": r.file, "line": r.line,
                     "message": r.message, "created_at": iso(r.created_at)} for r in conn.execute(query).all()]

    # -- views for the web API and metrics (read only; queries in views.py) -------
    def has_task(self, codops: str, name: str) -> bool:
        """Whether the task was ever registered (active or not)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(tasks.c.name).where(tasks.c.codops == codops, tasks.c.name == name)
                                .limit(1)).first() is not None

    def repositories(self, codops: Collection[str]) -> set[str]:
        """The repositories holding active tasks of ``codops``."""
        with self.engine.connect() as conn:
            return views.repositories(conn, codops)

    def active_repositories(self) -> dict[str, set[str]]:
        """codops -> the repositories holding its active tasks (for scoping problems)."""
        with self.engine.connect() as conn:
            return views.active_repositories(conn)

    def organisations(self, codops: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Organisations with active tasks (only ``codops`` when given): task and running counts."""
        with self.engine.connect() as conn:
            return views.organisations(conn, codops)

    def log_slice(self, run_id: int, offset: int = 0, max_bytes: int = 1 << 20,
                  tail: int | None = None) -> views.LogSlice | None:
        """Part of a run's log by absolute byte offset, for polling a growing log."""
        with self.engine.connect() as conn:
            return views.log_slice(conn, run_id, offset, max_bytes, tail)

    def task_logs(self, codops: str, task: str, runs_limit: int = 10,
                  per_run_bytes: int = 64 << 10) -> list[tuple[dict[str, Any], views.LogSlice]]:
        """A task's newest runs, oldest first, each with the last ``per_run_bytes`` of its log."""
        with self.engine.connect() as conn:
            rows = views.recent_runs(conn, codops, task, runs_limit)  # the rows before their chunks
            slices = [views.log_slice(conn, row.id, tail=per_run_bytes, max_bytes=per_run_bytes, run=row)
                      for row in rows]
        return [(_run_dict(row), piece) for row, piece in zip(rows, slices) if piece is not None]

    def max_run_id(self) -> int:
        with self.engine.connect() as conn:
            return views.max_run_id(conn)

    def freshness(self, codops: Collection[str] | None = None) -> list[tuple[str, str, Freshness]]:
        """Active tasks that declare a freshness, with what decides whether they are stale:
        the tasks table alone (kept up to date by each run's end), never the runs."""
        query = (sa.select(tasks.c.codops, tasks.c.name, tasks.c.freshness_s, tasks.c.last_success_at,
                           tasks.c.first_seen_at)
                 .where(tasks.c.active.is_(True), tasks.c.freshness_s.is_not(None)))
        if codops is not None:
            query = query.where(tasks.c.codops.in_(sorted(codops)))
        with self.engine.connect() as conn:
            return [(r.codops, r.name, Freshness(r.freshness_s, r.last_success_at, r.first_seen_at))
                    for r in conn.execute(query).all()]

    def task_summaries(self, codops: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Active tasks with their last outcome (for a running one, its last run that ended)
        and whether they are stale: what the overview counts, without counting runs (views.py)."""
        with self.engine.connect() as conn:
            rows = views.task_summaries(conn, codops)
        now = utcnow()
        for row in rows:
            # The overview counts a task as stale as 'tasks' and the API say it (freshness.py).
            freshness_s, success, seen = row.pop("freshness_s"), row.pop("last_success_at"), row.pop("first_seen_at")
            row["stale"] = Freshness(freshness_s, success, seen).stale(now) if freshness_s else None
        return rows

    def run_briefs(self, ids: Collection[int]) -> dict[int, tuple[str | None, str | None]]:
        """Start (UTC ISO) and error of the runs ``ids``: the overview's failing list."""
        with self.engine.connect() as conn:
            found = views.run_briefs(conn, ids)
        return {run_id: (iso(started), error) for run_id, (started, error) in found.items()}

    def task_state_counts(self, codops: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Active tasks by (codops, state)."""
        with self.engine.connect() as conn:
            return views.task_state_counts(conn, codops)


def _freshness(r: Any, now: datetime) -> dict[str, Any]:
    """A task row's freshness fields (views: CLI, API, dashboard, widget)."""
    state = Freshness(r.freshness_s, r.last_success_at, r.first_seen_at)
    return {"freshness_s": r.freshness_s, "last_success_at": iso(r.last_success_at),
            "last_success_run_id": r.last_success_run_id,
            "failures_in_row": int(r.failures_in_row or 0), "stale": state.stale(now),
            "stale_at": iso(state.stale_at())}


def _run_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "codops": r.codops, "task": r.task, "loop": r.loop, "executor": r.executor,
        "version": r.version, "commit": r.commit, "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at), "status": r.status, "duration_s": r.duration_s,
        "exit_code": r.exit_code, "signal": r.signal, "error": r.error,
        "result": json.loads(r.result) if r.result else None,
        "details": json.loads(r.details) if r.details else None,
        "peak_memory_bytes": r.peak_memory_bytes, "cpu_seconds": r.cpu_seconds,
        "owner": r.owner, "log_bytes": r.log_bytes, "log_dropped_bytes": r.log_dropped_bytes,
        "trigger_id": r.trigger_id, "triggered_by": r.triggered_by,
        "payload": json.loads(r.payload) if r.payload else None,
        "attempt": r.attempt, "retry_of": r.retry_of, "log_pruned_at": iso(r.log_pruned_at),
    }



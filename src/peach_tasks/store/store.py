"""``Store``: the one place runs, task states, logs and problems are written (and read: ``reads.py``).

Every run ends through ``finish_run`` (the single release path), and runs that were
RUNNING when a scheduler died end through ``abandon_running``. The store knows nothing
about executors or git: it is handed plain values.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from ..bounds import bound_outcome
from ..errors import PeachError, Problem
from ..model import Outcome, RunStatus, TaskSpec, TaskState
from . import alert_journal
from . import outputs as outputs_q
from .fit import fit_row
from .logs import FLUSH_SECONDS, LogWriter
from .reads import StoreReads
from .schema import problems as problems_t
from .schema import runs, tasks, triggers
from .times import as_utc, iso, utcnow  # noqa: F401  (re-exported: callers import them from here)
from .totals import add_run

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD_REVISION = "0013"


class StoreError(PeachError):
    pass


@dataclass(frozen=True)
class TaskRegistration:
    """What the registry tells the store about one active task."""

    spec: TaskSpec
    version: str | None
    freshness_s: float | None = None  # the task's effective freshness (its own or its loop's)


class Store(StoreReads):
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._writers: set[LogWriter] = set()
        self._writers_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        # Set by a scheduler with alert rules: state changes are then journalled for them.
        self.alerting = False
        # Set by close(): the store's background readers (metrics' refresher, the pruner) end.
        self.closing = self._stop

    # -- opening ----------------------------------------------------------------
    @classmethod
    def open(cls, url: str, migrate: bool | str = True) -> "Store":
        """Connect. ``migrate``: True upgrades the schema; ``"fresh"`` creates it in an empty
        database and otherwise only checks it; False only checks it."""
        if url.startswith("sqlite:///") and not url.endswith(":memory:"):
            # Its folder (state_dir by default) for the scheduler's user only, as Scheduler makes it.
            Path(url[len("sqlite:///"):]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A loop waiting for a connection has nothing better to do: waiting beats failing a run.
        store = cls(_engine(url, pool_timeout=300))
        if migrate == "fresh":
            # A new, empty database gets the schema; an older schema is never changed
            # behind the operator's back (other replicas may still run the old version).
            if store.schema_revision() is None:
                store.upgrade()
            store.check_schema()
        elif migrate:
            store.upgrade()
        else:
            store.check_schema()
        return store

    def side_engine(self) -> sa.Engine:
        """A small pool of its own for work that must never queue for a connection behind
        hundreds of loops (lease renewals). The caller disposes of it."""
        return _engine(self.engine.url, pool_size=1, max_overflow=2)

    def upgrade(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("select version_num from alembic_version")).scalar()

    def check_schema(self) -> None:
        rev = self.schema_revision()
        if rev != HEAD_REVISION:
            raise StoreError(f"the database schema is at {rev or 'nothing'} but this version needs "
                             f"{HEAD_REVISION}; run 'peach-tasks db upgrade' (or start 'serve' once)")

    def close(self) -> None:
        self._stop.set()
        for writer in list(self._writers):
            writer.close()
        if self._flusher:
            self._flusher.join(timeout=5)
        self.engine.dispose()

    # -- registry -> store ------------------------------------------------------
    def register_tasks(self, active: Sequence[TaskRegistration]) -> None:
        """Upsert every active task and mark the others inactive (history stays)."""
        now = utcnow()
        with self.engine.begin() as conn:
            existing = {(r.codops, r.name): r for r in conn.execute(sa.select(tasks)).all()}
            seen = set()
            for reg in active:
                spec = reg.spec
                seen.add(spec.key)
                values = dict(loop=spec.loop_name, executor=spec.executor.value, active=True, repo=spec.repo,
                              notebook=spec.notebook, source_file=spec.source_file,
                              source_line=spec.source_line, version=reg.version, freshness_s=reg.freshness_s,
                              environment=spec.environment,
                              method=spec.method, full_notebook=spec.full_notebook, timeout_s=spec.timeout,
                              dependencies=json.dumps(list(spec.dependencies)), updated_at=now)
                values = fit_row(tasks, values)  # the names themselves were checked by the definitions
                row = existing.get(spec.key)
                if row is not None and row.freshness_s != reg.freshness_s:
                    values["stale_since"] = None  # a new freshness: judged afresh by the next check
                if row is not None and row.first_seen_at is None:
                    values["first_seen_at"] = now
                if row is None:
                    try:
                        with conn.begin_nested():  # another replica may register it at the same moment
                            conn.execute(tasks.insert().values(codops=spec.codops, name=spec.name,
                                                               state=TaskState.FINISHED.value, first_seen_at=now,
                                                               **values))
                    except IntegrityError:
                        conn.execute(tasks.update().where(tasks.c.codops == spec.codops,
                                                          tasks.c.name == spec.name).values(**values))
                elif any(getattr(row, k) != v for k, v in values.items() if k != "updated_at"):
                    conn.execute(tasks.update().where(tasks.c.codops == spec.codops,
                                                      tasks.c.name == spec.name).values(**values))
            gone = [key for key, row in existing.items() if row.active and key not in seen]
            for codops, name in gone:
                conn.execute(tasks.update().where(tasks.c.codops == codops, tasks.c.name == name)
                             .values(active=False, state=TaskState.FINISHED.value, updated_at=now))

    def set_problems(self, kind: str, scope: str, found: Iterable[Problem], codops: str | None = None) -> None:
        """Replace the problems of one (kind, scope) with ``found``."""
        self.set_problems_many([(kind, scope, list(found), codops)])

    def set_problems_many(self, groups: Sequence[tuple[str, str, Sequence[Problem], str | None]]) -> None:
        """Replace the problems of several ``(kind, scope, found, codops)`` in one transaction:
        a sync of 200 organisations used to commit 200 times for their environments alone."""
        if not groups:
            return
        now = utcnow()
        rows = [fit_row(problems_t, dict(kind=p.kind, scope=scope, codops=codops, file=p.file, line=p.line,
                                         message=p.message, created_at=now))
                for _, scope, found, codops in groups for p in found]
        with self.engine.begin() as conn:
            conn.execute(problems_t.delete().where(sa.tuple_(problems_t.c.kind, problems_t.c.scope).in_(
                [(kind, scope) for kind, scope, _, _ in groups])))
            if rows:
                conn.execute(problems_t.insert(), rows)
            if self.alerting:
                alert_journal.problems_changed(conn, groups, now)

    def keep_problems_of(self, scopes: Mapping[str, Collection[str]]) -> None:
        """Drop the problems of each kind whose scope is not in ``scopes[kind]``: those of a
        repository removed from the settings (or no longer discovered), or of an organisation
        that has no task left. Kinds not in ``scopes`` are left alone."""
        with self.engine.begin() as conn:
            for kind, keep in scopes.items():
                query = problems_t.delete().where(problems_t.c.kind == kind)
                if keep:
                    query = query.where(problems_t.c.scope.not_in(sorted(keep)))
                conn.execute(query)
                if self.alerting:
                    alert_journal.problems_dropped(conn, kind, keep, utcnow())

    # -- loops -> store ---------------------------------------------------------
    def set_states(self, keys: Iterable[tuple[str, str]], state: TaskState) -> None:
        keys = list(keys)
        if not keys:
            return
        with self.engine.begin() as conn:
            conn.execute(tasks.update().where(sa.tuple_(tasks.c.codops, tasks.c.name).in_(keys))
                         .values(state=state.value))

    def start_run(self, spec: TaskSpec, version: str | None, commit: str | None, owner: str,
                  trigger: Any = None, retry_of: int | None = None, attempt: int = 1) -> int:
        """Record a new RUNNING run; ``trigger`` (a ``triggers.Trigger``) when one asked for it.
        A retry (``retry_of``: the first attempt's id) carries the trigger's payload too, but
        the trigger keeps pointing to the first attempt."""
        now = utcnow()
        asked = {} if trigger is None else dict(trigger_id=trigger.id, triggered_by=trigger.requested_by,
                                                payload=trigger.payload_json)
        asked.update(attempt=attempt, retry_of=retry_of)
        with self.engine.begin() as conn:
            run_id = conn.execute(runs.insert().values(
                codops=spec.codops, task=spec.name, loop=spec.loop_name, executor=spec.executor.value,
                version=version, commit=commit, started_at=now, status=RunStatus.RUNNING.value, owner=owner,
                **asked,
            )).inserted_primary_key[0]
            conn.execute(tasks.update().where(tasks.c.codops == spec.codops, tasks.c.name == spec.name)
                         .values(state=TaskState.RUNNING.value, last_run_id=run_id))
            if trigger is not None and retry_of is None:  # in the same transaction: a claimed trigger is never without its run
                conn.execute(triggers.update().where(triggers.c.id == trigger.id).values(run_id=run_id))
        return int(run_id)

    def log_writer(self, run_id: int) -> LogWriter:
        writer = LogWriter(self, run_id)
        with self._writers_lock:
            self._writers.add(writer)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="log-flusher", daemon=True)
                self._flusher.start()
        return writer

    def _forget_writer(self, writer: LogWriter) -> None:
        with self._writers_lock:
            self._writers.discard(writer)

    def _flush_forever(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            with self._writers_lock:
                writers = list(self._writers)
            for writer in writers:
                try:
                    writer.flush(older_than=FLUSH_SECONDS)  # the younger lines go with the run's finish
                except Exception:  # a full disk must not end the flusher; next round retries
                    time.sleep(FLUSH_SECONDS)

    def finish_run(self, run_id: int, outcome: Outcome, started_monotonic: float | None = None,
                   log: LogWriter | None = None, retried: bool = False) -> None:
        """The single path by which a run leaves RUNNING. ``log``: the run's log writer,
        closed in the same transaction (what it still buffers is stored with the end).
        ``retried``: a failed attempt that its task's ``retries`` run again; it is not yet a
        failure of the task (no failure streak, no alert).

        What a task can put into the row (error, result, details) is bounded here, once, for
        every executor and path (``bounds.py``); what had to be cut is noted in the log. The
        run's outputs are stored in the same transaction."""
        now = utcnow()
        outcome, notes = bound_outcome(outcome)
        try:
            with self.engine.begin() as conn:
                if log is not None:
                    for note in notes:  # a retry finds the writer closed: noted once
                        log.write(f"{iso(now)} peach-tasks: {note}")
                    log.close(conn)
                ended = self._finish(conn, run_id, outcome, now, started_monotonic)
                if ended is not None and not retried:  # the task's freshness and streak, what alerts need
                    alert_journal.run_ended(conn, ended.codops, ended.task, run_id, outcome.status.value,
                                            outcome.error, ended.version, now, self.alerting)
        except BaseException:
            if log is not None:
                log.undo()
            raise
        if log is not None:
            log.kept()

    @staticmethod
    def _finish(conn: sa.Connection, run_id: int, outcome: Outcome, now: datetime,
                started_monotonic: float | None) -> Any:
        """End the run; returns its row as it was (None when it had ended already)."""
        row = conn.execute(sa.select(runs.c.started_at, runs.c.codops, runs.c.task, runs.c.status,
                                     runs.c.version).where(runs.c.id == run_id)).one()
        if row.status != RunStatus.RUNNING.value:
            return None  # already ended (abandoned by a successor); never overwrite
        outputs_q.insert_outputs(conn, run_id, outcome.outputs)
        if started_monotonic is not None:
            duration = time.monotonic() - started_monotonic
        else:
            duration = (now - as_utc(row.started_at)).total_seconds()
        conn.execute(runs.update().where(runs.c.id == run_id).values(
            finished_at=now, status=outcome.status.value, duration_s=round(duration, 6),
            exit_code=outcome.exit_code, signal=outcome.signal,
            error=outcome.error or None,
            result=_json_or_none(outcome.result),
            details=json.dumps(outcome.details, default=str) if outcome.details else None,
            peak_memory_bytes=outcome.peak_memory_bytes, cpu_seconds=outcome.cpu_seconds,
        ))
        conn.execute(tasks.update().where(tasks.c.codops == row.codops, tasks.c.name == row.task)
                     .values(state=TaskState.FINISHED.value))
        # Near the end: on PostgreSQL the change number is taken close to the commit (totals.py).
        add_run(conn, row.codops, row.task, outcome.status.value, round(duration, 6), now)
        return row

    def abandon_running(self, reason: str, owner: str | None = None, loop: str | None = None) -> list[int]:
        """End every RUNNING run (of ``owner`` and/or ``loop``, or all) as ABANDONED; returns their ids."""
        query = sa.select(runs.c.id).where(runs.c.status == RunStatus.RUNNING.value)
        if owner is not None:
            query = query.where(runs.c.owner == owner)
        if loop is not None:
            query = query.where(runs.c.loop == loop)
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(query).all()]
        for run_id in ids:
            self.finish_run(run_id, Outcome(RunStatus.ABANDONED, error=reason))
        if ids:
            with self.engine.begin() as conn:
                stale = tasks.update().where(tasks.c.state != TaskState.FINISHED.value)
                if loop is not None:
                    stale = stale.where(tasks.c.loop == loop)
                conn.execute(stale.values(state=TaskState.FINISHED.value))
        return ids

    def record_replica_died(self, dead: str, taken_by: str, loops: Sequence[str]) -> bool:
        """Journal that ``dead``'s loops were taken over (once per life of that replica)."""
        with self.engine.begin() as conn:
            return alert_journal.replica_died(conn, dead, taken_by, loops, utcnow())

    def last_task_of_loop(self, loop: str) -> tuple[str, str] | None:
        """The task of the newest run in ``loop``: a loop taken over goes on after it."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs.c.codops, runs.c.task).where(runs.c.loop == loop)
                               .order_by(runs.c.id.desc()).limit(1)).first()
        return (row.codops, row.task) if row else None


def _json_or_none(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False)  # within its bound: bound_outcome saw to that
    except (TypeError, ValueError, RecursionError):
        return None


def _engine(url: str | sa.URL, **pool: Any) -> sa.Engine:
    """An engine that pings a pooled connection before use; SQLite gets its pragmas."""
    engine = sa.create_engine(url, future=True, pool_pre_ping=True, **pool)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the views read while loops write; NORMAL sync is durable across a
    # process crash (only an OS crash may lose the last commits); wait on busy writers.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()

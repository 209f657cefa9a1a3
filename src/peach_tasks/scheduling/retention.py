"""The pruner: a named side job of ``serve`` that removes old runs and logs in small batches.

It runs a round every ``retention.every`` seconds on a connection pool of its own. A
round first takes the lease ``~retention`` (store/leases.py), so with several replicas on
PostgreSQL one of them prunes at a time; the lease is renewed between batches and a round
whose lease is lost stops at once. Then, in id order over all tasks (so that a batch's runs
share their pages), it removes the runs that ``store/retention.py`` says may go, a batch
per transaction (``retention.batch`` runs and at most a few MiB of log each, fewer while
transactions take longer than TRANSACTION_TARGET_SECONDS), pausing after each batch
``retention.pause`` and at least as long as the batch's work took, so the loops' own writes
come first. A stop ends a round between two batches.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterator

from ..durations import format_duration
from ..store import retention as q
from ..store.leases import LeaseStore
from .side_job import SideJob

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ..settings import RetentionSettings
    from ..store import Store

log = logging.getLogger(__name__)

LEASE = "~retention"  # not a loop name (those are codops or 'metadata'): a side job's lease
LEASE_SECONDS = 60.0
# What one batch's transaction should take at most. On SQLite a loop's write waits for it,
# so the batch size follows the time the last transactions took (halved when one took longer,
# grown while they take under half of it), up to ``retention.batch``: a busy machine gets
# smaller batches instead of longer waits.
TRANSACTION_TARGET_SECONDS = 0.02
CHECKPOINT_TRIES = 4  # SQLite: passive checkpoints after a batch until the WAL was copied whole


class LeaseLost(Exception):
    """Another replica prunes now (or the database is out of reach): this round stops."""


@dataclass
class RoundResult:
    runs: int = 0  # runs removed whole
    logs: int = 0  # runs whose log was removed
    batches: int = 0
    longest_batch_s: float = 0.0  # the longest transaction (what a loop could have waited for)
    skipped: str | None = None  # why nothing was done, if so
    batch_seconds: list[float] = field(default_factory=list)
    # (start, end) of each batch's transaction, time.perf_counter(): benchmarks line them up
    # with what a loop waited for.
    transactions: list[tuple[float, float]] = field(default_factory=list)
    # Per task (codops, name): what this round removed of it (runs, logs and their bytes).
    tasks: dict[tuple[str, str], q.TaskPlan] = field(default_factory=dict)

    def removed(self, batch: q.Batch, whole: bool) -> None:
        """Count a batch that was applied: its runs went ``whole``, or only their logs."""
        for key, (count, size) in batch.tasks.items():
            done = self.tasks.setdefault(key, q.TaskPlan(*key))
            if whole:
                done.runs, done.runs_log_bytes = done.runs + count, done.runs_log_bytes + size
            else:
                done.logs, done.logs_bytes = done.logs + count, done.logs_bytes + size
        if whole:
            self.runs += len(batch.run_ids)
        else:
            self.logs += len(batch.run_ids)


def policy_of(settings: "RetentionSettings") -> q.Policy:
    return q.Policy(settings.runs_days, settings.logs_days, settings.keep_last)


class Pruner(SideJob):
    thread_name = "retention"

    def __init__(self, settings: "RetentionSettings", store: "Store", owner: str,
                 stop: threading.Event | None = None, lease_seconds: float = LEASE_SECONDS,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.settings, self.store, self.owner = settings, store, owner
        super().__init__(store.side_engine(), stop)
        self.leases = LeaseStore(self.engine)
        self.lease_seconds = lease_seconds
        self.sleep = sleep or self.stop_event.wait
        self.batch_size = max(1, settings.batch // 4)  # adapted to TRANSACTION_TARGET_SECONDS
        self._renewed = 0.0
        self._rested = 0.0  # time.perf_counter() at the end of the last pause

    # -- the side job ---------------------------------------------------------------
    def _forever(self) -> None:
        while not self.stop_event.is_set():
            try:
                done = self.round()
                if done.runs or done.logs:
                    log.info("retention: removed %d runs and the logs of %d more in %d batches (longest %.0f ms)",
                             done.runs, done.logs, done.batches, done.longest_batch_s * 1000)
            except Exception:  # the database briefly gone: the next round tries again
                log.exception("retention: a round failed; retrying in %s", format_duration(self.settings.every))
            self.stop_event.wait(self.settings.every)

    # -- one round --------------------------------------------------------------------
    def round(self, now: datetime | None = None) -> RoundResult:
        """Prune every task once (tests and ``peach-tasks prune`` call it directly)."""
        result = RoundResult()
        if self.leases.try_acquire(LEASE, self.owner, self.leases.now(), self.lease_seconds) is None:
            result.skipped = "another replica is pruning"
            return result
        self._renewed = time.monotonic()
        try:
            self._round(now or datetime.now(timezone.utc), result)
        except LeaseLost:
            log.warning("retention: lost the lease %s; another replica goes on", LEASE)
            result.skipped = "lease lost"
            return result
        finally:
            try:
                self.leases.release(self.owner, [LEASE])
            except Exception:  # it expires by itself
                log.debug("retention: could not release the lease", exc_info=True)
        return result

    def _round(self, now: datetime, result: RoundResult) -> None:
        policy = policy_of(self.settings)
        runs_before, logs_before = policy.cutoffs(now)
        # Each task's keep boundary, read once per round: removing runs (or logs) below it never
        # moves it, and a run started meanwhile only keeps more until the next round.
        with self.engine.connect() as conn:
            bounds = q.boundaries(conn, self.settings.keep_last)
        note = (f"{now.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} peach-tasks: this run's log and "
                f"outputs were removed by retention (logs_days: {self.settings.logs_days}); its row stays\n")
        self._rested = time.perf_counter()
        if runs_before is not None:
            def old_runs(conn: sa.Connection, after: int, limit: int) -> list[tuple[int, tuple[str, str], int]]:
                return q.next_old(conn, runs_before, after, limit)

            for batch in self._batches(old_runs, bounds):
                self._apply(lambda conn, ids=batch.run_ids: q.delete_runs(conn, ids), result)
                result.removed(batch, whole=True)
        if logs_before is not None:
            def old_logs(conn: sa.Connection, after: int, limit: int) -> list[tuple[int, tuple[str, str], int]]:
                return q.next_old(conn, logs_before, after, limit, logs_only=True)

            for batch in self._batches(old_logs, bounds):
                self._apply(lambda conn, ids=batch.run_ids: q.drop_logs(conn, ids, note, now), result)
                result.removed(batch, whole=False)

    def _batches(self, find: Callable[..., list[tuple[int, tuple[str, str], int]]],
                 bounds: dict[tuple[str, str], int]) -> Iterator[q.Batch]:
        """The runs that may go, in id order over all tasks, in batches (each applied before
        the next is made). A run stays when its task has no more than keep_last runs or it is
        among them (at or above the task's boundary)."""
        batch = q.Batch()
        after = 0  # the runs up to this id were looked at
        while not self.stop_event.is_set():
            scan = max(4 * self.batch_size, 100)
            with self.engine.connect() as conn:
                rows = find(conn, after, scan)
            for run_id, key, size in rows:
                boundary = bounds.get(key)
                if boundary is not None and run_id < boundary:
                    limit = self.batch_size  # as the last transactions adapted it
                    if not q.fill(batch, [(run_id, size)], limit, key=key):  # no room (bytes): the next batch
                        yield batch
                        batch = q.Batch()
                        q.fill(batch, [(run_id, size)], limit, key=key)
                    if q.full(batch, limit):
                        yield batch
                        batch = q.Batch()
                        if self.stop_event.is_set():
                            return
                after = run_id
            if len(rows) < scan:
                break
        if batch.run_ids and not self.stop_event.is_set():
            yield batch

    def _apply(self, work: Callable[["sa.Connection"], None], result: RoundResult) -> None:
        if self.stop_event.is_set():
            raise LeaseLost("stopping")
        if time.monotonic() - self._renewed > self.lease_seconds / 3:
            try:
                kept = self.leases.renew(self.owner, [LEASE], self.leases.now(), self.lease_seconds)
            except Exception as exc:
                raise LeaseLost(str(exc)) from exc
            if LEASE not in kept:
                raise LeaseLost("renewal refused")
            self._renewed = time.monotonic()
        began = time.perf_counter()
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # The pruner's commit need not wait for the WAL to reach the disk (a prune lost
                # in a crash is redone by the next round), so it does not queue its flush ahead
                # of the loops' commits.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            work(conn)
        ended = time.perf_counter()
        took = ended - began
        result.transactions.append((began, ended))
        if took > TRANSACTION_TARGET_SECONDS:
            self.batch_size = max(1, self.batch_size // 2)
        elif took < TRANSACTION_TARGET_SECONDS / 2:
            self.batch_size = min(self.settings.batch, self.batch_size + max(1, self.batch_size // 4))
        if self.engine.dialect.name == "sqlite":
            self._checkpoint()
        result.batches += 1
        result.batch_seconds.append(took)
        result.longest_batch_s = max(result.longest_batch_s, took)
        # The batch's work (finding its runs, its transaction, the checkpoint) took this long;
        # the pruner rests at least as long, so it never takes more than half of the store's
        # (and, in serve's process, the interpreter's) time, however slow a busy machine is.
        worked = time.perf_counter() - self._rested
        if self.settings.pause:
            self.sleep(self.settings.pause)
        if worked > self.settings.pause:
            self.stop_event.wait(worked - self.settings.pause)
        self._rested = time.perf_counter()


    def _checkpoint(self) -> None:
        """Copy what the batch wrote from SQLite's WAL into the database now, outside any
        transaction, so that no loop's commit is the one to pass the auto-checkpoint mark
        (that commit would copy the WAL and sync the disk itself, holding the write lock).

        The WAL starts over (and so stays short) only once all of it was copied; a loop's
        commit during the copy leaves frames behind, so the copy is repeated (its work is
        then only those few frames) until nothing is left, a few times at most."""
        with self.engine.connect() as conn:
            for _ in range(CHECKPOINT_TRIES):
                _busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
                if copied >= frames or self.stop_event.is_set():
                    break


def plan(store: "Store", settings: "RetentionSettings", now: datetime | None = None) -> list[q.TaskPlan]:
    """What a round would remove now, task by task (only tasks with something to remove)."""
    policy = policy_of(settings)
    now = now or datetime.now(timezone.utc)
    with store.engine.connect() as conn:
        plans = [q.plan_task(conn, codops, task, policy, now) for codops, task in q.task_keys(conn)]
    return [p for p in plans if p.runs or p.logs]

"""Run totals for ``/metrics``, kept up to date by reading only the runs new since last time.

A scrape over a million runs would otherwise re-read them all every 15 seconds. A run's
row changes once, when it leaves RUNNING (``Store.finish_run`` is the single release
path), so totals can grow incrementally: each refresh reads, in one statement, the runs
with an id above ``watermark - WINDOW`` plus the runs that were still RUNNING, and counts
each finished run exactly once. The window re-reads the newest ids because, with several
schedulers on PostgreSQL, a smaller id may commit after a larger one was already seen.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..store import Store

WINDOW = 1000


@dataclass
class DurationBuckets:
    """Non-cumulative counts per bucket (the last one is +Inf), their count and sum."""

    counts: list[int]
    total: float = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect.bisect_left(bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


@dataclass
class RunTotals:
    """Finished runs by (codops, task, status), durations by (codops, status), last successes."""

    bounds: tuple[float, ...]
    window: int = WINDOW
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    durations: dict[tuple[str, str], DurationBuckets] = field(default_factory=dict)
    last_success: dict[tuple[str, str], datetime] = field(default_factory=dict)
    watermark: int = 0
    _counted: set[int] = field(default_factory=set)  # counted ids within the window
    _open: set[int] = field(default_factory=set)  # ids seen RUNNING, to read again
    _started: bool = False
    _floor: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, store: "Store") -> None:
        """Count the runs that finished since the last refresh (all of them the first time)."""
        with self._lock:
            if not self._started:
                bound = store.max_run_id() - self.window
                if bound > 0:
                    # The bulk of the history is summed by the database, the rest row by row.
                    self._add_bulk(store.finished_totals(bound, self.bounds), bound)
                self._started = True
            # Ids up to _floor were summed in bulk: only the runs still open there are read again.
            low = max(self.watermark - self.window, self._floor)
            self._absorb(store.runs_for_totals(low, sorted(self._open)), low)

    def _add_bulk(self, totals: dict, bound: int) -> None:
        self._open = set(totals["running"])
        self.watermark = self._floor = bound
        for row in totals["rows"]:
            codops, task, status = row["codops"], row["task"], row["status"]
            self.counts[(codops, task, status)] = self.counts.get((codops, task, status), 0) + row["count"]
            if status == "SUCCESS" and row["last_finished_at"] is not None:
                self._success(codops, task, row["last_finished_at"])
            if row["timed"]:
                buckets = self._buckets(codops, status)
                below = 0
                for index, cumulative in enumerate(row["cumulative"]):
                    buckets.counts[index] += cumulative - below
                    below = cumulative
                buckets.counts[-1] += row["timed"] - below
                buckets.total += row["sum"]

    def _absorb(self, rows: Iterable[tuple], low: int) -> None:
        top = self.watermark
        for run_id, codops, task, status, finished_at, duration in rows:
            top = max(top, run_id)
            if run_id in self._counted:
                continue
            if status == "RUNNING":
                self._open.add(run_id)
                continue
            self._open.discard(run_id)
            if run_id > low:
                self._counted.add(run_id)
            key = (codops, task, status)
            self.counts[key] = self.counts.get(key, 0) + 1
            if duration is not None:
                self._buckets(codops, status).observe(self.bounds, duration)
            if status == "SUCCESS" and finished_at is not None:
                self._success(codops, task, finished_at)
        self.watermark = top
        floor = max(top - self.window, 0)
        self._counted = {i for i in self._counted if i > floor}

    def _buckets(self, codops: str, status: str) -> DurationBuckets:
        return self.durations.setdefault((codops, status), DurationBuckets([0] * (len(self.bounds) + 1)))

    def _success(self, codops: str, task: str, finished_at: datetime) -> None:
        when = finished_at if finished_at.tzinfo else finished_at.replace(tzinfo=timezone.utc)
        if (codops, task) not in self.last_success or when > self.last_success[(codops, task)]:
            self.last_success[(codops, task)] = when

"""Freshness: is a task's last success recent enough?

A task with a freshness of F seconds is *stale* when its last SUCCESS ended more than F
seconds ago, or when it has never succeeded and was first defined more than F seconds
ago. The inputs are kept up to date in the ``tasks`` table (``Store.finish_run`` writes
the last success with the run's end), so the answer never needs the runs table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .times import as_utc


@dataclass(frozen=True)
class Freshness:
    freshness_s: float | None  # None: the task declares none (never stale)
    last_success_at: datetime | None
    first_seen_at: datetime | None

    def since_success(self, now: datetime) -> float | None:
        """Seconds since the last success ended; None: never succeeded."""
        if self.last_success_at is None:
            return None
        return max((now - as_utc(self.last_success_at)).total_seconds(), 0.0)

    def stale(self, now: datetime) -> bool | None:
        """True/False for a task with a freshness, None for one without."""
        if not self.freshness_s:
            return None
        start = self.last_success_at or self.first_seen_at
        if start is None:
            return False  # not yet registered: nothing to hold against it
        return (now - as_utc(start)).total_seconds() > self.freshness_s

    def stale_at(self) -> datetime | None:
        """When the task is (or becomes) stale if nothing succeeds before; None: never."""
        start = self.last_success_at or self.first_seen_at
        if not self.freshness_s or start is None:
            return None
        return as_utc(start) + timedelta(seconds=self.freshness_s)


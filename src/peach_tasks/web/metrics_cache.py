"""What ``/metrics`` serves from the store, kept in memory and up to date by a background thread.

A scrape reads nothing from the database: it joins text rendered beforehand. A refresher
thread reads, every ``REFRESH_SECONDS``, the run totals that changed (``store/totals.py``:
one indexed query returning only the rows of tasks whose runs ended since the last read),
the freshness of the tasks that declare one (a row each), and every ``TABLES_SECONDS`` the
task states, the open problems and the alert counts (small tables), and renders again the lines of the
organisations whose numbers changed. So a scrape costs the same with a million runs as
with ten, and the series grow with tasks (a few per task), never with runs.

With several replicas, each one's cache reads the same ``run_totals`` rows, which every
replica's runs update in their final transaction: every replica serves the same totals,
at most ``REFRESH_SECONDS`` behind.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.utils import floatToGoString

from ..store.alert_outbox import AlertOutbox
from ..store.totals import DURATION_BUCKETS, Total, TotalsCache
from .access import Scope, visible_problems

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
# The task states, problems and alert counts are read whole, so less often than the totals.
TABLES_SECONDS = 5.0
# A scrape whose cache is older than this (the refresher stuck or failing) refreshes itself.
STALE_SECONDS = 30.0

RUNS = ("peach_tasks_runs_total", "counter", "Finished runs by organisation, task and final status")
LAST_SUCCESS = ("peach_tasks_last_success_timestamp_seconds", "gauge",
                "Unix time when each task's last successful run ended")
DURATIONS = ("peach_tasks_run_duration_seconds", "histogram", "Duration of finished runs by organisation and status")
TASKS = ("peach_tasks_tasks", "gauge", "Active tasks by organisation and state")
PROBLEMS = ("peach_tasks_problems", "gauge", "Open problems (sync, config, environment) as shown by 'peach-tasks sync'")
_LE = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(family: tuple[str, str, str]) -> str:
    name, kind, text = family
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


@dataclass
class OrgLines:
    """One organisation's rendered lines per family of the run totals."""

    runs: str = ""
    last_success: str = ""
    durations: str = ""


def render_organisation(codops: str, rows: list[tuple[tuple[str, str], Total]]) -> OrgLines:
    org = _label(codops)
    runs, last, durations = [], [], []
    by_status: dict[str, list[Total]] = {}
    for (task, status), total in rows:
        name = _label(task)
        runs.append(f'peach_tasks_runs_total{{codops="{org}",task="{name}",status="{status}"}} '
                    f"{floatToGoString(total.runs)}\n")
        if status == "SUCCESS" and total.last_finished_at is not None:
            last.append(f'peach_tasks_last_success_timestamp_seconds{{codops="{org}",task="{name}"}} '
                        f"{floatToGoString(total.last_finished_at.timestamp())}\n")
        by_status.setdefault(status, []).append(total)
    for status, totals in sorted(by_status.items()):
        timed = sum(t.timed for t in totals)
        if not timed:
            continue
        labels = f'codops="{org}",status="{status}"'
        cumulative = 0
        for index, le in enumerate(_LE):
            cumulative += sum(t.buckets[index] for t in totals)
            durations.append(f'peach_tasks_run_duration_seconds_bucket{{{labels},le="{le}"}} '
                             f"{floatToGoString(cumulative)}\n")
        durations.append(f"peach_tasks_run_duration_seconds_count{{{labels}}} {floatToGoString(timed)}\n")
        durations.append(f"peach_tasks_run_duration_seconds_sum{{{labels}}} "
                         f"{floatToGoString(sum(t.duration_sum for t in totals))}\n")
    return OrgLines("".join(runs), "".join(last), "".join(durations))


@dataclass
class Snapshot:
    """Everything a scrape needs, replaced whole by each refresh (readers never see half)."""

    lines: dict[str, OrgLines] = field(default_factory=dict)
    states: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    repos: dict[str, set[str]] = field(default_factory=dict)  # codops -> repositories of its active tasks
    freshness: list[tuple[str, str, Any]] = field(default_factory=list)  # Store.freshness(), every organisation
    alerts: dict[str, int] = field(default_factory=dict)  # the alert outbox by state
    everything: bytes | None = None  # the whole text for a token that sees every organisation


class MetricsCache:
    """The store's part of ``/metrics``, rendered ahead of the scrapes."""

    def __init__(self, store: "Store", refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.store = store
        self.totals = TotalsCache(store)
        self.refresh_seconds = refresh_seconds
        self.snapshot = Snapshot()
        self._tables_read = float("-inf")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    # -- keeping it up to date ---------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            changed = self.totals.refresh()
            old = self.snapshot
            lines = dict(old.lines)
            for codops in changed:
                lines[codops] = render_organisation(codops, self.totals.of(codops))
            # Freshness rows every time (a task's age is judged against its last success, which
            # may be seconds old); the states, problems and alert counts less often.
            freshness = self.store.freshness(None)
            if time.monotonic() - self._tables_read >= TABLES_SECONDS:
                self._tables_read = time.monotonic()
                self.snapshot = Snapshot(lines=lines, states=self.store.task_state_counts(None),
                                         problems=self.store.problems(None),
                                         repos=self.store.active_repositories(), freshness=freshness,
                                         alerts=AlertOutbox(self.store.engine).counts())
            else:
                self.snapshot = dataclasses.replace(old, lines=lines, freshness=freshness,
                                                    everything=old.everything if not changed else None)

    def start(self) -> None:
        """Load once (here) and keep refreshing on a daemon thread until the store closes."""
        with self._started:
            if self._thread is not None:
                return
            self.refresh()
            self._thread = threading.Thread(target=self._forever, name="metrics-refresh", daemon=True)
            self._thread.start()

    def _forever(self) -> None:
        while not self.store.closing.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # the database briefly gone: serve what we have, try again
                log.warning("refreshing the metrics failed; retrying", exc_info=True)
                self.store.closing.wait(5.0)

    # -- a scrape ----------------------------------------------------------------------
    def render(self, scope: Scope) -> bytes:
        if self._thread is None:
            self.start()
        elif time.monotonic() - self.totals.refreshed_at > STALE_SECONDS:
            self.refresh()  # the refresher is stuck or failing: this scrape says so if it fails too
        snap = self.snapshot
        if scope.everything and snap.everything is not None:
            return snap.everything
        orgs = [c for c in sorted(snap.lines) if scope.allows(c)]
        parts = [_header(RUNS), *(snap.lines[c].runs for c in orgs),
                 _header(LAST_SUCCESS), *(snap.lines[c].last_success for c in orgs),
                 _header(DURATIONS), *(snap.lines[c].durations for c in orgs),
                 _header(TASKS)]
        parts += [f'peach_tasks_tasks{{codops="{_label(r["codops"])}",state="{r["state"]}"}} '
                  f'{floatToGoString(r["count"])}\n' for r in snap.states if scope.allows(r["codops"])]
        parts.append(_header(PROBLEMS))
        counts: dict[tuple[str, str], int] = {}
        repos = set().union(*(snap.repos.get(c, set()) for c in (scope.organisations or ())))
        for p in visible_problems(snap.problems, scope, repos):
            counts[(p["kind"], p["scope"])] = counts.get((p["kind"], p["scope"]), 0) + 1
        parts += [f'peach_tasks_problems{{kind="{_label(kind)}",scope="{_label(where)}"}} {floatToGoString(n)}\n'
                  for (kind, where), n in sorted(counts.items())]
        text = "".join(parts).encode()
        if scope.everything:
            snap.everything = text  # the same until the next refresh replaces the snapshot
        return text

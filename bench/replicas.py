#!/usr/bin/env python
"""Throughput of 1, 2 and 3 ``serve`` replicas on one PostgreSQL database, and the failover time.

    python bench/replicas.py [--orgs 200] [--tasks-per-org 5] [--seconds 30] [--json]

Builds, in a temporary folder, one git repository with ORGS organisations of
TASKS_PER_ORG trivial python tasks each (one shared notebook whose only cell is
``def main(): return 1``; no dependencies), so ORGS + 1 loops (the metadata loop has no
task here). Then, for 1, then 2, then 3 replicas:

1. ``CREATE DATABASE peach_bench_<random>`` (schema from the real migrations), dropped
   at the end of the phase;
2. N real processes ``python -m peach_tasks.cli --config rK.yaml serve --no-web``, each
   with its own state_dir and replica name rK (lease_seconds 10, sync_interval 30,
   min_iteration_seconds 0). r1 starts first and the others once r1 has registered every
   task: replicas registering the tasks of an empty database at the same moment collide
   (a UniqueViolation on tasks_pkey ends serve);
3. setup, not measured: wait until every loop is leased and fairly shared
   (at most ceil(loops / N) each), then until every organisation's loop has finished a
   run that started after that point, then a short warm-up. If that does not happen
   within ``--settle-timeout`` the phase is measured anyway and flagged NOT SETTLED, with
   how far leasing got;
4. the window (``--seconds``): tasks completed per second (runs whose ``finished_at``
   falls in the window, from the runs table) and the scheduler's own CPU per task: the
   sum over the serve processes of their user+system CPU time (psutil ``cpu_times()``,
   the process itself, its reaped children excluded) over the window, divided by the
   tasks completed. The task processes' CPU (the children), PostgreSQL's CPU and the
   machine's busy share are printed beside it, for the bottleneck.

The organisations' uv environments (empty ones) are built once, in this process, into
a template, and each replica's fresh state_dir gets a copy of them (the environments are
relocatable). A replica then finds its environment current at its first sync instead of
building ORGS environments itself; building is setup and never measured anyway.

Each phase also reports the lease trouble the replicas logged (every loop given up at
once for want of a renewal, single leases lost) and DOUBLE RUNS: loops that had two runs
at the same time in the window (a loop runs one task at a time, so that is two replicas,
or two threads of one, running it).

Failover (the 2-replica phase, after its window): SIGKILL r2 and time the kill to the
first run that r1 starts (``runs.started_at``) in a loop r2 held. Expect the leases taken
between lease - renewal and lease (+0.1 s) after the kill (renewal = lease / 4): the dead
replica's leases expire ``lease`` after its last renewal, which came at most one renewal
period before the kill, and the survivor, seeing r2's heartbeat stop, runs a round for
that moment; the first run follows once the loop's thread has started. It is
skipped when r2 holds no live lease at that moment: there would be no takeover to time.

Diagnostics (first phase, after its replicas stopped, in this process on that database,
with r1's settings and state_dir): one loop iteration per organisation with the executor
stubbed out (the store writes and loop logic per task, no process), the same with the
real python executor, one steady-state sync of all organisations (what every replica
does every sync_interval), and one lease round holding every loop. Each line gives wall
and CPU time and how many SQL statements and pool checkouts (each checkout pings the
server first: pool_pre_ping) it takes.

Nothing here is asserted: it is a benchmark, not a test. The database server is
PEACH_TASKS_TEST_POSTGRES, else postgresql+psycopg://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psutil
import sqlalchemy as sa
import yaml
from common import commit_repository, definitions, ms, notebook, say, workspace

POSTGRES_ENV = "PEACH_TASKS_TEST_POSTGRES"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOTEBOOK_CODE = "def main():\n    return 1\n"
VICTIM, SURVIVOR = "r2", "r1"
# Log warnings that the benchmark itself causes (its stop, the failover's takeover).
EXPECTED_WARNINGS = ("SIGTERM received", "took over from")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def wait_for(check: Callable[[], Any], seconds: float, what: str, alive: Callable[[], None] | None = None,
             step: float = 0.25) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        value = check()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {seconds:g}s waiting for {what}")


# -- the repository and the environments ---------------------------------------------
def org_names(orgs: int) -> list[str]:
    width = max(3, len(str(orgs - 1)))
    return [f"org{i:0{width}d}" for i in range(orgs)]


def build_repository(root: Path, orgs: list[str], per_org: int) -> Path:
    """One git repository: one shared notebook, one yaml per organisation."""
    tasks = {f"t{k}": {"executor": "python", "notebook": "nb.ipynb", "method": "main"} for k in range(per_org)}
    files = {"nb.ipynb": notebook([NOTEBOOK_CODE])}
    files.update({f"peach.conf/{codops}.yaml": definitions(codops, tasks) for codops in orgs})
    return commit_repository(root, files)


def build_template_environments(root: Path, orgs: list[str]) -> tuple[Path, float]:
    """Every organisation's (empty) environment, built once with the real EnvironmentManager."""
    from peach_tasks.executors.environments import EnvironmentManager

    state = root / "env-template"
    envs = EnvironmentManager(state, progress=lambda text: None)
    started = time.perf_counter()
    done = [0]
    lock = threading.Lock()

    def build(codops: str) -> str | None:
        _, problem = envs.ensure(codops, ())
        with lock:
            done[0] += 1
            if done[0] % 50 == 0 or done[0] == len(orgs):
                say(f"  environments: {done[0]}/{len(orgs)} built ({time.perf_counter() - started:.0f}s)")
        return None if problem is None else problem.message

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failures = [m for m in pool.map(build, orgs) if m]
    if failures:
        raise SystemExit(f"{len(failures)} environments failed to build; the first: {failures[0]}")
    return state / "envs", time.perf_counter() - started


# -- the database ----------------------------------------------------------------------
class Database:
    """A fresh database on the server, dropped by ``drop()``."""

    def __init__(self, admin_url: str) -> None:
        self.name = f"peach_bench_{secrets.token_hex(6)}"
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = sa.engine.make_url(admin_url).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": self.name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()

    def counters(self) -> tuple[int, int]:
        """Committed transactions and sessions opened on this database (pg_stat_database;
        a backend reports at most every second, an idle one within 10 s)."""
        with self.admin.connect() as conn:
            row = conn.execute(sa.text("select xact_commit, sessions from pg_stat_database where datname = :n"),
                               {"n": self.name}).one()
        return int(row[0]), int(row[1])


# -- the replicas --------------------------------------------------------------------
class Cluster:
    """``serve`` processes of one phase, each with its own config and state_dir."""

    def __init__(self, folder: Path, url: str, repo: Path, lease: float, sync_interval: float) -> None:
        self.folder, self.url, self.repo = folder, url, repo
        self.lease, self.sync_interval = lease, sync_interval
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: set[str] = set()
        folder.mkdir(parents=True)

    def config(self, name: str, template_envs: Path) -> Path:
        state = self.folder / f"state-{name}"
        state.mkdir()
        shutil.copytree(template_envs, state / "envs", symlinks=True)
        path = self.folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "database": self.url, "state_dir": f"state-{name}",
            "repositories": [{"url": str(self.repo)}],
            "timeouts": {"task": 60, "metadata": 60, "kill_grace": 1},
            "loop": {"min_iteration_seconds": 0, "sync_interval_seconds": self.sync_interval},
            "replica": {"name": name, "lease_seconds": self.lease},
        }, sort_keys=False))
        return path

    def start(self, name: str) -> None:
        log = open(self.folder / f"{name}.log", "ab")
        env = {k: v for k, v in os.environ.items() if k != "PEACH_TASKS_DATABASE_URL"}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "peach_tasks.cli", "--config", str(self.folder / f"{name}.yaml"),
             "serve", "--no-web"], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env)
        log.close()

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if n not in self.killed}

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.killed and proc.poll() is not None:
                raise RuntimeError(f"replica {name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, name: str) -> None:
        self.killed.add(name)
        self.procs[name].send_signal(signal.SIGKILL)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_marks(self) -> dict[str, int]:
        """Where each replica's log ends now, to count what it logs from here on."""
        return {n: (self.folder / f"{n}.log").stat().st_size for n in self.procs}

    def events(self, since: dict[str, int] | None = None, until: dict[str, int] | None = None
               ) -> dict[str, dict[str, int]]:
        """Per replica, lease trouble logged between two marks: every loop given up at once
        (no renewal for lease/2), single leases lost, failed renewals; and other unexpected
        WARNING/ERROR lines (the bench's own stop and the failover's takeover are expected)."""
        out = {}
        for name in self.procs:
            path = self.folder / f"{name}.log"
            data = path.read_bytes() if path.exists() else b""
            data = data[(since or {}).get(name, 0):(until or {}).get(name, len(data))]
            counts = dict.fromkeys(("gave_up_all", "lost_lease", "renewal_failed", "other_warnings"), 0)
            for line in data.decode(errors="replace").splitlines():
                if "no lease renewal for" in line:
                    counts["gave_up_all"] += 1
                elif "lost the lease of loop" in line:
                    counts["lost_lease"] += 1
                elif "lease renewal failed" in line:
                    counts["renewal_failed"] += 1
                elif ((" WARNING " in line or " ERROR " in line or "Traceback" in line)
                      and not any(known in line for known in EXPECTED_WARNINGS)):
                    counts["other_warnings"] += 1
            out[name] = {k: v for k, v in counts.items() if v}
        return {n: v for n, v in out.items() if v}


def holders(engine: sa.Engine) -> dict[str, set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select owner, loop from loop_leases where owner is not null and expires_at > now()")).all()
    out: dict[str, set[str]] = {}
    for owner, loop in rows:
        out.setdefault(owner, set()).add(loop)
    return out


def task_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from tasks")).scalar_one())


def lease_progress(engine: sa.Engine) -> dict[str, Any]:
    """How far the replicas got with leasing: rows, live leases, runs, and the age of the newest
    ``acquired_at`` (a round stamps every lease it takes with the time it began)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "select count(*), count(*) filter (where owner is not null and expires_at > now()), "
            "max(acquired_at), (select count(*) from runs), now() from loop_leases")).one()
    return {"lease_rows": row[0], "live_leases": row[1], "runs": row[3],
            "newest_acquisition_age_s": None if row[2] is None else round((row[4] - row[2]).total_seconds(), 1)}


def fairly_shared(engine: sa.Engine, names: list[str], loops: int) -> bool:
    held = holders(engine)
    share = math.ceil(loops / len(names))
    return (set(held) == set(names) and sum(map(len, held.values())) == loops
            and max(map(len, held.values())) <= share)


def loops_run_since(engine: sa.Engine, since: datetime) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "select count(distinct loop) from runs where started_at >= :t and finished_at is not null"),
            {"t": since}).scalar_one())


# -- the window --------------------------------------------------------------------------
def cpu_sample(pids: dict[str, int]) -> dict[str, Any]:
    own, children = {}, {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        own[name] = t.user + t.system
        children[name] = t.children_user + t.children_system
    # The server's processes, and the reaped children of each (the postmaster's): a backend
    # that exits inside the window then still counts, through the postmaster.
    pg = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                pg += t.user + t.system + t.children_user + t.children_system
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    return {"own": own, "children": children, "postgres": pg, "busy": sum(machine) - idle - getattr(
        machine, "guest", 0.0) - getattr(machine, "guest_nice", 0.0), "total": sum(machine) - getattr(
        machine, "guest", 0.0) - getattr(machine, "guest_nice", 0.0)}


def measure_window(cluster: Cluster, engine: sa.Engine, db: Database, seconds: float) -> dict[str, Any]:
    pids = cluster.pids()
    commits0, sessions0 = db.counters()
    before = cpu_sample(pids)
    t0, w0 = utcnow(), time.perf_counter()
    load0 = os.getloadavg()[0]
    end = w0 + seconds
    while time.perf_counter() < end:
        time.sleep(min(1.0, max(end - time.perf_counter(), 0.0)))
        cluster.check_alive()
    after = cpu_sample(pids)
    t1, w1 = utcnow(), time.perf_counter()
    load1 = os.getloadavg()[0]
    time.sleep(1.5)  # runs that ended just before t1 commit now; pg_stat catches up a little
    commits1, sessions1 = db.counters()
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "select owner, status, count(*) from runs where finished_at >= :t0 and finished_at < :t1 "
            "group by owner, status"), {"t0": t0, "t1": t1}).all()
        # A loop runs one task at a time: two of its runs overlapping in time means two
        # loop threads (of one replica or of two) ran it at once.
        overlap = conn.execute(sa.text(
            "with w as (select id, loop, owner, started_at, coalesce(finished_at, now()) as ended from runs "
            "where started_at < :t1 and coalesce(finished_at, now()) > :t0) "
            "select count(distinct a.loop), count(distinct a.loop) filter (where a.owner <> b.owner) "
            "from w a join w b on a.loop = b.loop and a.id < b.id "
            "and b.started_at < a.ended and a.started_at < b.ended"), {"t0": t0, "t1": t1}).one()
    window = (t1 - t0).total_seconds()
    statuses: dict[str, int] = {}
    per_owner: dict[str, int] = {}
    for owner, status, count in rows:
        statuses[status] = statuses.get(status, 0) + count
        if status == "SUCCESS":
            per_owner[owner] = per_owner.get(owner, 0) + count
    done = statuses.get("SUCCESS", 0)
    own = {n: after["own"][n] - before["own"][n] for n in pids}
    children = sum(after["children"][n] - before["children"][n] for n in pids)
    per_task = (lambda cpu: ms(cpu / done) if done else None)
    return {
        "window_s": round(window, 3),
        "wall_s": round(w1 - w0, 3),
        "tasks_completed": done,
        "statuses": statuses,
        "tasks_per_s": round(done / window, 2),
        "tasks_per_s_by_replica": {n: round(per_owner.get(n, 0) / window, 2) for n in sorted(pids)},
        "scheduler_cpu_ms_per_task": per_task(sum(own.values())),
        "scheduler_cpu_share_of_one_core": {n: round(v / window, 3) for n, v in sorted(own.items())},
        "task_processes_cpu_ms_per_task": per_task(children),
        "postgres_cpu_ms_per_task": per_task(after["postgres"] - before["postgres"]),
        "machine_busy": round((after["busy"] - before["busy"]) / max(after["total"] - before["total"], 1e-9), 3),
        "db_commits_per_task": round((commits1 - commits0) / done, 2) if done else None,
        "db_sessions_opened": sessions1 - sessions0,
        "other_cpu_ms_per_task": per_task((after["busy"] - before["busy"]) - sum(own.values()) - children
                                          - (after["postgres"] - before["postgres"])),
        "loadavg_1m": [round(load0, 2), round(load1, 2)],
        "loops_with_overlapping_runs": overlap[0],
        "loops_run_by_two_replicas_at_once": overlap[1],
    }


# -- failover ------------------------------------------------------------------------
def failover(cluster: Cluster, engine: sa.Engine, lease: float) -> dict[str, Any]:
    held = holders(engine).get(VICTIM, set())
    with engine.connect() as conn:  # its lease rows, expired or not
        rows = {r[0] for r in conn.execute(sa.text("select loop from loop_leases where owner = :o"), {"o": VICTIM})}
    if not held:  # a kill now would measure nothing: its loops are free for anyone already
        raise TimeoutError(f"skipped: {VICTIM} held no live lease ({len(rows)} expired lease rows), "
                           "so there is no takeover to time")
    victim_loops = held
    org_loops = sorted(victim_loops - {"metadata"})
    say(f"failover: SIGKILL {VICTIM}, which holds {len(held)} live leases ({len(rows)} lease rows)")
    kill_wall = utcnow()
    cluster.kill(VICTIM)
    killed = time.perf_counter()
    cluster.procs[VICTIM].wait()

    def first_run() -> datetime | None:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "select min(started_at) from runs where owner = :o and loop = any(:loops) and started_at >= :t"),
                {"o": SURVIVOR, "loops": org_loops, "t": kill_wall}).scalar()

    first = wait_for(first_run, 3 * lease + 60, f"{SURVIVOR} to start a run in a loop of {VICTIM}",
                     cluster.check_alive, step=0.1)
    first_seen = time.perf_counter() - killed

    def all_loops() -> datetime | None:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "select count(*), max(first) from (select loop, min(started_at) as first from runs "
                "where owner = :o and loop = any(:loops) and started_at >= :t group by loop) f"),
                {"o": SURVIVOR, "loops": org_loops, "t": kill_wall}).one()
        return row[1] if row[0] == len(org_loops) else None

    try:
        last = wait_for(all_loops, 60, f"{SURVIVOR} to run every loop of {VICTIM}", cluster.check_alive, step=0.5)
    except TimeoutError:
        last = None
    with engine.connect() as conn:
        leases = conn.execute(sa.text(
            "select min(acquired_at), max(acquired_at), count(*) from loop_leases "
            "where owner = :o and loop = any(:loops) and acquired_at >= :t"),
            {"o": SURVIVOR, "loops": sorted(victim_loops), "t": kill_wall}).one()
    since = lambda t: None if t is None else round((t - kill_wall).total_seconds(), 3)
    return {
        "victim": VICTIM, "survivor": SURVIVOR, "victim_loops": len(victim_loops),
        "victim_live_leases": len(held),
        "lease_seconds": lease, "renew_seconds": round(max(lease / 4.0, 0.2), 3),
        "first_run_s": since(first),
        "first_run_seen_by_bench_s": round(first_seen, 3),
        "leases_taken": leases[2],
        "first_lease_taken_s": since(leases[0]),
        "last_lease_taken_s": since(leases[1]),
        "all_loops_running_again_s": since(last),
    }


# -- diagnostics, in this process -------------------------------------------------------
class Counter:
    """SQL statements, pool checkouts and commits on an engine, from SQLAlchemy's events."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements = self.checkouts = self.commits = 0
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine, "checkout", self._checkout)
        sa.event.listen(engine, "commit", self._commit)

    def _statement(self, *args: Any) -> None:
        self.statements += 1

    def _checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def _commit(self, *args: Any) -> None:
        self.commits += 1

    def read(self) -> tuple[int, int, int]:
        return self.statements, self.checkouts, self.commits


def measured(counter: Counter, fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    c0, k0 = time.process_time(), os.times()
    s0 = counter.read()
    w0 = time.perf_counter()
    value = fn()
    wall = time.perf_counter() - w0
    c1, k1 = time.process_time(), os.times()
    s1 = counter.read()
    return value, {"wall": wall, "cpu": c1 - c0,
                   "children_cpu": (k1.children_user - k0.children_user) + (k1.children_system - k0.children_system),
                   "statements": s1[0] - s0[0], "checkouts": s1[1] - s0[1], "commits": s1[2] - s0[2]}


def per(values: dict[str, float], count: int) -> dict[str, float | None]:
    return {"wall_ms": ms(values["wall"] / count), "cpu_ms": ms(values["cpu"] / count),
            "children_cpu_ms": ms(values["children_cpu"] / count),
            "statements": round(values["statements"] / count, 2), "checkouts": round(values["checkouts"] / count, 2),
            "commits": round(values["commits"] / count, 2)}


def diagnostics(config: Path, url: str, orgs: list[str], per_org: int, lease: float) -> dict[str, Any]:
    from peach_tasks.executors.python import PythonExecutor
    from peach_tasks.model import Executor, Outcome, RunStatus
    from peach_tasks.scheduling.coordinator import Coordinator
    from peach_tasks.scheduling.scheduler import Scheduler
    from peach_tasks.settings import load_settings
    from peach_tasks.store import Store
    from peach_tasks.store.leases import LeaseStore

    class Switch:
        """The python executor, or a stub that returns at once (no task process)."""

        def __init__(self) -> None:
            self.real, self.stub = PythonExecutor(), True

        def run(self, job: Any, sink: Any, cancel: threading.Event) -> Outcome:
            if self.stub:
                sink("stub executor: no process")
                return Outcome(RunStatus.SUCCESS, exit_code=0, result=1)
            return self.real.run(job, sink, cancel)

    settings = load_settings(config)
    store = Store.open(url, migrate=False)
    counter = Counter(store.engine)
    switch = Switch()
    scheduler = Scheduler(settings, store, executors={Executor.PYTHON: switch})
    out: dict[str, Any] = {}
    try:
        _, first = measured(counter, scheduler.sync)  # a replica's first sync: definitions parsed
        out["first_sync"] = per(first, 1)
        _, steady = measured(counter, scheduler.sync)  # every sync_interval after that
        out["steady_sync"] = per(steady, 1)

        def iterate(names: list[str]) -> int:
            return sum(scheduler.make_loop(n).tick() for n in names)

        stub_orgs = orgs[: min(len(orgs), 40)]
        ran, stub = measured(counter, lambda: iterate(stub_orgs))
        out["loop_stub_executor"] = {"tasks": ran, **per(stub, max(ran, 1))}
        switch.stub = False
        real_orgs = orgs[: min(len(orgs), 20)]
        iterate(real_orgs[:1])  # warm the page cache of the interpreter and bootstrap
        ran, real = measured(counter, lambda: iterate(real_orgs))
        out["loop_python_executor"] = {"tasks": ran, **per(real, max(ran, 1))}

        leases = LeaseStore(store.engine)
        noop = lambda *args: None
        coordinator = Coordinator(leases, "bench-diag", lease, on_acquired=noop, on_lost=noop, on_surplus=noop)
        coordinator.start()
        wanted = scheduler.snapshot.loop_names()
        _, take = measured(counter, lambda: coordinator.round(wanted))
        out["lease_round_taking_all"] = {"loops": len(coordinator.held.loops), **per(take, 1)}
        rounds = []
        for _ in range(10):
            _, one = measured(counter, lambda: coordinator.round(wanted))
            rounds.append(one)
        median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        out["lease_round_steady"] = {"loops": len(coordinator.held.loops), **per(median, 1)}
        coordinator.release_all()
    finally:
        scheduler.close()
        store.close()
    return out


# -- one phase -------------------------------------------------------------------------
def run_phase(count: int, root: Path, repo: Path, admin_url: str, orgs: list[str], per_org: int,
              template_envs: Path, args: argparse.Namespace, failover_here: bool, diagnose_here: bool
              ) -> dict[str, Any]:
    from peach_tasks.store import Store

    names = [f"r{i + 1}" for i in range(count)]
    loops = len(orgs) + 1
    say(f"== {count} replica{'s' if count > 1 else ''} ==")
    db = Database(admin_url)
    store = cluster = None
    result: dict[str, Any] = {"replicas": count, "database": db.name}
    try:
        store = Store.open(db.url, migrate=True)  # the schema, before the replicas race for it
        engine = store.engine
        cluster = Cluster(root / f"replicas-{count}", db.url, repo, args.lease_seconds, args.sync_interval)
        for name in names:
            cluster.config(name, template_envs)
        started = time.perf_counter()
        cluster.start(names[0])
        if len(names) > 1:
            # Replicas that register the tasks of a fresh database at the same moment collide
            # (register_tasks reads, then inserts: UniqueViolation on tasks_pkey, and serve
            # exits). So the others start once the first one has registered every task.
            want = len(orgs) * per_org
            wait_for(lambda: task_rows(engine) >= want, args.settle_timeout,
                     f"{names[0]} to register the {want} tasks", cluster.check_alive)
            result["others_started_after_s"] = round(time.perf_counter() - started, 1)
            for name in names[1:]:
                cluster.start(name)
        say(f"started {', '.join(names)} on {db.name}; waiting for all {loops} loops to be leased and shared")
        progress: list[dict[str, Any]] = []
        next_note = [time.perf_counter() + 10]

        def shared() -> bool:
            if time.perf_counter() >= next_note[0]:
                next_note[0] += 10
                note = {"t_s": round(time.perf_counter() - started, 1), **lease_progress(engine)}
                progress.append(note)
                say(f"  {note['t_s']}s: {note['lease_rows']} of {loops} loops ever leased, {note['live_leases']} "
                    f"leases live, the newest taken by a round that began {note['newest_acquisition_age_s']}s ago, "
                    f"{note['runs']} runs")
            return fairly_shared(engine, names, loops)

        try:
            wait_for(shared, args.settle_timeout, "all loops leased and fairly shared", cluster.check_alive)
            result["settled"] = True
        except TimeoutError as exc:
            result["settled"] = False
            say(f"NOT SETTLED: {exc}; lease trouble so far: {cluster.events()}; measuring anyway")
        result["setup_progress"] = progress
        shared_at = utcnow()
        result["shared_after_s"] = round(time.perf_counter() - started, 1)
        if result["settled"]:
            say(f"shared after {result['shared_after_s']}s: "
                f"{ {n: len(v) for n, v in sorted(holders(engine).items())} }; waiting for a run in every loop")
            try:
                wait_for(lambda: loops_run_since(engine, shared_at) >= len(orgs), args.settle_timeout,
                         "a finished run in every organisation's loop", cluster.check_alive)
            except TimeoutError as exc:
                result["settled"] = False
                say(f"NOT WARM: {exc}; lease trouble so far: {cluster.events()}; measuring anyway")
        result["warm_after_s"] = round(time.perf_counter() - started, 1)
        result["setup_lease_trouble"] = cluster.events()
        time.sleep(args.warmup)
        result["loops_held"] = {n: len(v) for n, v in sorted(holders(engine).items())}
        say(f"measuring for {args.seconds:g}s")
        marks = cluster.log_marks()
        result.update(measure_window(cluster, engine, db, args.seconds))
        result["window_lease_trouble"] = cluster.events(since=marks)
        result["loops_held_after"] = {n: len(v) for n, v in sorted(holders(engine).items())}
        say(f"{result['tasks_completed']} tasks in {result['window_s']}s = {result['tasks_per_s']} tasks/s, "
            f"scheduler CPU {result['scheduler_cpu_ms_per_task']} ms/task"
            + (f"; lease trouble in the window: {result['window_lease_trouble']}"
               if result["window_lease_trouble"] else ""))
        if failover_here:
            marks = cluster.log_marks()
            try:
                result["failover"] = failover(cluster, engine, args.lease_seconds)
                say(f"failover: first run after {result['failover']['first_run_s']}s")
            except TimeoutError as exc:
                result["failover"] = {"error": str(exc), "lease_seconds": args.lease_seconds}
                say(f"failover: {exc}")
            result["failover"]["lease_trouble"] = cluster.events(since=marks)
        marks = cluster.log_marks()
        cluster.stop()
        result["lease_trouble_total"] = cluster.events(until=marks)
        if diagnose_here:
            say("diagnostics in this process (replicas stopped)")
            result["diagnostics"] = diagnostics(cluster.folder / "r1.yaml", db.url, orgs, per_org,
                                                args.lease_seconds)
    finally:
        if cluster is not None:
            cluster.stop()
        if store is not None:
            store.close()
        db.drop()
        if cluster is not None and not args.keep:
            shutil.rmtree(cluster.folder, ignore_errors=True)  # 200 environments per replica
    return result


# -- main ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Throughput of 1, 2 and 3 'serve' replicas sharing one PostgreSQL database "
                    "(tasks/s and scheduler CPU per task), and the failover time after a SIGKILL.",
        epilog=f"Database server: ${POSTGRES_ENV}, else {POSTGRES_DEFAULT}. Each phase uses a fresh "
               "database peach_bench_<random>, dropped afterwards.")
    parser.add_argument("--orgs", type=int, default=200, metavar="N", help="organisations, one loop each (default 200)")
    parser.add_argument("--tasks-per-org", type=int, default=5, metavar="K", help="tasks per organisation (default 5)")
    parser.add_argument("--seconds", type=float, default=30.0, metavar="S", help="measuring window (default 30)")
    parser.add_argument("--replicas", default="1,2,3", metavar="LIST",
                        help="replica counts to run, in order (default 1,2,3); the failover runs with 2")
    parser.add_argument("--lease-seconds", type=float, default=10.0, metavar="L", help="replica.lease_seconds (default 10)")
    parser.add_argument("--sync-interval", type=float, default=30.0, metavar="S",
                        help="loop.sync_interval_seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=3.0, metavar="S",
                        help="seconds between 'every loop ran' and the window (default 3)")
    parser.add_argument("--settle-timeout", type=float, default=60.0, metavar="S",
                        help="give up waiting for all loops leased and run after this long, and measure "
                             "anyway, flagged NOT SETTLED (default 60)")
    parser.add_argument("--no-failover", action="store_true", help="skip the SIGKILL failover measurement")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the in-process diagnostics")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR (must not exist) and keep it (logs, configs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        counts = [int(x) for x in args.replicas.split(",") if x.strip()]
    except ValueError:
        parser.error("--replicas must be a comma-separated list of numbers, e.g. 1,2,3")
    if not counts or min(counts) < 1:
        parser.error("--replicas needs at least one count >= 1")
    if args.orgs < 1 or args.tasks_per_org < 1 or args.seconds <= 0:
        parser.error("--orgs, --tasks-per-org and --seconds must be positive")
    if args.lease_seconds < 1:
        parser.error("--lease-seconds must be at least 1 (replica.lease_seconds)")
    admin_url = os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)

    bench_started = time.perf_counter()
    orgs = org_names(args.orgs)
    with workspace(args.keep, "peach-bench-replicas-") as root:
        say(f"building a git repository of {args.orgs} organisations x {args.tasks_per_org} tasks in {root}")
        repo = build_repository(root, orgs, args.tasks_per_org)
        say(f"building {args.orgs} empty uv environments once (setup, not measured)")
        template_envs, env_seconds = build_template_environments(root, orgs)
        phases: list[dict[str, Any]] = []
        for i, count in enumerate(counts):
            try:
                phases.append(run_phase(count, root, repo, admin_url, orgs, args.tasks_per_org, template_envs,
                                        args, failover_here=count == 2 and not args.no_failover and
                                        not any(p.get("failover") for p in phases),
                                        diagnose_here=i == 0 and not args.no_diagnostics))
            except (RuntimeError, TimeoutError) as exc:  # a replica died, or never started: go on
                say(f"phase with {count} replicas FAILED: {exc}")
                phases.append({"replicas": count, "error": str(exc)[-3000:]})
    base = next((p["tasks_per_s"] for p in phases if p["replicas"] == 1 and "error" not in p), None)
    for p in phases:
        if "error" in p:
            continue
        p["ratio_vs_1"] = round(p["tasks_per_s"] / base, 3) if base else None
    result = {
        "orgs": args.orgs, "tasks_per_org": args.tasks_per_org, "loops": args.orgs + 1,
        "window_s": args.seconds, "lease_seconds": args.lease_seconds, "sync_interval_s": args.sync_interval,
        "python": f"{platform.python_implementation()} {platform.python_version()}", "cpus": os.cpu_count(),
        "environments_build_s_untimed": round(env_seconds, 1),
        "phases": phases,
        "bench_seconds": round(time.perf_counter() - bench_started, 1),
    }
    if args.keep:
        (root / "result.json").write_text(json.dumps(result, indent=2, default=str))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    return 0


def print_table(r: dict[str, Any]) -> None:
    def num(value: Any, width: int, digits: int = 1, suffix: str = "") -> str:
        if value is None:
            return f"{'-':>{width}}"
        return f"{value:>{width - len(suffix)}.{digits}f}{suffix}"

    print(f"peach-tasks replicas: {r['orgs']} organisations x {r['tasks_per_org']} python tasks "
          f"({r['loops']} loops), lease {r['lease_seconds']:g}s, sync every {r['sync_interval_s']:g}s, "
          f"window {r['window_s']:g}s, {r['cpus']} cpus, {r['python']}")
    print(f"  (environments built once before the phases, {r['environments_build_s_untimed']}s, not timed)")
    failed = [p for p in r["phases"] if "error" in p]
    ok = [p for p in r["phases"] if "error" not in p]
    print(f"{'replicas':>8} | {'tasks/s':>8} | {'scheduler CPU ms/task':>21} | {'tasks/s vs 1 replica':>20}")
    for p in failed:
        print(f"{p['replicas']:>8} | FAILED: {p['error'].splitlines()[0]}")
    for p in ok:
        print(f"{p['replicas']:>8} | {num(p['tasks_per_s'], 8)} | {num(p['scheduler_cpu_ms_per_task'], 21, 2)} | "
              f"{num(p['ratio_vs_1'], 20, 2, 'x')}")
    print("  scheduler CPU = user+sys of the serve processes themselves (not their children) / tasks completed")
    print("where the machine's CPU went, ms per completed task (machine busy = share of all cores):")
    print(f"{'replicas':>8} | {'scheduler':>9} | {'task procs':>10} | {'postgres':>8} | {'other':>6} | "
          f"{'machine busy':>12} | {'db commits/task':>15} | {'db sessions opened':>18} | serve CPU, share of one core")
    for p in ok:
        shares = ", ".join(f"{n} {v:.0%}" for n, v in p["scheduler_cpu_share_of_one_core"].items())
        print(f"{p['replicas']:>8} | {num(p['scheduler_cpu_ms_per_task'], 9, 2)} | "
              f"{num(p['task_processes_cpu_ms_per_task'], 10, 2)} | {num(p['postgres_cpu_ms_per_task'], 8, 2)} | "
              f"{num(p['other_cpu_ms_per_task'], 6, 2)} | {num(p['machine_busy'] * 100, 12, 0, '%')} | "
              f"{num(p['db_commits_per_task'], 15, 1)} | {p['db_sessions_opened']:>18} | {shares}")
    for p in ok:
        bad = {k: v for k, v in p["statuses"].items() if k != "SUCCESS"}
        print(f"  {p['replicas']} replica(s){'' if p['settled'] else ' NOT SETTLED'}: {p['tasks_completed']} tasks "
              f"in {p['window_s']}s, per replica {p['tasks_per_s_by_replica']} tasks/s, loops held "
              f"{p['loops_held']} -> {p['loops_held_after']}, load {p['loadavg_1m']}, db sessions opened "
              f"{p['db_sessions_opened']}; setup: shared after {p['shared_after_s']}s, every loop ran after "
              f"{p['warm_after_s']}s" + (f"; runs not SUCCESS: {bad}" if bad else ""))
        if p["loops_with_overlapping_runs"]:
            print(f"    DOUBLE RUNS: {p['loops_with_overlapping_runs']} loops had two runs at once in the window "
                  f"({p['loops_run_by_two_replicas_at_once']} of them on two replicas)")
        if not p["settled"] and p.get("setup_progress"):
            last = p["setup_progress"][-1]
            print(f"    leasing at {last['t_s']}s: {last['lease_rows']} of {r['loops']} loops ever leased, "
                  f"{last['live_leases']} live, the newest taken by a round that began "
                  f"{last['newest_acquisition_age_s']}s before")
        for label, key in (("setup", "setup_lease_trouble"), ("window", "window_lease_trouble"),
                           ("whole phase", "lease_trouble_total")):
            if p.get(key):
                print(f"    lease trouble logged ({label}): {p[key]}")
    for p in failed:
        print(f"  {p['replicas']} replica(s) FAILED:")
        print("\n".join(f"    {line}" for line in p["error"].splitlines()[-12:]))
    f = next((p["failover"] for p in r["phases"] if p.get("failover")), None)
    if f and "error" in f:
        print(f"failover (lease {f['lease_seconds']:g} s): NOT MEASURED: {f['error']}")
    elif f:
        lo, hi = f["lease_seconds"] - f["renew_seconds"], f["lease_seconds"] + 0.1
        print(f"failover: SIGKILL of {f['victim']} (held {f['victim_loops']} loops) -> first run in one of its "
              f"loops started by {f['survivor']} after {f['first_run_s']:.2f} s  (lease {f['lease_seconds']:g} s, "
              f"renewal every {f['renew_seconds']:g} s: leases expected taken {lo:.1f}..{hi:.1f} s after it)")
        print(f"  leases taken {f['first_lease_taken_s']}..{f['last_lease_taken_s']} s after the kill; "
              f"every one of its loops had run again after {f['all_loops_running_again_s']} s")
    if f and f.get("lease_trouble"):
        print(f"  lease trouble logged during the failover: {f['lease_trouble']}")
    d = next((p["diagnostics"] for p in r["phases"] if p.get("diagnostics")), None)
    if d:
        print("diagnostics, in the bench process after the first phase (replicas stopped), on its database:")
        rows = [
            ("loop, stub executor (per task)", d["loop_stub_executor"],
             f"{d['loop_stub_executor']['tasks']} tasks: store writes + loop logic, no process"),
            ("loop, python executor (per task)", d["loop_python_executor"],
             f"{d['loop_python_executor']['tasks']} tasks, one loop at a time; children = the task process"),
            ("sync, first (per sync)", d["first_sync"], "a replica's start: every definition parsed"),
            ("sync, steady (per sync)", d["steady_sync"], "what each replica does every sync_interval"),
            ("lease round taking all loops", d["lease_round_taking_all"],
             f"{d['lease_round_taking_all']['loops']} loops taken in one statement"),
            ("lease round, steady", d["lease_round_steady"],
             f"holding {d['lease_round_steady']['loops']} loops; median of 10; every lease/4"),
        ]
        print(f"  {'':<34}{'wall ms':>10}{'CPU ms':>10}{'child ms':>10}{'stmts':>8}{'checkouts':>10}{'commits':>9}")
        for label, v, note in rows:
            print(f"  {label:<34}{v['wall_ms']:>10.2f}{v['cpu_ms']:>10.2f}{v['children_cpu_ms']:>10.2f}"
                  f"{v['statements']:>8.1f}{v['checkouts']:>10.1f}{v['commits']:>9.1f}  {note}")
    print(f"benchmark took {r['bench_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())

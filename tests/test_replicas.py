"""Several `peach-tasks serve` replicas as real processes on the real PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa
import yaml
from conftest import Repo, host_pid, run_marker, shared_folder, stop_processes, wait_for
from spark_cluster import free_port
from tcp_proxy import TcpProxy

from peach_tasks.store import Store
from peach_tasks.store.leases import LeaseStore

pytestmark = pytest.mark.slow

TASK = """\
import os, time
from pathlib import Path

def main():
    out = Path(os.environ["OUT"])
    (out / f"{os.environ['PEACH_CODOPS']}-{os.environ['PEACH_RUN_ID']}.pid").write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("TASK_SECONDS", "1")))
"""


def task_pid(pidfile: Path, state_dir: Path, run_id: int) -> int:
    """The host's pid of the task of ``state_dir``'s run ``run_id`` that wrote ``pidfile``
    (from inside its sandbox)."""
    ns_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 10, "the task's pid"))
    marker = run_marker(state_dir, run_id)
    return wait_for(lambda: host_pid(ns_pid, marker), 10, "the task's process on the host")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Cluster:
    """Replicas of one scheduler.yaml, each with its own state_dir, on one database."""

    def __init__(self, tmp_path: Path, database: str, orgs: int, lease: float, task_seconds: float) -> None:
        self.tmp, self.database, self.lease = tmp_path, database, lease
        self.out = tmp_path / "out"
        self.out.mkdir()
        repo = Repo(tmp_path / "algos")
        repo.notebook("nb.ipynb", TASK)
        for i in range(orgs):
            repo.write(f"peach.conf/org{i}.yaml", yaml.safe_dump(
                {"codops": f"org{i}", "tasks": {"t": {"executor": "python", "notebook": "nb.ipynb",
                                                       "method": "main"}}}))
        repo.commit()
        self.repo = repo
        self.task_seconds = task_seconds
        self.procs: dict[str, subprocess.Popen] = {}
        self.store = Store.open(database, migrate=True)
        self.leases = LeaseStore(self.store.engine)

    def config(self, name: str, database: str | None = None, web_port: int = 0) -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "web": {"host": "127.0.0.1", "port": web_port},
            "database": database or self.database, "state_dir": f"state-{name}",
            "repositories": [{"url": str(self.repo.path)}],
            "timeouts": {"task": 120, "metadata": 60, "kill_grace": 1},
            "loop": {"min_iteration_seconds": 0, "sync_interval_seconds": 2},
            "replica": {"name": name, "lease_seconds": self.lease},
            "task_env": {"OUT": str(self.out), "TASK_SECONDS": str(self.task_seconds)},
            **shared_folder(self.out),
        }))
        return path

    def start(self, name: str, database: str | None = None, web_port: int | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        web = [] if web_port else ["--no-web"]
        proc = subprocess.Popen([sys.executable, "-m", "peach_tasks.cli", "--config",
                                 str(self.config(name, database, web_port or 0)), "serve", *web],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={k: v for k, v in os.environ.items() if k != "PEACH_TASKS_DATABASE_URL"})
        self.procs[name] = proc
        return proc

    def holders(self) -> dict[str, set[str]]:
        now = self.leases.now()
        out: dict[str, set[str]] = {}
        for lease in self.leases.leases():
            if lease.owner and lease.expires_at > now:
                out.setdefault(lease.owner, set()).add(lease.loop)
        return out

    def runs(self) -> list[Any]:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.text("select * from runs order by id")).all()

    def stop(self) -> None:
        stop_processes(self.procs.values(), timeout=30)
        self.store.close()


@pytest.fixture
def cluster_factory(tmp_path: Path, postgres_url: str):
    made: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path, postgres_url, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


def assert_no_overlap(runs: list[Any]) -> None:
    by_task: dict[tuple[str, str], list[Any]] = {}
    for run in runs:
        by_task.setdefault((run.codops, run.task), []).append(run)
    for key, task_runs in by_task.items():
        task_runs.sort(key=lambda r: r.started_at)
        assert sum(r.status == "RUNNING" for r in task_runs) <= 1, key
        for before, after in zip(task_runs, task_runs[1:]):
            assert before.finished_at is not None and before.finished_at <= after.started_at, (key, before, after)


def test_sigkill_takeover_abandons_and_continues(cluster_factory: Any) -> None:
    cluster = cluster_factory(orgs=10, lease=4.0, task_seconds=1.5)
    for name in ("r1", "r2", "r3"):
        cluster.start(name)
    # Fair sharing: 11 loops (10 organisations + metadata) over 3 replicas, none idle.
    # A replica that joins late gets its share once the others hand loops over, so this is
    # waited for: fair means ceil(11 / 3) = 4 loops at most each, and none idle.
    wait_for(lambda: (held := cluster.holders()) and len(held) == 3 and sum(map(len, held.values())) == 11
             and max(map(len, held.values())) <= 4, 150, "all loops spread fairly over three replicas")
    # Kill r1 while one of its tasks runs.
    victim_loops = cluster.holders()["r1"]
    running = wait_for(lambda: [r for r in cluster.runs() if r.status == "RUNNING" and r.owner == "r1"],
                       30, "a task of r1 running")[0]
    pid = task_pid(cluster.out / f"{running.codops}-{running.id}.pid", cluster.tmp / "state-r1", running.id)
    cluster.procs["r1"].send_signal(signal.SIGKILL)
    cluster.procs["r1"].wait()
    # The task died with its scheduler (it must not run twice), the others take r1's loops.
    wait_for(lambda: gone(pid), 10, "the killed replica's task to die with it")
    wait_for(lambda: victim_loops <= set().union(*(v for k, v in cluster.holders().items() if k != "r1")),
             30, "r1's loops taken over")
    abandoned = wait_for(lambda: [r for r in cluster.runs() if r.id == running.id and r.status == "ABANDONED"],
                         30, "the run r1 left to be ABANDONED")[0]
    assert "lost its lease" in abandoned.error or "stopped" in abandoned.error
    # Each loop r1 had goes on with new runs by the others.
    wait_for(lambda: all(any(r.loop == loop and r.owner in ("r2", "r3") for r in cluster.runs())
                         for loop in victim_loops - {"metadata"}), 60, "runs of the taken-over loops")
    assert_no_overlap(cluster.runs())


def test_sigterm_hands_over_without_waiting_for_expiry(cluster_factory: Any) -> None:
    # A lease far longer than the wait below: a takeover within it cannot come from expiry.
    cluster = cluster_factory(orgs=3, lease=45.0, task_seconds=0.5)
    cluster.start("r1")
    wait_for(lambda: len(cluster.holders().get("r1", ())) == 4, 60, "r1 holding all four loops")
    port = free_port()
    cluster.start("r2", web_port=port)
    # A new replica gets its share: r1 hands two loops over after their current task.
    wait_for(lambda: len(cluster.holders().get("r2", ())) == 2, 60, "r2 taking its share")
    cluster.procs["r1"].send_signal(signal.SIGTERM)
    assert cluster.procs["r1"].wait(timeout=120) == 0
    # r1 handed its loops over (released, not left to expire): no lease row names it now.
    assert all(lease.owner != "r1" for lease in cluster.leases.leases())
    wait_for(lambda: len(cluster.holders().get("r2", ())) == 4, 40, "r2 taking r1's loops after SIGTERM")
    assert not any(r.status == "RUNNING" and r.owner == "r1" for r in cluster.runs())
    assert_no_overlap(cluster.runs())
    # Visibility: the CLI and the API list the replicas, /metrics names this replica.
    listed = json.loads(subprocess.run([sys.executable, "-m", "peach_tasks.cli", "--config",
                                        str(cluster.tmp / "r2.yaml"), "replicas", "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    by_id = {r["id"]: r for r in listed}
    assert by_id["r1"]["alive"] is False and by_id["r1"]["stopped_at"] and by_id["r1"]["loops"] == []
    assert by_id["r2"]["alive"] is True and len(by_id["r2"]["loops"]) == 4
    api = httpx.get(f"http://127.0.0.1:{port}/api/replicas", timeout=10).json()
    assert {r["id"]: len(r["loops"]) for r in api} == {"r1": 0, "r2": 4}
    metrics = wait_for(lambda: (text := httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)
                       and 'peach_tasks_replica_leased_loops{replica="r2"} 4.0' in text and text, 20,
                       "the replica's identity in /metrics")
    assert 'replica="r1"' not in metrics


def test_replica_cut_off_from_database_stops_its_task(cluster_factory: Any, postgres_url: str) -> None:
    cluster = cluster_factory(orgs=1, lease=4.0, task_seconds=120)
    url = sa.engine.make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        cluster.start("r1", database=url.set(port=proxy.port).render_as_string(hide_password=False))
        running = wait_for(lambda: [r for r in cluster.runs() if r.status == "RUNNING"], 60, "the task running")[0]
        pidfile = cluster.out / f"{running.codops}-{running.id}.pid"
        pid = task_pid(pidfile, cluster.tmp / "state-r1", running.id)
        proxy.cut()
        wait_for(lambda: gone(pid), 20, "the cut-off replica to stop its task")
        assert cluster.procs["r1"].poll() is None  # the replica itself keeps going
        proxy.restore()
        # Back in touch, it takes its loop again and ends the run it had to stop.
        wait_for(lambda: [r for r in cluster.runs() if r.id == running.id and r.status == "ABANDONED"],
                 30, "the stopped run recorded as ABANDONED")
    finally:
        proxy.close()

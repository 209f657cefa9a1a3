"""Alerts through restarts and replicas: real `peach-tasks serve` processes, SIGKILLed
and run side by side on the real PostgreSQL server, delivering to a real HTTP receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alert_receivers import HookReceiver
from conftest import Repo, stop_processes, wait_for

from peach_tasks.store import Store
from peach_tasks.store.schema import alert_outbox

pytestmark = pytest.mark.slow

FAILING = "def main():\n    raise RuntimeError('always')\n"
ENV = {k: v for k, v in os.environ.items() if k not in ("PEACH_TASKS_CONFIG", "PEACH_TASKS_DATABASE_URL")}


def flapping(flags: Path) -> str:
    """A task that fails on every other run of its own: every run changes the task's state, so
    alerts keep coming (run_failed, task_recovered) for as long as the loops run. The flag is
    per organisation (isolation is off here); the parity of the shared run-id sequence would
    not do, as loops running in step draw ids of one parity each, for minutes on end."""
    return (f"import os\nfrom pathlib import Path\n\ndef main():\n"
            f"    flag = Path({str(flags)!r}) / os.environ['PEACH_CODOPS']\n"
            f"    if flag.exists():\n        flag.unlink()\n        raise RuntimeError('every other run')\n"
            f"    flag.touch()\n")



class Schedulers:
    def __init__(self, tmp_path: Path, code: str, orgs: int, alerts: dict[str, Any], database: str | None = None,
                 lease: float = 30.0) -> None:
        self.tmp, self.alerts, self.database, self.lease = tmp_path, alerts, database, lease
        self.repo = Repo(tmp_path / "algos")
        self.repo.notebook("nb.ipynb", code)
        for i in range(orgs):
            self.repo.write(f"peach.conf/org{i}.yaml", yaml.safe_dump(
                {"codops": f"org{i}", "tasks": {"t": {"executor": "python", "notebook": "nb.ipynb", "method": "main"}}}))
        self.repo.commit()
        self.procs: dict[str, subprocess.Popen] = {}

    def config(self, name: str) -> Path:
        path = self.tmp / f"{name}.yaml"
        data: dict[str, Any] = {
            "state_dir": f"state-{name}", "repositories": [{"url": str(self.repo.path)}], "isolation": "none",
            "timeouts": {"task": 60, "metadata": 30, "kill_grace": 1},
            "loop": {"min_iteration_seconds": 0.2, "sync_interval_seconds": 5},
            "replica": {"name": name, "lease_seconds": self.lease}, "alerts": self.alerts,
        }
        if self.database:
            data["database"] = self.database
        path.write_text(yaml.safe_dump(data))
        return path

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "peach_tasks.cli", "--config", str(self.config(name)), "serve",
                                 "--no-web"], stdout=log, stderr=subprocess.STDOUT, env=ENV)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_processes(self.procs.values(), timeout=60)


@pytest.fixture
def schedulers(tmp_path: Path):
    made: list[Schedulers] = []

    def make(**kwargs: Any) -> Schedulers:
        made.append(Schedulers(tmp_path, **kwargs))
        return made[-1]

    yield make
    for group in made:
        group.stop()


def outbox(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(alert_outbox).order_by(alert_outbox.c.id)).all()


def test_alerts_queued_when_the_scheduler_is_sigkilled_are_delivered_once_after_restart(
        tmp_path: Path, schedulers: Any) -> None:
    receiver = HookReceiver()  # down at first: the alerts wait in the outbox
    database = f"sqlite:///{tmp_path / 'peach.db'}"
    store = Store.open(database, migrate=True)
    group = schedulers(code=FAILING, orgs=3, database=database, alerts={
        "destinations": {"hook": {"type": "webhook", "url": receiver.url()}},
        "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]}],
        "delivery": {"backoff_seconds": 0.3, "max_backoff_seconds": 1}})
    first = group.start("solo")
    try:
        wait_for(lambda: len(outbox(store)) == 3 and all(r.attempts >= 1 for r in outbox(store)), 120,
                 "three alerts tried while the receiver is down", lambda: group.log("solo"))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        queued = outbox(store)
        assert {r.state for r in queued} <= {"PENDING", "SENDING"} and receiver.bodies() == []

        receiver.start()
        group.start("solo")  # the same replica identity and state_dir, restarted
        wait_for(lambda: {r.state for r in outbox(store)} == {"SENT"}, 120, "the queued alerts to be sent",
                 lambda: group.log("solo"))
        group.stop()
        sent = outbox(store)
    finally:
        group.stop()
        receiver.stop()
        store.close()
    assert len(sent) == 3  # each task failed on and on, but changed state once
    received = Counter(body["id"] for body in receiver.bodies())
    assert received == Counter({row.key: 1 for row in sent})  # every alert, exactly once
    assert sorted(body["codops"] for body in receiver.bodies()) == ["org0", "org1", "org2"]


def test_two_replicas_on_postgres_deliver_each_alert_once_and_announce_a_dead_one(
        tmp_path: Path, schedulers: Any, postgres_url: str) -> None:
    receiver = HookReceiver().start()
    (tmp_path / "flags").mkdir()
    group = schedulers(code=flapping(tmp_path / "flags"), orgs=4, database=postgres_url, lease=4.0, alerts={
        "destinations": {"hook": {"type": "webhook", "url": receiver.url()}},
        "rules": [{"name": "ops", "destination": "hook", "rate_limit": {"count": 100000, "per": "1h"},
                   "events": ["run_failed", "task_recovered", "replica_died"]}]})
    store = Store.open(postgres_url, migrate=True)
    try:
        group.start("r1")
        group.start("r2")
        def detail() -> str:
            with store.engine.connect() as conn:
                events = conn.execute(sa.text("select kind, routed_at is not null, count(*) from alert_events "
                                              "group by 1, 2")).all()
                states = conn.execute(sa.text("select state, count(*) from alert_outbox group by 1")).all()
            return f"events {events}\noutbox {states}\n" + group.log("r1") + "\n----\n" + group.log("r2")

        wait_for(lambda: sum(r.state == "SENT" for r in outbox(store)) >= 30, 240, "30 alerts sent", detail)
        group.procs["r1"].send_signal(signal.SIGKILL)  # r2 takes its loops over once its leases expire
        group.procs["r1"].wait()
        # What r1 was sending when it died may have reached the receiver without being marked SENT:
        # the one case docs/alerts.md names, where the alert goes again with the same key once the
        # claim expires (r2's own sends in flight now end normally).
        in_flight = {r.key for r in outbox(store) if r.state == "SENDING"}
        wait_for(lambda: any(b["event"] == "replica_died" for b in receiver.bodies()), 120,
                 "the replica_died alert", detail)
        wait_for(lambda: sum(r.state == "SENT" for r in outbox(store)) >= 40, 240, "more alerts from r2", detail)
        group.stop()
        rows = outbox(store)
    finally:
        group.stop()  # before the database is dropped
        receiver.stop()
        store.close()
    sent = [r for r in rows if r.state == "SENT"]
    received = Counter(body["id"] for body in receiver.bodies())
    assert len(in_flight) <= 2  # each replica sends one alert at a time
    twice = {k for k, n in received.items() if n > 1}
    assert twice <= in_flight, twice  # only an alert the dead replica had in flight came again, same key
    assert {r.key for r in sent} <= set(received)  # every row marked SENT was received
    unmarked = set(received) - {r.key for r in sent}
    assert unmarked <= in_flight, unmarked  # nothing received without its row but what r1 died sending
    died = [b for b in receiver.bodies() if b["event"] == "replica_died"]
    assert len(died) == 1 and died[0]["details"]["replica"] == "r1" and died[0]["details"]["taken_over_by"] == "r2"
    # One alert per change of state: per task, the alerts made alternate failed, recovered,
    # failed... Read from the outbox, not the receiver: an alert r1 had claimed but not yet
    # sent when it died waits for its claim to expire, after this test is over.
    bodies = [json.loads(r.body) for r in rows]
    for codops in {b["codops"] for b in bodies if b["codops"]}:
        runs = sorted((b["run"]["id"], b["event"]) for b in bodies if b["codops"] == codops)
        events = [event for _, event in runs]
        assert all(a != b for a, b in zip(events, events[1:])), f"{codops}: {runs}"

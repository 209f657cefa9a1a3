"""A loop starts its next task's sandbox ahead (executors/warm.py); these are its promises.

Real sandboxes (bubblewrap + cgroups), a real scheduler and real git repositories: the
tasks wait for a "go" file the test writes, so the test looks at the kernel's cgroups
while a run and the sandbox started ahead for the next one both exist.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import (
    Repo,
    py_task,
    require_service,
    sandbox_missing,
    shared_folder,
    task_yaml,
    wait_for,
    write_settings,
)

from peach_tasks.executors.cgroups import Limits
from peach_tasks.executors.warm import (
    WAITING_MEMORY_BYTES,
    WAITING_PIDS,
    WarmSandbox,
    copy_bytes,
)

MiB = 1 << 20

# Each task says it started (its run id and what it can see), then waits for the test's "go".
WAITER = """
import json, os, time
SHARED = {shared!r}

def main():
    name = os.environ["PEACH_TASK"]
    seen = {{"run": os.environ["PEACH_RUN_ID"], "cwd": os.getcwd(), "codops": os.environ["PEACH_CODOPS"],
            "tmp": sorted(os.listdir("/tmp")), "home": sorted(os.listdir(os.environ["HOME"])),
            "here": sorted(os.listdir(".")), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "triggers": os.environ["PEACH_TRIGGER_DIR"], "marker": os.environ.get("PEACH_TASKS_RUN")}}
    # Leave traces a later run must never see.
    for folder in ("/tmp", os.environ["HOME"], "."):
        open(os.path.join(folder, "left-by-" + name), "w").write("x")
    subprocess_sleep = os.spawnlp(os.P_NOWAIT, "sleep", "sleep", "300")
    with open(os.path.join(SHARED, name + ".tmp"), "w") as out:
        json.dump(seen, out)
    os.replace(os.path.join(SHARED, name + ".tmp"), os.path.join(SHARED, name + ".started"))
    while not os.path.exists(os.path.join(SHARED, name + ".go")):
        time.sleep(0.02)
    return name
"""


@pytest.fixture(autouse=True)
def _needs_sandbox() -> None:
    require_service(sandbox_missing())


class Project:
    """One organisation ``org`` whose tasks t0, t1, ... each run ``WAITER``."""

    def __init__(self, tmp_path: Path, tasks: int = 3, timeout: float | None = None, **limits: Any) -> None:
        self.tmp = tmp_path
        self.shared = tmp_path / "shared"
        settings = shared_folder(self.shared)
        settings["python"].update(limits)
        self.repo = Repo(tmp_path / "algos")
        self.repo.notebook("wait.ipynb", WAITER.format(shared=str(self.shared)))
        self.tasks = [f"t{i}" for i in range(tasks)]
        extra = {"timeout": timeout} if timeout else {}
        self.repo.write("peach.yaml", task_yaml("org", {t: py_task("wait.ipynb", "main", **extra)
                                                        for t in self.tasks}))
        self.repo.commit("tasks")
        self.config = write_settings(tmp_path, [{"url": str(self.repo.path), "codops": ["org"]}], **settings)
        self.state = tmp_path / "state"

    def started(self, task: str, timeout: float = 60) -> dict[str, Any]:
        import json

        path = self.shared / f"{task}.started"
        wait_for(path.exists, timeout, f"{task} to start")
        return json.loads(path.read_text())

    def go(self, task: str) -> None:
        (self.shared / f"{task}.go").write_text("go")


def groups(scheduler: Any) -> dict[str, Limits]:
    """The scheduler's run groups and the limits the kernel holds for each."""
    prefix = scheduler.marker_prefix.rstrip(":") + "-"
    return {g.name: g.limits_in_force() for g in scheduler.sandbox.cgroups.existing(prefix)}


def warm_folders(state: Path) -> list[str]:
    return [p.name for root in ("trigger-requests", "runs") if (state / root).is_dir()
            for p in (state / root).iterdir() if p.name.startswith("warm-")]


def processes_of(state: Path) -> list[int]:
    """Live processes carrying a marker of this state_dir's scheduler (runs and sandboxes started ahead)."""
    import hashlib

    prefix = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12] + ":"
    found = []
    for proc in psutil.process_iter():
        try:
            if (proc.environ().get("PEACH_TASKS_RUN") or "").startswith(prefix) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def assert_nothing_left(scheduler: Any, state: Path) -> None:
    wait_for(lambda: not groups(scheduler), 10, "every run group to be gone", lambda: groups(scheduler))
    assert warm_folders(state) == []
    wait_for(lambda: not processes_of(state), 10, "every process to be gone", lambda: processes_of(state))


def start_loop(open_scheduler: Any, project: Project) -> tuple[Any, Any, Any, threading.Thread]:
    scheduler, store = open_scheduler(project.config)
    scheduler.recover("run-once")
    scheduler.sync()
    loop = scheduler.make_loop("org")
    thread = threading.Thread(target=loop.tick, daemon=True)
    thread.start()
    return scheduler, store, loop, thread


def release(project: Project, thread: threading.Thread) -> None:
    """Tell every task's run to end, then wait for the loop (a test's ``finally``: nothing left waiting)."""
    for task in project.tasks:
        project.go(task)
    thread.join(60)


def outcomes(store: Any, project: Project) -> dict[str, dict[str, Any]]:
    return {t: store.runs("org", t, limit=5)[0] for t in project.tasks if store.runs("org", t, limit=5)}


def ahead(run: dict[str, Any]) -> bool:
    return bool((run.get("details") or {}).get("sandbox_started_ahead"))


def test_waiting_sandbox_has_small_limits_and_gets_the_runs_when_it_takes_the_request(
        tmp_path: Path, open_scheduler: Any) -> None:
    project = Project(tmp_path, memory="256M", pids=100, cpus=1)
    full = Limits(memory_bytes=256 * MiB, cpus=1.0, pids=100)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        first = project.started("t0")
        checkout = Path(first["cwd"])
        # While t0 runs: its group has the organisation's limits, t1's sandbox waits in its own
        # with what an idle interpreter and the private copy need, and not more.
        waiting = Limits(memory_bytes=WAITING_MEMORY_BYTES + copy_bytes(checkout), cpus=1.0, pids=WAITING_PIDS)
        found = wait_for(lambda: len(groups(scheduler)) == 2 and groups(scheduler), 30, "t1's sandbox ahead",
                         lambda: groups(scheduler))
        running = {name: limits for name, limits in found.items() if "warm" not in name}
        ahead_of_t1 = {name: limits for name, limits in found.items() if "warm" in name}
        assert list(running.values()) == [full] and list(ahead_of_t1.values()) == [waiting], found
        assert sum(limits.memory_bytes for limits in found.values()) < 2 * full.memory_bytes
        assert waiting.memory_bytes <= full.memory_bytes // 2

        project.go("t0")
        second = project.started("t1")
        # t1 runs in the very group that waited, renamed for its run and with the
        # organisation's limits; t0's is gone, and t2's sandbox waits in a new small one.
        run_t1 = f"{scheduler.marker_prefix.rstrip(':')}-{second['run']}"
        # The group is renamed once the run's launcher acknowledged the request, which may be
        # a moment after the task itself said it started (CI caught the moment between).
        found = wait_for(lambda: len(groups(scheduler)) == 2 and run_t1 in groups(scheduler) and groups(scheduler),
                         30, "t1's group renamed and t2's sandbox ahead", lambda: groups(scheduler))
        assert found[run_t1] == full, found
        assert [limits for name, limits in found.items() if name != run_t1] == [waiting], found
        assert not set(ahead_of_t1) & set(found)
        # A fresh sandbox: nothing t0 left in /tmp, HOME or the checkout, no process of t0's.
        assert "left-by-t0" not in second["tmp"] + second["home"] + second["here"]
        assert second["cwd"] == first["cwd"] and second["run"] != first["run"]
        assert second["marker"].endswith(f":{second['run']}")  # the run's own marker, from the request
        assert Path(second["triggers"]).name.startswith("warm-") and second["triggers"] != first["triggers"]
        assert second["pids"] == first["pids"]  # the same few processes of its own sandbox
        project.go("t1")
        project.go("t2")
        thread.join(60)
        assert not thread.is_alive()
    finally:
        release(project, thread)
    runs = outcomes(store, project)
    assert {t: r["status"] for t, r in runs.items()} == {"t0": "SUCCESS", "t1": "SUCCESS", "t2": "SUCCESS"}
    assert [ahead(runs[t]) for t in project.tasks] == [False, True, True]
    assert_nothing_left(scheduler, project.state)


def _interpreters(group_pids: set[int]) -> list[int]:
    found = []
    for pid in group_pids:
        try:
            if any(part.endswith("bootstrap.py") for part in psutil.Process(pid).cmdline()):
                found.append(pid)
        except psutil.Error:
            continue
    return found


def test_a_waiting_sandbox_killed_before_its_request_never_fails_the_run(tmp_path: Path,
                                                                          open_scheduler: Any) -> None:
    project = Project(tmp_path, tasks=2)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        project.started("t0")
        warm = wait_for(lambda: loop._warm, 30, "t1's sandbox ahead")[0]
        interpreter = wait_for(lambda: _interpreters(warm.group.pids()), 30, "its interpreter")
        for pid in interpreter:  # only the interpreter: the sandbox's other processes see it go
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: warm.proc.poll() is not None, 10, "the sandbox to end with its interpreter")
        project.go("t0")
        project.started("t1")
        project.go("t1")
        thread.join(60)
    finally:
        release(project, thread)
    runs = outcomes(store, project)
    assert runs["t1"]["status"] == "SUCCESS" and runs["t1"]["result"] == "t1", runs["t1"]
    assert not ahead(runs["t1"])
    assert "ended before it took the request" in (store.log(runs["t1"]["id"]) or "")
    assert_nothing_left(scheduler, project.state)


def test_a_sandbox_killed_after_its_request_was_written_but_before_it_took_it_starts_cold(
        tmp_path: Path, open_scheduler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worst moment: the run's limits are in force and its request is in the pipe. The
    sandbox is stopped before the request is written (so it cannot have read it) and killed
    right after: no acknowledgement, so the run starts cold, and runs exactly once."""
    original = WarmSandbox.hand_over
    hit: list[str] = []

    def stop_then_kill(self: WarmSandbox, request: bytes, deadline: float, cancel: Any, then: Any = None,
                       run_group_name: str | None = None) -> Any:
        for pid in self.group.pids():
            os.kill(pid, signal.SIGSTOP)

        def kill_first() -> None:
            hit.append(self.group.name)
            self.group.kill()
            if then is not None:
                then()

        return original(self, request, deadline, cancel, kill_first, run_group_name)

    monkeypatch.setattr(WarmSandbox, "hand_over", stop_then_kill)
    project = Project(tmp_path, tasks=2)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        project.started("t0")
        wait_for(lambda: loop._warm, 30, "t1's sandbox ahead")
        project.go("t0")
        first_try = project.started("t1")
        project.go("t1")
        thread.join(60)
    finally:
        release(project, thread)
    assert len(hit) == 1
    runs = outcomes(store, project)
    assert runs["t1"]["status"] == "SUCCESS" and not ahead(runs["t1"]), runs["t1"]
    assert Path(first_try["triggers"]).name.startswith("warm-")  # started afresh in the folders made for it
    log = store.log(runs["t1"]["id"]) or ""
    assert "ended before it took the request" in log and log.count("peach-tasks: run ") == 1
    assert_nothing_left(scheduler, project.state)


def test_stop_during_a_run_ends_the_sandbox_waiting_for_the_next(tmp_path: Path, open_scheduler: Any) -> None:
    project = Project(tmp_path, tasks=3)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        project.started("t0")
        wait_for(lambda: loop._warm, 30, "t1's sandbox ahead")
        scheduler.stop_event.set()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        release(project, thread)
    runs = outcomes(store, project)
    assert runs["t0"]["status"] == "ABANDONED" and set(runs) == {"t0"}
    assert_nothing_left(scheduler, project.state)


def test_handover_to_another_replica_ends_the_sandbox_waiting(tmp_path: Path, open_scheduler: Any) -> None:
    project = Project(tmp_path, tasks=3)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        project.started("t0")
        wait_for(lambda: loop._warm, 30, "t1's sandbox ahead")
        loop.handover.set()  # the loop ends after its current task
        project.go("t0")
        thread.join(60)
        assert not thread.is_alive()
    finally:
        release(project, thread)
    runs = outcomes(store, project)
    assert runs["t0"]["status"] == "SUCCESS" and set(runs) == {"t0"}
    assert_nothing_left(scheduler, project.state)


def test_a_timed_out_run_leaves_the_next_sandbox_to_its_task(tmp_path: Path, open_scheduler: Any) -> None:
    project = Project(tmp_path, tasks=2, timeout=3)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        project.started("t0")  # never told to go: it times out
        second = project.started("t1")
        assert "left-by-t0" not in second["tmp"] + second["home"] + second["here"]
        project.go("t1")
        thread.join(60)
    finally:
        release(project, thread)
    runs = outcomes(store, project)
    assert runs["t0"]["status"] == "TIMEOUT" and runs["t1"]["status"] == "SUCCESS"
    assert ahead(runs["t1"])
    assert_nothing_left(scheduler, project.state)


def test_a_changed_definition_discards_the_sandbox_started_ahead(tmp_path: Path, open_scheduler: Any) -> None:
    """A commit while t0 runs gives t1 a new checkout: the sandbox started for the old one is
    ended and t1 runs the new code, in a sandbox of its own."""
    project = Project(tmp_path, tasks=2)
    scheduler, store, loop, thread = start_loop(open_scheduler, project)
    try:
        project.started("t0")
        warm = wait_for(lambda: loop._warm, 30, "t1's sandbox ahead")[0]
        project.repo.notebook("wait.ipynb", WAITER.format(shared=str(project.shared)).replace(
            "return name", "return name + '-new'"))
        project.repo.commit("new code")
        scheduler.sync()
        project.go("t0")
        project.started("t1")
        project.go("t1")
        thread.join(60)
    finally:
        release(project, thread)
    runs = outcomes(store, project)
    assert runs["t1"]["status"] == "SUCCESS" and runs["t1"]["result"] == "t1-new" and not ahead(runs["t1"])
    assert warm.state == "ended" and warm.proc.returncode is not None
    assert_nothing_left(scheduler, project.state)


def test_a_sandbox_started_for_one_organisation_never_serves_another(tmp_path: Path, open_scheduler: Any) -> None:
    """The metadata loop runs tasks of several organisations: a sandbox started ahead for
    beta's task is ended when alpha's task comes first (a trigger, say), never used by it."""
    shared = tmp_path / "shared"
    repos = []
    for codops in ("alpha", "beta"):
        repo = Repo(tmp_path / f"{codops}-repo")
        repo.notebook("who.ipynb", "import os\ndef main():\n    return os.environ['PEACH_CODOPS']\n")
        repo.write("peach.yaml", task_yaml(codops, {"a": py_task("who.ipynb", "main", loop="metadata"),
                                                     "b": py_task("who.ipynb", "main", loop="metadata")}))
        repo.commit("who")
        repos.append({"url": str(repo.path), "codops": [codops]})
    config = write_settings(tmp_path, repos, **shared_folder(shared))
    scheduler, store = open_scheduler(config)
    scheduler.recover("run-once")
    snapshot = scheduler.sync()
    loop = scheduler.make_loop("metadata")
    alpha_a, alpha_b, beta_a = (snapshot.tasks[k] for k in (("alpha", "a"), ("alpha", "b"), ("beta", "a")))

    loop._upcoming = [beta_a.spec.key]
    loop._prepare_next()
    beta_warm = loop._warm[0]
    loop._upcoming = []  # nothing started ahead after this run
    assert loop.run_task(alpha_a).result == "alpha"
    assert beta_warm.state == "ended" and beta_warm.proc.returncode is not None
    # The control: a sandbox started for alpha's other task serves alpha's task.
    loop._upcoming = [alpha_b.spec.key]
    loop._prepare_next()
    loop._upcoming = []
    outcome = loop.run_task(alpha_a)
    assert outcome.result == "alpha" and outcome.details.get("sandbox_started_ahead"), \
        store.log(store.runs("alpha", "a", limit=1)[0]["id"])
    runs = store.runs("alpha", "a", limit=5)
    assert [ahead(r) for r in runs] == [True, False]
    assert_nothing_left(scheduler, tmp_path / "state")


def test_scheduler_killed_with_sigkill_leaves_no_sandbox_and_restart_cleans_its_groups(
        tmp_path: Path, open_scheduler: Any) -> None:
    project = Project(tmp_path, tasks=3)
    env = {k: v for k, v in os.environ.items() if k not in ("PEACH_TASKS_CONFIG", "PEACH_TASKS_DATABASE_URL")}
    serve = subprocess.Popen([sys.executable, "-m", "peach_tasks.cli", "--config", str(project.config),
                              "run-once"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        project.started("t0")
        wait_for(lambda: warm_folders(project.state), 30, "t1's sandbox ahead")
        time.sleep(0.5)  # let it get as far as it goes: its interpreter waiting for the request
        serve.send_signal(signal.SIGKILL)
        serve.wait(30)
        # bubblewrap's --die-with-parent ends both sandboxes with the scheduler.
        wait_for(lambda: not processes_of(project.state), 10, "every sandbox to end with the scheduler",
                 lambda: processes_of(project.state))
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    scheduler, store = open_scheduler(project.config)
    assert groups_left(scheduler), "the killed scheduler's groups stay until the next start"
    assert warm_folders(project.state), "and so do the folders of the sandbox it started ahead"
    scheduler.recover("run-once")
    assert_nothing_left(scheduler, project.state)


def groups_left(scheduler: Any) -> dict[str, Limits]:
    scheduler.start_isolation()
    return groups(scheduler)


def test_serve_starts_the_next_iterations_first_task_ahead_and_a_stop_leaves_nothing(
        tmp_path: Path, open_scheduler: Any) -> None:
    """A loop of one task under ``serve`` (``run_forever``, no pause between iterations):
    each run starts the next iteration's sandbox ahead."""
    project = Project(tmp_path, tasks=1)
    project.go("t0")  # every run goes at once
    scheduler, oldest_first = runs_forever(open_scheduler, project, 4)
    assert [ahead(r) for r in oldest_first] == [False] + [True] * (len(oldest_first) - 1)
    assert_nothing_left(scheduler, project.state)


def runs_forever(open_scheduler: Any, project: Project, count: int) -> tuple[Any, list[dict[str, Any]]]:
    """t0's loop under ``run_forever`` until ``count`` runs succeeded, then stopped; its
    successful runs, oldest first."""
    scheduler, store = open_scheduler(project.config)
    scheduler.recover("run-once")
    scheduler.sync()
    loop = scheduler.make_loop("org")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def finished() -> list[dict[str, Any]]:
        return [r for r in store.runs("org", "t0", limit=50) if r["status"] == "SUCCESS"]

    try:
        wait_for(lambda: len(finished()) >= count, 120, f"{count} runs")
    finally:
        scheduler.stop_event.set()
        thread.join(60)
    assert not thread.is_alive()
    return scheduler, finished()[::-1]


def test_changed_limits_make_the_sandbox_started_ahead_unusable(tmp_path: Path, open_scheduler: Any) -> None:
    """Limits are part of the match: a sandbox started under the old settings is ended and the
    run starts with the new ones (the kernel's, read from its group while it runs)."""
    project = Project(tmp_path, tasks=2, memory="256M")
    scheduler, store = open_scheduler(project.config)
    scheduler.recover("run-once")
    snapshot = scheduler.sync()
    loop = scheduler.make_loop("org")
    loop._upcoming = [("org", "t1")]
    loop._prepare_next()
    old = loop._warm[0]
    import yaml

    from peach_tasks.settings import load_settings

    data = yaml.safe_load(project.config.read_text())
    data["python"]["memory"] = "300M"
    project.config.write_text(yaml.safe_dump(data))
    loop.settings = load_settings(project.config)  # as a scheduler restarted with new settings would have
    assert loop.settings.limits_for("org").memory_bytes == 300 * MiB
    loop._upcoming = []
    thread = threading.Thread(target=lambda: loop.run_task(snapshot.tasks[("org", "t1")]), daemon=True)
    thread.start()
    try:
        project.started("t1")  # it waits for its "go": its group is there to be read
        seen = groups(scheduler)
    finally:
        project.go("t1")
        thread.join(60)
    assert old.state == "ended" and old.proc.returncode is not None
    assert [limits.memory_bytes for limits in seen.values()] == [300 * MiB], seen
    run = store.runs("org", "t1", limit=1)[0]
    assert run["status"] == "SUCCESS" and not ahead(run)
    assert_nothing_left(scheduler, project.state)


def two_runs(tmp_path: Path, open_scheduler: Any, cell: str, files: dict[str, str] | None = None,
             dependencies: list[str] | None = None, site_packages: dict[str, str] | None = None,
             **settings: Any) -> tuple[Any, Any, dict[str, dict[str, Any]]]:
    """Tasks t0 and t1 of organisation ``org``, both the notebook of ``cell`` (beside ``files``),
    run by one iteration of the loop: t0 starts cold, t1 in the sandbox started during t0.
    ``site_packages``: files written into the organisation's environment once it is built."""
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", cell)
    for name, text in (files or {}).items():
        repo.write(name, text)
    repo.write("peach.yaml", task_yaml("org", {t: py_task("nb.ipynb", "main") for t in ("t0", "t1")},
                                       dependencies=dependencies))
    repo.commit("tasks")
    config = write_settings(tmp_path, [{"url": str(repo.path), "codops": ["org"]}], **settings)
    scheduler, store = open_scheduler(config)
    scheduler.recover("run-once")
    scheduler.sync()
    if site_packages:
        site = next(scheduler.envs.current("org").path.glob("lib/python3*/site-packages"))
        for name, text in site_packages.items():
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_text(text)
    scheduler.make_loop("org").tick()
    return scheduler, store, {t: store.runs("org", t, limit=1)[0] for t in ("t0", "t1")}


# The task's imports, seen from inside: which were loaded before its own cell ran them.
IMPORTER = """
import sys
BEFORE = sorted(m for m in ("colorsys", "wave", "calendar", "sitemod") if m in sys.modules)
import colorsys, wave
import calendar  # the checkout has a calendar.py: the standard library's wins, as in Jupyter
try:
    import sitemod  # the checkout's sitemod.py before the environment's, as in Jupyter
except ImportError:
    sitemod = None
try:
    import no_such_module_anywhere
except ImportError:
    pass

def main():
    return {"before": BEFORE, "calendar": getattr(calendar, "WHO", "stdlib"),
            "sitemod": getattr(sitemod, "WHO", "none")}
"""


def test_the_sandbox_started_ahead_imports_the_next_tasks_modules_of_its_environment_only(
        tmp_path: Path, open_scheduler: Any) -> None:
    """executors/preload.py: the second run finds its standard-library imports loaded; a name
    the checkout holds is left for the run (sitemod.py, which the working folder's place on
    sys.path, before site-packages, makes the checkout's; calendar.py, which the standard
    library's still wins over, as in Jupyter); a module that is nowhere changes nothing."""
    scheduler, store, runs = two_runs(tmp_path, open_scheduler, IMPORTER,
                                      {"calendar.py": "WHO = 'checkout'\n", "sitemod.py": "WHO = 'checkout'\n"},
                                      site_packages={"sitemod.py": "WHO = 'site-packages'\n"})
    assert {t: r["status"] for t, r in runs.items()} == {"t0": "SUCCESS", "t1": "SUCCESS"}, runs
    assert [ahead(runs[t]) for t in ("t0", "t1")] == [False, True]
    # started cold: nothing ahead
    assert runs["t0"]["result"] == {"before": [], "calendar": "stdlib", "sitemod": "checkout"}
    assert runs["t1"]["result"] == {"before": ["colorsys", "wave"], "calendar": "stdlib", "sitemod": "checkout"}, \
        store.log(runs["t1"]["id"])
    assert_nothing_left(scheduler, tmp_path / "state")


def test_preload_imports_false_leaves_every_import_to_the_run(tmp_path: Path, open_scheduler: Any) -> None:
    _, _, runs = two_runs(tmp_path, open_scheduler, IMPORTER, loop={"preload_imports": False})
    second = runs["t1"]
    assert second["status"] == "SUCCESS" and ahead(second), second
    assert second["result"] == {"before": [], "calendar": "stdlib", "sitemod": "none"}


def test_a_paced_loop_starts_the_first_tasks_sandbox_in_the_last_seconds_of_its_pause(
        tmp_path: Path, open_scheduler: Any) -> None:
    """``loop.min_iteration_seconds`` longer than the pause's lead (loops.PAUSE_LEAD_SECONDS):
    the sandbox carried from the last run is ended, and the first task's next one is started
    near the end of the pause, so every run after the first still finds its sandbox ahead."""
    import yaml

    from peach_tasks.scheduling.loops import PAUSE_LEAD_SECONDS

    project = Project(tmp_path, tasks=1)
    project.go("t0")
    data = yaml.safe_load(project.config.read_text())
    data["loop"] = {"min_iteration_seconds": PAUSE_LEAD_SECONDS + 2}
    project.config.write_text(yaml.safe_dump(data))
    scheduler, oldest_first = runs_forever(open_scheduler, project, 3)
    assert [ahead(r) for r in oldest_first] == [False] + [True] * (len(oldest_first) - 1)
    assert_nothing_left(scheduler, project.state)


PLOTTER = """
import sys
BEFORE = "matplotlib.pyplot" in sys.modules
import matplotlib.pyplot as plt

def main():
    plt.plot([1, 2, 3], [3, 1, 2])
    plt.show()
    plt.figure()
    plt.plot([1, 2], [2, 1])  # left open: kept at the end, as the inline backend does
    return {"before": BEFORE, "backend": plt.get_backend().lower()}
"""


def test_matplotlib_imported_ahead_still_keeps_the_runs_figures(tmp_path: Path, open_scheduler: Any) -> None:
    """The sandbox started ahead imports matplotlib.pyplot with the run's display hooks in
    place (the Agg backend, ``plt.show`` kept as an output): the run that takes it shows its
    figures as PNG outputs, as the run that started cold does. Real environment with matplotlib."""
    scheduler, store, runs = two_runs(tmp_path, open_scheduler, PLOTTER, dependencies=["matplotlib"],
                                      timeouts={"task": 300})
    assert {t: r["status"] for t, r in runs.items()} == {"t0": "SUCCESS", "t1": "SUCCESS"}, \
        [store.log(r["id"]) for r in runs.values()]
    assert [ahead(runs[t]) for t in ("t0", "t1")] == [False, True]
    assert runs["t0"]["result"] == {"before": False, "backend": "agg"}
    assert runs["t1"]["result"] == {"before": True, "backend": "agg"}
    for run in runs.values():
        assert [o["mime_type"] for o in store.run_outputs(run["id"])] == ["image/png", "image/png"], run
    # The same PNGs, byte for byte, from the run whose pyplot was imported ahead.
    pngs = {t: [store.run_output(r["id"], o["seq"])[1] for o in store.run_outputs(r["id"])] for t, r in runs.items()}
    assert pngs["t0"] == pngs["t1"] and pngs["t0"][0] != pngs["t0"][1]
    assert_nothing_left(scheduler, tmp_path / "state")


# IPython's get_ipython() as IPython defines it outside a kernel (it returns None), in a stand-in
# package: the organisation's environment is built without IPython, which takes long to install.
FAKE_IPYTHON = {
    "IPython/__init__.py": "from .core.getipython import get_ipython\n",
    "IPython/core/__init__.py": "",
    "IPython/core/getipython.py": "def get_ipython():\n    return None\n",
    # A library that decides at import whether it runs under IPython (plotly chooses its renderer so).
    "asks_ipython.py": "import os, IPython\nSHELL = IPython.get_ipython()\nAT_IMPORT = type(SHELL).__name__\n"
                       "REQUEST_AT_IMPORT = 'PEACH_RUN_ID' in os.environ  # False: imported ahead\n",
}
ASKER = """
import os, sys
import asks_ipython
%cd sub
import inside  # sub/inside.py: imports follow %cd, as in Jupyter

def main():
    return [asks_ipython.AT_IMPORT, asks_ipython.SHELL is get_ipython(), asks_ipython.SHELL.user_ns is globals(),
            asks_ipython.REQUEST_AT_IMPORT, inside.WHERE, "" in sys.path]
"""


ASKER_PLAIN = """
import asks_ipython

def main():
    return [asks_ipython.AT_IMPORT, asks_ipython.REQUEST_AT_IMPORT]
"""


def test_a_library_imported_ahead_of_a_notebook_without_magics_finds_no_shell(
        tmp_path: Path, open_scheduler: Any) -> None:
    """A notebook without magics has no shell: IPython's get_ipython() is None, as outside a
    kernel, for a module imported ahead as for one the run imports itself."""
    _, store, runs = two_runs(tmp_path, open_scheduler, ASKER_PLAIN, site_packages=FAKE_IPYTHON)
    assert [ahead(runs[t]) for t in ("t0", "t1")] == [False, True]
    assert {t: r["result"] for t, r in runs.items()} == {"t0": ["NoneType", True], "t1": ["NoneType", False]}, \
        [store.log(r["id"]) for r in runs.values()]


def test_a_library_imported_ahead_finds_the_runs_shell_as_one_imported_by_the_run(
        tmp_path: Path, open_scheduler: Any) -> None:
    """In a notebook with magics, a module that asks IPython for the shell on import gets the
    run's shell whether it was imported ahead (before the request) or by the run itself, where
    the shell starts before the cells, and the run adopts that shell:
    the builtin get_ipython() is the same object, its namespace the notebook's, and imports
    follow ``%cd``: the working folder ('', as in a kernel) is on sys.path, not the folder
    first on it before the request."""
    scheduler, store, runs = two_runs(tmp_path, open_scheduler, ASKER, {"sub/inside.py": "WHERE = 'sub'\n"},
                                      site_packages=FAKE_IPYTHON)
    assert [ahead(runs[t]) for t in ("t0", "t1")] == [False, True]
    for task, run in runs.items():
        assert run["status"] == "SUCCESS", store.log(run["id"])
        assert run["result"] == ["Shell", True, True, task == "t0", "sub", True], store.log(run["id"])
    assert_nothing_left(scheduler, tmp_path / "state")


EXITING = """
import atexit, colorsys, os, wave

class Node:
    def __del__(self):
        print("finalized", self.name, flush=True)

def leave():
    a, b = Node(), Node()
    a.name, b.name = "a", "b"
    a.other, b.other = b, a  # a garbage cycle when the run ends

def main():
    global kept
    kept = open(os.path.join({shared!r}, os.environ["PEACH_TASK"] + ".txt"), "w")  # never closed
    kept.write("kept by a global")
    atexit.register(lambda: print("atexit ran", flush=True))
    leave()
    return "done"
"""


@pytest.mark.parametrize("shell_ahead", [False, True], ids=["plain", "shell-made-ahead"])
def test_a_run_in_a_sandbox_that_imported_ahead_exits_as_any_run(tmp_path: Path, open_scheduler: Any,
                                                                 shell_ahead: bool) -> None:
    """The sandbox froze what its imports left (bootstrap --preload), so that the run's exit
    walks only the run's objects: the run's own garbage cycles are still finalized, a file a
    global holds is still flushed, and atexit handlers still run, as in the run started cold.
    Also when a module imported ahead asked IPython for the shell, which was then made (and
    frozen) before the request: it must not keep the notebook's namespace at the exit."""
    shared = tmp_path / "shared"
    cell = EXITING.format(shared=str(shared))
    if shell_ahead:  # a magic: the notebook has the shell, which the import ahead asks for
        cell = "%env EXITING=1\nimport asks_ipython\n" + cell
    _, store, runs = two_runs(tmp_path, open_scheduler, cell, site_packages=FAKE_IPYTHON if shell_ahead else None,
                              **shared_folder(shared))
    assert [ahead(runs[t]) for t in ("t0", "t1")] == [False, True]
    for task, run in runs.items():
        log = store.log(run["id"]) or ""
        assert run["status"] == "SUCCESS", log
        assert "finalized a" in log and "finalized b" in log and "atexit ran" in log, log
        assert (shared / f"{task}.txt").read_text() == "kept by a global"


RC_READER = """
import sys
BEFORE = "matplotlib" in sys.modules
import matplotlib.pyplot as plt

def main():
    return {"before": BEFORE, "figsize": list(plt.rcParams["figure.figsize"])}
"""


def test_a_matplotlibrc_beside_the_notebook_holds_in_a_run_started_ahead(tmp_path: Path, open_scheduler: Any) -> None:
    """matplotlib reads ./matplotlibrc when it is imported. Imported ahead, before the run had
    entered its folder, it missed the repository's: the run started ahead drew 6.4 x 4.8
    figures where the cold one drew 2 x 2. With such a file, the run imports matplotlib itself."""
    scheduler, store, runs = two_runs(tmp_path, open_scheduler, RC_READER, {"matplotlibrc": "figure.figsize: 2, 2\n"},
                                      dependencies=["matplotlib"], timeouts={"task": 300})
    assert [ahead(runs[t]) for t in ("t0", "t1")] == [False, True], runs
    assert [runs[t]["result"] for t in ("t0", "t1")] == [{"before": False, "figsize": [2.0, 2.0]}] * 2, \
        [store.log(r["id"]) for r in runs.values()]

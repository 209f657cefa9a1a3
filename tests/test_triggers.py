"""Triggers end to end: CLI, task code, HTTP API; stored, ordered, once each, recorded on the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Repo, py_task, task_yaml, write_settings

from peach_tasks import TriggerError, trigger_task
from peach_tasks.cli import main
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.scheduling.triggers import TriggerQueue, request_trigger
from peach_tasks.store import Store

ECHO = "def main(payload=None):\n    return payload\n"


@pytest.fixture
def make(tmp_path: Path, open_scheduler: Any) -> Any:
    def factory(repo: Repo, **extra: Any) -> tuple[Scheduler, Store, Path]:
        config = write_settings(tmp_path, [{"url": str(repo.path)}], **extra)
        return (*open_scheduler(config), config)

    return factory


def runs_since(store: Store, first_id: int) -> list[dict[str, Any]]:
    every = [r for name in ("a", "b", "c") for r in store.runs("default", name, limit=100)]
    return sorted((r for r in every if r["id"] > first_id), key=lambda r: r["id"])


def three_tasks(repo: Repo, a_cell: str = ECHO) -> None:
    repo.notebook("a.ipynb", a_cell)
    repo.notebook("echo.ipynb", ECHO)
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("a.ipynb", "main"), "b": py_task("echo.ipynb", "main"),
                                                   "c": py_task("echo.ipynb", "main")}))
    repo.commit()


def test_cli_trigger_runs_next_once_with_its_payload(repo: Repo, make: Any) -> None:
    three_tasks(repo)
    scheduler, store, config = make(repo)
    scheduler.run_once()  # registers the tasks
    result = CliRunner().invoke(main, ["--config", str(config), "trigger", "default/c", "--payload", '{"n": 5}'])
    assert result.exit_code == 0 and "runs next in its loop" in result.stdout, result.output
    before = max(r["id"] for r in runs_since(store, 0))
    scheduler.run_once()
    order = runs_since(store, before)
    assert [(r["task"], r["triggered_by"] is not None) for r in order] == \
        [("c", True), ("a", False), ("b", False), ("c", False)]
    triggered = order[0]
    assert triggered["triggered_by"].startswith("cli ") and triggered["payload"] == {"n": 5}
    assert triggered["result"] == {"n": 5} and order[3]["result"] is None  # the method got the payload
    assert "triggered by cli " in (store.log(triggered["id"]) or "")
    [row] = TriggerQueue(store).listing()
    assert (row["state"], row["run_id"], row["attempts"]) == ("DONE", triggered["id"], 1)
    scheduler.run_once()  # once per trigger: the next iteration is the normal order only
    assert [r["triggered_by"] for r in runs_since(store, order[-1]["id"])] == [None, None, None]
    shown = CliRunner().invoke(main, ["--config", str(config), "runs", "default/c"])
    assert "TRIGGERED_BY" in shown.stdout and "cli " in shown.stdout


def test_task_code_triggers_a_task_of_its_own_organisation(repo: Repo, make: Any) -> None:
    three_tasks(repo, "from peach_tasks import TriggerError, trigger_task\n"
                      "def main():\n"
                      "    trigger_task('default', 'c', {'from': 'a'})\n"
                      "    try:\n"
                      "        trigger_task('chrts', 'x')\n"
                      "    except TriggerError as exc:\n"
                      "        return str(exc)\n")
    scheduler, store, _ = make(repo)
    scheduler.run_once()
    order = runs_since(store, 0)
    assert [(r["task"], r["triggered_by"]) for r in order] == [
        ("a", None), ("c", f"task default/a run {order[0]['id']}"), ("b", None), ("c", None)]
    assert order[1]["result"] == {"from": "a"}
    assert "may trigger only tasks of its own organisation" in order[0]["result"]
    assert "trigger of default/c queued" in (store.log(order[0]["id"]) or "")


PEACH_TRIGGER = (
    "import importlib.util, os\n"
    "from pipe_algorithms_lib.task_helpers import trigger_task_with_event\n"
    "import pipe_algorithms_lib.task_helpers as helpers\n"
    "def main():\n"
    "    trigger_task_with_event('c', {'event': 'new-article', 'id': 7})\n"
    "    # Offered by the scheduler, not installed: nothing of it is in the environment.\n"
    "    import glob\n"
    "    installed = glob.glob(os.path.join(os.environ['VIRTUAL_ENV'], 'lib', '*', 'site-packages', 'pipe*'))\n"
    "    return {'from': helpers.__spec__.origin, 'installed': installed,\n"
    "            'loader': type(helpers.__spec__.loader).__name__}\n"
)


def test_trigger_task_with_event_from_a_real_task_triggers_its_own_organisations_task(repo: Repo,
                                                                                        make: Any) -> None:
    """Today's PEACH spelling runs unchanged: the caller's organisation is its own run's."""
    three_tasks(repo, PEACH_TRIGGER)
    scheduler, store, _ = make(repo)
    scheduler.run_once()
    order = runs_since(store, 0)
    assert [(r["task"], r["triggered_by"]) for r in order] == [
        ("a", None), ("c", f"task default/a run {order[0]['id']}"), ("b", None), ("c", None)], \
        store.log(order[0]["id"])
    assert order[1]["payload"] == order[1]["result"] == {"event": "new-article", "id": 7}
    assert order[0]["result"] == {"from": None, "installed": [], "loader": "_HelperFinder"}


def test_trigger_task_with_event_outside_a_run_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from peach_tasks import trigger_task_with_event

    monkeypatch.delenv("PEACH_CODOPS", raising=False)
    with pytest.raises(TriggerError, match="caller's own organisation"):
        trigger_task_with_event("c", {"n": 1})
    monkeypatch.setenv("PEACH_CODOPS", "default")
    monkeypatch.delenv("PEACH_TRIGGER_DIR", raising=False)
    monkeypatch.delenv("PEACH_TASKS_URL", raising=False)
    with pytest.raises(TriggerError, match="peach-tasks trigger default/c"):
        trigger_task_with_event("c", {"n": 1})


def test_a_task_that_triggers_itself_does_not_starve_the_loop(repo: Repo, make: Any) -> None:
    three_tasks(repo, "from peach_tasks import trigger_task\ndef main(payload=None):\n"
                      "    trigger_task('default', 'a')\n")
    scheduler, store, _ = make(repo)
    scheduler.run_once()
    tasks = [r["task"] for r in runs_since(store, 0)]
    assert tasks[:2] == ["a", "a"] and {"b", "c"} <= set(tasks)  # the loop moved on
    assert len(TriggerQueue(store).pending()) == 1  # the newest self-trigger waits for the next iteration


def test_triggers_survive_a_restart_and_an_abandoned_triggered_run_runs_again(repo: Repo, make: Any) -> None:
    three_tasks(repo)
    scheduler, store, _ = make(repo)
    scheduler.run_once()
    request_trigger(store, "default", "b", {"k": 1}, requested_by="test")
    scheduler.close()
    store.close()

    scheduler, store, _ = make(repo)  # a new scheduler process on the same state
    scheduler.recover()
    scheduler.sync()
    [pending] = TriggerQueue(store).pending()
    assert TriggerQueue(store).claim(pending)
    task = scheduler.snapshot.tasks[("default", "b")]
    dying = store.start_run(task.spec, task.version, task.checkout.commit, scheduler.owner, trigger=pending)
    scheduler.close()  # ...and that scheduler dies with the run RUNNING
    store.close()

    scheduler, store, _ = make(repo)
    last = max(r["id"] for r in runs_since(store, 0))
    scheduler.run_once()
    assert store.run(dying)["status"] == "ABANDONED"
    first = runs_since(store, last)[0]
    assert (first["task"], first["trigger_id"], first["payload"], first["status"]) == ("b", pending.id, {"k": 1},
                                                                                       "SUCCESS")
    [row] = TriggerQueue(store).listing()
    assert (row["state"], row["attempts"], row["run_id"]) == ("DONE", 2, first["id"])


def test_refusals_say_what_to_do(repo: Repo, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    three_tasks(repo)
    scheduler, store, config = make(repo)
    scheduler.run_once()
    unknown = CliRunner().invoke(main, ["--config", str(config), "trigger", "default/nope"])
    assert unknown.exit_code == 1 and "no task 'default/nope' is defined" in unknown.output
    not_json = CliRunner().invoke(main, ["--config", str(config), "trigger", "default/a", "--payload", "{x"])
    assert not_json.exit_code == 2 and "not JSON" in not_json.output
    for name in ("PEACH_TRIGGER_DIR", "PEACH_TASKS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TriggerError, match="PEACH_TASKS_URL is not set"):
        trigger_task("default", "a")
    with pytest.raises(TriggerError, match="payload must be JSON"):
        trigger_task("default", "a", {"when": object()})
    assert TriggerQueue(store).listing() == []


def test_api_trigger_needs_a_token_for_the_organisation(repo: Repo, make: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from peach_tasks.web.server import WebServer

    three_tasks(repo)
    default_token, other_token = "d" * 24, "o" * 24
    scheduler, store, _ = make(repo, tokens=[{"token": default_token, "codops": ["default"]},
                                             {"token": other_token, "codops": ["chrts"]}])
    scheduler.run_once()
    server = WebServer(scheduler.settings, store, host="127.0.0.1", port=0).start()
    try:
        monkeypatch.delenv("PEACH_TRIGGER_DIR", raising=False)
        monkeypatch.setenv("PEACH_TASKS_URL", server.url)  # as in a PEACH Lab notebook
        monkeypatch.delenv("PEACH_TASKS_TOKEN", raising=False)
        with pytest.raises(TriggerError, match="401.*set \\$PEACH_TASKS_TOKEN"):
            trigger_task("default", "b")
        monkeypatch.setenv("PEACH_TASKS_TOKEN", other_token)
        with pytest.raises(TriggerError, match="403.*not allowed for 'default'"):
            trigger_task("default", "b")
        monkeypatch.setenv("PEACH_TASKS_TOKEN", default_token)
        with pytest.raises(TriggerError, match="404.*no task 'default/nope'"):
            trigger_task("default", "nope")
        request_id = trigger_task("default", "b", {"from": "lab"})
    finally:
        server.stop()
    [row] = TriggerQueue(store).listing()
    assert row["request_id"] == request_id and row["requested_by"] == "api from 127.0.0.1 (token for default)"
    before = max(r["id"] for r in runs_since(store, 0))
    scheduler.run_once()
    first = runs_since(store, before)[0]
    assert (first["task"], first["result"], first["triggered_by"]) == ("b", {"from": "lab"}, row["requested_by"])


def test_a_trigger_of_a_task_no_longer_defined_is_dropped(repo: Repo, make: Any) -> None:
    three_tasks(repo)
    scheduler, store, _ = make(repo)
    scheduler.sync()
    request_trigger(store, "default", "b", requested_by="test")
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("a.ipynb", "main")}))
    repo.commit("drop b and c")
    scheduler.sync()
    [row] = TriggerQueue(store).listing()
    assert (row["state"], row["note"]) == ("DROPPED", "the task is no longer defined")
    assert scheduler.make_loop("default").tick() == 1  # only 'a' runs; nothing triggered is left


def test_the_api_shows_what_triggered_a_run(repo: Repo, make: Any) -> None:
    import httpx

    from peach_tasks.web.server import WebServer

    three_tasks(repo)
    scheduler, store, _ = make(repo)
    scheduler.sync()
    request_trigger(store, "default", "c", [1, 2], requested_by="test suite")
    scheduler.make_loop("default").run_triggered()
    server = WebServer(scheduler.settings, store, host="127.0.0.1", port=0).start()
    try:
        page = httpx.get(f"{server.url}/api/organisations/default/tasks/c/runs", timeout=30).json()
        listed = httpx.get(f"{server.url}/api/organisations/default/triggers", timeout=30).json()
    finally:
        server.stop()
    [run] = page["runs"]
    assert (run["triggered_by"], run["payload"], run["result"]) == ("test suite", [1, 2], [1, 2])
    assert [(t["state"], t["run_id"]) for t in listed] == [("DONE", run["id"])]


def registered(tmp_path: Path, keys: list[tuple[str, str]]) -> tuple[Any, Store]:
    """Settings and a store with these tasks registered (active), as a sync registers them."""
    from peach_tasks.model import Executor, TaskSpec
    from peach_tasks.settings import load_settings
    from peach_tasks.store.store import TaskRegistration

    settings = load_settings(write_settings(tmp_path, []))
    store = Store.open(settings.database_url)
    store.register_tasks([TaskRegistration(TaskSpec(codops, name, "n.ipynb", "main", executor=Executor.PYTHON,
                                                    repo="algos"), "v") for codops, name in keys])
    return settings, store


def test_a_request_id_is_scoped_to_the_organisation_and_the_task(tmp_path: Path) -> None:
    """Issue 11: alpha reusing beta's request_id got beta's trigger (and payload) back, and nothing was queued."""
    import httpx
    from web_helpers import start_server

    settings, store = registered(tmp_path, [("alpha", "job"), ("alpha", "other"), ("beta", "job")])
    alpha, beta = "alpha-token-0123456789", "beta-token-0123456789"
    web = start_server(settings, store, tokens=[{"token": alpha, "codops": ["alpha"]},
                                                {"token": beta, "codops": ["beta"]}])

    def post(token: str, target: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{web.url}/api/organisations/{target}/trigger", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {token}"})

    key = "nightly-2024-01-31"
    try:
        theirs = post(beta, "beta/tasks/job", {"payload": {"secret": "beta's"}, "request_id": key})
        assert theirs.status_code == 201, theirs.text
        ours = post(alpha, "alpha/tasks/job", {"payload": {"n": 1}, "request_id": key})
        assert ours.status_code == 201, ours.text
        mine = ours.json()
        assert (mine["codops"], mine["task"], mine["payload"], mine["request_id"]) == ("alpha", "job", {"n": 1}, key)
        assert mine["id"] != theirs.json()["id"] and "beta" not in ours.text
        again = post(alpha, "alpha/tasks/job", {"payload": {"n": 1}, "request_id": key})  # a retry: the same one
        assert again.status_code == 201 and again.json()["id"] == mine["id"]
        other = post(alpha, "alpha/tasks/other", {"request_id": key})  # the same key for another task
        assert other.status_code == 409
        assert "alpha/job" in other.json()["detail"] and key in other.json()["detail"]
        assert "beta" not in other.text
    finally:
        web.stop()
    try:
        queued = sorted((t.codops, t.task, t.payload) for t in TriggerQueue(store).pending())
        assert queued == [("alpha", "job", {"n": 1}), ("beta", "job", {"secret": "beta's"})]
    finally:
        store.close()


def test_task_requests_reuse_request_ids_as_the_api_does(tmp_path: Path) -> None:
    """The task side (files with an id, read when the run ends) goes through the same scoping."""
    import json

    from peach_tasks.scheduling.triggers import TriggerRefused, collect_run_requests

    _, store = registered(tmp_path, [("alpha", "job"), ("alpha", "other"), ("beta", "job")])
    try:
        beta = request_trigger(store, "beta", "job", {"secret": 1}, requested_by="beta's notebook",
                               request_id="shared-id")
        with pytest.raises(TriggerRefused, match="already used for beta/job") as refused:
            request_trigger(store, "beta", "other", requested_by="test", request_id="shared-id")
        assert refused.value.reason == "conflict"
        folder = tmp_path / "requests"
        folder.mkdir()
        (folder / "1.json").write_text(json.dumps({"id": "shared-id", "codops": "alpha", "task": "job",
                                                   "payload": {"n": 2}}))
        (folder / "2.json").write_text(json.dumps({"id": "shared-id", "codops": "alpha", "task": "other"}))
        notes: list[str] = []
        assert collect_run_requests(store, folder, "alpha", "job", 7, notes.append) == 1
        assert "trigger of alpha/job queued" in notes[0]
        assert "trigger of alpha/other refused" in notes[1] and "already used for alpha/job" in notes[1]
        pending = {t.codops: t for t in TriggerQueue(store).pending()}
        assert set(pending) == {"alpha", "beta"} and pending["beta"].id == beta["id"]
        assert (pending["alpha"].task, pending["alpha"].payload, pending["alpha"].requested_by) == \
            ("job", {"n": 2}, "task alpha/job run 7")
    finally:
        store.close()


def test_an_unstorable_request_is_ignored_alone_and_the_folder_still_goes(tmp_path: Path) -> None:
    """The re-check of the hostile pass: a request whose id held a lone surrogate raised past
    the loop, so the run's later requests were dropped and its trigger folder (15 MiB beside
    the request) stayed on the disk for ever, run after run."""
    import json

    from peach_tasks.scheduling.triggers import collect_run_requests

    _, store = registered(tmp_path, [("alpha", "job")])
    try:
        folder = tmp_path / "requests"
        folder.mkdir()
        (folder / "1.json").write_text('{"codops": "alpha", "task": "job", "id": "\\ud800"}')
        (folder / "2.json").write_text(json.dumps({"codops": "alpha", "task": "job", "id": "fine"}))
        (folder / "ballast").write_bytes(b"x" * (1 << 20))
        notes: list[str] = []
        assert collect_run_requests(store, folder, "alpha", "job", 7, notes.append) == 1
        assert "could not be stored (UnicodeEncodeError); ignored" in notes[0], notes
        assert "trigger of alpha/job queued" in notes[1], notes
        assert not folder.exists()
    finally:
        store.close()


SELF_TRIGGER = (
    "import os\n"
    "from peach_tasks import trigger_task\n"
    "def main(payload=None):\n"
    "    run = os.environ['PEACH_RUN_ID']\n"
    "    for n in range(5):  # five new payloads every run\n"
    "        trigger_task('default', 'a', {'n': n, 'run': run})\n"
    "    trigger_task('default', 'a', {'n': 0, 'run': run})  # the same again: coalesced\n"
    "    return payload\n"
)


def test_a_task_triggering_itself_cannot_starve_its_loop(repo: Repo, make: Any) -> None:
    from peach_tasks.scheduling.triggers import MAX_PENDING_PER_TASK

    three_tasks(repo, a_cell=SELF_TRIGGER)
    scheduler, store, _ = make(repo)
    scheduler.recover()
    scheduler.sync()
    loop = scheduler.make_loop("default")
    for _ in range(6):
        loop.tick()
    a, b, c = (store.runs("default", name, limit=500) for name in ("a", "b", "c"))
    assert len(b) == 6 and len(c) == 6  # the other tasks ran every iteration
    assert 6 < len(a) <= 12  # a: once per iteration, plus at most once by trigger
    waiting = [t for t in TriggerQueue(store).pending() if t.key == ("default", "a")]
    assert 0 < len(waiting) <= MAX_PENDING_PER_TASK
    assert len({t.payload_json for t in waiting}) == len(waiting)  # no duplicate waits
    logs = "".join(store.log(r["id"]) or "" for r in a)
    assert f"at most {MAX_PENDING_PER_TASK}" in logs  # the refusals are in the task's own log


def test_the_same_trigger_asked_twice_while_it_waits_is_one(repo: Repo, make: Any) -> None:
    three_tasks(repo)
    scheduler, store, _ = make(repo)
    scheduler.sync()
    first = request_trigger(store, "default", "b", {"day": 1}, requested_by="test")
    again = request_trigger(store, "default", "b", {"day": 1}, requested_by="test")
    other = request_trigger(store, "default", "b", {"day": 2}, requested_by="test")
    bare = request_trigger(store, "default", "b", requested_by="test")
    assert again["id"] == first["id"] and other["id"] != first["id"] and bare["id"] not in (first["id"], other["id"])
    assert len([t for t in TriggerQueue(store).pending() if t.task == "b"]) == 3

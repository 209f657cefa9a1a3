"""The JSON API over real HTTP (uvicorn on loopback) against a store filled by real runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Repo, py_task, shared_folder, task_yaml, write_settings
from web_helpers import Filled, measured_store, start_server

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import load_settings
from peach_tasks.store import Store
from peach_tasks.web.server import WebServer


def get(web: WebServer, path: str, **params: Any) -> Any:
    response = httpx.get(f"{web.url}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_organisations_and_their_tasks(filled: Filled, server: WebServer) -> None:
    assert get(server, "/api/organisations") == [{"codops": "chrts", "tasks": 2, "running": 0},
                                                 {"codops": "sesr", "tasks": 1, "running": 0}]
    listing = get(server, "/api/organisations/chrts/tasks")
    tasks = {t["name"]: t for t in listing["tasks"]}
    assert set(tasks) == {"steady", "flaky"} and listing["problems"] == []
    flaky, steady = tasks["flaky"], tasks["steady"]
    assert (flaky["state"], flaky["last_status"], flaky["successes"], flaky["failures"]) == ("FINISHED", "FAILURE", 1, 1)
    assert flaky["version"] == filled.flaky_versions[1]
    assert (steady["last_status"], steady["successes"], steady["failures"]) == ("SUCCESS", 2, 0)
    assert steady["last_started_at"].endswith("Z") and steady["last_duration_s"] > 0
    assert (steady["environment"], flaky["environment"]) == ("reports", "base")  # py_env, else base
    # The API says what the store says (the CLI's 'tasks' view), plus problems.
    for row in filled.store.tasks(["chrts"]):
        assert {k: tasks[row["name"]][k] for k in row if k != "active"} == {k: v for k, v in row.items() if k != "active"}
    assert get(server, "/api/organisations/chrts/tasks/flaky")["failures"] == 1


def test_executions_are_paged_newest_first(filled: Filled, server: WebServer) -> None:
    first = get(server, "/api/organisations/chrts/tasks/flaky/runs", limit=1)
    [newest] = first["runs"]
    assert (newest["status"], newest["version"]) == ("FAILURE", filled.flaky_versions[1])
    assert newest["error"].endswith("RuntimeError: flaky broke")  # after where it was raised, when known
    assert first["next_before"] == newest["id"]
    second = get(server, "/api/organisations/chrts/tasks/flaky/runs", limit=1, before=first["next_before"])
    [older] = second["runs"]
    assert (older["status"], older["version"]) == ("SUCCESS", filled.flaky_versions[0])
    assert older["id"] < newest["id"] and second["next_before"] is None
    whole = get(server, "/api/organisations/chrts/tasks/flaky/runs")["runs"]
    assert [r["id"] for r in whole] == [newest["id"], older["id"]]
    assert whole[0]["duration_s"] == filled.store.run(newest["id"])["duration_s"]  # type: ignore[index]


def test_runs_say_what_they_used(tmp_path: Path) -> None:
    own = measured_store(tmp_path)
    web = start_server(own.settings, own.store)
    try:
        listed = {r["id"]: r for r in get(web, "/api/organisations/default/tasks/heavy/runs")["runs"]}
        assert (listed[own.measured]["peak_memory_bytes"], listed[own.measured]["cpu_seconds"]) == (212 * 2**20, 1.3)
        assert (listed[own.unmeasured]["peak_memory_bytes"], listed[own.unmeasured]["cpu_seconds"]) == (None, None)
        one = get(web, f"/api/runs/{own.measured}")["run"]
        assert (one["peak_memory_bytes"], one["cpu_seconds"]) == (212 * 2**20, 1.3)
        logs = get(web, "/api/organisations/default/tasks/heavy/logs")
        logged = {entry["run"]["id"]: entry["run"] for entry in logs["runs"]}
        assert logged[own.measured]["peak_memory_bytes"] == 212 * 2**20
        documented = get(web, "/openapi.json")["components"]["schemas"]["Run"]["properties"]
        assert {"peak_memory_bytes", "cpu_seconds"} <= set(documented)
    finally:
        web.stop()
        own.store.close()


def test_run_log_read_whole_and_by_offsets(filled: Filled, server: WebServer) -> None:
    run_id = filled.store.runs("chrts", "flaky", limit=1)[0]["id"]
    stored = filled.store.log(run_id)
    whole = get(server, f"/api/runs/{run_id}/log")
    assert whole["text"] == stored and whole["complete"] is True
    assert "flaky second try" in stored and "RuntimeError: flaky broke" in stored  # type: ignore[operator]
    assert whole["next_offset"] == whole["size"] == len(stored.encode())  # type: ignore[union-attr]
    # Polling in small pieces, each from the previous next_offset, gives the same text.
    pieces, offset = [], 0
    while True:
        piece = get(server, f"/api/runs/{run_id}/log", offset=offset, max_bytes=40)
        pieces.append(piece["text"])
        assert piece["offset"] == offset
        offset = piece["next_offset"]
        if piece["complete"]:
            break
    assert len(pieces) > 2 and "".join(pieces) == stored
    assert get(server, f"/api/runs/{run_id}/log", offset=whole["size"])["text"] == ""
    tail = get(server, f"/api/runs/{run_id}/log", tail=26)
    assert tail["text"] == stored.encode()[-26:].decode() and tail["offset"] == whole["size"] - 26  # type: ignore[union-attr]
    detail = get(server, f"/api/runs/{run_id}")
    assert detail["run"]["status"] == "FAILURE" and detail["log"]["text"] == stored


def test_all_logs_of_a_task_mark_each_run(filled: Filled, server: WebServer) -> None:
    body = get(server, "/api/organisations/chrts/tasks/flaky/logs")
    ids = [entry["run"]["id"] for entry in body["runs"]]
    assert ids == sorted(ids) and len(ids) == 2  # oldest first
    text = body["text"]
    first_mark = f"===== run {ids[0]} · version {filled.flaky_versions[0]} · started "
    second_mark = f"===== run {ids[1]} · version {filled.flaky_versions[1]} · started "
    assert text.index(first_mark) < text.index("flaky first try") < text.index(second_mark) \
        < text.index("flaky second try")
    assert "· SUCCESS ·" in text.splitlines()[0]
    assert [entry["log"]["text"] for entry in body["runs"]] == [filled.store.log(i) for i in ids]


@pytest.mark.parametrize("path", ["/api/organisations/nope/tasks", "/api/organisations/chrts/tasks/nope/runs",
                                  "/api/organisations/chrts/tasks/nope/logs", "/api/organisations/chrts/tasks/nope",
                                  "/api/runs/999999", "/api/runs/999999/log"])
def test_unknown_things_are_404_with_a_reason(server: WebServer, path: str) -> None:
    response = httpx.get(server.url + path)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"] or "999999" in response.json()["detail"]


@pytest.mark.parametrize("path,status", [
    ("/api/runs/9223372036854775808", 404), ("/api/runs/9223372036854775808/log", 404),
    ("/api/runs/-9223372036854775809", 404), ("/api/runs/18446744073709551616/log?tail=10", 404),
    ("/api/organisations/chrts/tasks/flaky/runs?before=9223372036854775808", 422),
    ("/api/organisations/chrts/tasks/flaky/runs?before=-9223372036854775809", 422)])
def test_ids_beyond_what_a_database_holds_are_refused_not_errors(server: WebServer, path: str, status: int) -> None:
    """Issue 11: ids at or above 2**63 reached the database driver and answered 500."""
    response = httpx.get(server.url + path, timeout=30)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert ("no run with id" in detail) if status == 404 else ("less than or equal" in str(detail)
                                                                 or "greater than or equal" in str(detail))
    largest = httpx.get(server.url + "/api/organisations/chrts/tasks/flaky/runs?before=9223372036854775807")
    assert [r["task"] for r in largest.json()["runs"]] == ["flaky", "flaky"]  # the largest id still pages


def test_docs_are_served_without_internet(server: WebServer) -> None:
    page = httpx.get(server.url + "/docs").text
    assert "/swagger-ui/swagger-ui-bundle.js" in page and "cdn." not in page
    assert httpx.get(server.url + "/swagger-ui/swagger-ui-bundle.js").status_code == 200
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/api/organisations", "/api/organisations/{codops}/tasks", "/api/organisations/{codops}/tasks/{task}/runs",
            "/api/runs/{run_id}/log", "/api/organisations/{codops}/tasks/{task}/logs", "/metrics"} <= set(paths)
    assert all("post" not in ops for path, ops in paths.items() if not path.endswith("/trigger"))


GATED = ("import os, pathlib, time\n"
         "def gated():\n"
         "    print('before the gate', flush=True)\n"
         "    gate = pathlib.Path(os.environ['GATE'])\n"
         "    while not gate.exists():\n"
         "        time.sleep(0.05)\n"
         "    print('after the gate', flush=True)\n")


def test_log_of_a_running_task_grows(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("gated.ipynb", GATED)
    repo.write("peach.yaml", task_yaml("default", {"gated": py_task("gated.ipynb", "gated")}))
    repo.commit()
    gate = tmp_path / "gates" / "gate"  # its folder is shown to the sandboxed task
    settings = load_settings(write_settings(tmp_path, [{"url": str(repo.path)}], task_env={"GATE": str(gate)},
                                            **shared_folder(gate.parent)))
    store = Store.open(settings.database_url)
    scheduler = Scheduler(settings, store)
    web = start_server(settings, store)
    thread = None
    try:
        scheduler.recover()
        scheduler.sync()
        thread = threading.Thread(target=scheduler.make_loop("default").tick)
        thread.start()
        run_id = wait_for(lambda: (store.runs("default", "gated", limit=1) or [{}])[0].get("id"))
        seen, offset = "", 0

        def poll() -> dict[str, Any]:
            nonlocal seen, offset
            piece = get(web, f"/api/runs/{run_id}/log", offset=offset)
            seen, offset = seen + piece["text"], piece["next_offset"]
            return piece

        while "before the gate" not in seen:
            piece = poll()
            assert not piece["complete"]
            time.sleep(0.1)
        assert piece["status"] == "RUNNING" and "after the gate" not in seen
        gate.touch()
        while not poll()["complete"]:
            time.sleep(0.1)
        assert seen == store.log(run_id)
        assert seen.index("before the gate") < seen.index("after the gate")
        assert get(web, f"/api/runs/{run_id}")["run"]["status"] == "SUCCESS"
    finally:
        gate.touch()
        if thread is not None:
            thread.join(timeout=60)
        web.stop()
        scheduler.close()
        store.close()


def wait_for(probe: Any, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("gave up waiting")


def test_overview_counts_every_organisation_and_lists_the_failing_tasks(filled: Filled, server: WebServer) -> None:
    body = get(server, "/api/overview")
    assert body["organisations"] == [
        {"codops": "chrts", "tasks": 2, "failing": 1, "stale": None, "running": 0, "healthy": 1, "waiting": 0},
        {"codops": "sesr", "tasks": 1, "failing": 0, "stale": None, "running": 0, "healthy": 1, "waiting": 0}]
    [failing] = body["failing"]
    newest = filled.store.runs("chrts", "flaky", limit=1)[0]
    assert (failing["codops"], failing["task"], failing["status"], failing["run_id"]) == \
        ("chrts", "flaky", "FAILURE", newest["id"])
    assert "flaky broke" in failing["error"] and body["problems"] == [] and body["failing_total"] == 1
    assert get(server, "/api/overview", limit=1)["failing_total"] == 1


def test_overview_judges_a_running_or_abandoned_task_by_its_last_run_that_ended(tmp_path: Path) -> None:
    from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec, TaskState
    from peach_tasks.store.store import TaskRegistration
    from peach_tasks.web.overview import summarise

    store = Store.open(f"sqlite:///{tmp_path / 'peach.db'}")
    try:
        specs = [TaskSpec("org", name, "n.ipynb", "m", executor=Executor.PYTHON) for name in ("again", "stopped", "new")]
        store.register_tasks([TaskRegistration(s, "v") for s in specs])
        failed = store.start_run(specs[0], "v", "c", "t")
        store.finish_run(failed, Outcome(RunStatus.FAILURE, error="boom"))
        store.start_run(specs[0], "v", "c", "t")  # running again now
        store.set_states([("org", "again")], TaskState.RUNNING)
        store.finish_run(store.start_run(specs[1], "v", "c", "t"), Outcome(RunStatus.SUCCESS))
        store.finish_run(store.start_run(specs[1], "v", "c", "t"), Outcome(RunStatus.ABANDONED))
        found = summarise(store.task_summaries())
    finally:
        store.close()
    assert found["organisations"] == [{"codops": "org", "tasks": 3, "failing": 1, "stale": None, "running": 1,
                                       "healthy": 1, "waiting": 1}]
    assert [(f["task"], f["run_id"], f["running"]) for f in found["failing"]] == [("again", failed, True)]
    # Freshness, when the store knows it (a summary's 'stale'), is counted; a stale task is not healthy.
    row = {"codops": "org", "name": "late", "loop": "org", "state": "FINISHED", "outcome": "SUCCESS",
           "outcome_run_id": 1}
    counted = summarise([dict(row, stale=True), dict(row, name="fresh", stale=False)])["organisations"][0]
    assert (counted["stale"], counted["healthy"]) == (1, 1)


def test_runs_filter_by_status_and_version(filled: Filled, server: WebServer) -> None:
    path = "/api/organisations/chrts/tasks/flaky/runs"
    failed = get(server, path, status=["FAILURE", "TIMEOUT"])["runs"]
    assert [r["status"] for r in failed] == ["FAILURE"]
    first = get(server, path, version=filled.flaky_versions[0])["runs"]
    assert [r["version"] for r in first] == [filled.flaky_versions[0]] and first[0]["status"] == "SUCCESS"
    assert get(server, path, version=filled.flaky_versions[0], status="FAILURE")["runs"] == []
    assert httpx.get(server.url + path, params={"status": "BROKEN"}).status_code == 422


def test_task_details_in_the_api(server: WebServer) -> None:
    task = get(server, "/api/organisations/chrts/tasks/flaky")
    assert (task["method"], task["full_notebook"], task["timeout_s"], task["dependencies"]) == ("flaky", False, None, [])
    assert task["run_limit_s"] == 60.0  # the test settings' task timeout: the organisation loop's limit


def test_unknown_pages_are_html_and_unknown_api_paths_json(server: WebServer) -> None:
    page = httpx.get(server.url + "/nothing/here")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Nothing at <code>/nothing/here</code>" in page.text
    for path in ("/api/nothing", "/api/runs/999999"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"


def test_overview_counts_stale_tasks_when_freshness_is_declared(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
    from peach_tasks.store.schema import tasks
    from peach_tasks.store.store import TaskRegistration

    settings = load_settings(write_settings(tmp_path, []))
    store = Store.open(settings.database_url)
    late, fresh = (TaskSpec("org", name, "n.ipynb", "m", executor=Executor.PYTHON) for name in ("late", "fresh"))
    store.register_tasks([TaskRegistration(late, "v", freshness_s=3600), TaskRegistration(fresh, "v", freshness_s=3600)])
    for spec in (late, fresh):
        store.finish_run(store.start_run(spec, "v", "c", "t"), Outcome(RunStatus.SUCCESS))
    with store.engine.begin() as conn:  # its last success two hours ago: older than its freshness
        conn.execute(tasks.update().where(tasks.c.name == "late")
                     .values(last_success_at=datetime.now(timezone.utc) - timedelta(hours=2)))
    web = start_server(settings, store)
    try:
        [org] = get(web, "/api/overview")["organisations"]
        assert (org["stale"], org["healthy"], org["failing"]) == (1, 1, 0)
    finally:
        web.stop()
        store.close()

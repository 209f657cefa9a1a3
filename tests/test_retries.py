"""Retries inside an iteration: definitions, attempts, backoff, a stop during the wait,
a TIMEOUT retried. Real git, real uv environments, real task processes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Repo, py_task, shared_folder, task_yaml, wait_for, write_settings

from peach_tasks.cli import main
from peach_tasks.durations import parse_duration
from peach_tasks.model import TaskSpec
from peach_tasks.scheduling.loops import retry_waits
from peach_tasks.sources.definitions import load_definitions

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


# -- definitions --------------------------------------------------------------------


def define(root: Path, lines: str, loop: str = "") -> Any:
    (root / "nb.ipynb").write_text(NOTEBOOK)
    loop_line = f"    loop: {loop}\n" if loop else ""
    (root / "peach.yaml").write_text(
        f"codops: default\ntasks:\n  t:\n    notebook: nb.ipynb\n    method: run\n{loop_line}{lines}")
    return load_definitions(root, "algos")


def test_defaults_keep_todays_behaviour(tmp_path: Path) -> None:
    [spec] = define(tmp_path, "").tasks
    assert (spec.retries, spec.retry_delay) == (0, 30.0)
    assert retry_waits(spec) == []


@pytest.mark.parametrize(("written", "seconds"), [("30s", 30.0), ("90", 90.0), ("1.5", 1.5), ("5m", 300.0),
                                                  ("1h", 3600.0), ("20m30s", 1230.0), ("500ms", 0.5), ("0", 0.0)])
def test_retry_delay_is_read_as_a_duration(tmp_path: Path, written: str, seconds: float) -> None:
    [spec] = define(tmp_path, f"    retries: 1\n    retry_delay: '{written}'\n").tasks
    assert spec.retry_delay == seconds


def test_backoff_doubles_after_each_attempt() -> None:
    spec = TaskSpec("default", "t", "nb.ipynb", "run", retries=4, retry_delay=30.0)
    assert retry_waits(spec) == [30.0, 60.0, 120.0, 240.0]


@pytest.mark.parametrize(("lines", "line", "words"), [
    ("    retries: 11\n", 6, "between 0 and 10"),
    ("    retries: -1\n", 6, "between 0 and 10"),
    ("    retries: '2'\n", 6, "retries"),  # strict: a string is not a number
    ("    retries: true\n", 6, "retries"),
    ("    retries: 1\n    retry_delay: soon\n", 7, "not a duration"),
    ("    retries: 1\n    retry_delay: -5\n", 7, "zero or more"),
    # 6 retries 60 s apart, doubling: 63 minutes of waits, over the loop's hour
    ("    retries: 6\n    retry_delay: 1m\n", 7, "1h3m in all, longer than the 3600 s limit"),
    ("    retries: 10\n", 6, "longer than the 3600 s limit"),
])
def test_bad_retries_are_problems_at_their_line(tmp_path: Path, lines: str, line: int, words: str) -> None:
    defs = define(tmp_path, lines)
    assert defs.tasks == ()
    [problem] = defs.problems
    assert (problem.file, problem.line) == ("peach.yaml", line) and words in problem.message, problem


def test_metadata_loop_bounds_the_waits_by_its_own_limit(tmp_path: Path) -> None:
    assert define(tmp_path, "    retries: 3\n    retry_delay: 40s\n", loop="metadata").tasks  # 280 s <= 300 s
    defs = define(tmp_path, "    retries: 3\n    retry_delay: 45s\n", loop="metadata")  # 315 s
    assert defs.tasks == () and "300 s limit of the 'metadata' loop" in defs.problems[0].message


def test_validate_reports_retries_with_file_and_line(tmp_path: Path) -> None:
    define(tmp_path, "    retries: 12\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "peach.yaml:6: retries 12 must be between 0 and 10" in result.output


def test_duration_parser_refuses_what_is_not_a_duration() -> None:
    for bad in ("", "1x", "h", True, None, "1h-5m", float("inf")):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration(" 2h ") == 7200.0 and parse_duration("1h30m") == 5400.0 and parse_duration(45) == 45.0


# -- in the loop --------------------------------------------------------------------

# Fails while fewer than FAILS attempts were made, then succeeds: the attempts are counted in
# a folder the sandboxed task may write (shared_folder), one file per attempt.
FLAKY = """
import os
def main():
    folder = {folder!r}
    made = len(os.listdir(folder))
    open(os.path.join(folder, os.environ["PEACH_RUN_ID"]), "w").close()
    if made < {fails}:
        raise RuntimeError("attempt %d failed" % (made + 1))
    return made + 1
"""


@pytest.fixture
def make(tmp_path: Path, open_scheduler: Any) -> Any:
    def factory(repos: list[dict[str, Any]], **extra: Any) -> Any:
        return open_scheduler(write_settings(tmp_path, repos, **extra))

    return factory


def runs_oldest_first(store: Any, task: str) -> list[dict[str, Any]]:
    return list(reversed(store.runs("default", task, limit=50)))


def test_a_failure_runs_again_each_attempt_its_own_run_linked_to_the_first(
        repo: Repo, make: Any, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    repo.notebook("flaky.ipynb", FLAKY.format(folder=str(attempts), fails=2))
    repo.notebook("ok.ipynb", "def main():\n    return 'next'\n")
    repo.write("peach.yaml", task_yaml("default", {
        "a_flaky": py_task("flaky.ipynb", "main", retries=3, retry_delay="50ms"),
        "b_next": py_task("ok.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}], **shared_folder(attempts))
    assert scheduler.run_once() == {"default": 2, "metadata": 0}  # tasks of the iteration, not runs
    flaky = runs_oldest_first(store, "a_flaky")
    assert [r["status"] for r in flaky] == ["FAILURE", "FAILURE", "SUCCESS"]  # the third attempt succeeded
    first = flaky[0]["id"]
    assert [(r["attempt"], r["retry_of"]) for r in flaky] == [(1, None), (2, first), (3, first)]
    assert flaky[2]["result"] == 3 and flaky[0]["error"].endswith("RuntimeError: attempt 1 failed")
    # Backoff, as the loop applied it: 50 ms, then 100 ms (read from the runs' logs, not a clock).
    assert "it runs again in 50ms (attempt 2 of 4)" in (store.log(first) or "")
    assert f"attempt 2 of 4, a retry of run {first}, after waiting 50ms" in (store.log(flaky[1]["id"]) or "")
    assert f"attempt 3 of 4, a retry of run {first}, after waiting 100ms" in (store.log(flaky[2]["id"]) or "")
    # ...all before the loop moved on to the next task
    [after] = store.runs("default", "b_next")
    assert after["id"] > flaky[2]["id"] and after["attempt"] == 1
    # The CLI and the API show the link.
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "scheduler.yaml"), "runs", "default/a_flaky"])
    assert f"3 of #{first}" in result.output and f"2 of #{first}" in result.output
    listed = json.loads(CliRunner().invoke(main, ["--config", str(tmp_path / "scheduler.yaml"), "runs",
                                                  "default/a_flaky", "--json"]).output)
    assert [r["retry_of"] for r in listed] == [first, first, None]


def test_retries_stop_at_the_limit(repo: Repo, make: Any, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    repo.notebook("flaky.ipynb", FLAKY.format(folder=str(attempts), fails=99))
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("flaky.ipynb", "main", retries=2,
                                                                  retry_delay="10ms")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}], **shared_folder(attempts))
    scheduler.run_once()
    flaky = runs_oldest_first(store, "t")
    assert [(r["status"], r["attempt"]) for r in flaky] == [("FAILURE", 1), ("FAILURE", 2), ("FAILURE", 3)]
    assert len(list(attempts.iterdir())) == 3
    assert "runs again" not in (store.log(flaky[-1]["id"]) or "")  # the last attempt says no more


def test_a_timeout_is_retried_and_each_attempt_has_the_whole_limit(repo: Repo, make: Any) -> None:
    repo.notebook("slow.ipynb", "import time\ndef main():\n    time.sleep(60)\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("slow.ipynb", "main", timeout=1.0, retries=1,
                                                                  retry_delay="10ms")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    first, second = runs_oldest_first(store, "t")
    assert (first["status"], second["status"]) == ("TIMEOUT", "TIMEOUT")
    assert second["retry_of"] == first["id"] and second["attempt"] == 2
    # The retry had its own limit, not what the first attempt left of it.
    assert "timeout 1s" in (store.log(second["id"]) or "")


def test_a_success_is_not_retried(repo: Repo, make: Any) -> None:
    repo.notebook("ok.ipynb", "def main():\n    return 1\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("ok.ipynb", "main", retries=3,
                                                                  retry_delay="10ms")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    assert [(r["status"], r["attempt"]) for r in store.runs("default", "t")] == [("SUCCESS", 1)]


def loop_in_thread(scheduler: Any) -> tuple[Any, threading.Thread]:
    """Org default's loop ticking in a thread, as ``serve`` starts it (recovered and synced first)."""
    scheduler.recover()
    scheduler.sync()
    loop = scheduler.make_loop("default")
    thread = threading.Thread(target=loop.tick)
    thread.start()
    return loop, thread


def test_a_stop_ends_the_wait_between_attempts_at_once(repo: Repo, make: Any) -> None:
    repo.notebook("fail.ipynb", "def main():\n    raise RuntimeError('down')\n")
    repo.notebook("ok.ipynb", "def main():\n    return 1\n")
    # One retry, 50 s later: the stop must not wait for it.
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("fail.ipynb", "main", retries=1,
                                                                  retry_delay="50s"),
                                                   "b": py_task("ok.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    _, thread = loop_in_thread(scheduler)
    # Waiting for its retry: the first attempt ended, and the task is PENDING again.
    wait_for(lambda: store.runs("default", "a") and store.runs("default", "a")[0]["status"] == "FAILURE"
             and {t["name"]: t["state"] for t in store.tasks()}["a"] == "PENDING",
             60, "the first attempt to fail and the retry to wait")
    scheduler.stop_event.set()
    thread.join(timeout=20)  # far below the 50 s wait: it ended because of the stop
    assert not thread.is_alive(), "the loop went on waiting for the retry after the stop"
    assert [r["attempt"] for r in store.runs("default", "a")] == [1]  # no retry ran
    assert store.runs("default", "b") == []  # nor did the loop move on
    assert {t["name"]: t["state"] for t in store.tasks()} == {"a": "FINISHED", "b": "FINISHED"}


def test_a_handover_ends_the_wait_too(repo: Repo, make: Any) -> None:
    repo.notebook("fail.ipynb", "def main():\n    raise RuntimeError('down')\n")
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("fail.ipynb", "main", retries=1,
                                                                  retry_delay="50s")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    loop, thread = loop_in_thread(scheduler)
    wait_for(lambda: {t["name"]: t["state"] for t in store.tasks()}["a"] == "PENDING"
             and store.runs("default", "a"), 60, "the retry to wait")
    loop.handover.set()  # this replica gives the loop to another one
    thread.join(timeout=20)
    assert not thread.is_alive(), "the loop went on waiting for the retry after the handover"
    assert [r["attempt"] for r in store.runs("default", "a")] == [1]

"""PythonExecutor end to end: real interpreters running bootstrap.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import gone, process_tree_code, wait_for

from peach_tasks.executors.base import Job
from peach_tasks.executors.python import BOOTSTRAP, PythonExecutor
from peach_tasks.model import RunStatus

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")

# The process tree of conftest.PROCESS_TREE, started from a task's entry function.
TREE_ENTRY = "def main():\n    start_tree()\n"





def make_job(tmp_path: Path, code: str, method: str | None = "main", **kw: Any) -> Job:
    fields: dict[str, Any] = dict(
        run_id=1,
        codops="acme",
        task="report",
        code=textwrap.dedent(code),
        method=method,
        filename="notebooks/report.ipynb",
        interpreter=Path(sys.executable),
        cwd=tmp_path,
        timeout=10.0,
        grace=0.5,
        marker=f"test-{uuid.uuid4().hex}",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VISIBLE": "yes"},
    )
    fields.update(kw)
    return Job(**fields)


class Run:
    """Runs a job and keeps its log lines (stamps checked, then stripped)."""

    def __init__(self, tmp_path: Path, code: str, method: str | None = "main", executor: PythonExecutor | None = None,
                 cancel: threading.Event | None = None, **kw: Any) -> None:
        self.raw: list[str] = []
        self.job = make_job(tmp_path, code, method, **kw)
        self.outcome = (executor or PythonExecutor()).run(self.job, self.sink, cancel or threading.Event())
        assert all(STAMP.match(line) for line in self.raw), self.raw
        self.log = [line[25:] for line in self.raw]

    def sink(self, line: str) -> None:
        self.raw.append(line)


def test_bootstrap_lies_next_to_the_executor() -> None:
    assert BOOTSTRAP.is_file()


def test_success_with_result_and_log(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import sys
        print("at import")
        def main():
            print("in main")
            print("warning", file=sys.stderr)
            return {"rows": 3, "names": ["a", "b"]}
    """)
    assert run.outcome.status is RunStatus.SUCCESS
    assert run.outcome.result == {"rows": 3, "names": ["a", "b"]}
    assert run.outcome.exit_code == 0 and run.outcome.error is None
    assert run.log == ["at import", "in main", "warning"]


def test_whole_notebook_without_method(tmp_path: Path) -> None:
    run = Run(tmp_path, "print(__name__)", method=None)
    assert run.outcome.status is RunStatus.SUCCESS and run.outcome.result is None
    assert run.log == ["__main__"]


def test_result_not_serialisable_or_too_large(tmp_path: Path) -> None:
    odd = Run(tmp_path, "def main():\n    return object()\n")
    assert odd.outcome.status is RunStatus.SUCCESS and odd.outcome.result is None
    assert odd.outcome.details["result_note"] == "not JSON-serialisable: object"
    big = Run(tmp_path, "def main():\n    return 'x' * 1000\n", executor=PythonExecutor(max_result_bytes=100))
    assert big.outcome.status is RunStatus.SUCCESS and big.outcome.result is None
    assert big.outcome.details["result_note"] == "too large: 1002 bytes"


def test_exception_is_a_failure_with_traceback_in_log(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        def check(value):
            raise ValueError(f"bad input: {value}")

        def main():
            check(42)
    """)
    outcome = run.outcome
    assert outcome.status is RunStatus.FAILURE and outcome.exit_code == 1
    assert outcome.error == "ValueError: bad input: 42"
    assert outcome.details["error_type"] == "ValueError"
    assert 'File "notebooks/report.ipynb", line 3, in check' in outcome.details["traceback"]
    assert "bootstrap" not in outcome.details["traceback"]
    log = "\n".join(run.log)
    assert 'File "notebooks/report.ipynb", line 6, in main' in log
    assert 'raise ValueError(f"bad input: {value}")' in log  # the task's own source line
    assert run.log[-1] == "ValueError: bad input: 42"


def test_missing_method_is_a_failure(tmp_path: Path) -> None:
    run = Run(tmp_path, "x = 1", method="main")
    assert run.outcome.status is RunStatus.FAILURE
    assert run.outcome.error == "NameError: entry method 'main' is not defined in notebooks/report.ipynb"


def test_system_exit_codes(tmp_path: Path) -> None:
    three = Run(tmp_path, "import sys\ndef main():\n    sys.exit(3)\n")
    assert three.outcome.status is RunStatus.FAILURE
    # The run's error is the exception's, with its traceback in the log (a notebook's names the
    # cell and line: tests/test_public_notebook_patterns.py); the exit status is the task's.
    assert (three.outcome.exit_code, three.outcome.error) == (3, "SystemExit: 3")
    assert "    sys.exit(3)" in three.log
    zero = Run(tmp_path, "import sys\ndef main():\n    sys.exit(0)\n")
    assert zero.outcome.status is RunStatus.SUCCESS and zero.outcome.exit_code == 0
    assert "peach-tasks: the task ended the run (SystemExit, status 0): a success; what came after it did not run" \
        in zero.log


def test_killed_by_signal(tmp_path: Path) -> None:
    run = Run(tmp_path, "import os, signal\ndef main():\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert run.outcome.status is RunStatus.FAILURE
    assert run.outcome.signal == signal.SIGKILL and run.outcome.exit_code is None
    assert run.outcome.error == "process killed by signal SIGKILL"


def test_timeout_kills_child_grandchild_and_detached(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    # Long enough for the tree to start on a loaded 2-core machine; ends by the timeout all the same.
    run = Run(tmp_path, process_tree_code(pids_file) + TREE_ENTRY, timeout=8.0)
    assert "ready" in run.log, "the task did not start its processes in time"
    assert run.outcome.status is RunStatus.TIMEOUT
    assert run.outcome.error == "timed out after 8 s; the task and every process it started were killed"
    assert run.outcome.signal == signal.SIGTERM
    assert [pid for pid in json.loads(pids_file.read_text()) if not gone(pid)] == []


def test_timeout_sigkills_a_task_ignoring_sigterm(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import signal, time
        def main():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("stubborn", flush=True)
            time.sleep(60)
    """, timeout=1.0, grace=0.5)
    assert run.outcome.status is RunStatus.TIMEOUT
    assert run.outcome.signal == signal.SIGKILL


def test_background_child_after_success_is_killed(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import subprocess, sys
        def main():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            return child.pid
    """)
    assert run.outcome.status is RunStatus.SUCCESS
    assert run.outcome.details["leftovers_killed"] == 1
    assert gone(run.outcome.result)
    assert run.log[-1] == "peach-tasks: killed 1 process the task left running"


def test_cancel_is_abandoned_and_kills_the_tree(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    cancel = threading.Event()

    class Cancelling(Run):
        def sink(self, line: str) -> None:
            super().sink(line)
            if line.endswith(" ready"):
                cancel.set()

    run = Cancelling(tmp_path, process_tree_code(pids_file) + TREE_ENTRY, cancel=cancel, timeout=30.0)
    assert run.outcome.status is RunStatus.ABANDONED
    assert run.outcome.error == "scheduler stopped while the task ran"
    assert [pid for pid in json.loads(pids_file.read_text()) if not gone(pid)] == []


def test_payload_goes_to_a_one_parameter_method_only(tmp_path: Path) -> None:
    one = Run(tmp_path, "def main(payload):\n    return {'got': payload}\n", payload={"day": "2026-11-24"})
    assert one.outcome.result == {"got": {"day": "2026-11-24"}}
    zero = Run(tmp_path, "def main():\n    return 'no argument'\n", payload={"day": "2026-11-24"})
    assert zero.outcome.result == "no argument"
    default = Run(tmp_path, "def main(payload='none'):\n    return payload\n")
    assert default.outcome.result == "none"  # no payload: called without arguments


def test_async_method(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import asyncio
        async def main(payload):
            await asyncio.sleep(0.01)
            return payload * 2
    """, payload=21)
    assert run.outcome.status is RunStatus.SUCCESS and run.outcome.result == 42


def test_helper_module_next_to_the_notebook_imports(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    run = Run(tmp_path, "from helpers import double\ndef main():\n    return double(4)\n")
    assert run.outcome.status is RunStatus.SUCCESS and run.outcome.result == 8


def test_task_sees_only_the_job_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEACH_TASKS_DATABASE_URL", "postgresql://scheduler:secret@db/peach")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "scheduler-only"))
    run = Run(tmp_path, """
        import os, sys
        def main():
            return {"db": os.environ.get("PEACH_TASKS_DATABASE_URL"), "visible": os.environ.get("VISIBLE"),
                    "argv": sys.argv, "path": [p for p in sys.path if "scheduler-only" in p]}
    """)
    assert run.outcome.result == {"db": None, "visible": "yes", "argv": ["notebooks/report.ipynb"], "path": []}


def test_given_work_dir_keeps_the_result_file(tmp_path: Path) -> None:
    work = tmp_path / "run-1"
    run = Run(tmp_path, "def main():\n    return [1]\n", work_dir=work)
    assert run.outcome.result == [1]
    assert json.loads((work / "result.json").read_text()) == {"ok": True, "result": [1]}


def test_missing_interpreter_is_a_failure(tmp_path: Path) -> None:
    run = Run(tmp_path, "def main():\n    pass\n", interpreter=tmp_path / "no-python")
    assert run.outcome.status is RunStatus.FAILURE
    assert run.outcome.error is not None and run.outcome.error.startswith("cannot start")
    assert run.log and run.log[-1].startswith("peach-tasks: cannot start")


def test_die_with_scheduler_kills_the_task_when_its_scheduler_is_killed(tmp_path: Path) -> None:
    # A stand-in scheduler process runs one job; SIGKILL it (as a replica is killed) and the
    # task must die too, without any cleanup by the scheduler: the kernel does it.
    pid_file = tmp_path / "task.pid"
    scheduler_code = textwrap.dedent(f"""
        import sys, threading
        from pathlib import Path
        from peach_tasks.executors.base import Job
        from peach_tasks.executors.python import PythonExecutor
        code = "import os, time\\ndef main():\\n    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\\n    time.sleep(120)\\n"
        job = Job(run_id=1, codops="c", task="t", code=code, method="main", filename="nb.ipynb",
                  interpreter=Path(sys.executable), cwd=Path({str(tmp_path)!r}), timeout=300, grace=1,
                  marker="test-die-with-{uuid.uuid4().hex}", die_with_scheduler=True)
        PythonExecutor().run(job, print, threading.Event())
    """)
    scheduler = subprocess.Popen([sys.executable, "-c", scheduler_code])
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the task to start")
        task = psutil.Process(int(pid_file.read_text()))
        assert task.ppid() == scheduler.pid
        scheduler.kill()
        scheduler.wait()
        wait_for(lambda: gone(task.pid), 30, "the task to die with its scheduler")
    finally:
        scheduler.kill()
        if pid_file.exists() and pid_file.read_text() and not gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_forged_result_file_gives_text_fields_whatever_it_holds(tmp_path: Path) -> None:
    """Found by the hostile pass: the result file is the task's to write, and one holding a
    list as its traceback stored a list where the views expect text."""
    from peach_tasks.executors.base import Job
    from peach_tasks.executors.process import ProcessResult
    from peach_tasks.executors.python import outcome_from

    job = Job(run_id=1, codops="c", task="t", code="", method=None, filename="nb.ipynb",
              interpreter=Path(sys.executable), cwd=tmp_path, timeout=5, grace=1, marker="m")
    ended = ProcessResult(exit_code=1, signal=None, timed_out=False, cancelled=False, pid=1, leftovers_killed=0)
    forged = {"ok": False, "error": {"type": ["x"], "traceback": ["line 1", {"a": 2}], "last_line": 42}}
    outcome = outcome_from(job, ended, forged)
    assert outcome.error == "42" and outcome.details["traceback"] == '["line 1", {"a": 2}]'
    assert outcome.details["error_type"] == '["x"]'

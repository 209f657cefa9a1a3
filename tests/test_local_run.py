"""``peach-tasks run DIR TASK`` as a real command: real uv environment, real task processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import Repo, py_task, task_yaml, wait_for


def run(repo: Path, *args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["peach-tasks", "run", str(repo), *args, "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_runs_in_the_organisations_environment_and_streams_the_log(repo: Repo, cache: Path) -> None:
    repo.notebook("nb.ipynb", "import sys\nfrom tabulate import tabulate\n"
                              "def main():\n    print(tabulate([[1, 2]]))\n    return sys.prefix\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}, dependencies=["tabulate"]))
    repo.commit()
    proc = run(repo.path, "t", cache=cache)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(f"peach-tasks: run 0 of default/t, version {repo.short()} (commit working-copy), "
                             "executor python, timeout 3600s")
    assert any(line.endswith("-  -") for line in lines)  # tabulate's rule line, stamped like the scheduler's log
    assert "default/t: SUCCESS, returned" in proc.stderr
    assert str(cache / "envs" / "default") in proc.stderr  # the environment built under --cache-dir


def test_current_python_payload_and_uncommitted_changes(repo: Repo, cache: Path) -> None:
    repo.notebook("nb.ipynb", "def main(payload=None):\n    return payload\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    repo.notebook("nb.ipynb", "import sys\ndef main(payload=None):\n    return [payload, sys.executable]\n")
    proc = run(repo.path, "default/t", "--current-python", "--payload", '{"day": "2024-01-31"}', cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert f"version {repo.short()}+changes" in proc.stdout
    assert '[{"day": "2024-01-31"}, ' in proc.stderr and not cache.exists()  # nothing was built


def test_failure_and_timeout_exit_codes(repo: Repo, cache: Path) -> None:
    repo.notebook("fail.ipynb", "def main():\n    raise ValueError('bad input')\n")
    repo.notebook("slow.ipynb", "import time\ndef main():\n    print('started', flush=True)\n    time.sleep(60)\n")
    repo.write("peach.yaml", task_yaml("default", {"fail": py_task("fail.ipynb", "main"),
                                                   "slow": py_task("slow.ipynb", "main", timeout=1)}))
    repo.commit()
    failed = run(repo.path, "fail", "--current-python", cache=cache)
    assert failed.returncode == 1
    assert "Traceback" in failed.stdout and "default/fail: FAILURE: fail.ipynb cell 1 line 2: ValueError: bad input" in failed.stderr
    slow = run(repo.path, "slow", "--current-python", cache=cache)
    assert slow.returncode == 124
    assert "started" in slow.stdout and "timed out after 1 s" in slow.stdout


def test_unknown_task_cannot_start(repo: Repo, cache: Path) -> None:
    repo.notebook("nb.ipynb", "def main():\n    pass\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main"),
                                                   "broken": {"executor": "python", "notebook": "nb.ipynb",
                                                              "metod": "main"}}))
    repo.commit()
    proc = run(repo.path, "nope", cache=cache)
    assert proc.returncode == 2
    assert "no runnable task 'nope'" in proc.stderr and "tasks: default/t" in proc.stderr
    assert "peach.yaml:10: unknown key 'tasks.broken.metod'" in proc.stderr  # why 'broken' is not runnable


def test_ctrl_c_ends_the_task_and_everything_it_started(repo: Repo, cache: Path, tmp_path: Path) -> None:
    # The child is found by a token on its command line: a sandboxed task can neither
    # write outside its sandbox nor know its children's pids as the host sees them.
    token = f"peach-child-{os.getpid()}-{time.monotonic_ns()}"
    repo.notebook("nb.ipynb", "import subprocess, time\n"
                              "def main():\n"
                              f"    child = subprocess.Popen(['sleep', '300', {token!r}])\n"
                              "    print('running', flush=True)\n"
                              "    time.sleep(300)\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    proc = subprocess.Popen(["peach-tasks", "run", str(repo.path), "t", "--current-python"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.rstrip().endswith("running"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "ABANDONED" in err

    def children() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline", "status"])
                if token in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]

    assert children() == [] or wait_for(lambda: not children(), 10, "the task's child to end after Ctrl-C")
    assert os.environ.get("PEACH_TRIGGER_DIR") is None  # nothing leaked into the test process


def test_outputs_of_a_local_run_are_saved_with_outputs(repo: Repo, cache: Path, tmp_path: Path) -> None:
    repo.notebook("nb.ipynb", "import matplotlib.pyplot as plt\n"
                              "class Table:\n    def _repr_html_(self):\n        return '<table></table>'\n"
                              "def main():\n    display(Table())\n    plt.plot([1, 2])\n    raise ValueError('late')\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    said = run(repo.path, "t", "--current-python", cache=cache)
    assert said.returncode == 1 and "the run showed 2 output(s); --outputs DIR saves them" in said.stderr
    saved = run(repo.path, "t", "--current-python", "--outputs", str(tmp_path / "shown"), cache=cache)
    assert saved.returncode == 1 and f"saved in {tmp_path / 'shown'}" in saved.stderr
    files = sorted(p.name for p in (tmp_path / "shown").iterdir())
    assert files == ["001-display.html", "002-figure.png"]
    assert (tmp_path / "shown" / "001-display.html").read_text() == "<table></table>"
    assert (tmp_path / "shown" / "002-figure.png").read_bytes().startswith(b"\x89PNG")

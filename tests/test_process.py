"""The process layer with real processes: output streaming, timeouts, tree kills."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import gone, process_tree_code

from peach_tasks.executors.base import CancelEvent
from peach_tasks.executors.process import (
    MARKER_ENV,
    MAX_LINE_BYTES,
    ProcessSpec,
    find_marked,
    kill_marked,
    run_process,
    utc_stamp,
)

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")





def spec(tmp_path: Path, code: str, *args: str, timeout: float = 10, grace: float = 0.5, **kw: object) -> ProcessSpec:
    script = tmp_path / f"task_{uuid.uuid4().hex[:6]}.py"
    script.write_text(textwrap.dedent(code))
    return ProcessSpec(
        argv=[sys.executable, str(script), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=tmp_path,
        timeout=timeout,
        grace=grace,
        marker=f"test-{uuid.uuid4().hex}",
        **kw,  # type: ignore[arg-type]
    )


def texts(lines: list[str]) -> list[str]:
    assert all(STAMP.match(line) for line in lines), lines
    return [line[25:] for line in lines]


def test_utc_stamp_format() -> None:
    assert utc_stamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_stamp(1795559401.1239) == "2026-11-24T22:30:01.123Z"
    assert STAMP.match(utc_stamp() + " ")


def test_stdout_and_stderr_in_order_with_stamps(tmp_path: Path) -> None:
    code = """
        import sys
        for i in range(3):
            print(f"out {i}")
            print(f"err {i}", file=sys.stderr)
        sys.stdout.write("partial, no newline")
    """
    lines: list[str] = []
    result = run_process(spec(tmp_path, code), lines.append)
    assert (result.exit_code, result.signal, result.timed_out, result.leftovers_killed) == (0, None, False, 0)
    assert texts(lines) == ["out 0", "err 0", "out 1", "err 1", "out 2", "err 2", "partial, no newline"]


def test_lines_reach_the_sink_while_the_process_runs(tmp_path: Path) -> None:
    # The task only ends once the test has seen its first line: if lines were
    # delivered at exit, it would sit there until its timeout.
    release = tmp_path / "release"
    code = f"""
        import os, time
        print("waiting for release")
        deadline = time.time() + 8
        while not os.path.exists({str(release)!r}) and time.time() < deadline:
            time.sleep(0.01)
        print("released" if os.path.exists({str(release)!r}) else "never released")
    """
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        if line.endswith("waiting for release"):
            release.touch()

    result = run_process(spec(tmp_path, code), sink)
    assert result.exit_code == 0
    assert texts(lines) == ["waiting for release", "released"]


def test_long_lines_are_cut_with_a_note_and_bad_bytes_replaced(tmp_path: Path) -> None:
    code = """
        import sys
        sys.stdout.buffer.write(b"ab\\xff\\xfecd\\r\\n")
        sys.stdout.buffer.write(b"x" + ("\\u00e9" * 100_000).encode() + b"\\n")
        print("after")
    """
    lines: list[str] = []
    assert run_process(spec(tmp_path, code), lines.append).exit_code == 0
    got = texts(lines)
    assert got[0] == "ab\ufffd\ufffdcd"
    # 200,001 bytes: the first 64 KiB kept, without cutting a character in half
    assert got[1] == "x" + "\u00e9" * ((MAX_LINE_BYTES - 2) // 2)
    assert got[2] == (f"peach-tasks: the line above was cut: {200_001 - (MAX_LINE_BYTES - 1)} bytes dropped after "
                      f"its first {MAX_LINE_BYTES - 1} (lines are kept up to {MAX_LINE_BYTES} bytes)")
    assert got[3:] == ["after"]


def test_environment_is_exactly_the_spec_plus_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEACH_TASKS_DATABASE_URL", "postgresql://secret")
    code = """
        import json, os, sys
        print(json.dumps(dict(os.environ)))
        print(sys.stdin.read())
    """
    s = spec(tmp_path, code, stdin_data=b"hello on stdin")
    lines: list[str] = []
    assert run_process(s, lines.append).exit_code == 0
    env = json.loads(texts(lines)[0])
    assert env.pop(MARKER_ENV) == s.marker
    assert env.pop("PYTHONUNBUFFERED") == "1"
    env.pop("LC_CTYPE", None)  # Python's own C-locale coercion may add it
    assert env == s.env
    assert texts(lines)[1] == "hello on stdin"


def test_exit_code_and_signal(tmp_path: Path) -> None:
    assert run_process(spec(tmp_path, "raise SystemExit(3)"), lambda _: None).exit_code == 3
    killed = run_process(spec(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), lambda _: None)
    assert (killed.exit_code, killed.signal, killed.timed_out) == (None, signal.SIGKILL, False)


def test_timeout_kills_the_whole_tree(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    lines: list[str] = []
    result = run_process(spec(tmp_path, process_tree_code(pids_file) + "start_tree()\n", timeout=2), lines.append)
    assert "ready" in texts(lines), "the task did not start its processes in time"
    assert result.timed_out and not result.cancelled
    assert result.signal == signal.SIGTERM and result.exit_code is None
    pids = json.loads(pids_file.read_text())
    assert [pid for pid in pids if not gone(pid)] == []
    assert not gone(os.getpid())
    assert result.leftovers_killed >= len(pids)
    assert any("timed out after 2 s" in text for text in texts(lines))


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    code = """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The child inherits the ignored SIGTERM.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid, flush=True)
        time.sleep(60)
    """
    lines: list[str] = []
    started = time.monotonic()
    result = run_process(spec(tmp_path, code, timeout=1, grace=0.5), lines.append)
    assert time.monotonic() - started < 30  # sanity only
    assert result.timed_out and result.signal == signal.SIGKILL
    assert gone(int(texts(lines)[0]))


def test_background_child_left_after_exit_is_killed_and_counted(tmp_path: Path) -> None:
    code = """
        import subprocess, sys
        # One keeps the output pipe open; one left the session and closed it.
        a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True, stdout=subprocess.DEVNULL)
        print(a.pid, b.pid)
    """
    lines: list[str] = []
    started = time.monotonic()
    result = run_process(spec(tmp_path, code), lines.append)
    assert time.monotonic() - started < 8  # did not wait for the sleepers
    assert (result.exit_code, result.timed_out, result.leftovers_killed) == (0, False, 2)
    out = texts(lines)
    assert out[-1] == "peach-tasks: killed 2 processes the task left running"
    assert all(gone(int(pid)) for pid in out[0].split())


def test_cancel_kills_the_tree(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    cancel = threading.Event()

    def sink(line: str) -> None:
        if line.endswith(" ready"):
            cancel.set()

    result = run_process(spec(tmp_path, process_tree_code(pids_file) + "start_tree()\n", timeout=30), sink, cancel)
    assert result.cancelled and not result.timed_out
    assert [pid for pid in json.loads(pids_file.read_text()) if not gone(pid)] == []


def test_cancel_event_given_but_unset_does_not_slow_a_fast_exit(tmp_path: Path) -> None:
    cancel = threading.Event()
    result = run_process(spec(tmp_path, "pass"), lambda _: None, cancel)
    assert result.exit_code == 0 and not result.cancelled


def test_missing_program_raises(tmp_path: Path) -> None:
    s = ProcessSpec([str(tmp_path / "nope")], {}, tmp_path, 5, 0.5, "x")
    with pytest.raises(OSError):
        run_process(s, lambda _: None)


def marked_sleeper(marker: str, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, MARKER_ENV: marker},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # handler is set
    return proc


def test_find_and_kill_marked() -> None:
    prefix = f"direct-{uuid.uuid4().hex}"
    polite = marked_sleeper(f"{prefix}-1")
    stubborn = marked_sleeper(f"{prefix}-2", ignore_term=True)
    unmarked = marked_sleeper(f"other-{uuid.uuid4().hex}")
    try:
        assert {p.pid for p in find_marked(prefix)} == {polite.pid, stubborn.pid}
        assert [p.pid for p in find_marked(f"{prefix}-1", exact=True)] == [polite.pid]
        assert find_marked(f"{prefix}-", exact=True) == []
        assert kill_marked(prefix, grace=0.3) == 2
        assert polite.wait(5) == -signal.SIGTERM
        assert stubborn.wait(5) == -signal.SIGKILL
        assert find_marked(prefix) == []
        assert unmarked.poll() is None
        assert kill_marked(prefix, grace=0.3, extra=[psutil.Process(unmarked.pid)]) == 1
        assert unmarked.wait(5) == -signal.SIGTERM
    finally:
        for proc in (polite, stubborn, unmarked):
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]


def test_a_cancel_event_wakes_the_wait_without_polling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hundreds of loops wait at once in one replica: a waiting task must not wake up to
    # look at its cancel event, only when the child exits or the event is set.
    from peach_tasks.executors import process

    waits: list[float] = []
    real = process._exited

    def counted(proc, pidfd, wait, cancel_fd=None):  # type: ignore[no-untyped-def]
        waits.append(wait)
        return real(proc, pidfd, wait, cancel_fd)

    monkeypatch.setattr(process, "_exited", counted)
    cancel = CancelEvent()

    def sink(line: str) -> None:
        if line.endswith(" ready"):
            cancel.set()

    result = run_process(spec(tmp_path, "print('ready', flush=True)\nimport time\ntime.sleep(60)", timeout=600),
                         sink, cancel)
    assert result.cancelled and not result.timed_out
    # One long wait ended by the cancel, then the final look; a 50 ms slicing would be hundreds.
    assert len(waits) <= 3 and max(waits) > 60
    cancel.clear()
    assert not cancel.is_set()
    result = run_process(spec(tmp_path, "pass"), lambda _: None, cancel)  # a cleared event no longer wakes
    assert result.exit_code == 0 and not result.cancelled

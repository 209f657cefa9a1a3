"""Issue 11 ("Hardening"), findings 4 and 5: what a task prints, raises or returns costs the
scheduler bounded memory and the store bounded rows, whatever its size. Real scheduler, real
sandboxed task processes (plain ones where the host has no sandbox), real web server.
"""

from __future__ import annotations

import gc
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from conftest import Repo, py_task, task_yaml, write_settings

from peach_tasks.bounds import MAX_DETAIL_CHARS, MAX_ERROR_CHARS, MAX_TRACEBACK_CHARS
from peach_tasks.executors.process import MAX_LINE_BYTES, ProcessSpec, run_process
from peach_tasks.executors.python import MAX_RESULT_FILE_BYTES
from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.store import Store
from peach_tasks.store.logs import HEAD_BYTES, TAIL_BYTES
from peach_tasks.store.store import TaskRegistration
from peach_tasks.web.server import WebServer

MIB = 1 << 20
# What a flood of output may add to the scheduler's peak memory: its buffers are bounded by
# the kept log (1 MiB head + 4 MiB tail) and one read, not by the task's output.
MAX_GROWTH = 64 * MIB
STAMP_BYTES = len("2026-11-24T22:30:01.123Z ")


def memory(key: str) -> int:
    """This process's ``VmRSS`` or ``VmHWM`` (peak), in bytes."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/self/status")


def peak_growth(action: Callable[[], Any]) -> int:
    """How far this process's peak resident memory rose above its resident memory at the start."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # VmHWM back to VmRSS (Linux 4.0+)
    except OSError as exc:
        pytest.skip(f"cannot reset this process's peak memory: {exc}")
    idle = memory("VmRSS")
    action()
    return memory("VmHWM") - idle


def open_org(tmp_path: Path, open_scheduler: Any, org: str, tasks: dict[str, str]) -> tuple[Any, Any]:
    """A repository with one notebook (entry ``main``) per task of ``org``, synced."""
    repo = Repo(tmp_path / "algos")
    for name, code in tasks.items():
        repo.notebook(f"{name}.ipynb", textwrap.dedent(code))
    repo.write("peach.yaml", task_yaml(org, {name: py_task(f"{name}.ipynb", "main") for name in tasks}))
    repo.commit("tasks")
    scheduler, store = open_scheduler(write_settings(tmp_path, [{"url": str(repo.path)}]))
    scheduler.recover()  # finds the sandbox, as serve and run-once do
    scheduler.sync()
    return scheduler, store


# -- finding 4: the scheduler's memory no longer follows the output's shape ----------------

FLOOD = {
    # 200 MB without a newline, in 64 KiB writes: one line that never ends
    "no_newlines": """
        import sys
        def main():
            block = b"x" * 65536
            for _ in range(200_000_000 // 65536):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.write(block[:200_000_000 % 65536])
            sys.stdout.buffer.flush()
    """,
    # one line of 300 MB, written at once
    "one_line": """
        import sys
        def main():
            sys.stdout.buffer.write(b"y" * 300_000_000 + b"\\n")
            sys.stdout.buffer.flush()
    """,
    # 100 MB of 100-byte lines, in 1 MiB writes: the log writer's buffer is what grows here
    "lines": """
        import sys
        def main():
            block = b"".join(b"%099d\\n" % i for i in range(10_000))
            for _ in range(100):
                sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
    """,
}


def test_a_flood_of_output_costs_the_scheduler_bounded_memory_and_the_log_says_what_was_cut(
        tmp_path: Path, open_scheduler: Any) -> None:
    scheduler, store = open_org(tmp_path, open_scheduler, "flood", FLOOD)
    growth: dict[str, int] = {}
    for name in FLOOD:
        loop = scheduler.make_loop("flood", keep=lambda key, name=name: key == ("flood", name))
        growth[name] = peak_growth(loop.tick)
    runs = {name: store.runs("flood", name, limit=1)[0] for name in FLOOD}
    assert {name: run["status"] for name, run in runs.items()} == dict.fromkeys(FLOOD, "SUCCESS"), runs
    assert all(grown < MAX_GROWTH for grown in growth.values()), {n: f"{g / MIB:.1f} MiB" for n, g in growth.items()}

    logs = {name: store.log(run["id"]) or "" for name, run in runs.items()}
    for name, size in (("no_newlines", 200_000_000), ("one_line", 300_000_000)):
        note = (f"peach-tasks: the line above was cut: {size - MAX_LINE_BYTES} bytes dropped after its first "
                f"{MAX_LINE_BYTES} (lines are kept up to {MAX_LINE_BYTES} bytes)")
        assert note in logs[name], logs[name][-2000:]
        kept = next(line for line in logs[name].splitlines() if line[STAMP_BYTES:STAMP_BYTES + 3] in ("xxx", "yyy"))
        assert len(kept) == STAMP_BYTES + MAX_LINE_BYTES
        assert runs[name]["log_bytes"] < 2 * MAX_LINE_BYTES and runs[name]["log_dropped_bytes"] == 0

    # Every line arrived, the head and the tail were kept, the middle counted as dropped.
    lines = runs["lines"]
    assert lines["log_bytes"] > 1_000_000 * (STAMP_BYTES + 100)
    assert lines["log_dropped_bytes"] > lines["log_bytes"] - HEAD_BYTES - TAIL_BYTES - MIB
    text = logs["lines"]
    head, marker, tail = text.partition("bytes of this log were dropped here")
    assert marker and f" {0:099d}\n" in head and tail.endswith(f" {9_999:099d}\n")
    assert len(text.encode()) <= HEAD_BYTES + TAIL_BYTES + 200


def test_a_block_sink_gets_the_same_lines_as_a_line_sink(tmp_path: Path) -> None:
    """The store's log writer takes a read's lines in one call; what it gets must be line for
    line what a plain sink gets: CR LF ends, bad bytes, lines cut within one read and across reads."""
    script = tmp_path / "task.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        out = sys.stdout.buffer
        def send(data, pause=0.2):
            out.write(data)
            out.flush()
            time.sleep(pause)  # the reader gets what came so far in one read
        send(b"one\\r\\ntwo\\n\\nbad \\xff\\xfe byte\\n" + b"a" * 100_000 + b"\\nafter a\\n")
        send(b"b" * 50_000)
        send(b"b" * 50_000 + b"\\nafter b\\n")
        send(b"c" * 70_000)
        send(b"c" * 70_000 + b"\\r\\nafter c\\n")
        send(b"d" * 70_000, pause=0)  # and the output ends inside a cut line
    """))

    def run(sink: Any) -> None:
        spec = ProcessSpec(argv=[sys.executable, str(script)], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                           cwd=tmp_path, timeout=30, grace=0.5, marker=f"test-{uuid.uuid4().hex}")
        assert run_process(spec, sink).exit_code == 0

    one_by_one: list[str] = []
    run(one_by_one.append)
    blocks: list[str] = []

    class BlockSink:
        takes_blocks = True

        def __call__(self, text: str) -> None:
            blocks.append(text)

    run(BlockSink())
    in_blocks = [line for block in blocks for line in block.split("\n")]
    assert [line[STAMP_BYTES:] for line in in_blocks] == [line[STAMP_BYTES:] for line in one_by_one]
    assert len(blocks) < len(in_blocks)

    def cut(kept: int, dropped: int) -> str:
        return (f"peach-tasks: the line above was cut: {dropped} bytes dropped after its first {kept} "
                f"(lines are kept up to {MAX_LINE_BYTES} bytes)")

    m = MAX_LINE_BYTES
    assert [line[STAMP_BYTES:] for line in one_by_one] == [
        "one", "two", "", "bad \ufffd\ufffd byte",
        "a" * m, cut(m, 100_000 - m), "after a",
        "b" * m, cut(m, 100_000 - m), "after b",
        "c" * m, cut(m, 140_001 - m), "after c",  # the CR before the newline counts as dropped
        "d" * m, cut(m, 70_000 - m),
    ]


# -- finding 5: errors and results are stored and served within bounds ---------------------

def test_nul_and_lone_surrogates_are_stored_on_every_database(database_url: str) -> None:
    """PostgreSQL's text refuses NUL, UTF-8 has no lone surrogates: either in a task's output or
    error made the end of its run fail to be stored, again and again (it stayed RUNNING)."""
    spec = TaskSpec(codops="odd", name="t", notebook="t.ipynb", method="main", executor=Executor.PYTHON)
    store = Store.open(database_url)
    try:
        store.register_tasks([TaskRegistration(spec, "v")])
        run_id = store.start_run(spec, "v", "c", "me")
        writer = store.log_writer(run_id)
        writer.write("2026-11-24T22:30:01.123Z NUL \x00 and lone \udcff")
        outcome = Outcome(RunStatus.FAILURE, error="ValueError: \x00 \udcff", result=["\udcff", "\x00"],
                          details={"traceback": "\x00 \udcff", "error_type": "ValueError"})
        store.finish_run(run_id, outcome, log=writer)
        run = store.run(run_id)
        assert run is not None and run["status"] == "FAILURE"
        assert (run["error"], run["result"], run["details"]) == (
            "ValueError: \ufffd ?", ["?", "\x00"], {"traceback": "\ufffd ?", "error_type": "ValueError"})
        assert store.log(run_id) == "2026-11-24T22:30:01.123Z NUL \ufffd and lone ?\n"
    finally:
        store.close()


FIND_RESULT_PATH = """
import json, os, sys
def result_path():
    # bootstrap.py's frame above main() holds the request: where the result file goes
    frame = sys._getframe(1)
    while "request" not in frame.f_locals:
        frame = frame.f_back
    return frame.f_locals["request"]["result_path"]
def write_result(data):
    with open(result_path(), "w") as handle:
        handle.write(data)
"""

RESULTS = {
    # a 100 MB message: the result file would be refused whole, error and all
    "huge_error": """
        def main():
            raise ValueError("x" * 100_000_000)
    """,
    # a 1 MB message: a result file under 4 MiB, its traceback once stored whole
    "big_error": """
        def main():
            raise ValueError("z" * 1_000_000)
    """,
    # its own result file, then an exit that skips bootstrap's own
    "forged_result": FIND_RESULT_PATH + """
def main():
    write_result(json.dumps({"ok": True, "result": "r" * 3_000_000, "result_note": "n" * 500_000}))
    os._exit(0)
""",
    "forged_error": FIND_RESULT_PATH + """
def main():
    write_result(json.dumps({"ok": False, "error": {"type": ["T"] * 100_000, "traceback": "t" * 2_000_000,
                                                    "last_line": {"line": "l" * 100_000}}}))
    os._exit(1)
""",
    "oversized_file": FIND_RESULT_PATH + """
def main():
    write_result(json.dumps({"ok": True, "result": "o" * (5 << 20)}))
    os._exit(0)
""",
    # what no row can hold (NUL on PostgreSQL) or no view can serve (a lone surrogate)
    "odd_error": """
        def main():
            print("a NUL \\x00 in the log")
            raise ValueError("NUL \\x00 and lone \\udcff")
    """,
    "odd_result": """
        def main():
            return {"lone": "\\udcff", "nul": "\\x00"}
    """,
}


def test_errors_results_and_details_are_stored_and_served_within_bounds(tmp_path: Path,
                                                                        open_scheduler: Any) -> None:
    scheduler, store = open_org(tmp_path, open_scheduler, "bounds", RESULTS)
    scheduler.make_loop("bounds").tick()
    runs = {name: store.runs("bounds", name, limit=1)[0] for name in RESULTS}
    logs = {name: store.log(run["id"]) or "" for name, run in runs.items()}

    for name, message, size in (("huge_error", "x", 100_000_000), ("big_error", "z", 1_000_000)):
        run = runs[name]
        assert run["status"] == "FAILURE", run["error"]
        where = f"{name}.ipynb cell 1 line 3: "  # the run's error says where in the notebook
        assert run["error"].startswith(f"{where}ValueError: {message * 100}") and "characters cut" in run["error"]
        assert len(run["error"]) <= MAX_ERROR_CHARS
        assert run["details"]["error_type"] == "ValueError"
        traceback = run["details"]["traceback"]
        assert traceback.startswith("Traceback (most recent call last):") and traceback.endswith(f"{message * 100}\n")
        assert 'in main' in traceback and len(traceback) <= MAX_TRACEBACK_CHARS
        assert f"the run keeps this error cut to {MAX_ERROR_CHARS} characters (it has {len(where) + size + 12})" in logs[name]

    forged = runs["forged_result"]
    assert forged["status"] == "SUCCESS" and forged["result"] is None
    assert forged["details"]["result_note"].startswith("n" * 100)
    assert len(forged["details"]["result_note"]) <= MAX_DETAIL_CHARS
    assert "the run's result was not kept: 3000002 bytes as JSON, more than 65536" in logs["forged_result"]
    assert f"details.result_note was cut to {MAX_DETAIL_CHARS} characters (it had 500000)" in logs["forged_result"]

    forged = runs["forged_error"]
    assert forged["status"] == "FAILURE" and forged["exit_code"] == 1
    assert forged["error"].startswith('{"line": "lll') and len(forged["error"]) <= MAX_ERROR_CHARS
    assert len(forged["details"]["error_type"]) <= MAX_DETAIL_CHARS
    assert len(forged["details"]["traceback"]) <= MAX_TRACEBACK_CHARS
    for what in ("the run's error was cut", "details.error_type was cut", "details.traceback was cut"):
        assert what in logs["forged_error"], what

    odd = runs["odd_error"]
    assert odd["status"] == "FAILURE" and odd["error"] == "odd_error.ipynb cell 1 line 4: ValueError: NUL \ufffd and lone ?"
    assert "a NUL \ufffd in the log" in logs["odd_error"]
    assert runs["odd_result"]["status"] == "SUCCESS" and runs["odd_result"]["result"] == {"lone": "?", "nul": "\x00"}

    oversized = runs["oversized_file"]
    assert oversized["status"] == "SUCCESS" and oversized["result"] is None
    assert (f"the result file was not read: not a regular file of at most {MAX_RESULT_FILE_BYTES} bytes"
            in logs["oversized_file"])

    # What the API serves of a run, and of a task's runs (the dashboard polls those), is bounded too.
    web = WebServer(scheduler.settings, store, host="127.0.0.1", port=0).start()
    try:
        for name, run in runs.items():
            one = httpx.get(f"{web.url}/api/runs/{run['id']}", timeout=30)
            assert one.status_code == 200 and len(one.content) < 256 << 10, (name, len(one.content))
            page = httpx.get(f"{web.url}/api/organisations/bounds/tasks/{name}/runs", timeout=30)
            assert page.status_code == 200 and len(page.content) < 256 << 10, (name, len(page.content))
    finally:
        web.stop()

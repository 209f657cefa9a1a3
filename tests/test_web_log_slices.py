"""Reading a bounded log by byte offsets: the kept head, the dropped middle, the rolling tail."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.store import Store
from peach_tasks.store.logs import LogWriter
from peach_tasks.store.store import TaskRegistration

SPEC = TaskSpec("default", "t", "t.ipynb", "m", executor=Executor.PYTHON, repo="algos", source_file="peach.yaml")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'p.db'}")
    s.register_tasks([TaskRegistration(SPEC, "v")])
    yield s
    s.close()


def read_all(store: Store, run_id: int, offset: int = 0, step: int = 1 << 20) -> tuple[str, int]:
    text = ""
    while True:
        piece = store.log_slice(run_id, offset, step)
        assert piece is not None and piece.offset == offset
        text += piece.text
        if piece.next_offset == offset:
            return text, offset
        offset = piece.next_offset


def test_slices_of_a_bounded_log_match_the_stored_log(store: Store) -> None:
    run_id = store.start_run(SPEC, "v", "c", "me")
    writer = LogWriter(store, run_id, head_bytes=100, tail_bytes=300)
    for i in range(200):
        writer.write(f"line {i:04d} é")  # a two-byte character: slices must not split it
        if i % 7 == 0:
            writer.flush()
    writer.close()
    store.finish_run(run_id, Outcome(RunStatus.SUCCESS))
    stored = store.log(run_id)
    assert stored and "bytes of this log were dropped here" in stored
    for step in (1, 13, 37, 1 << 20):
        text, end = read_all(store, run_id, step=step)
        assert text == stored, step
    whole = store.log_slice(run_id)
    assert whole is not None and whole.complete and whole.next_offset == whole.size == end
    written = sum(len(f"line {i:04d} é\n".encode()) for i in range(200))
    assert whole.size == written and 0 < whole.dropped < written
    tail = store.log_slice(run_id, tail=60)
    assert tail is not None and tail.offset == whole.size - 60 and stored.endswith(tail.text)


def test_a_reader_left_behind_by_the_rolling_tail_is_told_what_it_missed(store: Store) -> None:
    run_id = store.start_run(SPEC, "v", "c", "me")
    writer = LogWriter(store, run_id, head_bytes=50, tail_bytes=100)
    for i in range(20):
        writer.write(f"early {i:02d}")
        writer.flush()
    seen, offset = read_all(store, run_id)
    running = store.log_slice(run_id, offset)
    assert running is not None and running.status == "RUNNING" and not running.complete and running.text == ""
    for i in range(40):
        writer.write(f"late {i:02d}")
        writer.flush()
    writer.close()
    store.finish_run(run_id, Outcome(RunStatus.SUCCESS))
    piece = store.log_slice(run_id, offset)
    assert piece is not None and piece.complete
    size = piece.size
    kept_tail = (store.log(run_id) or "").split("to keep it bounded]\n")[-1]
    missed = size - len(kept_tail.encode()) - offset
    assert missed > 0
    assert piece.text == f"[peach-tasks: {missed} bytes of this log were dropped here to keep it bounded]\n" + kept_tail
    assert "early 00" in seen and "late 39" in piece.text and "late 00" not in piece.text

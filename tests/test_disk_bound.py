"""What a run may put on the scheduler's disk (``python.disk``): its run folder and its
trigger folder are the only folders of ``state_dir`` a sandboxed task can write, and the disk
they are on is the store's and every other organisation's. Left unbounded, one task could
fill it (the hostile pass of issue 12 listed it as left). ``disk_watch.py`` counts them while
the task runs and ends the run past the limit; these tests fill them in the real scheduler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_hardening import Project

from peach_tasks.executors.disk_watch import MAX_ENTRIES, DiskWatch
from peach_tasks.trees import remove_tree, tree_usage

# Writes 64 MiB of real data into its trigger folder, then never ends: only the watch can end
# it before the task's timeout (which would make it a TIMEOUT, not a FAILURE).
FILL_CELL = '''import os, time

def fill():
    path = os.path.join(os.environ["PEACH_TRIGGER_DIR"], "filler")
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for _ in range(64):
            out.write(chunk)
            out.flush()
    while True:
        time.sleep(1)
'''

# More files than a run ever makes, each empty, then waits the same way.
MANY_CELL = '''import os, time

def many():
    folder = os.path.join(os.environ["PEACH_TRIGGER_DIR"], "many")
    os.mkdir(folder)
    for index in range(%d):
        os.close(os.open(os.path.join(folder, str(index)), os.O_WRONLY | os.O_CREAT, 0o600))
    while True:
        time.sleep(1)
''' % (MAX_ENTRIES + 1000)

# A 10 GiB file that takes no disk (sparse), and a little real data: within the limit.
SPARSE_CELL = '''import os

def sparse():
    with open(os.path.join(os.environ["PEACH_TRIGGER_DIR"], "sparse"), "wb") as out:
        out.seek(10 << 30)
        out.write(b"end")
    with open(os.path.join(os.environ["PEACH_TRIGGER_DIR"], "small"), "wb") as out:
        out.write(os.urandom(1 << 20))
    return "sparse"
'''


# Data no folder names: a removed file still open, a nameless one (O_TMPFILE), a removed one
# still mapped (its descriptor closed). Each takes the disk as long as the run holds it.
HIDDEN_CELL = '''import mmap, os, time

def hidden():
    folder = os.environ["PEACH_TRIGGER_DIR"]
    how = os.environ.get("HOW") or open(os.path.join(os.getcwd(), "how.txt")).read().strip()
    chunk = os.urandom(1 << 20)
    if how == "tmpfile":
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
    else:
        path = os.path.join(folder, "hidden")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.unlink(path)
    for _ in range(64):
        os.write(fd, chunk)
    if how == "mapped":
        held = mmap.mmap(fd, 0)
        os.close(fd)
    while True:
        time.sleep(1)
'''


def run_once(tmp_path: Path, cell: str, method: str, files: dict[str, str] | None = None) -> dict:
    project = Project(tmp_path, cell, method, python={"disk": "16M"}, timeouts={"task": 120, "kill_grace": 1})
    for name, text in (files or {}).items():
        project.repo.write(name, text)
    if files:
        project.repo.commit()
    try:
        result = project("run-once", timeout=240)
        assert result.returncode in (0, 1), result.stderr
        [run] = project.runs()
        for root in ("runs", "trigger-requests"):  # what it wrote is gone with the run
            folder = project.state / root
            assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())
        return run
    finally:
        project.cleanup()


def test_a_run_that_fills_its_folders_past_the_limit_is_ended_while_it_runs(tmp_path: Path) -> None:
    run = run_once(tmp_path, FILL_CELL, "fill")
    assert run["status"] == "FAILURE", run  # not TIMEOUT: ended by the watch, not the clock
    assert "more than 16M" in run["error"] and "python.disk" in run["error"], run["error"]


@pytest.mark.parametrize("how", ["removed", "tmpfile", "mapped"])
def test_data_no_folder_names_counts_while_the_run_holds_it(tmp_path: Path, how: str) -> None:
    run = run_once(tmp_path, HIDDEN_CELL, "hidden", {"how.txt": how})
    assert run["status"] == "FAILURE", run  # not TIMEOUT
    assert "more than 16M" in run["error"], run["error"]


# Ignores SIGTERM and goes on writing, 1 MiB every 10 ms, saying each one, up to 500 MiB.
DEAF_CELL = '''import os, signal, time

def deaf():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    chunk = os.urandom(1 << 20)
    with open(os.path.join(os.environ["PEACH_TRIGGER_DIR"], "filler"), "wb") as out:
        for index in range(500):
            out.write(chunk)
            out.flush()
            print("MiB", index + 1, flush=True)
            time.sleep(0.01)
    while True:
        time.sleep(1)
'''


def test_a_run_past_its_disk_bound_gets_no_grace_to_write_more(tmp_path: Path) -> None:
    """A timeout gives the task kill_grace seconds after SIGTERM; one writing past its disk
    bound could go on writing through them (here 30 s, 3 GB at this task's pace)."""
    project = Project(tmp_path, DEAF_CELL, "deaf", python={"disk": "16M"}, timeouts={"task": 120, "kill_grace": 30})
    try:
        assert project("run-once", timeout=240).returncode in (0, 1)
        [run] = project.runs()
        store = project.store()
        try:
            written = [line for line in store.log(run["id"]).splitlines() if " MiB " in line]
        finally:
            store.close()
    finally:
        project.cleanup()
    assert run["status"] == "FAILURE" and "more than 16M" in run["error"], run
    assert 16 <= len(written) < 250, len(written)  # killed at once, not 30 s later (500 MiB)


def test_a_run_that_makes_too_many_files_is_ended_while_it_runs(tmp_path: Path) -> None:
    run = run_once(tmp_path, MANY_CELL, "many")
    assert run["status"] == "FAILURE", run
    assert f"more than {MAX_ENTRIES:,} files and folders" in run["error"], run["error"]


def test_a_sparse_file_counts_what_it_takes_on_disk(tmp_path: Path) -> None:
    run = run_once(tmp_path, SPARSE_CELL, "sparse")
    assert (run["status"], run["result"]) == ("SUCCESS", "sparse"), run


def test_tree_usage_counts_any_depth_follows_no_link_and_stops_at_its_bound(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(32 << 20))  # reached only through the link
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    fd = os.open(root, os.O_RDONLY)
    for _ in range(3000):  # deeper than a path the system takes
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = below
    with os.fdopen(os.open("data", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as out:
        out.write(os.urandom(1 << 20))
    os.close(fd)
    used, entries = tree_usage(root, 10_000)
    assert entries == 3002  # the link, 3,000 folders, the file at the bottom
    assert (1 << 20) <= used < (32 << 20)  # the bottom file (and the folders' own blocks), not the linked one
    assert tree_usage(root, 100)[1] == 101  # stopped one past its bound
    assert tree_usage(tmp_path / "missing", 100) == (0, 0)
    assert remove_tree(root)  # pytest's own clean-up of old temporary folders recurses


def test_the_watch_adds_its_folders_up(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "data").write_bytes(os.urandom(3 << 20))
    assert not DiskWatch((first,), 4 << 20).over()
    watch = DiskWatch((first, second), 4 << 20)
    assert watch.over() and "more than 4M" in (watch.reason or "")


def test_a_tree_moved_while_walked_is_walked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task renaming its folders as they are walked cut the walk short (the hostile pass's
    guess); the walk starts again, a few times, and keeps the most it counted."""
    from peach_tasks import trees

    walks = iter([(10, 5, False), (3, 2, False), (100, 50, True), (999, 999, True)])
    monkeypatch.setattr(trees, "_walk_usage", lambda top, most: next(walks))
    assert trees.tree_usage("/anywhere", 1000) == (100, 50)
    walks = iter([(7, 1, False)] * trees._USAGE_WALKS + [(999, 999, True)])
    assert trees.tree_usage("/anywhere", 1000) == (7, 1)  # a bounded number of walks

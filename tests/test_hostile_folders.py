"""Folders a hostile task or repository fills (found by the hostile pass of issue 12): a folder
5,000 levels deep, a million files, a folder made unreadable. The scheduler's clean-up used
``shutil.rmtree``, whose recursion failed past about a thousand levels with an error
``ignore_errors`` does not catch: the run was lost as an internal error, what it wrote stayed on
the host's disk, and a leftover of a sandbox started ahead stopped every later start of the
scheduler. ``peach_tasks.trees`` goes level by level with a loop instead; these tests hold it
to that, alone and in the real scheduler."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_hardening import Project

from peach_tasks.trees import remove_tree, walk_tree


def deep(root: Path, levels: int, every: int = 1000) -> None:
    """``levels`` folders ``d`` in one another under ``root``, made relative to the one above
    (the whole path is longer than the system takes), with a file every ``every`` levels."""
    fd = os.open(root, os.O_RDONLY)
    for level in range(levels):
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = below
        if level % every == 0:
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    os.symlink("/etc", "link-out", dir_fd=fd)
    os.close(fd)


def test_remove_tree_takes_any_depth_many_files_and_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    root = tmp_path / "root"
    root.mkdir()
    deep(root, 5000)
    many = root / "many"
    many.mkdir()
    for index in range(20_000):
        (many / str(index)).touch()
    (root / "to-outside").symlink_to(outside)
    closed = root / "closed"
    closed.mkdir()
    (closed / "inside").touch()
    closed.chmod(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert remove_tree(root) is True
    assert not root.exists() and (outside / "keep.txt").read_text() == "mine"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: no listing held
    assert remove_tree(root) is True  # already gone
    file = tmp_path / "file"
    file.write_text("x")
    assert remove_tree(file) is True and not file.exists()


def test_walk_tree_walks_a_checkout_deeper_than_pythons_recursion(tmp_path: Path) -> None:
    path = tmp_path
    for _ in range(1500):
        path = path / "d"
        path.mkdir()
    (path / "bottom.txt").write_text("x")
    (tmp_path / "link").symlink_to("/etc")
    walked = list(walk_tree(tmp_path))
    assert len(walked) == 1501
    assert walked[0] == (str(tmp_path), ["d"], ["link"])  # a linked folder is listed, not entered
    assert walked[-1][2] == ["bottom.txt"]
    assert remove_tree(tmp_path / "d")  # pytest's own clean-up of old temporary folders recurses


DEEP_TASK = '''import os

def dig():
    triggers = os.environ["PEACH_TRIGGER_DIR"]
    for base in (triggers, os.getcwd()):
        fd = os.open(base, os.O_RDONLY)
        for level in range(5000):
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(os.open("data", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        os.close(fd)
    return "dug"
'''


def test_a_run_that_digs_5000_levels_succeeds_and_leaves_nothing(tmp_path: Path) -> None:
    """In the real scheduler (its sandbox when the host has one): the run is the task's own
    success, not an internal error, and its run and trigger folders are gone after it."""
    project = Project(tmp_path, DEEP_TASK, "dig")
    try:
        result = project("run-once")
        assert result.returncode == 0, result.stderr
        [run] = project.runs()
        assert (run["status"], run["result"]) == ("SUCCESS", "dug"), run
        for root in ("runs", "trigger-requests"):
            folder = project.state / root
            assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())
    finally:
        project.cleanup()


def test_a_deep_leftover_of_a_sandbox_started_ahead_no_longer_stops_the_next_start(tmp_path: Path) -> None:
    """A scheduler that died left ``runs/warm-*`` and ``trigger-requests/warm-*`` behind; one
    5,000 levels deep made every later ``serve`` and ``run-once`` fail at start."""
    project = Project(tmp_path)
    try:
        assert project("run-once").returncode == 0
        leftovers = [project.state / "runs" / "warm-dead", project.state / "trigger-requests" / "warm-dead"]
        for folder in leftovers:
            folder.mkdir(parents=True, exist_ok=True)
            deep(folder, 5000)
        result: subprocess.CompletedProcess[str] = project("run-once")
        assert result.returncode == 0, result.stderr
        assert "RecursionError" not in result.stderr + result.stdout
        assert not any(folder.exists() for folder in leftovers)
        assert [run["status"] for run in project.runs()] == ["SUCCESS", "SUCCESS"]
    finally:
        project.cleanup()


def test_a_new_state_dir_is_the_schedulers_users_only_and_runs_still_work(tmp_path: Path) -> None:
    """The hostile pass read the SQLite store, every checkout and scheduler.yaml as the local
    PostgreSQL's user (state_dir was 0755, peach.db 0644). A state_dir the scheduler makes is
    0700: no other user of the host passes it, while runs (bound into their sandbox) still work."""
    project = Project(tmp_path)
    try:
        assert project("run-once").returncode == 0
        assert (project.state.stat().st_mode & 0o777) == 0o700
        assert [run["status"] for run in project.runs()] == ["SUCCESS"]
    finally:
        project.cleanup()


def test_a_wide_folder_is_read_a_batch_of_folders_at_a_time_not_once_per_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-check of the hostile pass: 30,000 folders in a run folder took six minutes to
    remove (the folder was read again after each of them), past the run's timeout. Counted
    here as entries read, which grew with the square of the folder's size."""
    from peach_tasks import trees

    wide = tmp_path / "wide"
    wide.mkdir()
    for index in range(20_000):
        (wide / f"d{index:06d}").mkdir()
    read = [0]
    scandir = os.scandir

    def counting(fd: int) -> Any:
        class Counted:
            def __init__(self) -> None:
                self.inner = scandir(fd)

            def __enter__(self) -> Any:
                self.inner.__enter__()
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.__exit__(*exc)

            def __iter__(self) -> Any:
                for entry in self.inner:
                    read[0] += 1
                    yield entry
        return Counted()

    monkeypatch.setattr(trees.os, "scandir", counting)
    assert remove_tree(wide) and not wide.exists()
    assert read[0] < 5 * 20_000, read[0]  # once per folder read would be about 200 million

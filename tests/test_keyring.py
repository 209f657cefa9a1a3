"""The kernel's keyrings are refused in every sandbox (``seccomp_filter.py``). All
organisations' tasks run as one uid, and the kernel keeps one user keyring per uid outside any
namespace: the third hostile pass of issue 12 read and rewrote one organisation's key from
another's task, and filled the uid's quota for all. Tried as a task in the real scheduler."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_hardening import Project

from peach_tasks.executors.seccomp_filter import REFUSED, keyring_filter

KEYRING_CELL = '''import ctypes, os, platform

def keys():
    libc = ctypes.CDLL(None, use_errno=True)
    numbers = {"x86_64": (248, 250), "aarch64": (217, 219)}[platform.machine()]
    said = []
    # add_key("user", "k", "secret", 6, KEY_SPEC_USER_KEYRING), then keyctl(KEYCTL_GET_KEYRING_ID, ...)
    for number, args in zip(numbers, ((b"user", b"k", b"secret", 6, -4), (0, -4, 0, 0, 0))):
        result = libc.syscall(number, *args)
        said.append(os.strerror(ctypes.get_errno()) if result < 0 else "allowed")
    return said
'''


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="no bubblewrap: runs are not sandboxed")
def test_a_task_cannot_use_the_kernels_keyrings(tmp_path: Path) -> None:
    project = Project(tmp_path, KEYRING_CELL, "keys")
    try:
        assert project("run-once").returncode == 0
        [run] = project.runs()
        assert (run["status"], run["result"]) == ("SUCCESS", ["Operation not permitted"] * 2), run
    finally:
        project.cleanup()


def test_the_program_refuses_each_architectures_numbers_and_allows_the_rest() -> None:
    program = keyring_filter()
    assert len(program) % 8 == 0  # struct sock_filter: 8 bytes each
    refused = sum(len(numbers) for numbers in REFUSED.values())
    assert len(program) // 8 == refused + 4 * len(REFUSED) + 2  # per arch: load, check, load, allow

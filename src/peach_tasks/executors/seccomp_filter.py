"""The system calls no task may make: the kernel's keyrings, which are not namespaced.

Every organisation's tasks run as one user (uid 65534 under a root scheduler), and the kernel
keeps one user keyring per uid, outside any sandbox, for as long as the host runs. Through it
one organisation's task read and rewrote a key another organisation's task had stored, and
filled the uid's quota so that the others could store none (the third hostile pass of
issue 12). Container runtimes forbid these calls for that reason; so do we: ``add_key``,
``request_key`` and ``keyctl`` fail with EPERM in every sandbox (bubblewrap's ``--seccomp``).

The program is classic BPF, built here (no library needed): for each architecture a task's
process may run as, its numbers of the three calls are refused; everything else is allowed.
"""

from __future__ import annotations

import errno
import os
import struct

# <linux/audit.h>: the architectures whose numbers we know.
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003  # 32-bit programs on an x86_64 host
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_BIT = 0x40000000  # x32 programs use x86_64's numbers with this bit

# add_key, request_key, keyctl
REFUSED: dict[int, tuple[int, ...]] = {
    AUDIT_ARCH_X86_64: (248, 249, 250, X32_BIT | 248, X32_BIT | 249, X32_BIT | 250),
    AUDIT_ARCH_I386: (286, 287, 288),
    AUDIT_ARCH_AARCH64: (217, 218, 219),
}

_LOAD_WORD = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
_NR, _ARCH = 0, 4  # offsets in struct seccomp_data
_ALLOW = 0x7FFF0000  # SECCOMP_RET_ALLOW
_FAIL = 0x00050000 | errno.EPERM  # SECCOMP_RET_ERRNO


def keyring_filter() -> bytes:
    """The BPF program (struct sock_filter[]) refusing ``REFUSED``."""
    body: list[tuple[int, int, int, int]] = []  # code, jump if true, jump if false, k
    fail_jumps: list[int] = []  # instructions whose "true" jump goes to the final refusal
    for arch, numbers in REFUSED.items():
        body.append((_LOAD_WORD, 0, 0, _ARCH))
        # Another architecture: over this block (its load, its numbers and its allow).
        body.append((_JUMP_IF_EQUAL, 0, len(numbers) + 2, arch))
        body.append((_LOAD_WORD, 0, 0, _NR))
        for number in numbers:
            fail_jumps.append(len(body))
            body.append((_JUMP_IF_EQUAL, 0, 0, number))
        body.append((_RETURN, 0, 0, _ALLOW))
    body.append((_RETURN, 0, 0, _ALLOW))  # an architecture not listed
    fail = len(body)
    body.append((_RETURN, 0, 0, _FAIL))
    for index in fail_jumps:
        code, _, false, k = body[index]
        body[index] = (code, fail - index - 1, false, k)
    assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in body)
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in body)


_held: int | None = None  # the memfd holding the program, open for this process's life


def filter_path() -> str | None:
    """A path the sandbox's launcher opens for bubblewrap's ``--seccomp``: a memory file of
    this process, read afresh by each opening (nothing is left on disk). None where the
    system has no memfd."""
    global _held
    if _held is None:
        try:
            fd = os.memfd_create("peach-seccomp")
        except (AttributeError, OSError):
            return None
        program = keyring_filter()
        os.write(fd, program)
        _held = fd
    return f"/proc/{os.getpid()}/fd/{_held}"

"""Reading a run's outputs (what its task showed) from the folder the task wrote them to.

The task process writes one JSON file per output as it happens (``displays.py``): so an
executor reads the folder when the process has ended, whatever the end (success, failure,
timeout, cancel), and what was shown before it is kept. The task owns that folder, so this
reader trusts nothing in it: the folder itself must not be a link, each file is read
through ``untrusted_files`` (regular, bounded, no links), at most ``max_count`` outputs and
``max_bytes`` in all are kept, only known mime types are, and what was cut (here, or already
in the task process) is said in a last output of kind ``note`` and in the run's log.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import RunOutput
from .untrusted_files import open_task_folder, read_task_file

if TYPE_CHECKING:
    from ..settings import Settings

OUTPUTS_DIR = "outputs"
DEFAULT_MAX_COUNT = 100
DEFAULT_MAX_BYTES = 10 << 20
MIME_TYPES = frozenset(("text/html", "image/png", "image/jpeg", "image/gif", "image/svg+xml", "text/markdown",
                        "application/json", "text/latex", "text/plain"))
BINARY = frozenset(("image/png", "image/jpeg", "image/gif"))
KINDS = frozenset(("display", "figure"))
MAX_TEXT_CHARS = 2000
MAX_LISTED = 100_000  # names looked at in the folder: a task may have made millions
_NAME = re.compile(r"^[0-9]{6}\.json$")


@dataclass(frozen=True)
class OutputBounds:
    max_count: int = DEFAULT_MAX_COUNT
    max_bytes: int = DEFAULT_MAX_BYTES


def output_bounds(settings: Settings) -> OutputBounds:
    """The bounds ``outputs:`` in scheduler.yaml sets."""
    return OutputBounds(settings.outputs.max_count, settings.outputs.max_bytes_value)


def read_outputs(folder: Path, bounds: OutputBounds,
                 note: Callable[[str], None] | None = None) -> tuple[RunOutput, ...]:
    """The outputs in ``folder``, in the order shown, within ``bounds``; ``note`` hears what was cut."""
    fd = open_task_folder(folder)
    if fd is None:
        if note is not None and os.path.lexists(folder):
            note(f"the run's outputs were not read: {folder.name} is not a folder")
        return ()
    try:
        names, more = _listing(fd)
        kept: list[RunOutput] = []
        used = 0
        skipped: list[str] = []
        over_count = over_bytes = 0
        for name in names:
            if len(kept) >= bounds.max_count:
                over_count += 1
                continue
            output, size, why = _read_one(fd, name, bounds.max_bytes - used, len(kept) + 1)
            if output is None:
                if why == "bytes":
                    over_bytes += 1
                else:
                    skipped.append(f"{name} ({why})")
                continue
            kept.append(output)
            used += size
        dropped_in_task = _dropped_in_task(fd)
    finally:
        os.close(fd)
    message = _cut_message(bounds, over_count + more, over_bytes, dropped_in_task, skipped)
    if message:
        if note is not None:
            note(message)
        kept.append(RunOutput(len(kept) + 1, "note", "text/plain", message.encode("utf-8"), message))
    return tuple(kept)


def _listing(fd: int) -> tuple[list[str], int]:
    names: list[str] = []
    more = 0
    with os.scandir(fd) as entries:
        for index, entry in enumerate(entries):
            if index >= MAX_LISTED:
                more += 1  # at least one more; not counted further
                break
            if _NAME.match(entry.name):
                names.append(entry.name)
    names.sort()
    return names, more


def _read_one(fd: int, name: str, room: int, seq: int) -> tuple[RunOutput | None, int, str]:
    """One output file: (the output, its size, "") or (None, 0, why it was not kept)."""
    if room <= 0:
        return None, 0, "bytes"
    # As JSON, base64 grows data by a third; the text/plain and the keys add a little.
    raw = read_task_file(name, room * 4 // 3 + 4 * MAX_TEXT_CHARS + 1024, dir_fd=fd)
    if raw is None:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None, 0, "gone"
        import stat

        return None, 0, ("bytes" if stat.S_ISREG(info.st_mode) else "not a regular file")
    try:
        record = json.loads(raw)
        mime, kind = record["mime"], record.get("kind", "display")
        if mime not in MIME_TYPES or kind not in KINDS or not isinstance(record["data"], str):
            return None, 0, "not an output"
        if mime in BINARY:
            data = base64.b64decode(record["data"], validate=True)
        else:
            data = record["data"].encode("utf-8", errors="replace")
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        return None, 0, "not an output"
    if len(data) > room:
        return None, 0, "bytes"
    text = record.get("text")
    text = text[:MAX_TEXT_CHARS].replace("\x00", "\ufffd") if isinstance(text, str) else None
    if text is not None:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return RunOutput(seq, kind, mime, data, text), len(data), ""


def _dropped_in_task(fd: int) -> tuple[int, int]:
    raw = read_task_file("dropped.json", 4096, dir_fd=fd)
    try:
        data = json.loads(raw) if raw is not None else {}
        count, size = int(data.get("count", 0)), int(data.get("bytes", 0))
    except (ValueError, TypeError, AttributeError):
        return 0, 0
    return max(min(count, 10**12), 0), max(min(size, 10**18), 0)


def _cut_message(bounds: OutputBounds, over_count: int, over_bytes: int, dropped: tuple[int, int],
                 skipped: list[str]) -> str:
    parts = []
    in_task, in_task_bytes = dropped
    if in_task:
        parts.append(f"{in_task} output{'s' if in_task != 1 else ''} ({in_task_bytes} bytes) the task showed "
                     f"beyond the run's bounds")
    if over_count:
        parts.append(f"{over_count} output file{'s' if over_count != 1 else ''} beyond the first {bounds.max_count}")
    if over_bytes:
        parts.append(f"{over_bytes} output{'s' if over_bytes != 1 else ''} beyond {bounds.max_bytes} bytes in all")
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        parts.append(f"unreadable files: {shown}")
    if not parts:
        return ""
    return (f"not kept: {'; '.join(parts)}. A run keeps at most {bounds.max_count} outputs and "
            f"{bounds.max_bytes} bytes of them (outputs.max_count and outputs.max_bytes in scheduler.yaml).")

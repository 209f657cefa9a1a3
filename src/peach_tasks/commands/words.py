"""How the command line words things: plurals, cut cells, close names, the demo's settings.

Small pure helpers kept out of ``cli.py`` so that each is tested on its own and the
commands stay short.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable

ELLIPSIS = "…"
CELL_WIDTH = 100  # a table cell longer than this is cut, ending in ELLIPSIS
DEMO_MARKER = "# peach-tasks demo settings"  # the first line of the demo's scheduler.yaml

# Words whose plural is not word + "s".
_PLURALS = {"was": "were", "is": "are", "repository": "repositories"}


def plural(count: int, word: str) -> str:
    """``"1 problem"``, ``"2 problems"``, ``"0 tasks"``."""
    return f"{count} {word if count == 1 else _PLURALS.get(word, word + 's')}"


def cut(text: str, width: int = CELL_WIDTH) -> str:
    """``text`` on one line, at most ``width`` characters; a cut one ends in an ellipsis.
    Control characters a task put in it are shown, not obeyed (``visible``)."""
    line = visible(text.replace("\n", " "))
    return line if len(line) <= width else line[:width - 1] + ELLIPSIS


# C0 and C1 control characters but tab and newline: ESC starts a terminal's sequences (a
# title, the clipboard through OSC 52, colours), CR rewrites the line it is on, so a task's
# text could forge a scheduler's line on an operator's terminal (found by the hostile pass).
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]}


def visible(text: str) -> str:
    """``text`` with its control characters written out (``\\x1b``), tabs and newlines kept."""
    return text.translate(_CONTROLS)


def closest(wanted: str, known: Iterable[str], count: int = 3) -> list[str]:
    """The known names nearest ``wanted`` (by spelling, and by the part after a ``/``)."""
    names = sorted(set(known))
    found = difflib.get_close_matches(wanted, names, n=count, cutoff=0.6)
    if "/" in wanted:  # 'default/sumary' should find 'chrts/summary' too
        tail = wanted.split("/", 1)[1]
        tails: dict[str, list[str]] = {}
        for name in names:
            tails.setdefault(name.split("/", 1)[-1], []).append(name)
        for near in difflib.get_close_matches(tail, list(tails), n=count, cutoff=0.6):
            found += [name for name in tails[near] if name not in found]
    return found[:count]


def did_you_mean(wanted: str, known: Iterable[str], listing: str) -> str:
    """A sentence for an unknown name: the closest known ones, or the command listing them all."""
    near = closest(wanted, known)
    if near:
        return "did you mean " + " or ".join(f"'{n}'" for n in near) + "?"
    return f"'{listing}' lists them"


def demo_settings_below(folder: Path) -> tuple[list[Path], list[Path]]:
    """The ``scheduler.yaml`` files one folder below ``folder``: the demo's, and any others
    (relative to ``folder``).

    ``peach-tasks demo`` makes ``./peach-demo/scheduler.yaml``; a user then types
    ``peach-tasks tasks`` in the folder where they started it.
    """
    demos: list[Path] = []
    others: list[Path] = []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return demos, others
    for child in children[:200]:  # a folder with thousands of entries is not searched further
        candidate = child / "scheduler.yaml"
        try:
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                first = handle.readline()
        except OSError:
            continue
        shown = Path(child.name, "scheduler.yaml")  # as the user would type it, from ``folder``
        (demos if first.startswith(DEMO_MARKER) else others).append(shown)
    return demos, others

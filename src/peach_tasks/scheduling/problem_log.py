"""``serve``'s console says when a problem appears or clears, one line each.

A broken definition committed while ``serve`` runs is stored by the next sync and shown
by ``sync``, ``tasks`` and the dashboard; the person watching ``serve`` should see it
too, once, and see it go when it is fixed.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

log = logging.getLogger("peach_tasks.problems")

MAX_LINE = 2000  # a long build error stays one readable line
Key = tuple[str, str, str, int, str]


def _key(problem: dict[str, Any]) -> Key:
    return (problem["kind"], problem["scope"], problem["file"] or "", problem["line"] or 0, problem["message"])


def one_line(problem: dict[str, Any]) -> str:
    """``kind scope: FILE:LINE: message`` on one line."""
    where = problem["file"] and (f"{problem['file']}:{problem['line']}" if problem["line"] else problem["file"])
    text = " | ".join(part.strip() for part in problem["message"].splitlines() if part.strip())
    line = f"{problem['kind']} problem in {problem['scope']}: " + (f"{where}: {text}" if where else text)
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 1] + "…"


class ProblemLog:
    """Logs the difference between the problems of one sync and the next.

    The first report logs every problem there is (the console was empty until now);
    later ones log a WARNING per new problem and an INFO per cleared one.
    """

    def __init__(self) -> None:
        self._known: dict[Key, dict[str, Any]] | None = None

    def report(self, problems: Iterable[dict[str, Any]]) -> None:
        current = {_key(p): p for p in problems}
        before = self._known or {}
        for key, problem in current.items():
            if key not in before:
                log.warning("%s", one_line(problem))
        if self._known is not None:
            for key, problem in before.items():
                if key not in current:
                    log.info("cleared: %s", one_line(problem))
        self._known = current

"""Durations as people write them in YAML: ``30s``, ``2h``, ``1h30m``, ``90`` (seconds).

Shared by the task definitions (``retry_delay``) and ``scheduler.yaml`` (``retention``), so
every duration in either file reads the same way.
"""

from __future__ import annotations

import math
import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+")


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a text such as ``"30s"``, ``"2h"``, ``"1h30m"``.

    Raises ``ValueError`` with a sentence saying what to write instead.
    """
    if isinstance(value, bool):  # YAML's yes/no is no duration
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m or 2h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif _WHOLE.fullmatch(text):
            seconds = sum(float(number) * UNITS[unit] for number, unit in _PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 2h or 1h30m (units: "
                             f"{', '.join(UNITS)})")
    else:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m or 2h")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration; it must be zero or more, e.g. 30s")
    return seconds


def format_duration(seconds: float) -> str:
    """The short form people write back: ``90`` -> ``1m30s``, ``0.5`` -> ``500ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000):d}ms"
    out, left = [], round(seconds)
    for unit in ("d", "h", "m", "s"):
        size = int(UNITS[unit])
        if left >= size:
            out.append(f"{left // size}{unit}")
            left %= size
    return "".join(out) or "0s"

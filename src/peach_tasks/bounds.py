"""How much of a run's outcome is kept: everything a task can put into its run's row is bounded.

A task controls its error message, its traceback, its result, and, through a result file it
may write itself, every value an executor copies from that file into ``details``. Without a
bound, one run could store a 100 MB message, which every view of the run (the API, the
dashboard polling a task's runs) would then serve again and again.

``bound_outcome`` cuts an ``Outcome`` to these limits and says what it cut. It also replaces what
no row can hold or no view can serve: NUL characters (PostgreSQL's text refuses them) and lone
surrogates (no UTF-8 for them), which would otherwise make the run's end fail to be stored, again
and again, or its views fail to answer. The store applies it once, before writing the row
(``Store.finish_run``), for every executor and path, and writes its notes to the run's log. An
outcome within the limits passes unchanged, without notes. ``bootstrap.py`` (standard library only)
keeps its own copies of ``MAX_ERROR_CHARS`` and ``MAX_TRACEBACK_CHARS``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .model import Outcome

MAX_ERROR_CHARS = 4 * 1024  # the run's error (one line: "Type: message")
MAX_TRACEBACK_CHARS = 64 * 1024  # details["traceback"]: its start and its end are kept
MAX_RESULT_BYTES = 64 * 1024  # the returned value, as JSON; a larger one is not kept at all
MAX_DETAIL_CHARS = 4 * 1024  # any other value in details (as JSON unless a string)
MAX_DETAILS_BYTES = 256 * 1024  # all of details as JSON: a last guard
_LONG_DETAILS = {"traceback": MAX_TRACEBACK_CHARS}


def cut_text(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` if it has at most ``limit`` characters; else its start (and with ``keep_end``
    its end too) around a marker saying how many characters were cut, ``limit`` in all."""
    if len(text) <= limit:
        return text
    room = max(limit - len(_marker(len(text))), 0)  # the longest marker this text can need
    marker = _marker(len(text) - room)
    if keep_end:
        head = room // 2
        return text[:head] + marker + text[len(text) - (room - head):]
    return text[:room] + marker


def _marker(cut: int) -> str:
    return f" [... {cut} characters cut by peach-tasks ...] "


def bound_outcome(outcome: Outcome) -> tuple[Outcome, list[str]]:
    """``outcome`` within the limits above, and one note per value that was cut or dropped."""
    notes: list[str] = []
    changes: dict[str, Any] = {}

    error = outcome.error
    if error is not None:
        text = error if isinstance(error, str) else _as_text(error)
        if len(text) > MAX_ERROR_CHARS:
            notes.append(f"the run's error was cut to {MAX_ERROR_CHARS} characters (it had {len(text)})")
        text = clean_text(cut_text(text, MAX_ERROR_CHARS))
        if text is not error:
            changes["error"] = text

    details = dict(outcome.details or {})
    changed = False
    if outcome.result is not None:
        try:
            size = len(json.dumps(outcome.result, allow_nan=False).encode("utf-8"))
        except (TypeError, ValueError, RecursionError):
            size = None
        if size is None or size > MAX_RESULT_BYTES:
            changes["result"] = None
            why = "it is not JSON" if size is None else f"{size} bytes as JSON, more than {MAX_RESULT_BYTES}"
            details.setdefault("result_note", "not JSON-serialisable" if size is None else f"too large: {size} bytes")
            changed = True
            notes.append(f"the run's result was not kept: {why}")
        else:
            result = _clean_json(outcome.result)
            if result is not outcome.result:
                changes["result"] = result

    bounded_details: dict[str, Any] = {}
    for key, value in details.items():
        name = str(key)[:200]
        changed = changed or name != key
        limit = _LONG_DETAILS.get(name, MAX_DETAIL_CHARS)
        if value is None or isinstance(value, (bool, int, float)):
            bounded_details[name] = value
            continue
        text = value if isinstance(value, str) else _as_text(value)
        if len(text) > limit:
            bounded_details[name] = clean_text(cut_text(text, limit, keep_end=name in _LONG_DETAILS))
            changed = True
            notes.append(f"details.{name} was cut to {limit} characters (it had {len(text)})")
        else:
            bounded_details[name] = clean_text(value) if isinstance(value, str) else _clean_json(value)
            changed = changed or bounded_details[name] is not value
    if len(json.dumps(bounded_details, default=str).encode("utf-8")) > MAX_DETAILS_BYTES:
        bounded_details = {"details_note": f"dropped: more than {MAX_DETAILS_BYTES} bytes as JSON"}
        notes.append(f"the run's details were dropped: more than {MAX_DETAILS_BYTES} bytes as JSON")
        changed = True
    if changed:
        changes["details"] = bounded_details
    if not changes:
        return outcome, notes
    return dataclasses.replace(outcome, **changes), notes


def clean_text(text: str) -> str:
    """``text`` (the same object when there is nothing to do) without NUL characters and lone
    surrogates: each becomes U+FFFD or "?"."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def _clean_json(value: Any) -> Any:
    """A JSON value (the same object when there is nothing to do) whose strings hold no lone
    surrogates. (NUL characters are stored and served escaped within JSON.)"""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        return value
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=False, default=str)
        return json.loads(text.encode("utf-8", errors="replace"))
    except (TypeError, ValueError, RecursionError):
        return value


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        return f"<{type(value).__name__}>"

"""Text a repository gave, made storable: what no row can hold must never fail a sync.

A definition file, a notebook and a repository's names are written by untrusted people, and
they reach the store in the problems of a sync and the registry of tasks, written in one
transaction for all repositories. A NUL character (PostgreSQL's text refuses it), a lone
surrogate (no UTF-8 for it: both databases refuse it) or a value
longer than its column (PostgreSQL refuses it; SQLite does not check) made that transaction
fail: one organisation's repository stopped every organisation's sync, and ``serve`` from
starting. The definitions refuse such names with a problem (``definition_tasks.py``); this is
the last guard, for every value, applied where the rows are written.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

MAX_TEXT_CHARS = 64 * 1024  # a problem's message or path: far more than any a person reads


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL, and lone surrogates (no UTF-8 for them)


def fit_row(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every string fit for ``table``'s column: NUL and lone surrogates (a
    file name that is not UTF-8, an escape in YAML) written as U+FFFD, and cut to the
    column's length (``MAX_TEXT_CHARS`` for an unbounded text)."""
    fitted = dict(values)
    for name, value in values.items():
        if isinstance(value, str):
            column = table.columns.get(name)
            limit = getattr(column.type, "length", None) if column is not None else None
            fitted[name] = _UNSTORABLE.sub("\ufffd", value)[:limit or MAX_TEXT_CHARS]
    return fitted

"""A run's outputs in the store: written with the run's end, read by the views.

They are written in the transaction that ends the run (``Store.finish_run``), so a run
that has ended has all of its outputs or none. The executors bound them when they read
them from the task (``executors/run_outputs.py``); ``bound_outputs`` applies the same
kind of bound once more here, the last line of defence for every executor and path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ..model import RunOutput
from .schema import run_outputs

MAX_OUTPUTS = 10_000  # the settings allow no more per run
MAX_OUTPUT_BYTES = 256 << 20
MAX_TEXT_CHARS = 2000


def bound_outputs(outputs: Sequence[RunOutput]) -> list[RunOutput]:
    kept: list[RunOutput] = []
    used = 0
    for output in outputs[:MAX_OUTPUTS]:
        if used + len(output.data) > MAX_OUTPUT_BYTES:
            break
        used += len(output.data)
        kept.append(output)
    return kept


def insert_outputs(conn: sa.Connection, run_id: int, outputs: Sequence[RunOutput]) -> None:
    rows = [{"run_id": run_id, "seq": index, "kind": o.kind[:16], "mime_type": o.mime_type[:100],
             "size_bytes": len(o.data), "data": o.data,
             "text": None if o.text is None else o.text[:MAX_TEXT_CHARS].replace("\x00", "\ufffd")}
            for index, o in enumerate(bound_outputs(outputs), start=1)]
    if rows:
        conn.execute(run_outputs.insert(), rows)


def list_outputs(conn: sa.Connection, run_id: int) -> list[dict[str, Any]]:
    """The run's outputs in order, without their data."""
    query = (sa.select(run_outputs.c.seq, run_outputs.c.kind, run_outputs.c.mime_type, run_outputs.c.size_bytes,
                       run_outputs.c.text)
             .where(run_outputs.c.run_id == run_id).order_by(run_outputs.c.seq))
    return [{"seq": r.seq, "kind": r.kind, "mime_type": r.mime_type, "size_bytes": r.size_bytes, "text": r.text}
            for r in conn.execute(query).all()]


def one_output(conn: sa.Connection, run_id: int, seq: int) -> tuple[str, bytes] | None:
    """(mime type, data) of one output, or None."""
    row = conn.execute(sa.select(run_outputs.c.mime_type, run_outputs.c.data)
                       .where(run_outputs.c.run_id == run_id, run_outputs.c.seq == seq)).first()
    return (row.mime_type, bytes(row.data)) if row else None

"""Read-only queries behind the web views and metrics (``Store`` delegates to these).

A run's log is kept as a head (the first bytes) and a rolling tail (the last bytes),
with what was dropped between them counted. ``log_slice`` turns that into one byte
stream with absolute offsets, so a reader can poll a growing log with ``offset`` and
be told, with a marker line, when bytes it has not seen were dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Sequence

import sqlalchemy as sa

from .logs import dropped_marker
from .schema import log_chunks, runs, tasks

# Statuses that count as a failure in every view (ABANDONED counts as neither).
FAILED = ("FAILURE", "TIMEOUT")


@dataclass(frozen=True)
class LogSlice:
    """A piece of one run's log. Ask again with ``offset=next_offset`` for what follows."""

    run_id: int
    status: str
    text: str
    offset: int  # absolute byte offset where ``text`` starts
    next_offset: int  # absolute byte offset just after ``text``
    size: int  # bytes the run has written so far
    dropped: int  # bytes dropped in the middle to keep the log bounded
    complete: bool  # the run has ended and ``next_offset`` reached ``size``: nothing more will come


def repositories(conn: sa.Connection, codops: Collection[str]) -> set[str]:
    """The repositories holding active tasks of ``codops``."""
    query = sa.select(tasks.c.repo).distinct().where(tasks.c.active.is_(True), tasks.c.codops.in_(list(codops)))
    return {row.repo for row in conn.execute(query)}


def active_repositories(conn: sa.Connection) -> dict[str, set[str]]:
    """codops -> the repositories holding its active tasks."""
    found: dict[str, set[str]] = {}
    for row in conn.execute(sa.select(tasks.c.codops, tasks.c.repo).distinct().where(tasks.c.active.is_(True))):
        found.setdefault(row.codops, set()).add(row.repo)
    return found


def organisations(conn: sa.Connection, codops: Collection[str] | None) -> list[dict[str, Any]]:
    """One row per organisation with active tasks: how many, and how many are running."""
    query = (sa.select(tasks.c.codops, sa.func.count().label("tasks"),
                       sa.func.sum(sa.case((tasks.c.state == "RUNNING", 1), else_=0)).label("running"))
             .where(tasks.c.active.is_(True)).group_by(tasks.c.codops).order_by(tasks.c.codops))
    if codops is not None:
        query = query.where(tasks.c.codops.in_(list(codops)))
    return [{"codops": r.codops, "tasks": int(r.tasks), "running": int(r.running or 0)}
            for r in conn.execute(query).all()]


def log_slice(conn: sa.Connection, run_id: int, offset: int = 0, max_bytes: int = 1 << 20,
              tail: int | None = None, run: Any = None) -> LogSlice | None:
    """At most ``max_bytes`` of a run's log from ``offset`` (or from its last ``tail`` bytes).

    The text never splits a UTF-8 character; a marker line stands where bytes were dropped.
    ``run``: the run's row (status, log_bytes, log_dropped_bytes) when the caller has just
    read it, before any of its chunks.
    """
    # Status first: once a run has ended its log writer has flushed, so reading the
    # chunks after the status never misses the end of a finished run's log.
    if run is None:
        run = conn.execute(sa.select(runs.c.status, runs.c.log_bytes, runs.c.log_dropped_bytes)
                           .where(runs.c.id == run_id)).first()
    if run is None:
        return None
    chunks = conn.execute(sa.select(log_chunks.c.seq, log_chunks.c.part, log_chunks.c.nbytes)
                          .where(log_chunks.c.run_id == run_id).order_by(log_chunks.c.seq)).all()
    spans, size = _spans(chunks, int(run.log_bytes or 0))
    if tail is not None:
        offset = max(size - tail, 0)
    offset = min(max(offset, 0), size)
    picked: list[tuple[int, int, int]] = []  # (seq, start, end)
    taken = 0
    for seq, start, end in spans:
        if end <= offset:
            continue
        if taken >= max_bytes:
            break
        picked.append((seq, start, end))
        taken += end - max(start, offset)
    data = _chunk_data(conn, run_id, [seq for seq, _, _ in picked])
    out: list[str] = []
    position, budget = offset, max_bytes
    for seq, start, end in picked:
        if budget <= 0:
            break
        if start > position:  # bytes between what the reader has and this chunk are gone
            out.append(dropped_marker(start - position))
            position = start
        raw = data.get(seq, "").encode("utf-8")
        begin = min(position - start, len(raw))
        cut = _cut_at_char(raw, begin, begin + budget)
        out.append(raw[begin:cut].decode("utf-8", errors="ignore"))
        budget -= cut - begin
        position = end if cut >= len(raw) else start + cut
    finished = run.status != "RUNNING"
    return LogSlice(run_id=run_id, status=run.status, text="".join(out), offset=offset,
                    next_offset=position, size=size, dropped=int(run.log_dropped_bytes or 0),
                    complete=finished and position >= size)


def _cut_at_char(raw: bytes, begin: int, limit: int) -> int:
    """The end of a slice from ``begin`` near ``limit`` that splits no UTF-8 character
    (at least one character, so a reader always moves on)."""
    if limit >= len(raw):
        return len(raw)
    cut = limit
    while cut > begin and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    if cut == begin:
        cut = begin + 1
        while cut < len(raw) and (raw[cut] & 0xC0) == 0x80:
            cut += 1
    return cut


def _spans(chunks: Sequence[Any], written: int) -> tuple[list[tuple[int, int, int]], int]:
    """Absolute byte ranges of the kept chunks: the head from 0, the tail back from the end."""
    spans: list[tuple[int, int, int]] = []
    position = 0
    for seq, part, nbytes in chunks:
        if part == "h":
            spans.append((seq, position, position + nbytes))
            position += nbytes
    head_end = position
    tail_total = sum(nbytes for _, part, nbytes in chunks if part == "t")
    size = max(written, head_end + tail_total)
    position = size - tail_total
    for seq, part, nbytes in chunks:
        if part == "t":
            spans.append((seq, position, position + nbytes))
            position += nbytes
    return spans, size


def _chunk_data(conn: sa.Connection, run_id: int, seqs: list[int]) -> dict[int, str]:
    if not seqs:
        return {}
    rows = conn.execute(sa.select(log_chunks.c.seq, log_chunks.c.data)
                        .where(log_chunks.c.run_id == run_id, log_chunks.c.seq >= seqs[0],
                               log_chunks.c.seq <= seqs[-1])).all()
    return {seq: data for seq, data in rows}


def recent_runs(conn: sa.Connection, codops: str, task: str, limit: int) -> list[Any]:
    """A task's newest runs (whole rows), oldest first."""
    query = (sa.select(runs).where(runs.c.codops == codops, runs.c.task == task)
             .order_by(runs.c.id.desc()).limit(limit))
    return sorted(conn.execute(query).all(), key=lambda row: row.id)


def max_run_id(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(runs.c.id))).scalar() or 0)


def task_state_counts(conn: sa.Connection, codops: Collection[str] | None) -> list[dict[str, Any]]:
    """Active tasks by (codops, state)."""
    query = (sa.select(tasks.c.codops, tasks.c.state, sa.func.count().label("n"))
             .where(tasks.c.active.is_(True)).group_by(tasks.c.codops, tasks.c.state))
    if codops is not None:
        query = query.where(tasks.c.codops.in_(list(codops)))
    return [{"codops": r.codops, "state": r.state, "count": int(r.n)} for r in conn.execute(query).all()]


OUTCOMES = ("SUCCESS", *FAILED)  # a run that ended on its own: what says whether a task works


def task_summaries(conn: sa.Connection, codops: Collection[str] | None) -> list[dict[str, Any]]:
    """Active tasks with their newest run and their last outcome (the newest run that ended
    on its own), for the overview. A task running now, or whose last run was ABANDONED (a
    stop), is judged by the run before: one indexed look back each, no count of all runs.
    Only what the counts need is read here (10,000 tasks: one row each, no text, no times
    but freshness's); ``run_briefs`` reads the start and error of the few runs listed."""
    last = runs.alias("last")
    # Times are read (and parsed: most of the cost on SQLite) only for tasks with a freshness.
    declared = tasks.c.freshness_s.is_not(None)
    query = (sa.select(tasks.c.codops, tasks.c.name, tasks.c.loop, tasks.c.state, tasks.c.freshness_s,
                       sa.case((declared, tasks.c.last_success_at), else_=None).label("last_success_at"),
                       sa.case((declared, tasks.c.first_seen_at), else_=None).label("first_seen_at"),
                       last.c.id, last.c.status)
             .outerjoin(last, last.c.id == tasks.c.last_run_id)
             .where(tasks.c.active.is_(True)).order_by(tasks.c.codops, tasks.c.name))
    if codops is not None:
        query = query.where(tasks.c.codops.in_(list(codops)))
    found = []
    # Rows unpacked as tuples: attribute access by name costs more than the query at 10,000 tasks.
    for org, name, loop, state, freshness_s, success, seen, run_id, status in conn.execute(query).all():
        outcome = (run_id, status) if status in OUTCOMES else None
        if outcome is None and run_id is not None:
            before = conn.execute(
                sa.select(runs.c.id, runs.c.status)
                .where(runs.c.codops == org, runs.c.task == name, runs.c.id < run_id, runs.c.status.in_(OUTCOMES))
                .order_by(runs.c.id.desc()).limit(1)).first()
            outcome = tuple(before) if before is not None else None
        found.append({"codops": org, "name": name, "loop": loop, "state": state,
                      "outcome_run_id": outcome[0] if outcome else None,
                      "outcome": outcome[1] if outcome else None,
                      # what decides staleness (Store turns it into 'stale')
                      "freshness_s": freshness_s, "last_success_at": success, "first_seen_at": seen})
    return found


def run_briefs(conn: sa.Connection, ids: Collection[int]) -> dict[int, tuple[Any, str | None]]:
    """(started_at, error) of the runs ``ids``."""
    if not ids:
        return {}
    query = sa.select(runs.c.id, runs.c.started_at, runs.c.error).where(runs.c.id.in_(sorted(ids)))
    return {r.id: (r.started_at, r.error) for r in conn.execute(query).all()}

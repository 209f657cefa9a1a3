"""Streaming a run's log into the store, bounded to a kept head and a rolling tail.

A task may print gigabytes; the store keeps the first ``HEAD_BYTES`` and the last
``TAIL_BYTES`` and counts what was dropped in between. Lines are buffered; the store's
flusher thread writes the lines that have waited ``FLUSH_SECONDS`` (looking every
``FLUSH_SECONDS``), so a crash of the scheduler loses at most about twice that much of
the log. The rest is written in the transaction that finishes the run: a short task's
log costs no write of its own. A failed write keeps its lines for the next one.

The buffer is bounded too: lines that the store could never keep (past what still fills
the head, and before the last ``TAIL_BYTES``) are dropped as soon as the buffer outgrows
what can be kept by ``TRIM_SLACK``, and counted as dropped. So a run's log costs the
scheduler at most a few MiB of memory whatever the task prints, between two flushes or
while the database is out of reach.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, Protocol

import sqlalchemy as sa

from .schema import log_chunks, runs

HEAD_BYTES = 1 << 20
TAIL_BYTES = 4 << 20
FLUSH_SECONDS = 0.5
TRIM_SLACK = 1 << 20  # how far the buffer may outgrow what the store could keep before it is trimmed
ROW_BYTES = 1 << 20  # one log_chunks row holds at most this much: a flush decodes no more at once


class WriterOwner(Protocol):
    """What a ``LogWriter`` needs of its ``Store``: the engine to write with, and to be told
    when it closes (a Protocol, so that this module does not import ``store.py``, which
    imports it)."""

    engine: sa.Engine

    def _forget_writer(self, writer: LogWriter) -> None: ...


class LogWriter:
    """Collects one run's log lines; ``write`` is the sink given to executors."""

    def __init__(self, store: WriterOwner, run_id: int, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self.store, self.run_id = store, run_id
        self.head_limit, self.tail_limit = head_bytes, tail_bytes
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []  # lines (or blocks of lines) as UTF-8, each without its last newline
        self._buffered = 0  # their bytes, newlines included
        self._seq = 0
        self._head = 0  # bytes kept in head chunks
        self._tail: list[tuple[int, int]] = []  # (seq, nbytes) of tail chunks, oldest first
        self._tail_total = 0
        self._written = 0
        self._dropped = 0
        self._closed = False
        self._waiting_since: float | None = None  # when the oldest buffered line came
        self._in_flight: int | None = None  # lines being written by a transaction not yet committed
        self._in_flight_bytes = 0
        self._saved: tuple | None = None  # the counters before that transaction, to undo it

    def write(self, line: str) -> None:
        """Take one line, or several joined by newlines (so ``takes_blocks``)."""
        if "\x00" in line:  # PostgreSQL's text cannot hold NUL: the log could never be stored
            line = line.replace("\x00", "\ufffd")
        data = line.encode("utf-8", errors="replace")  # a lone surrogate becomes "?"
        with self._lock:
            if self._closed:
                return
            if not self._buffer:
                self._waiting_since = time.monotonic()
            self._buffer.append(data)
            self._buffered += len(data) + 1
            if (self._in_flight is None
                    and self._buffered > max(self.head_limit - self._head, 0) + self.tail_limit + TRIM_SLACK):
                self._trim()

    write.takes_blocks = True  # type: ignore[attr-defined]  # see executors.base.LogSink

    def flush(self, older_than: float = 0.0, conn: sa.Connection | None = None) -> None:
        """Write the buffered lines, if the oldest has waited ``older_than`` seconds.

        With ``conn`` the lines join that transaction (the run's finish): the caller
        then calls ``kept()`` once it committed, or ``undo()`` if it did not. Without
        it they are committed here.
        """
        with self._lock:
            if self._in_flight is not None:
                return  # another transaction carries these lines right now
            if not self._buffer or time.monotonic() - (self._waiting_since or 0.0) < older_than:
                return
            if conn is not None:
                self._store_text(conn)
                return
            try:
                with self.store.engine.begin() as own:
                    self._store_text(own)
            except BaseException:
                self._undo()
                raise
            self._kept()

    def close(self, conn: sa.Connection | None = None) -> None:
        """Write what is left (in ``conn``'s transaction if given) and take no more lines."""
        self.flush(conn=conn)
        with self._lock:
            self._closed = True
        self.store._forget_writer(self)

    def kept(self) -> None:
        """The transaction given to ``flush``/``close`` committed: those lines are stored."""
        with self._lock:
            self._kept()

    def undo(self) -> None:
        """The transaction given to ``flush``/``close`` failed: the lines wait for the next write."""
        with self._lock:
            self._undo()

    # The helpers below run with the lock held: the flusher thread and the loop both flush.
    def _store_text(self, conn: sa.Connection) -> None:
        self._trim()  # only what can be kept is joined
        self._saved = (self._seq, self._head, list(self._tail), self._tail_total, self._written, self._dropped)
        self._in_flight = len(self._buffer)
        self._in_flight_bytes = self._buffered
        try:
            self._write_chunks(conn, b"\n".join([*self._buffer, b""]))
        except BaseException:
            self._undo()
            raise

    def _kept(self) -> None:
        if self._in_flight is None:
            return
        self._buffer = self._buffer[self._in_flight:]  # lines that came meanwhile stay
        self._buffered -= self._in_flight_bytes
        self._in_flight = self._saved = None
        self._waiting_since = time.monotonic() if self._buffer else None

    def _undo(self) -> None:
        if self._in_flight is None:
            return
        assert self._saved is not None
        self._seq, self._head, self._tail, self._tail_total, self._written, self._dropped = self._saved
        self._in_flight = self._saved = None

    def _trim(self) -> None:
        """Drop the buffered lines the store could never keep: after those that still fill the
        head, every one followed by at least ``tail_limit`` newer bytes. Counted as dropped."""
        buffer = self._buffer
        room = max(self.head_limit - self._head, 0)
        start = position = 0
        while start < len(buffer) and position < room:  # these go (at least partly) to the head
            position += len(buffer[start]) + 1
            start += 1
        after = self._buffered - position  # bytes from buffer[start] on
        stop = start
        while stop < len(buffer) and after - (len(buffer[stop]) + 1) >= self.tail_limit:
            after -= len(buffer[stop]) + 1
            stop += 1
        gone = self._buffered - position - after
        if gone:
            del buffer[start:stop]
            self._buffered -= gone
            self._written += gone
            self._dropped += gone

    def _write_chunks(self, conn: sa.Connection, data: bytes) -> None:
        """Store ``data`` (valid UTF-8): what still fits the head, then its last ``tail_limit``
        bytes as tail rows; older tail rows go once the tail holds more than ``tail_limit``.
        Rows are inserted one by one, each at most ``ROW_BYTES``, so little is held at once."""
        self._written += len(data)
        view = memoryview(data)
        end = len(data)
        head_end = 0
        if self._head < self.head_limit:
            head_end = _char_start(view, min(self.head_limit - self._head, end), -1)
            for start, stop in _rows(view, 0, head_end):
                self._insert(conn, "h", view[start:stop])
                self._head += stop - start
        tail_start = _char_start(view, max(head_end, end - self.tail_limit), 1)
        self._dropped += tail_start - head_end
        for start, stop in _rows(view, tail_start, end):
            self._insert(conn, "t", view[start:stop])
            self._tail.append((self._seq, stop - start))
            self._tail_total += stop - start
        deletes: list[int] = []
        while self._tail_total > self.tail_limit and len(self._tail) > 1:
            seq, nbytes = self._tail.pop(0)
            self._tail_total -= nbytes
            self._dropped += nbytes
            deletes.append(seq)
        if deletes:
            conn.execute(log_chunks.delete().where(log_chunks.c.run_id == self.run_id,
                                                   log_chunks.c.seq.in_(deletes)))
        conn.execute(runs.update().where(runs.c.id == self.run_id).values(
            log_bytes=self._written, log_dropped_bytes=self._dropped))

    def _insert(self, conn: sa.Connection, part: str, data: memoryview) -> None:
        self._seq += 1
        conn.execute(log_chunks.insert(), {"run_id": self.run_id, "seq": self._seq, "part": part,
                                           "nbytes": len(data), "data": str(data, "utf-8", "replace")})


def _char_start(data: memoryview, position: int, step: int) -> int:
    """``position`` moved back (``step`` -1) or forward (1) to the start of a UTF-8 character."""
    while 0 < position < len(data) and (data[position] & 0xC0) == 0x80:
        position += step
    return position


def _rows(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``start:end`` of ``data`` in spans of at most ``ROW_BYTES`` that split no UTF-8 character."""
    while start < end:
        stop = end if end - start <= ROW_BYTES else _char_start(data, start + ROW_BYTES, -1)
        yield start, stop
        start = stop


def dropped_marker(nbytes: int) -> str:
    """The line put where a bounded log dropped ``nbytes`` in the middle."""
    return f"[peach-tasks: {nbytes} bytes of this log were dropped here to keep it bounded]\n"


def read_log(conn: sa.Connection, run_id: int, dropped: int) -> str:
    rows = conn.execute(sa.select(log_chunks.c.part, log_chunks.c.data)
                        .where(log_chunks.c.run_id == run_id).order_by(log_chunks.c.seq)).all()
    out: list[str] = []
    marked = False
    for part, data in rows:
        if part == "t" and dropped and not marked:
            out.append(dropped_marker(dropped))
            marked = True
        out.append(data)
    return "".join(out)

"""Streaming a run's log into the store, bounded to a kept head and a rolling tail.

A task may print gigabytes; the store keeps the first ``HEAD_BYTES`` and the last
``TAIL_BYTES`` and counts what was dropped in between. Lines are buffered; the store's
flusher thread writes the lines that have waited ``FLUSH_SECONDS`` (looking every
``FLUSH_SECONDS``), so a crash of the scheduler loses at most about twice that much of
the log. The rest is written in the transaction that finishes the run: a short task's
log costs no write of its own. A failed write keeps its lines for the next one.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .schema import log_chunks, runs

if TYPE_CHECKING:
    from .store import Store

HEAD_BYTES = 1 << 20
TAIL_BYTES = 4 << 20
FLUSH_SECONDS = 0.5


class LogWriter:
    """Collects one run's log lines; ``write`` is the sink given to executors."""

    def __init__(self, store: "Store", run_id: int, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self.store, self.run_id = store, run_id
        self.head_limit, self.tail_limit = head_bytes, tail_bytes
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._seq = 0
        self._head = 0  # bytes kept in head chunks
        self._tail: list[tuple[int, int]] = []  # (seq, nbytes) of tail chunks, oldest first
        self._tail_total = 0
        self._written = 0
        self._dropped = 0
        self._closed = False
        self._waiting_since: float | None = None  # when the oldest buffered line came
        self._in_flight: int | None = None  # lines being written by a transaction not yet committed
        self._saved: tuple | None = None  # the counters before that transaction, to undo it

    def write(self, line: str) -> None:
        with self._lock:
            if not self._closed:
                if not self._buffer:
                    self._waiting_since = time.monotonic()
                self._buffer.append(line + "\n")

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
        self._saved = (self._seq, self._head, list(self._tail), self._tail_total, self._written, self._dropped)
        self._in_flight = len(self._buffer)
        try:
            self._write_chunks(conn, "".join(self._buffer))
        except BaseException:
            self._undo()
            raise

    def _kept(self) -> None:
        if self._in_flight is None:
            return
        self._buffer = self._buffer[self._in_flight:]  # lines that came meanwhile stay
        self._in_flight = self._saved = None
        self._waiting_since = time.monotonic() if self._buffer else None

    def _undo(self) -> None:
        if self._in_flight is None:
            return
        assert self._saved is not None
        self._seq, self._head, self._tail, self._tail_total, self._written, self._dropped = self._saved
        self._in_flight = self._saved = None

    def _write_chunks(self, conn: sa.Connection, text: str) -> None:
        data = text.encode("utf-8", errors="replace")
        self._written += len(data)
        inserts: list[dict] = []
        if self._head < self.head_limit:
            room = self.head_limit - self._head
            head_part, data = _split_utf8(data, room)
            if head_part:
                inserts.append(self._chunk("h", head_part))
                self._head += len(head_part)
        deletes: list[int] = []
        if data:
            if len(data) > self.tail_limit:
                cut = len(data) - self.tail_limit
                self._dropped += cut
                data = _lstrip_utf8(data[cut:])
            inserts.append(self._chunk("t", data))
            self._tail.append((self._seq, len(data)))
            self._tail_total += len(data)
            while self._tail_total > self.tail_limit and len(self._tail) > 1:
                seq, nbytes = self._tail.pop(0)
                self._tail_total -= nbytes
                self._dropped += nbytes
                deletes.append(seq)
        if inserts:
            conn.execute(log_chunks.insert(), inserts)
        if deletes:
            conn.execute(log_chunks.delete().where(log_chunks.c.run_id == self.run_id,
                                                   log_chunks.c.seq.in_(deletes)))
        conn.execute(runs.update().where(runs.c.id == self.run_id).values(
            log_bytes=self._written, log_dropped_bytes=self._dropped))

    def _chunk(self, part: str, data: bytes) -> dict:
        self._seq += 1
        return {"run_id": self.run_id, "seq": self._seq, "part": part, "nbytes": len(data),
                "data": data.decode("utf-8", errors="replace")}


def _split_utf8(data: bytes, limit: int) -> tuple[bytes, bytes]:
    """Split at ``limit`` bytes without cutting a UTF-8 character in two."""
    if len(data) <= limit:
        return data, b""
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut], data[cut:]


def _lstrip_utf8(data: bytes) -> bytes:
    start = 0
    while start < len(data) and (data[start] & 0xC0) == 0x80:
        start += 1
    return data[start:]


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

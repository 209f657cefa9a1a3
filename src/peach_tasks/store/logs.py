"""Streaming a run's log into the store, bounded to a kept head and a rolling tail.

A task may print gigabytes; the store keeps the first ``HEAD_BYTES`` and the last
``TAIL_BYTES`` and counts what was dropped in between. Lines are buffered and flushed
by the store's flusher thread at least every ``FLUSH_SECONDS``, so a crash of the
scheduler loses at most that much of the log.
"""

from __future__ import annotations

import threading
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

    def write(self, line: str) -> None:
        with self._lock:
            if not self._closed:
                self._buffer.append(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            text, self._buffer = "".join(self._buffer), []
            self._store_text(text)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
        self.store._forget_writer(self)

    # Called with the lock held: the flusher thread and the loop both flush.
    def _store_text(self, text: str) -> None:
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
        with self.store.engine.begin() as conn:
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


def read_log(conn: sa.Connection, run_id: int, dropped: int) -> str:
    rows = conn.execute(sa.select(log_chunks.c.part, log_chunks.c.data)
                        .where(log_chunks.c.run_id == run_id).order_by(log_chunks.c.seq)).all()
    out: list[str] = []
    marked = False
    for part, data in rows:
        if part == "t" and dropped and not marked:
            out.append(f"[peach-tasks: {dropped} bytes of this log were dropped here to keep it bounded]\n")
            marked = True
        out.append(data)
    return "".join(out)

"""Capturing a task's output: the merged pipe read in large chunks, lines stamped and bounded.

Whatever the task prints, the scheduler holds at most one read and the start of one
unfinished line per run (see ``Reader``); the stamps are the log's UTC times.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

from .base import LogSink

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024  # a longer line is cut (its first MAX_LINE_BYTES kept, a note says so)
READ_BYTES = 1 << 20  # one read of the output pipe, and the size the pipe is grown to


def utc_stamp(ts: float | None = None) -> str:
    """``ts`` (default: now) as ``2026-11-24T22:30:01.123Z``."""
    ts = time.time() if ts is None else ts
    secs = math.floor(ts)
    millis = min(int((ts - secs) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}Z"


class Reader(threading.Thread):
    """Reads the merged output pipe in large chunks and hands its lines to the sink as they arrive.

    Whatever the output's shape, it holds at most one read (``READ_BYTES``) and the start of
    one unfinished line (``MAX_LINE_BYTES``). A longer line is cut as it arrives: its first
    ``MAX_LINE_BYTES`` go to the sink at once, the rest is counted and dropped up to the
    line's end, and a note line says how much was cut. Lines of one read share one stamp.
    A sink with a true ``takes_blocks`` attribute (the store's log writer) gets all the lines
    of a read in one call, joined by newlines: the hot path then does no work per line in
    Python, only a few passes over each read in C.
    """

    def __init__(self, fd: int, sink: LogSink) -> None:
        super().__init__(name="peach-tasks-output", daemon=True)
        self.fd, self.sink = fd, sink
        self.blocks = bool(getattr(sink, "takes_blocks", False))
        self.detached = False  # set when the run ended without EOF: stop calling the sink
        self._sink_failed = False
        _grow_pipe(fd)

    def run(self) -> None:
        pending = b""  # the start of an unfinished line, at most MAX_LINE_BYTES
        kept, dropping = 0, -1  # inside a cut line: bytes passed on, bytes dropped so far
        while True:
            try:
                chunk = os.read(self.fd, READ_BYTES)
            except OSError:
                break
            if not chunk:
                break
            stamp = utc_stamp()  # one stamp per read: its lines arrived together
            if dropping >= 0:
                end = chunk.find(b"\n")
                if end < 0:
                    dropping += len(chunk)
                    continue
                self._cut_note(stamp, kept, dropping + end)
                dropping = -1
                chunk = chunk[end + 1:]
            data = pending + chunk if pending else chunk
            end = data.rfind(b"\n")
            if end >= 0:
                self._lines(stamp, data[:end])
                pending = data[end + 1:]
            else:
                pending = data
            if len(pending) > MAX_LINE_BYTES:
                kept = _utf8_cut(pending, MAX_LINE_BYTES)
                self._pass(stamp, pending[:kept])
                dropping, pending = len(pending) - kept, b""
        if dropping >= 0:
            self._cut_note(utc_stamp(), kept, dropping)
        elif pending:
            self._deliver(f"{utc_stamp()} {pending.decode('utf-8', errors='replace')}")

    def _lines(self, stamp: str, block: bytes) -> None:
        """Pass on complete lines (``block``: lines joined by newlines, without the last one)."""
        block = block.replace(b"\r\n", b"\n")  # a line's CR LF end counts as its end
        if block.endswith(b"\r"):
            block = block[:-1]
        if _has_long_line(block):
            self._cut_lines(stamp, block.split(b"\n"))
            return
        self._pass(stamp, block)

    def _pass(self, stamp: str, block: bytes) -> None:
        """Stamp each line of ``block`` (none longer than MAX_LINE_BYTES) and hand it on."""
        prefix = stamp.encode("ascii") + b" "
        text = (prefix + block.replace(b"\n", b"\n" + prefix)).decode("utf-8", errors="replace")
        if self.blocks:
            self._deliver(text)
        else:
            for line in text.split("\n"):
                self._deliver(line)

    def _cut_lines(self, stamp: str, lines: list[bytes]) -> None:
        """The rare read holding a whole over-long line: pass the others on, cut that one."""
        short: list[bytes] = []
        for line in lines:
            if len(line) <= MAX_LINE_BYTES:
                short.append(line)
                continue
            if short:
                self._pass(stamp, b"\n".join(short))
                short = []
            kept = _utf8_cut(line, MAX_LINE_BYTES)
            self._pass(stamp, line[:kept])
            self._cut_note(stamp, kept, len(line) - kept)
        if short:
            self._pass(stamp, b"\n".join(short))

    def _cut_note(self, stamp: str, kept: int, dropped: int) -> None:
        self._deliver(f"{stamp} peach-tasks: the line above was cut: {dropped} bytes dropped after its first {kept} "
                      f"(lines are kept up to {MAX_LINE_BYTES} bytes)")

    def _deliver(self, text: str) -> None:
        if self.detached:
            return
        try:
            self.sink(text)
        except Exception:
            # Keep draining: a child blocked on a full pipe would hang until its timeout.
            if not self._sink_failed:
                self._sink_failed = True
                log.exception("log sink failed; the lines it rejects are lost")


def _has_long_line(block: bytes) -> bool:
    """Whether a line of ``block`` (lines joined by newlines) is longer than MAX_LINE_BYTES:
    one search per MAX_LINE_BYTES, however many lines there are."""
    start = 0  # the start of a line
    while len(block) - start > MAX_LINE_BYTES:
        end = block.rfind(b"\n", start, start + MAX_LINE_BYTES + 1)
        if end < 0:
            return True  # no line end within MAX_LINE_BYTES of this line's start
        start = end + 1  # every line up to here fit in that window
    return False


def _grow_pipe(fd: int) -> None:
    """Let the pipe hold ``READ_BYTES``: fewer, larger reads and fewer switches between the
    task and the reader. Where the host refuses (``pipe-max-size``, a user's pipe quota), the
    pipe keeps its size."""
    try:
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < READ_BYTES:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def _utf8_cut(data: bytes, limit: int) -> int:
    """A cut position near ``limit`` (``len(data) > limit``) that keeps UTF-8 sequences whole."""
    cut = limit
    # A sequence is at most 4 bytes: at most 3 continuation bytes (10xxxxxx) to step back.
    while cut > limit - 3 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if (data[cut] & 0xC0) != 0x80 else limit

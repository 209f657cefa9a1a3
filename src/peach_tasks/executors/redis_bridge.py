"""The platform's Redis for runs without a network (``python.network: false``).

Such a run lives in a network namespace of its own, where 127.0.0.1 is its own loopback and
the platform's Redis cannot be reached. The scheduler then shows it one unix socket, bound
into the sandbox at the same path, whose every connection it joins to the Redis server's TCP
address, byte for byte; the run's ``PEACH_REDIS_URL`` is ``unix://<user>:<password>@<socket>``.
The bridge goes to that one address only, and every command still needs the organisation's
own credentials, so a run gains no other way out. Plain ``redis://`` only: a TLS server
(``rediss://``) needs the run's network.

Each organisation has a bridge of its own (``OrganisationRedis.bridge``), which only its runs
see. One thread serves its connections (``selectors``); at most ``MAX_CONNECTIONS`` are open
at once (more are closed at once, said in the log at most once a minute) and each direction
buffers at most ``BUFFER`` bytes (a side that does not read stops the other from being read),
so a run cannot make the scheduler hold more than that, nor take another organisation's
connections.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # per organisation
REFUSALS_SAID_EVERY_S = 60.0
BUFFER = 1 << 20
_CHUNK = 64 * 1024


class _Pipe:
    """One run's connection and its server connection, with what each still has to send."""

    def __init__(self, inner: socket.socket, outer: socket.socket) -> None:
        self.inner, self.outer = inner, outer
        self.pending: dict[socket.socket, bytearray] = {inner: bytearray(), outer: bytearray()}  # to send to key
        self.watched: set[socket.socket] = set()  # registered with the selector
        self.closed = False

    def other(self, sock: socket.socket) -> socket.socket:
        return self.outer if sock is self.inner else self.inner


class RedisBridge:
    """A unix socket at ``path`` joined to ``host:port``; ``start`` serves it on a daemon thread."""

    def __init__(self, path: Path, host: str, port: int, name: str = "") -> None:
        self.path, self.address, self.name = path, (host, port), name
        self._refused = 0  # connections refused since the log last said so
        self._refusal_said = float("-inf")
        self._selector = selectors.DefaultSelector()
        self._pipes: set[_Pipe] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None

    def start(self) -> "RedisBridge":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left by a scheduler that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        # Runs are an unprivileged user: they may connect; the folder holds nothing else.
        os.chmod(self.path, 0o666)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="redis-bridge", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        for pipe in list(self._pipes):
            self._drop(pipe)
        if self._listener is not None:
            self._listener.close()
        self.path.unlink(missing_ok=True)
        self._wake_r.close()
        self._wake_w.close()
        self._selector.close()

    @property
    def connections(self) -> int:
        return len(self._pipes)

    # -- the serving thread ------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, mask in self._selector.select(timeout=1.0):
                if key.data == "wake":
                    return
                if key.data == "accept":
                    self._accept()
                    continue
                pipe: _Pipe = key.data
                if pipe.closed:
                    continue
                try:
                    if mask & selectors.EVENT_READ:
                        self._read(pipe, key.fileobj)  # type: ignore[arg-type]
                    if not pipe.closed and mask & selectors.EVENT_WRITE:
                        self._write(pipe, key.fileobj)  # type: ignore[arg-type]
                except OSError:
                    self._drop(pipe)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            inner, _ = self._listener.accept()
        except OSError:
            return
        if len(self._pipes) >= MAX_CONNECTIONS:
            inner.close()
            self._refused += 1
            now = time.monotonic()
            if now - self._refusal_said >= REFUSALS_SAID_EVERY_S:  # a run opening thousands: one line a minute
                log.warning("redis bridge %s: %d connections already open; %d more refused", self.name,
                            MAX_CONNECTIONS, self._refused)
                self._refused, self._refusal_said = 0, now
            return
        try:
            outer = socket.create_connection(self.address, timeout=5)
        except OSError as exc:
            log.warning("redis bridge: cannot reach %s:%d (%s)", *self.address, exc)
            inner.close()
            return
        for sock in (inner, outer):
            sock.setblocking(False)
        pipe = _Pipe(inner, outer)
        self._pipes.add(pipe)
        self._interest(pipe)

    def _read(self, pipe: _Pipe, sock: socket.socket) -> None:
        data = sock.recv(_CHUNK)
        if not data:
            self._drop(pipe)
            return
        pipe.pending[pipe.other(sock)] += data
        self._write(pipe, pipe.other(sock))

    def _write(self, pipe: _Pipe, sock: socket.socket) -> None:
        buffer = pipe.pending[sock]
        if buffer:
            try:
                sent = sock.send(buffer)
            except BlockingIOError:
                sent = 0
            del buffer[:sent]
        self._interest(pipe)

    def _interest(self, pipe: _Pipe) -> None:
        """Write to a side while anything waits for it; read from a side while what it sent
        has room (``BUFFER``) on the way to the other; a side wanting neither is left out."""
        for sock in (pipe.inner, pipe.outer):
            events = (selectors.EVENT_WRITE if pipe.pending[sock] else 0) | \
                     (selectors.EVENT_READ if len(pipe.pending[pipe.other(sock)]) < BUFFER else 0)
            registered = sock in pipe.watched
            if events and registered:
                self._selector.modify(sock, events, pipe)
            elif events:
                self._selector.register(sock, events, pipe)
                pipe.watched.add(sock)
            elif registered:
                self._selector.unregister(sock)
                pipe.watched.discard(sock)

    def _drop(self, pipe: _Pipe) -> None:
        if pipe.closed:
            return
        pipe.closed = True
        self._pipes.discard(pipe)
        for sock in (pipe.inner, pipe.outer):
            if sock in pipe.watched:
                self._selector.unregister(sock)
            sock.close()

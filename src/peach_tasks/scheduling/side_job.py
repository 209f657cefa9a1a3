"""A side job of ``serve``: rounds of work in one named daemon thread, on a connection pool
of its own, until stopped (the alert dispatcher, the pruner)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa


class SideJob:
    """Subclasses give ``thread_name`` and ``_forever`` (their rounds, until ``stop_event``)."""

    thread_name = "side-job"

    def __init__(self, engine: "sa.Engine", stop: threading.Event | None = None) -> None:
        self.engine = engine
        self.stop_event = stop or threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # A daemon: a job stuck in a slow database call never keeps the process from exiting.
        self._thread = threading.Thread(target=self._forever, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the job to stop, wait for its round to end (at most ``timeout``), close its pool."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.engine.dispose()

    def _forever(self) -> None:
        raise NotImplementedError

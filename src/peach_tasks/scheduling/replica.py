"""``serve`` as one replica among several: run exactly the loops this replica leases.

The coordinator (coordinator.py) decides which loops are ours; this module starts a
loop's thread when its lease is acquired, stops its task at once when the lease is
lost, hands a loop over after its current task when this replica has more than its
share, and releases everything on a clean stop so the others take over immediately.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from ..executors.base import CancelEvent
from ..observability.metrics import record_replica
from ..store.leases import Lease, LeaseStore
from .coordinator import Coordinator

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store import Store
    from .loops import Loop
    from .registry import Snapshot

log = logging.getLogger(__name__)

TAKEOVER_REASON = ("the replica that ran this task stopped or lost its lease; it was ended and "
                   "the loop went on with the next task on replica {replica}")


class LoopMaker(Protocol):
    """What the leased loops need of their ``Scheduler``: a Protocol, so that this module
    does not import ``scheduler.py`` (which imports this one to start ``LeasedLoops``)."""

    store: Store
    settings: Settings
    owner: str  # this replica's name
    stop_event: threading.Event

    @property
    def snapshot(self) -> Snapshot: ...

    def make_loop(self, name: str, *, stop: threading.Event | None = None) -> Loop: ...

    def end_left_runs(self, reason: str, owner: str | None = None, loop: str | None = None) -> list[int]: ...


class LeasedLoops:
    def __init__(self, scheduler: LoopMaker) -> None:
        self.scheduler = scheduler
        self.store = scheduler.store
        self.lease_engine = self.store.side_engine()
        self.coordinator = Coordinator(LeaseStore(self.lease_engine), scheduler.owner,
                                       scheduler.settings.replica.lease_seconds,
                                       on_acquired=self._acquired, on_lost=self._lost, on_surplus=self._surplus)
        self.loops: dict[str, "Loop"] = {}
        self.threads: dict[str, threading.Thread] = {}
        self._lock = threading.RLock()
        self._round_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Leases are renewed until the stop has ended every task: nobody else may start a
        # loop whose task is still being killed here.
        self._done = threading.Event()

    def start(self) -> None:
        self.coordinator.start()
        self.round()
        self._thread = threading.Thread(target=self._forever, name="leases", daemon=True)
        self._thread.start()

    def round(self) -> bool:
        stopping = self.scheduler.stop_event.is_set()
        started = time.monotonic()
        with self._round_lock:  # while stopping: renew only, take nothing new
            ok = self.coordinator.round([] if stopping else self.scheduler.snapshot.loop_names())
        took = time.monotonic() - started
        if took > self.coordinator.renew_seconds / 2:
            log.warning("a lease round took %.2fs (renewals are due every %.1fs): this replica or its "
                        "database is overloaded", took, self.coordinator.renew_seconds)
        record_replica(self.coordinator.replica, len(self.coordinator.held.loops))
        return ok

    def _forever(self) -> None:
        coordinator = self.coordinator
        renew = coordinator.renew_seconds
        next_round = time.monotonic() + renew
        while not self._done.is_set():
            due = min(next_round, coordinator.next_takeover or next_round)
            woken = coordinator.wake.wait(min(max(due - time.monotonic(), 0.0), 1.0))
            if self._done.is_set():
                break
            coordinator.wake.clear()
            if woken or time.monotonic() >= due:
                ok = self.round()
                next_round = time.monotonic() + (renew if ok else min(renew, 1.0))
            else:
                coordinator.check_deadline()

    # -- coordinator callbacks ----------------------------------------------------
    def _acquired(self, lease: Lease, start_after: float) -> None:
        """A loop became ours: start its thread (the lease thread must not wait for more)."""
        loop = self.scheduler.make_loop(lease.loop, stop=CancelEvent())
        with self._lock:
            if self.scheduler.stop_event.is_set():
                return
            self.loops[lease.loop] = loop
            # A loop lost and taken again at once may still be ending its task on the old thread.
            previous = self.threads.get(lease.loop)
            thread = threading.Thread(target=self._run, args=(loop, lease, previous, start_after),
                                      name=f"loop-{lease.loop}", daemon=True)
            self.threads[lease.loop] = thread
            thread.start()

    def _take_over(self, lease: Lease, loop: "Loop") -> None:
        """End what the loop's previous runner left, and go on after its last task."""
        abandoned = self.scheduler.end_left_runs(TAKEOVER_REASON.format(replica=self.scheduler.owner),
                                                 loop=lease.loop)
        if abandoned:
            log.warning("loop %s: took over from %s; marked runs %s ABANDONED", lease.loop,
                        lease.previous_owner or "nobody", abandoned)
        previous = lease.previous_owner
        if previous is not None and previous != self.scheduler.owner and self.store.alerting:
            # Its lease ran out (a clean stop frees its leases instead): announced once per death.
            self.store.record_replica_died(previous, self.scheduler.owner, [lease.loop])
        loop.resume_after = self.store.last_task_of_loop(lease.loop)

    def _lost(self, name: str) -> None:
        with self._lock:
            loop = self.loops.get(name)
        if loop is not None:
            loop.stop.set()  # the running task is ended now, as on a timeout

    def _surplus(self, count: int) -> None:
        with self._lock:
            leaving = [n for n, loop in self.loops.items() if loop.handover.is_set()]
            for name in sorted(n for n in self.loops if n not in leaving)[: max(count - len(leaving), 0)]:
                log.info("loop %s: handing over to another replica after its current task", name)
                self.loops[name].handover.set()

    def _run(self, loop: "Loop", lease: Lease, previous: threading.Thread | None, start_after: float) -> None:
        try:
            if previous is not None:
                previous.join()
            loop.stop.wait(start_after)
            while not loop.stop.is_set():
                try:
                    self._take_over(lease, loop)
                    break
                except Exception:  # the store briefly gone: nothing may run before this is done
                    log.exception("loop %s: taking over failed; retrying", loop.name)
                    loop.stop.wait(1.0)
            loop.run_forever()
        finally:
            with self._lock:
                # The loop may have been taken again meanwhile: remove only this run of it.
                if self.loops.get(loop.name) is loop:
                    del self.loops[loop.name]
                    self.threads.pop(loop.name, None)
            if loop.handover.is_set() and not self.scheduler.stop_event.is_set():
                self.coordinator.hand_over(loop.name)

    # -- views and stop -------------------------------------------------------------
    def in_use(self) -> set:
        with self._lock:
            return set().union(*(loop.in_use for loop in self.loops.values())) if self.loops else set()

    def stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            loops, threads = list(self.loops.values()), list(self.threads.values())
        for loop in loops:
            loop.stop.set()
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))
        self._done.set()
        self.coordinator.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        """After ``stop()`` and the final release."""
        self.lease_engine.dispose()

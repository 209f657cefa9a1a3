"""Sharing the loops between scheduler replicas through leases in the database.

Every replica runs one ``Coordinator.round()`` every ``lease / 4`` seconds:

1. heartbeat (this replica is alive) and renew the leases it holds, in one transaction
   on a connection pool of its own (never queued behind the loops' store work); a loop
   whose lease could not be renewed is lost and its running task is stopped at once
   (``on_lost``);
2. if no renewal succeeded for half the lease time (the database is out of reach),
   give up every loop: another replica may take them once the leases expire, and by
   then this one has stopped its tasks;
3. take free or expired loops up to its fair share, ``ceil(loops / live replicas)``, in
   one statement; a replica over its share hands the extra loops over (after their
   current task).

The replica's identity is its host plus its state_dir, stable across restarts: a
restarted replica gets its own loops back at once (the state_dir lock proves the
previous process is gone) instead of waiting for its old leases to expire.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

from ..store.leases import Lease, LeaseStore

log = logging.getLogger(__name__)

# How long after a dead replica's lease expires the takeover round runs: the database's
# clock and ours are compared through one statement's duration.
TAKEOVER_MARGIN = 0.1
# Taking more loops than this at once starts them spread out (see _share).
SPREAD_ABOVE = 8


@dataclass
class Holdings:
    """What this replica holds, as the coordinator last saw it."""

    loops: set[str] = field(default_factory=set)
    last_renewed: float = field(default_factory=time.monotonic)


class Coordinator:
    def __init__(self, leases: LeaseStore, replica: str, lease_seconds: float, *,
                 on_acquired: Callable[[Lease, float], None], on_lost: Callable[[str], None],
                 on_surplus: Callable[[int], None]) -> None:
        self.leases, self.replica, self.lease_seconds = leases, replica, lease_seconds
        self.on_acquired, self.on_lost, self.on_surplus = on_acquired, on_lost, on_surplus
        self.held = Holdings()
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._lock = threading.Lock()  # held.loops changes on this thread and on loop threads
        self._handed: set[str] = set()  # loops given up by their threads, released at the next round
        # Set to have the next round now (a loop handed over); the lease thread waits on it.
        self.wake = threading.Event()
        # When (time.monotonic) the first lease of a replica that stopped renewing expires:
        # a round then takes it over at once instead of up to a round period later.
        self.next_takeover: float | None = None

    @property
    def renew_seconds(self) -> float:
        # A quarter: a round may then be a whole period late before the half-lease
        # deadline below gives everything up.
        return max(self.lease_seconds / 4.0, 0.2)

    def start(self) -> None:
        self.leases.mark_started(self.replica, self.host, self.pid, self.leases.now())

    def round(self, wanted: list[str]) -> bool:
        """One round; returns False on a database outage (never raises for one)."""
        try:
            # Timed from before the statement: the database dates the renewal no earlier.
            started = time.monotonic()
            kept, live, takeover_in = self.leases.keep_alive(
                self.replica, self.host, self.pid, set(self.held.loops), self.lease_seconds,
                stale_after=2 * self.renew_seconds)
            self.held.last_renewed = started
        except Exception as exc:  # the database is unreachable: maybe only for a moment
            log.warning("lease renewal failed (%s); retrying", exc)
            self.check_deadline()
            return False
        self.next_takeover = None if takeover_in is None else started + takeover_in + TAKEOVER_MARGIN
        self._lose(self.held.loops - kept)
        try:
            released = self._release_handed()
            self._share([loop for loop in wanted if loop not in released], live)
        except Exception as exc:  # the renewal went through; the rest can wait a round
            log.warning("sharing loops failed (%s); retrying next round", exc)
        return True

    def check_deadline(self) -> None:
        """Give every loop up once renewals have failed for half the lease time: the
        leases expire only after the whole lease time, so no other replica can have
        started these loops' tasks yet."""
        if self.held.loops and time.monotonic() - self.held.last_renewed > self.lease_seconds / 2:
            log.error("no lease renewal for %.1fs: stopping every loop of this replica", self.lease_seconds / 2)
            self._lose(set(self.held.loops))

    def hand_over(self, loop: str) -> None:
        """Called by a loop that stopped to give its loop to another replica. The release
        waits for the lease thread (woken now): a hundred loops handing over at once must
        not queue on its connections before a renewal."""
        with self._lock:
            self.held.loops.discard(loop)
            self._handed.add(loop)
        self.wake.set()

    def _release_handed(self) -> set[str]:
        with self._lock:
            loops, self._handed = self._handed, set()
        if not loops:
            return set()
        try:
            self.leases.release(self.replica, loops)
        except Exception:
            with self._lock:
                self._handed |= loops  # next round; or the leases expire by themselves
            raise
        log.info("handed %d loop%s over: %s", len(loops), "" if len(loops) == 1 else "s", ", ".join(sorted(loops)))
        return loops

    def _lose(self, loops: set[str]) -> None:
        for loop in sorted(loops):
            with self._lock:
                self.held.loops.discard(loop)
            log.warning("lost the lease of loop %s: its task is stopped", loop)
            self.on_lost(loop)

    def _share(self, wanted: list[str], live: list[str]) -> None:
        share = math.ceil(len(wanted) / max(len(live), 1)) if wanted else 0
        surplus = len(self.held.loops) - share
        if surplus > 0:
            self.on_surplus(surplus)  # those loops hand over after their current task
            return
        # Not the loops still ours that a thread just gave up (released next round).
        with self._lock:
            busy = self.held.loops | self._handed
        # Spread the loops: each replica tries them in its own order.
        order = sorted((l for l in wanted if l not in busy),
                       key=lambda l: zlib.crc32(f"{self.replica}/{l}".encode()))
        if not order or surplus == 0:
            return
        # All at once, each lease timed from the database's clock at the take.
        started = time.monotonic()
        taken = self.leases.take(order, self.replica, self.leases.now(), self.lease_seconds, -surplus)
        if taken and not self.held.loops:
            self.held.last_renewed = started  # these are all we hold: the deadline runs from now
        if taken:
            log.info("took %d loop%s: %s", len(taken), "" if len(taken) == 1 else "s",
                     ", ".join(lease.loop for lease in taken))
        # Many loops taken at once (a start, a takeover) start spread over half a round
        # period: all their first tasks and store writes at the same instant starved the
        # next round on a busy machine.
        spread = self.renew_seconds / 2 / len(taken) if len(taken) > SPREAD_ABOVE else 0.0
        for index, lease in enumerate(taken):
            with self._lock:
                self.held.loops.add(lease.loop)
            self.on_acquired(lease, index * spread)  # only starts the loop's thread: the round stays short

    def release_all(self) -> None:
        try:
            self.leases.release(self.replica, list(self.held.loops | self._handed))
            self.leases.mark_stopped(self.replica, self.leases.now())
        except Exception as exc:  # stopping without a database: the leases expire by themselves
            log.warning("could not hand the loops over (%s); they are free once their leases expire", exc)
        self.held.loops.clear()

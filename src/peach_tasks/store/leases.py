"""Loop leases in the database: each loop is run by exactly one replica at a time.

A lease is a row ``(loop, owner, expires_at)``. The holder renews it well before it
expires; anyone may take a lease that is free or expired. Every change is one
conditional UPDATE (or an INSERT that loses to a concurrent one), so two replicas can
never both believe they won. Times come from the database server where it has a clock
(PostgreSQL ``now()``), so replicas on different machines agree on expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from . import dialect
from .schema import loop_leases, replicas
from .times import as_utc, db_now, iso, utcnow

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Lease:
    loop: str
    owner: str | None
    expires_at: datetime
    previous_owner: str | None = None  # on acquisition: who held it before (None: nobody)


class LeaseStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def now(self) -> datetime:
        """The database's clock where it has one, else this machine's (SQLite: one machine)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                return db_now(conn)
        return utcnow()

    # -- replicas ---------------------------------------------------------------
    def heartbeat(self, replica: str, host: str, pid: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            self._heartbeat(conn, replica, host, pid, now)

    @staticmethod
    def _heartbeat(conn: sa.Connection, replica: str, host: str, pid: int, now: datetime) -> None:
        # stopped_at is left as it is: a round still under way when the replica's stop marks it
        # (the stop waits for the lease thread only so long) must not make it live again, or
        # the others would leave it its share of the loops it released for a whole lease.
        updated = conn.execute(replicas.update().where(replicas.c.id == replica).values(
            host=host, pid=pid, heartbeat_at=now)).rowcount
        if not updated:
            try:
                with conn.begin_nested():
                    conn.execute(replicas.insert().values(id=replica, host=host, pid=pid, started_at=now,
                                                          heartbeat_at=now))
            except IntegrityError:
                pass

    def keep_alive(self, replica: str, host: str, pid: int, loops: Iterable[str], lease_seconds: float,
                   stale_after: float) -> tuple[set[str], list[str], float | None]:
        """One replica round's bookkeeping in one transaction: heartbeat, renew ``loops``.

        Returns the loops still ours, the live replicas, and in how many seconds the first
        lease held by a replica silent for ``stale_after`` seconds expires (None: none),
        so a takeover happens when that lease ends rather than up to a round later. One
        connection and one commit, because this runs on the thread that must never be late.
        """
        with self.engine.begin() as conn:
            now = db_now(conn)
            self._heartbeat(conn, replica, host, pid, now)
            kept = self._renew(conn, replica, list(loops), now, lease_seconds)
            live = self._live(conn, now, lease_seconds)
            first = conn.execute(
                sa.select(sa.func.min(loop_leases.c.expires_at))
                .select_from(loop_leases.join(replicas, replicas.c.id == loop_leases.c.owner))
                .where(loop_leases.c.owner != replica, loop_leases.c.expires_at >= now,
                       replicas.c.heartbeat_at < now - timedelta(seconds=stale_after))).scalar()
        takeover_in = None if first is None else max((as_utc(first) - now).total_seconds(), 0.0)
        return kept, live, takeover_in

    def mark_started(self, replica: str, host: str, pid: int, now: datetime) -> None:
        """A (re)start: the only write that makes a stopped replica live again."""
        self.heartbeat(replica, host, pid, now)
        with self.engine.begin() as conn:
            conn.execute(replicas.update().where(replicas.c.id == replica).values(started_at=now, stopped_at=None))

    def mark_stopped(self, replica: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(replicas.update().where(replicas.c.id == replica).values(stopped_at=now))

    def live_replicas(self, now: datetime, lease_seconds: float) -> list[str]:
        with self.engine.connect() as conn:
            return self._live(conn, now, lease_seconds)

    @staticmethod
    def _live(conn: sa.Connection, now: datetime, lease_seconds: float) -> list[str]:
        since = now - timedelta(seconds=lease_seconds)
        rows = conn.execute(sa.select(replicas.c.id).where(replicas.c.heartbeat_at >= since,
                                                           replicas.c.stopped_at.is_(None))).all()
        return sorted(r.id for r in rows)

    def replicas(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(replicas).order_by(replicas.c.id)).all()
        return [dict(r._mapping) for r in rows]

    # -- leases -----------------------------------------------------------------
    def leases(self) -> list[Lease]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(loop_leases).order_by(loop_leases.c.loop)).all()
        return [Lease(r.loop, r.owner, as_utc(r.expires_at)) for r in rows]

    def try_acquire(self, loop: str, owner: str, now: datetime, lease_seconds: float) -> Lease | None:
        """Take ``loop`` if it is free, expired, or already ours; None if someone else holds it."""
        expires = now + timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(loop_leases).where(loop_leases.c.loop == loop)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(loop_leases.insert().values(loop=loop, owner=owner, expires_at=expires,
                                                                 acquired_at=now))
                    return Lease(loop, owner, expires, None)
                except IntegrityError:
                    return None  # another replica inserted it first
            previous = row.owner
            taken = conn.execute(loop_leases.update().where(
                loop_leases.c.loop == loop,
                sa.or_(loop_leases.c.owner.is_(None), loop_leases.c.owner == owner,
                       loop_leases.c.expires_at < now),
                # The row must still be what we read: a concurrent taker wins, we lose.
                loop_leases.c.expires_at == row.expires_at,
            ).values(owner=owner, expires_at=expires, acquired_at=now)).rowcount
        return Lease(loop, owner, expires, previous) if taken else None

    def take(self, loops: Sequence[str], owner: str, now: datetime, lease_seconds: float,
             limit: int) -> list[Lease]:
        """Take up to ``limit`` of ``loops`` (in that order of preference) that are free,
        expired or left by an earlier process of ``owner``; returns those taken.

        A few statements whatever the count: a replica joining 200 loops must not take
        them one round trip at a time while its first loops already run. Rows being
        taken by another replica at the same moment are skipped, not waited for
        (``SKIP LOCKED``), so two replicas never deadlock on each other's rows.
        """
        loops = list(dict.fromkeys(loops))
        if not loops or limit <= 0:
            return []
        expires = now + timedelta(seconds=lease_seconds)
        with self.engine.begin() as conn:
            seen = {r.loop: r for r in conn.execute(sa.select(loop_leases).where(loop_leases.c.loop.in_(loops)))}
            missing = [loop for loop in loops if loop not in seen]
            if missing:  # a loop nobody ever held: a free row first, then taken like any other
                # In name order, whatever this replica's preference: an insert waits for another
                # transaction's uncommitted row of the same loop, so two replicas inserting two
                # loops in opposite orders would each wait for the other (PostgreSQL then fails one).
                conn.execute(self._insert_free().values([{"loop": loop, "owner": None, "expires_at": EPOCH}
                                                         for loop in sorted(missing)]))
            takeable = [loop for loop in loops if loop not in seen or seen[loop].owner in (None, owner)
                        or as_utc(seen[loop].expires_at) < now][:limit]
            if not takeable:
                return []
            free = sa.or_(loop_leases.c.owner.is_(None), loop_leases.c.owner == owner, loop_leases.c.expires_at < now)
            chosen = (sa.select(loop_leases.c.loop).where(loop_leases.c.loop.in_(takeable), free)
                      .with_for_update(skip_locked=True))
            taken = conn.execute(loop_leases.update().where(loop_leases.c.loop.in_(chosen), free)
                                 .values(owner=owner, expires_at=expires, acquired_at=now)
                                 .returning(loop_leases.c.loop)).scalars().all()
        order = {loop: i for i, loop in enumerate(loops)}
        return [Lease(loop, owner, expires, seen[loop].owner if loop in seen else None)
                for loop in sorted(taken, key=order.__getitem__)]

    def _insert_free(self) -> sa.Insert:
        """INSERT that quietly loses to a row another replica inserted first."""
        return dialect.insert(self.engine, loop_leases).on_conflict_do_nothing(index_elements=["loop"])

    def renew(self, owner: str, loops: Iterable[str], now: datetime, lease_seconds: float) -> set[str]:
        """Extend our leases; returns the loops still ours (the others were lost)."""
        with self.engine.begin() as conn:
            return self._renew(conn, owner, list(loops), now, lease_seconds)

    @staticmethod
    def _renew(conn: sa.Connection, owner: str, loops: list[str], now: datetime, lease_seconds: float) -> set[str]:
        if not loops:
            return set()
        expires = now + timedelta(seconds=lease_seconds)
        return set(conn.execute(loop_leases.update().where(
            loop_leases.c.owner == owner, loop_leases.c.loop.in_(loops), loop_leases.c.expires_at >= now,
        ).values(expires_at=expires).returning(loop_leases.c.loop)).scalars())

    def release(self, owner: str, loops: Iterable[str]) -> None:
        """Hand loops over at once (clean stop, or fair sharing): free and already expired."""
        loops = list(loops)
        if not loops:
            return
        with self.engine.begin() as conn:
            conn.execute(loop_leases.update().where(loop_leases.c.owner == owner, loop_leases.c.loop.in_(loops))
                         .values(owner=None, expires_at=EPOCH))


def replica_summary(leases: LeaseStore, lease_seconds: float) -> list[dict]:
    """Every replica with whether it is alive and the loops it holds (CLI and API)."""
    now = leases.now()
    live = set(leases.live_replicas(now, lease_seconds))
    held = [lease for lease in leases.leases() if lease.owner and lease.expires_at > now]
    return [{"id": r["id"], "host": r["host"], "pid": r["pid"], "alive": r["id"] in live,
             "started_at": iso(r["started_at"]), "heartbeat_at": iso(r["heartbeat_at"]),
             "stopped_at": iso(r["stopped_at"]),
             "loops": [{"loop": lease.loop, "expires_at": iso(lease.expires_at)}
                       for lease in held if lease.owner == r["id"]]}
            for r in leases.replicas()]

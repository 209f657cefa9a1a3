"""Loop leases on SQLite and the real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from peach_tasks.store import Store
from peach_tasks.store.leases import LeaseStore


@pytest.fixture
def leases(database_url: str) -> LeaseStore:
    store = Store.open(database_url)
    yield LeaseStore(store.engine)
    store.close()


def test_one_owner_at_a_time_and_expiry(leases: LeaseStore) -> None:
    now = leases.now()
    first = leases.try_acquire("chrts", "a", now, 30)
    assert first is not None and first.previous_owner is None
    assert leases.try_acquire("chrts", "b", now + timedelta(seconds=29), 30) is None
    assert leases.try_acquire("chrts", "a", now + timedelta(seconds=1), 30) is not None  # ours: renewable
    later = now + timedelta(seconds=40)  # a's lease expired
    taken = leases.try_acquire("chrts", "b", later, 30)
    assert taken is not None and taken.previous_owner == "a"
    assert leases.renew("a", ["chrts"], later, 30) == set()  # a lost it
    assert leases.renew("b", ["chrts"], later + timedelta(seconds=5), 30) == {"chrts"}


def test_release_hands_over_at_once(leases: LeaseStore) -> None:
    now = leases.now()
    assert leases.try_acquire("metadata", "a", now, 30)
    leases.release("a", ["metadata"])
    assert leases.try_acquire("metadata", "b", now, 30) is not None


def test_concurrent_acquisition_has_exactly_one_winner(leases: LeaseStore) -> None:
    now = leases.now()
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def attempt(owner: str) -> None:
        barrier.wait()
        if leases.try_acquire("sesr", owner, now, 30):
            winners.append(owner)

    threads = [threading.Thread(target=attempt, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    [lease] = leases.leases()
    assert lease.owner == winners[0]


def test_live_replicas(leases: LeaseStore) -> None:
    now = leases.now()
    leases.heartbeat("a", "host", 1, now)
    leases.heartbeat("b", "host", 2, now - timedelta(seconds=60))
    leases.heartbeat("c", "host", 3, now)
    leases.mark_stopped("c", now)
    assert leases.live_replicas(now, 30) == ["a"]
    assert {r["id"] for r in leases.replicas()} == {"a", "b", "c"}


def test_take_many_at_once_respects_holders_limit_and_order(leases: LeaseStore) -> None:
    now = leases.now()
    assert leases.try_acquire("b", "other", now, 30)  # held by someone else
    assert leases.try_acquire("c", "gone", now - timedelta(seconds=60), 30)  # expired long ago
    taken = leases.take(["d", "b", "c", "a", "e"], "me", now, 30, limit=3)
    # "b" is held; the first three takeable ones in the order asked for.
    assert [(lease.loop, lease.previous_owner) for lease in taken] == [("d", None), ("c", "gone"), ("a", None)]
    owners = {lease.loop: lease.owner for lease in leases.leases()}
    assert owners == {"a": "me", "b": "other", "c": "me", "d": "me", "e": None}  # "e": beyond the limit, free
    assert leases.take(["b", "e"], "me", now, 30, limit=5)[0].loop == "e"
    assert leases.take(["b"], "me", now, 30, limit=5) == []
    assert leases.take(["x"], "me", now, 30, limit=0) == []


def test_concurrent_takes_never_share_a_loop(leases: LeaseStore) -> None:
    # Six replicas ask for the same twenty loops at once, in different orders.
    now = leases.now()
    if leases.engine.dialect.name == "postgresql":
        # Each new row takes 2 ms, so the replicas' inserts overlap as on a loaded server: rows
        # inserted in each replica's order of preference deadlocked every time.
        with leases.engine.begin() as conn:
            conn.execute(sa.text("CREATE FUNCTION slow_insert() RETURNS trigger AS $$ BEGIN "
                                 "PERFORM pg_sleep(0.002); RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(sa.text("CREATE TRIGGER slow BEFORE INSERT ON loop_leases FOR EACH ROW "
                                 "EXECUTE FUNCTION slow_insert()"))
    names = [f"org{i:02d}" for i in range(20)]
    got: dict[str, list[str]] = {}
    failed: list[BaseException] = []
    barrier = threading.Barrier(6)

    def attempt(owner: str, order: list[str]) -> None:
        barrier.wait()
        try:
            got[owner] = [lease.loop for lease in leases.take(order, owner, now, 30, limit=20)]
        except BaseException as exc:  # a thread's error would otherwise only be printed
            failed.append(exc)

    threads = [threading.Thread(target=attempt, args=(f"r{i}", names[i:] + names[:i])) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed  # none deadlocked on another's new rows (PostgreSQL detects it and fails one)
    taken = [loop for loops in got.values() for loop in loops]
    assert len(taken) == len(set(taken))  # no loop went to two replicas
    owners = {lease.loop: lease.owner for lease in leases.leases()}
    assert all(owners[loop] == owner for owner, loops in got.items() for loop in loops)
    assert set(taken) == set(names)  # and every free loop went to someone


def test_a_round_that_ends_after_the_stop_does_not_bring_the_replica_back(leases: LeaseStore) -> None:
    """A replica's lease thread may still be in a round when its scheduler marks it stopped
    (the stop waits for that thread only so long). That round's heartbeat must not clear the
    stop: the others would count the stopped replica live for a whole lease and leave it its
    share of the loops it just released. Only a new start does."""
    now = leases.now()
    leases.mark_started("gone", "host", 1, now)
    leases.take(["a", "b"], "gone", now, 30, limit=2)
    leases.release("gone", ["a", "b"])
    leases.mark_stopped("gone", now)
    leases.keep_alive("gone", "host", 1, [], 30, stale_after=10)  # the late round
    leases.heartbeat("gone", "host", 1, leases.now())
    assert "gone" not in leases.live_replicas(leases.now(), 30)
    assert leases.take(["a", "b"], "other", leases.now(), 30, limit=2)
    leases.mark_started("gone", "host", 2, leases.now())  # started again: live again
    assert "gone" in leases.live_replicas(leases.now(), 30)


def test_keep_alive_renews_and_reports_live_replicas(leases: LeaseStore) -> None:
    now = leases.now()
    leases.take(["a", "b"], "me", now, 30, limit=2)
    leases.try_acquire("c", "other", now, 30)
    leases.heartbeat("other", "host", 2, now)
    kept, live, _ = leases.keep_alive("me", "host", 1, ["a", "b", "c"], 30, stale_after=10)
    assert kept == {"a", "b"} and live == ["me", "other"]


def test_keep_alive_says_when_a_silent_replicas_first_lease_ends(leases: LeaseStore) -> None:
    now = leases.now()
    leases.heartbeat("busy", "host", 2, now)  # renewing: its leases are none of our business
    leases.try_acquire("a", "busy", now, 30)
    assert leases.keep_alive("me", "host", 1, [], 30, stale_after=10)[2] is None
    leases.heartbeat("gone", "host", 3, now - timedelta(seconds=20))  # silent for 20 s
    leases.try_acquire("b", "gone", now - timedelta(seconds=20), 30)  # ends 10 s from now
    leases.try_acquire("c", "gone", now - timedelta(seconds=15), 30)
    takeover_in = leases.keep_alive("me", "host", 1, [], 30, stale_after=10)[2]
    assert takeover_in is not None and 5 < takeover_in <= 10


def test_a_loop_handed_over_is_not_taken_back_before_its_release(leases: LeaseStore) -> None:
    from peach_tasks.scheduling.coordinator import Coordinator

    acquired: list[str] = []
    coordinator = Coordinator(leases, "me", 30, on_acquired=lambda lease, _delay: acquired.append(lease.loop),
                              on_lost=lambda loop: None, on_surplus=lambda count: None)
    coordinator.start()
    coordinator.round(["a", "b"])
    assert sorted(acquired) == ["a", "b"]
    coordinator.hand_over("a")  # its thread ended after a hand-over; the release waits for the round
    assert coordinator.wake.is_set()
    # The race seen in the benchmark: a round's sharing step right after, before the
    # release. The row still names us as owner, but the loop must not be taken back.
    coordinator._share(["a", "b"], ["me"])
    assert acquired.count("a") == 1
    coordinator.round(["a", "b"])
    owners = {lease.loop: lease.owner for lease in leases.leases()}
    assert owners == {"a": None, "b": "me"} and coordinator.held.loops == {"b"}

"""The alert job: a named side job of ``serve`` that never blocks a loop.

Each round (every ``ROUND_SECONDS``, on a connection pool of its own):

1. freshness: active tasks whose last success is now too old are marked stale, once
   each across every replica (a conditional UPDATE), and journalled;
2. routing: new journal events become outbox rows, one per rule that wants them, with
   each rule's rate limit applied (the rest are kept as SUPPRESSED);
3. delivery: due rows are claimed one at a time and sent; a failure is retried with
   exponential backoff (``alerts.delivery``) and given up (FAILED) after
   ``max_attempts`` or at once when retrying cannot help (a 404, a refused address);
4. upkeep, hourly: finished rows older than ``keep_days`` go.

Delivery is at least once: a row is marked SENT after its receiver answered, so a
replica killed between the two sends it again after its restart (or once its claim
expires, by another replica). Every alert carries its key for the receiver to drop the
repeat. Two live replicas never send the same row: a row is claimed before it is sent.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..observability.alert_rules import RuleSet
from ..observability.alert_send import DeliveryError, deliver
from ..store.alert_journal import mark_stale
from ..store.alert_outbox import AlertOutbox, Claimed
from ..store.store import utcnow
from .side_job import SideJob

if TYPE_CHECKING:
    from ..settings import Settings
    from ..store import Store
    from .registry import Snapshot

log = logging.getLogger(__name__)

ROUND_SECONDS = 1.0
PRUNE_SECONDS = 3600.0
SENDS_PER_ROUND = 50  # then the next round (stale checks and routing) comes first


class AlertDispatcher(SideJob):
    thread_name = "alerts"

    def __init__(self, settings: "Settings", store: "Store", snapshot: Callable[[], "Snapshot"], owner: str,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings, self.alerts = settings, settings.alerts
        self.store, self.snapshot, self.owner, self.environ = store, snapshot, owner, environ
        super().__init__(store.side_engine())
        self.outbox = AlertOutbox(self.engine)
        self._stale_checked = float("-inf")
        self._pruned = float("-inf")
        delivery = self.alerts.delivery
        # A claim outlives the slowest send it covers by far: another replica never takes
        # over a row whose sender is still waiting for its receiver.
        self.claim_seconds = 3 * delivery.timeout_seconds + 30

    # -- the side job ---------------------------------------------------------------
    def start(self) -> None:
        released = self.outbox.release_own(self.owner)
        if released:
            log.warning("alerts: %d alerts this replica was sending when it stopped are due again (receivers "
                        "may see them twice and can drop the repeat by its id)", released)
        super().start()

    def _forever(self) -> None:
        while not self.stop_event.wait(ROUND_SECONDS):
            try:
                self.round()
            except Exception:  # the database briefly gone: the next round tries again
                log.exception("alerts: a round failed; retrying")

    # -- one round --------------------------------------------------------------------
    def rules(self) -> RuleSet:
        snapshot = self.snapshot()
        repositories: dict[str, set[str]] = {}
        for (codops, _), task in snapshot.tasks.items():
            repositories.setdefault(codops, set()).add(task.spec.repo)
        return RuleSet(self.alerts, snapshot.alerts, repositories, self.settings.web.dashboard_url())

    def round(self) -> dict[str, int]:
        """One round (tests and ``run-once`` call it directly); returns what it did."""
        done = {"stale": 0, "routed": 0, "sent": 0, "failed": 0}
        if time.monotonic() - self._stale_checked >= self.alerts.check_seconds:
            self._stale_checked = time.monotonic()
            with self.engine.begin() as conn:
                done["stale"] = len(mark_stale(conn, utcnow(), alerting=True))
        rules = self.rules()
        done["routed"] = self.outbox.route(rules.deliveries, self.alerts.delivery.max_pending)
        for _ in range(SENDS_PER_ROUND):
            if self.stop_event.is_set():
                break
            claimed = self.outbox.claim(self.owner, self.claim_seconds)
            if not claimed:
                break
            for row in claimed:
                done["sent" if self._send(row, rules) else "failed"] += 1
        if time.monotonic() - self._pruned >= PRUNE_SECONDS:
            self._pruned = time.monotonic()
            self.outbox.prune(self.alerts.delivery.keep_days * 86400)
        return done

    def _send(self, row: Claimed, rules: RuleSet) -> bool:
        delivery = self.alerts.delivery
        destination = rules.destination(row.rule)
        try:
            if destination is None:
                raise DeliveryError(f"rule {row.rule} is no longer defined", permanent=True)
            deliver(destination, row.body, smtp=self.alerts.smtp, timeout=delivery.timeout_seconds,
                    environ=self.environ)
        except DeliveryError as exc:
            last = exc.permanent or row.attempts >= delivery.max_attempts
            retry_in = None if last else self.backoff(row.attempts)
            self.outbox.failed(row.id, self.owner, str(exc), retry_in)
            if last:
                log.error("alerts: gave up alert %s of rule %s after %d attempts: %s", row.key, row.rule,
                          row.attempts, exc)
            else:
                log.warning("alerts: alert %s of rule %s failed (%s); retrying in %.0fs", row.key, row.rule, exc,
                            retry_in)
            return False
        except Exception as exc:  # a bug of ours: the row is retried like a failed send
            log.exception("alerts: sending alert %s failed inside the scheduler", row.key)
            self.outbox.failed(row.id, self.owner, f"internal error: {exc!r}", self.backoff(row.attempts))
            return False
        self.outbox.sent(row.id, self.owner)
        return True

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt: doubling from backoff_seconds, capped, with
        a tenth of jitter so that replicas' retries do not come in step."""
        delivery = self.alerts.delivery
        wait = min(delivery.backoff_seconds * 2 ** max(attempts - 1, 0), delivery.max_backoff_seconds)
        return wait * random.uniform(0.9, 1.0)


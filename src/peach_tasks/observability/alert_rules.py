"""Which rules want an event: the platform's (scheduler.yaml) and the organisations' own.

One alert per state change: a failure is announced when a task's failures in a row reach
the rule's ``after`` (not at every later failure), and its recovery only to the rules that
heard of its fall. An organisation's rule hears only of its own tasks and problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..alert_settings import (
    PROBLEM_APPEARED,
    PROBLEM_CLEARED,
    REPLICA_DIED,
    RUN_FAILED,
    RUN_TIMED_OUT,
    TASK_RECOVERED,
    TASK_STALE,
    AlertSettings,
    Destination,
    RateLimit,
    SourcedRule,
)
from ..store.alert_outbox import Delivery, Event
from .alert_render import payload

PLATFORM = "platform"


@dataclass(frozen=True)
class Target:
    key: str  # "platform/<name>" or "<codops>/<name>"
    events: frozenset[str]
    after: int
    rate: RateLimit
    destination: Destination
    organisations: frozenset[str] | None  # platform rule's `codops`; an organisation's rule: its own
    tasks: frozenset[str] | None = None  # an organisation's rule's `tasks`
    own: str | None = None  # set for an organisation's rule: its codops


class RuleSet:
    """The rules in force; routing asks ``deliveries``, sending asks ``destination``."""

    def __init__(self, settings: AlertSettings, organisation_rules: Mapping[str, Iterable[SourcedRule]] = {},
                 repositories: Mapping[str, set[str]] = {}, dashboard: str = "") -> None:
        self.dashboard = dashboard
        self.repositories = repositories  # codops -> repositories holding its tasks
        self.targets: dict[str, Target] = {}
        for rule in settings.rules:
            self.targets[f"{PLATFORM}/{rule.name}"] = Target(
                f"{PLATFORM}/{rule.name}", frozenset(rule.events), rule.after, rule.rate_limit,
                settings.destinations[rule.destination], frozenset(rule.codops) if rule.codops is not None else None)
        for codops, rules in organisation_rules.items():
            for sourced in rules:
                rule = sourced.rule
                self.targets[sourced.key] = Target(
                    sourced.key, frozenset(rule.events), rule.after, rule.rate_limit, rule.destination,
                    frozenset([codops]), frozenset(rule.tasks) if rule.tasks is not None else None, codops)

    def destination(self, key: str) -> Destination | None:
        target = self.targets.get(key)
        return target.destination if target is not None else None

    def deliveries(self, event: Event) -> list[Delivery]:
        return [Delivery(t.key, t.destination.type, payload(event, t.key, self.dashboard), t.rate.count, t.rate.per)
                for t in self.targets.values() if self.wants(t, event)]

    def wants(self, target: Target, event: Event) -> bool:
        if not self._sees(target, event):
            return False
        data, kind = event.data, event.kind
        if kind == RUN_FAILED:
            streak = data.get("failures_in_row", 1)
            timed_out = data.get("status") == "TIMEOUT"
            return streak == target.after and (RUN_FAILED in target.events
                                               or (timed_out and RUN_TIMED_OUT in target.events))
        if kind == TASK_RECOVERED:
            # The rules that announced the fall hear of the recovery; a rule that asks for
            # recoveries alone hears of any (its `after` failures in a row, or staleness).
            failed = data.get("failures_before", 0) >= target.after
            stale = bool(data.get("was_stale"))
            wants_failed, wants_stale = bool(target.events & {RUN_FAILED, RUN_TIMED_OUT}), TASK_STALE in target.events
            if not wants_failed and not wants_stale:
                fell = failed or stale
            else:
                fell = (wants_failed and failed) or (wants_stale and stale)
            return TASK_RECOVERED in target.events and fell
        return kind in target.events

    def _sees(self, target: Target, event: Event) -> bool:
        if event.kind == REPLICA_DIED:  # replicas run every organisation's loops
            return target.own is None and target.organisations is None
        allowed = target.organisations
        if event.kind in (PROBLEM_APPEARED, PROBLEM_CLEARED):
            if allowed is None:
                return True
            if event.codops is not None:
                return event.codops in allowed
            scope = event.data.get("scope")  # a repository's problem: its organisations see it
            return any(scope in self.repositories.get(codops, ()) for codops in allowed)
        if allowed is not None and event.codops not in allowed:
            return False
        return target.tasks is None or event.task in target.tasks

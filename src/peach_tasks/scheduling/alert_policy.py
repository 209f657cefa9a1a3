"""The platform's say over organisations' own alert rules, applied at each sync (and by
``validate`` when it is given scheduler.yaml).

A rule whose destination the platform does not allow (``alerts.organisations`` in
scheduler.yaml: webhook hosts, mail domains, rules per organisation) is dropped and
becomes a problem at its line, like any other mistake in a definition file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

from ..alert_settings import OrganisationPolicy, SourcedRule
from ..errors import Problem
from .registry import Snapshot


def allowed_rules(rules: Iterable[SourcedRule], policy: OrganisationPolicy,
                  tasks: Mapping[str, Collection[str]]) -> tuple[list[SourcedRule], list[Problem]]:
    """The rules the policy allows, and a problem for each one it does not (and for a rule
    naming a task its organisation does not define; that rule is kept). ``tasks``: codops ->
    its task names."""
    kept: list[SourcedRule] = []
    problems: list[Problem] = []
    per_org: dict[str, int] = {}
    for sourced in rules:
        codops, rule = sourced.codops, sourced.rule
        reason = rule.policy_problem(policy)
        if reason is None and per_org.get(codops, 0) >= policy.max_rules:
            reason = (f"alert rule '{rule.name}': {codops} has {policy.max_rules} rules already, the most this "
                      "scheduler allows (alerts.organisations.max_rules); merge some")
        if reason is not None:
            problems.append(Problem("config", sourced.repo, reason, sourced.file, sourced.line))
            continue
        unknown = sorted(set(rule.tasks or ()) - set(tasks.get(codops, ())))
        if unknown:  # kept: the task may come back; said so that a typo is seen
            problems.append(Problem("config", sourced.repo, f"alert rule '{rule.name}' names tasks {codops} does "
                                    f"not define: {', '.join(unknown)}; fix `tasks`", sourced.file, sourced.line))
        per_org[codops] = per_org.get(codops, 0) + 1
        kept.append(sourced)
    return kept, problems


def alert_rules_allowed(snapshot: Snapshot, policy: OrganisationPolicy) -> Snapshot:
    if not snapshot.alerts:
        return snapshot
    names: dict[str, set[str]] = {}
    for codops, name in snapshot.tasks:
        names.setdefault(codops, set()).add(name)
    kept, found = allowed_rules([r for rules in snapshot.alerts.values() for r in rules], policy, names)
    problems = {repo: list(p) for repo, p in snapshot.problems.items()}
    for problem in found:
        problems.setdefault(problem.scope, []).append(problem)
    alerts: dict[str, tuple[SourcedRule, ...]] = {}
    for sourced in kept:
        alerts[sourced.codops] = (*alerts.get(sourced.codops, ()), sourced)
    return dataclasses.replace(snapshot, alerts=alerts, problems={r: tuple(p) for r, p in problems.items()})

"""The platform's say over organisations' own alert rules, applied at each sync.

A rule whose destination the platform does not allow (``alerts.organisations`` in
scheduler.yaml: webhook hosts, mail domains, rules per organisation) is dropped and
becomes a problem at its line, like any other mistake in a definition file.
"""

from __future__ import annotations

import dataclasses

from ..alert_settings import OrganisationPolicy
from ..errors import Problem
from ..registry import Snapshot


def alert_rules_allowed(snapshot: Snapshot, policy: OrganisationPolicy) -> Snapshot:
    if not snapshot.alerts:
        return snapshot
    problems = {repo: list(found) for repo, found in snapshot.problems.items()}
    kept: dict[str, tuple] = {}
    for codops, rules in snapshot.alerts.items():
        allowed = []
        for sourced in rules:
            reason = sourced.rule.policy_problem(policy)
            if reason is None and len(allowed) >= policy.max_rules:
                reason = (f"alert rule '{sourced.rule.name}': {codops} has {policy.max_rules} rules already, the "
                          "most this scheduler allows (alerts.organisations.max_rules); merge some")
            if reason is None:
                unknown = sorted(set(sourced.rule.tasks or ()) - {n for c, n in snapshot.tasks if c == codops})
                if unknown:  # kept: the task may come back; said so that a typo is seen
                    problems.setdefault(sourced.repo, []).append(Problem(
                        "config", sourced.repo, f"alert rule '{sourced.rule.name}' names tasks {codops} does not "
                        f"define: {', '.join(unknown)}; fix `tasks`", sourced.file, sourced.line))
                allowed.append(sourced)
                continue
            problems.setdefault(sourced.repo, []).append(Problem("config", sourced.repo, reason, sourced.file,
                                                                 sourced.line))
        if allowed:
            kept[codops] = tuple(allowed)
    return dataclasses.replace(snapshot, alerts=kept, problems={r: tuple(p) for r, p in problems.items()})

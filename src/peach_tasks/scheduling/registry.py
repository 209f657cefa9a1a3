"""A snapshot of every task of every repository, as of one sync.

The snapshot is immutable; the scheduler swaps in a new one after each sync and each
loop iteration starts from the newest. Duplicates across repositories are settled here:
the definition registered first (repository order in scheduler.yaml, then file path)
keeps running and every later one is a problem; so are a task naming an environment its
organisation never declared (it is left out) and conflicting pins (``py_environments.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..alert_settings import SourcedRule
from ..errors import Problem
from ..model import BASE_ENV, METADATA_LOOP, TaskSpec
from ..sources.definitions import RepoDefinitions
from ..sources.py_environments import environment_sets, merge_declarations, unknown_environment
from ..sources.repos import Checkout


@dataclass(frozen=True)
class RegisteredTask:
    spec: TaskSpec
    checkout: Checkout
    version: str


@dataclass(frozen=True)
class Snapshot:
    tasks: dict[tuple[str, str], RegisteredTask] = field(default_factory=dict)
    # loop name -> task keys in the stable order the loop runs them
    loops: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # (codops, environment) -> normalised requirements (base + the environment's own, all
    # repositories): base for every organisation with a task, and every environment a task uses
    environments: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # repository name -> its config problems (including duplicates found here)
    problems: dict[str, tuple[Problem, ...]] = field(default_factory=dict)
    # codops -> its own alert rules (``alerts:`` in its definition files), first definition kept
    alerts: dict[str, tuple[SourcedRule, ...]] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def loop_names(self) -> list[str]:
        return sorted(self.loops)

    @property
    def requirements(self) -> dict[str, tuple[str, ...]]:
        """Each organisation's ``base`` set (what it had before named environments)."""
        return {codops: reqs for (codops, env), reqs in self.environments.items() if env == BASE_ENV}


def build_snapshot(found: list[tuple[str, Checkout | None, RepoDefinitions | None]]) -> Snapshot:
    """``found`` is (repository name, last good checkout, its definitions), in settings order."""
    tasks: dict[tuple[str, str], RegisteredTask] = {}
    problems: dict[str, list[Problem]] = {}
    alerts: dict[str, list[SourcedRule]] = {}
    declarations = merge_declarations(defs.environments for _, checkout, defs in found
                                      if checkout is not None and defs is not None)
    for repo, checkout, defs in found:
        if checkout is None or defs is None:
            continue
        problems[repo] = list(defs.problems)
        for sourced in defs.alerts:
            own = alerts.setdefault(sourced.codops, [])
            earlier = next((a for a in own if a.rule.name == sourced.rule.name), None)
            if earlier is None:
                own.append(sourced)
                continue
            problems[repo].append(Problem(
                "config", repo, f"alert rule '{sourced.rule.name}' of {sourced.codops} is already defined in "
                f"{earlier.repo}:{earlier.file}:{earlier.line}, which is used; rename or remove one of them",
                sourced.file, sourced.line))
        for spec in defs.tasks:
            first = tasks.get(spec.key)
            if first is not None:
                where = f"{first.spec.repo}:{first.spec.source_file}:{first.spec.source_line}"
                problems[repo].append(Problem(
                    "config", repo,
                    f"task '{spec.codops}/{spec.name}' is already defined in {where}, which keeps running; "
                    "rename or remove one of them",
                    spec.source_file, spec.source_line))
                continue
            unknown = unknown_environment(spec, declarations)
            if unknown is not None:
                problems[repo].append(unknown)
                continue
            tasks[spec.key] = RegisteredTask(spec, checkout, checkout.version_of(spec.notebook))
    loops: dict[str, list[tuple[str, str]]] = {}
    for key, task in tasks.items():
        loops.setdefault(task.spec.loop_name, []).append(key)
    if METADATA_LOOP not in loops:
        loops[METADATA_LOOP] = []
    sets = environment_sets(declarations, [task.spec for task in tasks.values()])
    for problem in sets.problems:
        problems.setdefault(problem.scope, []).append(problem)
    return Snapshot(
        tasks=tasks,
        loops={name: tuple(sorted(keys)) for name, keys in loops.items()},
        environments=sets.sets,
        problems={repo: tuple(p) for repo, p in problems.items()},
        alerts={codops: tuple(rules) for codops, rules in alerts.items()},
    )

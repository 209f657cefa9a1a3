"""``peach-tasks validate``: check a working copy with the code the scheduler runs.

Every check here calls the very function the scheduler calls for the same step, so
"validate says it is fine" and "the scheduler runs it" cannot drift apart:

* definition files, types, paths, codops, timeouts, requirement strings and
  duplicates: :func:`definitions.load_definitions`;
* notebook readable, entry method found, extracted code compiles:
  :func:`notebook_problems.notebook_problems` (the scheduler's sync calls it too);
* named environments: a task's ``py_env`` declared, no conflicting pins
  (:mod:`py_environments`, as the registry);
* (``resolve=True``) each environment's requirement set, built as the registry builds
  it, resolved by ``uv pip compile``, which installs nothing.

Only *where* a problem is reported is added: a syntax error points at the line of
the ``.ipynb`` file that holds the offending source line, a missing method at the
task's ``method:`` line, and files git does not track are reported because the
scheduler only ever sees what is committed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..alert_settings import OrganisationPolicy
from ..errors import Problem
from ..executors.environments import uv_binary, uv_env
from ..model import TaskSpec
from ..scheduling.alert_policy import allowed_rules
from ..sources.definitions import RepoDefinitions, load_definitions
from ..sources.notebook_problems import DefinitionLines, notebook_problems
from ..sources.py_environments import env_label, environment_sets, unknown_environment

RESOLVE_TIMEOUT = 300.0
_OUTPUT_TAIL = 12


@dataclass(frozen=True)
class Report:
    """What ``validate_directory`` found: every problem, in file and line order."""

    root: Path
    problems: tuple[Problem, ...]
    tasks: tuple[TaskSpec, ...]
    files: tuple[str, ...]
    seconds: float
    # codops (its base environment) or codops/env -> pinned set
    resolved: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_directory(
    root: Path,
    *,
    allowed_codops: Collection[str] | None = None,
    timeouts: tuple[float, float] = (3600.0, 300.0),
    resolve: bool = False,
    python_version: str | None = None,
    alert_policy: OrganisationPolicy | None = None,
) -> Report:
    """Check the working copy at ``root``; never raises for anything in it.

    ``allowed_codops`` and ``timeouts`` are what ``scheduler.yaml`` would give this
    repository (organisation loop, metadata loop). With ``resolve``, each
    organisation's dependencies are resolved with uv for ``python_version`` (default:
    this interpreter's) without installing anything. ``alert_policy``: what scheduler.yaml
    lets organisations' own alert rules send to (checked only when given).
    """
    started = time.perf_counter()
    root = Path(root)
    defs = load_definitions(root, root.resolve().name, allowed_codops, timeouts)
    problems = list(defs.problems)
    lines = DefinitionLines(root)
    if not defs.files:
        problems.append(Problem("config", root.name, "no peach.yaml or peach.conf/*.yaml here; add one that "
                                "defines your tasks (see the tutorial), or run validate in the repository root",
                                file="peach.yaml"))
    problems.extend(notebook_problems(root, defs.tasks, lines))
    problems.extend(_untracked(root, defs))
    if alert_policy is not None:
        names: dict[str, set[str]] = {}
        for spec in defs.tasks:
            names.setdefault(spec.codops, set()).add(spec.name)
        problems.extend(allowed_rules(defs.alerts, alert_policy, names)[1])
    for spec in defs.tasks:
        unknown = unknown_environment(spec, defs.environments)
        if unknown is not None:  # the scheduler also sees the organisation's other repositories
            problems.append(dataclasses.replace(unknown, message=unknown.message + (
                " (validate sees this repository only: an environment another repository of the organisation "
                "declares is accepted by the scheduler)")))
    sets = environment_sets(defs.environments, defs.tasks)
    problems.extend(sets.problems)
    resolved: dict[str, tuple[str, ...]] = {}
    if resolve:
        for (codops, env), requirements in sets.sets.items():
            label = env_label(codops, env)
            pinned, problem_list = resolve_requirements(label, requirements, root, defs, python_version, lines)
            problems.extend(problem_list)
            if pinned is not None:
                resolved[label] = pinned
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return Report(root, tuple(problems), defs.tasks, defs.files, time.perf_counter() - started, resolved)


# -- git -------------------------------------------------------------------------------

def _untracked(root: Path, defs: RepoDefinitions) -> Iterator[Problem]:
    """Files the tasks need that git does not track: the scheduler's checkout lacks them."""
    try:
        # Without --full-name the paths are relative to root, as defs.files are.
        proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", "."],
                              capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return  # no git here: nothing to compare with
    if proc.returncode != 0:
        return  # not a git working copy (an exported tree, a CI artifact)
    tracked = {name for name in proc.stdout.decode("utf-8", "replace").split("\0") if name}
    for rel in defs.files:
        if rel not in tracked:
            yield Problem("config", root.name, "this file is not tracked by git, so the scheduler will not "
                                               f"see it; `git add {rel}` and commit it", rel)
    reported: set[str] = set()
    for spec in defs.tasks:
        if spec.notebook not in tracked and spec.notebook not in reported and spec.source_file in tracked:
            reported.add(spec.notebook)
            yield Problem("notebook", f"{spec.codops}/{spec.name}",
                          f"notebook '{spec.notebook}' is not tracked by git, so the scheduler will not see it; "
                          f"`git add {spec.notebook}` and commit it", spec.source_file, spec.source_line)


# -- resolving with uv ----------------------------------------------------------------

def resolve_requirements(
    codops: str,
    requirements: tuple[str, ...],
    root: Path,
    defs: RepoDefinitions,
    python_version: str | None = None,
    lines: "DefinitionLines | None" = None,
) -> tuple[tuple[str, ...] | None, list[Problem]]:
    """Resolve one organisation's set with ``uv pip compile`` (nothing is installed).

    Returns the pinned set, or None and the problems, placed at the dependency
    entries whose packages uv's error names (else at the first definition file).
    """
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not requirements:
        return (), []
    env = uv_env()
    cmd = [uv_binary(), "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate",
           "--python-version", version]
    try:
        proc = subprocess.run(cmd, input="\n".join(requirements) + "\n", capture_output=True, text=True,
                              timeout=RESOLVE_TIMEOUT, env=env)
        failed, output = proc.returncode != 0, proc.stderr or proc.stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, output = True, str(exc)
    if not failed:
        pinned = tuple(line.strip() for line in proc.stdout.splitlines()
                       if line.strip() and not line.lstrip().startswith("#"))
        return pinned, []
    tail = " | ".join(line.strip() for line in output.strip().splitlines()[-_OUTPUT_TAIL:] if line.strip())
    message = (f"the dependencies of '{codops}' cannot be resolved for Python {version} "
               f"(uv: {tail}); fix the versions or remove the package")
    named = _named_in(output, requirements)
    own, _, env = codops.partition("/")
    declared = [d for name, entries in defs.environments.get(own, {}).items() if name in ("base", env or "base")
                for d in entries]
    entries = [(d.file, canonicalize_name(Requirement(d.requirement).name), d.line) for d in declared]
    places = [(rel, line) for rel, name, line in entries if name in named]
    if not places:  # uv named nothing we know (network, index): point at the first list
        places = [(entries[0][0], entries[0][2])] if entries else [(defs.files[0] if defs.files else "", None)]
    return None, [Problem("environment", codops, message, rel, line) for rel, line in places]


def _named_in(output: str, requirements: tuple[str, ...]) -> set[str]:
    """Canonical names of the requirements that uv's message mentions."""
    words = {canonicalize_name(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", output)}
    return {name for name in (canonicalize_name(Requirement(r).name) for r in requirements) if name in words}


# -- output ----------------------------------------------------------------------------

def shown_path(root: Path, rel: str, given: str) -> str:
    """``rel`` as a person typed the directory: bare when it is '.', else joined to it."""
    if not rel:
        return given
    return rel if given in ("", ".", "./") else os.path.join(given, rel)


def report_lines(report: Report, given: str) -> list[str]:
    """Each problem as ``FILE:LINE: message`` (``FILE: message`` when there is no line)."""
    out = []
    for p in report.problems:
        where = shown_path(report.root, p.file, given)
        out.append(f"{where}:{p.line}: {p.message}" if p.line else f"{where}: {p.message}")
    return out


def report_json(report: Report, given: str) -> str:
    """The report for tools: ``{"ok", "tasks", "problems": [{file, path, line, kind, scope, message}]}``."""
    return json.dumps({
        "ok": report.ok,
        "tasks": [f"{t.codops}/{t.name}" for t in report.tasks],
        "files": list(report.files),
        "resolved": {codops: list(pins) for codops, pins in report.resolved.items()},
        "problems": [{"file": p.file, "path": shown_path(report.root, p.file, given), "line": p.line,
                      "kind": p.kind, "scope": p.scope, "message": p.message} for p in report.problems],
        "seconds": round(report.seconds, 4),
    }, indent=2)

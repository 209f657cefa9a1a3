"""Named Python environments: which packages each (organisation, environment) needs.

Two forms of definition file declare packages, one per file:

* the tutorial's: a root ``dependencies:`` list and a task's own ``dependencies:``, both of
  which go into the organisation's one environment, ``base``;
* today's PEACH: ``py_environments: {base: {dependencies: [...]}, ml: {dependencies: [...]}}``
  and ``py_env: ml`` on a task (omitted: ``base``).

Every environment other than ``base`` inherits ``base``: ``ml`` is ``base`` + ``ml``. One
organisation's declarations of the same environment in several files and repositories are
merged; two entries that pin the same package to versions that cannot both hold are a
problem naming both places, and the first one (repository order in scheduler.yaml, then
file path, then line) is kept, as for a task defined twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..errors import Problem
from ..model import BASE_ENV, TaskSpec
from .requirements import normalise_requirements

# An environment's name is a folder name under state_dir/envs/<codops>/ and a label in URLs.
ENV_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Declared:
    """One dependency entry as written, and where: what a conflict names."""

    requirement: str
    repo: str
    file: str
    line: int | None

    @property
    def place(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{self.repo}:{where}" if self.repo else where


# codops -> environment name -> its entries, in file order. An environment declared with no
# packages is present with an empty tuple, so that a task may still name it.
Declarations = Mapping[str, Mapping[str, Sequence[Declared]]]


def env_label(codops: str, env: str) -> str:
    """How an environment is named to people and in problem scopes: the codops for ``base``
    (as before there were named environments), ``codops/env`` otherwise."""
    return codops if env == BASE_ENV else f"{codops}/{env}"


def merge_declarations(all_decls: Iterable[Declarations]) -> dict[str, dict[str, list[Declared]]]:
    """Several repositories' (or files') declarations as one, in the order given."""
    merged: dict[str, dict[str, list[Declared]]] = {}
    for decls in all_decls:
        for codops, envs in decls.items():
            for env, entries in envs.items():
                merged.setdefault(codops, {}).setdefault(env, []).extend(entries)
    return merged


def unknown_environment(spec: TaskSpec, declared: Mapping[str, Mapping[str, object]]) -> Problem | None:
    """The problem of a task naming an environment its organisation never declared, or None."""
    if spec.environment == BASE_ENV or spec.environment in declared.get(spec.codops, {}):
        return None
    known = sorted({BASE_ENV, *declared.get(spec.codops, {})})
    return Problem("config", spec.repo,
                   f"task '{spec.codops}/{spec.name}' uses py_env '{spec.environment}', which no definition file "
                   f"of '{spec.codops}' declares (declared: {', '.join(known)}); add it under `py_environments:` "
                   "or fix `py_env`", spec.source_file, spec.env_line or spec.source_line)


@dataclass(frozen=True)
class EnvironmentSets:
    """What the scheduler builds: (codops, environment) -> normalised requirement set."""

    sets: dict[tuple[str, str], tuple[str, ...]]
    problems: tuple[Problem, ...]


def environment_sets(declarations: Declarations, specs: Iterable[TaskSpec]) -> EnvironmentSets:
    """The set of ``base`` of every organisation with a task and of every other environment a
    task uses (``base`` + its own entries), conflicting pins left out with a problem each."""
    wanted: set[tuple[str, str]] = set()
    for spec in specs:
        wanted.add((spec.codops, BASE_ENV))
        wanted.add((spec.codops, spec.environment))
    problems: list[Problem] = []
    sets: dict[tuple[str, str], tuple[str, ...]] = {}
    base_kept: dict[str, list[tuple[Declared, Requirement]]] = {}
    for codops, env in sorted(wanted, key=lambda k: (k[0], k[1] != BASE_ENV, k[1])):
        envs = declarations.get(codops, {})
        if codops not in base_kept:
            base_kept[codops] = _without_conflicts([], envs.get(BASE_ENV, ()), codops, BASE_ENV, problems)
        kept = base_kept[codops]
        if env != BASE_ENV:
            kept = _without_conflicts(list(kept), envs.get(env, ()), codops, env, problems)
        sets[(codops, env)] = normalise_requirements(d.requirement for d, _ in kept)
    return EnvironmentSets(sets, tuple(problems))


def _without_conflicts(kept: list[tuple[Declared, Requirement]], entries: Iterable[Declared], codops: str,
                       env: str, problems: list[Problem]) -> list[tuple[Declared, Requirement]]:
    """``kept`` (base's kept entries, or nothing for base itself) plus each of ``entries``
    that conflicts with none of them."""
    base = [d for d, _ in kept] if env != BASE_ENV else []
    for entry in entries:
        req = Requirement(entry.requirement.strip())
        clash = next((first for first, earlier in kept if _conflict(req, earlier)), None)
        if clash is None:
            kept.append((entry, req))
            continue
        inherited = " (inherited from base)" if any(clash is d for d in base) else ""
        problems.append(Problem(
            "config", entry.repo,
            f"'{entry.requirement.strip()}' conflicts with '{clash.requirement.strip()}' declared in "
            f"{clash.place}{inherited} for environment '{env_label(codops, env)}'; that one is kept. "
            "Pin the same version in both places, or remove one of them",
            entry.file, entry.line))
    return kept


def _conflict(a: Requirement, b: Requirement) -> bool:
    """Two requirements of one package that no single version satisfies, as far as exact
    pins tell (``==1.3`` against ``==1.4`` or ``>=2``); ranges alone are left to uv."""
    if canonicalize_name(a.name) != canonicalize_name(b.name) or str(a.marker) != str(b.marker):
        return False
    for pinned, other in ((a, b), (b, a)):
        for version in _pins(pinned):
            if not other.specifier.contains(version, prereleases=True):
                return True
    return False


def _pins(req: Requirement) -> list[str]:
    return [s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]

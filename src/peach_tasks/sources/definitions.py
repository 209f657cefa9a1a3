"""Task definitions committed to a repository: ``peach.yaml`` and ``peach.conf/*.yaml``.

One definition file names one organisation (``codops``), the packages its environment
needs and its tasks::

    codops: default
    dependencies: [tabulate]
    tasks:
      tf_task:
        notebook: tensorflow_demo.ipynb
        method: train_model
        executor: python
        timeout: 120

or, in today's PEACH form, named environments (``py_environments.py``)::

    codops: chrts
    py_environments:
      base: {dependencies: [requests]}
      ml: {dependencies: [scikit-learn]}
    tasks:
      train: {notebook: train.ipynb, method: train_model, py_env: ml}

This module finds a checkout's definition files and reads them (a file that is
missing, unreadable, not UTF-8 or a link out of the repository is a problem, not an
error); ``definition_file.py`` checks each file's content. Nothing here raises for bad
input: every mistake becomes one ``Problem`` with the file and line to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..alert_settings import SourcedRule
from ..errors import Problem
from ..model import TaskSpec
from .definition_file import parse_definition_file, parse_definition_text  # noqa: F401 - imported from here too
from .py_environments import Declared, merge_declarations

ROOT_FILES = ("peach.yaml", "peach.yml")
CONF_DIR = "peach.conf"
CONF_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RepoDefinitions:
    """Everything one repository defines, and what is wrong with it.

    ``tasks`` are in file order (files sorted by relative path, tasks in document
    order), each (codops, name) at most once. ``org_dependencies`` maps each codops
    whose files have a root ``dependencies`` key to its valid entries, as written.
    ``files`` lists the definition files found, as relative POSIX paths. ``environments``
    holds every package entry of both forms with its place, by codops and environment
    (an environment declared without packages maps to an empty tuple).
    """

    tasks: tuple[TaskSpec, ...]
    org_dependencies: dict[str, tuple[str, ...]]
    problems: tuple[Problem, ...]
    files: tuple[str, ...]
    # The organisations' own alert rules (``alerts:``), each (codops, name) once.
    alerts: tuple[SourcedRule, ...] = ()
    environments: dict[str, dict[str, tuple[Declared, ...]]] = field(default_factory=dict)


def _scan(root: Path) -> tuple[list[Path], list[str]]:
    """Definition files under ``root`` sorted by relative path, and why any could not be listed."""
    found: list[Path] = []
    errors: list[str] = []
    for name in ROOT_FILES:
        path = root / name
        if _is_file_or_link(path):
            found.append(path)
    conf = root / CONF_DIR
    try:
        conf_is_dir = conf.is_dir()
    except OSError:
        conf_is_dir = True  # listing it below reports the error
    if conf_is_dir:
        try:
            entries = list(conf.iterdir())
        except OSError as exc:
            errors.append(f"cannot list {CONF_DIR}/ ({exc.strerror or exc}); check its permissions")
            entries = []
        for path in entries:
            # Hidden files are editor leftovers (".#tasks.yaml"), as a shell glob would skip them.
            if path.name.startswith(".") or not path.name.endswith(CONF_SUFFIXES):
                continue
            if _is_file_or_link(path):
                found.append(path)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found, errors


def _is_file_or_link(path: Path) -> bool:
    # A dangling or outward symlink is still listed: reading it reports the problem.
    try:
        return path.is_symlink() or path.is_file()
    except OSError:
        return True  # e.g. no permission: reading it will say so


def definition_files(root: Path) -> list[Path]:
    """The definition files of the repository at ``root``, sorted by relative POSIX path.

    That is ``peach.yaml`` / ``peach.yml`` at the root and every ``peach.conf/*.yaml`` /
    ``*.yml`` (not recursive, hidden files skipped).
    """
    return _scan(root)[0]


def load_definitions(
    root: Path,
    repo: str,
    allowed_codops: Collection[str] | None = None,
    default_timeouts: tuple[float, float] = (3600.0, 300.0),
) -> RepoDefinitions:
    """Read every definition file of the checkout at ``root``; never raises for bad input.

    ``repo`` is the repository's name (the scope of every problem). ``allowed_codops``,
    when given, is the set of organisations this repository may define tasks for.
    ``default_timeouts`` are the run-time limits of an organisation's loop and of the
    metadata loop; a task's ``timeout`` may only shorten them. A (codops, task) defined
    twice in this repository keeps its first definition and reports the others.
    """
    paths, scan_errors = _scan(root)
    problems = [Problem(kind="config", scope=repo, message=m, file=CONF_DIR) for m in scan_errors]
    tasks: list[TaskSpec] = []
    org_deps: dict[str, list[str]] = {}
    envs: list[dict[str, dict[str, list[Declared]]]] = []
    files: list[str] = []
    alerts: list[SourcedRule] = []
    try:
        root_resolved = root.resolve()
    except (OSError, RuntimeError):
        root_resolved = root.absolute()

    for path in paths:
        rel = path.relative_to(root).as_posix()
        files.append(rel)

        def problem(message: str, line: int | None = None, rel: str = rel) -> None:
            problems.append(Problem(kind="config", scope=repo, message=message, file=rel, line=line))

        text = _read_text(path, root_resolved, problem)
        if text is None:
            continue
        try:
            parsed = parse_definition_file(text, rel, root, repo, allowed_codops, default_timeouts)
            file_tasks, file_deps, file_problems = parsed.tasks, parsed.dependencies, parsed.problems
            file_alerts = parsed.alerts
            envs.append(parsed.environments)
        except Exception as exc:  # noqa: BLE001 - one unforeseen bug must not stop every repository
            problem(
                f"internal error while reading this file ({type(exc).__name__}: {exc}); "
                "report it to the platform team"
            )
            continue
        tasks.extend(file_tasks)
        problems.extend(file_problems)
        for sourced in file_alerts:
            earlier = next((a for a in alerts if a.key == sourced.key), None)
            if earlier is None:
                alerts.append(sourced)
            else:
                problem(f"alert rule '{sourced.rule.name}' of {sourced.codops} is already defined in "
                        f"{earlier.file}:{earlier.line}; rename one of them", sourced.line)
        for codops, deps in file_deps.items():
            kept = org_deps.setdefault(codops, [])
            kept.extend(d for d in deps if d not in kept)

    unique: list[TaskSpec] = []
    first: dict[tuple[str, str], TaskSpec] = {}
    for spec in tasks:
        earlier = first.get(spec.key)
        if earlier is None:
            first[spec.key] = spec
            unique.append(spec)
            continue
        where = f"{earlier.source_file}:{earlier.source_line}" if earlier.source_line else earlier.source_file
        problems.append(
            Problem(
                kind="config",
                scope=repo,
                message=f"task '{spec.codops}/{spec.name}' is already defined in {where}; rename one of them",
                file=spec.source_file,
                line=spec.source_line,
            )
        )
    return RepoDefinitions(
        tasks=tuple(unique),
        org_dependencies={codops: tuple(deps) for codops, deps in org_deps.items()},
        problems=tuple(problems),
        files=tuple(files),
        alerts=tuple(alerts),
        environments={codops: {env: tuple(entries) for env, entries in by_env.items()}
                      for codops, by_env in merge_declarations(envs).items()},
    )


MAX_DEFINITION_BYTES = 1 << 20


def _read_text(path: Path, root_resolved: Path, problem: Callable[..., None]) -> str | None:
    """The file's text, or None after reporting why it cannot be used."""
    try:
        if not path.resolve().is_relative_to(root_resolved):
            problem("this file is a symbolic link leading out of the repository; commit the file itself")
            return None
        size = path.stat().st_size
        if size > MAX_DEFINITION_BYTES:  # not read: a hostile repository's 2 GB file would be held whole
            problem(f"this file is {size} bytes, more than the {MAX_DEFINITION_BYTES >> 20} MiB a definition file "
                    "may be; split the tasks over peach.conf/*.yaml files")
            return None
        data = path.read_bytes()
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        problem(f"this file cannot be read ({reason}); commit a readable file or remove it")
        return None
    try:
        # A byte order mark some Windows editors add is harmless; it is stripped after
        # decoding so that error offsets still count from the start of the file.
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem(f"this file is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8", line)
        return None

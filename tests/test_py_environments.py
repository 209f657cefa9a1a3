"""Named Python environments (today's PEACH ``py_environments`` / ``py_env``) beside the
tutorial's ``dependencies``: real git repositories, real uv environments, real task processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import Repo, write_settings
from web_helpers import start_server

from peach_tasks.cli import main
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.store import Store

# What a task can import, and which environment it runs in.
PROBE = """\
import importlib.util, os, sys

def probe():
    found = {m: importlib.util.find_spec(m) is not None for m in ("tabulate", "six", "toolz")}
    return {"found": found, "prefix": sys.prefix, "py_env": os.environ.get("PEACH_PY_ENV")}
"""

# The tutorial's form: one environment per organisation, task-level packages go there too.
TUTORIAL = """\
codops: chrts
dependencies: [tabulate]
tasks:
  old_style:
    notebook: probe.ipynb
    method: probe
    executor: python
"""

# Today's PEACH form, for the same organisation, in another repository.
PEACH = """\
codops: chrts
py_environments:
  base:                      # inherited by every other environment, and the default
    dependencies: [six]
  ml:
    dependencies: [toolz]
tasks:
  train:
    notebook: probe.ipynb
    method: probe
    executor: python
    py_env: ml
  fetch:
    notebook: probe.ipynb
    method: probe
    executor: python
    loop: metadata
"""


def two_repos(tmp_path: Path, old: str = TUTORIAL, new: str = PEACH) -> tuple[Repo, Repo]:
    repos = []
    for name, text in (("tutorial-repo", old), ("peach-repo", new)):
        repo = Repo(tmp_path / name)
        repo.notebook("probe.ipynb", PROBE)
        repo.write("peach.yaml", text)
        repo.commit()
        repos.append(repo)
    return repos[0], repos[1]


@pytest.fixture
def make(tmp_path: Path, open_scheduler: Any) -> Any:
    def factory(*repos: Repo) -> tuple[Scheduler, Store]:
        return open_scheduler(write_settings(tmp_path, [{"url": str(r.path)} for r in repos]))

    return factory


def result(store: Store, task: str) -> Any:
    run = store.runs("chrts", task, limit=1)[0]
    assert run["status"] == "SUCCESS", store.log(run["id"])
    return run["result"]


@pytest.mark.slow
def test_both_forms_side_by_side_build_base_and_ml_with_uv(tmp_path: Path, make: Any) -> None:
    old, new = two_repos(tmp_path)
    scheduler, store = make(old, new)
    scheduler.run_once()
    envs = scheduler.state_dir / "envs" / "chrts"
    base, ml = scheduler.envs.current("chrts"), scheduler.envs.current("chrts", "ml")
    assert base is not None and ml is not None and base.path != ml.path
    # base merges both repositories' base declarations; ml is base + its own.
    assert base.requirements == ("six", "tabulate")
    assert ml.requirements == ("six", "tabulate", "toolz")
    for env in (base, ml):  # really built by uv: a virtualenv holding the packages
        assert (env.path / "pyvenv.cfg").is_file()
        assert json.loads((env.path / "peach-env.json").read_text())["name"] == env.name
    # Each task ran in its own environment's interpreter and saw exactly its packages.
    for task, env, toolz in (("old_style", "base", False), ("fetch", "base", False), ("train", "ml", True)):
        seen = result(store, task)
        assert seen["found"] == {"tabulate": True, "six": True, "toolz": toolz}, task
        assert Path(seen["prefix"]).parent == envs / env and seen["py_env"] == env
    tasks = {t["name"]: t["environment"] for t in store.tasks(["chrts"])}
    assert tasks == {"old_style": "base", "fetch": "base", "train": "ml"}
    assert store.problems() == []

    # Cached by hash: a second sync builds nothing, the same folders stay current.
    scheduler.sync()
    assert scheduler.envs.current("chrts", "ml") == ml and scheduler.envs.current("chrts") == base

    # 'peach-tasks tasks' has the column; the API (and so the dashboard and the widget) the field.
    shown = CliRunner().invoke(main, ["--config", str(scheduler.settings.base_dir) + "/scheduler.yaml", "tasks"])
    assert shown.exit_code == 0 and "ENVIRONMENT" in shown.output, shown.output
    train_line = next(line for line in shown.output.splitlines() if " train " in f" {line} ")
    assert " ml " in f" {train_line} "
    web = start_server(scheduler.settings, store)
    try:
        body = httpx.get(web.url + "/api/organisations/chrts/tasks", timeout=30).json()
        assert {t["name"]: t["environment"] for t in body["tasks"]} == tasks
    finally:
        web.stop()


def test_unknown_py_env_is_a_problem_and_only_that_task_is_left_out(tmp_path: Path, make: Any) -> None:
    text = PEACH.replace("py_env: ml", "py_env: gpu")
    old, new = two_repos(tmp_path, new=text)
    scheduler, store = make(old, new)
    snapshot = scheduler.sync()
    assert set(snapshot.tasks) == {("chrts", "old_style"), ("chrts", "fetch")}
    [problem] = snapshot.problems["peach-repo"]
    assert problem.file == "peach.yaml" and problem.line == text.splitlines().index("    py_env: gpu") + 1
    assert "py_env 'gpu'" in problem.message and "declared: base, ml" in problem.message
    # The other repository knows nothing of it and validate says the same.
    assert snapshot.problems["tutorial-repo"] == ()
    out = CliRunner().invoke(main, ["validate", str(new.path)])
    assert out.exit_code == 1 and f"peach.yaml:{problem.line}: task 'chrts/train' uses py_env 'gpu'" in out.output


def test_an_environment_declared_in_another_repository_may_be_named(tmp_path: Path, make: Any) -> None:
    """py_environments of one organisation merge across repositories, like dependencies do."""
    uses = ("codops: chrts\ntasks:\n  t:\n    notebook: probe.ipynb\n    method: probe\n"
            "    executor: python\n    py_env: ml\n")
    first, second = two_repos(tmp_path, old=uses)
    scheduler, _ = make(first, second)
    snapshot = scheduler.sync()
    assert snapshot.tasks[("chrts", "t")].spec.environment == "ml"
    assert all(not found for found in snapshot.problems.values())


@pytest.mark.parametrize("mixed, old_line, new_line", [
    # root dependencies with py_environments
    ("codops: chrts\ndependencies: [tabulate]\npy_environments:\n  ml: {dependencies: [toolz]}\n"
     "tasks:\n  t: {notebook: probe.ipynb, method: probe, py_env: ml}\n", 2, 3),
    # a task's own dependencies with another task's py_env
    ("codops: chrts\ntasks:\n  a:\n    notebook: probe.ipynb\n    method: probe\n    dependencies: [six]\n"
     "  b:\n    notebook: probe.ipynb\n    method: probe\n    py_env: base\n", 6, 10),
])
def test_mixed_forms_in_one_file_name_both_lines(tmp_path: Path, make: Any, mixed: str, old_line: int,
                                                  new_line: int) -> None:
    repo = Repo(tmp_path / "mixed")
    repo.notebook("probe.ipynb", PROBE)
    repo.write("peach.yaml", mixed)
    other = "codops: chrts\ntasks:\n  fine: {notebook: probe.ipynb, method: probe, executor: python}\n"
    repo.write("peach.conf/other.yaml", other)
    repo.commit()
    scheduler, _ = make(repo)
    snapshot = scheduler.sync()
    assert set(snapshot.tasks) == {("chrts", "fine")}  # the other file of the repository still counts
    [problem] = snapshot.problems["mixed"]
    assert (problem.file, problem.line) == ("peach.yaml", new_line)
    assert f"(line {old_line})" in problem.message and f"(line {new_line})" in problem.message
    assert "one form per file" in problem.message


def test_conflicting_pins_name_both_places_and_the_first_is_kept(tmp_path: Path, make: Any) -> None:
    old = TUTORIAL.replace("[tabulate]", "['tabulate==0.9.0']")
    new = PEACH.replace("dependencies: [toolz]", "dependencies: [toolz, 'tabulate==0.8.10']")
    first, second = two_repos(tmp_path, old=old, new=new)
    scheduler, _ = make(first, second)
    snapshot = scheduler.sync()
    [problem] = snapshot.problems["peach-repo"]
    assert (problem.file, problem.line) == ("peach.yaml", 6)
    assert "'tabulate==0.8.10' conflicts with 'tabulate==0.9.0' declared in tutorial-repo:peach.yaml:2" \
        in problem.message
    assert "(inherited from base)" in problem.message and "'chrts/ml'" in problem.message
    assert snapshot.environments[("chrts", "ml")] == ("six", "tabulate==0.9.0", "toolz")
    assert snapshot.problems["tutorial-repo"] == ()  # the first place is not blamed


def test_validate_reports_conflicts_within_one_repository(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "one")
    repo.notebook("probe.ipynb", PROBE)
    repo.write("peach.yaml", "codops: chrts\npy_environments:\n  base:\n    dependencies: ['six==1.16.0']\n"
                             "  ml:\n    dependencies: ['six>=1.17', toolz]\n"
                             "tasks:\n  t: {notebook: probe.ipynb, method: probe, py_env: ml}\n")
    repo.commit()
    out = CliRunner().invoke(main, ["validate", str(repo.path), "--json"])
    report = json.loads(out.output)
    assert out.exit_code == 1 and report["tasks"] == ["chrts/t"]
    [problem] = report["problems"]
    assert problem["line"] == 6 and "'six>=1.17' conflicts with 'six==1.16.0'" in problem["message"]


@pytest.mark.parametrize("body, message", [
    ("py_environments:\n  'bad name': {dependencies: [six]}\n", "environment name 'bad name'"),
    ("py_environments:\n  ml: [six]\n", "environment 'ml' must be a mapping"),
    ("py_environments:\n  ml: {packages: [six]}\n", "packages"),
    ("py_environments:\n  ml: {dependencies: ['-e ./lib']}\n", "pip option"),
])
def test_bad_py_environments_entries_are_problems(tmp_path: Path, body: str, message: str) -> None:
    repo = Repo(tmp_path / "bad")
    repo.notebook("probe.ipynb", PROBE)
    repo.write("peach.yaml", f"codops: chrts\n{body}tasks:\n  t: {{notebook: probe.ipynb, method: probe}}\n")
    repo.commit()
    out = CliRunner().invoke(main, ["validate", str(repo.path)])
    assert out.exit_code == 1 and message in out.output, out.output


@pytest.mark.slow
def test_peach_tasks_run_uses_the_tasks_environment(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "authoring")
    repo.notebook("probe.ipynb", PROBE)
    repo.write("peach.yaml", "codops: chrts\npy_environments:\n  ml:\n    dependencies: [toolz]\n"
                             "tasks:\n  train: {notebook: probe.ipynb, method: probe, executor: python, py_env: ml}\n"
                             "  plain: {notebook: probe.ipynb, method: probe, executor: python}\n")
    repo.commit()
    cache = tmp_path / "cache"
    for task, toolz in (("train", True), ("plain", False)):
        out = CliRunner().invoke(main, ["run", str(repo.path), task, "--cache-dir", str(cache)])
        assert out.exit_code == 0, out.output
        summary = next(line for line in out.output.splitlines() if line.startswith(f"chrts/{task}: SUCCESS"))
        seen = json.loads(summary.split(", returned ", 1)[1])
        assert seen["found"]["toolz"] is toolz and seen["py_env"] == ("ml" if toolz else "base")
    bad = repo.path / "peach.yaml"
    bad.write_text(bad.read_text().replace("py_env: ml", "py_env: nope"))
    out = CliRunner().invoke(main, ["run", str(repo.path), "train", "--current-python"])
    assert out.exit_code != 0 and "py_env 'nope'" in out.output


def test_the_layout_before_named_environments_is_cleared_at_start(tmp_path: Path) -> None:
    """envs/<codops>/<hash> + 'current' became envs/<codops>/base/...: a scheduler starting on an
    older state_dir removes the old pieces and leaves every named environment alone."""
    from peach_tasks.executors.environments import EnvironmentManager

    org = tmp_path / "envs" / "chrts"
    old = org / "0123456789abcdef"
    old.mkdir(parents=True)
    (old / "peach-env.json").write_text("{}")
    (org / "current").symlink_to("0123456789abcdef")
    (org / "0123456789abcdef.tar.gz").write_bytes(b"x")
    kept = org / "ml" / "fedcba9876543210"
    kept.mkdir(parents=True)
    (kept / "peach-env.json").write_text("{}")
    (org / "ml" / "current").symlink_to("fedcba9876543210")
    (org / "ml" / ".build-x-1").mkdir()
    assert EnvironmentManager(tmp_path).remove_leftovers() == 4
    assert sorted(p.name for p in org.iterdir()) == ["ml"]
    assert sorted(p.name for p in (org / "ml").iterdir()) == ["current", "fedcba9876543210"]

"""``peach-tasks validate`` over a corpus of broken working copies, real git and real uv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from validate_corpus import CASES, GOOD_YAML, Case, build, expected_line, notebook_text

from peach_tasks.authors.validate import validate_directory
from peach_tasks.cli import main
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import settings_from_dict
from peach_tasks.sources.notebook_problems import ipynb_line
from peach_tasks.store import Store


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_corpus_is_big_enough_and_each_case_is_distinct() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_fault_is_reported_at_its_file_and_line(tmp_path: Path, case: Case) -> None:
    root = tmp_path / "repo"
    build(root, case)
    args = ["validate", str(root)] + [f"--codops={c}" for c in case.codops]
    code, out, _ = cli(*args)
    assert code == 1, out
    line = expected_line(root, case)
    where = f"{root}/{case.file}:{line}: " if line else f"{root}/{case.file}: "
    matching = [text for text in out.splitlines() if text.startswith(where)]
    assert matching, f"nothing at {where} in:\n{out}"
    assert any(all(word in text for word in case.words) for text in matching), out
    assert "internal error" not in out


def test_good_repository_passes_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    build(root, Case("good", {}, "", None, ()))
    code, out, err = cli("validate", str(root))
    assert (code, out) == (0, "")
    assert "1 task in 1 file: no problems" in err


def test_json_output_for_tools(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "syntax-entry-cell")
    root = tmp_path / "repo"
    build(root, case)
    code, out, _ = cli("validate", "--json", str(root))
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["tasks"] == ["default/good"]
    [problem] = data["problems"]
    assert problem["file"] == "nb.ipynb" and problem["line"] == expected_line(root, case)
    assert problem["path"] == f"{root}/nb.ipynb" and problem["scope"] == "default/good"
    assert "SyntaxError" in problem["message"] and "peach.yaml:5" in problem["message"]


def test_installed_command_in_the_working_copy_prints_relative_paths(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "method-missing")
    root = tmp_path / "repo"
    build(root, case)
    proc = subprocess.run(["peach-tasks", "validate"], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.startswith("peach.yaml:8: nb.ipynb defines no top-level function 'train'"), proc.stdout


def test_validate_finds_what_the_scheduler_reports(tmp_path: Path) -> None:
    """Same definitions code path: the scheduler's sync stores the same config problems."""
    root = tmp_path / "repo"
    faulty = (GOOD_YAML.replace("  - tabulate\n", "  - -e ./lib\n") + "  out:\n    notebook: ../x.ipynb\n"
              "    method: m\n  typo:\n    notebook: nb.ipynb\n    metod: m\n")
    build(root, Case("mixed", {"peach.yaml": faulty}, "", None, ()))
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm",
                    "x"], check=True)
    report = validate_directory(root)
    settings = settings_from_dict({"state_dir": "state", "repositories": [{"url": str(root), "name": "repo"}]},
                                  tmp_path)
    store = Store.open(settings.database_url)
    try:
        scheduler = Scheduler(settings, store, executors={})
        scheduler.sync()
        stored = {(p["file"], p["line"], p["message"]) for p in store.problems() if p["kind"] == "config"}
        scheduler.close()
    finally:
        store.close()
    found = {(p.file, p.line, p.message) for p in report.problems if p.kind == "config"}
    assert found == stored and len(found) == 3, found


def test_resolve_pins_a_good_set_and_places_an_unknown_package(tmp_path: Path) -> None:
    good = tmp_path / "good"
    build(good, Case("good", {}, "", None, ()))
    report = validate_directory(good, resolve=True)
    assert report.ok, [str(p) for p in report.problems]
    assert any(pin.startswith("tabulate==") for pin in report.resolved["default"])
    assert not (good / ".venv").exists()  # resolved, nothing installed

    bad = tmp_path / "bad"
    yaml_text = GOOD_YAML.replace("  - tabulate\n", "  - tabulate\n  - peach-tasks-no-such-package-xyz==1.0\n")
    build(bad, Case("bad", {"peach.yaml": yaml_text}, "", None, ()))
    code, out, _ = cli("validate", "--resolve", str(bad))
    assert code == 1
    assert out.startswith(f"{bad}/peach.yaml:4: the dependencies of 'default' cannot be resolved"), out
    assert "peach-tasks-no-such-package-xyz" in out


def test_ipynb_line_for_a_source_written_as_one_string(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    text = notebook_text("a = 1\nb = 2\n")
    data = json.loads(text)
    data["cells"][1]["source"] = "a = 1\nb = (\n"
    path.write_text(json.dumps(data, indent=1))
    line = ipynb_line(path, 1, 2)
    assert line is not None and '"source": "a = 1\\nb = (\\n"' in path.read_text().splitlines()[line - 1]
    assert ipynb_line(path, 7, 1) is None  # no such cell


def test_every_refused_cell_of_a_notebook_is_reported(tmp_path: Path) -> None:
    """Not only the first: a notebook with a refused magic in one cell, an automagic line
    (a syntax error) in another and a good cell between gets one problem per bad cell,
    each at its own line; the run's error is the first."""
    root = tmp_path / "repo"
    yaml = GOOD_YAML.replace("    method: main\n", "    full_notebook: true\n")
    build(root, Case("many", {"peach.yaml": yaml, "nb.ipynb": notebook_text(
        "%prun x = 1", "y = 2", "ls data", "%%cpp\nint main() {}")}, "nb.ipynb", None, ()))
    code, out, _ = cli("validate", "--json", str(root))
    problems = json.loads(out)["problems"]
    assert code == 1 and [p["file"] for p in problems] == ["nb.ipynb"] * 3, problems
    assert [p["line"] for p in problems] == [ipynb_line(root / "nb.ipynb", cell, 1) for cell in (1, 3, 4)]
    assert "%prun" in problems[0]["message"] and "automagic" in problems[1]["message"] \
        and "%%cpp" in problems[2]["message"]


def test_a_failure_of_ours_on_one_notebook_is_its_tasks_problem_not_the_repositorys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A safety net, so the failure is injected: reading one notebook raises something no
    notebook should make us raise (a too deeply nested cell did, RecursionError, and the whole
    repository's sync failed). The sync goes on: the other notebook's task loads, and the odd
    one gets a problem saying what happened, at its file."""
    import peach_tasks.sources.notebook_problems as notebook_problems

    root = tmp_path / "repo"
    yaml = GOOD_YAML + "  odd:\n    executor: python\n    notebook: odd.ipynb\n    method: main\n"
    build(root, Case("odd", {"peach.yaml": yaml, "odd.ipynb": notebook_text("def main():\n    return 1")}, "", None, ()))
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm",
                    "x"], check=True)
    real = notebook_problems.extract_code

    def extract(path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "odd.ipynb":
            raise RuntimeError("injected")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(notebook_problems, "extract_code", extract)
    settings = settings_from_dict({"state_dir": "state", "repositories": [{"url": str(root), "name": "repo"}]},
                                  tmp_path)
    store = Store.open(settings.database_url)
    try:
        scheduler = Scheduler(settings, store, executors={})
        snapshot = scheduler.sync()
        problems = store.problems()
        scheduler.close()
    finally:
        store.close()
    assert ("default", "good") in snapshot.tasks
    assert not [p for p in problems if p["kind"] == "sync"], problems
    odd = [p for p in problems if p["file"] == "odd.ipynb"]
    assert len(odd) == 1 and "peach-tasks failed to read this notebook (RuntimeError: injected)" in odd[0]["message"]

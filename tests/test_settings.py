"""scheduler.yaml: defaults, relative paths, and errors with key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from peach_tasks.settings import SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "scheduler.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEACH_TASKS_DATABASE_URL", raising=False)
    path = write(tmp_path, "repositories:\n  - url: ../algos.git\n    codops: [default, chrts]\n")
    monkeypatch.chdir("/")  # relative paths must not depend on the working directory
    s = load_settings(path)
    assert s.timeouts.task == 3600 and s.timeouts.metadata == 300
    assert s.loop.sync_interval_seconds == 30 and s.web.port == 8765
    assert s.state_path == (tmp_path / "conf" / "peach-state").resolve()
    assert s.database_url == f"sqlite:///{s.state_path / 'peach.db'}"
    repo = s.repositories[0]
    assert repo.branch == "master" and repo.codops == ["default", "chrts"]
    assert s.repository_url(repo) == str((tmp_path / "algos.git").resolve())
    assert s.repository_name(repo) == "algos"


def test_sqlite_url_relative_to_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEACH_TASKS_DATABASE_URL", raising=False)
    path = write(tmp_path, "database: sqlite:///db/x.db\n")
    assert load_settings(path).database_url == f"sqlite:///{(tmp_path / 'conf/db/x.db').resolve()}"
    monkeypatch.setenv("PEACH_TASKS_DATABASE_URL", "postgresql+psycopg://127.0.0.1/test")
    assert load_settings(path).database_url == "postgresql+psycopg://127.0.0.1/test"


def test_remote_urls_are_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "repositories:\n  - url: git@gitlab.example:ds/algos.git\n"
                           "  - url: https://gitlab.example/ds/other.git\n")
    s = load_settings(path)
    assert [s.repository_url(r) for r in s.repositories] == [
        "git@gitlab.example:ds/algos.git", "https://gitlab.example/ds/other.git"]
    assert [s.repository_name(r) for r in s.repositories] == ["algos", "other"]


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "web: {port: 9999}\n")
    monkeypatch.setenv("PEACH_TASKS_CONFIG", str(path))
    assert load_settings().web.port == 9999


def test_unknown_keys_and_wrong_types_name_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir: st\n"
                           "repositories:\n"
                           "  - url: a\n"
                           "    brnch: main\n"
                           "timeouts:\n"
                           "  task: '3600'\n"
                           "lop: {}\n")
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    text = str(err.value)
    assert f"{path}:4: unknown key 'repositories[0].brnch'" in text
    assert f"{path}:6: 'timeouts.task'" in text
    assert f"{path}:7: unknown key 'lop'" in text
    assert len(err.value.problems) == 3



def test_alias_bomb_in_the_settings_is_refused_before_it_is_built(tmp_path: Path) -> None:
    # Nine levels of ten aliases: a 1 KB file that would expand to a billion values.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = write(tmp_path, "\n".join(levels) + "\n")
    with pytest.raises(SettingsError, match="expands to more than 100000 YAML values through aliases") as err:
        load_settings(path)
    assert str(path) in str(err.value)

def test_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "repositories:\n  - url: [unclosed\n")
    with pytest.raises(SettingsError, match=r"scheduler.yaml:\d+: YAML syntax error"):
        load_settings(path)
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings(tmp_path / "missing.yaml")


def test_duplicate_repository_names(tmp_path: Path) -> None:
    path = write(tmp_path, "repositories:\n  - url: a/algos\n  - url: b/algos\n")
    with pytest.raises(SettingsError, match=r":3: two repositories are both named 'algos'"):
        load_settings(path)


def test_dates_are_not_converted(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir: 2024-01-01\n")
    assert load_settings(path).state_dir == "2024-01-01"

"""Discovery by topic against a local stand-in for GitLab (see gitlab_standin.py) with real git remotes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Repo, py_task, task_yaml, write_settings
from gitlab_standin import StandInGitLab, publish

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.store import Store

TOKEN = "glpat-standin-0123456789"
TOKEN_ENV = "PEACH_TEST_GITLAB_TOKEN"
CELL = "def main():\n    return 'ran'\n"


def project(tmp_path: Path, name: str, codops: str, task: str) -> Repo:
    repo = Repo(tmp_path / "remotes" / name.replace("/", "__"))
    repo.notebook("nb.ipynb", CELL)
    repo.write("peach.yaml", task_yaml(codops, {task: py_task("nb.ipynb", "main")}))
    repo.commit()
    return repo


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInGitLab]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server = StandInGitLab(TOKEN, page_size=1).start()  # pages of one: paging is used
    yield server
    server.stop()


@pytest.fixture
def world(tmp_path: Path, gitlab: StandInGitLab) -> dict[str, Any]:
    """A configured repository beside four GitLab projects, three of them in group 'data'."""
    local = project(tmp_path, "local", "default", "local_task")
    gitlab.add("data/models", project(tmp_path, "data/models", "default", "model").path, ["peach-lab", "ml"])
    gitlab.add("data/sub/deep", project(tmp_path, "data/sub/deep", "chrts", "deep").path, ["peach-lab"])
    gitlab.add("data/untagged", project(tmp_path, "data/untagged", "default", "untagged").path, ["other"])
    gitlab.add("elsewhere/x", project(tmp_path, "elsewhere/x", "default", "elsewhere").path, ["peach-lab"])
    return {"local": local}


@pytest.fixture
def make(tmp_path: Path, world: dict[str, Any], gitlab: StandInGitLab, open_scheduler: Any) -> Any:
    def factory(**gitlab_settings: Any) -> tuple[Scheduler, Store]:
        source = {"url": gitlab.url, "token_env": TOKEN_ENV, "groups": ["data"], **gitlab_settings}
        return open_scheduler(write_settings(tmp_path, [{"url": str(world["local"].path), "name": "local"}],
                                             gitlab=source))

    return factory


def active(store: Store) -> dict[str, str]:
    return {f"{t['codops']}/{t['name']}": t["repo"] for t in store.tasks()}


def statuses(store: Store, codops: str, task: str) -> list[str]:
    return [r["status"] for r in store.runs(codops, task)]


def test_projects_with_the_topic_join_and_leave(make: Any, gitlab: StandInGitLab, tmp_path: Path) -> None:
    scheduler, store = make()
    scheduler.run_once()
    assert active(store) == {"default/local_task": "local", "default/model": "data/models",
                             "chrts/deep": "data/sub/deep"}  # subgroups yes; untagged and other groups no
    assert statuses(store, "default", "model") == ["SUCCESS"] and statuses(store, "chrts", "deep") == ["SUCCESS"]
    assert store.problems() == []
    # The listing was paged and git fetched over HTTP with the token as basic auth.
    assert any("page=2" in request for request in gitlab.api_requests)
    assert gitlab.git_requests and all(ok for _, ok in gitlab.git_requests)
    mirror = next((tmp_path / "state" / "discovered" / "gitlab" / "repos").glob("data/models/mirror.git"))
    config = subprocess.run(["git", "--git-dir", str(mirror), "config", "--list"], capture_output=True,
                            text=True, check=True).stdout
    assert f"remote.origin.url={gitlab.url}/git/data/models.git" in config and TOKEN not in config

    gitlab.projects["data/models"].topics = ["ml"]  # someone removes the label
    deep = Repo(gitlab.projects["data/sub/deep"].git_dir.parent)  # and a task is renamed upstream
    deep.write("peach.yaml", task_yaml("chrts", {"deep_v2": py_task("nb.ipynb", "main")}))
    deep.commit("rename")
    publish(deep.path)
    scheduler.run_once()
    assert active(store) == {"default/local_task": "local", "chrts/deep_v2": "data/sub/deep"}
    assert statuses(store, "default", "model") == ["SUCCESS"]  # stopped; its history stays
    everything = {f"{t['codops']}/{t['name']}": t["active"] for t in store.tasks(include_inactive=True)}
    assert everything["default/model"] is False


def test_project_branch_comes_from_gitlab_unless_the_settings_say(make: Any, gitlab: StandInGitLab,
                                                                  tmp_path: Path) -> None:
    repo = project(tmp_path, "data/branchy", "default", "on_master")
    subprocess.run(["git", "-C", str(repo.path), "checkout", "-q", "-b", "production"], check=True)
    repo.write("peach.yaml", task_yaml("default", {"on_production": py_task("nb.ipynb", "main")}))
    repo.commit()
    gitlab.add("data/branchy", repo.path, ["peach-lab"], default_branch="production")
    scheduler, store = make()
    scheduler.sync()
    assert "default/on_production" in active(store)
    scheduler.close()
    store.close()
    scheduler, store = make(branch="master")
    scheduler.sync()
    assert "default/on_master" in active(store) and "default/on_production" not in active(store)


def test_wrong_or_missing_token_is_a_clear_problem_and_nothing_else_stops(
        make: Any, gitlab: StandInGitLab, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler, store = make()
    scheduler.run_once()
    assert statuses(store, "default", "model") == ["SUCCESS"]

    monkeypatch.setenv(TOKEN_ENV, "glpat-wrong-token-000000")
    scheduler.run_once()
    problems = {p["scope"]: p["message"] for p in store.problems()}
    assert "refused the token in PEACH_TEST_GITLAB_TOKEN (401 Unauthorized)" in problems["gitlab:gitlab"]
    assert "the 2 projects found before keep running" in problems["gitlab:gitlab"]
    assert "cannot fetch" in problems["data/models"]  # git was refused too; the last checkout runs
    assert statuses(store, "default", "local_task") == ["SUCCESS", "SUCCESS"]
    assert statuses(store, "default", "model") == ["SUCCESS", "SUCCESS"]
    assert all("glpat-wrong" not in message for message in problems.values())

    monkeypatch.delenv(TOKEN_ENV)
    scheduler.run_once()
    [problem] = [p for p in store.problems() if p["scope"] == "gitlab:gitlab"]
    assert problem["message"].startswith("environment variable PEACH_TEST_GITLAB_TOKEN is not set")
    assert statuses(store, "default", "local_task") == ["SUCCESS"] * 3


def test_gitlab_down_at_restart_keeps_the_last_known_projects(make: Any, gitlab: StandInGitLab) -> None:
    scheduler, store = make()
    scheduler.run_once()
    scheduler.close()
    store.close()
    gitlab.stop()
    scheduler, store = make()  # a restarted scheduler while GitLab is unreachable
    scheduler.run_once()
    assert statuses(store, "default", "model") == ["SUCCESS", "SUCCESS"]
    assert statuses(store, "chrts", "deep") == ["SUCCESS", "SUCCESS"]
    message = {p["scope"]: p["message"] for p in store.problems()}["gitlab:gitlab"]
    assert message.startswith(f"cannot list projects on {gitlab.url}") and "keep running" in message


def test_unknown_group_is_reported(make: Any) -> None:
    scheduler, store = make(groups=["data", "no-such-group"])
    scheduler.sync()
    message = {p["scope"]: p["message"] for p in store.problems()}["gitlab:gitlab"]
    assert "does not know the group(s) data, no-such-group (404)" in message
    assert "default/local_task" in active(store)

"""A store tasks could log into (found by the hostile pass of issue 12): a run with the network
on shares the host's loopback, and a PostgreSQL that lets loopback connections in without a
password gave a task the whole store and, through ``COPY ... FROM PROGRAM``, a shell on the
host. The scheduler looks as a task would (no password, no password file) and reports it as a
problem. Against this machine's real PostgreSQL, whose loopback connections are trusted (as
on CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import Repo, py_task, task_yaml, write_settings

from peach_tasks.store.exposure import exposure_problems


def test_a_password_less_loopback_postgresql_is_a_problem_only_with_the_network_on(postgres_url: str) -> None:
    """The store's server, and the host's own on its default port: with the default SQLite
    store, a trusting local PostgreSQL still gave a task a shell (the re-check)."""
    url = sa.engine.make_url(postgres_url)
    found = exposure_problems(postgres_url, network_on=True)
    if url.password is None and (url.host, url.port or 5432) == ("127.0.0.1", 5432):  # this machine's and CI's
        [problem] = found
        assert problem.kind == "store" and "127.0.0.1:5432 lets 'postgres' in without a password" in problem.message
        assert "COPY ... FROM PROGRAM" in problem.message and "python.network: false" in problem.message
        assert [p.message for p in exposure_problems("sqlite:////tmp/peach.db", network_on=True)] == [problem.message]
    assert exposure_problems(postgres_url, network_on=False) == []
    assert exposure_problems("sqlite:////tmp/peach.db", network_on=False) == []


def test_a_state_dir_others_can_read_is_a_problem(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    [problem] = exposure_problems("sqlite:////tmp/peach.db", network_on=False, state_dir=state)
    assert problem.message.startswith(f"{state} can be read by other users of the host (mode 0755)")
    assert problem.message.endswith("chmod 700 it")
    state.chmod(0o700)
    assert exposure_problems("sqlite:////tmp/peach.db", network_on=False, state_dir=state) == []


def test_sync_reports_it_and_network_off_everywhere_clears_it(tmp_path: Path, postgres_url: str,
                                                              open_scheduler: Any) -> None:
    if sa.engine.make_url(postgres_url).password is not None:
        return  # a server that asks for a password: nothing to report (the first test covers the probe)
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", "def main():\n    return 1\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    config = write_settings(tmp_path, [{"url": "algos"}], database=postgres_url)
    scheduler, store = open_scheduler(config)
    scheduler.sync()
    assert [p["kind"] for p in store.problems() if p["kind"] == "store"] == ["store"]
    scheduler.close()
    config = write_settings(tmp_path, [{"url": "algos"}], database=postgres_url, python={"network": False})
    scheduler, store = open_scheduler(config)
    scheduler.sync()
    assert [p for p in store.problems() if p["kind"] == "store"] == []

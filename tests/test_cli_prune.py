"""``peach-tasks prune`` without --dry-run reports what it removed, not what it planned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import write_settings
from test_retention import SPECS, age, ids_of, store_with_runs

from peach_tasks.cli import main
from peach_tasks.scheduling import retention
from peach_tasks.settings import load_settings
from peach_tasks.store import Store
from peach_tasks.store.schema import runs


def per_task(store: Store) -> dict[str, tuple[int, int, int]]:
    """Per task: (runs, log bytes of all its runs, runs whose log was pruned)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.task, sa.func.count(), sa.func.coalesce(sa.func.sum(runs.c.log_bytes), 0),
                                      sa.func.count(runs.c.log_pruned_at)).group_by(runs.c.task)).all()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def test_prune_reports_what_it_removed_when_more_aged_after_the_plan(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_settings(tmp_path, [], database=database_url,
                            retention={"runs_days": 90, "logs_days": 30, "keep_last": 2, "batch": 3, "pause": 0})
    store = store_with_runs(load_settings(config).database_url, per_task=6)
    try:
        t0, t1, t2 = (ids_of(store, spec) for spec in SPECS)
        age(store, t0[:4] + t1[:2], 100)  # t0: 4 runs go whole; t1: 2 go whole
        age(store, t1[2:3], 40)  # t1: one more loses only its log
        before = per_task(store)
        planned = json.loads(CliRunner().invoke(main, ["--config", str(config), "prune", "--dry-run", "--json"]).output)
        assert planned["total"]["runs"] == 6 and planned["total"]["logs"] == 1

        real_round = retention.Pruner.round

        def round_after_more_aged(pruner: retention.Pruner, *args: Any, **kwargs: Any) -> retention.RoundResult:
            # Between what a plan would say and the removal, more of t2's runs grew old (time passes).
            age(store, t2[:3], 100)
            return real_round(pruner, *args, **kwargs)

        monkeypatch.setattr(retention.Pruner, "round", round_after_more_aged)
        done = CliRunner().invoke(main, ["--config", str(config), "prune", "--json"])
        assert done.exit_code == 0, done.output
        data = json.loads(done.output)
        after = per_task(store)
    finally:
        store.close()
    assert data["dry_run"] is False
    reported = {t["task"]: t for t in data["tasks"]}
    assert set(reported) == {"t0", "t1", "t2"}
    for name, shown in reported.items():  # each task's figures are what left the store
        assert shown["runs"] == before[name][0] - after[name][0]
        assert shown["logs"] == after[name][2] - before[name][2]
    assert (reported["t0"]["runs"], reported["t1"]["runs"], reported["t2"]["runs"]) == (4, 2, 3)
    assert reported["t1"]["logs"] == 1 and reported["t1"]["logs_bytes"] > 0
    for name in ("t0", "t2"):  # only whole runs went: their log bytes left with them
        assert reported[name]["runs_log_bytes"] == before[name][1] - after[name][1] > 0
    assert data["total"]["runs"] == data["removed"]["runs"] == 9 and data["total"]["logs"] == data["removed"]["logs"] == 1


def test_prune_text_says_what_it_removed(tmp_path: Path) -> None:
    config = write_settings(tmp_path, [], retention={"runs_days": 90, "logs_days": 30, "keep_last": 3})
    store = store_with_runs(load_settings(config).database_url, per_task=5)
    try:
        age(store, ids_of(store, SPECS[0])[:2], 100)
    finally:
        store.close()
    done = CliRunner().invoke(main, ["--config", str(config), "prune"])
    assert done.exit_code == 0, done.output
    assert "removed: 2 runs" in done.output and "t0" in done.output and "t1" not in done.output
    again = CliRunner().invoke(main, ["--config", str(config), "prune"])
    assert again.exit_code == 0 and "removed: 0 runs" in again.output and "over 0 tasks" in again.output

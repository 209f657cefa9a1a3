"""``tasks``, ``runs``, ``logs`` and ``replicas``: what the store holds, as tables or JSON."""

from __future__ import annotations

import json
from typing import Any, Sequence

import click

from .common import (
    RUN_IDS,
    as_table,
    cli_settings,
    config_option,
    open_store,
    print_problems,
)
from .words import did_you_mean, plural, visible

TASK_COLUMNS = ["codops", "name", "loop", "executor", "environment", "state", "last_status", "last_started_at",
                "last_duration_s", "version", "successes", "failures", "freshness"]
# "memory" and "cpu" are shown as written by _with_usage, not as the raw peak_memory_bytes/cpu_seconds.
RUN_COLUMNS = ["id", "version", "started_at", "finished_at", "status", "attempt", "duration_s", "memory", "cpu",
               "triggered_by", "error"]


def fmt_memory(value: int | None) -> str | None:
    """Bytes as a short binary size ("212 MiB", "1.4 GiB"); None stays None (shown as "-")."""
    if value is None:
        return None
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            # One decimal only where it says something: "1.4 GiB" but "212 MiB".
            shown = value / size
            return f"{shown:.1f} {unit}" if shown < 10 else f"{shown:.0f} {unit}"
    return f"{value} B"


def fmt_cpu(value: float | None) -> str | None:
    """CPU seconds as "1.3 s" (whole seconds from 100 s on); None stays None (shown as "-")."""
    if value is None:
        return None
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def _with_usage(run: dict[str, Any]) -> dict[str, Any]:
    """A run row for the table: its usage as compact text (the JSON keeps the raw numbers)."""
    return dict(run, memory=fmt_memory(run.get("peak_memory_bytes")), cpu=fmt_cpu(run.get("cpu_seconds")),
                attempt=fmt_attempt(run.get("attempt"), run.get("retry_of")))


def fmt_attempt(attempt: int | None, retry_of: int | None) -> str:
    """"1" for a first run, "2 of #41" for the second attempt of run 41 (a retry)."""
    return f"{attempt or 1} of #{retry_of}" if retry_of is not None else str(attempt or 1)


def _with_freshness(task: dict[str, Any]) -> dict[str, Any]:
    """A task row for the table: "STALE (2h)" or "ok (2h)" against its freshness, "-" without one
    (the JSON keeps stale, freshness_s, last_success_at and seconds_since_success)."""
    from ..durations import format_duration

    if task.get("stale") is None:
        return dict(task, freshness=None)
    limit = format_duration(task["freshness_s"])
    return dict(task, freshness=f"STALE (>{limit})" if task["stale"] else f"ok (<{limit})")


@click.command()
@config_option
@click.option("--org", "orgs", multiple=True, metavar="CODOPS", help="Only this organisation (repeatable).")
@click.option("--all", "include_inactive", is_flag=True, help="Also tasks no longer defined (their history stays).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of task objects.")
@click.pass_context
def tasks(ctx: click.Context, orgs: tuple[str, ...], include_inactive: bool, as_json: bool) -> None:
    """One row per task: state, last run, version, successes and failures."""
    settings = cli_settings(ctx)
    store = open_store(settings, migrate=False)
    try:
        if orgs:
            _known_organisations(store, orgs)
        rows = store.tasks(orgs or None, include_inactive=include_inactive)
        problems = store.problems(orgs or None)
    finally:
        store.close()
    if as_json:
        for row in rows:
            row["problems"] = [p for p in problems if p["codops"] in (None, row["codops"])
                               and (p["codops"] or p["scope"] == row["repo"])]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(as_table([_with_freshness(r) for r in rows], TASK_COLUMNS) if rows else "no tasks")
    if problems:
        click.echo(f"\n{plural(len(problems), 'problem')}:", err=True)
        print_problems(problems)


@click.command()
@config_option
@click.argument("task", metavar="CODOPS/TASK")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="How many runs.")
@click.option("--before", type=RUN_IDS, default=None, help="Only runs with an id below this (paging).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of run objects.")
@click.pass_context
def runs(ctx: click.Context, task: str, limit: int, before: int | None, as_json: bool) -> None:
    """Executions of one task, newest first."""
    if "/" not in task:
        raise click.BadParameter("give the task as CODOPS/TASK, e.g. default/tf_task", param_hint="CODOPS/TASK")
    codops, name = task.split("/", 1)
    settings = cli_settings(ctx)
    store = open_store(settings, migrate=False)
    try:
        rows = store.runs(codops, name, limit, before)
        if not rows and not store.has_task(codops, name):
            raise click.ClickException(unknown_task(store, codops, name))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(as_table([_with_usage(r) for r in rows], RUN_COLUMNS))
    else:
        click.echo(f"no runs of {task}" + (f" before run {before}" if before else " yet"))


def unknown_task(store: Any, codops: str, name: str) -> str:
    """'no task …' with the closest task names the store knows (active or not)."""
    known = [f"{t['codops']}/{t['name']}" for t in store.tasks(include_inactive=True)]
    return (f"no task '{name}' in organisation '{codops}' is known to this scheduler; "
            + did_you_mean(f"{codops}/{name}", known, "peach-tasks tasks --all"))


def _known_organisations(store: Any, orgs: Sequence[str]) -> None:
    """An --org nobody defined a task for is an error naming the closest ones."""
    known = {t["codops"] for t in store.tasks(include_inactive=True)}
    for codops in orgs:
        if codops not in known:
            raise click.ClickException(f"no organisation '{codops}' has tasks; "
                                       + did_you_mean(codops, known, "peach-tasks tasks"))


@click.command()
@config_option
@click.argument("run_id", type=RUN_IDS)
@click.option("--raw", is_flag=True, help="Print the log as the task wrote it, its control characters (escape "
                                          "sequences, carriage returns) included, instead of written out as \\x1b.")
@click.pass_context
def logs(ctx: click.Context, run_id: int, raw: bool) -> None:
    """The captured log of one run."""
    settings = cli_settings(ctx)
    store = open_store(settings, migrate=False)
    try:
        text = store.log(run_id)
        newest = store.max_run_id() if text is None else 0
    finally:
        store.close()
    if text is None:
        known = f"the runs go from 1 to {newest}" if newest else "there is no run yet"
        raise click.ClickException(f"no run with id {run_id} ({known}); 'peach-tasks runs CODOPS/TASK' lists them")
    click.echo(text if raw else visible(text), nl=False)  # a task's escape sequences not played on the terminal


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of replica objects.")
@click.pass_context
def replicas(ctx: click.Context, as_json: bool) -> None:
    """Scheduler replicas sharing this database: alive or not, their loops and lease expiry."""
    from ..store.leases import LeaseStore, replica_summary

    settings = cli_settings(ctx)
    store = open_store(settings, migrate=False)
    try:
        rows = replica_summary(LeaseStore(store.engine), settings.replica.lease_seconds)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    shown = [dict(r, loops=" ".join(f"{l['loop']}(until {l['expires_at']})" for l in r["loops"]) or "-")
             for r in rows]
    click.echo(as_table(shown, ["id", "alive", "host", "pid", "heartbeat_at", "loops"]) if rows else "no replicas yet")


COMMANDS = (tasks, runs, logs, replicas)

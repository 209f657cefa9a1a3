"""``peach-tasks prune``: what retention removes, shown (``--dry-run``) or done now."""

from __future__ import annotations

import json

import click

from ..durations import format_duration

PLAN_COLUMNS = ["codops", "task", "runs", "runs_log_bytes", "logs", "logs_bytes"]


@click.command()
@click.option("--dry-run", is_flag=True, help="Only show what would be removed now; remove nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (the policy, each task's counts, totals): what would go with --dry-run, "
                   "else what went.")
@click.pass_context
def prune(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Remove old runs and logs as 'retention' in scheduler.yaml says (serve does it in the background).

    Per task, the newest retention.keep_last runs and their logs always stay; older runs that
    ended more than runs_days ago go whole, and those that ended more than logs_days ago lose
    their log and outputs (one line says so). Without --dry-run the removal runs now, in the
    same small batches as serve's, unless another replica is pruning at this moment.
    """
    from ..scheduling.retention import Pruner, plan
    from .common import as_table, cli_settings, open_store

    settings = cli_settings(ctx)
    policy = settings.retention
    if policy is None:
        raise click.ClickException("no 'retention' in the settings: everything is kept. Add e.g. "
                                   "'retention: {runs_days: 90, logs_days: 30, keep_last: 100}' to scheduler.yaml")
    store = open_store(settings, migrate=False)
    try:
        done = None
        if dry_run:
            rows = [p.as_dict() for p in plan(store, policy)]
        else:
            import os
            import socket

            result = Pruner(policy, store, f"{socket.gethostname()}:prune-{os.getpid()}").round()
            if result.skipped:
                raise click.ClickException(f"nothing removed: {result.skipped}; try again later")
            # What the round did remove (not the plan: runs may have ended or started since).
            rows = [result.tasks[key].as_dict() for key in sorted(result.tasks)]
            done = {"runs": result.runs, "logs": result.logs, "batches": result.batches,
                    "longest_batch_ms": round(result.longest_batch_s * 1000, 1)}
    finally:
        store.close()
    totals = {k: sum(row[k] for row in rows) for k in PLAN_COLUMNS[2:]}
    shown = {"runs_days": policy.runs_days, "logs_days": policy.logs_days, "keep_last": policy.keep_last}
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "policy": shown, "tasks": rows, "total": totals,
                               "removed": done}, indent=2))
        return
    what = "would remove" if dry_run else "removed"
    if rows:
        click.echo(as_table(rows, PLAN_COLUMNS))
    click.echo(f"{what}: {totals['runs']} runs ({totals['runs_log_bytes']} bytes of log) and the logs of "
               f"{totals['logs']} more ({totals['logs_bytes']} bytes), over {len(rows)} tasks; keeping the newest "
               f"{policy.keep_last} of each task, runs for {_days(policy.runs_days)}, logs for "
               f"{_days(policy.logs_days)}", err=True)
    if done is not None:
        click.echo(f"{done['batches']} batches, the longest {done['longest_batch_ms']} ms", err=True)


def _days(days: float | None) -> str:
    return "ever" if days is None else format_duration(days * 86400)


COMMANDS = [prune]

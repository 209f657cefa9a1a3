"""The notebook authors' commands: ``validate``, ``run``, ``trigger`` and ``triggers``.

``cli.py`` adds them to the ``peach-tasks`` group, with its ``--config`` option on each;
what every command shares (settings, the store, tables) comes from ``commands/common.py``.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

from ..commands.common import as_table, cli_settings, open_store
from ..commands.words import closest, plural
from ..executors.base import CancelEvent
from ..model import RunStatus
from ..settings import CONFIG_ENV, Settings, settings_from_dict

# `peach-tasks run` exits like timeout(1) on a timeout and like a shell on Ctrl-C.
EXIT_CODES = {RunStatus.SUCCESS: 0, RunStatus.FAILURE: 1, RunStatus.TIMEOUT: 124, RunStatus.ABANDONED: 130}
EXIT_CANNOT_START = 2
TRIGGER_COLUMNS = ["id", "codops", "task", "state", "requested_by", "created_at", "run_id", "note"]


def _optional_settings(ctx: click.Context) -> Settings:
    """scheduler.yaml when one was named (--config or $PEACH_TASKS_CONFIG); else the defaults.

    An author's working copy has no scheduler.yaml, and must not need one.
    """
    if ctx.find_root().ensure_object(dict).get("config") or os.environ.get(CONFIG_ENV):
        return cli_settings(ctx)
    return settings_from_dict({})


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}); e.g. --payload '{{\"date\": \"2024-01-31\"}}'",
                                 param_hint="--payload") from None


@click.command()
@click.argument("directory", required=False, default=".", type=click.Path(file_okay=False, exists=True))
@click.option("--resolve", is_flag=True, help="Also resolve each organisation's dependencies with uv "
                                              "(nothing is installed; needs the package index).")
@click.option("--python-version", metavar="X.Y", help="Python to resolve for (default: this interpreter's).")
@click.option("--codops", "allowed", multiple=True, metavar="CODOPS",
              help="Organisations this repository may define tasks for (repeatable; default: any).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for tools.")
@click.pass_context
def validate(ctx: click.Context, directory: str, resolve: bool, python_version: str | None,
             allowed: tuple[str, ...], as_json: bool) -> None:
    """Check a working copy as the scheduler would; print every problem as FILE:LINE: message.

    Definitions, notebook paths, entry methods, the extracted code's syntax,
    dependency strings and files git does not track. Exits 1 if there is any problem.
    """
    from .validate import report_json, report_lines, validate_directory

    settings = _optional_settings(ctx)
    named = bool(ctx.find_root().ensure_object(dict).get("config") or os.environ.get(CONFIG_ENV))
    report = validate_directory(Path(directory), allowed_codops=set(allowed) if allowed else None,
                                timeouts=(settings.timeouts.task, settings.timeouts.metadata),
                                resolve=resolve, python_version=python_version,
                                # the platform's policy for alert rules, when its scheduler.yaml is named
                                alert_policy=settings.alerts.organisations if named else None)
    warnings = _spark_warnings(report, directory, settings)
    if as_json:
        click.echo(json.dumps(dict(json.loads(report_json(report, directory)), warnings=warnings), indent=2))
    else:
        for line in report_lines(report, directory):
            click.echo(line)
        for line in warnings:
            click.echo(f"warning: {line}", err=True)
        verdict = "no problems" if report.ok else plural(len(report.problems), "problem")
        click.echo(f"{plural(len(report.tasks), 'task')} in {plural(len(report.files), 'file')}: {verdict} "
                   f"({report.seconds:.2f}s)", err=True)
    sys.exit(0 if report.ok else 1)


def _spark_warnings(report: Any, directory: str, settings: Settings) -> list[str]:
    """Where no Spark is found, a line per Spark task: each run of it would fail.

    A warning, not a problem: the scheduler's machine may have the Spark this one lacks.
    """
    from ..executors.spark_check import advice, spark_missing, spark_tasks
    from .validate import shown_path

    found = spark_tasks(report.tasks)
    reason = spark_missing(settings.spark.submit) if found else None
    if reason is None:
        return []
    lines = []
    for spec in found:
        where = shown_path(report.root, spec.source_file, directory)
        lines.append(f"{where}:{spec.source_line}: task '{spec.codops}/{spec.name}' uses the spark executor "
                     f"(the default when 'executor' is not set), but {advice(reason, 'this machine')}")
    return lines


def _save_outputs(outputs: Any, folder: str | None) -> str:
    """Write a local run's outputs as files in ``folder``; the sentence that says what happened."""
    if folder is None:
        return f"the run showed {len(outputs)} output(s); --outputs DIR saves them"
    from ..commands.outputs import file_name

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    for output in outputs:
        (target / file_name(output)).write_bytes(output.data)
    return f"the run showed {len(outputs)} output(s), saved in {target}"


@click.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("task", metavar="[CODOPS/]TASK")
@click.option("--current-python", is_flag=True,
              help="Use this interpreter instead of building the organisation's environment (quick iterations).")
@click.option("--payload", metavar="JSON", help="Run as if triggered with this payload.")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="Extra environment variable for the task (repeatable), like task_env.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where environments are kept "
                                                                    "(default ~/.cache/peach-tasks).")
@click.option("--outputs", "outputs_dir", type=click.Path(file_okay=False),
              help="Save what the run shows (display(), figures) in this folder, one file each.")
@click.pass_context
def run_cmd(ctx: click.Context, directory: str, task: str, current_python: bool, payload: str | None,
            env_pairs: tuple[str, ...], cache_dir: str | None, outputs_dir: str | None) -> None:
    """Run one task of a working copy exactly as the scheduler would; exit with its status.

    Same extraction, environment, executor, timeout and log capture; the log streams
    here and nothing is recorded. Exit status: 0 SUCCESS, 1 FAILURE, 124 TIMEOUT,
    130 interrupted, 2 the task could not start.
    """
    from .local_run import LocalRunError, run_local

    settings = _optional_settings(ctx)
    extra_env = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        extra_env[key] = value
    cancel = CancelEvent()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        result = run_local(Path(directory), task, settings, sink=lambda line: click.echo(line), cancel=cancel,
                           current_python=current_python, payload=_payload(payload),
                           cache_dir=Path(cache_dir) if cache_dir else None, extra_env=extra_env,
                           progress=lambda text: click.echo(f"peach-tasks: {text}", err=True))
    except LocalRunError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CANNOT_START)
    finally:
        signal.signal(signal.SIGINT, previous)
    outcome = result.outcome
    for request in result.requested_triggers:
        click.echo(f"peach-tasks: the task asked to trigger {request.get('codops')}/{request.get('task')} "
                   "(not sent: this is a local run)", err=True)
    if outcome.outputs:
        click.echo(f"peach-tasks: {_save_outputs(outcome.outputs, outputs_dir)}", err=True)
    summary = f"{result.spec.codops}/{result.spec.name}: {outcome.status.value}"
    if outcome.error:
        summary += f": {outcome.error}"
    elif outcome.result is not None:
        summary += f", returned {json.dumps(outcome.result)[:500]}"
    click.echo(summary, err=True)
    sys.exit(EXIT_CODES.get(outcome.status, 1))


@click.command()
@click.argument("target", metavar="CODOPS/TASK")
@click.option("--payload", metavar="JSON", help="JSON passed to the task's method if it takes a parameter.")
@click.option("--json", "as_json", is_flag=True, help="Print the queued trigger as JSON.")
@click.pass_context
def trigger(ctx: click.Context, target: str, payload: str | None, as_json: bool) -> None:
    """Run CODOPS/TASK next in its loop, ahead of the normal order, once.

    The request is stored, so it survives a restart of the scheduler; the run
    records that it was triggered, and by whom.
    """
    from ..scheduling.triggers import TriggerRefused, request_trigger

    codops, sep, name = target.partition("/")
    if not sep or not codops or not name:
        raise click.BadParameter("give the task as CODOPS/TASK, e.g. default/tf_task", param_hint="CODOPS/TASK")
    value = _payload(payload)
    store = open_store(cli_settings(ctx), migrate=False)
    try:
        queued = request_trigger(store, codops, name, value, requested_by=f"cli {_who()}")
    except TriggerRefused as exc:
        message = str(exc)
        if exc.reason == "not_found":
            known = [f"{t['codops']}/{t['name']}" for t in store.tasks()]
            near = closest(target, known)
            message += f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
        raise click.ClickException(message) from None
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(queued, indent=2))
    else:
        click.echo(f"trigger {queued['id']} queued: {target} runs next in its loop (state {queued['state']})")


@click.command()
@click.option("--org", "orgs", multiple=True, metavar="CODOPS", help="Only this organisation (repeatable).")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def triggers(ctx: click.Context, orgs: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Triggers, newest first: pending, running, done or dropped, and the run each started."""
    from ..scheduling.triggers import TriggerQueue

    store = open_store(cli_settings(ctx), migrate=False)
    try:
        rows = TriggerQueue(store).listing(orgs or None, limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(as_table(rows, TRIGGER_COLUMNS) if rows else "no triggers")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


COMMANDS = (validate, run_cmd, trigger, triggers)

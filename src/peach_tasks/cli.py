"""``peach-tasks``: the command line. Every command has ``--help`` and ``--config``."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from .commands.words import cut, demo_settings_below, did_you_mean, plural
from .errors import PeachError
from .settings import CONFIG_ENV, DEFAULT_CONFIG, Settings, SettingsError, load_settings

TASK_COLUMNS = ["codops", "name", "loop", "executor", "environment", "state", "last_status", "last_started_at",
                "last_duration_s", "version", "successes", "failures", "freshness"]
# "memory" and "cpu" are shown as written by _with_usage, not as the raw peak_memory_bytes/cpu_seconds.
RUN_COLUMNS = ["id", "version", "started_at", "finished_at", "status", "attempt", "duration_s", "memory", "cpu",
               "triggered_by", "error"]

# A run id is a database integer: beyond it there is no run, said as a usage error.
RUN_IDS = click.IntRange(1, 2**63 - 1)


def _config_option(func: Callable) -> Callable:
    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value:
            # Kept on the root context, so it counts before and after the subcommand alike.
            ctx.find_root().ensure_object(dict)["config"] = value
        return value

    return click.option("--config", "-c", type=click.Path(dir_okay=False), expose_value=False,
                        callback=remember, is_eager=True,
                        help="scheduler.yaml to use (default: $PEACH_TASKS_CONFIG, else ./scheduler.yaml).")(func)


def _settings(ctx: click.Context) -> Settings:
    import os

    explicit = ctx.find_root().ensure_object(dict).get("config")
    if not explicit and not os.environ.get(CONFIG_ENV) and not Path(DEFAULT_CONFIG).exists():
        explicit = _demo_settings()
    try:
        return load_settings(explicit)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _demo_settings() -> str | None:
    """No ./scheduler.yaml: the demo's one folder down (said on stderr), else None.

    When there are other settings files one folder down, none is guessed: the error says
    where they are.
    """
    demos, others = demo_settings_below(Path.cwd())
    if len(demos) == 1 and not others:
        click.echo(f"peach-tasks: no ./{DEFAULT_CONFIG} here; using the demo's settings {demos[0]} "
                   f"(pass --config to choose)", err=True)
        return str(demos[0])
    found = demos + others
    if found:
        shown = ", ".join(str(f) for f in found[:5])
        raise click.ClickException(f"{DEFAULT_CONFIG}: settings file not found in this folder; found {shown}: "
                                   f"pass --config {found[0]} (or cd {found[0].parent})")
    return None


def _setup_logging(settings: Settings | None = None, verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else getattr(logging, (settings.log_level if settings else "info").upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%SZ", stream=sys.stderr)
    logging.Formatter.converter = time.gmtime
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _AlembicAtDebug) for f in handler.filters):
            handler.addFilter(_AlembicAtDebug())


class _AlembicAtDebug(logging.Filter):
    """Alembic's start-up lines ("Context impl SQLiteImpl", "Will assume transactional DDL",
    each migration) are INFO to alembic, detail to us: shown as DEBUG, only with --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("alembic") and record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _open_store(settings: Settings, migrate: bool | str):
    # Imported here: SQLAlchemy costs a noticeable part of a second, and `validate` (a
    # pre-commit hook) and `--help` never open the store.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from .store import Store, StoreError

    url = settings.database_url
    if not migrate and url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise click.ClickException(f"no state yet at {url[len('sqlite:///'):]}; run 'peach-tasks run-once' "
                                   "or 'peach-tasks serve' first")
    try:
        return Store.open(url, migrate=migrate)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise click.ClickException(f"cannot use the database {shown}: {reason}; check 'database' in "
                                   "scheduler.yaml or $PEACH_TASKS_DATABASE_URL, and that the server runs") from None


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"
        return cut(str(value))  # a cut cell ends in "…"

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


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
    from .durations import format_duration

    if task.get("stale") is None:
        return dict(task, freshness=None)
    limit = format_duration(task["freshness_s"])
    return dict(task, freshness=f"STALE (>{limit})" if task["stale"] else f"ok (<{limit})")


def _print_problems(problems: list[dict[str, Any]], err: bool = True) -> None:
    for p in problems:
        where = p["file"] and (f"{p['file']}:{p['line']}" if p["line"] else p["file"])
        click.echo(f"{p['scope']}: {where}: {p['message']}" if where else f"{p['scope']}: {p['message']}", err=err)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@_config_option
@click.version_option(package_name="peach-tasks")
def main() -> None:
    """Run notebooks from git repositories as production tasks, one loop per organisation."""


@main.command()
@_config_option
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: run until stopped).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option("--no-web", is_flag=True, help="Do not serve the dashboard, API and /metrics on web.host:web.port.")
@click.pass_context
def serve(ctx: click.Context, duration: float | None, verbose: bool, no_web: bool) -> None:
    """Run all loops until SIGTERM or Ctrl-C; running tasks are then ended as ABANDONED.

    Also serves the dashboard, the JSON API and /metrics on web.host:web.port.
    """
    settings = _settings(ctx)
    _setup_logging(settings, verbose)
    _serve(settings, duration, web=not no_web)


def _stop_on_signals(scheduler: Any) -> None:
    """SIGTERM and Ctrl-C stop the loops: running tasks end as ABANDONED, nothing stays RUNNING."""

    def handle(signum: int, _frame: Any) -> None:
        logging.getLogger("peach_tasks").warning("%s received: stopping", signal.Signals(signum).name)
        scheduler.stop_event.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _serve(settings: Settings, duration: float | None, on_run: Callable | None = None, web: bool = True) -> None:
    from .scheduling.scheduler import Scheduler
    from .web.server import WebServer

    store = _open_store(settings, migrate="fresh")
    scheduler = Scheduler(settings, store, on_run=on_run)

    _stop_on_signals(scheduler)
    web_server = None
    try:
        # Checked before anything starts; listening waits until this scheduler holds the state_dir.
        web_server = WebServer(settings, store) if web else None
        scheduler.serve(duration, on_ready=web_server.start if web_server else None)
    except PeachError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if web_server is not None:
            web_server.stop()
        scheduler.close()
        store.close()


@main.command()
@_config_option
@click.option("--host", default=None, help="Address to listen on (default: web.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port to listen on (default: web.port).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the dashboard, the JSON API and /metrics against the store, without running tasks."""
    from .web.server import WebServer

    settings = _settings(ctx)
    _setup_logging(settings)
    store = _open_store(settings, migrate=False)
    try:
        server = WebServer(settings, store, host, port)
        server.listen()
        click.echo(f"dashboard on {server.url}/ (API docs at {server.url}/docs); Ctrl-C to stop", err=True)
        server.warm_up()
        server.run()
    except PeachError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


@main.command("run-once")
@_config_option
@click.option("--org", "orgs", multiple=True, metavar="CODOPS", help="Only this organisation's tasks (repeatable).")
@click.option("--loop", "loops", multiple=True, metavar="LOOP", help="Only this loop, e.g. 'metadata' (repeatable).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.pass_context
def run_once(ctx: click.Context, orgs: tuple[str, ...], loops: tuple[str, ...], verbose: bool) -> None:
    """Sync, run exactly one iteration of each selected loop (concurrently), exit.

    Exits 0 even when tasks fail (that is their status); non-zero only if the
    scheduler itself could not work.
    """
    from .scheduling.scheduler import Scheduler

    settings = _settings(ctx)
    _setup_logging(settings, verbose)
    store = _open_store(settings, migrate="fresh")
    scheduler = Scheduler(settings, store, on_run=_echo_run)
    _stop_on_signals(scheduler)
    try:
        counts = scheduler.run_once(orgs, loops)
    except PeachError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        scheduler.close()
        store.close()
    click.echo(f"ran {plural(sum(counts.values()), 'task')} in {plural(len(counts), 'loop')}", err=True)


def _echo_run(event: Any) -> None:
    o = event.outcome
    tail = f"  {o.error}" if o.error else ""
    click.echo(f"{event.codops}/{event.task}  run {event.run_id}  {o.status.value}  "
               f"{event.duration_s:.2f}s  version {event.version}{tail}", err=True)


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print problems as a JSON array.")
@click.option("--accept-rewrite", metavar="REPO", multiple=True,
              help="Follow this repository's force-pushed branch from now on.")
@click.option("--wait", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="While 'serve' runs on the same state_dir: seconds to wait for the sync it is asked to make.")
@click.pass_context
def sync(ctx: click.Context, as_json: bool, accept_rewrite: tuple[str, ...], wait: float) -> None:
    """Fetch repositories, reload definitions, build environments; print every problem.

    Each problem is printed as FILE:LINE: message. Exits 1 if there is any.

    While 'serve' runs on the same state_dir, this never touches what it uses (mirrors,
    checkouts, environments): it asks serve to sync now, waits for that sync and prints its
    problems; --accept-rewrite is handed to that sync.
    """
    from .scheduling.scheduler import SERVE_ROLE, Scheduler

    settings = _settings(ctx)
    _setup_logging(settings)
    store = _open_store(settings, migrate="fresh")
    scheduler = Scheduler(settings, store)
    summary = ""
    try:
        repos = []
        for name in accept_rewrite:
            repo = next((r for r in scheduler.repos if r.name == name), None)
            if repo is None:
                raise click.ClickException(f"no repository named '{name}' in the settings")
            repos.append(repo)
        holder = scheduler.try_lock_state_dir("sync")
        if holder is not None and not holder.endswith(f"({SERVE_ROLE})"):
            raise click.ClickException(f"{scheduler.state_dir}: {holder} is using this state_dir; "
                                       "run 'peach-tasks sync' again when it has finished")
        for repo in repos:  # honoured by the next sync: ours, or that of the serve running
            repo.accept_rewrite()
        if holder is None:
            scheduler.envs.remove_leftovers()  # what builds of a killed scheduler left
            snapshot = scheduler.sync()
            summary = f"{plural(len(snapshot.tasks), 'task')} in {plural(len(snapshot.loops), 'loop')}; "
        else:
            accepting = f" (following the rewritten history of {', '.join(accept_rewrite)})" if repos else ""
            click.echo(f"a scheduler ({holder}) is serving {scheduler.state_dir}; this command leaves its "
                       f"checkouts and environments alone and asks it to sync now{accepting}", err=True)
            if not scheduler.request_sync(wait):
                raise click.ClickException(
                    f"the running scheduler has not finished a sync within {wait:g} s (it may be building an "
                    "environment); it syncs as soon as it can" + (" and then honours --accept-rewrite" if repos
                                                                  else "") +
                    ". See its log, or run 'peach-tasks sync' again later")
            summary = "synced by the running scheduler; "
        problems = store.problems()
    finally:
        scheduler.close()
        store.close()
    if as_json:
        click.echo(json.dumps(problems, indent=2))
    else:
        for p in problems:
            where = p["file"] and (f"{p['file']}:{p['line']}" if p["line"] else p["file"])
            click.echo(f"{where or p['scope']}: {p['message']}")
        click.echo(f"{summary}{plural(len(problems), 'problem')}", err=True)
    sys.exit(1 if problems else 0)


@main.command()
@_config_option
@click.option("--org", "orgs", multiple=True, metavar="CODOPS", help="Only this organisation (repeatable).")
@click.option("--all", "include_inactive", is_flag=True, help="Also tasks no longer defined (their history stays).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of task objects.")
@click.pass_context
def tasks(ctx: click.Context, orgs: tuple[str, ...], include_inactive: bool, as_json: bool) -> None:
    """One row per task: state, last run, version, successes and failures."""
    settings = _settings(ctx)
    store = _open_store(settings, migrate=False)
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
    click.echo(_table([_with_freshness(r) for r in rows], TASK_COLUMNS) if rows else "no tasks")
    if problems:
        click.echo(f"\n{plural(len(problems), 'problem')}:", err=True)
        _print_problems(problems)


@main.command()
@_config_option
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
    settings = _settings(ctx)
    store = _open_store(settings, migrate=False)
    try:
        rows = store.runs(codops, name, limit, before)
        if not rows and not store.has_task(codops, name):
            raise click.ClickException(unknown_task(store, codops, name))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(_table([_with_usage(r) for r in rows], RUN_COLUMNS))
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


@main.command()
@_config_option
@click.argument("run_id", type=RUN_IDS)
@click.pass_context
def logs(ctx: click.Context, run_id: int) -> None:
    """The captured log of one run."""
    settings = _settings(ctx)
    store = _open_store(settings, migrate=False)
    try:
        text = store.log(run_id)
        newest = store.max_run_id() if text is None else 0
    finally:
        store.close()
    if text is None:
        known = f"the runs go from 1 to {newest}" if newest else "there is no run yet"
        raise click.ClickException(f"no run with id {run_id} ({known}); 'peach-tasks runs CODOPS/TASK' lists them")
    click.echo(text, nl=False)


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of replica objects.")
@click.pass_context
def replicas(ctx: click.Context, as_json: bool) -> None:
    """Scheduler replicas sharing this database: alive or not, their loops and lease expiry."""
    from .store.leases import LeaseStore, replica_summary

    settings = _settings(ctx)
    store = _open_store(settings, migrate=False)
    try:
        rows = replica_summary(LeaseStore(store.engine), settings.replica.lease_seconds)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    shown = [dict(r, loops=" ".join(f"{l['loop']}(until {l['expires_at']})" for l in r["loops"]) or "-")
             for r in rows]
    click.echo(_table(shown, ["id", "alive", "host", "pid", "heartbeat_at", "loops"]) if rows else "no replicas yet")


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@_config_option
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Bring the database schema to this version's (Alembic migrations)."""
    settings = _settings(ctx)
    store = _open_store(settings, migrate=True)
    click.echo(f"schema at revision {store.schema_revision()}")
    store.close()


@main.command()
@click.argument("directory", required=False, default="peach-demo", type=click.Path(file_okay=False))
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--redis", "redis_url", metavar="URL", default=None,
              help="Store the trained weights in this Redis (redis://[user:password@]host:port/db), each "
                   "organisation in its own namespace; default: a Redis answering on 127.0.0.1:6379, else a file.")
def demo(directory: str, duration: float | None, redis_url: str | None) -> None:
    """Create a demo git repository with notebooks and a scheduler.yaml in DIRECTORY, and serve it."""
    import os

    from .demo import DEMO_PASSWORD_ENV, create_demo, find_redis
    from .web.api_client import demo_url_file

    _setup_logging()
    try:
        redis = find_redis(redis_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    config = create_demo(Path(directory), redis)
    settings = load_settings(config)
    if settings.redis is not None and redis is not None:
        if redis.password:  # the scheduler reads the admin password from its environment
            os.environ[DEMO_PASSWORD_ENV] = redis.password
        click.echo(f"Redis: the training task stores its weights in {redis.url} as organisation 'default' "
                   f"(user {settings.redis.user_prefix}default). Read them back with:\n  {redis.read_back()}",
                   err=True)
    elif settings.redis is None:
        where = Path(directory).resolve() / "output" / "iris_weights.json"
        click.echo(f"No Redis{' in these settings' if redis else ' answers on 127.0.0.1:6379'} "
                   f"(give one with --redis URL): the training task writes its weights to {where}", err=True)
    url = f"http://{settings.web.host}:{settings.web.port}"
    click.echo(f"demo ready in {Path(directory).resolve()}; serving (Ctrl-C to stop).\n"
               f"Dashboard: {url}/\n"
               f"In another shell: peach-tasks --config {config} tasks\n"
               f"For the tasks-info widget in Jupyter (pip install 'peach-tasks[widget]'): "
               f"export PEACH_TASKS_URL={url}", err=True)
    # The widget finds a running demo without $PEACH_TASKS_URL: the port may not be 8765.
    written = _write_demo_url(demo_url_file(), url)
    try:
        _serve(settings, duration, on_run=_echo_run)
    finally:
        if written:
            demo_url_file().unlink(missing_ok=True)


def _write_demo_url(path: Path, url: str) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(url + "\n", encoding="utf-8")
        return True
    except OSError as exc:  # a read-only home: the banner's export line still says it
        logging.getLogger("peach_tasks").debug("cannot write %s: %s", path, exc)
        return False


# The notebook authors' commands (validate, run, trigger, triggers) live in their own module.
from .authors.commands import COMMANDS as _AUTHOR_COMMANDS  # noqa: E402 - each gets --config below
from .commands.alerts import COMMANDS as _ALERT_COMMANDS  # noqa: E402
from .commands.outputs import COMMANDS as _OUTPUT_COMMANDS  # noqa: E402
from .commands.prune import COMMANDS as _OPERATOR_COMMANDS  # noqa: E402

for _command in (*_AUTHOR_COMMANDS, *_ALERT_COMMANDS, *_OPERATOR_COMMANDS, *_OUTPUT_COMMANDS):
    main.add_command(_config_option(_command))  # click adds the option to a built command too


if __name__ == "__main__":
    main()

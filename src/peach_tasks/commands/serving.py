"""``serve``, ``web``, ``run-once``, ``sync``, ``db upgrade`` and ``demo``: the commands
that run the scheduler, its web server, or change the store's schema."""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import PeachError
from ..settings import Settings, load_settings
from .common import cli_settings, config_option, open_store, setup_logging
from .words import plural, visible


@click.command()
@config_option
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: run until stopped).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option("--no-web", is_flag=True, help="Do not serve the dashboard, API and /metrics on web.host:web.port.")
@click.pass_context
def serve(ctx: click.Context, duration: float | None, verbose: bool, no_web: bool) -> None:
    """Run all loops until SIGTERM or Ctrl-C; running tasks are then ended as ABANDONED.

    Also serves the dashboard, the JSON API and /metrics on web.host:web.port.
    """
    settings = cli_settings(ctx)
    setup_logging(settings, verbose)
    _serve(settings, duration, web=not no_web)


def _stop_on_signals(scheduler: Any) -> None:
    """SIGTERM and Ctrl-C stop the loops: running tasks end as ABANDONED, nothing stays RUNNING."""

    def handle(signum: int, _frame: Any) -> None:
        logging.getLogger("peach_tasks").warning("%s received: stopping", signal.Signals(signum).name)
        scheduler.stop_event.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    # `kill -USR1 <pid>` writes every thread's stack to stderr (the log), from C, without the
    # interpreter's help: what an operator needs when a scheduler does not stop.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _serve(settings: Settings, duration: float | None, on_run: Callable | None = None, web: bool = True) -> None:
    from ..scheduling.scheduler import Scheduler
    from ..web.server import WebServer

    store = open_store(settings, migrate="fresh")
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


@click.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default: web.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port to listen on (default: web.port).")
@click.pass_context
def web(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the dashboard, the JSON API and /metrics against the store, without running tasks."""
    from ..web.server import WebServer

    settings = cli_settings(ctx)
    setup_logging(settings)
    store = open_store(settings, migrate=False)
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


@click.command("run-once")
@config_option
@click.option("--org", "orgs", multiple=True, metavar="CODOPS", help="Only this organisation's tasks (repeatable).")
@click.option("--loop", "loops", multiple=True, metavar="LOOP", help="Only this loop, e.g. 'metadata' (repeatable).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.pass_context
def run_once(ctx: click.Context, orgs: tuple[str, ...], loops: tuple[str, ...], verbose: bool) -> None:
    """Sync, run exactly one iteration of each selected loop (concurrently), exit.

    Exits 0 even when tasks fail (that is their status); non-zero only if the
    scheduler itself could not work.
    """
    from ..scheduling.scheduler import Scheduler

    settings = cli_settings(ctx)
    setup_logging(settings, verbose)
    store = open_store(settings, migrate="fresh")
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
    tail = f"  {visible(o.error)}" if o.error else ""  # the task's own text: its escapes written out
    click.echo(f"{event.codops}/{event.task}  run {event.run_id}  {o.status.value}  "
               f"{event.duration_s:.2f}s  version {event.version}{tail}", err=True)


@click.command()
@config_option
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
    from ..scheduling.scheduler import SERVE_ROLE, Scheduler

    settings = cli_settings(ctx)
    setup_logging(settings)
    store = open_store(settings, migrate="fresh")
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
            click.echo(visible(f"{where or p['scope']}: {p['message']}"))
        click.echo(f"{summary}{plural(len(problems), 'problem')}", err=True)
    sys.exit(1 if problems else 0)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@config_option
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Bring the database schema to this version's (Alembic migrations)."""
    settings = cli_settings(ctx)
    store = open_store(settings, migrate=True)
    click.echo(f"schema at revision {store.schema_revision()}")
    store.close()


@click.command()
@click.argument("directory", required=False, default="peach-demo", type=click.Path(file_okay=False))
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--redis", "redis_url", metavar="URL", default=None,
              help="Store the trained weights in this Redis (redis://[user:password@]host:port/db), each "
                   "organisation in its own namespace; default: a Redis answering on 127.0.0.1:6379, else a file.")
def demo(directory: str, duration: float | None, redis_url: str | None) -> None:
    """Create a demo git repository with notebooks and a scheduler.yaml in DIRECTORY, and serve it."""
    import os

    from ..demo import DEMO_PASSWORD_ENV, create_demo, find_redis
    from ..web.api_client import demo_url_file

    setup_logging()
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


COMMANDS = (serve, web, run_once, sync, db, demo)

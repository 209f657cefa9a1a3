"""What every ``peach-tasks`` command shares: ``--config``, the settings it names (or the
demo's), logging, opening the store, tables and problems as printed.

The operators' commands (this package) and the authors' (``authors/commands.py``) import
this module; ``cli.py`` imports them all, and nothing imports ``cli.py``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from ..settings import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Settings,
    SettingsError,
    load_settings,
)
from .words import cut, demo_settings_below, visible

# A run id is a database integer: beyond it there is no run, said as a usage error.
RUN_IDS = click.IntRange(1, 2**63 - 1)


def config_option(func: Callable) -> Callable:
    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value:
            # Kept on the root context, so it counts before and after the subcommand alike.
            ctx.find_root().ensure_object(dict)["config"] = value
        return value

    return click.option("--config", "-c", type=click.Path(dir_okay=False), expose_value=False,
                        callback=remember, is_eager=True,
                        help="scheduler.yaml to use (default: $PEACH_TASKS_CONFIG, else ./scheduler.yaml).")(func)


def cli_settings(ctx: click.Context) -> Settings:
    import os

    explicit = ctx.find_root().ensure_object(dict).get("config")
    if not explicit and not os.environ.get(CONFIG_ENV) and not Path(DEFAULT_CONFIG).exists():
        explicit = demo_settings()
    try:
        return load_settings(explicit)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def demo_settings() -> str | None:
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


def setup_logging(settings: Settings | None = None, verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else getattr(logging, (settings.log_level if settings else "info").upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%SZ", stream=sys.stderr)
    logging.Formatter.converter = time.gmtime
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _AlembicAtDebug) for f in handler.filters):
            handler.addFilter(_AlembicAtDebug())
        if handler.formatter is not None and not isinstance(handler.formatter, _VisibleFormatter):
            handler.setFormatter(_VisibleFormatter(handler.formatter._fmt, handler.formatter.datefmt))


class _VisibleFormatter(logging.Formatter):
    """The scheduler's log lines with the control characters a task's text may bring (its
    error in a line about its run) written out, as ``peach-tasks logs`` writes them."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


class _AlembicAtDebug(logging.Filter):
    """Alembic's start-up lines ("Context impl SQLiteImpl", "Will assume transactional DDL",
    each migration) are INFO to alembic, detail to us: shown as DEBUG, only with --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("alembic") and record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def open_store(settings: Settings, migrate: bool | str):
    # Imported here: SQLAlchemy costs a noticeable part of a second, and `validate` (a
    # pre-commit hook) and `--help` never open the store.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from ..store import Store, StoreError

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


def as_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
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


def print_problems(problems: list[dict[str, Any]], err: bool = True) -> None:
    for p in problems:
        where = p["file"] and (f"{p['file']}:{p['line']}" if p["line"] else p["file"])
        line = f"{p['scope']}: {where}: {p['message']}" if where else f"{p['scope']}: {p['message']}"
        click.echo(visible(line), err=err)  # a file name from a repository may hold escape sequences

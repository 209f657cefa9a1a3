"""``peach-tasks outputs RUN_ID``: what a run showed (``display()``, figures), listed or saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import as_table, cli_settings, open_store

COLUMNS = ["seq", "kind", "mime_type", "size_bytes", "text"]
EXTENSIONS = {"text/html": "html", "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif",
              "image/svg+xml": "svg", "text/markdown": "md", "application/json": "json", "text/latex": "tex",
              "text/plain": "txt"}


def file_name(output: Any) -> str:
    """``001-figure.png``: where ``--save`` and ``peach-tasks run --outputs`` put one output."""
    seq, kind, mime = (output["seq"], output["kind"], output["mime_type"]) if isinstance(output, dict) else (
        output.seq, output.kind, output.mime_type)
    return f"{seq:03d}-{kind}.{EXTENSIONS.get(mime, 'txt')}"


@click.command()
@click.argument("run_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--save", "folder", type=click.Path(file_okay=False),
              help="Write each output into this folder (001-figure.png, 002-display.html, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array (each output without its content).")
@click.pass_context
def outputs(ctx: click.Context, run_id: int, folder: str | None, as_json: bool) -> None:
    """What one run showed: display() calls and matplotlib figures, kept with the run (also a failed one)."""

    store = open_store(cli_settings(ctx), migrate=False)
    try:
        run = store.run(run_id)
        if run is None:
            newest = store.max_run_id()
            known = f"the runs go from 1 to {newest}" if newest else "there is no run yet"
            raise click.ClickException(f"no run with id {run_id} ({known}); 'peach-tasks runs CODOPS/TASK' lists them")
        listed = store.run_outputs(run_id)
        saved = []
        if folder is not None and listed:
            target = Path(folder)
            target.mkdir(parents=True, exist_ok=True)
            for output in listed:
                found = store.run_output(run_id, output["seq"])
                if found is not None:
                    path = target / file_name(output)
                    path.write_bytes(found[1])
                    saved.append(str(path))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(listed, indent=2))
    elif listed:
        shown = [dict(o, text=(o["text"] or "").replace("\n", " ")[:60]) for o in listed]
        click.echo(as_table(shown, COLUMNS))
    else:
        still = " yet (it is still running: they are kept when it ends)" if run["status"] == "RUNNING" else ""
        click.echo(f"run {run_id} ({run['codops']}/{run['task']}, {run['status']}) showed nothing{still}")
    if saved:
        click.echo(f"saved {len(saved)} file(s) in {folder}", err=True)


COMMANDS = (outputs,)

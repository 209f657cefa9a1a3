"""Screenshots of the dashboard, for a person to look at: ``python bench/screenshots.py OUT_DIR``.

Not a benchmark and not a test: it asserts nothing. It fills a temporary store with three
organisations written as the loops write them (through ``Store``), with start times spread
over the last two days so the graph's time axis has something to show, serves the real
dashboard on a free loopback port, and photographs it with Debian's headless Chromium
(Playwright, ``/usr/bin/chromium`` or ``$PEACH_TASKS_CHROMIUM``):

  overview.png         the home page at 1280 px: failing tasks first, one card per organisation
                       (sesr's metadata task is stale: its hourly freshness is 3 h old)
  failing-task.png     a failing task at 1280 px: details, graph, executions (a 2,000-character
                       error), its failed run's log
  narrow.png           the same task at 420 px (phone width): everything stacked
  dark-overview.png, dark-task.png   the same with prefers-color-scheme: dark
  empty.png            a store with no tasks
  not-found.png        an unknown address
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.settings import settings_from_dict
from peach_tasks.store import Store
from peach_tasks.store.schema import runs, tasks
from peach_tasks.store.store import TaskRegistration
from peach_tasks.web.server import WebServer

LONG_ERROR = ("ValueError: the input table is empty: " + "no rows came back from the warehouse for the "
              "requested partition; ") * 22


def spec(codops: str, name: str, **extra: object) -> TaskSpec:
    return TaskSpec(codops, name, f"{name}.ipynb", name, executor=Executor.PYTHON, repo="algos",
                    source_file=f"peach.conf/{codops}.yaml", source_line=3, **extra)  # type: ignore[arg-type]


def add_run(store: Store, task: TaskSpec, version: str, status: RunStatus, hours_ago: float, seconds: float,
            lines: list[str], error: str | None = None) -> int:
    run_id = store.start_run(task, version, "c0ffee", "screenshots")
    writer = store.log_writer(run_id)
    for line in lines:
        writer.write(line)
    if status == RunStatus.RUNNING:
        writer.flush()
        return run_id
    store.finish_run(run_id, Outcome(status, error=error, peak_memory_bytes=180 * 2**20, cpu_seconds=seconds * 0.8),
                     log=writer)
    started = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    with store.engine.begin() as conn:  # spread over two days, as a real history is
        conn.execute(runs.update().where(runs.c.id == run_id).values(
            started_at=started, finished_at=started + timedelta(seconds=seconds), duration_s=seconds))
    return run_id


def fill(store: Store) -> int:
    """Three organisations; returns the failing task's newest failed run."""
    steady, report, train = spec("chrts", "summary"), spec("default", "build_report"), spec("default", "train_model")
    fetch = spec("sesr", "fetch_metadata", loop="metadata")
    store.register_tasks([TaskRegistration(t, "3f9a1c2", freshness_s=3600 if t is fetch else None)
                          for t in (steady, report, train, fetch)])
    for index in range(14):
        add_run(store, steady, "3f9a1c2", RunStatus.SUCCESS, 46 - index * 3.3, 2.0 + (index % 4) * 0.7,
                [f"summary: {1200 + index} rows written"])
        add_run(store, train, "3f9a1c2" if index > 5 else "7b1e0d4", RunStatus.SUCCESS, 45 - index * 3.3,
                30 + index * 2.5, ["training", f"accuracy 0.9{index % 10}"])
        add_run(store, fetch, "3f9a1c2", RunStatus.SUCCESS, 44 - index * 3.2, 0.4, ["metadata fetched"])
    failed = 0
    for index in range(8):
        status = RunStatus.SUCCESS if index < 3 else (RunStatus.TIMEOUT if index == 5 else RunStatus.FAILURE)
        failed = add_run(store, report, "7b1e0d4" if index < 3 else "a41c9e8", status, 40 - index * 5,
                         12 + index * 3, ["building the report", "reading the warehouse"],
                         error=None if status == RunStatus.SUCCESS else LONG_ERROR)
    add_run(store, steady, "3f9a1c2", RunStatus.RUNNING, 0, 0, ["summary: starting"])
    with store.engine.begin() as conn:  # the metadata task must succeed hourly; its last success is 3 h old
        conn.execute(tasks.update().where(tasks.c.name == "fetch_metadata").values(
            last_success_at=datetime.now(timezone.utc) - timedelta(hours=3)))
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args()
    chromium = os.environ.get("PEACH_TASKS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_dict({"state_dir": "state"}, tmp)
        store = Store.open(settings.database_url)
        empty_dir = Path(tmp, "empty")
        empty_dir.mkdir()
        empty_settings = settings_from_dict({"state_dir": "state"}, empty_dir)
        empty_store = Store.open(empty_settings.database_url)
        failed = fill(store)
        web = WebServer(settings, store, host="127.0.0.1", port=0).start()
        empty = WebServer(empty_settings, empty_store, host="127.0.0.1", port=0).start()
        task = f"{web.url}/#org=default&task=build_report&run={failed}"
        shots = [("overview.png", f"{web.url}/", 1280, "light"),
                 ("failing-task.png", task, 1280, "light"),
                 ("narrow.png", task, 420, "light"),
                 ("dark-overview.png", f"{web.url}/", 1280, "dark"),
                 ("dark-task.png", task, 1280, "dark"),
                 ("empty.png", f"{empty.url}/", 1280, "light"),
                 ("not-found.png", f"{web.url}/no/such/page", 1280, "light")]
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless"])
                for name, url, width, scheme in shots:
                    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
                    page = context.new_page()
                    page.goto(url)
                    page.wait_for_selector("#status:not(:text('loading…'))", timeout=20_000) \
                        if "no/such" not in url else None
                    page.wait_for_timeout(800)  # the log's smooth scroll
                    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the picture
                    page.screenshot(path=str(args.out / name), full_page=True)
                    print(args.out / name)
                    context.close()
                browser.close()
        finally:
            web.stop()
            empty.stop()
            store.close()
            empty_store.close()


if __name__ == "__main__":
    sys.exit(main())

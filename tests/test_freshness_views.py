"""Staleness where people look: the dashboard (headless chromium) and the Jupyter widget,
both reading a real server over a store whose tasks are fresh, stale and without freshness."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from web_helpers import CHROMIUM_ARGS, chromium_executable, start_server

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.settings import settings_from_dict
from peach_tasks.store import Store
from peach_tasks.store.schema import tasks
from peach_tasks.store.store import TaskRegistration, utcnow
from peach_tasks.web.api_client import ApiClient


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    settings = settings_from_dict({"state_dir": "state"}, tmp_path)
    store = Store.open(settings.database_url)
    registered = [TaskRegistration(TaskSpec("chrts", name, "nb.ipynb", "main", executor=Executor.PYTHON, repo="algos",
                                            source_file="peach.yaml", source_line=3), "v1", freshness)
                  for name, freshness in (("stale_one", 3600.0), ("fresh_one", 3600.0), ("plain", None))]
    store.register_tasks(registered)
    for task in registered:
        store.finish_run(store.start_run(task.spec, "v1", "c", "test"), Outcome(RunStatus.SUCCESS))
    with store.engine.begin() as conn:  # its last success, three hours ago
        conn.execute(tasks.update().where(tasks.c.name == "stale_one")
                     .values(last_success_at=utcnow() - timedelta(hours=3)))
    web = start_server(settings, store)
    yield web
    web.stop()
    store.close()


def test_the_widget_marks_stale_and_fresh_tasks(served: Any) -> None:
    from peach_tasks.web.widget import TASK_COLUMNS, TasksInfo

    info = TasksInfo(ApiClient(served.url))
    info.organisation.value = "chrts"
    assert "Freshness" in TASK_COLUMNS and "Freshness</th>" in info.tasks_table.value
    rows = {row.split("</b>")[0].rsplit("<b>", 1)[-1]: row for row in info.tasks_table.value.split("<tr")[2:]}
    assert ">stale</span>" in rows["stale_one"] and "no success within 1h" in rows["stale_one"]
    assert ">fresh</span>" in rows["fresh_one"] and "stale" not in rows["fresh_one"]
    assert "stale" not in rows["plain"] and "fresh" not in rows["plain"]


@pytest.mark.browser
def test_the_dashboard_shows_a_freshness_column(served: Any) -> None:
    executable = chromium_executable()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served.url + "/#org=chrts")
            stale = page.locator("tr[data-task=stale_one] td.freshness")
            expect(stale).to_have_text("STALE", timeout=20_000)
            assert "freshness 1 h 0 min" in (stale.locator(".badge").get_attribute("title") or "")
            expect(page.locator("tr[data-task=fresh_one] td.freshness")).to_have_text("FRESH")
            expect(page.locator("tr[data-task=plain] td.freshness")).to_have_text("–")
        finally:
            browser.close()

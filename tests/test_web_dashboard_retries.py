"""Retry attempts in the dashboard, in real headless Chromium: a retry's row says which attempt
it is and links to the first attempt, whose log the link shows below."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import write_settings
from web_helpers import start_server

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.settings import Settings, load_settings
from peach_tasks.store import Store
from peach_tasks.store.store import TaskRegistration

pytestmark = [pytest.mark.browser]


@dataclass
class Retried:
    settings: Settings
    store: Store
    first: int  # FAILURE, attempt 1
    second: int  # TIMEOUT, attempt 2 (retry of first)
    third: int  # SUCCESS, attempt 3 (retry of first)
    plain: int  # a later run of its own: SUCCESS, attempt 1


def retried_store(root: Path) -> Retried:
    """One iteration of a task with ``retries: 2`` written through the store as a loop writes it
    (loops.py: each attempt its own run, linked to the first), then the next iteration's run."""
    settings = load_settings(write_settings(root, []))
    store = Store.open(settings.database_url)
    spec = TaskSpec("shop", "report", "report.ipynb", "report", executor=Executor.PYTHON, repo="algos", retries=2)
    store.register_tasks([TaskRegistration(spec, "v")])

    def run(status: RunStatus, attempt: int = 1, retry_of: int | None = None, error: str | None = None) -> int:
        run_id = store.start_run(spec, "v", "c", "test", retry_of=retry_of, attempt=attempt)
        writer = store.log_writer(run_id)
        writer.write(f"attempt {attempt} of the report says hello\n")
        store.finish_run(run_id, Outcome(status, error=error), log=writer, retried=status != RunStatus.SUCCESS)
        return run_id

    first = run(RunStatus.FAILURE, error="RuntimeError: the shop's API said 503")
    second = run(RunStatus.TIMEOUT, 2, first, error="timed out")
    third = run(RunStatus.SUCCESS, 3, first)
    plain = run(RunStatus.SUCCESS)
    return Retried(settings, store, first, second, third, plain)


def test_a_retry_shows_its_attempt_and_links_to_the_first(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    made = retried_store(tmp_path)
    web = start_server(made.settings, made.store)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(f"{web.url}/#org=shop&task=report")
        rows = page.locator("[data-testid=runs-table] tbody tr")
        expect(rows).to_have_count(4)
        for retry, attempt in ((made.second, 2), (made.third, 3)):
            row = page.locator(f"tr[data-run='{retry}']")
            expect(row.locator(f"[data-testid=attempt-{retry}]")).to_have_text(
                f"attempt {attempt}, retry of run #{made.first}")
            link = row.locator(f"[data-testid=retry-of-{retry}]")
            assert link.get_attribute("href") == f"#org=shop&task=report&run={made.first}"
        for alone in (made.first, made.plain):  # first attempts say nothing more
            expect(page.locator(f"tr[data-run='{alone}'] .attempt")).to_have_count(0)
            expect(page.locator(f"tr[data-run='{alone}'] td[data-label=Run]")).to_have_text(str(alone))

        page.locator(f"[data-testid=show-below-{made.third}]").click()
        expect(page.locator("#logs-title")).to_have_text(
            f"Log of run {made.third} (attempt 3, retry of run {made.first})")
        expect(page.locator("#log")).to_contain_text("attempt 3 of the report says hello")

        page.locator(f"[data-testid=retry-of-{made.second}]").click()  # the first attempt's log, below
        expect(page.locator("#logs-title")).to_have_text(f"Log of run {made.first}")
        expect(page.locator("#log")).to_contain_text("attempt 1 of the report says hello")
        expect(page.locator(f"tr[data-run='{made.first}']")).to_have_class("selected")
        assert page.evaluate("location.hash") == f"#org=shop&task=report&run={made.first}"

        page.reload()  # the address names the first attempt: it is shown again
        expect(page.locator("#logs-title")).to_have_text(f"Log of run {made.first}")
        assert errors == []
        page.screenshot(path=str(tmp_path / "retries.png"), full_page=True)
    finally:
        context.close()
        web.stop()
        made.store.close()

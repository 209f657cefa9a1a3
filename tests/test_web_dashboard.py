"""The dashboard in real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from web_helpers import Filled, fill_store, measured_store, start_server

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.web.server import WebServer

pytestmark = pytest.mark.browser

BLUE, RED = "rgb(31, 119, 180)", "rgb(214, 39, 40)"
TOKEN = "dashboard-token-0123456789abcdef"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    opened.problems = []  # type: ignore[attr-defined]
    opened.on("pageerror", lambda error: opened.problems.append(str(error)))
    opened.on("requestfailed", lambda request: opened.problems.append(f"failed: {request.url}"))
    yield opened
    context.close()


def test_pick_organisation_open_task_show_below(page: Any, filled: Filled, server: WebServer) -> None:
    from playwright.sync_api import expect

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url + "/")
    page.select_option("[data-testid=org-select]", "sesr")
    expect(page.locator("[data-testid=tasks-table] tbody tr")).to_have_count(1)
    page.select_option("[data-testid=org-select]", "chrts")
    expect(page.locator("[data-testid=tasks-table] tbody tr")).to_have_count(2)
    flaky = page.locator("tr[data-task=flaky]")
    expect(flaky).to_contain_text("FAILURE")
    expect(flaky).to_contain_text(filled.flaky_versions[1])
    flaky.click()

    runs = filled.store.runs("chrts", "flaky")
    failure, success = runs[0]["id"], runs[1]["id"]
    rows = page.locator("[data-testid=runs-table] tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(filled.flaky_versions[1])
    expect(rows.nth(1)).to_contain_text("SUCCESS")
    # The graph: one blue dot for the success, one red cross for the failure.
    dots, crosses = page.locator("#graph .point.success"), page.locator("#graph .point.failure")
    expect(dots).to_have_count(1)
    expect(crosses).to_have_count(1)
    assert dots.first.get_attribute("data-run") == str(success)
    assert crosses.first.get_attribute("data-run") == str(failure)
    assert dots.first.evaluate("node => getComputedStyle(node).fill") == BLUE
    assert crosses.first.evaluate("node => getComputedStyle(node).stroke") == RED
    assert crosses.first.evaluate("node => node.getBBox().width") > 0

    log = page.locator("[data-testid=log]")
    expect(log).to_contain_text("flaky first try")  # every log by default, each run marked
    expect(log).to_contain_text("flaky second try")
    expect(log).to_contain_text(f"===== run {success} ")
    page.click(f"[data-testid=show-below-{failure}]")
    expect(page.locator("[data-testid=logs-title]")).to_have_text(f"Log of run {failure}")
    expect(log).to_contain_text("RuntimeError: flaky broke")
    expect(log).not_to_contain_text("flaky first try")
    expect(page.locator(f"tr[data-run='{failure}']")).to_have_class("selected")
    page.click("#show-all")
    expect(log).to_contain_text("flaky first try")

    assert requested and all(url.startswith(server.url) for url in requested)  # nothing from a CDN
    assert page.problems == []


def test_refreshes_by_itself(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    own = fill_store(tmp_path)  # its own store: this test adds runs
    web = start_server(own.settings, own.store)
    try:
        page.goto(f"{web.url}/#org=chrts&task=steady")
        steady = page.locator("tr[data-task=steady] td").nth(7)
        expect(steady).to_have_text("2")
        expect(page.locator("[data-testid=runs-table] tbody tr")).to_have_count(2)
        scheduler = Scheduler(own.settings, own.store)
        try:
            scheduler.run_once(orgs=["chrts"])
        finally:
            scheduler.close()
        # No reload: the page polls the API (every 5 s; a busy machine may take longer).
        expect(steady).to_have_text("3", timeout=60_000)
        expect(page.locator("[data-testid=runs-table] tbody tr")).to_have_count(3, timeout=30_000)
        expect(page.locator("#graph .point.success")).to_have_count(3, timeout=30_000)
    finally:
        web.stop()
        own.store.close()


# The executions table as wide as it was before the Memory and CPU columns: without them and
# with the error column's old limit.
WITHOUT_USAGE = "#runs .usage { display: none } td.error-cell { max-width: 22rem }"


def test_executions_show_memory_and_cpu_without_widening_the_table(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    own = measured_store(tmp_path)
    web = start_server(own.settings, own.store)
    try:
        page.set_viewport_size({"width": 1280, "height": 900})  # where the table already scrolls
        page.goto(f"{web.url}/#org=default&task=heavy")
        expect(page.locator("[data-testid=runs-table] th.usage")).to_have_text(["Memory", "CPU"])
        expect(page.locator(f"[data-testid=memory-{own.measured}]")).to_have_text("212 MiB")
        expect(page.locator(f"[data-testid=cpu-{own.measured}]")).to_have_text("1.3 s")
        expect(page.locator(f"[data-testid=memory-{own.unmeasured}]")).to_have_text("")  # not measured: blank
        expect(page.locator(f"[data-testid=cpu-{own.unmeasured}]")).to_have_text("")

        # The newest run failed with a long error: the widest a row gets.
        width = "() => document.getElementById('runs').scrollWidth"
        now = page.evaluate(width)
        page.add_style_tag(content=WITHOUT_USAGE)
        before = page.evaluate(width)
        assert now <= before, (now, before)
        assert page.problems == []
    finally:
        web.stop()
        own.store.close()


def test_asks_for_a_token_and_shows_only_its_organisation(page: Any, filled: Filled) -> None:
    from playwright.sync_api import expect

    web = start_server(filled.settings, filled.store, tokens=[{"token": TOKEN, "codops": ["sesr"]}])
    try:
        page.goto(web.url + "/")
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#status")).to_have_text("an access token is needed")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#token-form")).to_be_hidden()
        # The overview, and the one organisation the token may see.
        expect(page.locator("[data-testid=org-select] option")).to_have_count(2)
        expect(page.locator("[data-testid=org-select] option[value=sesr]")).to_have_count(1)
        page.select_option("[data-testid=org-select]", "sesr")
        expect(page.locator("[data-testid=org-select]")).to_have_value("sesr")
        expect(page.locator("[data-testid=tasks-table] tbody tr")).to_have_count(1)
    finally:
        web.stop()

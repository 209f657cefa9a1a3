"""The dashboard's pages (issue 14) in real headless Chromium (Debian's, driven by Playwright):
the overview, Run now with its live log, the executions table at 1280 and 420 px, filters,
local times, task details, dark mode, the empty store and the 404 page."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from conftest import Repo, py_task, task_yaml, wait_for, write_settings
from web_helpers import Filled, start_server

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import Settings, load_settings
from peach_tasks.store import Store
from peach_tasks.store.store import TaskRegistration
from peach_tasks.web.server import WebServer

pytestmark = pytest.mark.browser

TOKEN = "run-now-token-0123456789abcdef"
LONG_ERROR = "ValueError: " + " ".join(f"word{i:04d}" for i in range(230))  # 2,000+ characters, no newline
NO_H_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


def open_page(browser: Any, width: int = 1280, height: int = 900, scheme: str = "light") -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    return page


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    opened = open_page(browser)
    yield opened
    opened.context.close()


@dataclass
class Project:
    settings: Settings
    store: Store
    repo: Repo


def project(root: Path, tasks: dict[str, dict[str, dict[str, Any]]], notebooks: dict[str, str],
            **settings: Any) -> Project:
    """A real repository with ``tasks`` per organisation, synced (not run) by the real scheduler."""
    repo = Repo(root / "algos")
    for name, code in notebooks.items():
        repo.notebook(name, code)
    for codops, defined in tasks.items():
        repo.write(f"peach.conf/{codops}.yaml", task_yaml(codops, defined))
    repo.commit("tasks")
    loaded = load_settings(write_settings(root, [{"url": str(repo.path)}], **settings))
    return Project(loaded, Store.open(loaded.database_url), repo)


# -- the overview ---------------------------------------------------------------------------

def test_overview_puts_a_failing_task_of_a_second_organisation_first(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    own = project(tmp_path, {"alpha": {"fine": py_task("fine.ipynb", "fine")},
                             "beta": {"broken": py_task("broken.ipynb", "broken"),
                                      "works": py_task("fine.ipynb", "fine")}},
                  {"fine.ipynb": "def fine():\n    print('all good')\n",
                   "broken.ipynb": "def broken():\n    print('reading input')\n    raise KeyError('no column price')\n"})
    scheduler = Scheduler(own.settings, own.store)
    try:
        scheduler.run_once()
    finally:
        scheduler.close()
    [failed] = own.store.runs("beta", "broken")
    web = start_server(own.settings, own.store)
    try:
        page.goto(web.url + "/")  # the home page is the overview, not the first organisation
        expect(page.locator("[data-testid=overview]")).to_be_visible()
        expect(page.locator("[data-testid=failing-title]")).to_have_text("1 failing task")
        items = page.locator("[data-testid=failing-list] li")
        expect(items).to_have_count(1)
        expect(items.first).to_contain_text("beta/broken")
        expect(items.first).to_contain_text("KeyError")
        alpha, beta = page.locator("[data-testid=org-card-alpha]"), page.locator("[data-testid=org-card-beta]")
        expect(alpha.locator("[data-count=failing] b")).to_have_text("0")
        expect(alpha.locator("[data-count=healthy] b")).to_have_text("1")
        expect(beta.locator("[data-count=failing] b")).to_have_text("1")
        expect(beta.locator("[data-count=healthy] b")).to_have_text("1")
        expect(page.locator("[data-count=stale]")).to_have_count(0)  # no freshness known: no stale count
        # One click from the overview to the failed run's log.
        page.click("[data-testid=failing-log-beta-broken]")
        expect(page).to_have_url(f"{web.url}/#org=beta&task=broken&run={failed['id']}")
        expect(page.locator("[data-testid=logs-title]")).to_have_text(f"Log of run {failed['id']}")
        expect(page.locator("[data-testid=log]")).to_contain_text("KeyError: 'no column price'")
        expect(page.locator("[data-testid=log]")).to_be_in_viewport()
        page.go_back()  # and back to the overview
        expect(page.locator("[data-testid=overview]")).to_be_visible()
        page.click("[data-testid=org-card-alpha]")
        expect(page.locator("[data-testid=tasks-table] tbody tr")).to_have_count(1)
        assert page.problems == []
    finally:
        web.stop()
        own.store.close()


def test_an_empty_store_says_what_to_do(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    own = project(tmp_path, {}, {})
    web = start_server(own.settings, own.store)
    try:
        page.goto(web.url + "/")
        empty = page.locator("[data-testid=empty-store]")
        expect(empty).to_be_visible()
        expect(empty).to_contain_text("No tasks yet")
        expect(empty).to_contain_text("repositories:")
        expect(empty).to_contain_text("peach-tasks sync")
        expect(empty).to_contain_text("peach-tasks demo")
    finally:
        web.stop()
        own.store.close()


def test_unknown_paths_get_a_page_and_the_api_keeps_json(page: Any, server: WebServer) -> None:
    from playwright.sync_api import expect

    response = page.goto(server.url + "/no/such/<page>")
    assert response.status == 404 and response.headers["content-type"].startswith("text/html")
    found = page.locator("[data-testid=not-found]")
    expect(found).to_contain_text("Nothing at /no/such/<page>")  # escaped, shown as text
    page.get_by_role("link", name="/", exact=True).click()
    expect(page.locator("[data-testid=overview]")).to_be_visible()
    api = httpx.get(server.url + "/api/no/such/thing")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}


# -- Run now ----------------------------------------------------------------------------------

TICKER = ("import time\n"
          "def ticker(payload=None):\n"
          "    print('tick 1 payload', payload, flush=True)\n"
          "    time.sleep(3)\n"
          "    print('tick 2', flush=True)\n"
          "    time.sleep(3)\n"
          "    print('ticker done', flush=True)\n")


def test_run_now_queues_a_run_whose_log_follows_live(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # A slow pace: after its first iteration the loop waits, and only the trigger runs the task.
    own = project(tmp_path, {"chrts": {"ticker": py_task("ticker.ipynb", "ticker")}}, {"ticker.ipynb": TICKER},
                  loop={"min_iteration_seconds": 3600, "sync_interval_seconds": 3600})
    scheduler = Scheduler(own.settings, own.store)
    serving = threading.Thread(target=scheduler.serve, name="serve", daemon=True)
    serving.start()
    web = start_server(own.settings, own.store, tokens=[{"token": TOKEN, "codops": ["chrts"]}])
    page = open_page(browser)
    try:
        first = wait_for(lambda: [r for r in own.store.runs("chrts", "ticker") if r["status"] == "SUCCESS"], 120,
                         "the first iteration's run")[0]
        page.goto(f"{web.url}/#org=chrts&task=ticker")
        page.fill("#token", TOKEN)  # the trigger goes through the API with the viewer's token
        page.click("#token-form button")
        rows = page.locator("[data-testid=runs-table] tbody tr")
        expect(rows).to_have_count(1)
        page.click("text=with a payload")
        page.fill("[data-testid=payload]", "{not json")
        page.click("[data-testid=run-now]")
        expect(page.locator("[data-testid=run-now-status]")).to_contain_text("not JSON")
        page.fill("[data-testid=payload]", '{"n": 3}')
        page.click("[data-testid=run-now]")
        expect(page.locator("[data-testid=run-now-status]")).to_contain_text("Queued (trigger")
        # The run appears, and its log is shown while it runs, growing without a reload.
        expect(rows).to_have_count(2, timeout=60_000)
        log = page.locator("[data-testid=log]")
        expect(log).to_contain_text("tick 1 payload {'n': 3}", timeout=30_000)
        newest = rows.first
        expect(newest).to_contain_text("RUNNING")
        expect(log).not_to_contain_text("ticker done")
        expect(log).to_contain_text("tick 2", timeout=30_000)
        expect(log).to_contain_text("ticker done", timeout=30_000)
        expect(newest).to_contain_text("SUCCESS", timeout=30_000)
        runs = own.store.runs("chrts", "ticker")
        assert [r["id"] for r in runs][1:] == [first["id"]]
        assert runs[0]["payload"] == {"n": 3} and "token for chrts" in runs[0]["triggered_by"]
        expect(page.locator("[data-testid=logs-title]")).to_have_text(f"Log of run {runs[0]['id']}")
        assert page.problems == []
    finally:
        page.context.close()
        web.stop()
        scheduler.stop_event.set()
        serving.join(60)
        scheduler.close()
        own.store.close()


def test_a_page_of_another_site_cannot_run_a_task(browser: Any, filled: Filled, server: WebServer) -> None:
    """The hostile case: a page served from another origin posts to the dashboard's trigger."""
    other = start_server(filled.settings, filled.store)  # another port: another origin
    page = open_page(browser)
    try:
        before = len(filled.store.runs("chrts", "steady", limit=100))
        from peach_tasks.scheduling.triggers import TriggerQueue

        queued = len(TriggerQueue(filled.store).listing(["chrts"]))
        # A document of that origin without the dashboard's own policy (which would forbid the
        # fetch before it left the browser): what a hostile site's page is.
        page.goto(other.url + "/openapi.json")
        target = f"{server.url}/api/organisations/chrts/tasks/steady/trigger"
        outcome = page.evaluate("""async (url) => {
            const tries = [];
            for (const init of [
                {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "{}"},
                {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"}]) {
              try { const r = await fetch(url, init); tries.push(r.type + ":" + r.status); }
              catch (err) { tries.push("refused"); }
            }
            return tries;
        }""", target)
        assert outcome == ["opaque:0", "refused"], outcome  # no answer to read, the JSON one never sent
        assert len(TriggerQueue(filled.store).listing(["chrts"])) == queued  # nothing was queued
        assert len(filled.store.runs("chrts", "steady", limit=100)) == before
    finally:
        page.context.close()
        other.stop()


# -- the executions table, filters, times, details ---------------------------------------------------

@pytest.fixture(scope="module")
def long_error(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, int, Store]]:
    """A task whose newest run failed with a 2,000-character error, written as a loop writes it."""
    root = tmp_path_factory.mktemp("long-error")
    settings = load_settings(write_settings(root, []))
    store = Store.open(settings.database_url)
    spec = TaskSpec("default", "report", "report.ipynb", "report", executor=Executor.PYTHON, repo="algos",
                    source_file="peach.yaml", source_line=3, timeout=90.0, dependencies=("tabulate",))
    store.register_tasks([TaskRegistration(spec, "v1")])
    for _ in range(3):
        store.finish_run(store.start_run(spec, "v1", "c", "test"), Outcome(RunStatus.SUCCESS))
    failed = store.start_run(spec, "v2", "c", "test")
    store.finish_run(failed, Outcome(RunStatus.FAILURE, error=LONG_ERROR))
    web = start_server(settings, store)
    yield web, failed, store
    web.stop()
    store.close()


@pytest.mark.parametrize("width", [1280, 1400, 1920])
def test_the_table_fits_from_1280_px_with_a_2000_character_error(browser: Any, long_error: Any, width: int) -> None:
    from playwright.sync_api import expect

    web, failed, _ = long_error
    assert len(LONG_ERROR) > 2000
    page = open_page(browser, width=width)
    page.goto(f"{web.url}/#org=default&task=report")
    below = page.locator(f"[data-testid=show-below-{failed}]")
    expect(below).to_be_visible()
    box = below.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box  # on screen, not scrolled away
    assert page.evaluate(NO_H_SCROLL)
    assert page.evaluate("() => { const s = document.querySelector('.runs-scroll'); "
                         "return s.scrollWidth <= s.clientWidth; }")  # the table itself fits too
    # The error is clamped to one line; the whole of it is one click away.
    error = page.locator(f"[data-testid=error-{failed}]")
    clamped = error.bounding_box()["height"]
    page.click(f"[data-testid=error-toggle-{failed}]")
    expect(page.locator(f"[data-testid=error-toggle-{failed}]")).to_have_text("less")
    assert error.bounding_box()["height"] > 3 * clamped
    assert error.inner_text().strip() == LONG_ERROR
    assert page.evaluate(NO_H_SCROLL)
    below.click()
    expect(page.locator("[data-testid=logs-title]")).to_have_text(f"Log of run {failed}")
    assert page.problems == []
    page.context.close()


@pytest.mark.parametrize("view", ["", "#org=default", "#org=default&task=report"],
                         ids=["overview", "organisation", "task"])
def test_nothing_scrolls_sideways_at_420_px(browser: Any, long_error: Any, view: str) -> None:
    from playwright.sync_api import expect

    web, failed, _ = long_error
    page = open_page(browser, width=420, height=800)
    try:
        page.goto(f"{web.url}/{view}")
        expect(page.locator("#status")).to_contain_text("updated")
        if "task=" in view:
            below = page.locator(f"[data-testid=show-below-{failed}]")
            expect(below).to_be_visible()
            page.click(f"[data-testid=error-toggle-{failed}]")  # the whole error, wrapped
            below.click()
            expect(page.locator("[data-testid=logs-title]")).to_have_text(f"Log of run {failed}")
        assert page.evaluate(NO_H_SCROLL), page.evaluate("() => [document.documentElement.scrollWidth, "
                                                         "window.innerWidth]")
        assert page.problems == []
    finally:
        page.context.close()


def test_filters_by_status_and_version(page: Any, filled: Filled, server: WebServer) -> None:
    from playwright.sync_api import expect

    runs = filled.store.runs("chrts", "flaky")
    failure, success = runs[0]["id"], runs[1]["id"]
    page.goto(f"{server.url}/#org=chrts&task=flaky")
    rows = page.locator("[data-testid=runs-table] tbody tr")
    expect(rows).to_have_count(2)
    page.select_option("[data-testid=filter-status]", "FAILED")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run", str(failure))
    expect(page.locator("#graph .point")).to_have_count(1)  # the graph shows what the table shows
    page.select_option("[data-testid=filter-status]", "")
    page.select_option("[data-testid=filter-version]", filled.flaky_versions[0])
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run", str(success))
    page.select_option("[data-testid=filter-status]", "FAILED")  # version 1 never failed
    expect(rows).to_have_count(0)
    expect(page.locator("#no-runs")).to_have_text("No execution matches these filters.")


def test_times_are_local_and_relative_with_utc_on_hover(browser: Any, filled: Filled, server: WebServer) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="Asia/Tokyo")
    page = context.new_page()
    try:
        [newest] = filled.store.runs("chrts", "flaky", limit=1)
        page.goto(f"{server.url}/#org=chrts&task=flaky")
        started = page.locator(f"tr[data-run='{newest['id']}'] time")
        expect(started).to_contain_text(" ago")
        utc = newest["started_at"]  # e.g. 2026-11-30T05:12:03.123Z
        expect(started).to_have_attribute("title", utc[:19].replace("T", " ") + " UTC")
        tokyo_hour = (int(utc[11:13]) + 9) % 24
        assert f"{tokyo_hour:02d}:{utc[14:16]}" in started.inner_text() or \
               f"{tokyo_hour % 12 or 12}:{utc[14:16]}" in started.inner_text(), started.inner_text()
        # The graph's time axis has ticks with labels, not just its two ends.
        assert page.locator("#graph .tick-label").count() >= 1
    finally:
        context.close()


def test_task_details_say_what_runs_and_how(page: Any, long_error: Any) -> None:
    from playwright.sync_api import expect

    web, _, _ = long_error
    page.goto(f"{web.url}/#org=default&task=report")
    details = page.locator("[data-testid=task-details]")
    expect(details.locator("[data-detail=notebook]")).to_have_text("report.ipynb")
    expect(details.locator("[data-detail=method]")).to_have_text("report()")
    expect(details.locator("[data-detail=executor]")).to_have_text("python")
    expect(details.locator("[data-detail=loop]")).to_have_text("default")
    # 90 s asked, within a loop of 60 s (the test settings): the loop's limit holds.
    expect(details.locator("[data-detail=timeout]")).to_have_text("1 min (the loop's limit; its definition asks 1 min 30 s)")
    expect(details.locator("[data-detail='defined in']")).to_have_text("algos: peach.yaml:3")
    expect(details.locator("[data-detail=environment]")).to_have_text("default/base (uv), adds tabulate")


def test_the_dashboard_says_when_a_spark_task_has_no_spark(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    own = project(tmp_path, {}, {"first.ipynb": "def first():\n    return 1\n"},
                  spark={"submit": "/nonexistent/bin/spark-submit"})
    own.repo.write("peach.yaml", "codops: default\ntasks:\n  first:\n    notebook: first.ipynb\n    method: first\n")
    own.repo.commit("a first task, spark by default")
    scheduler = Scheduler(own.settings, own.store)
    try:
        scheduler.sync()
    finally:
        scheduler.close()
    web = start_server(own.settings, own.store)
    try:
        page.goto(web.url + "/")
        expect(page.locator("[data-testid=overview-problems]")).to_contain_text("this scheduler has no Spark")
        page.goto(f"{web.url}/#org=default&task=first")
        problems = page.locator("[data-testid=task-details] [data-detail=problems]")
        expect(problems).to_contain_text("uses the spark executor (the default when 'executor' is not set)")
        expect(problems).to_contain_text("executor: python")
    finally:
        web.stop()
        own.store.close()


# -- dark mode ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme,background", [("light", "rgb(247, 248, 250)"), ("dark", "rgb(18, 21, 27)")])
def test_colours_follow_the_system(browser: Any, filled: Filled, server: WebServer, scheme: str,
                                   background: str) -> None:
    from playwright.sync_api import expect

    page = open_page(browser, width=1280, scheme=scheme)
    try:
        page.goto(f"{server.url}/#org=chrts&task=flaky")
        expect(page.locator("[data-testid=runs-table] tbody tr")).to_have_count(2)
        colours = page.evaluate("""() => {
            const style = (selector, prop) => getComputedStyle(document.querySelector(selector))[prop];
            return {body: style("html", "backgroundColor"), panel: style("section:not([hidden])", "backgroundColor"),
                    text: style("body", "color"), badge: style(".badge.FAILURE", "color")};
        }""")
        assert colours["body"] == background, colours
        light_text = colours["text"] == "rgb(29, 36, 51)"
        assert light_text == (scheme == "light"), colours  # dark text on light, light text on dark
        assert page.problems == []
    finally:
        page.context.close()


"""A run's outputs in the dashboard, in real headless Chromium: the matplotlib figure as an
image from the API, the DataFrame as a table in a sandboxed frame, and an XSS attempt that
neither runs nor loads anything, with or without a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from outputs_store import Shown, shown  # noqa: F401 (fixture)
from web_helpers import start_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TOKEN = "shop-dashboard-token-0123456789"


@pytest.mark.parametrize("token", [None, TOKEN], ids=["open", "token"])
def test_figure_and_table_of_a_failed_run_are_shown_and_the_xss_is_not(
        browser: Any, shown: Shown, token: str | None, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    extra = {"tokens": [{"token": TOKEN, "codops": ["shop"]}]} if token else {}
    web = start_server(shown.settings, shown.store, **extra)
    context = browser.new_context(viewport={"width": 1300, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(f"{web.url}/#org=shop&task=report&run={shown.failed}")
        if token:
            page.fill("#token", token)
            page.click("#token-form button")
            page.locator("tr[data-task=report]").click()
            page.locator(f"[data-testid=show-below-{shown.failed}]").click()
        expect(page.locator("[data-testid=outputs-title]")).to_have_text(f"Outputs of run {shown.failed}")
        figure, table, hostile = (page.locator(f"[data-testid=output-{n}]") for n in (1, 2, 3))
        expect(figure).to_have_attribute("data-mime", "image/png")

        image = figure.locator("img")
        expect(image).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        assert image.evaluate("img => img.naturalWidth") > 200 and image.get_attribute("src").startswith("blob:")

        frame_element = table.locator("iframe")
        assert frame_element.get_attribute("sandbox") == ""  # no scripts, no origin of ours
        frame = frame_element.element_handle().content_frame()
        frame.wait_for_selector("table")
        cells = frame.locator("td").all_inner_texts()
        assert "Zürich" in cells and "Genève" in cells and "120" in cells

        hostile_frame = hostile.locator("iframe").element_handle().content_frame()
        hostile_frame.wait_for_selector("#hostile")
        page.wait_for_timeout(500)  # give a script or an onerror handler the time to run, if one could
        assert page.title() == "peach-tasks" and hostile_frame.title() != "ran"
        assert page.locator("#hostile").count() == 0  # never in the page itself
        assert dialogs == [] and errors == []
        # Loads to other hosts: test_a_frame_of_the_dashboard_cannot_load_from_another_host counts
        # them at a real server (a "request" event here also fires for a preload the policy blocks).
        page.screenshot(path=str(tmp_path / "outputs.png"), full_page=True)
    finally:
        context.close()
        web.stop()


def test_a_frame_of_the_dashboard_cannot_load_from_another_host(browser: Any, shown: Shown) -> None:  # noqa: F811
    """The dashboard's own policy is inherited by every srcdoc frame in it, so an output's HTML
    cannot reach another host even where the frame's own <meta> policy is missing or parsed late."""
    import http.server
    import threading

    hits: list[str] = []

    class Tracker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the standard library's name for it
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    tracker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    web = start_server(shown.settings, shown.store)
    context = browser.new_context()
    page = context.new_page()
    try:
        response = page.goto(web.url + "/")
        assert "default-src 'self'" in response.headers.get("content-security-policy", "")
        probe = f"http://127.0.0.1:{tracker.server_address[1]}/probe.png"
        page.evaluate("""(probe) => {
            const frame = document.createElement('iframe');
            frame.setAttribute('sandbox', '');
            frame.srcdoc = `<img id=probe src="${probe}"><p>no policy of its own</p>`;
            document.body.append(frame);
        }""", probe)
        frame = page.locator("iframe").last.element_handle().content_frame()
        # Blocked or answered, the image is complete once its load was decided.
        frame.wait_for_function("() => document.getElementById('probe')?.complete")
        assert hits == []
    finally:
        context.close()
        web.stop()
        tracker.shutdown()

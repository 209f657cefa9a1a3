"""A run's outputs through the API: listed in order, each served with its mime type and the
headers that keep untrusted content from acting as the server's pages; tokens scope them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from outputs_store import XSS, Shown, shown  # noqa: F401 (fixture)
from web_helpers import start_server

from peach_tasks.web.server import WebServer

pytestmark = pytest.mark.slow  # builds an environment with matplotlib and pandas

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def web(shown: Shown) -> WebServer:  # noqa: F811
    server = start_server(shown.settings, shown.store,
                          tokens=[{"token": "shop-token-0123456789", "codops": ["shop"]},
                                  {"token": "other-token-0123456789", "codops": ["other"]}])
    yield server
    server.stop()


def get(web: WebServer, path: str, token: str = "shop-token-0123456789") -> httpx.Response:
    return httpx.get(web.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_failed_run_lists_its_figure_and_table(web: WebServer, shown: Shown) -> None:  # noqa: F811
    answer = get(web, f"/api/runs/{shown.failed}/outputs")
    assert answer.status_code == 200, answer.text
    listing = answer.json()
    assert listing["status"] == "FAILURE"
    assert [(o["seq"], o["kind"], o["mime_type"]) for o in listing["outputs"]] == [
        (1, "figure", "image/png"), (2, "display", "text/html"), (3, "display", "text/html")]
    figure, table, hostile = listing["outputs"]
    assert figure["url"] == f"/api/runs/{shown.failed}/outputs/1" and figure["size_bytes"] > 1000
    assert "Zürich" in table["text"] and "sales" in table["text"]

    png = get(web, figure["url"])
    assert png.headers["content-type"] == "image/png" and png.content.startswith(PNG_MAGIC)
    assert len(png.content) == figure["size_bytes"]
    html = get(web, table["url"])
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert "<table" in html.text and "<td>Zürich</td>" in html.text and "<td>120</td>" in html.text
    for response in (png, html):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("sandbox;")
    assert get(web, hostile["url"]).text == XSS  # kept as it was: the views sandbox it


def test_outputs_follow_the_access_rules(web: WebServer, shown: Shown) -> None:  # noqa: F811
    assert get(web, f"/api/runs/{shown.failed}/outputs", "other-token-0123456789").status_code == 403
    assert get(web, f"/api/runs/{shown.failed}/outputs/1", "other-token-0123456789").status_code == 403
    assert httpx.get(f"{web.url}/api/runs/{shown.failed}/outputs/1", timeout=30).status_code == 401
    assert get(web, f"/api/runs/{shown.quiet}/outputs", "other-token-0123456789").json()["outputs"] == []
    assert get(web, f"/api/runs/{shown.failed}/outputs/4").status_code == 404
    assert get(web, f"/api/runs/{shown.failed}/outputs/0").status_code == 422
    assert get(web, f"/api/runs/{shown.failed}/outputs/{2**63}").status_code == 422
    assert get(web, f"/api/runs/{2**40}/outputs").status_code == 404


def test_a_run_in_a_sandbox_started_ahead_keeps_its_outputs(web: WebServer, shown: Shown) -> None:  # noqa: F811
    """The loop started shop/summary's sandbox while report ran (warm.py): its outputs are its own."""
    run = shown.summary
    assert run["status"] == "SUCCESS" and (run["details"] or {}).get("sandbox_started_ahead"), run
    listing = get(web, f"/api/runs/{run['id']}/outputs").json()["outputs"]
    assert [(o["seq"], o["mime_type"]) for o in listing] == [(1, "text/html")]
    assert get(web, listing[0]["url"]).text == "<b>all good</b>"


def test_the_cli_lists_and_saves_a_runs_outputs(shown: Shown, tmp_path: Path) -> None:  # noqa: F811
    config = str(Path(shown.settings.base_dir) / "scheduler.yaml")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["peach-tasks", "outputs", *args, "--config", config], capture_output=True, text=True,
                              timeout=120)

    listed = cli(str(shown.failed), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(o["seq"], o["mime_type"]) for o in json.loads(listed.stdout)] == [
        (1, "image/png"), (2, "text/html"), (3, "text/html")]
    table = cli(str(shown.failed))
    assert "figure" in table.stdout and "image/png" in table.stdout and "Zürich" in table.stdout
    saved = cli(str(shown.failed), "--save", str(tmp_path / "out"))
    assert saved.returncode == 0 and "saved 3 file(s)" in saved.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["001-figure.png", "002-display.html",
                                                                   "003-display.html"]
    assert (tmp_path / "out" / "001-figure.png").read_bytes().startswith(PNG_MAGIC)
    quiet = cli(str(shown.quiet))
    assert quiet.returncode == 0 and "showed nothing" in quiet.stdout
    missing = cli("999999")
    assert missing.returncode == 1 and "no run with id 999999" in missing.stderr

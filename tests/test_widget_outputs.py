"""A run's outputs in the tasks-info widget, in a real Jupyter kernel (nbclient): the figure
as an image, the DataFrame in a sandboxed frame, the hostile HTML never in the notebook's page."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from outputs_store import Shown, shown  # noqa: F401 (fixture)
from test_widget import printed
from web_helpers import start_server

pytestmark = pytest.mark.slow

DRIVE = '''
import json
from peach_tasks.widget import initialize_tasks_info
info = initialize_tasks_info()
info.organisation.value = "shop"
info.task.value = "report"
info.show_below_buttons[{failed}].click()
def describe(box):
    shown, caption = box.children
    kind = type(shown).__name__
    return {{"kind": kind, "caption": caption.value,
             "format": getattr(shown, "format", None),
             "head": bytes(shown.value[:8]).hex() if kind == "Image" else shown.value}}
print(json.dumps({{"title": info.outputs_title.value, "shown": info.outputs_box.layout.display,
                  "outputs": [describe(box) for box in info.outputs.children]}}))
'''
ALL_LOGS = '''
info.show_all_button.click()
print(json.dumps({"shown": info.outputs_box.layout.display, "outputs": len(info.outputs.children)}))
'''


def test_outputs_of_a_failed_run_in_a_real_kernel(shown: Shown, tmp_path: Path,  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    web = start_server(shown.settings, shown.store)
    try:
        monkeypatch.setenv("PEACH_TASKS_URL", web.url)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(DRIVE.format(failed=shown.failed)), nbformat.v4.new_code_cell(ALL_LOGS)]
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        web.stop()
    below, everything = printed(nb.cells[0]), printed(nb.cells[1])
    assert below["title"] == f"<b>Outputs of run {shown.failed}</b>" and below["shown"] == "flex"
    figure, table, hostile = below["outputs"]
    assert (figure["kind"], figure["format"], figure["head"]) == ("Image", "png", "89504e470d0a1a0a")
    assert "figure · image/png" in figure["caption"]
    for frame in (table, hostile):
        assert frame["kind"] == "HTML" and frame["head"].startswith('<iframe sandbox="" ')
    # The task's HTML lives only inside the frame's srcdoc, escaped: the page never parses it.
    assert "&lt;td&gt;Zürich&lt;/td&gt;" in table["head"] and "<td>" not in table["head"]
    assert "<script" not in hostile["head"] and "onerror=" not in hostile["head"].replace("onerror=&quot;", "")
    assert "&lt;script&gt;" in hostile["head"]
    assert everything == {"shown": "none", "outputs": 0}  # all logs: no single run's outputs

    # What a frontend renders: the models the kernel sent hold the PNG and the sandboxed frame.
    entries = list(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values())
    models = [m["state"] for m in entries]
    pngs = [base64.b64decode(b["data"]) for m in entries if m["state"]["_model_name"] == "ImageModel"
            and m["state"].get("format") == "png" for b in m.get("buffers", []) if b.get("path") == ["value"]]
    assert any(png.startswith(b"\x89PNG") for png in pngs)
    assert any(m["_model_name"] == "HTMLModel" and "sandbox" in m.get("value", "") and "Genève" in m.get("value", "")
               for m in models), json.dumps([m.get("value", "")[:80] for m in models])[:2000]

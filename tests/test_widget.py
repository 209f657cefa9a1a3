"""The tasks-info widget in a real Jupyter kernel: notebooks/tasks_info.ipynb run by nbclient."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from web_helpers import Filled, measured_store, start_server

from peach_tasks.web.api_client import ApiClient
from peach_tasks.web.server import WebServer
from peach_tasks.web.widget import RUN_COLUMNS, TasksInfo

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tasks_info.ipynb"

# Cells appended to the shipped notebook: each drives the widget's callbacks as a person
# would (the dropdowns' values, the buttons' clicks) and prints what it then displays.
STATE = '''
import json
def state():
    return {"orgs": [value for _, value in info.organisation.options], "org": info.organisation.value,
            "tasks": [t["name"] for t in info.tasks], "table": info.tasks_table.value,
            "task_options": [value for _, value in info.task.options], "task": info.task.value,
            "runs": [[r["id"], r["status"], r["version"]] for r in info.runs],
            "buttons": sorted(info.show_below_buttons), "points": info.graph_points,
            "graph_png": bytes(info.graph.value[:8]).hex(), "log_title": info.logs_title.value,
            "log": info.log_text, "message": info.message.value}
print(json.dumps(state()))
'''
DRIVE = [
    'info.organisation.value = "sesr"\nprint(json.dumps(state()))',
    'info.organisation.value = "chrts"\ninfo.task.value = "flaky"\nprint(json.dumps(state()))',
    'failed = [r["id"] for r in info.runs if r["status"] == "FAILURE"][0]\n'
    'info.show_below_buttons[failed].click()\nprint(json.dumps(state()))',
    'info.show_all_button.click()\nprint(json.dumps(state()))',
]
UNREACHABLE = ('from peach_tasks.widget import initialize_tasks_info\n'
               'lost = initialize_tasks_info(url="{url}")\n'
               'print(json.dumps({{"message": lost.message.value, "orgs": list(lost.organisation.options)}}))')


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def printed(cell: Any) -> dict[str, Any]:
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    return json.loads(text.strip().splitlines()[-1])


def test_notebook_runs_in_a_kernel_and_its_callbacks_show_the_right_things(
        filled: Filled, server: WebServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEACH_TASKS_URL", server.url)  # the kernel inherits it: initialize_tasks_info() uses it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    shipped = [c for c in nb.cells if c.cell_type == "code"]
    assert len(shipped) == 1 and "initialize_tasks_info()" in shipped[0].source
    first_added = len(nb.cells)
    lost_url = f"http://127.0.0.1:{closed_port()}"
    nb.cells += [nbformat.v4.new_code_cell(source) for source in
                 [STATE, *DRIVE, UNREACHABLE.format(url=lost_url)]]
    # As the tutorial has it: the call alone as the cell's last line shows the widget once.
    nb.cells.append(nbformat.v4.new_code_cell("initialize_tasks_info()"))
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    # The shipped cell displayed one widget and raised nothing.
    outputs = shipped[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"]
    assert "application/vnd.jupyter.widget-view+json" in outputs[0].data
    states = [printed(cell) for cell in nb.cells[first_added:-1]]
    assert [o.output_type for o in nb.cells[-1].outputs] == ["display_data"]
    start, sesr, flaky, below, everything, lost = states

    assert start["orgs"] == ["chrts", "sesr"] and start["org"] == "chrts" and start["message"] == ""
    assert start["tasks"] == ["flaky", "steady"] and "FAILURE" in start["table"]
    assert sesr["tasks"] == ["secret"] and sesr["task_options"] == [None, "secret"] and "flaky" not in sesr["table"]

    runs = filled.store.runs("chrts", "flaky")
    failure, success = runs[0]["id"], runs[1]["id"]
    assert flaky["task"] == "flaky"
    assert flaky["runs"] == [[failure, "FAILURE", filled.flaky_versions[1]], [success, "SUCCESS", filled.flaky_versions[0]]]
    assert flaky["buttons"] == sorted([failure, success])
    assert flaky["points"]["success"] == [[success, runs[1]["duration_s"]]]
    assert flaky["points"]["failure"] == [[failure, runs[0]["duration_s"]]]
    assert flaky["graph_png"] == "89504e470d0a1a0a"  # a PNG was drawn
    assert "flaky first try" in flaky["log"] and "flaky second try" in flaky["log"]
    assert f"===== run {success} " in flaky["log"]

    assert below["log_title"] == f"<b>Log of run {failure}</b>"
    assert "flaky second try" in below["log"] and "flaky first try" not in below["log"]
    assert everything["log"] == flaky["log"] and "Logs of the last 2 executions" in everything["log_title"]

    assert "cannot reach the peach-tasks server at " + lost_url in lost["message"] and lost["orgs"] == []

    # What a frontend would render: the widget models' state as the kernel sent it.
    models = [m["state"] for m in nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
              ["state"].values()]
    dropdowns = [m for m in models if m["_model_name"] == "DropdownModel"]
    assert any(m.get("_options_labels") == ["chrts (2 tasks)", "sesr (1 task)"] for m in dropdowns)
    assert any(m["_model_name"] == "ButtonModel" and m.get("description") == "show below" for m in models)
    assert any(m["_model_name"] == "HTMLModel" and "flaky first try" in m.get("value", "") for m in models)


def test_graph_draws_blue_dots_and_red_crosses(filled: Filled, server: WebServer) -> None:
    info = TasksInfo(ApiClient(server.url))
    info.select_task("flaky")
    lines = [line for line in info.figure.axes[0].get_lines() if line.get_marker() in ("o", "x")]
    marks = {(line.get_marker(), line.get_color()) for line in lines}
    assert marks == {("o", "tab:blue"), ("x", "tab:red")}


def test_the_tasks_table_shows_each_tasks_environment(filled: Filled, server: WebServer) -> None:
    info = TasksInfo(ApiClient(server.url))
    info.organisation.value = "chrts"
    rows = {row.split("</b>")[0]: row for row in info.tasks_table.value.split("<tr")[2:]}
    assert "Environment</th>" in info.tasks_table.value
    assert "<code>reports</code>" in rows[" style=''><td style='padding:2px 10px'><b>steady"]
    assert "<code>base</code>" in rows[" style=''><td style='padding:2px 10px'><b>flaky"]


def test_a_server_that_needs_a_token_says_so(filled: Filled) -> None:
    web = start_server(filled.settings, filled.store, tokens=[{"token": "widget-token-0123456789", "codops": ["chrts"]}])
    try:
        refused = TasksInfo(ApiClient(web.url, token=""))
        assert "needs an access token" in refused.message.value and refused.organisation.options == ()
        allowed = TasksInfo(ApiClient(web.url, token="widget-token-0123456789"))
        assert allowed.message.value == "" and [v for _, v in allowed.organisation.options] == ["chrts"]
    finally:
        web.stop()


def test_executions_show_memory_and_cpu(tmp_path: Path) -> None:
    own = measured_store(tmp_path)
    web = start_server(own.settings, own.store)
    try:
        info = TasksInfo(ApiClient(web.url))
        info.select_task("heavy")
        cells = info.executions.children
        width = len(RUN_COLUMNS)
        rows = [cells[i:i + width] for i in range(0, len(cells), width)]
        assert [c.value for c in rows[0][5:7]] == ["<b>Memory</b>", "<b>CPU</b>"]
        shown = {int(row[0].value.removeprefix("▶ ")): [c.value for c in row[5:7]] for row in rows[1:]}
        assert shown == {own.measured: ["212 MiB", "1.3 s"], own.unmeasured: ["", ""]}  # blank: not measured
    finally:
        web.stop()
        own.store.close()


def test_run_now_queues_a_trigger_through_the_api_with_its_token(tmp_path: Path) -> None:
    from peach_tasks.scheduling.triggers import TriggerQueue

    own = measured_store(tmp_path)
    web = start_server(own.settings, own.store, tokens=[{"token": "widget-run-now-0123456789", "codops": ["default"]}])
    try:
        info = TasksInfo(ApiClient(web.url, token="widget-run-now-0123456789"))
        assert info.run_now_button.disabled  # no task picked yet
        assert info.run_now() is None and "Pick a task first" in info.message.value
        info.select_task("heavy")
        assert not info.run_now_button.disabled
        info.payload.value = "{not json"
        info.run_now_button.click()
        assert "not JSON" in info.message.value and TriggerQueue(own.store).listing(["default"]) == []
        queued = info.run_now('{"date": "2024-01-31"}')
        assert queued is not None and queued["payload"] == {"date": "2024-01-31"}
        assert "queued (trigger" in info.message.value and "token for default" in queued["requested_by"]
        [stored] = TriggerQueue(own.store).listing(["default"])
        assert (stored["task"], stored["state"], stored["payload"]) == ("heavy", "PENDING", {"date": "2024-01-31"})
        # A token the server does not know may not run it: the refusal is said, nothing is queued.
        info.client.token = "not-a-token-of-this-server"
        assert info.run_now("") is None and "unknown token" in info.message.value
        assert len(TriggerQueue(own.store).listing(["default"])) == 1
    finally:
        web.stop()
        own.store.close()

"""The tasks-info Jupyter widget: ``initialize_tasks_info()`` in a notebook cell.

It shows what the dashboard shows, with ipywidgets, reading the JSON API of a running
peach-tasks server: an organisation dropdown, the tasks table, a task dropdown, the
selected task's executions (each with a "show below" button), a graph of the duration
of each execution (blue dots for successes, red crosses for failures) and the logs
frame, which shows every recent log of the task until "show below" picks one run; then
that run's outputs (what its task displayed: figures, tables) are shown too.

Every callback is also a method (``select_organisation``, ``select_task``,
``show_below``, ``show_all_logs``, ``refresh``, ``run_now``) so it can be driven from code.
"Run now" queues a run of the selected task through the API's trigger (with the
optional JSON payload typed beside it), as ``peach-tasks trigger`` does.
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

try:
    import ipywidgets as widgets
    from IPython.display import display
except ImportError as exc:  # the kernel's environment lacks the extra: say which, not a bare traceback
    raise ModuleNotFoundError(
        f"the tasks-info widget needs ipywidgets and matplotlib ({exc}): install the widget extra in this "
        "kernel's environment, e.g. %pip install 'peach-tasks[widget]', then restart the kernel",
        name=getattr(exc, "name", None)) from None

from ..durations import format_duration
from .api_client import ApiClient, ApiError
from .widget_outputs import run_output_widgets

RUNS_SHOWN = 50
ALL_LOGS_RUNS = 10
RUN_LOG_TAIL = 256 * 1024
TASK_COLUMNS = ("Task", "Loop", "Environment", "State", "Last status", "Started (UTC)", "Duration", "Version",
                "Successes", "Failures", "Freshness")
RUN_COLUMNS = ("Run", "Version", "Started (UTC)", "Status", "Duration", "Memory", "CPU", "Error", "")
# The tutorial's graph: a blue dot for a success, a red cross for a failure.
MARKERS: dict[str, dict[str, Any]] = {
    "success": dict(marker="o", color="tab:blue"),
    "failure": dict(marker="x", color="tab:red", markeredgewidth=2),
    "abandoned": dict(marker="o", color="#8c8c8c", markerfacecolor="none"),
}
COLOURS = {"SUCCESS": "#1f77b4", "FAILURE": "#d62728", "TIMEOUT": "#d62728", "ABANDONED": "#8c8c8c",
           "RUNNING": "#2a9d8f", "PENDING": "#a06a00"}


def fmt_time(iso: str | None) -> str:
    return iso.replace("T", " ").split(".")[0].rstrip("Z") if iso else "–"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def fmt_memory(value: int | None) -> str:
    """Peak memory as the dashboard shows it ("212 MiB", "1.4 GiB"); blank when not measured."""
    if value is None:
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            shown = value / size
            return f"{shown:.1f} {unit}" if shown < 10 else f"{shown:.0f} {unit}"
    return f"{value} B"


def fmt_cpu(value: float | None) -> str:
    """CPU seconds as the dashboard shows them ("1.3 s"); blank when not measured."""
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def _freshness(task: dict[str, Any]) -> str:
    """"stale" in red, "fresh" in green, against the task's freshness; "–" without one."""
    if task.get("stale") is None:
        return "–"
    limit = format_duration(task["freshness_s"])
    if task["stale"]:
        return f"<span style='color:#b42318;font-weight:bold' title='no success within {limit}'>stale</span>"
    return f"<span style='color:#067647' title='a success within {limit}'>fresh</span>"


def _status(value: str | None) -> str:
    if not value:
        return "–"
    return f'<b style="color:{COLOURS.get(value, "#667085")}">{html.escape(value)}</b>'


class TasksInfo:
    """The widget's state and callbacks; ``view`` is what is displayed."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.tasks: list[dict[str, Any]] = []
        self.problems: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.log_run: int | None = None  # None: all logs of the task
        self.log_text = ""
        self.graph_points: dict[str, list[tuple[int, float]]] = {}
        self.show_below_buttons: dict[int, widgets.Button] = {}
        self._quiet = False  # set while options are replaced, so observers do not fire
        self._shown_in: int | None = None

        self.message = widgets.HTML()
        self.organisation = widgets.Dropdown(description="Organisation", options=[],
                                             style={"description_width": "initial"})
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="Read everything again")
        self.tasks_table = widgets.HTML()
        self.task = widgets.Dropdown(description="Task", options=[("— select a task —", None)],
                                     style={"description_width": "initial"})
        self.run_now_button = widgets.Button(description="Run now", icon="play", disabled=True,
                                             tooltip="Run the selected task next in its loop, once")
        self.payload = widgets.Text(placeholder='optional JSON payload, e.g. {"date": "2024-01-31"}',
                                    layout=widgets.Layout(width="24em"))
        self.executions = widgets.GridBox([], layout=widgets.Layout(
            grid_template_columns="auto auto auto auto auto auto auto minmax(8em, 24em) auto", grid_gap="2px 14px",
            max_height="22em", overflow="auto"))
        self.graph = widgets.Image(format="png", layout=widgets.Layout(max_width="720px"))
        self.logs_title = widgets.HTML("<b>Logs</b>")
        self.show_all_button = widgets.Button(description="show all logs", layout=widgets.Layout(display="none"))
        self.logs = widgets.HTML()
        self.outputs_title = widgets.HTML()
        self.outputs = widgets.VBox([])
        self.outputs_box = widgets.VBox([self.outputs_title, self.outputs], layout=widgets.Layout(display="none"))
        logs_head = widgets.HBox([self.logs_title, self.show_all_button])
        self.task_box = widgets.VBox([self.graph, self.executions, self.outputs_box, logs_head, self.logs],
                                     layout=widgets.Layout(display="none"))
        self.view = widgets.VBox([widgets.HBox([self.organisation, self.refresh_button]), self.message,
                                  self.tasks_table, widgets.HBox([self.task, self.run_now_button, self.payload]),
                                  self.task_box])

        self.organisation.observe(self._on_organisation, names="value")
        self.task.observe(self._on_task, names="value")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.show_all_button.on_click(lambda _button: self.show_all_logs())
        self.run_now_button.on_click(lambda _button: self.run_now())
        self.refresh()

    # -- displaying ------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        # initialize_tasks_info() both displays the widget and returns this object; when
        # the call is the cell's last line, IPython would show it a second time.
        if self._shown_in is not None and self._shown_in == _execution_count():
            return
        display(self.view)

    # -- callbacks (also usable from code) -------------------------------------------
    def refresh(self) -> None:
        """Read the organisations again, then the selected organisation and task."""
        try:
            orgs = self.client.organisations()
        except ApiError as exc:
            return self._error(exc)
        self._say("")
        values = [o["codops"] for o in orgs]
        current = self.organisation.value if self.organisation.value in values else (values[0] if values else None)
        self._quiet = True
        self.organisation.options = [(f"{o['codops']} ({o['tasks']} task{'s' if o['tasks'] != 1 else ''})", o["codops"])
                                     for o in orgs]
        self.organisation.value = current
        self._quiet = False
        if not orgs:
            self._say("No organisation has tasks yet: the scheduler has not registered any.")
        self.select_organisation(current, keep_task=True)

    def select_organisation(self, codops: str | None, keep_task: bool = False) -> None:
        """Show the tasks of ``codops`` (as picking it in the dropdown does)."""
        if codops != self.organisation.value:
            self._quiet = True
            self.organisation.value = codops
            self._quiet = False
        if codops is None:
            self.tasks, self.problems, self.tasks_table.value = [], [], ""
            return self._set_task_options(None)
        try:
            listing = self.client.tasks(codops)
        except ApiError as exc:
            return self._error(exc)
        self.tasks, self.problems = listing["tasks"], listing["problems"]
        keep = self.task.value if keep_task and any(t["name"] == self.task.value for t in self.tasks) else None
        self._render_tasks()
        self._set_task_options(keep)
        if keep is not None:
            self.select_task(keep, keep_log=True)

    def select_task(self, name: str | None, keep_log: bool = False) -> None:
        """Show a task's executions, duration graph and logs (as picking it in the dropdown does)."""
        if name != self.task.value:
            self._quiet = True
            self.task.value = name
            self._quiet = False
        self.run_now_button.disabled = name is None
        if name is None:
            self.task_box.layout.display = "none"
            return
        codops = self.organisation.value
        try:
            page = self.client.runs(codops, name, RUNS_SHOWN)
        except ApiError as exc:
            return self._error(exc)
        self.runs = page["runs"]
        self._draw_graph()
        self.task_box.layout.display = "flex"
        self._render_tasks()
        shown = self.show_below(self.log_run) if keep_log and self.log_run is not None else self.show_all_logs()
        if not shown:
            self._render_runs()  # the log views render the runs themselves when they succeed

    def show_below(self, run_id: int) -> bool:
        """Filter the logs frame to one execution (its "show below" button)."""
        try:
            piece = self.client.run_log(run_id, tail=RUN_LOG_TAIL)
        except ApiError as exc:
            self._error(exc)
            return False
        self.log_run = run_id
        note = f"[the first {piece['offset']} bytes of this log are not shown]\n" if piece["offset"] else ""
        self._set_log(f"Log of run {run_id}", note + piece["text"])
        self.show_all_button.layout.display = "inline-flex"
        self._render_runs()
        self.show_outputs(run_id)
        return True

    def show_outputs(self, run_id: int | None) -> None:
        """Show what run ``run_id`` displayed (None: hide the outputs)."""
        if run_id is None:
            self.outputs_box.layout.display = "none"
            self.outputs.children = ()
            return
        try:
            title, shown = run_output_widgets(self.client, run_id)
        except ApiError as exc:
            title, shown = f"Outputs of run {run_id} could not be read: {exc}", []
        self.outputs_title.value = f"<b>{html.escape(title)}</b>"
        self.outputs.children = shown
        self.outputs_box.layout.display = "flex"

    def show_all_logs(self) -> bool:
        """Show every recent log of the selected task, each run marked (the default)."""
        name = self.task.value
        if name is None:
            return False
        try:
            logs = self.client.task_logs(self.organisation.value, name, ALL_LOGS_RUNS)
        except ApiError as exc:
            self._error(exc)
            return False
        self.log_run = None
        self.show_outputs(None)
        self._set_log(f"Logs of the last {len(logs['runs'])} executions", logs["text"] or "no logs yet")
        self.show_all_button.layout.display = "none"
        self._render_runs()
        return True

    def run_now(self, payload: str | None = None) -> dict[str, Any] | None:
        """Queue a run of the selected task (its "Run now" button); ``payload`` defaults to the
        text beside the button: JSON, or empty for none. Returns the trigger, or None."""
        name, codops = self.task.value, self.organisation.value
        if name is None or codops is None:
            self._say("Pick a task first.")
            return None
        text = (self.payload.value if payload is None else payload).strip()
        try:
            value = json.loads(text) if text else None
        except ValueError as exc:
            self._say(f"The payload is not JSON ({exc}); e.g. {{\"date\": \"2024-01-31\"}}, or leave it empty.")
            return None
        try:
            queued = self.client.trigger(codops, name, value)
        except ApiError as exc:
            self._error(exc)
            return None
        self._note(f"Run of {codops}/{name} queued (trigger {queued['id']}): it runs next in its loop. "
                   "Press Refresh to see it.")
        return queued

    # -- observers --------------------------------------------------------------------
    def _on_organisation(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.log_run = None
            self.select_organisation(change["new"])

    def _on_task(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.log_run = None
            self.select_task(change["new"])

    # -- rendering --------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.message.value = f'<div style="color:#b42318;padding:4px 0">{html.escape(text)}</div>' if text else ""

    def _note(self, text: str) -> None:
        self.message.value = f'<div style="color:#1f6f43;padding:4px 0">{html.escape(text)}</div>'

    def _error(self, exc: ApiError) -> None:
        self._say(f"⚠ {exc}")

    def _set_task_options(self, keep: str | None) -> None:
        self._quiet = True
        self.task.options = [("— select a task —", None)] + [(t["name"], t["name"]) for t in self.tasks]
        self.task.value = keep
        self._quiet = False
        if keep is None:
            self.task_box.layout.display = "none"
        self.run_now_button.disabled = keep is None

    def _render_tasks(self) -> None:
        head = "".join(f"<th style='text-align:left;padding:2px 10px'>{c}</th>" for c in TASK_COLUMNS)
        rows = []
        for t in self.tasks:
            style = "background:#fdebe5" if t["name"] == self.task.value else ""
            # An older server's tasks have no 'environment': they all ran in the organisation's one.
            cells = [f"<b>{html.escape(t['name'])}</b>", html.escape(t["loop"]),
                     f"<code>{html.escape(t.get('environment') or 'base')}</code>", _status(t["state"]),
                     _status(t["last_status"]), fmt_time(t["last_started_at"]), fmt_duration(t["last_duration_s"]),
                     f"<code>{html.escape(t['version'] or '–')}</code>", str(t["successes"]), str(t["failures"]),
                     _freshness(t)]
            rows.append(f"<tr style='{style}'>" + "".join(f"<td style='padding:2px 10px'>{c}</td>" for c in cells)
                        + "</tr>")
        items = "".join(f"<li style='white-space:pre-wrap'>{html.escape(p['message'])}</li>" for p in self.problems)
        problems = f"<ul style='color:#b42318'>{items}</ul>" if items else ""
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        self.tasks_table.value = problems + (table if self.tasks else "<i>No tasks in this organisation.</i>")

    def _render_runs(self) -> None:
        cells: list[widgets.Widget] = [widgets.HTML(f"<b>{c}</b>") for c in RUN_COLUMNS]
        self.show_below_buttons = {}
        for run in self.runs:
            mark = "▶ " if run["id"] == self.log_run else ""
            error = html.escape((run["error"] or "")[:120])
            version = html.escape(run["version"] or "–")
            cells += [widgets.HTML(f"{mark}{run['id']}"), widgets.HTML(f"<code>{version}</code>"),
                      widgets.HTML(fmt_time(run["started_at"])), widgets.HTML(_status(run["status"])),
                      widgets.HTML(fmt_duration(run["duration_s"])),
                      widgets.HTML(fmt_memory(run["peak_memory_bytes"])), widgets.HTML(fmt_cpu(run["cpu_seconds"])),
                      widgets.HTML(f"<span title='{error}'>{error}</span>")]
            button = widgets.Button(description="show below", layout=widgets.Layout(width="auto"))
            button.on_click(lambda _button, run_id=run["id"]: self.show_below(run_id))
            self.show_below_buttons[run["id"]] = button
            cells.append(button)
        self.executions.children = cells

    def _set_log(self, title: str, text: str) -> None:
        self.log_text = text
        self.logs_title.value = f"<b>{html.escape(title)}</b>"
        self.logs.value = ("<pre style='max-height:28em;overflow:auto;white-space:pre-wrap;background:#0f1419;"
                           f"color:#e6e6e6;padding:8px;border-radius:4px'>{html.escape(text)}</pre>")

    def _draw_graph(self) -> None:
        from matplotlib.figure import Figure

        done = [r for r in reversed(self.runs) if r["duration_s"] is not None and r["status"] != "RUNNING"]
        points: dict[str, list[tuple[int, float]]] = {"success": [], "failure": [], "abandoned": []}
        figure = Figure(figsize=(7.2, 2.6), dpi=100)
        axes = figure.add_subplot()
        xs = list(range(len(done)))
        axes.plot(xs, [r["duration_s"] for r in done], color="#d0d5dd", linewidth=1, zorder=1)
        for index, run in enumerate(done):
            kind = {"SUCCESS": "success", "FAILURE": "failure", "TIMEOUT": "failure"}.get(run["status"], "abandoned")
            points[kind].append((run["id"], run["duration_s"]))
            style = MARKERS[kind]
            axes.plot([index], [run["duration_s"]], linestyle="none", markersize=7, zorder=2, **style)
        axes.set_ylabel("duration (s)")
        axes.set_xlabel("executions, oldest left" if done else "no finished executions yet")
        axes.set_ylim(bottom=0)
        if done:
            ticks = sorted({0, len(done) // 2, len(done) - 1})
            axes.set_xticks(ticks, [f"run {done[i]['id']}" for i in ticks])
        axes.grid(axis="y", color="#eaecf0")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        self.figure, self.graph_points = figure, points
        self.graph.value = buffer.getvalue()


def _execution_count() -> int | None:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell.execution_count if shell is not None else None
    except ImportError:
        return None


def initialize_tasks_info(url: str | None = None, token: str | None = None) -> TasksInfo:
    """Display the tasks-info widget for the server at ``url`` and return its controller.

    ``url`` defaults to ``$PEACH_TASKS_URL``, else ``http://127.0.0.1:8765``; ``token``
    to ``$PEACH_TASKS_TOKEN`` (needed when the server has ``tokens`` configured). An
    unreachable server is shown as a message in the widget; "Refresh" tries again.
    """
    info = TasksInfo(ApiClient(url, token))
    display(info.view)
    info._shown_in = _execution_count()
    return info

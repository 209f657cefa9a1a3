"""The outputs of a run in the tasks-info widget: what its task displayed, read from the API.

An output is the task's content, never trusted: images become ``widgets.Image`` (an ``<img>``;
a script in an SVG shown as an image never runs), HTML goes into an ``<iframe sandbox>`` (no
scripts, not the notebook's origin) whose document forbids every load, and text is escaped.
The notebook's own page is never given the task's HTML.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from .api_client import ApiClient

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = ("body{font:13px sans-serif;margin:6px}table{border-collapse:collapse}"
         "th,td{border:1px solid #e4e7ec;padding:2px 8px;text-align:right}")
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/svg+xml": "svg+xml"}


def sandboxed_frame(content: str) -> str:
    """An ``<iframe sandbox>`` showing ``content`` (untrusted HTML), as the widget's HTML value."""
    document = (f'<!doctype html><html><head><meta charset="utf-8">'
                f'<meta http-equiv="Content-Security-Policy" content="{POLICY}"><style>{STYLE}</style>'
                f"</head><body>{content}</body></html>")
    return (f'<iframe sandbox="" referrerpolicy="no-referrer" srcdoc="{html.escape(document, quote=True)}" '
            'style="width:100%;height:16em;border:1px solid #e4e7ec;resize:vertical"></iframe>')


def output_widget(output: dict[str, Any], mime: str, data: bytes) -> widgets.Widget:
    label = f"output {output['seq']} · {output['kind']} · {mime}"
    caption = widgets.HTML(f"<small style='color:#667085'>{html.escape(label)}</small>")
    if mime in IMAGE_FORMATS:
        shown: widgets.Widget = widgets.Image(value=data, format=IMAGE_FORMATS[mime],
                                              layout=widgets.Layout(max_width="720px"))
    elif mime == "text/html":
        shown = widgets.HTML(sandboxed_frame(data.decode("utf-8", errors="replace")))
    else:
        colour = "#b42318" if output["kind"] == "note" else "inherit"
        shown = widgets.HTML(f"<pre style='white-space:pre-wrap;max-height:24em;overflow:auto;color:{colour}'>"
                             f"{html.escape(data.decode('utf-8', errors='replace'))}</pre>")
    return widgets.VBox([shown, caption], layout=widgets.Layout(border="1px solid #e4e7ec", padding="4px",
                                                                 margin="0 0 6px 0"))


def run_output_widgets(client: ApiClient, run_id: int) -> tuple[str, list[widgets.Widget]]:
    """The title and one widget per output of run ``run_id`` (raises ``ApiError``)."""
    listing = client.run_outputs(run_id)
    shown = []
    for output in listing["outputs"]:
        _, data = client.run_output(run_id, output["seq"])
        shown.append(output_widget(output, output["mime_type"], data))
    if not shown:
        empty = ("still running: what it shows is kept when it ends" if listing["status"] == "RUNNING"
                 else "it showed nothing")
        return f"Outputs of run {run_id}: {empty}", []
    return f"Outputs of run {run_id}", shown

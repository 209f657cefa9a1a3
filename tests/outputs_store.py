"""A store whose run failed after showing a matplotlib figure, a pandas DataFrame and a
hostile HTML output: made once per session by the real scheduler (a real uv environment
with matplotlib and pandas, the task in its sandbox), for the API, dashboard and widget tests.

  shop/report   FAILURE: figure (PNG), DataFrame (HTML table), hostile HTML (an XSS attempt)
  shop/summary  SUCCESS: one HTML output, in the sandbox its loop started ahead (after report)
  other/quiet   SUCCESS: shows nothing
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Repo, made_once, py_task, task_yaml, write_settings

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import Settings, load_settings
from peach_tasks.store import Store

# Scripts, event handlers and a load from elsewhere: none may run or load, in the dashboard
# nor in the widget; each would change the title of the page showing it.
XSS = ('<p id="hostile">hostile output</p>'
       '<script>parent.document.title = "pwned by script"; document.title = "ran";</script>'
       '<img src="x" onerror="parent.document.title = \'pwned by onerror\'">'
       '<img src="http://127.0.0.1:9/tracker.png">')

REPORT = f'''
import matplotlib.pyplot as plt
import pandas as pd

class Hostile:
    def _repr_html_(self):
        return {XSS!r}

def report():
    sales = pd.DataFrame({{"city": ["Zürich", "Genève", "Basel"], "sales": [120, 80, 95]}})
    sales.plot.bar(x="city", y="sales", title="sales by city")
    plt.show()
    display(sales)
    display(Hostile())
    raise ValueError("sales data incomplete")
'''
QUIET = "def quiet():\n    return 1\n"
SUMMARY = "def summary():\n    display({'text/html': '<b>all good</b>'}, raw=True)\n"


@dataclass
class Shown:
    settings: Settings
    store: Store
    failed: int  # shop/report's run
    quiet: int  # other/quiet's run
    summary: dict[str, Any]  # shop/summary's run


def show_store(root: Path) -> Shown:
    repo = Repo(root / "algos")
    repo.notebook("report.ipynb", REPORT)
    repo.notebook("quiet.ipynb", QUIET)
    repo.notebook("summary.ipynb", SUMMARY)
    repo.write("peach.conf/shop.yaml", task_yaml("shop", {"report": py_task("report.ipynb", "report"),
                                                          "summary": py_task("summary.ipynb", "summary")},
                                                 dependencies=["matplotlib", "pandas"]))
    repo.write("peach.conf/other.yaml", task_yaml("other", {"quiet": py_task("quiet.ipynb", "quiet")}))
    repo.commit("tasks")
    settings = load_settings(write_settings(root, [{"url": str(repo.path)}], timeouts={
        "task": 300, "metadata": 30, "kill_grace": 1}))
    store = Store.open(settings.database_url)
    scheduler = Scheduler(settings, store)
    try:
        scheduler.run_once()
    finally:
        scheduler.close()
    [failed] = store.runs("shop", "report")
    [quiet] = store.runs("other", "quiet")
    [summary] = store.runs("shop", "summary")
    assert failed["status"] == "FAILURE", (failed, store.log(failed["id"]), store.problems())
    return Shown(settings, store, failed["id"], quiet["id"], summary)


@pytest.fixture(scope="session")
def shown(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Shown:
    return made_once(request, tmp_path_factory, "outputs-store", show_store)

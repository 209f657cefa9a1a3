"""``peach-tasks demo``: a git repository of example notebooks and a scheduler.yaml.

The repository is a normal working copy (``DIR/algos``) so a user can edit a notebook,
commit, and watch the next iteration run the new version.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from .notebooks import NOTEBOOKS, PEACH_CONF

SCHEDULER_YAML = """\
# peach-tasks demo settings; every key is described in docs/settings.md
state_dir: state
repositories:
  - url: algos
    branch: master
timeouts: {{task: 600, metadata: 60, kill_grace: 5}}
loop: {{min_iteration_seconds: 5, sync_interval_seconds: 10}}
web: {{host: 127.0.0.1, port: {port}}}
task_env:
  DEMO_OUTPUT: {output}
# Every run is sandboxed (docs/security.md): it sees only what it is shown. The demo's tasks
# write their results to one shared folder; a real platform would give each organisation
# its own (organisations.<codops>.python.mounts).
python:
  mounts: {{{output}: rw}}
"""


def notebook_json(cells: list[tuple[str, str]]) -> str:
    """A minimal nbformat-4 notebook from (cell_type, source) pairs."""
    out = []
    for index, (kind, source) in enumerate(cells):
        # nbformat 4.5 requires a unique id on every cell
        cell: dict = {"id": f"cell-{index}", "cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    nb = {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                    "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1) + "\n"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _web_port(preferred: int = 8765) -> int:
    """The usual dashboard port, or a free one when something already listens there."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def create_demo(directory: Path) -> Path:
    """Create (or reuse) the demo in ``directory``; returns the scheduler.yaml path."""
    directory = directory.resolve()
    config = directory / "scheduler.yaml"
    if config.exists():
        return config
    repo = directory / "algos"
    (repo / "peach.conf").mkdir(parents=True, exist_ok=True)
    output = directory / "output"
    output.mkdir(exist_ok=True)
    output.chmod(0o777)  # sandboxed tasks of a root scheduler run as an unprivileged user
    for name, cells in NOTEBOOKS.items():
        (repo / name).write_text(notebook_json(cells))
    for name, text in PEACH_CONF.items():
        (repo / "peach.conf" / name).write_text(text)
    _git(repo, "init", "--quiet", "--initial-branch=master")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=peach demo", "-c", "user.email=demo@peach.invalid",
         "commit", "--quiet", "-m", "Demo notebooks and task definitions")
    config.write_text(SCHEDULER_YAML.format(output=json.dumps(str(output)), port=_web_port()))
    return config

"""What the benchmark scripts share: their messages and figures, the git repository and
``scheduler.yaml`` they build, the folder they build in, the scheduler they open on it, and
the loop they run and stop.

The scripts run as ``python bench/NAME.py``, so this folder is first on ``sys.path`` and
they import it as ``common``. Every import of peach-tasks stays inside a function: a
script's ``--help`` answers without loading the package.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The repository's folder under the bench's root, as scheduler.yaml names it.
REPO = "algos"


def say(text: str) -> None:
    """A progress line on stderr, so that stdout holds only the figures (or the JSON)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the folder and the repository -------------------------------------------------------
@contextlib.contextmanager
def workspace(keep: str | None, prefix: str) -> Iterator[Path]:
    """``--keep DIR`` (made here, it must not exist, and kept), else a temporary folder."""
    if keep:
        root = Path(keep).resolve()
        root.mkdir(parents=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)


def git(repo: Path, *args: str) -> None:
    # A fixed author, so that a machine without git's user settings can commit too.
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@peach.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@peach.invalid")
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def notebook(cells: list[str]) -> str:
    """A notebook's JSON with one code cell per source."""
    from peach_tasks.demo import notebook_json

    return notebook_json([("code", source) for source in cells])


def commit_repository(root: Path, files: dict[str, str], message: str = "bench tasks") -> Path:
    """The git repository ``root/algos`` (branch master) of ``files`` (path: text), committed once."""
    repo = root / REPO
    repo.mkdir(parents=True)
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "init", "--quiet", "--initial-branch=master")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)
    return repo


def definitions(codops: str, tasks: dict[str, dict[str, Any]], **extra: Any) -> str:
    """An organisation's definitions file (``peach.yaml``): ``codops``, ``extra`` keys, ``tasks``."""
    import yaml

    return yaml.safe_dump({"codops": codops, **extra, "tasks": tasks}, sort_keys=False)


def write_settings(root: Path, **extra: Any) -> Path:
    """``root/scheduler.yaml``: the repository above, state in ``root/state``, a loop that never
    waits between iterations; ``extra`` adds (or replaces) top-level sections."""
    import yaml

    path = root / "scheduler.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": "state",
        "repositories": [{"url": REPO, "branch": "master"}],
        "loop": {"min_iteration_seconds": 0},
        **extra,
    }, sort_keys=False))
    return path


# -- the scheduler and its loop -----------------------------------------------------------
@contextlib.contextmanager
def opened_scheduler(settings_path: Path, **options: Any) -> Iterator[Any]:
    """The real ``Scheduler`` on the settings' store, recovered (which finds this host's
    sandbox), closed with its store at the end. ``options`` go to ``Scheduler``."""
    from peach_tasks.scheduling.scheduler import Scheduler
    from peach_tasks.settings import load_settings
    from peach_tasks.store import Store

    settings = load_settings(settings_path)
    store = Store.open(settings.database_url)
    try:
        scheduler = Scheduler(settings, store, **options)
        try:
            scheduler.recover()
            yield scheduler
        finally:
            scheduler.close()
    finally:
        store.close()


def environment(scheduler: Any, codops: str) -> Any:
    """The organisation's current environment, or the end of the bench with the store's problems."""
    env = scheduler.envs.current(codops)
    if env is None:
        raise SystemExit(f"no environment for {codops!r}: {scheduler.store.problems()}")
    return env


@contextlib.contextmanager
def running_loop(scheduler: Any, loop: Any, name: str) -> Iterator[threading.Thread]:
    """``loop.run_forever`` in a thread until the block ends; then the scheduler's stop and a join."""
    thread = threading.Thread(target=loop.run_forever, name=name)
    thread.start()
    try:
        yield thread
    finally:
        scheduler.stop_event.set()
        thread.join(timeout=120)


class Events:
    """``on_run`` callback: when (perf_counter) each run of the loop ended, and its id."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.run_ids: list[int] = []

    def __call__(self, event: Any) -> None:
        self.ends.append(time.perf_counter())
        self.run_ids.append(event.run_id)


def mode_loop(scheduler: Any, codops: str, sandbox: Any, keys: list[tuple[str, str]],
              start_ahead: bool = True) -> Any:
    """``codops``'s loop over ``keys`` only, run in ``sandbox`` (None: ``isolation: none``);
    ``start_ahead=False`` starts every sandbox with its run instead of during the previous one.

    ``make_loop`` hands the scheduler's sandbox to the loop, so it is set for the call only.
    """
    wanted = set(keys)
    saved = scheduler.sandbox
    scheduler.sandbox = sandbox
    try:
        loop = scheduler.make_loop(codops, keep=lambda key: key in wanted)
    finally:
        scheduler.sandbox = saved
    loop.start_ahead = start_ahead
    return loop


# -- papermill, the baseline of loop_overhead.py and notebook_fidelity.py ------------------
def papermill_runs(notebook: Path, out_dir: Path, runs: int) -> tuple[list[float] | None, str | None]:
    """Seconds per ``execute_notebook`` (after one untimed warm-up), or why there are none."""
    try:
        import papermill
    except ImportError:
        return None, "not installed (pip install -e '.[bench]')"
    import warnings

    times: list[float] = []
    # The kernel writes warnings to our stderr (fd 2): keep them in a file instead.
    stderr_log = out_dir / "stderr.txt"
    saved = os.dup(2)
    try:
        with open(stderr_log, "wb") as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat's missing cell id warning, at every run
            os.dup2(sink.fileno(), 2)
            for i in range(runs + 1):
                started = time.perf_counter()
                try:
                    papermill.execute_notebook(str(notebook), str(out_dir / f"out-{i}.ipynb"), kernel_name="python3",
                                               progress_bar=False, log_output=False, cwd=str(notebook.parent))
                except Exception as exc:  # e.g. no kernel: report it, the rest of the benchmark stands
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    return None, f"failed: {type(exc).__name__}: {first} (kernel output: {stderr_log})"
                if i:  # the first run imports papermill's machinery and warms the kernel's files
                    times.append(time.perf_counter() - started)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return times, None

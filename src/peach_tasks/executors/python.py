"""The plain Python executor: the task's code runs in the organisation's interpreter.

The task process runs ``bootstrap.py`` (standard library only), which receives the
code and the payload as JSON on stdin and leaves a JSON result file in the run's
private folder; this module turns exit status and result file into an ``Outcome``.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..model import Outcome, RunStatus
from ..trees import remove_tree
from .base import Job, LogSink
from .bytecode import BOOTSTRAP, task_argv  # noqa: F401 (BOOTSTRAP: where bench and tests find it)
from .disk_watch import size_text
from .process import ProcessResult, ProcessSpec, child_env, run_process, utc_stamp
from .run_outputs import OUTPUTS_DIR, OutputBounds, read_outputs
from .sandbox import inside_env
from .untrusted_files import read_task_file
from .warm import WarmSandbox

RESULT_FILE = "result.json"
DEFAULT_MAX_RESULT_BYTES = 64 * 1024  # the store keeps results up to this size


class PythonExecutor:
    """Runs a ``Job`` as ``<interpreter> -I bootstrap.py`` and reports its ``Outcome``.

    ``max_result_bytes`` bounds the JSON of a returned value that is kept; a larger
    value is dropped with a note in ``details["result_note"]``. ``outputs`` bounds what the
    run's ``display()`` calls and figures keep (``run_outputs.py``).
    """

    def __init__(self, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
                 outputs: OutputBounds = OutputBounds()) -> None:
        self.max_result_bytes = max_result_bytes
        self.outputs = outputs

    def run(self, job: Job, sink: LogSink, cancel: threading.Event) -> Outcome:
        """Run ``job`` to its end; never raises for anything the task does."""
        own_dir = job.work_dir is None
        work_dir = Path(tempfile.mkdtemp(prefix="peach-tasks-")) if job.work_dir is None else Path(job.work_dir)
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            result_path = work_dir / RESULT_FILE
            result_path.unlink(missing_ok=True)  # a file left by an earlier attempt is not this run's
            outputs_dir = work_dir / OUTPUTS_DIR
            remove_tree(outputs_dir)
            spec = self._spec(job, work_dir)
            try:
                # It carries die_with_parent: the task sets it itself (bootstrap.py).
                request = self._request(job, result_path, outputs_dir, spec if job.warm is not None else None)
            except (TypeError, ValueError) as exc:
                return Outcome(RunStatus.FAILURE, error=f"the payload is not JSON-serialisable: {exc}")
            try:
                ended = run_process(replace(spec, stdin_data=request), sink, cancel, job.warm, job.on_started)
            except OSError as exc:
                message = f"cannot start {job.interpreter} in {job.cwd}: {exc.strerror or exc}"
                sink(f"{utc_stamp()} peach-tasks: {message}")
                return Outcome(RunStatus.FAILURE, error=message)
            note = lambda text: sink(f"{utc_stamp()} peach-tasks: {text}")  # noqa: E731
            # What the task put in its outcome is bounded by the store, once for every executor.
            outcome = outcome_from(job, ended, read_result(result_path, note))
            return with_outputs(outcome, outputs_dir, self.outputs, note)
        finally:
            if job.warm is not None:
                job.warm.discard()  # not used (the run ended before it started): never left waiting
            if own_dir:
                remove_tree(work_dir)

    def prepare(self, job: Job, group_name: str, preload: tuple[str, ...] = (),
                shell: bool = False) -> WarmSandbox | None:
        """Start ``job``'s sandbox ahead, waiting for its request (``warm.py``) and importing
        the modules ``preload`` names meanwhile (``preload.py``); ``shell``: the notebook has
        the magics' shell, which a module imported ahead may ask IPython for. None where it
        cannot (no sandbox, or a checkout too large to wait in small limits)."""
        if job.sandbox is None or job.work_dir is None:
            return None
        return WarmSandbox.start(job.sandbox, self._spec(job, Path(job.work_dir)), group_name, preload=preload,
                                 shell=shell)

    def _spec(self, job: Job, work_dir: Path) -> ProcessSpec:
        return ProcessSpec(
            argv=task_argv(job.interpreter),  # bootstrap.py, from its bytecode compiled with the environment
            env=dict(job.env),
            cwd=Path(job.cwd),
            timeout=job.timeout,
            grace=job.grace,
            marker=job.marker,
            sandbox=job.sandbox,
            plan=job.sandbox_plan(work_dir),
            copy_beside=True,  # bootstrap.py waits for the checkout's copy itself (--copy)
        )

    def _request(self, job: Job, result_path: Path, outputs_dir: Path, spec: ProcessSpec | None = None) -> bytes:
        return json.dumps(
            {
                **run_request(job, result_path, outputs_dir, self.outputs, self.max_result_bytes),
                # A sandbox dies with its scheduler by itself; inside one, the parent is its PID 1.
                "die_with_parent": os.getpid() if job.die_with_scheduler and job.sandbox is None else None,
                # A sandbox started ahead was started without the run's variables: the whole
                # environment, as the task must see it (``spec``: only when one is offered).
                "env": inside_env(child_env(spec.marker, spec.env)) if spec is not None else None,
            },
            allow_nan=False,
        ).encode("utf-8")


def run_request(job: Job, result_path: Path, outputs_dir: Path, bounds: OutputBounds,
                max_result_bytes: int) -> dict[str, Any]:
    """What ``bootstrap.py`` reads to run ``job``, for every executor: the code, where its
    result and outputs go, and their bounds (each executor adds its own fields)."""
    return {
        "outputs_dir": str(outputs_dir), "max_outputs": bounds.max_count, "max_output_bytes": bounds.max_bytes,
        "code": job.code,
        "program": job.program,
        "method": job.method,
        "filename": job.filename,
        "cwd": str(job.cwd),
        "result_path": str(result_path),
        "payload": job.payload,
        "has_payload": job.payload is not None,
        "max_result_bytes": max_result_bytes,
    }


def with_outputs(outcome: Outcome, outputs_dir: Path, bounds: OutputBounds,
                 note: Callable[[str], None]) -> Outcome:
    """``outcome`` with what the run showed, read once the process ended (however it ended)."""
    try:
        outputs = read_outputs(outputs_dir, bounds, note)
    except OSError as exc:  # the run's outcome counts more than what it showed
        note(f"the run's outputs could not be read: {exc}")
        return outcome
    return replace(outcome, outputs=outputs) if outputs else outcome


MAX_RESULT_FILE_BYTES = 4 << 20  # a result file is the value (bounded) or an error with its traceback


def read_result(path: Path, note: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The task's result file, if it is one: the task owns the folder, so a link (to a
    file of the scheduler's), a FIFO (to hang the loop) or a huge file is not read
    (``note`` is told why, when a file was there)."""
    data = read_task_file(path, MAX_RESULT_FILE_BYTES)
    if data is None:
        # No file: the process died, was killed or exited on its own.
        if note is not None and os.path.lexists(path):
            note(f"the result file was not read: not a regular file of at most {MAX_RESULT_FILE_BYTES} bytes")
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and "ok" in value else None


def outcome_from(job: Job, ended: ProcessResult, result: dict[str, Any] | None) -> Outcome:
    details: dict[str, Any] = {}
    if ended.warm:
        details["sandbox_started_ahead"] = True
    if ended.leftovers_killed:
        details["leftovers_killed"] = ended.leftovers_killed
    codes: dict[str, Any] = {"exit_code": ended.exit_code, "signal": ended.signal}
    usage = ended.usage
    if usage is not None:
        codes.update(peak_memory_bytes=usage.peak_memory_bytes, cpu_seconds=usage.cpu_seconds)

    # A timeout, a cancel or too much on disk wins over whatever the task managed to write before.
    if ended.over_disk is not None:
        return Outcome(RunStatus.FAILURE, error=ended.over_disk, details=details, **codes)
    if ended.timed_out:
        error = f"timed out after {job.timeout:g} s; the task and every process it started were killed"
        return Outcome(RunStatus.TIMEOUT, error=error, details=details, **codes)
    if ended.cancelled:
        return Outcome(RunStatus.ABANDONED, error="scheduler stopped while the task ran", details=details, **codes)

    limit = job.plan.limits.memory_bytes if job.plan is not None else None
    succeeded = result is not None and result.get("ok") and ended.exit_code == 0
    if usage is not None and usage.oom_kills:
        details["oom_kills"] = usage.oom_kills
    if usage is not None and usage.oom_kills and limit is not None and not succeeded:
        # The kernel's OOM killer ended a process of the run: say so, not "killed by SIGKILL".
        error = (f"ran out of memory: the run's limit is {size_text(limit)} (python.memory in scheduler.yaml, "
                 f"per organisation under organisations.{job.codops}.python.memory)")
        return Outcome(RunStatus.FAILURE, error=error, details=details, **codes)
    if result is not None and not result["ok"]:
        failure = result.get("error")
        failure = failure if isinstance(failure, dict) else {}  # a result file the task wrote itself
        # Text only: the file is the task's to write, and the views show these as text.
        details["error_type"] = _text_or_none(failure.get("type"))
        details["traceback"] = _text_or_none(failure.get("traceback"))
        error = _text_or_none(failure.get("last_line")) or details["error_type"] or "the task failed"
        return Outcome(RunStatus.FAILURE, error=error, details=details, **codes)
    if ended.exit_code != 0:
        return Outcome(RunStatus.FAILURE, error=_ended_by(ended), details=details, **codes)
    if result is None:
        # Exit code 0 without a result file: the task ended the interpreter itself
        # (os._exit(0)); that is a success, with nothing returned.
        details["result_note"] = "the task ended its process before returning"
        return Outcome(RunStatus.SUCCESS, details=details, **codes)
    if result.get("result_note"):
        details["result_note"] = result["result_note"]
    return Outcome(RunStatus.SUCCESS, result=result.get("result"), details=details, **codes)


def _text_or_none(value: Any) -> str | None:
    """A string of the result file as it is; anything else (a list, a number a forged file
    holds) as its JSON text; None as None."""
    if value is None or isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return repr(type(value))


def _ended_by(ended: ProcessResult) -> str:
    if ended.signal is not None:
        try:
            name = signal.Signals(ended.signal).name
        except ValueError:
            name = f"signal {ended.signal}"
        return f"process killed by signal {name}"
    return f"process exited with code {ended.exit_code}"

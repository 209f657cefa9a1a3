"""The JSON API under ``/api``: read-only views of the store, limited by the caller's token.

Handlers are plain functions (not ``async``) because the store blocks; FastAPI runs
them in its thread pool.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..model import loop_limit, run_limit
from ..store import Store
from ..store.views import LogSlice
from .access import Scope, scoped_problems, visible_problems
from .models import Health, LogPiece, Organisation, Problem, RunLog, RunsPage, Task, TaskList, TaskLogs

RunStatusName = Literal["RUNNING", "SUCCESS", "FAILURE", "TIMEOUT", "ABANDONED"]
MAX_LOG_BYTES = 8 << 20
MAX_ID = 2**63 - 1  # the largest id a database holds (SQLite refuses larger numbers outright)

bearer = HTTPBearer(auto_error=False, description="A token from 'tokens' in scheduler.yaml, when any are set.")
router = APIRouter(prefix="/api")


def get_store(request: Request) -> Store:
    return request.app.state.store


def request_scope(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Scope:
    """The caller's scope; 401 when tokens are configured and none (or an unknown one) is sent."""
    policy = request.app.state.access
    scope = policy.scope_for(credentials.credentials if credentials else None)
    if scope is None:
        detail = ("unknown token" if credentials else
                  "this server needs a token: send the header 'Authorization: Bearer <token>'")
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    return scope


def require(scope: Scope, codops: str) -> None:
    if not scope.allows(codops):
        raise HTTPException(403, f"this token may not see organisation '{codops}'")


def _task_exists(store: Store, codops: str, task: str) -> None:
    """404 unless the task was ever registered (callers ask only when it has no run)."""
    if not store.has_task(codops, task):
        raise HTTPException(404, f"no task '{task}' in organisation '{codops}'")


@router.get("/health", response_model=Health, summary="Is the server up (no token needed)")
def health(store: Store = Depends(get_store)) -> Health:
    return Health(schema_revision=store.schema_revision())


@router.get("/organisations", response_model=list[Organisation], summary="Organisations with active tasks")
def organisations(scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    return store.organisations(scope.organisations)


@router.get("/organisations/{codops}/tasks", response_model=TaskList, summary="Tasks of one organisation")
def organisation_tasks(request: Request, codops: str,
                       include_inactive: bool = Query(False, description="also tasks no longer defined"),
                       scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    require(scope, codops)
    timeouts = getattr(request.app.state, "timeouts", None)
    rows = store.tasks([codops], include_inactive=include_inactive)
    if not rows and not store.tasks([codops], include_inactive=True):
        raise HTTPException(404, f"no organisation '{codops}' (no task was ever defined for it)")
    found = visible_problems(store.problems([codops]), Scope(frozenset([codops])), {t["repo"] for t in rows})
    for row in rows:
        # As in 'peach-tasks tasks --json': the organisation's and the task's repository's problems.
        row["problems"] = [p for p in found if p["codops"] == codops or p["scope"] == row["repo"]]
        row["run_limit_s"] = effective_timeout(row["loop"], row.get("timeout_s"), timeouts)
    return {"codops": codops, "tasks": rows, "problems": found}


def effective_timeout(loop: str, declared: float | None, timeouts: tuple[float, float] | None) -> float | None:
    """A run's limit as its loop applies it: the task's timeout, never beyond the loop's
    (``timeouts``: the organisation loops' and the metadata loop's; None: not known here)."""
    if timeouts is None:
        return declared
    return run_limit(declared, loop_limit(loop, *timeouts))


@router.get("/organisations/{codops}/tasks/{task}", response_model=Task, summary="One task")
def one_task(request: Request, codops: str, task: str, scope: Scope = Depends(request_scope),
             store: Store = Depends(get_store)) -> dict[str, Any]:
    listing = organisation_tasks(request, codops, True, scope, store)
    for row in listing["tasks"]:
        if row["name"] == task:
            return row
    raise HTTPException(404, f"no task '{task}' in organisation '{codops}'")


@router.get("/organisations/{codops}/tasks/{task}/runs", response_model=RunsPage,
            summary="Executions of one task, newest first, a page at a time")
def task_runs(codops: str, task: str, limit: int = Query(20, ge=1, le=500),
              before: int | None = Query(None, ge=0, le=MAX_ID,
                                         description="only runs with an id below this (the next page)"),
              status: list[RunStatusName] = Query([], description="only runs with these statuses (repeatable)"),
              version: str | None = Query(None, max_length=64, description="only runs of this version"),
              scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    require(scope, codops)
    # One more than asked tells whether an older page exists without a count query.
    rows = store.runs(codops, task, limit + 1, before, statuses=status, version=version)
    if not rows and before is None:
        _task_exists(store, codops, task)
    page = rows[:limit]
    return {"codops": codops, "task": task, "runs": page,
            "next_before": page[-1]["id"] if len(rows) > limit else None}


@router.get("/organisations/{codops}/tasks/{task}/logs", response_model=TaskLogs,
            summary="The logs of a task's newest runs, each run marked")
def task_logs(codops: str, task: str, runs: int = Query(10, ge=1, le=100),
              per_run_bytes: int = Query(64 << 10, ge=1, le=1 << 20,
                                         description="at most this many bytes (the end) of each run's log"),
              scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    require(scope, codops)
    pieces = store.task_logs(codops, task, runs, per_run_bytes)
    if not pieces:
        _task_exists(store, codops, task)
    return {"codops": codops, "task": task, "runs": [{"run": run, "log": asdict(piece)} for run, piece in pieces],
            "text": "".join(marked(run, piece) for run, piece in pieces)}


def marked(run: dict[str, Any], piece: LogSlice) -> str:
    """One run's log behind a marker line, for the all-logs view."""
    duration = f" · {run['duration_s']:.2f} s" if run["duration_s"] is not None else ""
    head = (f"===== run {run['id']} · version {run['version'] or '-'} · started {run['started_at']} · "
            f"{run['status']}{duration} =====\n")
    if piece.offset > 0:
        head += (f"[peach-tasks: the first {piece.offset} bytes of this run's log are not shown here; "
                 "show this run alone to read them]\n")
    text = piece.text
    return head + text + ("" if not text or text.endswith("\n") else "\n")


@router.get("/runs/{run_id}", response_model=RunLog, summary="One run, with the start of its log")
def one_run(run_id: int, scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    run = _visible_run(run_id, scope, store)
    piece = store.log_slice(run_id, 0, 64 << 10)
    return {"run": run, "log": asdict(piece) if piece else None}


@router.get("/runs/{run_id}/log", response_model=LogPiece,
            summary="A run's log from a byte offset: poll with offset=next_offset while it grows")
def run_log(run_id: int, offset: int = Query(0, ge=0),
            max_bytes: int = Query(1 << 20, ge=1, le=MAX_LOG_BYTES),
            tail: int | None = Query(None, ge=1, le=MAX_LOG_BYTES, description="instead of offset: the last bytes"),
            scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    _visible_run(run_id, scope, store)
    piece = store.log_slice(run_id, offset, max_bytes, tail)
    if piece is None:
        raise HTTPException(404, f"no run with id {run_id}")
    return asdict(piece)


@router.get("/replicas", summary="Scheduler replicas: alive or not, their loops and lease expiry")
def replicas(request: Request, scope: Scope = Depends(request_scope),
             store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    # Replicas run every organisation's loops: only a token that sees everything sees them.
    if not scope.everything:
        raise HTTPException(403, "only a token for every organisation ('*') may see the replicas")
    from ..store.leases import LeaseStore, replica_summary

    return replica_summary(LeaseStore(store.engine), request.app.state.lease_seconds)


@router.get("/problems", response_model=list[Problem], summary="Problems found by sync, as 'peach-tasks sync' prints")
def problems(scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    return scoped_problems(store, scope)


def _visible_run(run_id: int, scope: Scope, store: Store) -> dict[str, Any]:
    # An id no database can hold is not found, rather than an error of the database driver.
    run = store.run(run_id) if 0 <= run_id <= MAX_ID else None
    if run is None:
        raise HTTPException(404, f"no run with id {run_id}")
    require(scope, run["codops"])
    return run


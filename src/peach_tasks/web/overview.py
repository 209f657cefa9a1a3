"""``GET /api/overview``: the dashboard's home, every organisation the caller may see at once.

Each organisation's tasks are counted as failing (their last run that ended on its own
failed or timed out), stale (when freshness is known: a task summary's ``stale`` field),
running and healthy (neither failing nor stale, and run at least once); failing tasks
are listed across organisations, newest failure first, each with the run whose log
says why.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ..store import Store
from ..store.views import FAILED
from .access import Scope, scoped_problems
from .api import get_store, request_scope
from .models import Problem

router = APIRouter(prefix="/api")


class OrganisationHealth(BaseModel):
    codops: str
    tasks: int
    failing: int
    stale: int | None = Field(description="null when this scheduler knows no freshness")
    running: int
    healthy: int
    waiting: int = Field(description="never ran to an end yet")


class FailingTask(BaseModel):
    codops: str
    task: str
    loop: str
    status: str = Field(description="FAILURE or TIMEOUT: how its last run that ended on its own ended")
    run_id: int = Field(description="that run: its log says why")
    started_at: str | None
    error: str | None = Field(description="the start of that run's error")
    running: bool = Field(description="the task runs again right now")
    stale: bool | None = None


class Overview(BaseModel):
    organisations: list[OrganisationHealth]
    failing: list[FailingTask] = Field(description="across organisations, newest failure first (at most 'limit')")
    failing_total: int = Field(description="how many tasks fail, also beyond 'limit'")
    problems: list[Problem]


ERROR_SHOWN = 500  # the overview shows the start of an error; the run's page has all of it


def stale_of(task: dict[str, Any]) -> bool | None:
    """The seam for freshness: a summary's ``stale`` when the store gives one, else None."""
    value = task.get("stale")
    return None if value is None else bool(value)


def summarise(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per organisation and the failing tasks, from ``Store.task_summaries`` rows."""
    orgs: dict[str, dict[str, Any]] = {}
    failing = []
    knows_freshness = any(stale_of(t) is not None for t in tasks)
    for t in tasks:
        counts = orgs.setdefault(t["codops"], {"codops": t["codops"], "tasks": 0, "failing": 0,
                                               "stale": 0 if knows_freshness else None, "running": 0,
                                               "healthy": 0, "waiting": 0})
        counts["tasks"] += 1
        failed, stale = t["outcome"] in FAILED, bool(stale_of(t))
        counts["failing"] += failed
        if knows_freshness:
            counts["stale"] += stale
        counts["running"] += t["state"] == "RUNNING"
        if t["outcome"] is None:
            counts["waiting"] += 1
        elif not failed and not stale:
            counts["healthy"] += 1
        if failed:
            failing.append({"codops": t["codops"], "task": t["name"], "loop": t["loop"], "status": t["outcome"],
                            "run_id": t["outcome_run_id"], "running": t["state"] == "RUNNING", "stale": stale_of(t)})
    failing.sort(key=lambda f: f["run_id"], reverse=True)  # ids rise with time: newest failure first
    return {"organisations": [orgs[c] for c in sorted(orgs)], "failing": failing}


def with_briefs(failing: list[dict[str, Any]], briefs: dict[int, tuple[str | None, str | None]]) -> list[dict[str, Any]]:
    """The listed failing tasks with their failed run's start and the beginning of its error."""
    listed = []
    for item in failing:
        started, error = briefs.get(item["run_id"], (None, None))
        listed.append(dict(item, started_at=started, error=error[:ERROR_SHOWN] if error else None))
    return listed


@router.get("/overview", response_model=Overview,
            summary="Every organisation's failing, stale, running and healthy tasks, and the failing ones")
def overview(limit: int = Query(100, ge=1, le=10_000, description="failing tasks listed at most"),
             scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    found = summarise(store.task_summaries(scope.organisations))
    # A platform where hundreds fail still gets a page that loads: the newest failures, and the count.
    listed = found["failing"][:limit]
    return {**found, "failing": with_briefs(listed, store.run_briefs([f["run_id"] for f in listed])),
            "failing_total": len(found["failing"]), "problems": scoped_problems(store, scope)}

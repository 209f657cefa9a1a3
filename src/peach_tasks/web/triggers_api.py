"""``POST /api/organisations/{codops}/tasks/{task}/trigger``: run a task next, once.

The only write of the API. When tokens are configured, the caller's token must name
the task's organisation (403 otherwise), as for reading it. ``trigger_task()`` in a
PEACH Lab notebook calls this route through ``$PEACH_TASKS_URL``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from ..scheduling.triggers import TriggerQueue, TriggerRefused, request_trigger
from ..store import Store
from .access import Scope
from .api import get_store, request_scope, require

router = APIRouter(prefix="/api")

_STATUS = {"not_found": 404, "invalid": 422, "conflict": 409, "busy": 429}


class TriggerRequest(BaseModel):
    """The body: an optional JSON payload for the task's method, and an optional id for safe retries."""

    payload: Any = None
    request_id: str | None = Field(default=None, max_length=64,
                                   description="send the same id again to retry without queueing twice; "
                                               "an id is the organisation's own, for one task")


class TriggerOut(BaseModel):
    id: int
    request_id: str
    codops: str
    task: str
    payload: Any = None
    requested_by: str
    state: str = Field(description="PENDING, RUNNING, DONE or DROPPED")
    attempts: int
    run_id: int | None = None
    note: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


@router.post("/organisations/{codops}/tasks/{task}/trigger", status_code=201, response_model=TriggerOut,
             summary="Run a task as the next one of its loop, once (stored: survives a restart)",
             responses={403: {"description": "the token may not trigger this organisation, or the request "
                                             "comes from a page of another site"},
                        404: {"description": "no such task is defined"},
                        409: {"description": "the request_id was used for another task of the organisation"},
                        415: {"description": "the body is not sent as 'Content-Type: application/json'"}})
def trigger_task(codops: str, task: str, request: Request,
                 body: TriggerRequest | None = Body(default=None),
                 scope: Scope = Depends(request_scope), store: Store = Depends(get_store)) -> dict[str, Any]:
    require(scope, codops)  # the token's organisations: 403 for any other
    body = body or TriggerRequest()
    client = request.client.host if request.client else "unknown"
    orgs = ", ".join(sorted(scope.organisations or ()))
    who = f"api from {client}" + ("" if scope.everything else f" (token for {orgs})")
    try:
        return request_trigger(store, codops, task, body.payload, requested_by=who, request_id=body.request_id)
    except TriggerRefused as exc:
        raise HTTPException(_STATUS.get(exc.reason, 400), str(exc)) from None


@router.get("/organisations/{codops}/triggers", response_model=list[TriggerOut],
            summary="Triggers of one organisation, newest first")
def organisation_triggers(codops: str, scope: Scope = Depends(request_scope),
                          store: Store = Depends(get_store)) -> list[dict[str, Any]]:
    require(scope, codops)
    return TriggerQueue(store).listing([codops])

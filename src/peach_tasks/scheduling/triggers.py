"""Triggers: runs asked for now, ahead of a loop's normal order, once each.

A trigger is a row of the ``triggers`` table, so it survives a restart of the
scheduler. Three ways in, one function: ``request_trigger`` is called by
``peach-tasks trigger``, by the HTTP API, and by the loop for the requests that task
code dropped into its run's trigger folder (see ``trigger_client``).

Life of a trigger::

    PENDING --claim by the loop--> RUNNING --run ends--> DONE
                                      |  run ABANDONED (scheduler stopped or died)
                                      +--> PENDING again, at most MAX_ATTEMPTS times
    PENDING --its task is no longer defined--> DROPPED

The run records the trigger's id, who asked (``triggered_by``) and the payload.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from ..errors import PeachError
from ..executors.untrusted_files import read_task_file
from ..model import RunStatus
from ..store.schema import runs, tasks, triggers
from ..store.store import iso, utcnow
from ..trees import remove_tree
from ..trigger_client import MAX_PAYLOAD_BYTES, TriggerError, encode_payload

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE, DROPPED = "PENDING", "RUNNING", "DONE", "DROPPED"
MAX_ATTEMPTS = 3  # a triggered run cut short by the scheduler stopping is run again, within reason
MAX_FILES_PER_RUN = 100  # requests one run may drop; more are refused (a loop gone wrong)
CLAIM_GRACE_SECONDS = 60.0  # a claim whose run was never recorded is released after this
# Waiting triggers one task may have; more are refused (a task triggering itself in a loop).
# The same payload asked again while one waits is that one: it is not queued twice.
MAX_PENDING_PER_TASK = 20
_MAX_FILE_BYTES = MAX_PAYLOAD_BYTES + 4096

__all__ = ["Trigger", "TriggerQueue", "TriggerRefused", "collect_run_requests", "request_trigger",
           "MAX_PAYLOAD_BYTES", "TriggerError"]


class TriggerRefused(PeachError):
    """A trigger that is not queued. ``reason``: ``not_found``, ``invalid``, ``conflict``
    (a request_id already used for another task) or ``busy`` (``MAX_PENDING_PER_TASK``
    waiting already); the API answers 404, 422, 409 and 429."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Trigger:
    """One queued request to run ``codops/task``; ``payload_json`` None means no payload."""

    id: int
    request_id: str
    codops: str
    task: str
    payload_json: str | None
    requested_by: str
    state: str
    attempts: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.codops, self.task)

    @property
    def payload(self) -> Any:
        return None if self.payload_json is None else json.loads(self.payload_json)


def request_trigger(store: "Store", codops: str, task: str, payload: Any = None, *, requested_by: str,
                    request_id: str | None = None) -> dict[str, Any]:
    """Queue one run of ``codops/task``; the plain function behind the CLI, the API and
    task code. Who may trigger what is the caller's check (the API's token scope, a
    task's own organisation). The task must be defined now (active).

    A ``request_id`` names one request of one organisation: sent again for the same
    task, the first request is returned instead of queueing again (a client may retry
    safely); sent for another task of the organisation, it is refused (``conflict``).
    Another organisation's ids are never seen. A trigger of the same task with the same
    payload that still waits is returned instead of a new one (duplicates coalesce), and
    at most ``MAX_PENDING_PER_TASK`` wait per task (``busy``). Raises ``TriggerRefused``.
    """
    try:
        payload_json = None if payload is None else encode_payload(payload)
    except TriggerError as exc:
        raise TriggerRefused("invalid", str(exc)) from None
    request_id = request_id or uuid.uuid4().hex
    if len(request_id) > 64:
        raise TriggerRefused("invalid", "request_id is longer than 64 characters")
    same_key = sa.select(triggers).where(triggers.c.codops == codops, triggers.c.request_id == request_id)
    now = utcnow()
    try:
        with store.engine.begin() as conn:
            earlier = conn.execute(same_key).first()
            if earlier is None:
                active = conn.execute(sa.select(tasks.c.active)
                                      .where(tasks.c.codops == codops, tasks.c.name == task)).scalar()
                if not active:
                    raise TriggerRefused("not_found", f"no task '{codops}/{task}' is defined; 'peach-tasks tasks' "
                                                      "lists them (a new task is known after the next sync)")
                waiting = sa.select(triggers).where(triggers.c.codops == codops, triggers.c.task == task,
                                                    triggers.c.state == PENDING)
                same_payload = (triggers.c.payload.is_(None) if payload_json is None
                                else triggers.c.payload == payload_json)
                twin = conn.execute(waiting.where(same_payload).order_by(triggers.c.id).limit(1)).first()
                if twin is not None:
                    return _as_dict(twin)  # it will run once, as asked; asking again changes nothing
                count = conn.execute(sa.select(sa.func.count()).select_from(waiting.subquery())).scalar_one()
                if count >= MAX_PENDING_PER_TASK:
                    raise TriggerRefused("busy", f"{count} runs of {codops}/{task} are already waiting to be "
                                                 f"triggered (at most {MAX_PENDING_PER_TASK}); wait for them to run")
                conn.execute(triggers.insert().values(
                    request_id=request_id, codops=codops, task=task, payload=payload_json,
                    requested_by=requested_by[:300], state=PENDING, attempts=0, created_at=now, updated_at=now))
                return _as_dict(conn.execute(same_key).one())
    except IntegrityError:
        # The same id queued at the same moment (a retry racing its first attempt): that one stands.
        with store.engine.connect() as conn:
            earlier = conn.execute(same_key).first()
        if earlier is None:
            raise
    if earlier.task != task:
        raise TriggerRefused("conflict", f"request_id '{request_id}' was already used for {codops}/{earlier.task} "
                                         f"(trigger {earlier.id}); a request_id names one request: send a new "
                                         f"one to trigger {codops}/{task}")
    return _as_dict(earlier)


def _as_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "request_id": row.request_id, "codops": row.codops, "task": row.task,
            "payload": None if row.payload is None else json.loads(row.payload),
            "requested_by": row.requested_by, "state": row.state, "attempts": row.attempts,
            "run_id": row.run_id, "note": row.note, "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at)}


def _trigger(row: Any) -> Trigger:
    return Trigger(row.id, row.request_id, row.codops, row.task, row.payload, row.requested_by, row.state,
                   row.attempts)


class TriggerQueue:
    """The loops' side of the queue: find, claim and settle triggers."""

    def __init__(self, store: "Store") -> None:
        self.store = store

    def pending(self) -> list[Trigger]:
        """Pending triggers, oldest first."""
        query = sa.select(triggers).where(triggers.c.state == PENDING).order_by(triggers.c.id)
        with self.store.engine.connect() as conn:
            return [_trigger(r) for r in conn.execute(query).all()]

    def claim(self, trigger: Trigger) -> bool:
        """PENDING -> RUNNING; False when another loop or replica took it first."""
        with self.store.engine.begin() as conn:
            won = conn.execute(triggers.update().where(triggers.c.id == trigger.id, triggers.c.state == PENDING)
                               .values(state=RUNNING, attempts=triggers.c.attempts + 1, run_id=None,
                                       updated_at=utcnow()))
            return won.rowcount == 1

    def settle(self, trigger: Trigger, run_id: int | None, status: RunStatus) -> None:
        """After its run: DONE, or PENDING again when the run was cut short by a stop."""
        again = status == RunStatus.ABANDONED and trigger.attempts + 1 < MAX_ATTEMPTS
        note = "its run was abandoned; it will run again" if again else None
        with self.store.engine.begin() as conn:
            conn.execute(triggers.update().where(triggers.c.id == trigger.id).values(
                state=PENDING if again else DONE, run_id=run_id, note=note, updated_at=utcnow()))

    def release_orphans(self) -> int:
        """RUNNING triggers whose run has ended without settling them: PENDING again.

        That is a run ABANDONED by a scheduler that died, or ended by the replica that
        took its loop over. ``start_run`` links the run in the claim's wake; a claim
        with no run after ``CLAIM_GRACE_SECONDS`` was cut short between the two.
        """
        running_runs = sa.select(runs.c.id).where(runs.c.status == RunStatus.RUNNING.value)
        stale = utcnow() - timedelta(seconds=CLAIM_GRACE_SECONDS)
        orphan = sa.or_(sa.and_(triggers.c.run_id.is_not(None), triggers.c.run_id.not_in(running_runs)),
                        sa.and_(triggers.c.run_id.is_(None), triggers.c.updated_at < stale))
        with self.store.engine.begin() as conn:
            base = triggers.update().where(triggers.c.state == RUNNING, orphan)
            again = conn.execute(base.where(triggers.c.attempts < MAX_ATTEMPTS).values(
                state=PENDING, note="the scheduler stopped while it ran; it will run again", updated_at=utcnow()))
            conn.execute(base.values(state=DONE, note=f"abandoned {MAX_ATTEMPTS} times; not run again",
                                     updated_at=utcnow()))
        return again.rowcount

    def drop_missing(self, defined: Collection[tuple[str, str]]) -> int:
        """PENDING triggers of tasks that are no longer defined become DROPPED."""
        dropped = 0
        with self.store.engine.begin() as conn:
            for t in conn.execute(sa.select(triggers.c.id, triggers.c.codops, triggers.c.task)
                                  .where(triggers.c.state == PENDING)).all():
                if (t.codops, t.task) not in defined:
                    conn.execute(triggers.update().where(triggers.c.id == t.id, triggers.c.state == PENDING).values(
                        state=DROPPED, note="the task is no longer defined", updated_at=utcnow()))
                    dropped += 1
        return dropped

    def listing(self, codops: Collection[str] | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest triggers first, for people and the API."""
        query = sa.select(triggers).order_by(triggers.c.id.desc()).limit(limit)
        if codops:
            query = query.where(triggers.c.codops.in_(list(codops)))
        with self.store.engine.connect() as conn:
            return [_as_dict(r) for r in conn.execute(query).all()]


def _first_requests(folder: Path) -> tuple[list[Path], bool]:
    """The first ``MAX_FILES_PER_RUN`` request files found in ``folder``, in name order, and
    whether there were more. The folder is read as a stream and no further: a task may have
    left a million files there, whose names alone would take a gigabyte."""
    found: list[Path] = []
    more = False
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            if len(found) >= MAX_FILES_PER_RUN:
                more = True
                break
            found.append(folder / entry.name)
    return sorted(found), more


def collect_run_requests(store: "Store", folder: Path, codops: str, task: str, run_id: int,
                         note: Callable[[str], None]) -> int:
    """Queue the requests a run dropped into ``folder``, then remove it; returns how many.

    Each is recorded as requested by ``task CODOPS/TASK run N``. A task may trigger
    only its own organisation's tasks; refusals and unreadable files are written to
    the run's log through ``note``, and never fail the run.
    """
    try:
        files, more = _first_requests(folder)
    except FileNotFoundError:
        return 0  # the usual case: the task triggered nothing
    except OSError as exc:
        note(f"cannot read the trigger folder {folder}: {exc}")
        remove_tree(folder)
        return 0
    if more:
        note(f"more trigger requests ignored: at most {MAX_FILES_PER_RUN} per run")
    queued = 0
    source = f"task {codops}/{task} run {run_id}"
    try:
        for path in files:
            try:
                raw = read_task_file(path, _MAX_FILE_BYTES)
                if raw is None:
                    raise ValueError(f"not a regular file of at most {_MAX_FILE_BYTES} bytes")
                data = json.loads(raw.decode("utf-8"))
                target = f"{data['codops']}/{data['task']}"
            except (OSError, ValueError, KeyError, TypeError) as exc:
                note(f"trigger request {path.name} is unreadable ({exc}); ignored")
                continue
            if data["codops"] != codops:
                note(f"trigger of {target} refused: a task may trigger only tasks of its own organisation "
                     f"('{codops}')")
                continue
            try:
                request_trigger(store, data["codops"], data["task"], data.get("payload"), requested_by=source,
                                request_id=str(data.get("id") or "") or None)
            except TriggerRefused as exc:
                note(f"trigger of {target} refused: {exc}")
                continue
            except (ValueError, StatementError) as exc:
                # What no row can hold (a NUL, a lone surrogate in its id or task): this request
                # only; the run's others are still queued.
                note(f"trigger of {target} could not be stored ({type(exc).__name__}); ignored")
                continue
            note(f"trigger of {target} queued (requested by this run)")
            queued += 1
    finally:  # whatever happened, the folder goes: the run's own files never stay on the disk
        remove_tree(folder)
    return queued

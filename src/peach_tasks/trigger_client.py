"""``trigger_task``: ask the scheduler to run a task next, from task code or a notebook.

Standard library only: this module is also offered to task processes, whose
organisation environment does not have peach-tasks installed (``bootstrap.py`` makes
``from peach_tasks import trigger_task`` resolve to this file when nothing else does).

Two ways to reach the scheduler, chosen by the environment:

* inside a task run, ``$PEACH_TRIGGER_DIR`` names a folder private to the run; the
  request is written there as one JSON file (write, then rename: the scheduler never
  sees half a file) and the scheduler queues it when the run ends, recording the run
  that asked. Task processes never get the database URL nor a token.
* elsewhere (a notebook in PEACH Lab), ``$PEACH_TASKS_URL`` (and ``$PEACH_TASKS_TOKEN``
  when the server requires tokens) lets the request go to the scheduler's HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Any

TRIGGER_DIR_ENV = "PEACH_TRIGGER_DIR"
URL_ENV = "PEACH_TASKS_URL"
TOKEN_ENV = "PEACH_TASKS_TOKEN"
CODOPS_ENV = "PEACH_CODOPS"
MAX_PAYLOAD_BYTES = 64 * 1024
# The API route; ``{codops}`` and ``{task}`` are URL-quoted.
API_PATH = "/api/organisations/{codops}/tasks/{task}/trigger"

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class TriggerError(RuntimeError):
    """A trigger that could not be sent; the message says what to change."""


def encode_payload(payload: Any) -> str:
    """``payload`` as JSON text, or ``TriggerError`` when it is not JSON or too large."""
    try:
        text = json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TriggerError(f"the payload must be JSON (dicts, lists, strings, numbers, booleans, None): "
                           f"{exc}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise TriggerError(f"the payload is {size} bytes as JSON, more than {MAX_PAYLOAD_BYTES}; "
                           "pass a reference (a path, a key) instead of the data")
    return text


def trigger_task(codops: str, task: str, payload: Any = None, *, timeout: float = 30.0) -> str:
    """Run ``codops/task`` as the next task of its loop, once; returns the request's id.

    ``payload`` (JSON: dicts, lists, strings, numbers, booleans) is passed to the
    task's method when that method takes a parameter (``def main(payload=None)``).
    Inside a scheduled run, a task may trigger only tasks of its own organisation,
    and its requests are queued when its run ends. Raises ``TriggerError``.
    """
    for label, value in (("codops", codops), ("task", task)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise TriggerError(f"{label} {value!r} is not a valid name; give it as in peach.yaml, "
                               "e.g. trigger_task('default', 'tf_task')")
    text = encode_payload(payload)
    request_id = uuid.uuid4().hex
    folder = os.environ.get(TRIGGER_DIR_ENV)
    if folder:
        own = os.environ.get(CODOPS_ENV)
        if own and codops != own:
            raise TriggerError(f"a task of '{own}' may trigger only tasks of its own organisation, "
                               f"not '{codops}/{task}'")
        _drop(folder, request_id, codops, task, text)
        return request_id
    url = os.environ.get(URL_ENV)
    if url:
        return _post(url, os.environ.get(TOKEN_ENV), request_id, codops, task, text, timeout)
    raise TriggerError(
        f"cannot reach the scheduler: ${TRIGGER_DIR_ENV} is not set (so this is not a scheduled run) and "
        f"${URL_ENV} is not set either. In a notebook, set ${URL_ENV} to the scheduler's address (and "
        f"${TOKEN_ENV} to a token allowed for '{codops}' if the server uses tokens), e.g. "
        f"os.environ['{URL_ENV}'] = 'http://scheduler:8765'; or use the command line: "
        f"peach-tasks trigger {codops}/{task}"
    )


def trigger_task_with_event(task_name: str, payload: Any = None, *, timeout: float = 30.0) -> str:
    """PEACH's spelling: run ``task_name`` of the caller's own organisation next, with ``payload``.

    ``from pipe_algorithms_lib.task_helpers import trigger_task_with_event`` resolves to this
    inside a task run (``bootstrap.py``), so notebooks written for today's PEACH run unchanged.
    The organisation is the run's own (``$PEACH_CODOPS``); otherwise it is ``trigger_task``.
    """
    codops = os.environ.get(CODOPS_ENV)
    if not codops:
        raise TriggerError(
            f"trigger_task_with_event({task_name!r}) triggers a task of the caller's own organisation, which "
            f"only a task run knows (${CODOPS_ENV}); outside one, set ${CODOPS_ENV} or call "
            f"trigger_task('<codops>', {task_name!r}, payload)")
    return trigger_task(codops, task_name, payload, timeout=timeout)


def _drop(folder: str, request_id: str, codops: str, task: str, payload_text: str) -> None:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    body = f'{{"id": {json.dumps(request_id)}, "codops": {json.dumps(codops)}, "task": {json.dumps(task)}, ' \
           f'"payload": {payload_text}}}'
    final = os.path.join(folder, f"{request_id}.json")
    tmp = final + ".tmp"  # the scheduler reads only *.json: a half-written file is never seen
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(body)
    os.replace(tmp, final)


def _post(base: str, token: str | None, request_id: str, codops: str, task: str, payload_text: str,
          timeout: float) -> str:
    import urllib.error
    import urllib.parse
    import urllib.request

    path = API_PATH.format(codops=urllib.parse.quote(codops, safe=""), task=urllib.parse.quote(task, safe=""))
    body = f'{{"request_id": {json.dumps(request_id)}, "payload": {payload_text}}}'.encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base.rstrip("/") + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code in (401, 403):
            hint = (f"set ${TOKEN_ENV} to a token allowed for '{codops}'" if not token
                    else f"the token in ${TOKEN_ENV} is not allowed for '{codops}'")
            raise TriggerError(f"the scheduler refused the trigger ({exc.code}: {detail}); {hint}") from None
        raise TriggerError(f"the scheduler refused the trigger ({exc.code}: {detail})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TriggerError(f"cannot reach the scheduler at {base} ({reason}); check ${URL_ENV}") from None
    return str(answer.get("request_id") or request_id)


def _detail(exc: Any) -> str:
    try:
        data = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return str(exc.reason)
    detail = data.get("detail") if isinstance(data, dict) else None
    return str(detail or exc.reason)

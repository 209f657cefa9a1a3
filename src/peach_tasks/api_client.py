"""A small client of the peach-tasks JSON API (standard library only), used by the widget.

Every failure becomes an ``ApiError`` whose message says what happened and what to do,
so a notebook shows a sentence, not a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .trigger_client import TOKEN_ENV, URL_ENV  # the same variables as task code uses

DEFAULT_URL = "http://127.0.0.1:8765"


class ApiError(Exception):
    """The server could not be reached or refused the request; ``str()`` explains it."""


class ApiClient:
    """GETs JSON from a peach-tasks server at ``url`` (default ``$PEACH_TASKS_URL``)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        address = f"{self.url}{path}{'?' + query if query else ''}"
        request = urllib.request.Request(address, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise ApiError(self._refusal(exc)) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the peach-tasks server at {self.url} ({reason}). Is it running? "
                           f"Start it with 'peach-tasks serve' (or 'peach-tasks web'), or give the right "
                           f"address: initialize_tasks_info(url=...) or ${URL_ENV}.") from None
        except ValueError as exc:
            raise ApiError(f"{self.url} answered something that is not the peach-tasks API ({exc}); "
                           "check the address") from None

    def _refusal(self, exc: urllib.error.HTTPError) -> str:
        try:
            detail = json.loads(exc.read().decode("utf-8")).get("detail", exc.reason)
        except (ValueError, AttributeError, OSError):
            detail = exc.reason
        if exc.code == 401:
            return (f"the server at {self.url} needs an access token ({detail}); pass "
                    f"initialize_tasks_info(token=...) or set ${TOKEN_ENV}")
        if exc.code == 403:
            return f"your token may not see this ({detail})"
        return f"the server at {self.url} answered {exc.code}: {detail}"

    # -- the calls the widget makes --------------------------------------------------
    def organisations(self) -> list[dict[str, Any]]:
        return self.get("/api/organisations")

    def tasks(self, codops: str) -> dict[str, Any]:
        return self.get(f"/api/organisations/{_q(codops)}/tasks")

    def runs(self, codops: str, task: str, limit: int = 50) -> dict[str, Any]:
        return self.get(f"/api/organisations/{_q(codops)}/tasks/{_q(task)}/runs", limit=limit)

    def task_logs(self, codops: str, task: str, runs: int = 10) -> dict[str, Any]:
        return self.get(f"/api/organisations/{_q(codops)}/tasks/{_q(task)}/logs", runs=runs)

    def run_log(self, run_id: int, tail: int | None = None, offset: int | None = None) -> dict[str, Any]:
        return self.get(f"/api/runs/{int(run_id)}/log", tail=tail, offset=offset)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")

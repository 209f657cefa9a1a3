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
from pathlib import Path
from typing import Any

from ..trigger_client import TOKEN_ENV, URL_ENV  # the same variables as task code uses

DEFAULT_URL = "http://127.0.0.1:8765"


def demo_url_file() -> Path:
    """Where a running ``peach-tasks demo`` writes its dashboard's address, for the widget:
    the demo serves on another port when 8765 is taken."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache, "peach-tasks", "demo-url")


def default_url() -> tuple[str, str]:
    """The server to ask, and where that address came from (said when it cannot be reached)."""
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV], f"${URL_ENV}"
    try:
        written = demo_url_file().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        written = ""
    if written.startswith(("http://", "https://")) and len(written) < 300:
        return written, f"{demo_url_file()}, written by the running 'peach-tasks demo'"
    return DEFAULT_URL, "the default address"


class ApiError(Exception):
    """The server could not be reached or refused the request; ``str()`` explains it."""


class ApiClient:
    """GETs JSON from a peach-tasks server at ``url`` (default ``$PEACH_TASKS_URL``)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        found, self.url_from = (url, "the url argument") if url else default_url()
        self.url = found.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        address = f"{self.url}{path}{'?' + query if query else ''}"
        return self._send(urllib.request.Request(address, headers={"Accept": "application/json"}))

    def get_bytes(self, path: str, accept: str = "*/*") -> tuple[str, bytes]:
        """(content type, body) of a GET of something that is not JSON (a run's output)."""
        return self._send(urllib.request.Request(f"{self.url}{path}", headers={"Accept": accept}), raw=True)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON (the API's one write, a trigger, takes only JSON)."""
        data = json.dumps(body).encode("utf-8")
        return self._send(urllib.request.Request(f"{self.url}{path}", data=data, method="POST", headers={
            "Accept": "application/json", "Content-Type": "application/json"}))

    def _send(self, request: urllib.request.Request, raw: bool = False) -> Any:
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if raw:
                    return response.headers.get_content_type(), response.read()
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise ApiError(self._refusal(exc)) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the peach-tasks server at {self.url} ({reason}; the address is "
                           f"{self.url_from}). Is it running? "
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

    def trigger(self, codops: str, task: str, payload: Any = None) -> dict[str, Any]:
        """Queue a run of the task, next in its loop (as 'peach-tasks trigger' does)."""
        return self.post(f"/api/organisations/{_q(codops)}/tasks/{_q(task)}/trigger", {"payload": payload})

    def run_log(self, run_id: int, tail: int | None = None, offset: int | None = None) -> dict[str, Any]:
        return self.get(f"/api/runs/{int(run_id)}/log", tail=tail, offset=offset)

    def run_outputs(self, run_id: int) -> dict[str, Any]:
        return self.get(f"/api/runs/{int(run_id)}/outputs")

    def run_output(self, run_id: int, seq: int) -> tuple[str, bytes]:
        """(mime type, content) of one output of a run."""
        return self.get_bytes(f"/api/runs/{int(run_id)}/outputs/{int(seq)}")


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")

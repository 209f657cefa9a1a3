"""What a browser must not be made to do: requests another site's page makes through it.

* **DNS rebinding.** A page of ``evil.example`` whose name is made to resolve to
  127.0.0.1 reaches this server as its own origin, and could read and write through
  it. So every request must name this server in its ``Host`` header: a loopback name
  (``localhost``, ``127.0.0.0/8``, ``::1``), the address the request arrived on, the
  host the server is bound to (the machine's name when bound to every address), or
  one of ``web.allowed_hosts`` (``*``: any). Any other is 400.
* **Cross-site request forgery.** A page of another site may send a form or a
  "simple" request without asking the server first, and without a token the server
  would act on it. So a write (any method but GET, HEAD, OPTIONS) must come from this
  server's own origin (the request's ``scheme://host:port``) or one of
  ``web.allowed_origins`` when it carries an ``Origin`` (403 otherwise; without one,
  ``Sec-Fetch-Site: cross-site``/``same-site`` is refused too), and must be JSON
  (``Content-Type: application/json``, 415 otherwise), which a page of another site
  cannot send without a CORS preflight, and this server answers none.

Clients outside a browser (``trigger_task()``, curl) send no ``Origin`` and are not
affected beyond sending JSON.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..hosts import ANY_HOST, origin, split_host
from .access import is_loopback

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"


class RequestGuard:
    """ASGI middleware refusing requests for another host name and writes from another site.

    ``allowed_hosts`` and ``allowed_origins`` are compared as ``hosts`` normalises them.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str] = (),
                 allowed_origins: Collection[str] = ()) -> None:
        self.app = app
        self.any_host = ANY_HOST in allowed_hosts
        self.hosts = frozenset(h for h in allowed_hosts if h != ANY_HOST)
        self.origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.refusal(scope)
            if refused is not None:
                status, detail = refused
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """``(status, detail)`` when the request is refused, else ``None``."""
        headers = Headers(scope=scope)
        sent_host = headers.get("host", "")
        found = split_host(sent_host)
        if found is None:
            return 400, "the request has no valid Host header; send the server's name, e.g. 'Host: localhost:8765'"
        host = found[0]
        if not self._answers_to(host, scope):
            return 400, (f"this server does not answer to the host name '{host}' (the request's Host header), "
                         "so that a web page cannot reach it under a name of its own (DNS rebinding). If it "
                         "is this server's name, add it to web.allowed_hosts in scheduler.yaml")
        if scope["method"] in SAFE_METHODS:
            return None
        own = origin(f"{scope.get('scheme', 'http')}://{sent_host}")
        page = headers.get("origin")
        if page is not None:
            if origin(page) not in {own, *self.origins}:
                return 403, (f"refused: this write comes from a page of {page[:200]!r}, not of this server "
                             f"({own}); a page of another site may not write here (cross-site request "
                             "forgery). If that page should, add its origin to web.allowed_origins in "
                             "scheduler.yaml")
        elif headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            return 403, ("refused: this write comes from a page of another site (Sec-Fetch-Site: "
                         f"{headers['sec-fetch-site']}); a page of another site may not write here")
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != JSON:
            return 415, (f"writes take JSON: send the header 'Content-Type: {JSON}' with a JSON body "
                         f"(or none); got {media or 'no Content-Type'!r}")
        return None

    def _answers_to(self, host: str, scope: Scope) -> bool:
        if self.any_host or host in self.hosts or is_loopback(host):
            return True
        server: Any = scope.get("server")
        # The address the request arrived on: no other site's page can be served from it.
        return bool(server) and split_host(_bracketed(str(server[0]))) == (host, None)


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address

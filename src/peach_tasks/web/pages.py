"""The page a person gets for an address the server does not have (a 404 as HTML).

Programs keep JSON: paths under ``/api/`` answer ``{"detail": ...}`` as before.
"""

from __future__ import annotations

import html

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

# The dashboard and this page load nothing but this server's files. A run's HTML output is
# shown in a sandboxed srcdoc frame with a stricter policy of its own; the frame also inherits
# this one, so nothing in it can reach another host even before its own <meta> policy is parsed
# (Chromium's preload scanner may fetch an <img> of a srcdoc that early).
PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer"}

NOT_FOUND = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Not found · peach-tasks</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/dashboard.css">
</head>
<body>
  <header><h1><a class="home" href="/"><img src="/static/favicon.svg" alt="" width="22" height="22">
    peach-tasks</a></h1></header>
  <main>
    <section class="empty" data-testid="not-found">
      <h2>Nothing at <code>{path}</code></h2>
      <p>This server has no page at that address. The dashboard is at <a href="/">/</a>;
      the JSON API is under <a href="/docs">/api/ (documented at /docs)</a>, and Prometheus
      metrics are at <a href="/metrics">/metrics</a>.</p>
    </section>
  </main>
</body>
</html>
"""


def add_not_found_page(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def not_found(request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        if exc.status_code == 404 and not path.startswith("/api/") and path != "/openapi.json":
            shown = html.escape(path if len(path) <= 200 else path[:199] + "…")
            return HTMLResponse(NOT_FOUND.format(path=shown), status_code=404, headers=PAGE_HEADERS)
        return await http_exception_handler(request, exc)

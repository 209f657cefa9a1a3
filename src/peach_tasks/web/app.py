"""The FastAPI application: the JSON API, the dashboard, ``/metrics`` and ``/docs``.

Every script and style the pages load is served from this package (the dashboard's
own files, and Swagger UI's from the ``swagger-ui-bundle-v2`` package), so both work
on a machine without internet access.
"""

from __future__ import annotations

from collections.abc import Collection
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from ..executors.org_redis import OrganisationRedis
from ..store import Store
from . import api, outputs_api, overview, redis_api, triggers_api
from .access import AccessPolicy, Scope
from .guard import RequestGuard
from .metrics import render
from .metrics_cache import MetricsCache
from .pages import PAGE_HEADERS, add_not_found_page

STATIC = Path(__file__).with_name("static")

DESCRIPTION = """Views of the peach-tasks store: organisations, tasks, executions and logs; and one
write, a trigger.

When `tokens` are set in scheduler.yaml, send `Authorization: Bearer <token>`; a token
sees only the organisations it names. A write takes JSON (`Content-Type: application/json`,
415 otherwise) and, from a browser, only from this server's own pages (403 otherwise); a
request for a host name the server does not answer to is 400 (`web.allowed_hosts`).
Timestamps are UTC ISO 8601; durations are seconds.
A running task's log grows: poll `/api/runs/{id}/log?offset=N` with the `next_offset`
of the previous answer until `complete` is true."""


def _version() -> str:
    try:
        return version("peach-tasks")
    except PackageNotFoundError:
        return "dev"


def create_app(store: Store, access: AccessPolicy | None = None, lease_seconds: float = 30.0,
               allowed_hosts: Collection[str] = (), allowed_origins: Collection[str] = (),
               timeouts: tuple[float, float] | None = None,
               redis: OrganisationRedis | None = None) -> FastAPI:
    """The application serving ``store``; ``access`` defaults to open (no tokens).

    It answers loopback host names and ``allowed_hosts``, and takes writes from its own
    origin and ``allowed_origins`` (see ``guard``); both as ``hosts`` normalises them.
    ``timeouts`` (the organisation loops' and the metadata loop's limits) give each task's
    limit in its details.
    """
    app = FastAPI(title="peach-tasks", version=_version(), description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins)
    app.state.store = store
    app.state.access = access or AccessPolicy()
    app.state.lease_seconds = lease_seconds  # to tell live replicas from dead ones
    app.state.redis, app.state.redis_usage = redis, {}  # organisations' Redis namespaces (redis_api.py)
    app.state.metrics = MetricsCache(store)  # rendered ahead of the scrapes, refreshed in the background
    app.state.timeouts = timeouts
    app.include_router(api.router)
    app.include_router(outputs_api.router)  # what runs showed, served as untrusted content
    app.include_router(overview.router)  # the dashboard's home
    app.include_router(triggers_api.router)  # the one write: POST .../trigger
    app.include_router(redis_api.router)  # keys and memory of an organisation's Redis namespace
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    swagger = _swagger_ui_dir()
    if swagger is not None:
        app.mount("/swagger-ui", StaticFiles(directory=swagger), name="swagger-ui")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger is None:
            return HTMLResponse("<p>Install swagger-ui-bundle-v2 for the interactive docs; "
                                "the API description is at <a href='/openapi.json'>/openapi.json</a>.</p>")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="peach-tasks API",
                                   swagger_js_url="/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics(scope: Scope = Depends(api.request_scope)) -> Response:
        return Response(render(scope, app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    add_not_found_page(app)  # a person gets a page; /api/ keeps JSON errors
    return app


def _swagger_ui_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))

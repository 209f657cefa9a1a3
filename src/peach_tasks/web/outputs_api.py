"""A run's outputs (what its task showed) through the API: a list, and each one's bytes.

An output is the task's own content, so it is served as untrusted: every answer carries
``X-Content-Type-Options: nosniff`` and a ``Content-Security-Policy`` whose ``sandbox``
gives the document an origin of its own and no scripts. HTML or SVG opened straight from
its URL thus cannot act as this server's pages (read their token, call the API). The
dashboard and the widget show HTML in a sandboxed ``<iframe>`` and images as ``<img>``.
The same access rules as a run's log: a token sees the outputs of its organisations' runs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..store import Store
from .access import Scope
from .api import MAX_ID, _visible_run, get_store, request_scope

router = APIRouter(prefix="/api")

UNTRUSTED_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=3600",  # an ended run's outputs never change
    "Cross-Origin-Resource-Policy": "same-origin",
}
TEXT_TYPES = ("text/", "application/json", "image/svg+xml")


class OutputOut(BaseModel):
    seq: int = Field(description="1, 2, ... in the order the task showed them")
    kind: str = Field(description="display, figure (matplotlib), or note (what the scheduler did not keep)")
    mime_type: str = Field(description="text/html, image/png, image/jpeg, image/gif, image/svg+xml, "
                                       "text/markdown, application/json, text/latex or text/plain")
    size_bytes: int
    text: str | None = Field(description="its text/plain representation, cut to 2000 characters")
    url: str = Field(description="its content, served with its mime type")


class RunOutputs(BaseModel):
    run_id: int
    status: str = Field(description="outputs are stored when the run ends: none while RUNNING")
    outputs: list[OutputOut]


@router.get("/runs/{run_id}/outputs", response_model=RunOutputs,
            summary="What a run showed (display(), matplotlib figures), in order")
def run_outputs(run_id: int, scope: Scope = Depends(request_scope),
                store: Store = Depends(get_store)) -> dict[str, Any]:
    run = _visible_run(run_id, scope, store)
    outputs = [dict(o, url=f"/api/runs/{run_id}/outputs/{o['seq']}") for o in store.run_outputs(run_id)]
    return {"run_id": run_id, "status": run["status"], "outputs": outputs}


@router.get("/runs/{run_id}/outputs/{seq}", response_class=Response,
            summary="One output's content, with its mime type (untrusted: sandboxed by its headers)",
            responses={200: {"content": {"image/png": {}, "text/html": {}}}})
def run_output(run_id: int, seq: int = Path(ge=1, le=MAX_ID), scope: Scope = Depends(request_scope),
               store: Store = Depends(get_store)) -> Response:
    _visible_run(run_id, scope, store)
    found = store.run_output(run_id, seq) if seq <= 2**31 - 1 else None
    if found is None:
        raise HTTPException(404, f"run {run_id} has no output {seq}")
    mime, data = found
    media = f"{mime}; charset=utf-8" if mime.startswith(TEXT_TYPES) else mime
    return Response(content=data, media_type=media, headers=UNTRUSTED_HEADERS)

"""``GET /api/organisations/{codops}/redis``: how many keys and how much memory an
organisation's Redis namespace holds (``redis:`` in scheduler.yaml; org_redis.py).

Read-only and bounded: the admin connection SCANs the namespace (at most
``redis.max_scan_keys`` keys of the database looked at) and asks MEMORY USAGE of each key
found; no value is read. One answer per organisation is kept ``CACHE_SECONDS``, so a page
polling it cannot make the server scan without pause.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from ..executors.org_redis import OrganisationRedis
from ..store import Store
from .access import Scope
from .api import get_store, request_scope, require
from .models import RedisUsage

CACHE_SECONDS = 10.0

router = APIRouter(prefix="/api")
_lock = threading.Lock()


@router.get("/organisations/{codops}/redis", response_model=RedisUsage,
            summary="Keys and memory of the organisation's Redis namespace (no values)",
            responses={404: {"description": "no redis: in scheduler.yaml, or no such organisation"},
                       503: {"description": "the platform's Redis cannot be reached"}})
def organisation_redis(codops: str, request: Request, scope: Scope = Depends(request_scope),
                       store: Store = Depends(get_store)) -> dict[str, Any]:
    require(scope, codops)
    redis: OrganisationRedis | None = getattr(request.app.state, "redis", None)
    if redis is None:
        raise HTTPException(404, "this platform has no Redis for organisations (no 'redis:' in scheduler.yaml)")
    if not store.tasks([codops], include_inactive=True):
        raise HTTPException(404, f"no organisation '{codops}'")
    cache: dict[str, tuple[float, dict[str, Any]]] = request.app.state.redis_usage
    with _lock:  # one scan at a time per server; the others take its answer
        hit = cache.get(codops)
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            usage = redis.usage(codops)
        except Exception as exc:  # noqa: BLE001 - the server down or refusing the admin user
            raise HTTPException(503, f"the platform's Redis cannot be read ({type(exc).__name__}: {exc})") from None
        cache[codops] = (time.monotonic(), usage)
        return usage

"""Serving the web application with uvicorn: on a thread of ``serve``, or alone.

The listening socket is bound here, before uvicorn starts, so that a port in use is
reported as a clear error at once (uvicorn would exit its thread instead), and so that
port 0 (tests) gives the real port before the first request.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from ..errors import PeachError
from ..executors.org_redis import OrganisationRedis
from ..hosts import served_names
from ..settings import Settings
from ..store import Store
from .access import AccessPolicy, check_exposure
from .app import create_app

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``PeachError`` saying why when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise PeachError(f"the web server cannot listen on {host}:{port} ({exc.strerror or exc}); "
                         "set web.host/web.port in scheduler.yaml, or stop what uses that port") from None
    sock.set_inheritable(True)
    return sock


class WebServer:
    """One uvicorn server for one app. ``start`` serves on a thread, ``run`` in this one.

    Building it checks the access settings (so a refused exposure or a missing token
    stops ``serve`` before anything starts); the port is taken by ``start``/``run``.
    """

    def __init__(self, settings: Settings, store: Store, host: str | None = None, port: int | None = None) -> None:
        self.host = host if host is not None else settings.web.host
        self.port = port if port is not None else settings.web.port
        policy = AccessPolicy.from_settings(settings)
        check_exposure(self.host, policy, settings.web.allow_public)
        self.app = create_app(store, policy, settings.replica.lease_seconds,
                              allowed_hosts=served_names(self.host, settings.web.allowed_hosts),
                              allowed_origins=settings.web.allowed_origins,
                              timeouts=(settings.timeouts.task, settings.timeouts.metadata),
                              redis=OrganisationRedis(settings.redis, settings.state_path) if settings.redis else None)
        self.socket: socket.socket | None = None
        debug = settings.log_level == "debug"
        # log_config=None: uvicorn's loggers go through the scheduler's logging set-up.
        config = uvicorn.Config(self.app, log_config=None, log_level=settings.log_level, access_log=debug,
                                lifespan="off", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def listen(self) -> None:
        """Take the port (port 0: a free one, then known in ``port``)."""
        if self.socket is None:
            self.socket = bind(self.host, self.port)
            self.port = self.socket.getsockname()[1]

    def start(self, timeout: float = 30.0) -> "WebServer":
        """Serve on a daemon thread; return once requests are accepted."""
        self.listen()
        self._thread = threading.Thread(target=self.run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PeachError(f"the web server on {self.url} did not start; see the log above")
            time.sleep(0.02)
        log.info("dashboard and API on %s (metrics at /metrics, API docs at /docs)", self.url)
        self.warm_up()
        return self

    def warm_up(self) -> None:
        """Load what /metrics serves in the background, so the first scrape is quick too."""
        def warm() -> None:
            try:
                self.app.state.metrics.start()
            except Exception:  # the first scrape will try again and report
                log.warning("could not read the run history for /metrics yet", exc_info=True)

        threading.Thread(target=warm, name="metrics-warm-up", daemon=True).start()

    def run(self) -> None:
        """Serve in this thread until stopped (in the main thread, SIGINT/SIGTERM stop it)."""
        self.listen()
        assert self.socket is not None
        self.server.run(sockets=[self.socket])

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self.socket is not None:
            self.socket.close()

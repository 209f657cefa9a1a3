"""Whether tasks can reach the store's database server without a password.

A run with the network on shares the host's network stack (docs/security.md), so it reaches a
database listening on loopback. A PostgreSQL that lets a loopback connection in without a
password (``trust`` in pg_hba.conf, the default of many installs) gives any task the whole
store, every organisation's runs and logs, and, as its superuser, programs run on the host
(``COPY ... FROM PROGRAM``: a shell as the server's user, found by the hostile pass). The
scheduler cannot close that door; it looks whether it is open, as a task would knock (no
password, no password file), and says so as a problem the platform team sees.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import sqlalchemy as sa

from ..errors import Problem

PROBLEM_KIND = "store"
PROBLEM_SCOPE = "store"
_PROBE_USERS = ("postgres",)  # the superuser most servers have, besides the scheduler's own user
_TIMEOUT_S = 2
_NO_PASSFILE = "/nonexistent/peach-tasks-probe"  # not ~/.pgpass: a task has none


def _loopback(host: str | None) -> bool:
    if not host:
        return False  # a unix socket: no sandbox shows its folder
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LOCAL_SERVER = ("127.0.0.1", 5432)  # a PostgreSQL of the host, the store's or not (the re-check's SQLite case)


def exposure_problems(url: str, network_on: bool, state_dir: Path | None = None,
                      local_server: bool = True) -> list[Problem]:
    """Problems a platform team must fix for tasks not to reach what is not theirs: a
    PostgreSQL on loopback (the store's, and the host's default port) that lets a task with
    the network in without a password, as the scheduler's user or the server's superuser (no
    probe when no organisation has the network, or when the scheduler's own password comes
    from ``PGPASSWORD``: a probe could not tell); and a ``state_dir`` other users of the
    host may read (one made before it was made 0700), which such a server's user reads.
    ``local_server`` False: the host's default server is not probed (the store's still is)."""
    problems = []
    if state_dir is not None:
        try:
            mode = state_dir.stat().st_mode & 0o777
        except OSError:
            mode = 0
        if mode & 0o077:
            problems.append(Problem(PROBLEM_KIND, PROBLEM_SCOPE,
                                    f"{state_dir} can be read by other users of the host (mode {mode:04o}): it holds "
                                    "the store, every organisation's checkouts and logs and the Redis secret, and a "
                                    "task that reaches another user (a database server's) reads them; chmod 700 it"))
    if not network_on or os.environ.get("PGPASSWORD"):
        return problems
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        parsed = None
    # (host, port) -> the database to ask for, and the users to try
    servers: dict[tuple[str, int], tuple[str, list[str]]] = \
        {LOCAL_SERVER: ("postgres", list(_PROBE_USERS))} if local_server else {}
    if parsed is not None and parsed.drivername.startswith("postgresql") and _loopback(parsed.host):
        servers[(str(parsed.host), parsed.port or 5432)] = (
            parsed.database or "postgres", list(dict.fromkeys([parsed.username or "postgres", *_PROBE_USERS])))
    for (host, port), (dbname, users) in servers.items():
        opened = [user for user in users if _lets_in(host, port, user, dbname)]
        if opened:
            who = " and ".join(f"'{user}'" for user in opened)
            problems.append(Problem(
                PROBLEM_KIND, PROBLEM_SCOPE,
                f"the PostgreSQL at {host}:{port} lets {who} in without a password, and tasks with the network on "
                "share the host's loopback: any task could log in, and as a superuser run programs on the host "
                "as the server's user (COPY ... FROM PROGRAM); as the store, every organisation's runs and logs "
                "are its to read and change. Require a password for loopback connections (pg_hba.conf: "
                "scram-sha-256) and put it in the database URL, or set python.network: false for every "
                "organisation"))
    return problems


def _lets_in(host: str, port: int, user: str, dbname: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname=dbname, passfile=_NO_PASSFILE, password="",
                             connect_timeout=_TIMEOUT_S):
            return True
    except psycopg.Error:
        return False

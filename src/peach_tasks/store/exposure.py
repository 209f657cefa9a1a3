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


def exposure_problems(url: str, network_on: bool) -> list[Problem]:
    """A problem when a task with the network could log into the store's PostgreSQL on
    loopback without a password, as the scheduler's user or the server's superuser; none
    when no organisation has the network, for another database or host, or when the
    scheduler's own password comes from ``PGPASSWORD`` (a probe could not tell)."""
    if not network_on or os.environ.get("PGPASSWORD"):
        return []
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return []
    if not parsed.drivername.startswith("postgresql") or not _loopback(parsed.host):
        return []
    try:
        import psycopg
    except ImportError:
        return []
    port = parsed.port or 5432
    users = [user for user in dict.fromkeys([parsed.username or "postgres", *_PROBE_USERS]) if user]
    opened = []
    for user in users:
        try:
            with psycopg.connect(host=parsed.host, port=port, user=user, dbname=parsed.database or user,
                                 passfile=_NO_PASSFILE, password="", connect_timeout=_TIMEOUT_S):
                opened.append(user)
        except psycopg.Error:
            continue
    if not opened:
        return []
    who = " and ".join(f"'{user}'" for user in opened)
    return [Problem(PROBLEM_KIND, PROBLEM_SCOPE,
                    f"the store's PostgreSQL at {parsed.host}:{port} lets {who} in without a password, and tasks "
                    "with the network on share the host's loopback: any task could read and change every "
                    "organisation's runs and logs, and as a superuser run programs on the host (COPY ... FROM "
                    "PROGRAM). Require a password for loopback connections (pg_hba.conf: scram-sha-256) and put "
                    "it in the database URL, or set python.network: false for every organisation")]

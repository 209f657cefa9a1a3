"""Asking a Spark cluster manager about our applications, to end orphans.

In client mode the driver is our child and dies with the run, which ends its
application. An application can still outlive a crashed scheduler (a driver that hung
on shutdown, or a cluster that lost the disconnect), so at start the scheduler ends
every application whose name (standalone) or tag (YARN) names a run it just abandoned.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import urllib.parse
import urllib.request
from typing import Any, Iterable

from .spark import run_id_of

log = logging.getLogger(__name__)
HTTP_TIMEOUT = 10.0


def standalone_web_url(master: str, configured: str | None) -> str | None:
    """The master's web UI: the setting, else port 8080 of a ``spark://`` master's host."""
    if configured:
        return configured.rstrip("/")
    if not master.startswith("spark://"):
        return None
    host = master[len("spark://"):].split(",")[0].rsplit(":", 1)[0]
    return f"http://{host}:8080"


def standalone_state(web_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{web_url}/json/", timeout=HTTP_TIMEOUT) as response:
        return json.load(response)


def standalone_active_apps(web_url: str) -> list[dict[str, Any]]:
    return list(standalone_state(web_url).get("activeapps", []))


def kill_standalone_app(web_url: str, app_id: str) -> None:
    """The master UI's kill action (enabled unless spark.ui.killEnabled=false).

    Spark 4 protects it with a CSRF token that the master page puts into its kill forms,
    so the page is read first and its token sent back, as the browser would.
    """
    fields = {"id": app_id, "terminate": "true"}
    with urllib.request.urlopen(f"{web_url}/", timeout=HTTP_TIMEOUT) as response:
        page = response.read().decode("utf-8", errors="replace")
    token = re.search(r'name="csrfToken" value="([^"]+)"', page)
    if token:
        fields["csrfToken"] = token.group(1)
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(f"{web_url}/app/kill/", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT):
        pass


def yarn_list_command(run_id: int) -> list[str]:
    return ["yarn", "application", "-list", "-appStates", "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING",
            "-appTags", f"peach-run-{run_id}"]


def yarn_kill_command(app_id: str) -> list[str]:
    return ["yarn", "application", "-kill", app_id]


def end_orphans(master: str, web_url: str | None, run_ids: Iterable[int]) -> list[str]:
    """End the applications of ``run_ids`` still known to the cluster; returns their ids."""
    wanted = set(run_ids)
    if not wanted:
        return []
    killed: list[str] = []
    standalone = standalone_web_url(master, web_url)
    try:
        if standalone:
            for app in standalone_active_apps(standalone):
                if run_id_of(app.get("name", "")) in wanted:
                    kill_standalone_app(standalone, app["id"])
                    killed.append(app["id"])
        elif master.startswith("yarn"):
            for run_id in sorted(wanted):
                out = subprocess.run(yarn_list_command(run_id), capture_output=True, text=True, timeout=60).stdout
                for line in out.splitlines():
                    if line.startswith("application_"):
                        app_id = line.split()[0]
                        subprocess.run(yarn_kill_command(app_id), capture_output=True, timeout=60)
                        killed.append(app_id)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.warning("could not look for orphaned Spark applications on %s: %s", master, exc)
    if killed:
        log.warning("ended %d Spark applications left by a previous scheduler: %s", len(killed), killed)
    return killed

"""A small local HTTP server that STANDS IN FOR GITLAB in the discovery tests.

A hosted GitLab cannot run here, so this serves the few REST API v4 responses that
python-gitlab asks for when listing projects (``GET /api/v4/groups/:id/projects`` with
subgroups, and ``GET /api/v4/projects``), checks the ``PRIVATE-TOKEN`` header like
GitLab (401 otherwise), and pages its answers with ``Link: rel="next"`` headers (at
most ``page_size`` projects per page, whatever ``per_page`` asks, as a server's cap).

Behind the clone URLs it returns are real git repositories, served over git's "dumb"
HTTP protocol (static files after ``git update-server-info``) and only to a request
carrying the token as HTTP basic auth, as GitLab requires for a private project.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Project:
    id: int
    path: str  # path with namespace, e.g. data/models
    git_dir: Path  # the working copy's .git, served read-only
    topics: list[str] = field(default_factory=list)
    default_branch: str | None = "master"
    archived: bool = False


class StandInGitLab:
    """Start with ``start()``; ``url`` is the server's base URL; ``stop()`` ends it."""

    def __init__(self, token: str, page_size: int = 2) -> None:
        self.token, self.page_size = token, page_size
        self.projects: dict[str, Project] = {}
        self.git_requests: list[tuple[str, bool]] = []  # (path, authorised)
        self.api_requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "StandInGitLab":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, path: str, work_tree: Path, topics: list[str], **extra: object) -> Project:
        publish(work_tree)
        project = Project(len(self.projects) + 1, path, work_tree / ".git", list(topics),
                          **extra)  # type: ignore[arg-type]
        self.projects[path] = project
        return project

    def clone_url(self, project: Project) -> str:
        return f"{self.url}/git/{project.path}.git"

    def _json(self, project: Project) -> dict[str, object]:
        name = project.path.rsplit("/", 1)[-1]
        return {"id": project.id, "name": name, "path": name, "path_with_namespace": project.path,
                "default_branch": project.default_branch, "topics": project.topics, "tag_list": project.topics,
                "archived": project.archived, "http_url_to_repo": self.clone_url(project),
                "ssh_url_to_repo": f"git@standin:{project.path}.git", "web_url": f"{self.url}/{project.path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                parts = urlsplit(self.path)
                if parts.path.startswith("/git/"):
                    return self._git(unquote(parts.path[len("/git/"):]))
                standin.api_requests.append(self.path)
                if self.headers.get("PRIVATE-TOKEN") != standin.token:
                    return self._send(401, {"message": "401 Unauthorized"})
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                # GitLab reads booleans case-insensitively; python-gitlab sends 'True'.
                flag = {k: v.lower() in ("true", "1", "yes") for k, v in query.items()}
                if parts.path.startswith("/api/v4/groups/") and parts.path.endswith("/projects"):
                    group = unquote(parts.path[len("/api/v4/groups/"):-len("/projects")])
                    if not any(p.startswith(group + "/") for p in standin.projects):
                        return self._send(404, {"message": "404 Group Not Found"})
                    subgroups = flag.get("include_subgroups", False)
                    found = [p for p in standin.projects.values() if p.path.startswith(group + "/")
                             and (subgroups or "/" not in p.path[len(group) + 1:])]
                elif parts.path == "/api/v4/projects":
                    found = list(standin.projects.values())
                else:
                    return self._send(404, {"message": "404 Not Found"})
                if "topic" in query:
                    found = [p for p in found if query["topic"] in p.topics]
                if "archived" in flag and not flag["archived"]:
                    found = [p for p in found if not p.archived]
                page = int(query.get("page", "1"))
                size = min(int(query.get("per_page", "20")), standin.page_size)
                chunk = found[(page - 1) * size: page * size]
                headers = {}
                if page * size < len(found):
                    query["page"] = str(page + 1)
                    following = "&".join(f"{k}={v}" for k, v in query.items())
                    headers["Link"] = f'<{standin.url}{parts.path}?{following}>; rel="next"'
                    headers["X-Next-Page"] = str(page + 1)
                self._send(200, [standin._json(p) for p in chunk], headers)

            def _git(self, rest: str) -> None:
                name, _, inner = rest.partition(".git/")
                project = standin.projects.get(name)
                expected = "Basic " + base64.b64encode(f"oauth2:{standin.token}".encode()).decode()
                authorised = self.headers.get("Authorization") == expected
                standin.git_requests.append((rest, authorised))
                if not authorised:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="GitLab"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                target = (project.git_dir / inner).resolve() if project else None
                if target is None or not target.is_file() or not target.is_relative_to(project.git_dir.resolve()):
                    return self._send(404, {"message": "404 Not Found"})
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, code: int, body: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def publish(work_tree: Path) -> None:
    """Refresh the static files the dumb HTTP protocol reads (after every commit)."""
    subprocess.run(["git", "-C", str(work_tree), "update-server-info"], check=True, capture_output=True)

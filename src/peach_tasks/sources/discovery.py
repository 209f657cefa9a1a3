"""Repositories found on GitLab by topic (the tutorial's ``peach-lab`` label).

At each sync, every ``gitlab:`` source of ``scheduler.yaml`` lists the projects of its
groups (subgroups included; every project the token can see when no group is given)
that carry its topic, with python-gitlab. Each becomes a repository on the project's
default branch (or the source's ``branch``). A project that loses the topic, is
archived or deleted is dropped: its tasks stop, their history stays.

When a listing fails (token missing or refused, server unreachable) the source keeps
the projects of its last good listing, saved in ``state_dir/discovery/<name>.json`` so
that a restart during a GitLab outage changes nothing, and reports a problem; the
other sources and the configured repositories go on as usual.

The token reaches git as an HTTP header given through ``GIT_CONFIG_*`` environment
variables and scoped to the server's URL: it is never part of a clone URL, so it never
lands in a mirror's config, a log line or a problem message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import urlsplit

from ..errors import Problem
from ..settings import GitLabSettings
from .repos import Repository, name_problem

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveredProject:
    """One project carrying the topic: ``name`` is its path with namespace."""

    name: str
    url: str
    branch: str


class GitLabSource:
    """One ``gitlab:`` entry of the settings; ``discover()`` runs on the sync thread."""

    def __init__(self, settings: GitLabSettings, state_dir: Path) -> None:
        self.settings = settings
        self.scope = f"gitlab:{settings.name}"
        self.repo_dir = state_dir / "discovered" / settings.name  # the repositories' own state_dir
        self._saved = state_dir / "discovery" / f"{settings.name}.json"
        self.projects: list[DiscoveredProject] = self._load()

    @property
    def codops(self) -> list[str] | None:
        return self.settings.codops

    def discover(self) -> tuple[list[DiscoveredProject], list[Problem]]:
        """The projects carrying the topic now; on failure the last good list and a problem."""
        token = os.environ.get(self.settings.token_env, "").strip()
        kept = (f"the {len(self.projects)} projects found before keep running" if self.projects
                else "no project from it runs yet")
        if not token:
            return self.projects, [self._problem(
                f"environment variable {self.settings.token_env} is not set, so the projects tagged "
                f"'{self.settings.topic}' on {self.settings.url} cannot be listed ({kept}); set it to a token "
                "with the read_api and read_repository scopes")]
        try:
            found, skipped = self._list(token)
        except Exception as exc:  # noqa: BLE001 - a broken source must never stop the others
            return self.projects, [self._problem(f"{_explain(exc, self.settings)} ({kept})")]
        self.projects = found
        self._save()
        return found, [self._problem(message) for message in skipped]

    def fetch_env(self) -> dict[str, str]:
        """Environment that makes git send the token to this server, and only to it."""
        token = os.environ.get(self.settings.token_env, "").strip()
        if not token or self.settings.clone != "http":
            return {}
        parts = urlsplit(self.settings.url)
        scope = f"{parts.scheme}://{parts.netloc}/"
        # GitLab takes any user name with a token as the password over HTTP basic auth.
        basic = base64.b64encode(f"oauth2:{token}".encode()).decode()
        return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{scope}.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}

    # -- steps ------------------------------------------------------------------
    def _list(self, token: str) -> tuple[list[DiscoveredProject], list[str]]:
        import gitlab  # python-gitlab; imported here, only schedulers with a gitlab source need it

        client = gitlab.Gitlab(self.settings.url, private_token=token, timeout=self.settings.timeout,
                               per_page=100, user_agent="peach-tasks")
        filters: dict[str, Any] = {"iterator": True, "archived": False, "topic": self.settings.topic}
        if self.settings.groups:
            listings: Iterable[Any] = (
                project
                for group in self.settings.groups
                for project in client.groups.get(group, lazy=True).projects.list(include_subgroups=True, **filters)
            )
        else:
            listings = client.projects.list(**filters)
        found: dict[str, DiscoveredProject] = {}
        skipped: list[str] = []
        for project in listings:
            attrs = project.attributes
            # The server may ignore the topic filter (older GitLab on group listings): check it here.
            topics = attrs.get("topics") or attrs.get("tag_list") or []
            if self.settings.topic not in topics or attrs.get("archived"):
                continue
            name = str(attrs.get("path_with_namespace") or attrs.get("id"))
            bad = name_problem(name)
            if bad is not None:  # it names the project's folders under state_dir
                skipped.append(f"project {name} carries the topic '{self.settings.topic}' but is skipped: {bad}")
                continue
            url = attrs.get("http_url_to_repo" if self.settings.clone == "http" else "ssh_url_to_repo")
            branch = self.settings.branch or attrs.get("default_branch")
            if not url or not branch:
                skipped.append(f"project {name} carries the topic '{self.settings.topic}' but has no commits "
                               "yet (no default branch); it is added once something is pushed")
                continue
            found.setdefault(name, DiscoveredProject(name, str(url), str(branch)))
        return sorted(found.values(), key=lambda p: p.name), skipped

    def _problem(self, message: str) -> Problem:
        return Problem("sync", self.scope, message)

    def _load(self) -> list[DiscoveredProject]:
        try:
            data = json.loads(self._saved.read_text())
            return [project for project in (DiscoveredProject(**item) for item in data["projects"])
                    if name_problem(project.name) is None]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def _save(self) -> None:
        try:
            self._saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._saved.with_suffix(".tmp")
            tmp.write_text(json.dumps({"url": self.settings.url, "projects": [asdict(p) for p in self.projects]},
                                      indent=2))
            os.replace(tmp, self._saved)
        except OSError:
            log.exception("cannot save the projects found on %s", self.settings.url)


def _explain(exc: Exception, settings: GitLabSettings) -> str:
    """A sentence for a failed listing: what went wrong and what to do."""
    from gitlab import exceptions as gl_errors

    code = getattr(exc, "response_code", None)
    if isinstance(exc, gl_errors.GitlabAuthenticationError) or code == 401:
        return (f"GitLab at {settings.url} refused the token in {settings.token_env} (401 Unauthorized); "
                "check that it is valid, not expired, and has the read_api scope")
    if code == 403:
        return (f"the token in {settings.token_env} may not list projects on {settings.url} (403 Forbidden); "
                "give its user at least Reporter access to the groups")
    if code == 404:
        groups = ", ".join(settings.groups) or "(all projects)"
        return f"GitLab at {settings.url} does not know the group(s) {groups} (404); fix 'gitlab.groups'"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot list projects on {settings.url} ({detail[:300]}); check 'gitlab.url' and the network"


class Discovery:
    """Every ``gitlab:`` source, merged with the configured repositories at each sync.

    Configured repositories come first and win over a discovered project with the same
    name or URL (so the first-registered rule for duplicate tasks stays predictable);
    then discovered projects, source by source, in path order.
    """

    def __init__(self, sources: Iterable[GitLabSettings], state_dir: Path) -> None:
        self.sources = [GitLabSource(s, state_dir) for s in sources]
        self.allowed: dict[str, list[str] | None] = {}
        self._repos: dict[str, Repository] = {}

    def merge(self, configured: list[Repository], store: "Store | None" = None,
              refresh: bool = True) -> tuple[list[Repository], list[str]]:
        """Configured + discovered repositories, and the names of those dropped since last time.

        With ``refresh`` each source asks GitLab first (and its problems go to ``store``);
        without, the last known projects are used (at start-up, before the first sync).
        """
        taken_names = {r.name for r in configured}
        taken_urls = {r.url for r in configured}
        repos: dict[str, Repository] = {}
        allowed: dict[str, list[str] | None] = {}
        for source in self.sources:
            if refresh:
                projects, problems = source.discover()
                if store is not None:
                    store.set_problems("sync", source.scope, problems)
            else:
                projects = source.projects
            env = source.fetch_env()
            for project in projects:
                if project.name in taken_names or project.url in taken_urls or project.name in repos:
                    continue
                old = self._repos.get(project.name)
                same = old is not None and (old.url, old.branch, old.fetch_env) == (project.url, project.branch, env)
                repos[project.name] = old if same else Repository(
                    project.name, project.url, project.branch, source.repo_dir, fetch_env=env)
                allowed[project.name] = source.codops
        dropped = [name for name in self._repos if name not in repos]
        if store is not None and dropped:  # their problems go with them; runs and tasks stay in the history
            store.set_problems_many([(kind, name, [], None) for name in dropped for kind in ("sync", "config")])
        self._repos, self.allowed = repos, allowed
        return [*configured, *repos.values()], dropped

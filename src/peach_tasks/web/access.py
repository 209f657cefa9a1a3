"""Who may see what: bearer tokens, each limited to some organisations.

With no tokens configured the API is open, and so it may only listen on a loopback
address unless ``web.allow_public`` says otherwise. With tokens, every data request
needs one, and a token sees only its organisations' tasks, runs, logs and metrics.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import PeachError
from ..settings import Settings

ALL_ORGANISATIONS = "*"


@dataclass(frozen=True)
class Scope:
    """The organisations one request may see; ``None`` means every organisation."""

    organisations: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.organisations is None

    def allows(self, codops: str) -> bool:
        return self.organisations is None or codops in self.organisations


OPEN = Scope(None)


class AccessPolicy:
    """Maps a presented token to a ``Scope``; with no tokens everything is open."""

    def __init__(self, tokens: Mapping[str, Scope] | None = None) -> None:
        self._tokens = [(token.encode(), scope) for token, scope in (tokens or {}).items()]

    @property
    def open(self) -> bool:
        return not self._tokens

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> "AccessPolicy":
        """Resolve ``tokens`` (reading ``token_env`` variables); a missing variable is an error."""
        environ = os.environ if environ is None else environ
        tokens: dict[str, Scope] = {}
        for index, entry in enumerate(settings.tokens):
            value = entry.token
            if entry.token_env is not None:
                value = environ.get(entry.token_env, "")
                if len(value) < 16:
                    # Starting without this token would lock its users out, or worse,
                    # a typo would silently serve fewer checks than intended.
                    raise PeachError(f"tokens[{index}]: environment variable {entry.token_env} is "
                                     f"{'empty or unset' if not value else 'shorter than 16 characters'}; "
                                     "set it to the token before starting the web server")
            assert value is not None
            scope = OPEN if ALL_ORGANISATIONS in entry.codops else Scope(frozenset(entry.codops))
            if value in tokens and tokens[value] != scope:
                raise PeachError(f"tokens[{index}]: the same token is given twice with different "
                                 "organisations; give each token once")
            tokens[value] = scope
        return cls(tokens)

    def scope_for(self, token: str | None) -> Scope | None:
        """The presented token's scope, or ``None`` when it is missing or unknown."""
        if self.open:
            return OPEN
        if not token:
            return None
        presented = token.encode()
        found: Scope | None = None
        # Compare against every token in constant time, so timing tells nothing.
        for known, scope in self._tokens:
            if hmac.compare_digest(known, presented):
                found = scope
        return found


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(host: str, policy: AccessPolicy, allow_public: bool) -> None:
    """Refuse to serve every organisation's data, unauthenticated, beyond this machine."""
    if policy.open and not allow_public and not is_loopback(host):
        raise PeachError(
            f"refusing to serve the web API on {host} with no access tokens: anyone who can reach "
            "that address would see every organisation's tasks and logs. Add 'tokens' to "
            "scheduler.yaml (see docs/settings.md), serve on 127.0.0.1, or set "
            "'web: {allow_public: true}' if that is really what you want")


def visible_problems(problems: Iterable[dict[str, Any]], scope: Scope,
                     repos: Iterable[str]) -> list[dict[str, Any]]:
    """Problems a scope may see: its organisations', and those of repositories holding its tasks.

    ``repos`` are the repositories of the tasks the scope can see. A repository-wide
    problem (a bad file, an unreachable remote) has no organisation of its own.
    """
    if scope.everything:
        return list(problems)
    repo_set = set(repos)
    return [p for p in problems
            if (p["codops"] is not None and scope.allows(p["codops"]))
            or (p["codops"] is None and p["scope"] in repo_set)]


def scoped_problems(store: Any, scope: Scope) -> list[dict[str, Any]]:
    """The problems ``scope`` may see, from ``store`` (a ``Store``): /api/problems and the
    problems gauge of /metrics. The repositories come from the tasks table alone, not
    from the run counts, since /metrics asks on every scrape."""
    if scope.everything:
        return store.problems(None)
    orgs = sorted(scope.organisations or ())
    return visible_problems(store.problems(orgs), scope, store.repositories(orgs))

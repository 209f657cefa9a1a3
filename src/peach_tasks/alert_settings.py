"""What ``alerts:`` means, in ``scheduler.yaml`` (the platform's rules) and in an
organisation's ``peach.yaml`` (its own rules, limited by the platform's policy).

Only shapes and names are checked here; ``observability/alert_*.py`` do the work. Secrets (a webhook
URL carrying a token, the SMTP password) are named by environment variable
(``url_env``, ``password_env``) so that they are written neither in these files, nor in
the store's outbox, nor shown by the API.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from .durations import parse_duration


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be a positive duration, e.g. 30m or 2h")
    return seconds


Duration = Annotated[float, BeforeValidator(_positive_duration)]

# The events a rule may ask for (docs/alerts.md describes each).
RUN_FAILED = "run_failed"            # FAILURE or TIMEOUT (the `after`-th in a row)
RUN_TIMED_OUT = "run_timed_out"      # TIMEOUT only (the `after`-th failure in a row)
TASK_STALE = "task_stale"            # no success within the task's freshness
TASK_RECOVERED = "task_recovered"    # first success after failures or staleness
PROBLEM_APPEARED = "problem_appeared"  # a repository or environment problem appeared
PROBLEM_CLEARED = "problem_cleared"    # ... and went away
REPLICA_DIED = "replica_died"        # a replica stopped renewing; its loops were taken over
EVENTS = (RUN_FAILED, RUN_TIMED_OUT, TASK_STALE, TASK_RECOVERED, PROBLEM_APPEARED, PROBLEM_CLEARED, REPLICA_DIED)
ORGANISATION_EVENTS = tuple(e for e in EVENTS if e != REPLICA_DIED)

Event = Literal["run_failed", "run_timed_out", "task_stale", "task_recovered", "problem_appeared",
                "problem_cleared", "replica_died"]
OrganisationEvent = Literal["run_failed", "run_timed_out", "task_stale", "task_recovered", "problem_appeared",
                            "problem_cleared"]
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_ADDRESS = re.compile(r"^[^@\s<>,;]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _addresses(value: list[str]) -> list[str]:
    for address in value:
        if not _ADDRESS.match(address):
            raise ValueError(f"{address!r} is not an e-mail address like ops@example.com")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Addresses = Annotated[list[str], AfterValidator(_addresses)]


class RateLimit(_Strict):
    """At most ``count`` alerts of one rule per ``per``; the others are kept as SUPPRESSED."""

    count: int = Field(default=20, ge=1, le=100_000)
    per: Duration = 3600.0


class Destination(_Strict):
    """Where a platform rule sends: a webhook (JSON), a Slack-compatible incoming webhook, or e-mail."""

    type: Literal["webhook", "slack", "email"]
    url: HttpUrl | None = None  # webhook and slack; one carrying a token belongs in url_env
    url_env: str | None = Field(default=None, min_length=1)
    # webhook: name of a variable holding a key; each body is then signed (X-Peach-Signature).
    secret_env: str | None = Field(default=None, min_length=1)
    to: Addresses = Field(default_factory=list)  # email

    @model_validator(mode="after")
    def _complete(self) -> "Destination":
        if self.type == "email":
            if not self.to:
                raise ValueError("an email destination needs 'to' (a list of addresses)")
            if self.url or self.url_env:
                raise ValueError("an email destination takes 'to', not 'url'")
        else:
            if (self.url is None) == (self.url_env is None):
                raise ValueError(f"a {self.type} destination needs either 'url' or 'url_env' (the name of an "
                                 "environment variable holding the URL, to keep its token out of this file)")
            if self.to:
                raise ValueError(f"a {self.type} destination takes 'url', not 'to'")
        return self


class Rule(_Strict):
    """One platform rule: which events go to which destination."""

    name: str = Field(pattern=_NAME)
    destination: str = Field(min_length=1)
    events: list[Event] = Field(min_length=1)
    codops: list[str] | None = None  # only these organisations' tasks and problems; None: all
    after: int = Field(default=1, ge=1, le=1000)  # run_failed/run_timed_out: the N-th failure in a row
    rate_limit: RateLimit = Field(default_factory=RateLimit)


class SmtpSettings(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True  # upgrade the connection before anything is sent
    ssl: bool = False  # implicit TLS from the first byte (port 465); excludes starttls
    username: str | None = Field(default=None, min_length=1)
    password_env: str | None = Field(default=None, min_length=1)  # the password stays out of this file
    sender: Annotated[str, AfterValidator(lambda v: _addresses([v])[0])]  # the From address
    # A CA bundle to trust besides the system's (a mail server with an internal certificate).
    ca_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "SmtpSettings":
        if self.ssl and self.starttls:
            raise ValueError("give 'ssl: true' (port 465) or 'starttls: true', not both")
        if self.password_env and not self.username:
            raise ValueError("'password_env' needs 'username'")
        return self


class OrganisationPolicy(_Strict):
    """What organisations' own rules (``alerts:`` in their peach.yaml) may send to. With
    both lists empty, organisations may not add rules."""

    webhook_hosts: list[str] = Field(default_factory=list)  # e.g. hooks.slack.com, *.example.com
    email_domains: list[str] = Field(default_factory=list)  # e.g. example.com
    max_rules: int = Field(default=10, ge=0, le=100)  # per organisation

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_hosts or self.email_domains) and self.max_rules > 0

    def host_allowed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        return bool(host) and any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in self.webhook_hosts)

    def address_allowed(self, address: str) -> bool:
        domain = address.rsplit("@", 1)[-1].lower().rstrip(".")
        return any(domain == d.lower() or domain.endswith("." + d.lower()) for d in self.email_domains)


class DeliverySettings(_Strict):
    max_attempts: int = Field(default=10, ge=1, le=100)
    backoff_seconds: float = Field(default=10.0, gt=0, le=86400)  # before the 2nd attempt; doubles after
    max_backoff_seconds: float = Field(default=3600.0, gt=0, le=7 * 86400)
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)  # one HTTP request or SMTP session
    max_pending: int = Field(default=10_000, ge=1, le=1_000_000)  # beyond: new alerts are DROPPED
    keep_days: float = Field(default=7.0, gt=0, le=366)  # sent, failed, suppressed rows are then removed


class AlertSettings(_Strict):
    destinations: dict[Annotated[str, Field(pattern=_NAME)], Destination] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    smtp: SmtpSettings | None = None
    organisations: OrganisationPolicy = Field(default_factory=OrganisationPolicy)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    check_seconds: float = Field(default=15.0, ge=0.1, le=3600)  # how often staleness is looked at

    @property
    def enabled(self) -> bool:
        return bool(self.rules) or self.organisations.enabled

    @model_validator(mode="after")
    def _consistent(self) -> "AlertSettings":
        names = [rule.name for rule in self.rules]
        for rule in self.rules:
            if names.count(rule.name) > 1:
                raise ValueError(f"two rules are named '{rule.name}'; give each its own name")
            if rule.destination not in self.destinations:
                known = ", ".join(sorted(self.destinations)) or "none defined"
                raise ValueError(f"rule '{rule.name}': destination '{rule.destination}' is not under "
                                 f"alerts.destinations ({known})")
        needs_smtp = any(d.type == "email" for d in self.destinations.values()) or self.organisations.email_domains
        if needs_smtp and self.smtp is None:
            raise ValueError("e-mail alerts need 'alerts.smtp' (host, sender, ...)")
        return self


class OrganisationRule(_Strict):
    """One rule of an organisation, from ``alerts:`` in its peach.yaml: exactly one of
    ``webhook``, ``slack``, ``email``, each checked against the platform's policy."""

    name: str = Field(pattern=_NAME)
    events: list[OrganisationEvent] = Field(min_length=1)
    tasks: list[str] | None = None  # only these tasks; None: all of the organisation's
    after: int = Field(default=1, ge=1, le=1000)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    webhook: HttpUrl | None = None
    slack: HttpUrl | None = None
    email: Addresses | None = None

    @model_validator(mode="after")
    def _one_destination(self) -> "OrganisationRule":
        given = [k for k in ("webhook", "slack", "email") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one destination: 'webhook: URL', 'slack: URL' or 'email: [addresses]'")
        return self

    @property
    def destination(self) -> Destination:
        if self.email:
            return Destination(type="email", to=list(self.email))
        return Destination(type="slack" if self.slack else "webhook", url=self.slack or self.webhook)

    def policy_problem(self, policy: OrganisationPolicy) -> str | None:
        """Why the platform does not allow this rule's destination, or None."""
        if not policy.enabled:
            return ("this scheduler does not allow organisations' own alert rules; ask the platform team "
                    "(alerts.organisations in scheduler.yaml) or remove `alerts`")
        if self.email:
            refused = [a for a in self.email if not policy.address_allowed(a)]
            if refused:
                allowed = ", ".join(policy.email_domains) or "none"
                return (f"alert rule '{self.name}': {', '.join(refused)} not in an allowed mail domain "
                        f"({allowed}); use an address there or ask the platform team")
            return None
        url = self.slack or self.webhook or ""
        if not policy.host_allowed(url):
            allowed = ", ".join(policy.webhook_hosts) or "none"
            return (f"alert rule '{self.name}': host {urlsplit(url).hostname!r} is not an allowed webhook host "
                    f"({allowed}); ask the platform team to allow it")
        return None


@dataclass(frozen=True)
class SourcedRule:
    """An organisation's rule with where it is written (problems point there)."""

    codops: str
    rule: OrganisationRule
    repo: str
    file: str
    line: int | None

    @property
    def key(self) -> str:
        return f"{self.codops}/{self.rule.name}"

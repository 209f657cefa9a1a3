"""``peach-tasks alerts``: the alert outbox (what was sent, what waits, what failed and why).

``cli.py`` adds these commands to the ``peach-tasks`` group, with ``--config``.
"""

from __future__ import annotations

import json

import click

from ..store.alert_outbox import DONE, QUEUED
from .common import as_table, cli_settings, open_store

ALERT_COLUMNS = ["id", "created_at", "event", "codops", "task", "run_id", "rule", "destination", "state",
                 "attempts", "next_attempt_at", "last_error"]
STATES = sorted({*QUEUED, *DONE})


@click.command("alerts")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES, case_sensitive=False),
              help="Only alerts in this state (repeatable).")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of alert objects.")
@click.pass_context
def alerts(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Alerts in the outbox, newest first: their event, rule, state, attempts and last error.

    Each row is one alert for one rule. PENDING and SENDING wait to be delivered (a
    failed attempt is retried with backoff); SENT was delivered; FAILED was given up;
    SUPPRESSED was over its rule's rate limit; DROPPED found the outbox full. The URLs and
    passwords of destinations are never stored here.
    """
    from ..store.alert_outbox import AlertOutbox

    settings = cli_settings(ctx)
    store = open_store(settings, migrate=False)
    try:
        rows = AlertOutbox(store.engine).rows(limit, [s.upper() for s in states])
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no alerts" + ("" if settings.alerts.enabled else " (no rules: see 'alerts' in docs/settings.md)"))
        return
    click.echo(as_table(rows, ALERT_COLUMNS))


@click.command("alert-test")
@click.argument("rule", metavar="RULE")
@click.pass_context
def alert_test(ctx: click.Context, rule: str) -> None:
    """Send a test alert through a rule of scheduler.yaml now, from this machine, and say how it went.

    The alert (event "test") goes straight to the rule's destination with this shell's
    environment (url_env, secret_env, password_env must be set here as for 'serve');
    it is not queued in the outbox and not counted by the rule's rate limit.
    """
    import uuid
    from datetime import datetime, timezone

    from ..observability.alert_render import SCHEMA
    from ..observability.alert_send import DeliveryError, deliver

    settings = cli_settings(ctx)
    found = {r.name: r for r in settings.alerts.rules}
    if rule not in found:
        known = ", ".join(sorted(found)) or "none (see 'alerts' in docs/settings.md)"
        raise click.ClickException(f"no rule '{rule}' in alerts.rules; the rules are: {known}")
    destination = settings.alerts.destinations[found[rule].destination]
    key = uuid.uuid4().hex
    body = {"schema": SCHEMA, "id": key, "event": "test", "rule": f"platform/{rule}",
            "summary": f"a test of rule {rule}: alerts reach this destination",
            "occurred_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "codops": None, "task": None, "url": settings.web.dashboard_url() + "/", "details": {}}
    try:
        deliver(destination, body, smtp=settings.alerts.smtp, timeout=settings.alerts.delivery.timeout_seconds)
    except DeliveryError as exc:
        raise click.ClickException(f"the test alert of rule {rule} was not delivered: {exc}") from None
    click.echo(f"sent a test alert through rule {rule} ({destination.type}), id {key}")


COMMANDS = (alerts, alert_test)

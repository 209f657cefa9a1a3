"""What an alert says: one JSON document (the webhook body, docs/alerts.md has its schema),
and the Slack message and e-mail written from it.

Everything here is bounded: the journal already cut errors and problem messages, and the
text forms cut again, so no alert grows with what a task printed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote

from ..alert_settings import PROBLEM_APPEARED, PROBLEM_CLEARED, REPLICA_DIED, RUN_FAILED, TASK_RECOVERED, TASK_STALE
from ..durations import format_duration
from ..store.alert_outbox import Event

SCHEMA = 1
TEXT_CHARS = 3000  # Slack refuses a section text above 3000 characters


def run_link(dashboard: str, codops: str | None, task: str | None, run_id: int | None) -> str | None:
    """The dashboard showing the run (its organisation, task and log)."""
    if not dashboard or codops is None or task is None:
        return None
    link = f"{dashboard}/#org={quote(codops, safe='')}&task={quote(task, safe='')}"
    return link + (f"&run={run_id}" if run_id is not None else "")


def summary(event: Event) -> str:
    d, name = event.data, f"{event.codops}/{event.task}"
    if event.kind == RUN_FAILED:
        what = "timed out" if d.get("status") == "TIMEOUT" else "failed"
        streak = d.get("failures_in_row", 1)
        return f"{name} {what}" + (f" ({streak} failures in a row)" if streak > 1 else "")
    if event.kind == TASK_RECOVERED:
        return f"{name} recovered: it succeeded again"
    if event.kind == TASK_STALE:
        limit = format_duration(d.get("freshness_s") or 0)
        since = d.get("last_success_at")
        return f"{name} is stale: no success within {limit}" + (f" (last {since})" if since else " (none yet)")
    if event.kind in (PROBLEM_APPEARED, PROBLEM_CLEARED):
        where = f"{d.get('kind')} problem of {d.get('scope')}"
        if event.kind == PROBLEM_CLEARED:
            return f"the {where} is cleared"
        count = d.get("count", 1)
        return f"{count} {where}" if count > 1 else f"a {where}"
    if event.kind == REPLICA_DIED:
        return (f"replica {d.get('replica')} stopped; {d.get('taken_over_by')} took over its loops "
                f"({', '.join(d.get('loops') or [])})")
    return event.kind


def payload(event: Event, rule: str, dashboard: str) -> dict[str, Any]:
    """The alert as JSON (``id``, the idempotency key, is added when it is queued)."""
    body: dict[str, Any] = {
        "schema": SCHEMA, "event": event.kind, "summary": summary(event), "rule": rule,
        "occurred_at": event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "codops": event.codops, "task": event.task,
    }
    if event.run_id is not None:
        body["run"] = {"id": event.run_id, "status": event.data.get("status"), "version": event.data.get("version"),
                       "error": event.data.get("error"), "url": run_link(dashboard, event.codops, event.task,
                                                                       event.run_id)}
    elif event.task is not None:
        body["url"] = run_link(dashboard, event.codops, event.task, None)
    body["details"] = {k: v for k, v in event.data.items() if k not in ("status", "version", "error")}
    return body


def _link(body: dict[str, Any]) -> str | None:
    return (body.get("run") or {}).get("url") or body.get("url")


def text(body: dict[str, Any]) -> str:
    """Plain text of an alert: the summary, the error, the problems, the link."""
    lines = [f"[peach-tasks] {body.get('summary', body.get('event'))}"]
    run = body.get("run") or {}
    if run.get("id") is not None:
        lines.append(f"run {run['id']} · {run.get('status')} · version {run.get('version') or '-'}")
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    for problem in (body.get("details") or {}).get("problems") or []:
        where = problem.get("file") and (f"{problem['file']}:{problem['line']}" if problem.get("line")
                                         else problem["file"])
        lines.append(f"- {where}: {problem['message']}" if where else f"- {problem['message']}")
    link = _link(body)
    if link:
        lines.append(link)
    return "\n".join(lines)[:TEXT_CHARS]


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook message: ``text`` (notifications) and ``blocks``."""
    title = f"[peach-tasks] {body.get('summary', body.get('event'))}"[:150]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    details = text(body).split("\n", 1)[1] if "\n" in text(body) else ""
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": details[:TEXT_CHARS]}})
    link = _link(body)
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in the dashboard"}, "url": link}]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"rule {body.get('rule')} · {body.get('occurred_at')} · id {body.get('id')}"}]})
    return {"text": title, "blocks": blocks}


def email(body: dict[str, Any], sender: str, to: list[str]) -> EmailMessage:
    """An e-mail whose Message-ID comes from the alert's key, so a resend is the same message."""
    message = EmailMessage()
    message["Subject"] = f"[peach-tasks] {body.get('summary', body.get('event'))}"[:200]
    message["From"] = sender
    message["To"] = ", ".join(to)
    domain = sender.rsplit("@", 1)[-1]
    message["Message-ID"] = f"<{body.get('id')}@{domain}>" if body.get("id") else make_msgid(domain=domain)
    message["X-Peach-Alert-Id"] = str(body.get("id"))
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message.set_content(text(body) + f"\n\nrule {body.get('rule')} · alert id {body.get('id')}\n")
    return message

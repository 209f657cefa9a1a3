"""Alerts reach real receivers: an HTTP server (generic webhook, Slack format) and an SMTP
server with STARTTLS and login (aiosmtpd), from real task runs (run-once), on SQLite and
PostgreSQL. The process-level cases (SIGKILL, two replicas) are in test_alerts_processes.py."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alert_receivers import HookReceiver, MailReceiver
from conftest import Repo, py_task, task_yaml, wait_for, write_settings

from peach_tasks.model import Outcome, RunStatus
from peach_tasks.scheduling.alert_dispatcher import AlertDispatcher
from peach_tasks.store.alert_outbox import AlertOutbox
from peach_tasks.store.schema import alert_outbox

GOOD = "def main():\n    print('fine')\n    return 1\n"
BAD = "def main():\n    raise RuntimeError('the source table is gone')\n"
FAST_RETRY = {"backoff_seconds": 0.2, "max_backoff_seconds": 0.5, "timeout_seconds": 5}


@pytest.fixture
def hooks():
    receiver = HookReceiver().start()
    yield receiver
    receiver.stop()


def project(tmp_path: Path, alerts: dict[str, Any], tasks: dict[str, dict] | None = None, notebook: str = BAD,
            **settings: Any) -> tuple[Repo, Path]:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", notebook)
    repo.write("peach.yaml", task_yaml("chrts", tasks or {"report": py_task("nb.ipynb", "main")}))
    repo.commit()
    settings.setdefault("isolation", "none")
    config = write_settings(tmp_path, [{"url": "algos"}], alerts=alerts,
                            web={"public_url": "https://peach.example.com/"}, **settings)
    return repo, config


def rows(store) -> list[Any]:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(alert_outbox).order_by(alert_outbox.c.id)).all()


def dispatcher(scheduler) -> AlertDispatcher:
    return AlertDispatcher(scheduler.settings, scheduler.store, lambda: scheduler.snapshot, scheduler.owner)


def test_webhook_gets_the_documented_json_signed_and_slack_gets_text_and_blocks(
        tmp_path: Path, hooks: HookReceiver, open_scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_SLACK_URL", hooks.url("/services/T000/B000/XXXXSECRETXXXX"))
    monkeypatch.setenv("OPS_HOOK_KEY", "k3y-for-signing")
    _, config = project(tmp_path, {
        "destinations": {"hook": {"type": "webhook", "url": hooks.url("/hook"), "secret_env": "OPS_HOOK_KEY"},
                         "slack": {"type": "slack", "url_env": "OPS_SLACK_URL"}},
        "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed", "task_recovered"]},
                  {"name": "chat", "destination": "slack", "events": ["run_failed"]}]})
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    [run] = store.runs("chrts", "report")
    [hook] = [r for r in hooks.received if r["path"] == "/hook"]
    body = hook["body"]
    assert body["event"] == "run_failed" and body["schema"] == 1 and body["rule"] == "platform/ops"
    assert (body["codops"], body["task"], body["run"]["id"], body["run"]["status"]) == ("chrts", "report",
                                                                                        run["id"], "FAILURE")
    assert "the source table is gone" in body["run"]["error"]
    assert body["run"]["url"] == f"https://peach.example.com/#org=chrts&task=report&run={run['id']}"
    assert body["summary"] == "chrts/report failed" and body["occurred_at"].endswith("Z")
    assert hook["headers"]["Idempotency-Key"] == body["id"] == hook["headers"]["X-Peach-Alert-Id"]
    expected = hmac.new(b"k3y-for-signing", hook["raw"], hashlib.sha256).hexdigest()
    assert hook["headers"]["X-Peach-Signature"] == f"sha256={expected}"

    [slack] = [r for r in hooks.received if r["path"].startswith("/services/")]
    message = slack["body"]
    assert message["text"] == "[peach-tasks] chrts/report failed"
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds[0] == "header" and "actions" in kinds and "context" in kinds
    button = next(b for b in message["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["url"] == body["run"]["url"]
    # The Slack URL's token lives in the environment only: not in the outbox, nor its errors.
    dump = json.dumps([dict(r._mapping) for r in rows(store)], default=str)
    assert "XXXXSECRETXXXX" not in dump and "k3y-for-signing" not in dump
    assert {r.state for r in rows(store)} == {"SENT"} and len(rows(store)) == 2
    from fastapi.testclient import TestClient

    from peach_tasks.web.access import AccessPolicy, Scope
    from peach_tasks.web.app import create_app

    app = TestClient(create_app(store))
    wait_for(lambda: 'peach_tasks_alerts{state="SENT"} 2.0' in app.get("/metrics").text, 30, "the alert gauge")
    assert 'peach_tasks_alerts{state="FAILED"} 0.0' in app.get("/metrics").text
    limited = TestClient(create_app(store, AccessPolicy({"chrts-token-0123456789": Scope(frozenset(["chrts"]))})))
    shown = limited.get("/metrics", headers={"Authorization": "Bearer chrts-token-0123456789"})
    assert shown.status_code == 200 and "peach_tasks_alerts" not in shown.text  # the platform's, not an organisation's


def test_one_alert_per_state_change_after_n_failures_and_the_recovery(
        tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    repo, config = project(tmp_path, {
        "destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
        "rules": [{"name": "third", "destination": "hook", "events": ["run_failed", "task_recovered"], "after": 3},
                  {"name": "timeouts", "destination": "hook", "events": ["run_timed_out"]}]})
    scheduler, store = open_scheduler(config)
    for _ in range(5):
        scheduler.run_once()
    assert [b["details"]["failures_in_row"] for b in hooks.bodies()] == [3]  # not 1, 2, 4, 5
    from peach_tasks.store.schema import alert_events

    with store.engine.connect() as conn:  # the failures no rule wanted are not kept
        kept = conn.execute(sa.select(alert_events.c.data)).scalars().all()
    assert [json.loads(data)["failures_in_row"] for data in kept] == [3]
    assert hooks.bodies()[0]["summary"] == "chrts/report failed (3 failures in a row)"
    assert all(b["rule"] == "platform/third" for b in hooks.bodies())  # no timeout: that rule is silent
    repo.notebook("nb.ipynb", GOOD)
    repo.commit("fix")
    scheduler.run_once()
    scheduler.run_once()  # a second success is no change of state
    events = [(b["event"], b["rule"]) for b in hooks.bodies()]
    assert events == [("run_failed", "platform/third"), ("task_recovered", "platform/third")]
    recovered = hooks.bodies()[1]
    assert recovered["details"]["failures_before"] == 5 and recovered["run"]["status"] == "SUCCESS"


def test_a_flapping_task_is_rate_limited_per_rule(tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    repo, config = project(tmp_path, {
        "destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
        "rules": [{"name": "flap", "destination": "hook", "events": ["run_failed", "task_recovered"],
                   "rate_limit": {"count": 3, "per": "1h"}}]})
    scheduler, store = open_scheduler(config)
    for index in range(6):  # fail, recover, fail, recover, ...: six changes of state
        repo.notebook("nb.ipynb", GOOD if index % 2 else BAD)
        repo.commit(f"flap {index}")
        scheduler.run_once()
    assert [b["event"] for b in hooks.bodies()] == ["run_failed", "task_recovered", "run_failed"]
    states = [r.state for r in rows(store)]
    assert states == ["SENT"] * 3 + ["SUPPRESSED"] * 3
    assert "rate limit" in rows(store)[-1].last_error


def test_a_receiver_that_is_down_gets_the_alert_later_once(tmp_path: Path, open_scheduler) -> None:
    receiver = HookReceiver()  # not started: its port refuses connections
    _, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": receiver.url()}},
                                   "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]}],
                                   "delivery": FAST_RETRY})
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    [row] = rows(store)
    assert (row.state, row.attempts) == ("PENDING", 1) and "Connection refused" in row.last_error
    job = dispatcher(scheduler)
    try:
        wait_for(lambda: job.round() and rows(store)[0].attempts >= 3, 30, "more attempts while the receiver is down")
        assert rows(store)[0].state == "PENDING"
        receiver.start()
        wait_for(lambda: job.round() and rows(store)[0].state == "SENT", 30, "the delivery once the receiver is up")
        for _ in range(3):
            job.round()
    finally:
        job.stop()
        receiver.stop()
    assert len(receiver.bodies()) == 1 and receiver.bodies()[0]["id"] == row.key


def test_a_refusing_receiver_is_given_up_at_once_and_a_busy_one_after_max_attempts(
        tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    _, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
                                   "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]}],
                                   "delivery": {**FAST_RETRY, "max_attempts": 3}},
                        tasks={"a": py_task("nb.ipynb", "main"), "b": py_task("nb.ipynb", "main")})
    hooks.status = 404  # e.g. a Slack webhook that was deleted: retrying cannot help
    scheduler, store = open_scheduler(config)
    scheduler.run_once(loops=["chrts"])
    assert [(r.state, r.attempts) for r in rows(store)] == [("FAILED", 1), ("FAILED", 1)]
    assert "HTTP 404" in rows(store)[0].last_error and "/hook" not in rows(store)[0].last_error
    hooks.status = 503
    spec = scheduler.snapshot.tasks[("chrts", "a")].spec
    for status in (RunStatus.SUCCESS, RunStatus.FAILURE):  # a new fall: one more alert
        store.finish_run(store.start_run(spec, "v", "c", "x"), Outcome(status))
    job = dispatcher(scheduler)
    try:
        wait_for(lambda: job.round() is not None and rows(store)[-1].state == "FAILED", 30, "giving up")
    finally:
        job.stop()
    assert rows(store)[-1].attempts == 3 and "HTTP 503" in rows(store)[-1].last_error


def test_email_over_starttls_with_login(tmp_path: Path, open_scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    mail = MailReceiver(tmp_path).start()
    monkeypatch.setenv("PEACH_SMTP_PASSWORD", "s3cret-pw")
    try:
        _, config = project(tmp_path, {
            "smtp": {"host": "127.0.0.1", "port": mail.port, "starttls": True, "username": "peach",
                     "password_env": "PEACH_SMTP_PASSWORD", "sender": "peach@example.com",
                     "ca_file": str(mail.cert)},
            "destinations": {"ops": {"type": "email", "to": ["ops@example.com", "oncall@example.com"]}},
            "rules": [{"name": "mail", "destination": "ops", "events": ["run_failed"]}]})
        scheduler, store = open_scheduler(config)
        scheduler.run_once()
        [row] = rows(store)
        assert row.state == "SENT", row.last_error
        [message] = mail.messages
        assert mail.logins == ["peach"]
        assert message["Subject"] == "[peach-tasks] chrts/report failed"
        assert message["To"] == "ops@example.com, oncall@example.com" and message["From"] == "peach@example.com"
        assert message["Message-ID"] == f"<{row.key}@example.com>" and message["X-Peach-Alert-Id"] == row.key
        text = message.get_payload(decode=True).decode()
        assert "the source table is gone" in text and "https://peach.example.com/#org=chrts&task=report" in text
    finally:
        mail.stop()


def test_email_with_a_wrong_password_is_retried_not_lost(tmp_path: Path, open_scheduler,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mail = MailReceiver(tmp_path).start()
    monkeypatch.setenv("PEACH_SMTP_PASSWORD", "wrong")
    try:
        _, config = project(tmp_path, {
            "smtp": {"host": "127.0.0.1", "port": mail.port, "username": "peach",
                     "password_env": "PEACH_SMTP_PASSWORD", "sender": "peach@example.com", "ca_file": str(mail.cert)},
            "destinations": {"ops": {"type": "email", "to": ["ops@example.com"]}},
            "rules": [{"name": "mail", "destination": "ops", "events": ["run_failed"]}]})
        scheduler, store = open_scheduler(config)
        scheduler.run_once()
        [row] = rows(store)
        assert row.state == "PENDING" and "SMTPAuthenticationError" in row.last_error and not mail.messages
        assert "wrong" not in row.last_error
    finally:
        mail.stop()


def test_stale_by_a_failing_commit_then_recovered_alerts(tmp_path: Path, hooks: HookReceiver,
                                                         open_scheduler) -> None:
    repo, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
                                      "rules": [{"name": "fresh", "destination": "hook",
                                                 "events": ["task_stale", "task_recovered"]}],
                                      "check_seconds": 0.1},
                           tasks={"report": py_task("nb.ipynb", "main", freshness="2s")}, notebook=GOOD)
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    repo.notebook("nb.ipynb", BAD)
    repo.commit("break the source")
    scheduler.run_once()
    assert hooks.bodies() == []  # a failure is no alert for this rule, and the task is fresh yet
    job = dispatcher(scheduler)
    try:
        wait_for(lambda: job.round() and hooks.bodies(), 30, "the stale alert")
        for _ in range(3):
            job.round()  # still stale: no second alert
    finally:
        job.stop()
    [stale] = hooks.bodies()
    assert stale["event"] == "task_stale" and stale["details"]["freshness_s"] == 2.0
    assert stale["summary"].startswith("chrts/report is stale: no success within 2s")
    assert stale["run"]["status"] is None or stale["run"]["id"] == store.tasks(["chrts"])[0]["last_success_run_id"]
    repo.notebook("nb.ipynb", GOOD)
    repo.commit("fix")
    scheduler.run_once()
    recovered = hooks.bodies()[-1]
    assert recovered["event"] == "task_recovered" and recovered["details"]["was_stale"] is True
    assert len(hooks.bodies()) == 2


def test_problems_appear_and_clear_once(tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    repo, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
                                      "rules": [{"name": "config", "destination": "hook",
                                                 "events": ["problem_appeared", "problem_cleared"]}]}, notebook=GOOD)
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    repo.write("peach.conf/broken.yaml", "codops: chrts\ntasks:\n  x:\n    notebook: missing.ipynb\n    method: m\n")
    repo.commit("a mistake")
    scheduler.run_once()
    scheduler.run_once()  # the same problem again: no second alert
    repo.write("peach.conf/broken.yaml", "codops: chrts\n")
    repo.commit("fixed")
    scheduler.run_once()
    bodies = hooks.bodies()
    assert [b["event"] for b in bodies] == ["problem_appeared", "problem_cleared"]
    problem = bodies[0]["details"]["problems"][0]
    assert problem["file"] == "peach.conf/broken.yaml" and problem["line"] == 4 and "missing.ipynb" in problem["message"]


def test_organisation_rules_hear_only_their_own_tasks_and_allowed_destinations(
        tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", BAD)
    repo.write("peach.yaml", yaml.safe_dump({
        "codops": "chrts", "tasks": {"report": py_task("nb.ipynb", "main"), "other": py_task("nb.ipynb", "main")},
        "alerts": [{"name": "team", "events": ["run_failed"], "tasks": ["report", "typo"], "webhook": hooks.url("/chrts")},
                   {"name": "sneaky", "events": ["run_failed"], "webhook": "https://evil.example.net/x"}]}))
    repo.write("peach.conf/sesr.yaml", task_yaml("sesr", {"job": py_task("nb.ipynb", "main")}))
    repo.commit()
    config = write_settings(tmp_path, [{"url": "algos"}], isolation="none",
                            alerts={"organisations": {"webhook_hosts": ["127.0.0.1"]}})
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    bodies = hooks.bodies("/chrts")
    assert [(b["codops"], b["task"], b["rule"]) for b in bodies] == [("chrts", "report", "chrts/team")]
    messages = [p["message"] for p in store.problems()]
    lines = (repo.path / "peach.yaml").read_text().splitlines()
    sneaky = next(p for p in store.problems() if "sneaky" in p["message"])
    assert "evil.example.net" in sneaky["message"] and "not an allowed webhook host" in sneaky["message"]
    assert sneaky["file"] == "peach.yaml" and lines[sneaky["line"] - 1].startswith("- ")  # the rule's entry
    assert "name: sneaky" in "\n".join(lines[sneaky["line"] - 1:sneaky["line"] + 3])
    assert any("names tasks chrts does not define: typo" in m for m in messages)
    assert not any(r.rule == "chrts/sneaky" for r in rows(store))


def test_organisation_rules_are_refused_when_the_platform_allows_none(tmp_path: Path, open_scheduler) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", BAD)
    repo.write("peach.yaml", yaml.safe_dump({
        "codops": "chrts", "tasks": {"report": py_task("nb.ipynb", "main")},
        "alerts": [{"name": "team", "events": ["run_failed", "replica_died"], "webhook": "https://h.example/x"},
                   {"name": "both", "events": ["run_failed"], "webhook": "https://h.example/x", "email": ["a@b.example"]}]}))
    repo.commit()
    config = write_settings(tmp_path, [{"url": "algos"}], isolation="none")
    scheduler, store = open_scheduler(config)
    scheduler.sync()
    messages = " | ".join(p["message"] for p in store.problems())
    assert "replica_died" in messages  # not an event an organisation may ask for
    assert "exactly one destination" in messages


def test_the_outbox_is_bounded_and_pruned(tmp_path: Path, database_url: str) -> None:
    """Beyond max_pending, new alerts are DROPPED (and said so); finished rows go after keep_days."""
    from datetime import datetime, timedelta, timezone

    from peach_tasks.store import Store
    from peach_tasks.store.alert_outbox import Delivery
    from peach_tasks.store.schema import alert_events

    store = Store.open(database_url)
    try:
        outbox = AlertOutbox(store.engine)
        now = datetime.now(timezone.utc)
        with store.engine.begin() as conn:
            conn.execute(alert_events.insert(), [dict(kind="run_failed", data="{}", created_at=now)
                                                 for _ in range(5)])
        match = lambda event: [Delivery("platform/x", "webhook", {"event": event.kind}, 100, 3600)]  # noqa: E731
        assert outbox.route(match, max_pending=3) == 5
        assert [r["state"] for r in reversed(outbox.rows())] == ["PENDING"] * 3 + ["DROPPED"] * 2
        assert outbox.route(match, max_pending=3) == 0  # routed once only
        claimed = outbox.claim("me", 60, limit=10)
        assert len(claimed) == 3 and outbox.claim("other", 60, limit=10) == []
        for row in claimed:
            outbox.sent(row.id, "me")
        with store.engine.begin() as conn:
            conn.execute(alert_outbox.update().values(created_at=now - timedelta(days=8)))
            conn.execute(alert_events.update().values(routed_at=now - timedelta(days=8)))
        assert outbox.prune(7 * 86400) == 10
        assert outbox.rows() == []
    finally:
        store.close()


def test_an_attempt_that_is_retried_is_no_failure_yet(tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    """With `retries`, the task fails when its last attempt does: one alert, for that run."""
    _, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
                                   "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]}]},
                        tasks={"report": py_task("nb.ipynb", "main", retries=1, retry_delay="0.1s")})
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    first, last = sorted(store.runs("chrts", "report"), key=lambda r: r["id"])
    assert (first["status"], last["status"]) == ("FAILURE", "FAILURE")
    [alert] = hooks.bodies()
    assert alert["run"]["id"] == last["id"] and alert["details"]["failures_in_row"] == 1
    assert store.tasks(["chrts"])[0]["failures_in_row"] == 1


def test_conditions_change_state_once_on_both_databases(database_url: str) -> None:
    """A problem appears once and clears once, and a dead replica is announced once, however
    often it is reported: the journal writes an event only for the change itself."""
    from datetime import datetime, timezone

    from peach_tasks.errors import Problem
    from peach_tasks.store import Store
    from peach_tasks.store.leases import LeaseStore
    from peach_tasks.store.schema import alert_events

    store = Store.open(database_url)
    store.alerting = True
    try:
        broken = [Problem("config", "algos", "bad", "peach.yaml", 3)]
        for found in (broken, broken, [], [], broken):
            store.set_problems("config", "algos", found)
        LeaseStore(store.engine).heartbeat("r1", "host", 1, datetime.now(timezone.utc))
        assert store.record_replica_died("r1", "r2", ["org1"]) is True
        assert store.record_replica_died("r1", "r3", ["org2"]) is False
        with store.engine.connect() as conn:
            kinds = [r.kind for r in conn.execute(sa.select(alert_events).order_by(alert_events.c.id))]
        assert kinds == ["problem_appeared", "problem_cleared", "problem_appeared", "replica_died"]
    finally:
        store.close()


def test_a_claim_that_expires_is_sent_again_with_the_same_key_and_the_late_mark_is_refused(
        database_url: str) -> None:
    """At least once: a replica that dies mid-send leaves its row SENDING; once the claim
    expires another replica takes it, with the same key, and the dead one's late SENT mark
    (had it only stalled) changes nothing."""
    from datetime import datetime, timezone

    from peach_tasks.store import Store
    from peach_tasks.store.alert_outbox import Delivery
    from peach_tasks.store.schema import alert_events

    store = Store.open(database_url)
    try:
        outbox = AlertOutbox(store.engine)
        with store.engine.begin() as conn:
            conn.execute(alert_events.insert().values(kind="run_failed", data="{}",
                                                      created_at=datetime.now(timezone.utc)))
        outbox.route(lambda e: [Delivery("platform/x", "webhook", {"event": e.kind}, 10, 3600)], 100)
        [first] = outbox.claim("stalled", claim_seconds=0.3)
        assert outbox.claim("other", claim_seconds=60) == []  # claimed: nobody else sends it
        [again] = wait_for(lambda: outbox.claim("other", claim_seconds=60), 10, "the claim to expire")
        assert (again.id, again.key, again.attempts) == (first.id, first.key, 2)
        assert outbox.sent(first.id, "stalled") is False  # no longer its claim
        assert outbox.sent(again.id, "other") is True
        assert outbox.rows()[0]["state"] == "SENT"
        # A restarted replica gives its own SENDING rows back at once (its state_dir lock proves
        # the old process gone), without waiting for the claim to expire.
        with store.engine.begin() as conn:
            conn.execute(alert_events.insert().values(kind="run_failed", data="{}",
                                                      created_at=datetime.now(timezone.utc)))
        outbox.route(lambda e: [Delivery("platform/x", "webhook", {"event": e.kind}, 10, 3600)], 100)
        [mine] = outbox.claim("me", claim_seconds=3600)
        assert outbox.release_own("me") == 1
        assert [c.key for c in outbox.claim("me", claim_seconds=60)] == [mine.key]
    finally:
        store.close()


def test_a_receiver_that_never_answers_costs_one_timeout_and_the_alert_waits(tmp_path: Path, open_scheduler) -> None:
    import socket

    silent = socket.socket()  # accepts connections (the backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        _, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": url}},
                                       "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]}],
                                       "delivery": {"timeout_seconds": 0.5, "backoff_seconds": 60}})
        scheduler, store = open_scheduler(config)
        scheduler.run_once()
        [row] = rows(store)
        assert row.state == "PENDING" and row.attempts == 1 and "timed out" in row.last_error
    finally:
        silent.close()


def test_a_huge_error_makes_a_bounded_alert(tmp_path: Path, hooks: HookReceiver, open_scheduler) -> None:
    huge = "def main():\n    raise RuntimeError('x' * 5_000_000)\n"
    _, config = project(tmp_path, {"destinations": {"hook": {"type": "webhook", "url": hooks.url()}},
                                   "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]}]},
                        notebook=huge)
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    [hook] = hooks.received
    assert len(hook["raw"]) < 8 << 10 and len(hook["body"]["run"]["error"]) <= 2000
    assert hook["body"]["run"]["error"].endswith("more]")


def test_the_cli_lists_the_outbox_and_sends_a_test_alert(tmp_path: Path, hooks: HookReceiver,
                                                         open_scheduler) -> None:
    import os
    import subprocess
    import sys

    secret = hooks.url("/services/T0/B0/TOKEN-IN-PATH")
    _, config = project(tmp_path, {"destinations": {"hook": {"type": "slack", "url_env": "OPS_SLACK"},
                                                    "gone": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
                                   "rules": [{"name": "ops", "destination": "hook", "events": ["run_failed"]},
                                             {"name": "down", "destination": "gone", "events": ["task_stale"]}]})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PEACH_TASKS")}, "OPS_SLACK": secret}
    peach = [sys.executable, "-m", "peach_tasks.cli", "--config", str(config)]
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    listed = subprocess.run(peach + ["alerts", "--json"], capture_output=True, text=True, env=env, timeout=60)
    [row] = json.loads(listed.stdout)
    assert (row["event"], row["rule"], row["state"], row["codops"], row["task"]) == (
        "run_failed", "platform/ops", "PENDING", "chrts", "report")  # run-once had no OPS_SLACK
    assert "OPS_SLACK" in row["last_error"] and "TOKEN-IN-PATH" not in listed.stdout
    table = subprocess.run(peach + ["alerts", "--state", "sent"], capture_output=True, text=True, env=env, timeout=60)
    assert table.returncode == 0 and table.stdout.strip() == "no alerts"

    sent = subprocess.run(peach + ["alert-test", "ops"], capture_output=True, text=True, env=env, timeout=60)
    assert sent.returncode == 0, sent.stderr
    [test] = hooks.bodies()
    assert test["text"].startswith("[peach-tasks] a test of rule ops") and test["blocks"]
    down = subprocess.run(peach + ["alert-test", "down"], capture_output=True, text=True, env=env, timeout=60)
    assert down.returncode == 1 and "was not delivered" in down.stderr and "Traceback" not in down.stderr
    unknown = subprocess.run(peach + ["alert-test", "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert unknown.returncode == 1 and "the rules are: down, ops" in unknown.stderr


def test_validate_applies_the_platform_policy_when_given_its_settings(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", GOOD)
    repo.write("peach.yaml", yaml.safe_dump({
        "codops": "chrts", "tasks": {"report": py_task("nb.ipynb", "main")},
        "alerts": [{"name": "ok", "events": ["run_failed"], "webhook": "https://hooks.example.com/x"},
                   {"name": "far", "events": ["run_failed"], "webhook": "https://elsewhere.example.net/x"}]},
        sort_keys=False))
    repo.commit()
    config = write_settings(tmp_path, [{"url": "algos"}],
                            alerts={"organisations": {"webhook_hosts": ["*.example.com"]}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEACH_TASKS")}
    peach = [sys.executable, "-m", "peach_tasks.cli"]
    alone = subprocess.run(peach + ["validate", str(repo.path)], capture_output=True, text=True, env=env, timeout=120)
    assert alone.returncode == 0, alone.stdout + alone.stderr  # an author without the platform's file
    checked = subprocess.run(peach + ["--config", str(config), "validate", str(repo.path)], capture_output=True,
                             text=True, env=env, timeout=120)
    assert checked.returncode == 1
    [line] = [line for line in checked.stdout.splitlines() if "far" in line]
    lines = (repo.path / "peach.yaml").read_text().splitlines()
    number = int(line.split(":")[1])
    assert lines[number - 1] == "- name: far" and "'elsewhere.example.net' is not an allowed webhook host" in line

"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/`` create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per task ever seen; ``active`` is false once its definition is gone
# (its history stays).
tasks = sa.Table(
    "tasks", metadata,
    sa.Column("codops", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("loop", sa.String(64), nullable=False),
    sa.Column("executor", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("repo", sa.String(200), nullable=False),
    sa.Column("notebook", sa.Text, nullable=False),
    sa.Column("source_file", sa.Text, nullable=False),
    sa.Column("source_line", sa.Integer),
    sa.Column("version", sa.String(64)),
    sa.Column("last_run_id", sa.Integer),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # 0008: state kept up to date for freshness and alerts (written with each run's end)
    sa.Column("first_seen_at", sa.DateTime(timezone=True)),  # when the task was first defined
    sa.Column("freshness_s", sa.Float),  # its effective freshness; NULL: none
    sa.Column("last_success_at", sa.DateTime(timezone=True)),
    sa.Column("last_success_run_id", sa.Integer),
    sa.Column("failures_in_row", sa.Integer, nullable=False, server_default="0"),  # since the last success
    sa.Column("stale_since", sa.DateTime(timezone=True)),  # set (once) when announced stale
    # 0011: the named Python environment the task runs in (its py_env, else 'base')
    sa.Column("environment", sa.String(64), nullable=False, server_default="base"),
    # 0012: what the dashboard's task details show (as the definition declares them)
    sa.Column("method", sa.String(200)),
    sa.Column("full_notebook", sa.Boolean),
    sa.Column("timeout_s", sa.Float),
    sa.Column("dependencies", sa.Text),  # JSON list
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("codops", sa.String(64), nullable=False),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("loop", sa.String(64), nullable=False),
    sa.Column("executor", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64)),
    sa.Column("commit", sa.String(64)),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("duration_s", sa.Float),
    sa.Column("exit_code", sa.Integer),
    sa.Column("signal", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("result", sa.Text),  # JSON
    sa.Column("details", sa.Text),  # JSON: traceback, leftovers, executor facts
    sa.Column("owner", sa.String(200)),  # which scheduler process ran it
    # 0003: set when a trigger asked for this run (who asked, and the payload passed as JSON)
    sa.Column("trigger_id", sa.Integer),
    sa.Column("triggered_by", sa.String(300)),
    sa.Column("payload", sa.Text),
    # 0005: what the run's processes used (its cgroup's peak memory and CPU time); NULL: not measured
    sa.Column("peak_memory_bytes", sa.BigInteger),
    sa.Column("cpu_seconds", sa.Float),
    # 0007: the attempt within its iteration (1: the first run; 2, 3...: retries of a FAILURE
    # or TIMEOUT) and, for a retry, the id of the first attempt
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("retry_of", sa.Integer),
    # 0013: when retention removed this run's log and outputs (one line says so instead)
    sa.Column("log_pruned_at", sa.DateTime(timezone=True)),
    sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("log_dropped_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_runs_task", "codops", "task", "id"),
    sa.Index("ix_runs_status", "status"),
    sa.Index("ix_runs_stats", "codops", "task", "status", "finished_at", "duration_s"),  # 0002
)

# A run's log in chunks: 'h' chunks are the kept head, 't' chunks the rolling tail.
log_chunks = sa.Table(
    "log_chunks", metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("part", sa.String(1), nullable=False),
    sa.Column("nbytes", sa.Integer, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)

# 0009: what a run showed (display(), matplotlib figures), bounded by the scheduler before it
# gets here (executors/run_outputs.py); kind "note" says what was not kept.
run_outputs = sa.Table(
    "run_outputs", metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("mime_type", sa.String(100), nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("text", sa.Text),  # its text/plain, cut short; NULL: none
)

problems = sa.Table(
    "problems", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(200), nullable=False),
    sa.Column("codops", sa.String(64)),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("line", sa.Integer),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_problems_scope", "kind", "scope"),
)

# 0003: runs asked for by `peach-tasks trigger`, the API or trigger_task() in task code.
# PENDING until a loop claims one (RUNNING), then DONE; DROPPED when its task is gone.
triggers = sa.Table(
    "triggers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Makes retries idempotent. 0006: unique within an organisation (it was global, so one
    # organisation's id answered with another's trigger).
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("codops", sa.String(64), nullable=False),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("payload", sa.Text),  # JSON; NULL: no payload
    sa.Column("requested_by", sa.String(300), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_id", sa.Integer),
    sa.Column("note", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_triggers_state", "state", "id"),
    sa.UniqueConstraint("codops", "request_id", name="uq_triggers_codops_request_id"),
)

# 0010: finished runs per (codops, task, status), added in each run's final-status transaction
# (store/totals.py): /metrics and the task list read these, not the runs, and pruning old runs
# leaves them alone. Durations are counted per bucket (seconds; changing the bounds needs a
# migration). ``seq`` marks each change, for readers that read only what changed.
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
BUCKET_COLUMNS = tuple(f"b{i}" for i in range(len(DURATION_BUCKETS) + 1))  # the last: above every bound
TOTALS_SEQUENCE = "run_totals_seq"  # PostgreSQL; SQLite numbers the changes itself
run_totals = sa.Table(
    "run_totals", metadata,
    sa.Column("codops", sa.String(64), primary_key=True),
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("runs", sa.BigInteger, nullable=False),
    sa.Column("timed", sa.BigInteger, nullable=False),
    sa.Column("duration_sum", sa.Float, nullable=False),
    *[sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in BUCKET_COLUMNS],
    sa.Column("last_finished_at", sa.DateTime(timezone=True)),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index("ix_run_totals_seq", "seq"),
)

# 0004: scheduler replicas sharing one database, and the lease each loop is run under.
replicas = sa.Table(
    "replicas", metadata,
    sa.Column("id", sa.String(200), primary_key=True),  # host:state-dir hash, stable across restarts
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stopped_at", sa.DateTime(timezone=True)),
)

loop_leases = sa.Table(
    "loop_leases", metadata,
    sa.Column("loop", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(200)),  # NULL: free
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True)),
)

# 0008: alerts. A journal of state changes (written in the transaction of the change),
# routed by a replica's alert job into one outbox row per (event, rule), each delivered
# by whichever replica claims it (docs/alerts.md).
alert_events = sa.Table(
    "alert_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("codops", sa.String(64)),
    sa.Column("task", sa.String(200)),
    sa.Column("run_id", sa.Integer),
    sa.Column("data", sa.Text, nullable=False),  # JSON, bounded
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("routed_at", sa.DateTime(timezone=True)),  # NULL: not yet matched to rules
    sa.Index("ix_alert_events_routed", "routed_at", "id"),
)

alert_outbox = sa.Table(
    "alert_outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),  # idempotency key sent with the alert
    sa.Column("event_id", sa.Integer, nullable=False),
    sa.Column("rule", sa.String(140), nullable=False),  # "platform/<rule>" or "<codops>/<rule>"
    sa.Column("destination", sa.String(16), nullable=False),  # webhook, slack, email
    sa.Column("body", sa.Text, nullable=False),  # the alert as JSON (no secret: URLs are resolved when sent)
    sa.Column("state", sa.String(16), nullable=False),  # PENDING SENDING SENT FAILED SUPPRESSED DROPPED
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Index("ix_alert_outbox_due", "state", "next_attempt_at"),
    sa.Index("ix_alert_outbox_rule", "rule", "created_at"),
)

alert_conditions = sa.Table(
    "alert_conditions", metadata,
    sa.Column("key", sa.String(400), primary_key=True),  # "problem/<kind>/<scope>", "replica/<id>/<start>"
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
)

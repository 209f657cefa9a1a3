"""Freshness and alerts: per-task state kept up to date, the alert journal and outbox.

``tasks`` learns when each task was first defined, its freshness, its last success and
how many runs failed in a row since; ``alert_events`` is the journal of state changes
(written in the same transaction as the change), ``alert_outbox`` the deliveries (one per
event and rule), ``alert_conditions`` the open conditions (a problem, a dead replica)
whose change of state is announced once.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("first_seen_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("freshness_s", sa.Float))
        batch.add_column(sa.Column("last_success_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("last_success_run_id", sa.Integer))
        batch.add_column(sa.Column("failures_in_row", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("stale_since", sa.DateTime(timezone=True)))
    # What the runs already say: the index ix_runs_stats answers each subquery.
    runs = sa.table("runs", sa.column("id"), sa.column("codops"), sa.column("task"), sa.column("status"),
                    sa.column("started_at"), sa.column("finished_at"))
    tasks = sa.table("tasks", sa.column("codops"), sa.column("name"), sa.column("updated_at"),
                     sa.column("first_seen_at"), sa.column("last_success_at"), sa.column("last_success_run_id"),
                     sa.column("failures_in_row"))
    own = sa.and_(runs.c.codops == tasks.c.codops, runs.c.task == tasks.c.name)
    success = sa.and_(own, runs.c.status == "SUCCESS")
    ok = runs.alias("ok")  # its own name: nested in the count below, it must not borrow that query's runs
    last_ok = (sa.select(sa.func.max(ok.c.id)).where(ok.c.codops == tasks.c.codops, ok.c.task == tasks.c.name,
                                                     ok.c.status == "SUCCESS").correlate(tasks).scalar_subquery())
    op.execute(tasks.update().values(
        first_seen_at=sa.func.coalesce(sa.select(sa.func.min(runs.c.started_at)).where(own).scalar_subquery(),
                                       tasks.c.updated_at),
        last_success_at=sa.select(sa.func.max(runs.c.finished_at)).where(success).scalar_subquery(),
        last_success_run_id=last_ok,
        failures_in_row=sa.select(sa.func.count()).select_from(runs).where(
            own, runs.c.status.in_(["FAILURE", "TIMEOUT"]), runs.c.id > sa.func.coalesce(last_ok, 0))
        .correlate(tasks).scalar_subquery(),
    ))
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("codops", sa.String(64)),
        sa.Column("task", sa.String(200)),
        sa.Column("run_id", sa.Integer),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("routed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_alert_events_routed", "alert_events", ["routed_at", "id"])
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("event_id", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(140), nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_alert_outbox_due", "alert_outbox", ["state", "next_attempt_at"])
    op.create_index("ix_alert_outbox_rule", "alert_outbox", ["rule", "created_at"])
    op.create_table(
        "alert_conditions",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_conditions")
    op.drop_table("alert_outbox")
    op.drop_table("alert_events")
    with op.batch_alter_table("tasks") as batch:
        for column in ("stale_since", "failures_in_row", "last_success_run_id", "last_success_at", "freshness_s",
                       "first_seen_at"):
            batch.drop_column(column)

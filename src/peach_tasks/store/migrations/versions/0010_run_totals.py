"""Run totals: finished runs per (codops, task, status), kept in each run's final transaction.

Revision ID: 0010
Revises: 0009

The history so far is summed once here, so the totals start equal to the runs.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# As of this revision (a later change of the bounds needs its own migration).
BOUNDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
BUCKETS = [f"b{i}" for i in range(len(BOUNDS) + 1)]
SEQUENCE = "run_totals_seq"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(sa.schema.CreateSequence(sa.Sequence(SEQUENCE)))
    op.create_table(
        "run_totals",
        sa.Column("codops", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("runs", sa.BigInteger, nullable=False),
        sa.Column("timed", sa.BigInteger, nullable=False),
        sa.Column("duration_sum", sa.Float, nullable=False),
        *[sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in BUCKETS],
        sa.Column("last_finished_at", sa.DateTime(timezone=True)),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_run_totals_seq", "run_totals", ["seq"])
    runs = sa.table("runs", *[sa.column(c) for c in ("codops", "task", "status", "duration_s", "finished_at")])
    d = runs.c.duration_s
    edges = [None, *BOUNDS, None]
    counts = []
    for i, name in enumerate(BUCKETS):
        low, high = edges[i], edges[i + 1]
        inside = sa.and_(*([d > low] if low is not None else []), *([d <= high] if high is not None else []))
        counts.append(sa.func.sum(sa.case((inside, 1), else_=0)).label(name))
    summed = (sa.select(runs.c.codops, runs.c.task, runs.c.status, sa.func.count().label("runs"),
                        sa.func.count(d).label("timed"), sa.func.coalesce(sa.func.sum(d), 0.0).label("duration_sum"),
                        *counts, sa.func.max(runs.c.finished_at).label("last_finished_at"),
                        sa.func.row_number().over(order_by=(runs.c.codops, runs.c.task, runs.c.status)).label("seq"))
              .where(runs.c.status != "RUNNING").group_by(runs.c.codops, runs.c.task, runs.c.status))
    totals = sa.table("run_totals", *[sa.column(c) for c in ("codops", "task", "status", "runs", "timed",
                                                              "duration_sum", *BUCKETS, "last_finished_at", "seq")])
    op.execute(totals.insert().from_select(list(totals.c.keys()), summed))
    if postgres:  # the next change gets a number above every row's
        op.execute(f"SELECT setval('{SEQUENCE}', (SELECT coalesce(max(seq), 0) + 1 FROM run_totals), false)")


def downgrade() -> None:
    op.drop_index("ix_run_totals_seq", table_name="run_totals")
    op.drop_table("run_totals")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.DropSequence(sa.Sequence(SEQUENCE)))

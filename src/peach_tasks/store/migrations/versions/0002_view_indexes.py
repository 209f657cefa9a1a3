"""Index for the views: per-task counts, last success and durations without the table.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Covers the tasks view's success/failure counts, the metrics' runs by status,
    # last success and duration histogram: each is answered from the index alone.
    op.create_index("ix_runs_stats", "runs", ["codops", "task", "status", "finished_at", "duration_s"])


def downgrade() -> None:
    op.drop_index("ix_runs_stats", table_name="runs")

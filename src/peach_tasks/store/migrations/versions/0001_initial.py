"""Initial tables: tasks, runs, log_chunks, problems.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
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
    )
    op.create_table(
        "runs",
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
        sa.Column("result", sa.Text),
        sa.Column("details", sa.Text),
        sa.Column("owner", sa.String(200)),
        sa.Column("log_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("log_dropped_bytes", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_runs_task", "runs", ["codops", "task", "id"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "log_chunks",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("part", sa.String(1), nullable=False),
        sa.Column("nbytes", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "problems",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("codops", sa.String(64)),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("line", sa.Integer),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_problems_scope", "problems", ["kind", "scope"])


def downgrade() -> None:
    op.drop_table("problems")
    op.drop_table("log_chunks")
    op.drop_table("runs")
    op.drop_table("tasks")

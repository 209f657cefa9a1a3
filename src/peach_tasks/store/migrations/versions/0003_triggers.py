"""Triggers: a queue of requested runs, and what triggered each run.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("codops", sa.String(64), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text),
        sa.Column("requested_by", sa.String(300), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_id", sa.Integer),
        sa.Column("note", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_triggers_state", "triggers", ["state", "id"])
    op.add_column("runs", sa.Column("trigger_id", sa.Integer))
    op.add_column("runs", sa.Column("triggered_by", sa.String(300)))
    op.add_column("runs", sa.Column("payload", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("payload")
        batch.drop_column("triggered_by")
        batch.drop_column("trigger_id")
    op.drop_index("ix_triggers_state", table_name="triggers")
    op.drop_table("triggers")

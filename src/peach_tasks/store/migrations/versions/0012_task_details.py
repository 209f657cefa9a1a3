"""Task details for the dashboard: each task's entry method, declared timeout and dependencies.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: tasks registered before this revision get them at the next sync.
    op.add_column("tasks", sa.Column("method", sa.String(200)))
    op.add_column("tasks", sa.Column("full_notebook", sa.Boolean))
    op.add_column("tasks", sa.Column("timeout_s", sa.Float))  # as declared; None: the loop's limit
    op.add_column("tasks", sa.Column("dependencies", sa.Text))  # JSON list, as declared


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("dependencies")
        batch.drop_column("timeout_s")
        batch.drop_column("full_notebook")
        batch.drop_column("method")

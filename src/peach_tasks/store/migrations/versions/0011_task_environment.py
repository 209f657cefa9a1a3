"""Tasks: the named Python environment each one runs in (its ``py_env``, else ``base``).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every task registered before named environments ran in its organisation's one
    # environment, which is 'base' now; the next sync writes it anyway.
    op.add_column("tasks", sa.Column("environment", sa.String(64), nullable=False, server_default="base"))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("environment")

"""Run usage: each run's peak memory and CPU time, as its cgroup measured them.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: runs from before this revision, and runs without a cgroup,
    # were not measured, which is not the same as having used nothing.
    op.add_column("runs", sa.Column("peak_memory_bytes", sa.BigInteger))
    op.add_column("runs", sa.Column("cpu_seconds", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("cpu_seconds")
        batch.drop_column("peak_memory_bytes")

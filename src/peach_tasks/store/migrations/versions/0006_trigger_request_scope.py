"""Trigger request ids: unique within an organisation, no longer across all of them.

A global unique request_id let one organisation's retry key match another
organisation's trigger: the API answered with that trigger (and its payload) and
queued nothing. The key is now (codops, request_id).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# 0003 declared the column ``unique=True``: PostgreSQL named that constraint
# ``triggers_request_id_key``; SQLite left it unnamed, and batch mode (which copies the
# table on SQLite) names reflected unnamed constraints by this convention.
_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _request_id_constraint() -> str:
    found = [c["name"] for c in sa.inspect(op.get_bind()).get_unique_constraints("triggers")
             if c["column_names"] == ["request_id"]]
    return found[0] if found and found[0] else "uq_triggers_request_id"


def upgrade() -> None:
    name = _request_id_constraint()
    with op.batch_alter_table("triggers", naming_convention=_CONVENTION) as batch:
        batch.drop_constraint(name, type_="unique")
        batch.create_unique_constraint("uq_triggers_codops_request_id", ["codops", "request_id"])


def downgrade() -> None:
    # Fails (unique violation) once two organisations have used the same request_id:
    # the older schema cannot hold both. Delete one of each pair first.
    with op.batch_alter_table("triggers") as batch:
        batch.drop_constraint("uq_triggers_codops_request_id", type_="unique")
        batch.create_unique_constraint("triggers_request_id_key", ["request_id"])

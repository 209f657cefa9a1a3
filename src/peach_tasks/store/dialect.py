"""The INSERT with ON CONFLICT of the database in use (PostgreSQL or SQLite, the two the store runs on)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def insert(bind: sa.Connection | sa.Engine, table: sa.Table) -> Any:
    """``table``'s INSERT for ``bind``'s dialect, with ``on_conflict_do_nothing/update``."""
    return (postgresql if bind.dialect.name == "postgresql" else sqlite).insert(table)

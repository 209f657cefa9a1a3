"""The store: runs, task states, logs and problems, in SQLite or PostgreSQL."""

from .store import Store, StoreError

__all__ = ["Store", "StoreError"]

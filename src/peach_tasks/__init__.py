"""peach-tasks: run notebooks from git repositories as production tasks."""

__version__ = "0.1.0"

"""peach-tasks: run notebooks from git repositories as production tasks."""

__version__ = "0.1.0"

from .trigger_client import TriggerError, trigger_task

__all__ = ["TriggerError", "__version__", "trigger_task"]

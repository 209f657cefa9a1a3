"""peach-tasks: run notebooks from git repositories as production tasks."""

__version__ = "0.1.0"

from .trigger_client import TriggerError, trigger_task, trigger_task_with_event

__all__ = ["TriggerError", "__version__", "trigger_task", "trigger_task_with_event"]

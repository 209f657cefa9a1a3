"""Where notebooks import the tasks-info widget from: ``from peach_tasks.widget import
initialize_tasks_info``. The widget lives in ``web/widget.py`` (it reads the JSON API);
this name stays so that existing notebooks keep working."""

from .web.widget import TasksInfo, initialize_tasks_info

__all__ = ["TasksInfo", "initialize_tasks_info"]

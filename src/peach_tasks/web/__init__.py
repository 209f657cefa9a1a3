"""What people see of the store: JSON API, dashboard, Prometheus metrics.

``app.create_app`` builds the FastAPI application, ``server.WebServer`` serves it with
uvicorn (in a thread of ``peach-tasks serve``, or alone with ``peach-tasks web``), and
``metrics`` holds the in-process metrics the scheduler records. Nothing here writes to
the store. This module imports nothing heavy: loops record metrics without FastAPI.
"""

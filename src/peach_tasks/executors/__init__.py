"""Executors run one task's extracted code and report an ``Outcome``.

They never touch the store: log lines go to the sink the loop hands them.
"""

"""Alerts: rules matched to the journalled state changes, delivered durably (docs/alerts.md).

``rules.py`` decides who wants an event, ``render.py`` writes the alert (JSON, Slack,
e-mail), ``send.py`` delivers one, and ``dispatcher.py`` is the side job of ``serve``
that checks freshness, routes the journal into the outbox and delivers it.
"""

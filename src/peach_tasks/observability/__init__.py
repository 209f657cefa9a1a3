"""What the engine records about itself for people to see: in-process metrics (recorded by
the loops, the scheduler and the environment builds; served by the web's ``/metrics``) and
alerts (which rules want a journalled state change, what an alert says, its delivery;
``scheduling/alert_dispatcher.py`` runs them as a side job of ``serve``; docs/alerts.md)."""

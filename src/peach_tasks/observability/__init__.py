"""What the engine records about itself for people to see: in-process metrics (recorded by
the loops, the scheduler and the environment builds; served by the web's ``/metrics``) and
alerts (rules matched to the journalled state changes, delivered durably; docs/alerts.md)."""

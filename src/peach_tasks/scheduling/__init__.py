"""Deciding what runs when: the registry snapshot of each sync, the scheduler and its loops,
triggers, the replicas' leases, and serve's side jobs (the alert dispatcher, retention's
pruner)."""

"""One router per resource: ``jobs`` (``/api/jobs``) and ``probes`` (health, ready, metrics)."""

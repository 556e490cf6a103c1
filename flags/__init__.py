"""Feature flags: the Django app, the evaluation engine and the SDK (arrive with the platform issue)."""

"""The REST API (``/api/v1/``): DRF views over ``flags.access`` and ``flags.actions``; docs/rest-api.md."""

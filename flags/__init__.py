"""Feature flags: the Django app (``access``, ``actions``, ``api``, the core gateway) and the pure engine.

``flags.engine`` imports nothing from Django (SDKs and tools use it alone);
everything else here is the platform's flags app. docs/platform.md is the tour.
"""

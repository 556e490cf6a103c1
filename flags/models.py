"""The flags app's Django models: only what the platform keeps itself (API tokens, namespaces).

Flags, projects, environments, segments and config live in the core, not here.
"""

from __future__ import annotations

from flags.namespaces import Namespace
from flags.tokens import ApiToken

__all__ = ["ApiToken", "Namespace"]

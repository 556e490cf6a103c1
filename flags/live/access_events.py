"""Access-change broadcasts: open websockets re-check their subscriptions when permissions change.

Whenever a grant, a namespace or a token changes, the action calls
:func:`announce_access_change`; every live consumer (in every web process,
through the Channels layer) is in :data:`ACCESS_GROUP` and re-runs
``authorize_subscription`` for what it follows, dropping what is no longer
allowed and closing when its token was revoked.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

ACCESS_GROUP = "flagstaff.access"
MESSAGE_TYPE = "access.changed"


def access_changed_message(**detail: Any) -> dict[str, Any]:
    """The Channels message an access change sends (handled by ``LiveConsumer.access_changed``)."""
    return {"type": MESSAGE_TYPE, **detail}


def announce_access_change(**detail: Any) -> None:
    """Broadcast that permissions changed (sync code: actions). Failures are logged, not raised.

    The change is already committed; an unreachable layer only delays the
    re-check until the next subscribe.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(ACCESS_GROUP, access_changed_message(**detail))
    except Exception:  # the change stands; live sockets re-check on their next action
        log.exception("could not broadcast an access change")

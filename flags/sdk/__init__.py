"""The Flagstaff Python SDK: local flag evaluation, kept current over the live-updates websocket.

No Django here: an application installs the ``flagstaff`` distribution and
uses this package alone (its dependencies: ``websockets``; ``openfeature-sdk``
for the OpenFeature provider). docs/sdk.md is the guide. Modules:

- ``client``: ``Client``, the synchronous flavour (a background thread streams);
- ``aio``: ``AsyncClient``, the asyncio flavour (streams on the caller's loop);
- ``core``: what both share: evaluation, listeners, status, ``EvaluationDetail``;
- ``store``: the local cache (compiled flags and segments at a revision), bootstrap data;
- ``stream``: the websocket session, heartbeat timeout, reconnection and resume;
- ``messages``: the server's messages as the SDK checks them;
- ``backoff``: jittered exponential reconnection delays;
- ``reporting``: evaluation counts sent to the platform in batches;
- ``status``: ``ClientState`` and ``Status``;
- ``openfeature``: ``FlagstaffProvider`` for the OpenFeature SDK;
- ``bench``: ``make bench-sdk``.

Typical use::

    from flags.sdk import Client

    client = Client("https://flags.example.com", "fs_sdk_...", "shop/production")
    client.wait_until_ready(5)
    if client.bool_variation("new-checkout", {"key": "user-1", "country": "NZ"}, False):
        ...
    client.close()
"""

from flags.sdk.aio import AsyncClient
from flags.sdk.client import Client
from flags.sdk.core import EvaluationDetail, FlagChange
from flags.sdk.status import ClientState, Status

__all__ = ["AsyncClient", "Client", "ClientState", "EvaluationDetail", "FlagChange", "Status"]

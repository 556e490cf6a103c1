"""The ASGI application daphne serves: Django over HTTP, Channels consumers over websockets.

HTTP goes to Django (static files included, so no separate server or build
step is needed); websockets go through session authentication and the
allowed-hosts origin check to ``routing.websocket_urlpatterns``, except the
browser-key endpoints (``routing.key_websocket_urlpatterns``), which take no
cookies and so may be used by pages of any origin.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagstaff_platform.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from flags.metrics import count_websockets  # noqa: E402
from flagstaff_platform.routing import (  # noqa: E402
    KEY_WEBSOCKET_PATHS,
    key_websocket_urlpatterns,
    websocket_urlpatterns,
)

session_websockets = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
key_websockets = URLRouter(key_websocket_urlpatterns)


async def websockets(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Websockets: browser-key endpoints (no cookies, any origin) or the origin-checked rest."""
    app = key_websockets if scope.get("path") in KEY_WEBSOCKET_PATHS else session_websockets
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websockets,
    }
)
application = count_websockets(application)  # flagstaff_websocket_clients (flags.metrics)

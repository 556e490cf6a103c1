"""The ASGI application daphne serves: Django over HTTP, Channels consumers over websockets.

HTTP goes to Django (static files included, so no separate server or build
step is needed); websockets go through session authentication and the
allowed-hosts origin check to ``routing.websocket_urlpatterns``.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagstaff_platform.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from flags.metrics import count_websockets  # noqa: E402
from flagstaff_platform.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
application = count_websockets(application)  # flagstaff_websocket_clients (flags.metrics)

"""``manage.py run_discovery``: the discovery process (the ``flagstaff.discovery.v1.Registry`` gRPC server).

It runs inside Django for the platform's tokens and permissions, and reaches
the core through ``consensus.client`` at ``FLAGSTAFF_ENDPOINTS`` (as the
platform's core user, ``FLAGSTAFF_CORE_USER``; over TLS with
``FLAGSTAFF_CA_FILE``/``FLAGSTAFF_CERT_FILE``/``FLAGSTAFF_KEY_FILE``). ``flagstaff up`` starts it on
port 7070. SIGTERM or SIGINT stops it gracefully.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from discovery.platform_auth import PlatformAuthorizer
from discovery.server import serve

DEFAULT_PORT = 7070


class Command(BaseCommand):
    """Serve the Registry, grpc.health.v1 and server reflection until SIGTERM/SIGINT."""

    help = "Run the service-discovery gRPC server (flagstaff.discovery.v1.Registry)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                            help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)")

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._run(options["host"], options["port"]))

    async def _run(self, host: str, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def listening(bound: int, _registry: object) -> None:
            sys.stdout.write(f"discovery: Registry listening on {host}:{bound}\n")
            sys.stdout.flush()

        await serve(
            host=host, port=port, endpoints=settings.FLAGSTAFF_ENDPOINTS,
            username=settings.FLAGSTAFF_CORE_USER, password=settings.FLAGSTAFF_CORE_PASSWORD,
            timeout=settings.FLAGSTAFF_CORE_TIMEOUT, authorizer=PlatformAuthorizer(),
            ca_file=getattr(settings, "FLAGSTAFF_CA_FILE", None),
            cert_file=getattr(settings, "FLAGSTAFF_CERT_FILE", None),
            key_file=getattr(settings, "FLAGSTAFF_KEY_FILE", None),
            stop=stop, on_listening=listening,
        )

"""The Registry's generated code (``discovery/api/gen/``) is what its ``.proto`` produces today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "-m", "discovery.api.generate", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_and_its_methods() -> None:
    service = registry_pb2.DESCRIPTOR.services_by_name["Registry"]
    assert service.full_name == "flagstaff.discovery.v1.Registry"
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {"Register": (False, False), "KeepAlive": (True, True),
                       "Deregister": (False, False), "List": (False, False),
                       "Watch": (False, True)}

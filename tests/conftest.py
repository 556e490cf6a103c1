"""Repository-wide pytest hooks and fixtures the test packages share.

``core_cluster`` lives here, not in ``tests/platform`` or ``tests/browser``: two
session fixtures of that name in two folders were two clusters, and whichever
started second repointed the platform's settings at itself for the rest of the
session, under the other folder's tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from consensus.storage.background_snapshot import disable_grpc_fork_handlers

# In-process members and DurableLogs fork to write snapshots; gRPC (used by
# other tests in this process) must have its fork handlers off before it loads.
disable_grpc_fork_handlers()

if TYPE_CHECKING:
    from tests.cluster.harness import Cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected outputs of data-driven test files in place",
    )


@pytest.fixture(scope="session")
def core_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three `flagstaff node` processes; the platform's settings point at them for the session."""
    from django.conf import settings

    from flags.core import core, reset_core
    from tests.cluster.harness import Cluster, ProcessRegistry, wait_until

    registry = ProcessRegistry()
    cluster = Cluster(tmp_path_factory.mktemp("core"), registry, 3, [])
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=30)
        saved = settings.FLAGSTAFF_ENDPOINTS
        settings.FLAGSTAFF_ENDPOINTS = [n.endpoint for n in cluster.nodes]
        reset_core()
        wait_until(lambda: core().status() is not None, 30, "the core to answer through the gateway",
                   interval=0.2)
        yield cluster
        settings.FLAGSTAFF_ENDPOINTS = saved
        reset_core()
    finally:
        registry.kill_all()
        print(cluster.dump_logs())
        for node in cluster.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)

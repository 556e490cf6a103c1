"""Fixtures for the TLS tests: a PKI made by the test and a 3-member cluster with client and peer TLS.

The cluster (one for the package: the metrics tests scrape it too) listens only on ``https://`` URLs: client gRPC
with ``--client-cert-auth``, peers with ``--peer-client-cert-auth``, and the
metrics listener on the client certificate, as etcd does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, ProcessRegistry
from tests.tls.pki import Pki, make_pki
from tests.tls.tls_support import TlsNode, client_context, tls_flags


@pytest.fixture(scope="package")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="package")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Cluster]:
    registry = ProcessRegistry()
    base: Path = tmp_path_factory.mktemp("tls-cluster")
    # Small snapshots, so that a member joining late must be sent one (over peer TLS).
    snapshots = ["--snapshot-count", "40", "--experimental-snapshot-catchup-entries", "5"]
    cluster = Cluster(base, registry, 3, [*tls_flags(pki), *snapshots])
    cluster.nodes = [
        TlsNode(
            name=n.name, peer_port=n.peer_port, metrics_port=n.metrics_port,
            data_dir=n.data_dir, log_path=n.log_path, registry=registry,
            extra_args=n.extra_args, client_port=n.client_port, context=client_context(pki),
        )
        for n in cluster.nodes
    ]
    cluster.initial_cluster = ",".join(f"{n.name}={n.peer_url}" for n in cluster.nodes)
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=30)
        yield cluster
    finally:
        registry.kill_all()
        print(cluster.dump_logs())
        for node in cluster.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)

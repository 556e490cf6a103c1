"""The wire protocol: etcd v3-compatible `.proto` files and their generated Python.

``proto/`` holds the sources (packages ``etcdserverpb``, ``mvccpb``, ``authpb``,
with etcd's exact message, field and service names and numbers); ``gen/`` holds
the committed output of ``python -m consensus.api.generate``:

- ``consensus.api.gen.etcd.etcdserverpb.rpc_pb2`` and ``rpc_pb2_grpc``
- ``consensus.api.gen.etcd.mvccpb.kv_pb2``
- ``consensus.api.gen.etcd.authpb.auth_pb2``
"""

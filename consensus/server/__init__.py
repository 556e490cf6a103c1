"""One core member: the etcd v3 gRPC services, the Raft loop, the peer transport."""

from consensus.storage.background_snapshot import disable_grpc_fork_handlers

# Before anything in this package imports grpc: a member forks to write its
# snapshots in the background, and gRPC's fork handlers would crash the child.
disable_grpc_fork_handlers()

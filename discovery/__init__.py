"""Service discovery over gRPC with leases (arrives with the discovery issue)."""

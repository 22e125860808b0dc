"""The ingress process: gRPC servicers, auth, the error map, per-shard batchers, metrics."""

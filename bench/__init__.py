"""Microbenchmarks and the transport-limit echo server."""

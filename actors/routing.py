"""What both processes agree on to find a venue's shard: the owning shard of a venue, the named
Ray actors, and the handles an ingress holds. Imports no storage, numba or shard code, so the
ingress can use it without loading the shard's machinery."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any

import ray

from actors.errors import StartupFailed

NAMESPACE = "passgate"


def shard_of(venue_id: str, n_shards: int) -> int:
    """The one shard that owns a venue: stable across processes and restarts."""
    return zlib.crc32(venue_id.encode()) % n_shards


@dataclass
class Handles:
    shards: list[Any]
    catalog: Any
    n_shards: int


def connect(n_shards: int, timeout_s: float = 60.0) -> Handles:
    """For extra ingress processes: finds the named actors started by run_cluster."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            catalog = ray.get_actor("catalog", namespace=NAMESPACE)
            shards = [ray.get_actor(f"shard-{i}", namespace=NAMESPACE) for i in range(n_shards)]
            return Handles(shards, catalog, n_shards)
        except ValueError:
            if time.monotonic() > deadline:
                raise StartupFailed(
                    f"start-up: the catalog and {n_shards} shard actors were not found within "
                    f"{timeout_s:.0f} s; is run_cluster.py running with --shards {n_shards}?"
                ) from None
            time.sleep(0.2)

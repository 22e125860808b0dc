"""What both processes agree on to find a venue's shard: the owning shard of a venue, the ledger
shard of a pass, the named Ray actors, and the handles an ingress holds. Imports no storage,
numba or shard code, so the ingress can use it without loading the shard's machinery."""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.channel_frames import ChannelAddress
from actors.errors import StartupFailed

NAMESPACE = "passgate"


def shard_of(venue_id: str, n_shards: int) -> int:
    """The one shard that owns a venue: stable across processes and restarts."""
    return zlib.crc32(venue_id.encode()) % n_shards


def ledger_of(pass_id: str, n_ledgers: int) -> int:
    """The one credit-ledger shard that keeps a pass's holder-wide debt."""
    return zlib.crc32(pass_id.encode()) % n_ledgers


def channel_resolver(handle: Any) -> Callable[[], Awaitable[ChannelAddress]]:
    """How a channel client finds an asyncio actor's channel (a shard's or a ledger's): asks its
    Ray handle, which also waits for an actor that Ray is restarting."""

    async def resolve() -> ChannelAddress:
        address: ChannelAddress = await handle.channel_address.remote()
        return address

    return resolve


@dataclass
class Handles:
    shards: list[Any]
    catalog: Any
    n_shards: int
    # The credit-ledger actors `ledger-{k}` (actors.ledger), k = ledger_of(pass_id, len(ledgers)).
    ledgers: list[Any] = field(default_factory=list)


def ledger_name(k: int) -> str:
    return f"ledger-{k}"


def ledger_handles(n_ledgers: int) -> list[Any]:
    """The ledger actors ledger-0 .. ledger-(n-1), by name (started before the shards)."""
    return [ray.get_actor(ledger_name(k), namespace=NAMESPACE) for k in range(n_ledgers)]


def _find_ledgers() -> list[Any]:
    """The ledger actors run_cluster started, ledger-0 upwards (started before the shards)."""
    found: list[Any] = []
    while True:
        try:
            found.append(ray.get_actor(ledger_name(len(found)), namespace=NAMESPACE))
        except ValueError:
            return found


def connect(n_shards: int, timeout_s: float = 60.0) -> Handles:
    """For extra ingress processes: finds the named actors started by run_cluster."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            catalog = ray.get_actor("catalog", namespace=NAMESPACE)
            shards = [ray.get_actor(f"shard-{i}", namespace=NAMESPACE) for i in range(n_shards)]
            return Handles(shards, catalog, n_shards, _find_ledgers())
        except ValueError:
            if time.monotonic() > deadline:
                raise StartupFailed(
                    f"start-up: the catalog and {n_shards} shard actors were not found within "
                    f"{timeout_s:.0f} s; is run_cluster.py running with --shards {n_shards}?"
                ) from None
            time.sleep(0.2)

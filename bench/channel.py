"""`make bench`: the per-batch cost of a Ray actor call against the channel's round trip.

One asyncio Ray actor with an echo handler (so only the transport is measured) answers the same
encoded batches both ways: as `decide_batch.remote(payload)` and as a frame on its channel
(actors/channel_server.py, on the actor's own event loop), called from a uvloop driver as
the ingress calls them. For each batch size it reports, per batch, the wall time one at a time,
the CPU time spent in the caller and in the actor process, and the calls per second with 4 in
flight. CPU times are process times (every thread, Ray's own included) divided by calls.

python -m bench --channel-only
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ray
import uvloop

from actors.channel_client import ChannelClient
from actors.channel_frames import ChannelAddress
from actors.channel_server import ChannelServer
from actors.codec import encode_batch
from core.models import CredentialKind
from core.records import Request

SIZES = (1, 16, 256)
CALLS = 1000
IN_FLIGHT = 4
SECRET = os.urandom(32)


class EchoShard:
    """A shard's shape without its work: decide_batch and its channel both echo."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._channel = ChannelServer(self.decide_batch, secret)
        self._port = 0

    async def decide_batch(self, payload: bytes) -> bytes:
        return payload

    async def channel_address(self) -> ChannelAddress:
        if not self._port:
            _, self._port = await self._channel.start(ray.util.get_node_ip_address())
        return ChannelAddress(ray.util.get_node_ip_address(), self._port, self._secret)

    async def cpu_s(self) -> float:
        return time.process_time()


@dataclass(frozen=True)
class Figure:
    path: str
    items: int
    wall_us: float
    caller_cpu_us: float
    actor_cpu_us: float
    per_s_in_flight: float


Call = Callable[[bytes], Awaitable[bytes]]


def payload(items: int) -> bytes:
    return encode_batch(
        [
            Request(f"bench-{i:08d}", "v-001", "v-001-g01", CredentialKind.CARD, f"CARD-{i}")
            for i in range(items)
        ]
    )


async def _measure(path: str, call: Call, actor: Any, items: int) -> Figure:
    body = payload(items)
    for _ in range(50):  # warm up: connections, caches
        await call(body)
    actor0, caller0, wall0 = await actor.cpu_s.remote(), time.process_time(), time.perf_counter()
    for _ in range(CALLS):
        await call(body)
    wall, caller = time.perf_counter() - wall0, time.process_time() - caller0
    actor_cpu = await actor.cpu_s.remote() - actor0

    async def worker() -> None:
        for _ in range(CALLS // IN_FLIGHT):
            await call(body)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    rate = (CALLS // IN_FLIGHT * IN_FLIGHT) / (time.perf_counter() - t0)
    us = 1e6 / CALLS
    return Figure(path, items, wall * us, caller * us, actor_cpu * us, rate)


async def _run_all(actor: Any) -> list[Figure]:
    async def by_ray(body: bytes) -> bytes:
        reply: bytes = await actor.decide_batch.remote(body)
        return reply

    async def resolve() -> ChannelAddress:
        address: ChannelAddress = await actor.channel_address.remote()
        return address

    client = ChannelClient(resolve)
    figures = []
    for items in SIZES:
        figures.append(await _measure("Ray actor call", by_ray, actor, items))
        figures.append(await _measure("channel round trip", client.call, actor, items))
    await client.close()
    return figures


def table(figures: list[Figure]) -> str:
    lines = [
        f"| path | items per batch | wall µs per batch (one at a time) | caller CPU µs "
        f"| actor CPU µs | batches/s, {IN_FLIGHT} in flight |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.path} | {f.items} | {f.wall_us:.0f} | {f.caller_cpu_us:.0f} "
            f"| {f.actor_cpu_us:.0f} | {f.per_s_in_flight:,.0f} |"
        )
    return "\n".join(lines)


def run() -> str:
    """Starts a private Ray, measures both paths, returns the table with its command."""
    ray.init(include_dashboard=False, logging_level=logging.WARNING, num_cpus=2)
    try:
        actor = ray.remote(EchoShard).options(num_cpus=0).remote(SECRET)
        figures = uvloop.run(_run_all(actor))
    finally:
        ray.shutdown()
    head = (
        f"# Ray actor call vs channel round trip, per batch (echo handler, {CALLS} calls each)\n\n"
        "command: python -m bench --channel-only\n\n"
    )
    return head + table(figures)

"""The ingress: a grpc.aio server (on uvloop) with Gate, Passes, Quota, health and reflection.

Routes each validation to its venue's shard through a per-shard micro-batcher, whose batches go
over the channel to that shard (channel_client.py; the shard's Ray handle finds its address);
the other per-request calls go over a second channel to each shard (shard_calls.py). It polls
the shards once a second, by Ray calls, for the figures Prometheus shows. Its connection
limits, keepalive and timeouts come from `connections.py`; watchers share one status feed per
venue (`status_feed.py`).
It serves TLS with the credentials directory's server certificate (plaintext only with
--insecure), and every call but health passes the bearer-token check of actors/ingress/auth.py.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from actors import gc_pauses
from actors.catalog import CatalogReader, catalog_path
from actors.channel_client import ChannelClient
from actors.ingress import connections, metrics
from actors.ingress.auth import SERVER_CERT, SERVER_KEY, Authenticator
from actors.ingress.batcher import ShardBatcher
from actors.ingress.call_budget import CallBudget
from actors.ingress.error_map import ErrorMapInterceptor
from actors.ingress.gate_service import GateService
from actors.ingress.passes_service import PassesService
from actors.ingress.poll_health import PollHealth
from actors.ingress.quota_service import QuotaService
from actors.ingress.shard_calls import ShardCalls
from actors.routing import Handles, channel_resolver
from actors.shard_calls import AnnulCall
from core.models import Province
from proto.passgate.v1 import (
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)

log = logging.getLogger("passgate.ingress")
POLL_INTERVAL_S = 1.0
SERVICE_NAMES = (
    gate_pb2.DESCRIPTOR.services_by_name["Gate"].full_name,
    passes_pb2.DESCRIPTOR.services_by_name["Passes"].full_name,
    quota_pb2.DESCRIPTOR.services_by_name["Quota"].full_name,
)


@dataclass
class IngressSettings:
    port: int
    # Where ops/credentials.py put the server certificate and the token-signing public key.
    credentials: Path
    host: str = "127.0.0.1"
    # Plaintext gRPC (tokens are still required): only behind the explicit --insecure flag.
    insecure: bool = False
    max_batch: int = 256
    max_delay_us: int = 1000
    max_inflight_batches: int = 1
    max_queue: int = 8192
    poll_metrics: bool = True
    limits: connections.ConnectionLimits = field(default_factory=connections.ConnectionLimits)

    @classmethod
    def from_args(cls, args: Any, poll_metrics: bool = True) -> IngressSettings:
        """From run_cluster.py's (or an extra ingress process's) parsed flags."""
        return cls(
            port=args.port,
            credentials=args.credentials,
            host=args.host,
            insecure=args.insecure,
            max_batch=args.batch_size,
            max_delay_us=args.batch_delay_us,
            max_inflight_batches=args.max_inflight_batches,
            max_queue=args.max_queue,
            poll_metrics=poll_metrics,
            limits=connections.ConnectionLimits.from_args(args),
        )

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        """The connection-limit flags that from_args reads (besides the batching ones)."""
        connections.add_flags(parser)


class Ingress:
    def __init__(
        self, handles: Handles, province: Province, data_dir: Path, settings: IngressSettings
    ) -> None:
        self.handles = handles
        self.settings = settings
        self.channels = [_channel(i, shard) for i, shard in enumerate(handles.shards)]
        self.calls = ShardCalls(
            [_channel(i, shard, False) for i, shard in enumerate(handles.shards)]
        )
        self.batchers = [
            ShardBatcher(
                i,
                channel.call,
                max_batch=settings.max_batch,
                max_delay_us=settings.max_delay_us,
                max_inflight=settings.max_inflight_batches,
                max_queue=settings.max_queue,
                observe=functools.partial(_observe, i),
            )
            for i, channel in enumerate(self.channels)
        ]
        self.catalog = CatalogReader(catalog_path(data_dir))
        self.health = HealthServicer()
        limits = settings.limits
        max_connections = connections.connection_cap(
            limits.max_connections, connections.raise_fd_limit()
        )
        self.server = grpc.aio.server(
            interceptors=[
                ErrorMapInterceptor(
                    Authenticator.from_dir(settings.credentials), budget=_budget(limits)
                )
            ],
            options=limits.grpc_options(max_connections),
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        )
        gate = GateService(self.batchers, self._annul)
        gate_pb2_grpc.add_GateServicer_to_server(gate, self.server)
        self.ledgers = [ChannelClient(channel_resolver(h)) for h in handles.ledgers]
        passes = PassesService(handles, self.calls, self.catalog, province, self.ledgers)
        passes_pb2_grpc.add_PassesServicer_to_server(passes, self.server)
        self.quota = QuotaService(self.calls, limits.max_watchers, province.venues)
        quota_pb2_grpc.add_QuotaServicer_to_server(self.quota, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self.server)
        self.port = _listen(self.server, settings)
        self._poller: asyncio.Task[None] | None = None
        self._gc: gc_pauses.GcPauses | None = None

    async def _annul(
        self, shard: int, request_id: str, venue_id: str, gate_id: str, kind: int, value: str
    ) -> tuple[bool, str]:
        answer = await self.calls.ask(shard, AnnulCall(request_id, venue_id, gate_id, kind, value))
        return answer.annulled, answer.message

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.poll_metrics:
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        # Everything loaded so far lives as long as the process: out of the collector's way.
        self._gc = gc_pauses.settle(gc_pauses.INGRESS_GEN0_THRESHOLD)

    async def _poll(self) -> None:
        health = PollHealth()
        while True:
            try:
                await self._poll_once()
            except Exception as exc:  # a restarting shard must not stop the poller
                metrics.POLL_FAILURES.inc()
                line = health.failed(exc, time.monotonic())
                if line is not None:
                    log.warning("%s", line)
            else:
                metrics.LAST_POLL.set(time.time())
                line = health.succeeded()
                if line is not None:
                    log.info("%s", line)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _poll_once(self) -> None:
        metrics.observe_gc("ingress", self._gc.take() if self._gc is not None else [])
        for b in self.batchers:
            metrics.QUEUE_DEPTH.labels(str(b.shard_id)).set(b.depth)
        stats, status = await asyncio.gather(
            asyncio.gather(*(s.stats.remote() for s in self.handles.shards)),
            asyncio.gather(*(s.all_status.remote() for s in self.handles.shards)),
        )
        for st in stats:
            metrics.LMDB_COMMIT.labels(str(st["shard_id"])).set(st["last_commit_s"])
            metrics.set_shard_figures(st)
            metrics.set_credit_figures(st)
            for seconds in st.get("commit_samples", ()):
                metrics.LMDB_COMMIT_HIST.observe(seconds)
            metrics.observe_gc("shard", st.get("gc_pauses", []))
        for rows in status:
            metrics.set_venue_figures(rows)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Drains: stop taking calls, let in-flight ones finish, then close."""
        await self.health.enter_graceful_shutdown()
        if self._poller is not None:
            self._poller.cancel()
        # Watch streams never end by themselves: end them now rather than wait out the grace.
        self.quota.feed.close()
        await self.server.stop(grace_s)
        for channel in self.channels:
            await channel.close()
        await self.calls.close()
        for ledger in self.ledgers:
            await ledger.close()
        self.catalog.close()


async def serve_until_signalled(
    handles: Handles, province: Province, data_dir: Path, settings: IngressSettings, label: str
) -> None:
    """Serves until SIGINT/SIGTERM, then drains in-flight calls and stops."""
    ingress = Ingress(handles, province, data_dir, settings)
    await ingress.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{label} ready on port {ingress.port}", flush=True)
    await stop.wait()
    print(f"{label} draining...", flush=True)
    await ingress.stop()


def _listen(server: grpc.aio.Server, settings: IngressSettings) -> int:
    address = f"{settings.host}:{settings.port}"
    if settings.insecure:
        return server.add_insecure_port(address)
    creds = settings.credentials
    pair = ((creds / SERVER_KEY).read_bytes(), (creds / SERVER_CERT).read_bytes())
    return server.add_secure_port(address, grpc.ssl_server_credentials([pair]))


def _budget(limits: connections.ConnectionLimits) -> CallBudget | None:
    """Each caller's rate for the calls that are not validations (0: none)."""
    per_s = limits.calls_per_caller_per_s
    return CallBudget(per_s) if per_s > 0 else None


def _observe(shard: int, size: int, _micros: int) -> None:
    metrics.observe_batch(shard, size)


def _channel(shard_id: int, shard: Any, batches: bool = True) -> ChannelClient:
    """A channel to one shard (for its batches, or for its other calls); its address comes from
    the shard's Ray handle."""
    label = str(shard_id)
    return ChannelClient(
        channel_resolver(shard),
        on_frame=metrics.CHANNEL_FRAMES.labels(label).inc if batches else None,
        on_reconnect=metrics.CHANNEL_RECONNECTS.labels(label).inc,
    )

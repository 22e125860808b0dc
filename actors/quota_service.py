"""service Quota: scenic areas set and watch capacity; answered from the owning shard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from actors.cluster import Handles
from actors.shard import shard_of
from proto.passgate.v1 import quota_pb2, quota_pb2_grpc

WATCH_INTERVAL_S = 0.5


def status_proto(row: dict[str, Any]) -> quota_pb2.VenueStatus:
    return quota_pb2.VenueStatus(
        venue_id=row["venue_id"],
        occupancy=row["occupancy"],
        entries_today=row["entries_today"],
        exits_today=row["exits_today"],
        daily_capacity=row["daily_capacity"],
        instant_capacity=row["instant_capacity"],
        alert=row["alert_level"],
        paused=row["paused"],
        entries_per_minute=row["entries_per_minute"],
        minutes_to_full=row["minutes_to_full"],
        slots=[
            quota_pb2.SlotStatus(slot_id=s[0], capacity=s[1], reserved=s[2], admitted=s[3])
            for s in row["slots"]
        ],
        as_of_ms=row["as_of_ms"],
    )


class QuotaService(quota_pb2_grpc.QuotaServicer):
    def __init__(self, handles: Handles) -> None:
        self._h = handles

    def _shard(self, venue_id: str) -> Any:
        return self._h.shards[shard_of(venue_id, self._h.n_shards)]

    async def _need_venue(self, venue_id: str, context: grpc.aio.ServicerContext) -> None:
        if not venue_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "venue_id: required")

    async def _status(self, venue_id: str, context: grpc.aio.ServicerContext) -> dict[str, Any]:
        await self._need_venue(venue_id, context)
        row = await self._shard(venue_id).venue_status.remote(venue_id)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"venue_id: unknown venue {venue_id!r}")
        return row

    async def GetVenueStatus(
        self, request: quota_pb2.VenueRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        return status_proto(await self._status(request.venue_id, context))

    async def WatchVenueStatus(
        self, request: quota_pb2.VenueRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[quota_pb2.VenueStatus]:
        last: dict[str, Any] | None = None
        while True:
            row = await self._status(request.venue_id, context)
            same = last is not None and {**row, "as_of_ms": 0} == {**last, "as_of_ms": 0}
            if not same:
                last = row
                yield status_proto(row)
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def SetVenueQuota(
        self, request: quota_pb2.VenueQuota, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        await self._need_venue(request.venue_id, context)
        slot_caps = {s.slot_id: s.capacity for s in request.slot_capacities}
        alerts = None
        if request.HasField("alert_levels"):
            a = request.alert_levels
            alerts = (a.yellow_pct, a.orange_pct, a.red_pct)
        problems, row = await self._shard(request.venue_id).set_quota.remote(
            request.venue_id,
            request.daily_capacity,
            request.instant_capacity,
            slot_caps,
            alerts,
            request.allow_slot_overbooking,
        )
        if problems:
            text = "; ".join(f"{field}: {problem}" for field, problem in problems)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, text)
        return status_proto(row)

    async def PauseEntry(
        self, request: quota_pb2.VenueRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        return await self._pause(request.venue_id, True, context)

    async def ResumeEntry(
        self, request: quota_pb2.VenueRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        return await self._pause(request.venue_id, False, context)

    async def _pause(
        self, venue_id: str, paused: bool, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        await self._need_venue(venue_id, context)
        row = await self._shard(venue_id).set_paused.remote(venue_id, paused)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"venue_id: unknown venue {venue_id!r}")
        return status_proto(row)

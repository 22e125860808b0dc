"""service Quota: scenic areas set and watch capacity; answered from the owning shard.

Venue operators reach only their own venues (checked in `auth.py` before a call gets here);
a watch re-checks its caller's credential at every update, so a revoked watcher is cut off.

Each status read is a call frame to the shard (`shard_calls.py`), and its gRPC call costs this
process about half a millisecond of CPU, which the gates' path shares. So a venue the province
does not have is answered NOT_FOUND here, and the reads of one venue that arrive while one is out
share its answer (`SharedReads`): a dashboard or a client polling hard costs at most one read per
venue at a time, not one per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, NoReturn

import grpc

from actors.errors import NotFound, Overloaded
from actors.ingress.auth import recheck_caller
from actors.ingress.convert import text
from actors.ingress.shard_calls import ShardCalls
from actors.ingress.status_feed import DEFAULT_MAX_WATCHERS, FeedClosed, StatusFeed
from actors.shard_calls import SetPausedCall, SetQuotaCall, StatusAnswer, VenueStatusCall
from core.limits import echo
from proto.passgate.v1 import quota_pb2, quota_pb2_grpc


def status_proto(row: dict[str, Any]) -> quota_pb2.VenueStatus:
    return quota_pb2.VenueStatus(
        venue_id=row["venue_id"],
        occupancy=row["occupancy"],
        entries_today=row["entries_today"],
        exits_today=row["exits_today"],
        unmatched_exits_today=row.get("unmatched_exits_today", 0),
        occupancy_estimated=row.get("occupancy_estimated", False),
        typical_stay_minutes=row.get("typical_stay_minutes", 0),
        daily_capacity=row["daily_capacity"],
        instant_capacity=row["instant_capacity"],
        alert=row["alert_level"],
        paused=row["paused"],
        entries_per_minute=row["entries_per_minute"],
        minutes_to_full=row["minutes_to_full"],
        slots=[
            quota_pb2.SlotStatus(
                slot_id=s["slot_id"],
                capacity=s["capacity"],
                reserved=s["reserved"],
                admitted=s["admitted"],
            )
            for s in row["slots"]
        ],
        as_of_ms=row["as_of_ms"],
    )


Row = dict[str, Any] | None


async def _unknown_venue(context: grpc.aio.ServicerContext, venue_id: str) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"venue_id: unknown venue {echo(venue_id)}")
    raise AssertionError("abort returned")  # grpc.aio's abort raises


class SharedReads:
    """One read per key at a time: a call that arrives while a read of its key is out awaits that
    read's answer (or its error) instead of making another. A read that starts after the call
    arrived is what it gets otherwise, so nothing older than the call's own arrival is shared
    beyond the read already on its way."""

    def __init__(self, read: Callable[[str], Awaitable[Row]]) -> None:
        self._read = read
        self._out: dict[str, asyncio.Future[Row]] = {}
        self.reads = 0
        self.shared = 0

    async def get(self, key: str) -> Row:
        fut = self._out.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._read(key))
            self._out[key] = fut
            fut.add_done_callback(lambda _: self._out.pop(key, None))
            self.reads += 1
        else:
            self.shared += 1
        # Shielded: a caller that goes away must not cancel the read the others wait for.
        return await asyncio.shield(fut)


class QuotaService(quota_pb2_grpc.QuotaServicer):
    def __init__(
        self,
        calls: ShardCalls,
        max_watchers: int = DEFAULT_MAX_WATCHERS,
        venues: Collection[str] | None = None,
    ) -> None:
        """`venues`: the province's venue ids (None: every id goes to its shard to be known)."""
        self._calls = calls
        self._venues = frozenset(venues) if venues is not None else None
        self.reads = SharedReads(self._venue_status)
        self.feed = StatusFeed(self._venue_status, max_watchers=max_watchers, render=status_proto)

    async def _venue_status(self, venue_id: str) -> dict[str, Any] | None:
        answer: StatusAnswer = await self._calls.ask_venue(venue_id, VenueStatusCall(venue_id))
        return answer.row

    async def _need_venue(self, venue_id: str, context: grpc.aio.ServicerContext) -> None:
        text(venue_id, "venue_id")
        if self._venues is not None and venue_id not in self._venues:
            await _unknown_venue(context, venue_id)

    async def _status(self, venue_id: str, context: grpc.aio.ServicerContext) -> dict[str, Any]:
        await self._need_venue(venue_id, context)
        row = await self.reads.get(venue_id)
        if row is None:
            await _unknown_venue(context, venue_id)
        return row

    async def GetVenueStatus(
        self, request: quota_pb2.VenueRef, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        return status_proto(await self._status(request.venue_id, context))

    async def WatchVenueStatus(
        self, request: quota_pb2.VenueRef, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[quota_pb2.VenueStatus]:
        """The status now, then each change (at most every 500 ms), from the shared feed."""
        venue_id = request.venue_id
        await self._need_venue(venue_id, context)
        try:
            watcher = self.feed.subscribe(venue_id)
        except Overloaded:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many watchers; try later")
        except FeedClosed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down; watch again")
        # A cancelled call may leave this generator suspended at `yield`; the callback still frees
        # the watcher's slot at once.
        context.add_done_callback(lambda _context: watcher.close())
        try:
            while True:
                try:
                    status = await watcher.next()
                except NotFound:
                    await _unknown_venue(context, venue_id)
                except FeedClosed:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE, "server shutting down; watch again"
                    )
                recheck_caller()
                yield status
        finally:
            watcher.close()

    async def SetVenueQuota(
        self, request: quota_pb2.VenueQuota, context: grpc.aio.ServicerContext
    ) -> quota_pb2.VenueStatus:
        await self._need_venue(request.venue_id, context)
        slot_caps = {s.slot_id: s.capacity for s in request.slot_capacities}
        alerts = None
        if request.HasField("alert_levels"):
            a = request.alert_levels
            alerts = (a.yellow_pct, a.orange_pct, a.red_pct)
        call = SetQuotaCall(
            request.venue_id,
            request.daily_capacity,
            request.instant_capacity,
            slot_caps,
            alerts,
            request.allow_slot_overbooking,
        )
        answer: StatusAnswer = await self._calls.ask_venue(request.venue_id, call)
        if answer.problems:
            text = "; ".join(f"{p.field}: {p.problem}" for p in answer.problems)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, text)
        if answer.row is None:
            await _unknown_venue(context, request.venue_id)
        return status_proto(answer.row)

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
        call = SetPausedCall(venue_id, paused)
        answer: StatusAnswer = await self._calls.ask_venue(venue_id, call)
        if answer.row is None:
            await _unknown_venue(context, venue_id)
        return status_proto(answer.row)

"""actors.ingress.quota_service: status reads of one venue that overlap make one shard call (a
caller that goes away does not cancel the read the others wait for), and a venue the province
lacks is answered without one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from actors.ingress.quota_service import QuotaService, Row, SharedReads
from actors.shard_calls import StatusAnswer, VenueStatusCall
from proto.passgate.v1 import quota_pb2


class Shard:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.fail = False
        self.row: Callable[[str], dict[str, Any]] | None = None

    async def read(self, venue_id: str) -> Row:
        self.calls.append(venue_id)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("shard gone")
        if self.row is not None:
            return self.row(venue_id)
        return {"venue_id": venue_id, "reads": len(self.calls)}


def test_overlapping_reads_of_one_venue_make_one_call() -> None:
    async def body() -> None:
        shard = Shard()
        reads = SharedReads(shard.read)
        calls = [asyncio.ensure_future(reads.get("lake")) for _ in range(20)]
        other = asyncio.ensure_future(reads.get("hill"))
        await asyncio.sleep(0)
        shard.gate.set()
        rows = await asyncio.gather(*calls, other)
        assert sorted(shard.calls) == ["hill", "lake"]
        assert all(row is not None and row["venue_id"] == "lake" for row in rows[:20])
        # Once answered, the next read is a new one: nothing older is handed out.
        again = await reads.get("lake")
        assert again is not None and again["reads"] == 3 and shard.calls[-1] == "lake"
        assert (reads.reads, reads.shared) == (3, 19)

    asyncio.run(body())


def test_a_failed_read_fails_its_sharers_and_the_next_read_tries_again() -> None:
    async def body() -> None:
        shard = Shard()
        reads = SharedReads(shard.read)
        shard.fail = True
        calls = [asyncio.ensure_future(reads.get("lake")) for _ in range(3)]
        await asyncio.sleep(0)
        shard.gate.set()
        for call in calls:
            with pytest.raises(RuntimeError, match="shard gone"):
                await call
        shard.fail = False
        assert await reads.get("lake") is not None and len(shard.calls) == 2

    asyncio.run(body())


def test_a_caller_going_away_leaves_the_shared_read_to_the_others() -> None:
    async def body() -> None:
        shard = Shard()
        reads = SharedReads(shard.read)
        leaving = asyncio.ensure_future(reads.get("lake"))
        staying = asyncio.ensure_future(reads.get("lake"))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        shard.gate.set()
        row = await staying
        assert row is not None and row["venue_id"] == "lake" and shard.calls == ["lake"]

    asyncio.run(body())


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


class _Calls:
    """The ingress's shard calls (`ShardCalls`) as QuotaService uses them: status reads."""

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    async def ask_venue(self, venue_id: str, call: VenueStatusCall) -> StatusAnswer:
        assert call.venue_id == venue_id
        return StatusAnswer(await self._shard.read(venue_id))


def _full_row(venue_id: str) -> dict[str, Any]:
    """A status row as a shard sends it."""
    return {
        "venue_id": venue_id, "occupancy": 3, "entries_today": 5, "exits_today": 2,
        "daily_capacity": 100, "instant_capacity": 50, "alert_level": 1, "paused": False,
        "entries_per_minute": 0.5, "minutes_to_full": -1.0, "slots": [], "as_of_ms": 1,
    }  # fmt: skip


def test_a_venue_the_province_lacks_is_not_found_without_asking_a_shard() -> None:
    async def body() -> None:
        shard = Shard()
        shard.gate.set()
        shard.row = _full_row
        service = QuotaService(_Calls(shard), venues={"lake"})  # type: ignore[arg-type]
        with pytest.raises(_Aborted) as err:
            await service.GetVenueStatus(quota_pb2.VenueRef(venue_id="t-nowhere"), _Context())  # type: ignore[arg-type]
        assert err.value.args == (grpc.StatusCode.NOT_FOUND, "venue_id: unknown venue 't-nowhere'")
        assert shard.calls == []
        known = await service.GetVenueStatus(quota_pb2.VenueRef(venue_id="lake"), _Context())  # type: ignore[arg-type]
        assert (known.venue_id, known.occupancy) == ("lake", 3) and shard.calls == ["lake"]

    asyncio.run(body())

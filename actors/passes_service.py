"""service Passes: bulk import, lookup and revocation (catalog), and slot reservations (shards)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from actors.catalog import CatalogReader
from actors.cluster import Handles
from actors.codec import packb, pass_to_list
from actors.convert import parse_iso_date, pass_from_proto, pass_proto
from actors.errors import BadRequest
from actors.shard import shard_of
from core.models import Province
from proto.passgate.v1 import passes_pb2, passes_pb2_grpc

IMPORT_CHUNK = 5000
MAX_ERRORS_KEPT = 100


class PassesService(passes_pb2_grpc.PassesServicer):
    def __init__(self, handles: Handles, catalog: CatalogReader, province: Province) -> None:
        self._h = handles
        self._catalog = catalog
        self._province = province

    async def UpsertPasses(
        self,
        request_iterator: AsyncIterator[passes_pb2.PassRecord],
        context: grpc.aio.ServicerContext,
    ) -> passes_pb2.UpsertSummary:
        upserted = rejected = 0
        errors: list[str] = []
        chunk: list[list[Any]] = []
        writing: asyncio.Future[Any] | None = None
        async for rec in request_iterator:
            try:
                chunk.append(pass_to_list(pass_from_proto(rec, self._province)))
            except BadRequest as exc:
                rejected += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"{rec.pass_id or '?'}: {exc}")
                continue
            if len(chunk) >= IMPORT_CHUNK:
                # Overlap: parse the next chunk while the writer commits this one.
                if writing is not None:
                    upserted += await writing
                writing = self._h.catalog.upsert_rows.remote(packb(chunk))
                chunk = []
        if writing is not None:
            upserted += await writing
        if chunk:
            upserted += await self._h.catalog.upsert_rows.remote(packb(chunk))
        return passes_pb2.UpsertSummary(upserted=upserted, rejected=rejected, errors=errors)

    async def GetPass(
        self, request: passes_pb2.PassRef, context: grpc.aio.ServicerContext
    ) -> passes_pb2.PassView:
        try:
            rec = self._find(request)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        if rec is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such pass")
        assert rec is not None
        return await self._view(rec.pass_id, pass_proto(rec))

    def _find(self, ref: passes_pb2.PassRef) -> Any:
        if ref.pass_id:
            return self._catalog.get(ref.pass_id)
        if ref.HasField("credential") and ref.credential.value:
            return self._catalog.find(ref.credential.kind, ref.credential.value)
        raise BadRequest("pass_id", "give pass_id or credential")

    async def _view(self, pass_id: str, rec: passes_pb2.PassRecord) -> passes_pb2.PassView:
        parts = await asyncio.gather(*(s.usage_of.remote(pass_id) for s in self._h.shards))
        usage = [
            passes_pb2.VenueUsage(
                venue_id=row[0],
                entries=row[1],
                entries_today=row[3],
                last_entry_ms=row[4],
                inside=row[5],
                charges_fen=row[7],
            )
            for part in parts
            for row in part
        ]
        usage.sort(key=lambda u: u.venue_id)
        return passes_pb2.PassView(**{"pass": rec}, usage=usage)

    async def RevokePass(
        self, request: passes_pb2.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> passes_pb2.PassView:
        if not request.pass_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pass_id: required")
        rec = await self._h.catalog.revoke.remote(request.pass_id)
        if rec is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no pass {request.pass_id!r}")
        return await self._view(rec.pass_id, pass_proto(rec))

    async def Reserve(
        self, request: passes_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> passes_pb2.Reservation:
        return await self._reservation("reserve", request, context)

    async def CancelReservation(
        self, request: passes_pb2.CancelReservationRequest, context: grpc.aio.ServicerContext
    ) -> passes_pb2.Reservation:
        return await self._reservation("cancel_reservation", request, context)

    async def _reservation(
        self, method: str, request: Any, context: grpc.aio.ServicerContext
    ) -> passes_pb2.Reservation:
        for field in ("pass_id", "venue_id", "date", "slot_id"):
            if not getattr(request, field):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: required")
        try:
            day = parse_iso_date(request.date, "date")
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        if request.venue_id not in self._province.venues:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"venue_id: unknown venue {request.venue_id!r}"
            )
        shard = self._h.shards[shard_of(request.venue_id, self._h.n_shards)]
        ok, reason, remaining = await getattr(shard, method).remote(
            request.pass_id, request.venue_id, day, request.slot_id
        )
        return passes_pb2.Reservation(
            pass_id=request.pass_id,
            venue_id=request.venue_id,
            date=request.date,
            slot_id=request.slot_id,
            confirmed=ok,
            reason=reason,
            slot_remaining=remaining,
        )

"""service Passes: bulk import, lookup and revocation (catalog), and slot reservations (shards).

An import stores every valid record and counts each bad one in `errors` with its position (0-based
in the stream) and reason; a bad record never takes its neighbours with it.

Who may call what is decided before a call gets here (`auth.py`, including the venue of a
Reserve). GetPass answers a gate or a venue operator with what a gate display needs: the pass id,
product, status, validity and the usage at its own venues; never credentials, groups, credit tier,
debt or shared-card flags (they name other venues). Full holder data is for the card centre and
admin, including the holder-wide credit view: the debt across every venue and the charges behind
it, from the pass's ledger shard.

GetPass lists the pass's reservations with their state (reserved, consumed, expired) under the
rule of `core.reservations`, the same one the gate and Reserve follow; the limited view only
those at the caller's own venues.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from actors.catalog import CatalogReader
from actors.channel_client import ChannelClient
from actors.channel_frames import Kind
from actors.codec import encode_batch
from actors.errors import BadRequest, NotFound
from actors.ingress.auth import Principal, caller
from actors.ingress.convert import (
    credential,
    parse_iso_date,
    pass_from_proto,
    pass_proto,
    shared_flag_proto,
    text,
)
from actors.ingress.error_map import Undecodable
from actors.ingress.shard_calls import ShardCalls
from actors.routing import Handles, ledger_of
from actors.shard_calls import PassPartsCall, ReservationAnswer, ReserveCall
from core import reservations as resv
from core.clock import fmt_day, fmt_minute
from core.credit import Charge, ChargesCall, decode_charges
from core.limits import FREE_TEXT, echo
from core.models import Province
from core.records import PassParts, PassRecord, SharedFlag, encode
from proto.passgate.v1 import passes_pb2, passes_pb2_grpc

IMPORT_CHUNK = 5000
# Shared-card flags shown by GetPass (each node keeps its own for 7 days).
MAX_FLAGS_SHOWN = 20
MAX_ERRORS_KEPT = 100


class _Import:
    """The running tally of one UpsertPasses stream."""

    def __init__(self) -> None:
        self.upserted = 0
        self.rejected = 0
        self.errors: list[str] = []

    def reject(self, position: int, problem: str, pass_id: str = "") -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            who = f" (pass_id {echo(pass_id)})" if pass_id else ""
            self.errors.append(f"record {position}{who}: {problem}")

    def summary(self) -> passes_pb2.UpsertSummary:
        return passes_pb2.UpsertSummary(
            upserted=self.upserted, rejected=self.rejected, errors=self.errors
        )


def _limited(view: passes_pb2.PassView, principal: Principal) -> passes_pb2.PassView:
    """Only what a gate display needs, and usage only at the caller's own venues."""
    full = getattr(view, "pass")
    shown = passes_pb2.PassRecord(
        pass_id=full.pass_id,
        product_id=full.product_id,
        valid_from=full.valid_from,
        valid_until=full.valid_until,
        status=full.status,
    )
    usage = [u for u in view.usage if u.venue_id in principal.venues]
    held = [r for r in view.reservations if r.venue_id in principal.venues]
    return _pass_view(shown, usage, held)


def _pass_view(
    record: passes_pb2.PassRecord,
    usage: list[passes_pb2.VenueUsage],
    reservations: list[passes_pb2.HeldReservation],
) -> passes_pb2.PassView:
    view = passes_pb2.PassView(usage=usage, reservations=reservations)
    getattr(view, "pass").CopyFrom(record)  # `pass` is a Python keyword
    return view


# core.reservations' state names -> the proto enum.
_STATES = {
    resv.NONE: passes_pb2.RESERVATION_STATE_UNSPECIFIED,
    resv.RESERVED: passes_pb2.RESERVATION_STATE_RESERVED,
    resv.CONSUMED: passes_pb2.RESERVATION_STATE_CONSUMED,
    resv.EXPIRED: passes_pb2.RESERVATION_STATE_EXPIRED,
}


def _held(row: tuple[str, int, str, str, int, int]) -> passes_pb2.HeldReservation:
    venue_id, day, slot_id, state, start_min, end_min = row
    return passes_pb2.HeldReservation(
        venue_id=venue_id,
        date=fmt_day(day),
        slot_id=slot_id,
        state=_STATES[state],
        slot_start=fmt_minute(start_min),
        slot_end=fmt_minute(end_min),
    )


def _credit_view(rec: PassRecord, limit: int, charges: list[Charge]) -> passes_pb2.CreditView:
    counted = sum(c.amount_fen for c in charges if c.counts())
    return passes_pb2.CreditView(
        debt_fen=rec.outstanding_debt_fen + counted,
        limit_fen=limit,
        imported_debt_fen=rec.outstanding_debt_fen,
        charges=[
            passes_pb2.Charge(
                venue_id=c.venue_id,
                amount_fen=c.amount_fen,
                at_ms=c.at_ms,
                state=c.state,  # type: ignore[arg-type]
                request_id=c.request_id,
            )
            for c in charges
        ],
    )


def _newest_flags(parts: list[PassParts]) -> list[SharedFlag]:
    """Every node keeps its own sightings store and its shards all answer from it: one list,
    newest first, each flag once."""
    unique = {(f.at_ms, f.venue_id): f for part in parts for f in part.flags}
    return sorted(unique.values(), key=lambda f: f.at_ms, reverse=True)[:MAX_FLAGS_SHOWN]


class PassesService(passes_pb2_grpc.PassesServicer):
    def __init__(
        self,
        handles: Handles,
        calls: ShardCalls,
        catalog: CatalogReader,
        province: Province,
        ledgers: list[ChannelClient],
    ) -> None:
        """`ledgers[k]`: the call channel to credit-ledger shard k (GetPass's charges)."""
        self._h = handles
        self._calls = calls
        self._ledgers = ledgers
        self._catalog = catalog
        self._province = province

    async def UpsertPasses(
        self,
        request_iterator: AsyncIterator[passes_pb2.PassRecord | Undecodable],
        context: grpc.aio.ServicerContext,
    ) -> passes_pb2.UpsertSummary:
        tally = _Import()
        chunk: list[PassRecord] = []
        positions: list[int] = []
        writing: asyncio.Future[Any] | None = None
        position = -1
        async for rec in request_iterator:
            position += 1
            if isinstance(rec, Undecodable):
                tally.reject(position, rec.problem)
                continue
            try:
                chunk.append(pass_from_proto(rec, self._province))
                positions.append(position)
            except BadRequest as exc:
                tally.reject(position, str(exc), rec.pass_id)
                continue
            if len(chunk) >= IMPORT_CHUNK:
                # Overlap: parse the next chunk while the writer commits this one.
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self._write(chunk, positions, tally))
                chunk, positions = [], []
        if writing is not None:
            await writing
        if chunk:
            await self._write(chunk, positions, tally)
        return tally.summary()

    async def _write(self, chunk: list[PassRecord], positions: list[int], tally: _Import) -> None:
        stored, problems = await self._h.catalog.upsert_rows.remote(encode_batch(chunk))
        tally.upserted += stored
        for index, problem in problems:
            tally.reject(positions[index], problem, chunk[index].pass_id)

    async def GetPass(
        self, request: passes_pb2.PassRef, context: grpc.aio.ServicerContext
    ) -> passes_pb2.PassView:
        principal = caller()
        rec = self._find(request)
        if rec is None:
            raise NotFound("no such pass")
        if principal.full_view:
            return await self._view(rec)
        return _limited(await self._view(rec), principal)

    def _find(self, ref: passes_pb2.PassRef) -> PassRecord | None:
        if ref.pass_id:
            return self._catalog.get(text(ref.pass_id, "pass_id"))
        if ref.HasField("credential") and ref.credential.value:
            return self._catalog.find(*credential(ref.credential, "credential"))
        raise BadRequest("pass_id", "give pass_id or credential")

    async def _view(self, rec: PassRecord) -> passes_pb2.PassView:
        # Usage, reservations and shared-card flags from every shard (one call frame each), and
        # the pass's credit from its ledger: all calls at once.
        parts, credit = await asyncio.gather(
            self._calls.ask_each(PassPartsCall(rec.pass_id)), self._credit(rec)
        )
        usage = [
            passes_pb2.VenueUsage(
                venue_id=venue_id,
                entries=u.entries,
                entries_today=u.entries_today,
                last_entry_ms=u.last_entry_ms,
                inside=u.inside,
                charges_fen=u.charges_fen,
            )
            for part in parts
            for venue_id, u in part.usage
        ]
        usage.sort(key=lambda u: u.venue_id)
        rows = sorted(
            (row for part in parts for row in part.reservations), key=lambda r: (r[1], r[0], r[4])
        )
        reservations = [_held(row) for row in rows]
        view = _pass_view(pass_proto(rec), usage, reservations)
        view.shared_card_flags.extend(shared_flag_proto(f) for f in _newest_flags(parts))
        if credit is not None:
            view.credit.CopyFrom(credit)
        return view

    async def _credit(self, rec: PassRecord) -> passes_pb2.CreditView | None:
        product = self._province.products.get(rec.product_id)
        ledgers = self._ledgers
        if product is None or product.credit is None or not ledgers:
            return None
        ledger = ledgers[ledger_of(rec.pass_id, len(ledgers))]
        read = encode(ChargesCall(rec.pass_id))
        charges = decode_charges(await ledger.call(read, Kind.CALL))
        return _credit_view(rec, product.credit.debt_limit_fen, charges)

    async def RevokePass(
        self, request: passes_pb2.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> passes_pb2.PassView:
        text(request.pass_id, "pass_id")
        text(request.reason, "reason", FREE_TEXT, required=False)
        rec = await self._h.catalog.revoke.remote(request.pass_id)
        if rec is None:
            raise NotFound(f"no pass {echo(request.pass_id)}")
        return await self._view(rec)

    async def Reserve(
        self, request: passes_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> passes_pb2.Reservation:
        return await self._reservation(False, request)

    async def CancelReservation(
        self, request: passes_pb2.CancelReservationRequest, context: grpc.aio.ServicerContext
    ) -> passes_pb2.Reservation:
        return await self._reservation(True, request)

    async def _reservation(self, cancel: bool, request: Any) -> passes_pb2.Reservation:
        for field in ("pass_id", "venue_id", "slot_id"):
            text(getattr(request, field), field)
        if not request.date:
            raise BadRequest("date", "required")
        day = parse_iso_date(request.date, "date")
        if request.venue_id not in self._province.venues:
            raise BadRequest("venue_id", f"unknown venue {echo(request.venue_id)}")
        call = ReserveCall(request.pass_id, request.venue_id, day, request.slot_id, cancel)
        answer: ReservationAnswer = await self._calls.ask_venue(request.venue_id, call)
        return passes_pb2.Reservation(
            pass_id=request.pass_id,
            venue_id=request.venue_id,
            date=request.date,
            slot_id=request.slot_id,
            confirmed=answer.confirmed,
            reason=answer.reason,
            slot_remaining=answer.remaining,
            state=_STATES[answer.state],
        )

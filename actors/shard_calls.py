"""The shard's per-request calls other than validation, as channel frames (`Kind.CALL`): the
records both ends share (it imports neither end).

Annul, Reserve, CancelReservation, SetVenueQuota, PauseEntry/ResumeEntry, GetVenueStatus and
GetPass's share of a shard each take one frame on the ingress's call channel to the shard, not a
Ray actor call (about a millisecond of CPU on each side). A call is one `ShardCall`, a tagged
union of named records; its answer is the record its class names (`ANSWERS`).

Writes are not sent again after the connection drops: their caller hears ShardUnavailable and
retries, as it would when a Ray call's actor died. Reads are sent again.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.records import PassParts, decoder


class AnnulCall(msgspec.Struct, array_like=True, frozen=True, tag="annul"):
    request_id: str
    venue_id: str
    gate_id: str
    kind: int
    value: str


class ReserveCall(msgspec.Struct, array_like=True, frozen=True, tag="reserve"):
    """Reserve (or, with `cancel`, CancelReservation) one slot of one day."""

    pass_id: str
    venue_id: str
    day: int
    slot_id: str
    cancel: bool = False


class SetQuotaCall(msgspec.Struct, array_like=True, frozen=True, tag="set_quota"):
    venue_id: str
    daily: int
    instant: int
    slot_caps: dict[str, int]
    alerts: tuple[int, int, int] | None
    allow_overbooking: bool


class SetPausedCall(msgspec.Struct, array_like=True, frozen=True, tag="set_paused"):
    venue_id: str
    paused: bool


class VenueStatusCall(msgspec.Struct, array_like=True, frozen=True, tag="venue_status"):
    venue_id: str


class PassPartsCall(msgspec.Struct, array_like=True, frozen=True, tag="pass_parts"):
    pass_id: str


ShardCall = AnnulCall | ReserveCall | SetQuotaCall | SetPausedCall | VenueStatusCall | PassPartsCall
# The calls that only read: sent again on a new connection after the old one dropped.
READS = (VenueStatusCall, PassPartsCall)


class AnnulAnswer(msgspec.Struct, array_like=True, frozen=True):
    annulled: bool
    message: str


class ReservationAnswer(msgspec.Struct, array_like=True, frozen=True):
    confirmed: bool
    reason: str
    remaining: int
    state: str  # as `core.reservations` names it


class FieldProblem(msgspec.Struct, array_like=True, frozen=True):
    field: str
    problem: str


class StatusAnswer(msgspec.Struct, array_like=True, frozen=True):
    """A venue's status row (`VenueBook.status`; None: the shard has no such venue) and, for a
    quota change, what was wrong with it (nothing changed then)."""

    row: dict[str, Any] | None
    problems: list[FieldProblem] = []


Answer = AnnulAnswer | ReservationAnswer | StatusAnswer | PassParts
ANSWERS: dict[type[Any], type[Any]] = {
    AnnulCall: AnnulAnswer,
    ReserveCall: ReservationAnswer,
    SetQuotaCall: StatusAnswer,
    SetPausedCall: StatusAnswer,
    VenueStatusCall: StatusAnswer,
    PassPartsCall: PassParts,
}

_CALL = decoder(ShardCall)
_DECODERS = {call: decoder(answer) for call, answer in ANSWERS.items()}


def decode_call(payload: bytes) -> ShardCall:
    """The call a frame carries (msgspec.DecodeError when it carries none). Calls and answers are
    encoded as every record is (`core.records.encode`)."""
    call: ShardCall = _CALL.decode(payload)
    return call


def decode_answer(call: ShardCall, payload: bytes) -> Any:
    """The answer to `call`, as the record `ANSWERS` names."""
    return _DECODERS[type(call)].decode(payload)

"""The shard's per-request calls other than validation, as call frames (`actors.shard_calls`,
`ShardService.serve_call`): each named record in, its answer record out, through MessagePack as
the channel carries them. GetPass asks each shard once: one `PassParts` carries the pass's usage,
reservations and shared-card flags. No Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.codec import decode_decisions, encode_batch
from actors.errors import BadRequest
from actors.shard.service import ShardService
from actors.shard_calls import (
    AnnulAnswer,
    AnnulCall,
    PassPartsCall,
    ReservationAnswer,
    ReserveCall,
    SetPausedCall,
    SetQuotaCall,
    ShardCall,
    StatusAnswer,
    VenueStatusCall,
    decode_answer,
)
from core import reservations as resv
from core.models import CredentialKind
from core.records import PassParts, encode
from tests.unit.test_ledger import _req
from tests.unit.test_ledger_channel import service

__all__ = ["service"]  # the fixture


async def _ask(service: ShardService, call: ShardCall) -> Any:
    return decode_answer(call, await service.serve_call(encode(call)))


async def _admit(service: ShardService, rid: str, pass_id: str = "P1") -> None:
    # "plain" covers lake without pay-later: an ordinary admitted entry.
    [decision] = decode_decisions(
        await service.decide_batch(encode_batch([_req(rid, "lake", pass_id)]))
    )
    assert decision.allowed


def test_one_call_carries_the_pass_usage_reservations_and_flags(service: ShardService) -> None:
    async def body() -> tuple[PassParts, PassParts]:
        await _admit(service, "r1")
        return await _ask(service, PassPartsCall("P1")), await _ask(service, PassPartsCall("NO"))

    parts, nobody = asyncio.run(body())
    assert [(venue, usage.entries) for venue, usage in parts.usage] == [("lake", 1)]
    assert parts.reservations == [] and parts.flags == []
    assert nobody == PassParts([], [], [])


def test_annul_undoes_the_entry_once_and_a_retry_says_so(service: ShardService) -> None:
    call = AnnulCall("r1", "lake", "lake-g1", int(CredentialKind.CARD), "C-P1")

    async def body() -> tuple[AnnulAnswer, AnnulAnswer, PassParts]:
        await _admit(service, "r1")
        first = await _ask(service, call)
        return first, await _ask(service, call), await _ask(service, PassPartsCall("P1"))

    first, again, parts = asyncio.run(body())
    assert first.annulled, first.message
    assert (again.annulled, again.message) == (True, "already annulled")
    assert [(venue, usage.entries) for venue, usage in parts.usage] == [("lake", 0)]


def test_status_quota_and_pause_answer_with_the_venue_row(service: ShardService) -> None:
    async def body() -> list[StatusAnswer]:
        return [
            await _ask(service, VenueStatusCall("lake")),
            await _ask(service, SetQuotaCall("lake", 500, 100, {}, (50, 70, 90), False)),
            await _ask(service, SetQuotaCall("lake", -1, 100, {}, None, False)),
            await _ask(service, SetPausedCall("lake", True)),
            await _ask(service, VenueStatusCall("nowhere")),
        ]

    status, quota, bad, paused, unknown = asyncio.run(body())
    assert status.row is not None and status.row["venue_id"] == "lake"
    assert quota.problems == [] and quota.row is not None
    assert (quota.row["daily_capacity"], quota.row["instant_capacity"]) == (500, 100)
    assert [p.field for p in bad.problems] == ["daily_capacity"]
    assert paused.row is not None and paused.row["paused"] is True
    assert unknown.row is None


def test_a_reservation_is_answered_as_a_named_record(service: ShardService) -> None:
    # The test province's lake has no slots: the shard says so, and nothing is booked.
    answer = asyncio.run(_ask(service, ReserveCall("P1", "lake", 20_000, "09-11")))
    assert isinstance(answer, ReservationAnswer)
    assert not answer.confirmed and "no slot" in answer.reason and answer.state == resv.NONE


@pytest.mark.parametrize("payload", [b"", b"\x93\xa3foo\x01\x02", encode(["annul", 1])])
def test_a_malformed_call_is_bad_request_naming_the_call(
    service: ShardService, payload: bytes
) -> None:
    with pytest.raises(BadRequest) as err:
        asyncio.run(service.serve_call(payload))
    assert err.value.field == "shard call"

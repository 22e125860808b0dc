"""GetPass asks each shard once: `ShardService.pass_parts` carries the pass's usage,
reservations and shared-card flags in one named record that survives the trip between processes
(Ray pickles it). No Ray."""

from __future__ import annotations

import asyncio
import pickle

from actors.codec import decode_decisions, encode_batch
from actors.shard.service import ShardService
from core.records import PassParts
from tests.unit.test_ledger import _req
from tests.unit.test_ledger_channel import service

__all__ = ["service"]  # the fixture


def test_one_call_carries_the_pass_usage_reservations_and_flags(service: ShardService) -> None:
    async def body() -> tuple[PassParts, PassParts]:
        # "plain" covers lake without pay-later: an ordinary admitted entry.
        [decision] = decode_decisions(
            await service.decide_batch(encode_batch([_req("r1", "lake", "P1")]))
        )
        assert decision.allowed
        return await service.pass_parts("P1"), await service.pass_parts("NOBODY")

    parts, nobody = asyncio.run(body())
    assert [(venue, usage.entries) for venue, usage in parts.usage] == [("lake", 1)]
    assert parts.reservations == [] and parts.flags == []
    assert nobody == PassParts([], [], [])
    assert pickle.loads(pickle.dumps(parts)) == parts

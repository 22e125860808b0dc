"""The ingress's per-request calls to the shards other than validation (`actors.shard_calls`):
one call frame each on a channel per shard, not a Ray actor call.

These channels are apart from the batches' (`Ingress.channels`): the shard serves a bounded
number of frames per connection at once, so a booking rush or a dashboard polling hard queues
behind its own calls, never ahead of the gates' batches.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.channel_client import ChannelClient
from actors.channel_frames import Kind
from actors.routing import shard_of
from actors.shard_calls import READS, ShardCall, decode_answer
from core.records import encode


class ShardCalls:
    def __init__(self, channels: list[ChannelClient]) -> None:
        """`channels[i]`: the call channel to shard i."""
        self._channels = channels

    async def ask(self, shard: int, call: ShardCall) -> Any:
        """`call`'s answer from `shard` (the record `actors.shard_calls.ANSWERS` names); the
        shard's error raised again as its passgate class."""
        payload = await self._channels[shard].call(
            encode(call), Kind.CALL, resend=isinstance(call, READS)
        )
        return decode_answer(call, payload)

    async def ask_venue(self, venue_id: str, call: ShardCall) -> Any:
        """`call`'s answer from the shard that owns `venue_id`."""
        return await self.ask(shard_of(venue_id, len(self._channels)), call)

    async def ask_each(self, call: ShardCall) -> list[Any]:
        """`call`'s answers from every shard, asked at once, in shard order."""
        return list(await asyncio.gather(*(self.ask(i, call) for i in range(len(self._channels)))))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

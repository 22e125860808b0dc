"""ShardService: the shard as Ray serves it. It owns the bytes on the wire (`actors.codec`) and
hands `VenueShard` typed records; `actors.cluster` applies `ray.remote` to it.

An asyncio actor (decide_batch is async, so Ray runs every method on one event loop): the
ingress's batches arrive over the channel (actors/shard/channel_server.py) served on that same
loop; the rare admin calls stay Ray actor calls.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import ray

from actors.channel_frames import ChannelAddress
from actors.codec import decode_requests_each, encode_batch
from actors.ledger.client import RayLedgerClient
from actors.shard.channel_server import ChannelServer
from actors.shard.venue_shard import VenueShard
from core.models import Province
from core.records import SharedFlag, Usage


def decide_encoded(shard: VenueShard, payload: bytes) -> bytes:
    """An encoded batch in, its encoded decisions out: the shard's wire path."""
    return encode_batch(shard.decide_requests(decode_requests_each(payload)))


class ShardService:
    def __init__(
        self,
        shard_id: int,
        n_shards: int,
        province: Province,
        data_dir: str,
        clock_ms: Any = None,
        credentials_dir: str | None = None,
        channel_secret: bytes | None = None,
        ledgers: list[Any] | None = None,
    ) -> None:
        # The credit-ledger actors (actors.ledger); the shard asks them over Ray.
        client = RayLedgerClient(ledgers) if ledgers else None
        self.shard = VenueShard(
            shard_id, n_shards, province, data_dir, clock_ms, credentials_dir, client
        )
        self._secret = channel_secret or secrets.token_bytes(32)
        self._channel = ChannelServer(self.decide_batch, self._secret)
        self._channel_at: asyncio.Future[tuple[str, int]] | None = None

    # -- writes ---------------------------------------------------------------------------------

    async def decide_batch(self, payload: bytes) -> bytes:
        """Decides every request of an encoded batch; answers after the batch's one commit."""
        return decide_encoded(self.shard, payload)

    async def channel_address(self) -> ChannelAddress:
        """Where this shard serves its channel; starts the listener on the first call, on the
        node's address as Ray reports it (any port)."""
        if self._channel_at is None:
            host = ray.util.get_node_ip_address()
            self._channel_at = asyncio.ensure_future(self._channel.start(host))
        try:
            host, port = await asyncio.shield(self._channel_at)
        except OSError:
            self._channel_at = None  # could not listen: the next call tries again
            raise
        return ChannelAddress(host, port, self._secret)

    def annul(
        self, request_id: str, venue_id: str, gate_id: str, kind: int, value: str
    ) -> tuple[bool, str]:
        return self.shard.annul(request_id, venue_id, gate_id, kind, value)

    def reserve(
        self, pass_id: str, venue_id: str, day: int, slot_id: str
    ) -> tuple[bool, str, int, str]:
        return self.shard.reserve(pass_id, venue_id, day, slot_id)

    def cancel_reservation(
        self, pass_id: str, venue_id: str, day: int, slot_id: str
    ) -> tuple[bool, str, int, str]:
        return self.shard.cancel_reservation(pass_id, venue_id, day, slot_id)

    def set_quota(
        self,
        venue_id: str,
        daily: int,
        instant: int,
        slot_caps: dict[str, int],
        alerts: tuple[int, int, int] | None,
        allow_overbooking: bool,
    ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
        return self.shard.set_quota(venue_id, daily, instant, slot_caps, alerts, allow_overbooking)

    def set_paused(self, venue_id: str, paused: bool) -> dict[str, Any] | None:
        return self.shard.set_paused(venue_id, paused)

    # -- reads ----------------------------------------------------------------------------------

    def usage_of(self, pass_id: str) -> list[tuple[str, Usage]]:
        return self.shard.usage_of(pass_id)

    def reservations_of(self, pass_id: str) -> list[tuple[str, int, str, str, int, int]]:
        return self.shard.reservations_of(pass_id)

    def shared_flags_of(self, pass_id: str) -> list[SharedFlag]:
        return self.shard.shared_flags_of(pass_id)

    def venue_status(self, venue_id: str) -> dict[str, Any] | None:
        return self.shard.venue_status(venue_id)

    def all_status(self) -> list[dict[str, Any]]:
        return self.shard.all_status()

    def stored_admits(self) -> int:
        return self.shard.stored_admits()

    def stats(self) -> dict[str, Any]:
        return {**self.shard.stats(), "channel_frames": self._channel.frames_served}

    def pid(self) -> int:
        return self.shard.pid()

    def ping(self) -> bool:
        return self.shard.ping()

"""ShardService: the shard as Ray serves it. It owns the bytes on the wire (`actors.codec`) and
hands `VenueShard` typed records; `actors.cluster` applies `ray.remote` to it."""

from __future__ import annotations

from typing import Any

from actors.codec import decode_requests_each, encode_batch
from actors.ledger.client import RayLedgerClient
from actors.shard.venue_shard import VenueShard
from core.models import Province
from core.records import Usage


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
        ledgers: list[Any] | None = None,
    ) -> None:
        # The credit-ledger actors (actors.ledger); the shard asks them over Ray.
        client = RayLedgerClient(ledgers) if ledgers else None
        self.shard = VenueShard(
            shard_id, n_shards, province, data_dir, clock_ms, credentials_dir, client
        )

    # -- writes ---------------------------------------------------------------------------------

    def decide_batch(self, payload: bytes) -> bytes:
        """Decides every request of an encoded batch; answers after the batch's one commit."""
        return decide_encoded(self.shard, payload)

    def annul(
        self, request_id: str, venue_id: str, gate_id: str, kind: int, value: str
    ) -> tuple[bool, str]:
        return self.shard.annul(request_id, venue_id, gate_id, kind, value)

    def reserve(self, pass_id: str, venue_id: str, day: int, slot_id: str) -> tuple[bool, str, int]:
        return self.shard.reserve(pass_id, venue_id, day, slot_id)

    def cancel_reservation(
        self, pass_id: str, venue_id: str, day: int, slot_id: str
    ) -> tuple[bool, str, int]:
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

    def venue_status(self, venue_id: str) -> dict[str, Any] | None:
        return self.shard.venue_status(venue_id)

    def all_status(self) -> list[dict[str, Any]]:
        return self.shard.all_status()

    def stored_admits(self) -> int:
        return self.shard.stored_admits()

    def stats(self) -> dict[str, Any]:
        return self.shard.stats()

    def pid(self) -> int:
        return self.shard.pid()

    def ping(self) -> bool:
        return self.shard.ping()

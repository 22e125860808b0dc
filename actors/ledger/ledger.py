"""Ledger: one shard of the holder-wide credit ledger (passes with crc32(pass_id) % n == index).

A plain class (constructed directly in tests) over `core.credit.CreditBook` and its LMDB store:
every call changes memory, writes the changes in one transaction and only then answers. A failed
write puts memory back as the store has it. Without a store (a shard's unit tests) nothing is
durable.

`LedgerService` is what Ray serves, an asyncio actor. The shards' holds and outcomes, many per
second, arrive over a channel (`actors/channel_server.py`, the same frames and secret as the
ingress-to-shard channel) served on the actor's loop: `LedgerCall` frames; an ingress reads a
pass's charges for GetPass on it too, as `ChargesCall` call frames. Ray stays the owner of the
actor and its discovery (`channel_address`), and carries the rare calls: a shard's recovery at
start, stats.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import msgspec
import ray

from actors.channel_frames import ChannelAddress
from actors.channel_server import ChannelServer
from actors.errors import BadRequest, DataDirMismatch
from actors.ledger.store import LedgerStore, ledger_dir
from core.credit import (
    Charge,
    ChargesCall,
    CreditBook,
    HoldAnswer,
    HoldCall,
    LedgerCall,
    Outcomes,
    Owner,
)
from core.keys import charge_pass_id
from core.records import decoder, encode

_CALL = decoder(LedgerCall)
_RECOVERY = decoder(tuple[Owner, Outcomes])
_CHARGES = decoder(ChargesCall)


class Ledger:
    def __init__(self, store: LedgerStore | None = None) -> None:
        self.store = store
        self.book = CreditBook()
        self._reload()

    def _reload(self) -> None:
        self.book = CreditBook()
        if self.store is None:
            return
        for key, charge in self.store.iter_charges():
            self.book.load(key, charge)
        self.book.fences.update(self.store.iter_fences())

    def _commit(self, changed: dict[bytes, Charge], fences: dict[int, int] | None = None) -> None:
        if self.store is None:
            return
        try:
            self.store.commit(changed, fences or {})
        except Exception:
            self._reload()  # nothing of this call happened
            raise

    # -- calls ----------------------------------------------------------------------------------

    def hold(self, call: HoldCall) -> list[HoldAnswer]:
        """One batch's asks, in order: each sees the charges granted before it."""
        changed: dict[bytes, Charge] = {}
        try:
            answers = [self.book.hold(call.owner, ask, changed) for ask in call.asks]
        except Exception:
            self._reload()  # an ask failed half-way: nothing of this call happened
            raise
        self._commit(changed)
        return answers

    def apply(self, outcomes: Outcomes) -> None:
        changed: dict[bytes, Charge] = {}
        try:
            self.book.apply(outcomes, changed)
        except Exception:
            self._reload()
            raise
        self._commit(changed)

    def recover(self, owner: Owner, outcomes: Outcomes) -> int:
        """A shard (re)starts: returns how many orphaned holds were released."""
        changed: dict[bytes, Charge] = {}
        orphans = self.book.recover(owner, outcomes, changed)
        self._commit(changed, {owner.shard_id: self.book.fences[owner.shard_id]})
        return len(orphans)

    def charges_of(self, pass_id: str) -> list[Charge]:
        return self.book.charges_of(pass_id)

    def stats(self) -> dict[str, int]:
        return {"holds_granted": self.book.granted, "holds_refused": self.book.refused}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def ledger_layout_problem(seen: int, asked: int) -> str:
    """A pass's ledger shard hangs on the ledger count, so a data directory keeps its first."""
    return (
        f"data directory holds {seen} ledger shards; start with --ledgers {seen} "
        f"(asked for {asked})"
    )


def check_ledger_count(data_dir: Path, n_ledgers: int) -> None:
    """Refuses another ledger count before any actor starts (ledger 0 recorded the count)."""
    path = ledger_dir(data_dir, 0)
    if not path.exists():
        return
    store = LedgerStore(path)
    try:
        seen = store.get_meta("n_ledgers")
    finally:
        store.close()
    if seen is not None and seen != n_ledgers:
        raise DataDirMismatch(ledger_layout_problem(int(str(seen)), n_ledgers))


class LedgerService:
    """The ledger as Ray serves it: opens its store under the data directory, checks the
    ledger count it began with, notes its pid (crash tests), and takes encoded records."""

    def __init__(
        self, index: int, n_ledgers: int, data_dir: str, channel_secret: bytes | None = None
    ) -> None:
        path = ledger_dir(Path(data_dir), index)
        store = LedgerStore(path)
        seen = store.get_meta("n_ledgers")
        if seen is None:
            store.put_meta("n_ledgers", n_ledgers)
        elif seen != n_ledgers:
            store.close()
            raise DataDirMismatch(ledger_layout_problem(int(str(seen)), n_ledgers))
        self.ledger = Ledger(store)
        self._channel = ChannelServer(
            self.serve_call, channel_secret or secrets.token_bytes(32), calls=self.serve_read
        )
        (path / "pid").write_text(str(os.getpid()))

    async def serve_call(self, payload: bytes) -> bytes:
        """One channel frame: a `LedgerCall`, answered after its transaction committed."""
        return serve_call(self.ledger, payload)

    async def channel_address(self) -> ChannelAddress:
        """Where the shards reach this ledger (listening starts on the first call)."""
        return await self._channel.address(ray.util.get_node_ip_address())

    async def recover(self, payload: bytes) -> int:
        owner, outcomes = _RECOVERY.decode(payload)
        return self.ledger.recover(owner, outcomes)

    async def serve_read(self, payload: bytes) -> bytes:
        """One call frame from an ingress: a `ChargesCall`, answered with the pass's charges."""
        try:
            call = _CHARGES.decode(payload)
        except msgspec.DecodeError:
            raise BadRequest("ledger read", "malformed") from None
        return encode(self.ledger.charges_of(call.pass_id))

    async def stats(self) -> dict[str, int]:
        return {**self.ledger.stats(), "channel_frames": self._channel.frames_served}

    async def pid(self) -> int:
        return os.getpid()

    async def ping(self) -> bool:
        return True


def serve_call(ledger: Ledger, payload: bytes) -> bytes:
    """A `LedgerCall`'s answer: the encoded `list[HoldAnswer]` of a hold, nothing for outcomes."""
    try:
        call = _CALL.decode(payload)
    except msgspec.DecodeError:
        raise BadRequest("ledger call", "malformed") from None
    if (call.hold is None) == (call.outcomes is None):
        raise BadRequest("ledger call", "exactly one of hold and outcomes")
    if call.hold is not None:
        if not all(_names(ask.key, ask.pass_id) for ask in call.hold.asks):
            raise BadRequest("ledger call", "a charge key that does not name its pass")
        return encode(ledger.hold(call.hold))
    assert call.outcomes is not None
    if not all(_names(key, None) for key in (*call.outcomes.settle, *call.outcomes.release)):
        raise BadRequest("ledger call", "a malformed charge key")
    ledger.apply(call.outcomes)
    return b""


def _names(key: bytes, pass_id: str | None) -> bool:
    """Whether `key` is a well-formed charge key (of `pass_id`, when given)."""
    try:
        named = charge_pass_id(key)
    except (ValueError, IndexError, UnicodeDecodeError):
        return False
    return pass_id is None or named == pass_id

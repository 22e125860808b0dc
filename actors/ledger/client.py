"""How a shard reaches the credit ledger: a small interface with a channel implementation (one
call per ledger shard per batch, awaited with a timeout; outcomes sent without waiting) and an
in-process one for unit tests. The shard (`actors.shard.credit`) sees only `LedgerClient`."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec

from actors.channel_client import ChannelClient, ClientSettings
from actors.errors import PassgateError
from actors.ledger.ledger import Ledger
from actors.routing import channel_resolver, ledger_of
from core.credit import SETTLE, HoldAnswer, HoldAsk, HoldCall, LedgerCall, Outcomes, Owner
from core.keys import charge_pass_id
from core.records import decoder, encode

# A hold waits at most this long, then its items are refused for a retry and their holds
# released; the shard stalls no longer than this while a crashed ledger restarts.
HOLD_TIMEOUT_S = 2.0
RECOVER_TIMEOUT_S = 120.0
# Settles and releases wait this long for a ledger (a restart by Ray), then the outbox resends.
SEND_TIMEOUT_S = 15.0
_ANSWERS = decoder(list[HoldAnswer])


class LedgerClient(Protocol):
    def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        """The answers in ask order, or None when the ledger could not be asked."""

    async def hold_async(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        """`hold` without blocking the event loop."""

    def send(self, outcomes: dict[bytes, int]) -> None:
        """Sends settles and releases (key -> SETTLE | RELEASE); does not wait."""

    def delivered(self) -> tuple[dict[bytes, int], list[bytes]]:
        """(outcomes the ledger has taken, keys whose sending failed) since the last call."""

    def recover(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        """At shard start: replays the outbox, fences older incarnations, releases orphans."""

    async def recover_async(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        """`recover` without blocking the event loop."""

    def close(self) -> None: ...


def _split(outcomes: dict[bytes, int], n: int) -> dict[int, Outcomes]:
    parts: dict[int, tuple[list[bytes], list[bytes]]] = {}
    for key, action in outcomes.items():
        settle, release = parts.setdefault(ledger_of(charge_pass_id(key), n), ([], []))
        (settle if action == SETTLE else release).append(key)
    return {k: Outcomes(s, r) for k, (s, r) in parts.items()}


def _group(asks: list[HoldAsk], n: int) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, ask in enumerate(asks):
        groups.setdefault(ledger_of(ask.pass_id, n), []).append(i)
    return groups


class LocalLedgerClient:
    """In-process ledgers: every call is applied at once."""

    def __init__(self, ledgers: list[Ledger]) -> None:
        self.ledgers = ledgers
        self._done: dict[bytes, int] = {}

    def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        out: list[HoldAnswer | None] = [None] * len(asks)
        for k, idx in _group(asks, len(self.ledgers)).items():
            answers = self.ledgers[k].hold(HoldCall(owner, [asks[i] for i in idx]))
            for i, answer in zip(idx, answers, strict=True):
                out[i] = answer
        return [a for a in out if a is not None]

    async def hold_async(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        return self.hold(owner, asks)

    def send(self, outcomes: dict[bytes, int]) -> None:
        for k, part in _split(outcomes, len(self.ledgers)).items():
            self.ledgers[k].apply(part)
        self._done.update(outcomes)

    def delivered(self) -> tuple[dict[bytes, int], list[bytes]]:
        done, self._done = self._done, {}
        return done, []

    def recover(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        parts = _split(outcomes, len(self.ledgers))
        return sum(
            ledger.recover(owner, parts.get(k, Outcomes())) for k, ledger in enumerate(self.ledgers)
        )

    async def recover_async(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        return self.recover(owner, outcomes)

    def close(self) -> None:
        """The ledgers belong to the caller that made them (tests share them between shards)."""


class ChannelLedgerClient:
    """The ledger actors (`ledger-{k}`), from inside a shard actor, on the shard's event loop.

    Holds and outcomes travel over one channel per ledger shard (`actors/channel_client.py`: a
    few tens of microseconds of CPU a call, against most of a millisecond on each side for a Ray
    actor call), resolved through the ledger's Ray handle, which also waits for a ledger that Ray
    is restarting. A hold is awaited (`hold_async`), so the shard's loop serves other batches and
    answers meanwhile; outcomes are sent without waiting and reported by `delivered`. A call
    unanswered when its connection drops is sent again on the next: a hold is idempotent by its
    charge key and settle and release by theirs. The recovery at start stays a Ray call."""

    def __init__(self, handles: list[Any], hold_timeout_s: float = HOLD_TIMEOUT_S) -> None:
        self.handles = handles
        self.hold_timeout_s = hold_timeout_s
        settings = ClientSettings(max_wait_s=SEND_TIMEOUT_S)
        self._channels = [ChannelClient(channel_resolver(h), settings) for h in handles]
        self._done: dict[bytes, int] = {}
        self._failed: list[bytes] = []
        self._sending: set[asyncio.Task[None]] = set()

    def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        raise RuntimeError("the channel ledger client holds on the event loop: use hold_async")

    async def hold_async(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        groups = _group(asks, len(self.handles))
        calls = [
            self._channels[k].call(encode(LedgerCall(hold=HoldCall(owner, [asks[i] for i in idx]))))
            for k, idx in groups.items()
        ]
        try:
            replies = await asyncio.wait_for(asyncio.gather(*calls), self.hold_timeout_s)
            decoded = [_ANSWERS.decode(reply) for reply in replies]
        except (TimeoutError, PassgateError, OSError, msgspec.DecodeError):
            return None
        out: list[HoldAnswer | None] = [None] * len(asks)
        for idx, answers in zip(groups.values(), decoded, strict=True):
            for i, answer in zip(idx, answers, strict=True):
                out[i] = answer
        return [a for a in out if a is not None]

    def send(self, outcomes: dict[bytes, int]) -> None:
        loop = asyncio.get_running_loop()
        for k, part in _split(outcomes, len(self.handles)).items():
            keys = {key: outcomes[key] for key in (*part.settle, *part.release)}
            task = loop.create_task(self._deliver(k, part, keys))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _deliver(self, k: int, part: Outcomes, keys: dict[bytes, int]) -> None:
        try:
            await self._channels[k].call(encode(LedgerCall(outcomes=part)))
        except Exception:  # whatever went wrong, the outbox sends them again
            self._failed.extend(keys)
        else:
            self._done.update(keys)

    def delivered(self) -> tuple[dict[bytes, int], list[bytes]]:
        done, self._done = self._done, {}
        failed, self._failed = self._failed, []
        return done, failed

    def recover(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        raise RuntimeError("the channel ledger client recovers on the event loop: recover_async")

    async def recover_async(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        """The recovery stays a Ray call (rare, and it may wait for a ledger Ray restarts)."""
        parts = _split(outcomes, len(self.handles))
        refs = [
            h.recover.remote(encode((owner, parts.get(k, Outcomes()))))
            for k, h in enumerate(self.handles)
        ]
        return sum(await asyncio.wait_for(asyncio.gather(*refs), RECOVER_TIMEOUT_S))

    def close(self) -> None:
        """Stops sending and closes the channels (on the running loop, if there is one)."""
        for task in self._sending:
            task.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop left: the connections went with it
        for channel in self._channels:
            task = loop.create_task(channel.close())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

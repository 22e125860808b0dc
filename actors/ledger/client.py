"""How a shard reaches the credit ledger: a small interface with a Ray implementation (one call
per ledger shard per batch, answers awaited with a timeout; outcomes sent without waiting) and an
in-process one for unit tests. The shard (`actors.shard.credit`) sees only `LedgerClient`."""

from __future__ import annotations

from typing import Any, Protocol

import ray
from ray.exceptions import GetTimeoutError, RayError

from actors.ledger.ledger import Ledger
from actors.routing import ledger_of
from core.credit import SETTLE, HoldAnswer, HoldAsk, HoldCall, Outcomes, Owner
from core.keys import charge_pass_id
from core.records import decoder, encode

# A hold waits at most this long, then its items are refused for a retry and their holds
# released; the shard stalls no longer than this while a crashed ledger restarts.
HOLD_TIMEOUT_S = 2.0
RECOVER_TIMEOUT_S = 120.0
_ANSWERS = decoder(list[HoldAnswer])


class LedgerClient(Protocol):
    def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        """The answers in ask order, or None when the ledger could not be asked."""

    def send(self, outcomes: dict[bytes, int]) -> None:
        """Sends settles and releases (key -> SETTLE | RELEASE); does not wait."""

    def delivered(self) -> tuple[dict[bytes, int], list[bytes]]:
        """(outcomes the ledger has taken, keys whose sending failed) since the last call."""

    def recover(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        """At shard start: replays the outbox, fences older incarnations, releases orphans."""

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

    def close(self) -> None:
        """The ledgers belong to the caller that made them (tests share them between shards)."""


class RayLedgerClient:
    """The ledger actors (`ledger-{k}`), from inside a shard actor."""

    def __init__(self, handles: list[Any], hold_timeout_s: float = HOLD_TIMEOUT_S) -> None:
        self.handles = handles
        self.hold_timeout_s = hold_timeout_s
        self._sent: list[tuple[Any, dict[bytes, int]]] = []

    def hold(self, owner: Owner, asks: list[HoldAsk]) -> list[HoldAnswer] | None:
        groups = _group(asks, len(self.handles))
        refs = [
            self.handles[k].hold.remote(encode(HoldCall(owner, [asks[i] for i in idx])))
            for k, idx in groups.items()
        ]
        try:
            replies = ray.get(refs, timeout=self.hold_timeout_s)
        except (GetTimeoutError, RayError):
            return None
        out: list[HoldAnswer | None] = [None] * len(asks)
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, answer in zip(idx, _ANSWERS.decode(reply), strict=True):
                out[i] = answer
        return [a for a in out if a is not None]

    def send(self, outcomes: dict[bytes, int]) -> None:
        n = len(self.handles)
        for k, part in _split(outcomes, n).items():
            keys = {key: outcomes[key] for key in (*part.settle, *part.release)}
            self._sent.append((self.handles[k].apply.remote(encode(part)), keys))

    def delivered(self) -> tuple[dict[bytes, int], list[bytes]]:
        if not self._sent:
            return {}, []
        refs = [ref for ref, _ in self._sent]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done_refs = set(ready)
        done: dict[bytes, int] = {}
        failed: list[bytes] = []
        pending = []
        for ref, keys in self._sent:
            if ref not in done_refs:
                pending.append((ref, keys))
                continue
            try:
                ray.get(ref, timeout=0)
                done.update(keys)
            except RayError:
                failed.extend(keys)
        self._sent = pending
        return done, failed

    def recover(self, owner: Owner, outcomes: dict[bytes, int]) -> int:
        parts = _split(outcomes, len(self.handles))
        refs = [
            h.recover.remote(encode((owner, parts.get(k, Outcomes()))))
            for k, h in enumerate(self.handles)
        ]
        return sum(ray.get(refs, timeout=RECOVER_TIMEOUT_S))

    def close(self) -> None:
        self._sent = []

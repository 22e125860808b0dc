"""Ledger: one shard of the holder-wide credit ledger (passes with crc32(pass_id) % n == index).

A plain class (constructed directly in tests) over `core.credit.CreditBook` and its LMDB store:
every call changes memory, writes the changes in one transaction and only then answers. A failed
write puts memory back as the store has it. `LedgerService` is what Ray serves: the same calls
with their records encoded. Without a store (a shard's unit tests) nothing is durable.
"""

from __future__ import annotations

import os
from pathlib import Path

from actors.errors import DataDirMismatch
from actors.ledger.store import LedgerStore, ledger_dir
from core.credit import Charge, CreditBook, HoldAnswer, HoldCall, Outcomes, Owner
from core.records import decoder, encode

_HOLD_CALL = decoder(HoldCall)
_OUTCOMES = decoder(Outcomes)
_RECOVERY = decoder(tuple[Owner, Outcomes])


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
        answers = [self.book.hold(call.owner, ask, changed) for ask in call.asks]
        self._commit(changed)
        return answers

    def apply(self, outcomes: Outcomes) -> None:
        changed: dict[bytes, Charge] = {}
        self.book.apply(outcomes, changed)
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

    def __init__(self, index: int, n_ledgers: int, data_dir: str) -> None:
        path = ledger_dir(Path(data_dir), index)
        store = LedgerStore(path)
        seen = store.get_meta("n_ledgers")
        if seen is None:
            store.put_meta("n_ledgers", n_ledgers)
        elif seen != n_ledgers:
            store.close()
            raise DataDirMismatch(ledger_layout_problem(int(str(seen)), n_ledgers))
        self.ledger = Ledger(store)
        (path / "pid").write_text(str(os.getpid()))

    def hold(self, payload: bytes) -> bytes:
        return encode(self.ledger.hold(_HOLD_CALL.decode(payload)))

    def apply(self, payload: bytes) -> bool:
        self.ledger.apply(_OUTCOMES.decode(payload))
        return True

    def recover(self, payload: bytes) -> int:
        owner, outcomes = _RECOVERY.decode(payload)
        return self.ledger.recover(owner, outcomes)

    def charges_of(self, pass_id: str) -> bytes:
        return encode(self.ledger.charges_of(pass_id))

    def stats(self) -> dict[str, int]:
        return self.ledger.stats()

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True

"""A ledger shard's LMDB environment: the charges (keyed by `core.keys.charge_key`) and the
fence of each venue shard. Every ledger call writes its changes in one transaction, before the
ledger answers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import lmdb
import msgspec

from actors.errors import storage_error
from core.credit import Charge, Fence
from core.records import decoder, encode

LEDGER_MAP_SIZE = 4 << 30  # sparse
_CHARGE = decoder(Charge)
_FENCE_REC = decoder(Fence)
_FENCE = struct.Struct(">I")


def ledger_dir(data_dir: Path, index: int) -> Path:
    return data_dir / "ledger" / f"ledger-{index}"


class LedgerStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(str(path), map_size=LEDGER_MAP_SIZE, max_dbs=4)
        except lmdb.Error as exc:
            raise storage_error(f"cannot open ledger store at {path}", exc) from exc
        self._charge = self._env.open_db(b"charge")
        self._fence = self._env.open_db(b"fence")
        self._meta = self._env.open_db(b"meta")

    def commit(self, charges: dict[bytes, Charge], fences: dict[int, int]) -> None:
        if not charges and not fences:
            return
        try:
            with self._env.begin(write=True) as txn:
                for key, charge in charges.items():
                    txn.put(key, encode(charge), db=self._charge)
                for shard_id, incarnation in fences.items():
                    txn.put(_FENCE.pack(shard_id), encode(Fence(incarnation)), db=self._fence)
        except lmdb.Error as exc:
            raise storage_error("ledger commit failed", exc) from exc

    def iter_charges(self) -> Iterator[tuple[bytes, Charge]]:
        with self._env.begin(db=self._charge, buffers=True) as txn:
            for key, raw in txn.cursor():
                yield bytes(key), _CHARGE.decode(raw)

    def iter_fences(self) -> Iterator[tuple[int, int]]:
        with self._env.begin(db=self._fence) as txn:
            for key, raw in txn.cursor():
                yield _FENCE.unpack(key)[0], _FENCE_REC.decode(raw).incarnation

    def get_meta(self, key: str) -> object:
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(key.encode())
            return None if raw is None else msgspec.msgpack.decode(raw)

    def put_meta(self, key: str, value: object) -> None:
        try:
            with self._env.begin(write=True, db=self._meta) as txn:
                txn.put(key.encode(), encode(value))
        except lmdb.Error as exc:
            raise storage_error("ledger meta write failed", exc) from exc

    def close(self) -> None:
        self._env.close()

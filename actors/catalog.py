"""The pass catalog: one LMDB environment per node, credential -> pass_id and pass_id -> record.

One process writes (`CatalogWriter`, wrapped as a Ray actor); shards and ingress processes read it
through memory-mapped read transactions (`CatalogReader`), so a revocation is visible to the very
next batch of every shard on the node.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lmdb
import msgspec

from actors.errors import StorageError, storage_error
from core.keys import credential_key
from core.limits import CREDENTIAL_VALUE, text_problem
from core.models import PassStatus
from core.records import PassRecord, decoder, encode

_PASS = decoder(PassRecord)
CATALOG_MAP_SIZE = 64 << 30  # sparse; 10 M passes need about 3 GiB


def catalog_path(data_dir: Path) -> Path:
    return data_dir / "catalog"


def _open(path: Path, *, readonly: bool) -> lmdb.Environment:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return lmdb.open(
            str(path),
            map_size=CATALOG_MAP_SIZE,
            max_dbs=4,
            readonly=readonly,
            # Readers see commits at once; the writer fsyncs because an import must survive.
            readahead=False,
            max_readers=1024,
        )
    except lmdb.Error as exc:
        raise storage_error(f"cannot open pass catalog at {path}", exc) from exc


class CatalogReader:
    """Read-only view shared by every shard on the node."""

    def __init__(self, path: Path) -> None:
        self._env = _open(path, readonly=True)
        self._cred = self._env.open_db(b"cred", create=False)
        self._pass = self._env.open_db(b"pass", create=False)

    def begin(self) -> lmdb.Transaction:
        return self._env.begin(buffers=True)

    def lookup(self, txn: lmdb.Transaction, kind: int, value: str) -> PassRecord | None:
        """The current record behind a credential, read in the caller's transaction.

        Every lookup decodes the stored bytes (under half a microsecond). There is no cache of
        decoded records: one per shard held hundreds of thousands of objects the garbage
        collector walked again and again (gen-1 and full collections of 50-100 ms with 100,000
        passes), to save a quarter of a microsecond per lookup.
        """
        pass_id = txn.get(credential_key(kind, value), db=self._cred)
        if pass_id is None:
            return None
        return self._record(txn, bytes(pass_id))

    def lookup_id(self, txn: lmdb.Transaction, pass_id: str) -> PassRecord | None:
        """The current record of a pass id (a signed QR code names its pass), in the caller's
        transaction."""
        if text_problem(pass_id) is not None:
            return None  # no such key can exist, and LMDB would refuse an oversized one
        return self._record(txn, pass_id.encode())

    def _record(self, txn: lmdb.Transaction, key: bytes) -> PassRecord | None:
        raw = txn.get(key, db=self._pass)
        if raw is None:
            return None
        rec: PassRecord = _PASS.decode(raw)
        return rec

    def get(self, pass_id: str) -> PassRecord | None:
        if text_problem(pass_id) is not None:
            return None  # no such key can exist, and LMDB would refuse an oversized one
        with self.begin() as txn:
            raw = txn.get(pass_id.encode(), db=self._pass)
            return None if raw is None else _PASS.decode(raw)

    def find(self, kind: int, value: str) -> PassRecord | None:
        if kind not in (1, 2, 3) or text_problem(value, CREDENTIAL_VALUE) is not None:
            return None
        with self.begin() as txn:
            return self.lookup(txn, kind, value)

    def count(self) -> int:
        with self.begin() as txn:
            return int(txn.stat(self._pass)["entries"])

    def close(self) -> None:
        self._env.close()


class CatalogWriter:
    """The single writer. Upserts replace a pass and re-point its credentials."""

    def __init__(self, path: Path) -> None:
        self._env = _open(path, readonly=False)
        self._cred = self._env.open_db(b"cred")
        self._pass = self._env.open_db(b"pass")

    def upsert(self, records: Iterable[PassRecord]) -> int:
        """Writes all records in one transaction; returns how many."""
        stored, problems = self.upsert_each(list(records))
        if problems:
            raise StorageError(f"pass catalog refused {len(problems)} records")
        return stored

    def upsert_each(self, records: list[PassRecord]) -> tuple[int, list[tuple[int, str]]]:
        """Stores every acceptable record in one transaction; a record that cannot be stored fails
        alone, before the commit. Returns (stored, [(index, problem)])."""
        problems: list[tuple[int, str]] = []
        stored = 0
        try:
            with self._env.begin(write=True) as txn:
                for i, rec in enumerate(records):
                    problem = record_problem(rec)
                    if problem is not None:
                        problems.append((i, problem))
                        continue
                    self._put(txn, rec)
                    stored += 1
        except lmdb.Error as exc:
            raise storage_error("pass catalog write failed", exc) from exc
        return stored, problems

    def _put(self, txn: lmdb.Transaction, rec: PassRecord) -> None:
        key = rec.pass_id.encode()
        old = txn.get(key, db=self._pass)
        if old is not None:
            new_creds = {credential_key(int(k), v) for k, v in rec.credentials}
            for k, v in _PASS.decode(old).credentials:
                ck = credential_key(int(k), v)
                if ck not in new_creds:
                    txn.delete(ck, db=self._cred)
        txn.put(key, encode(rec), db=self._pass)
        for kind, value in rec.credentials:
            txn.put(credential_key(int(kind), value), key, db=self._cred)

    def set_status(self, pass_id: str, status: PassStatus) -> PassRecord | None:
        """Revokes or blocks a pass; None when it does not exist."""
        if text_problem(pass_id) is not None:
            return None
        try:
            with self._env.begin(write=True) as txn:
                raw = txn.get(pass_id.encode(), db=self._pass)
                if raw is None:
                    return None
                rec = msgspec.structs.replace(_PASS.decode(raw), status=status)
                txn.put(pass_id.encode(), encode(rec), db=self._pass)
                return rec
        except lmdb.Error as exc:
            raise storage_error("pass catalog write failed", exc) from exc

    def count(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._pass)["entries"])

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self._env.close()


def record_problem(rec: PassRecord) -> str | None:
    """The storage-level check of one pass: every key it makes must be a valid LMDB key."""
    problem = text_problem(rec.pass_id)
    if problem is not None:
        return f"pass_id: {problem}"
    for i, (kind, value) in enumerate(rec.credentials):
        if int(kind) not in (1, 2, 3):
            return f"credentials[{i}].kind: unknown value"
        problem = text_problem(value, CREDENTIAL_VALUE)
        if problem is not None:
            return f"credentials[{i}].value: {problem}"
    return None

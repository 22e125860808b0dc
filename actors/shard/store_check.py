"""Start-up store checks: refuses a catalog or shard LMDB store that is missing, empty or damaged
while the data directory says it held data, before Ray starts or LMDB opens anything.

LMDB cannot be left to notice on its own: it takes an empty `data.mdb` for a brand-new environment
(committed entries vanish without a word), and it maps a truncated one until a read faults (the
actor crash-loops for ever). So this module reads the two meta pages of each `data.mdb` itself and
keeps a small manifest in the data directory (`passgate-manifest.json`) naming every store that has
held data and the highest LMDB transaction id it had when last seen healthy. LMDB transaction ids
only grow, so a store whose id went backwards was replaced by an older copy or damaged.

The signed-code claims store (`actors.shard.code_claims`) is the exception: it holds only claims
of codes still inside their window and is not fsynced, so it is never recorded, and a damaged one
is dropped (and recreated empty) instead of refused. So is the shared-card sightings store
(`actors.shard.sightings`): advisory, not fsynced, and rebuilt by the next admitted entries.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from actors.catalog import catalog_path
from actors.errors import StoreCorrupt
from actors.shard.code_claims import codes_path
from actors.shard.sightings import sightings_path
from actors.shard.venue_shard import shard_dir

log = logging.getLogger("passgate.store_check")

MANIFEST_NAME = "passgate-manifest.json"
MANIFEST_FORMAT = 1
DATA_FILE = "data.mdb"
_TODO = "restore it from backup or start with a fresh --data-dir"

# LMDB 0.9 on-disk layout (native byte order): a 16-byte page header (pgno u64, pad u16,
# flags u16, lower/upper u16+u16), then on meta pages MDB_meta: magic u32, version u32,
# address u64, mapsize u64, two MDB_db records of 48 bytes (free db, main db), last_pg u64,
# txnid u64. The page size is the free db's md_pad; meta page 1 starts one page in.
_PAGE_HEADER = struct.Struct("=QHHI")
_META_HEAD = struct.Struct("=IIQQ")
_DB = struct.Struct("=IHHQQQQQ")
_META_TAIL = struct.Struct("=QQ")
_META_OFFSET = _PAGE_HEADER.size
_DBS_OFFSET = _META_OFFSET + _META_HEAD.size
_TAIL_OFFSET = _DBS_OFFSET + 2 * _DB.size
_META_END = _TAIL_OFFSET + _META_TAIL.size
_MAGIC = 0xBEEFC0DE
_DATA_VERSION = 1
_P_BRANCH, _P_LEAF, _P_META = 0x01, 0x02, 0x08
_P_INVALID = (1 << 64) - 1
_MIN_PAGE, _MAX_PAGE = 512, 1 << 16


class UnreadableStore(Exception):
    """`data.mdb` is not a whole LMDB file; `problem` says what is wrong, in a few words."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class LmdbMeta:
    """The facts of the newer meta page of an LMDB file."""

    page_size: int
    txnid: int
    last_pg: int
    file_size: int


# -- reading an LMDB file -------------------------------------------------------------------------


def read_meta(path: Path) -> LmdbMeta:
    """Reads and verifies both meta pages and the root pages of `data.mdb` without opening LMDB.

    Raises `UnreadableStore` when the file is missing, empty, truncated or not LMDB.
    """
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise UnreadableStore("empty")
            first = _meta_page(_read_at(f, 0, _META_END, "meta page 0"), 0)
            page_size = first[0]
            second = _meta_page(_read_at(f, page_size, _META_END, "meta page 1"), 1)
            if second[0] != page_size:
                raise UnreadableStore("the two meta pages disagree on the page size")
            # LMDB opens the meta with the larger transaction id; so do we.
            _, txnid, last_pg, roots = max(first, second, key=lambda m: m[1])
            needed = (last_pg + 1) * page_size
            if size < needed:
                raise UnreadableStore(f"truncated: {size} of {needed} bytes")
            for root in roots:
                _check_root(f, root, last_pg, page_size)
    except FileNotFoundError:
        raise UnreadableStore("missing") from None
    except OSError as exc:
        raise UnreadableStore(f"unreadable: {exc.strerror or exc}") from None
    return LmdbMeta(page_size, txnid, last_pg, size)


def _read_at(f: BinaryIO, offset: int, length: int, what: str) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) < length:
        raise UnreadableStore(f"truncated inside {what}")
    return bytes(data)


def _meta_page(raw: bytes, index: int) -> tuple[int, int, int, tuple[int, int]]:
    """(page_size, txnid, last_pg, roots of the free and main db) of one meta page."""
    pgno, _pad, flags, _bounds = _PAGE_HEADER.unpack_from(raw, 0)
    magic, version, _address, _mapsize = _META_HEAD.unpack_from(raw, _META_OFFSET)
    if pgno != index or not flags & _P_META or magic != _MAGIC:
        raise UnreadableStore(f"meta page {index} is not an LMDB meta page")
    if version != _DATA_VERSION:
        raise UnreadableStore(f"meta page {index} has LMDB data version {version}")
    free_db = _DB.unpack_from(raw, _DBS_OFFSET)
    main_db = _DB.unpack_from(raw, _DBS_OFFSET + _DB.size)
    page_size = free_db[0]
    if not _MIN_PAGE <= page_size <= _MAX_PAGE or page_size & (page_size - 1):
        raise UnreadableStore(f"meta page {index} has page size {page_size}")
    last_pg, txnid = _META_TAIL.unpack_from(raw, _TAIL_OFFSET)
    return page_size, txnid, last_pg, (free_db[7], main_db[7])


def _check_root(f: BinaryIO, root: int, last_pg: int, page_size: int) -> None:
    """A B-tree root must lie inside the file and carry its own page number: a cheap probe that
    catches a file overwritten or shifted behind intact meta pages."""
    if root == _P_INVALID:
        return
    if root > last_pg:
        raise UnreadableStore(f"root page {root} lies past the last page {last_pg}")
    pgno, _pad, flags, _bounds = _PAGE_HEADER.unpack(
        _read_at(f, root * page_size, 16, f"root page {root}")
    )
    if pgno != root or not flags & (_P_BRANCH | _P_LEAF):
        raise UnreadableStore(f"root page {root} is not a B-tree page")


# -- the manifest ---------------------------------------------------------------------------------


def manifest_path(data_dir: Path) -> Path:
    return data_dir / MANIFEST_NAME


def store_dirs(data_dir: Path, n_shards: int) -> list[str]:
    """Every store a server with `n_shards` shards uses, relative to the data directory."""
    dirs = [catalog_path(data_dir)] + [shard_dir(data_dir, i) for i in range(n_shards)]
    # The credit ledger's stores (actors.ledger), as many as it was started with.
    dirs += sorted((data_dir / "ledger").glob("ledger-*"))
    return [d.relative_to(data_dir).as_posix() for d in dirs]


def load_manifest(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The recorded stores (empty for a data directory that has none yet); raises StoreCorrupt
    when the manifest exists but cannot be read, since nothing could then be checked."""
    path = manifest_path(data_dir)
    try:
        doc = json.loads(path.read_text())
        stores = doc["stores"]
        if doc.get("format") != MANIFEST_FORMAT or not isinstance(stores, dict):
            raise ValueError(f"format {doc.get('format')!r}")
        return {str(k): _recorded(v) for k, v in stores.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = type(exc).__name__ if isinstance(exc, KeyError) else str(exc)[:80]
        raise StoreCorrupt(
            f"store check: {path} is unreadable ({problem}); restore it from backup, "
            "or delete it to accept the stores as they are now"
        ) from None


def _recorded(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("txnid"), int):
        raise ValueError("a store without a txnid")
    return entry


def record_stores(data_dir: Path, n_shards: int, when: str) -> None:
    """Records every store's current LMDB facts in the manifest (atomically); `when` says at which
    moment ("start" or "stop"). A store that cannot be read now keeps its previous entry, and a
    recorded txnid never goes down, so damage done while running is still caught at next start."""
    stores = load_manifest(data_dir)
    for rel in sorted(set(store_dirs(data_dir, n_shards)) | set(stores)):
        try:
            meta = read_meta(data_dir / rel / DATA_FILE)
        except UnreadableStore as exc:
            if (data_dir / rel).exists():
                log.warning("store check: not recording %s (%s)", rel, exc.problem)
            continue
        before = stores.get(rel, {}).get("txnid", 0)
        stores[rel] = {
            "file": f"{rel}/{DATA_FILE}",
            "txnid": max(before, meta.txnid),
            "last_pg": meta.last_pg,
            "page_size": meta.page_size,
            "recorded_at": when,
        }
    _write_atomically(manifest_path(data_dir), {"format": MANIFEST_FORMAT, "stores": stores})


def _write_atomically(path: Path, doc: dict[str, Any]) -> None:
    """temp file + fsync + rename + fsync of the directory: a crash leaves the old or the new
    manifest, never a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the check ------------------------------------------------------------------------------------


def check_data_dir(data_dir: Path, n_shards: int) -> None:
    """Refuses, with one line naming the file and what to do, a store that is damaged, or that
    the manifest recorded but is now missing, empty or older. A fresh data directory passes."""
    recorded = load_manifest(data_dir)
    for rel in sorted(set(store_dirs(data_dir, n_shards)) | set(recorded)):
        _check_store(data_dir, rel, recorded.get(rel))
    _drop_damaged(codes_path(data_dir), "replay claims of codes still inside their window")
    _drop_damaged(sightings_path(data_dir), "advisory shared-card sightings")


def _drop_damaged(store: Path, holds: str) -> None:
    path = store / DATA_FILE
    try:
        read_meta(path)
    except UnreadableStore as exc:
        if exc.problem in ("missing", "empty"):
            return
        log.warning(
            "store check: %s is damaged (%s); dropping it: it holds only %s",
            path,
            exc.problem,
            holds,
        )
        for name in (DATA_FILE, "lock.mdb"):
            (path.parent / name).unlink(missing_ok=True)


def _check_store(data_dir: Path, rel: str, recorded: dict[str, Any] | None) -> None:
    path = data_dir / rel / DATA_FILE
    try:
        meta = read_meta(path)
    except UnreadableStore as exc:
        if recorded is None and exc.problem in ("missing", "empty"):
            return  # never held data: LMDB creates it afresh
        raise StoreCorrupt(_refusal(path, exc.problem, recorded)) from None
    if recorded is not None and meta.txnid < recorded["txnid"]:
        raise StoreCorrupt(
            f"store check: {path} is older than the data directory recorded (LMDB txn "
            f"{meta.txnid} < {recorded['txnid']}): replaced by an older copy or damaged; "
            f"restore the latest backup, or delete {manifest_path(data_dir)} to accept it as it is"
        )


def _refusal(path: Path, problem: str, recorded: dict[str, Any] | None) -> str:
    if recorded is not None and problem in ("missing", "empty"):
        return (
            f"store check: {path} is {problem} but the data directory recorded "
            f"{recorded['txnid']} commits there; {_TODO}"
        )
    return f"store check: {path} is damaged ({problem}); {_TODO}"

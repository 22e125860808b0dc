"""The LMDB meta-page reader and the start-up store check, on real small LMDB files (no Ray)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest

from actors.shard.store_check import (
    DATA_FILE,
    MANIFEST_NAME,
    StoreCorrupt,
    UnreadableStore,
    check_data_dir,
    load_manifest,
    read_meta,
    record_stores,
    store_dirs,
)

N_SHARDS = 2


def _fill(path: Path, commits: int, start: int = 0) -> None:
    """`commits` write transactions into the LMDB environment at `path`, in a named db as the
    stores use, with values big enough to need several pages."""
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 26, max_dbs=2)
    try:
        db = env.open_db(b"log")
        for i in range(start, start + commits):
            with env.begin(write=True) as txn:
                for j in range(20):
                    txn.put(f"{i:06d}-{j:03d}".encode(), bytes([i % 251]) * 200, db=db)
    finally:
        env.close()


def _lmdb_facts(path: Path) -> tuple[int, int]:
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=2)
    try:
        info = env.info()
        return int(info["last_txnid"]), int(info["last_pgno"])
    finally:
        env.close()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    _fill(tmp_path / "env", 30)
    return tmp_path / "env" / DATA_FILE


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose every store held data at one clean start."""
    root = tmp_path / "data"
    for rel in store_dirs(root, N_SHARDS):
        _fill(root / rel, 3)
    record_stores(root, N_SHARDS, "start")
    return root


# -- the meta-page reader -------------------------------------------------------------------------


def test_read_meta_agrees_with_lmdb(store: Path) -> None:
    meta = read_meta(store)
    assert (meta.txnid, meta.last_pg) == _lmdb_facts(store.parent)
    assert meta.file_size == store.stat().st_size >= (meta.last_pg + 1) * meta.page_size
    assert meta.txnid > 30  # one commit per transaction, plus the named db's creation


def test_read_meta_of_a_new_environment(tmp_path: Path) -> None:
    lmdb.open(str(tmp_path), map_size=1 << 20).close()
    meta = read_meta(tmp_path / DATA_FILE)
    assert (meta.txnid, meta.last_pg) == (0, 1)


def _truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _garbage_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(os.urandom(64))


def _garbage_meta_1(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(read_meta(path).page_size + 16)
        f.write(b"\xff" * 8)


def _zero_data_pages(path: Path) -> None:
    # Intact meta pages in front of wiped B-tree pages: only the root probe can tell.
    page_size = read_meta(path).page_size
    with path.open("r+b") as f:
        f.seek(2 * page_size)
        f.write(bytes(path.stat().st_size - 2 * page_size))


def _shorter_than_one_page(path: Path) -> None:
    os.truncate(path, 100)


CORRUPTIONS: list[tuple[str, Callable[[Path], None], str]] = [
    ("zero length", lambda p: os.truncate(p, 0), "empty"),
    ("half length", _truncate_half, "truncated"),
    ("shorter than a page", _shorter_than_one_page, "truncated inside meta page 0"),
    ("garbage header", _garbage_header, "meta page 0 is not an LMDB meta page"),
    ("garbage second meta", _garbage_meta_1, "meta page 1 is not an LMDB meta page"),
    ("zeroed data pages", _zero_data_pages, "root page"),
    ("missing file", lambda p: p.unlink(), "missing"),
]


@pytest.mark.parametrize(
    ("damage", "expected"), [(c[1], c[2]) for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS]
)
def test_read_meta_detects(
    store: Path, tmp_path: Path, damage: Callable[[Path], None], expected: str
) -> None:
    copy = tmp_path / "copy" / DATA_FILE
    copy.parent.mkdir()
    shutil.copyfile(store, copy)
    damage(copy)
    with pytest.raises(UnreadableStore) as err:
        read_meta(copy)
    assert expected in err.value.problem


# -- the data-directory check ---------------------------------------------------------------------


def _refusal(data_dir: Path) -> str:
    with pytest.raises(StoreCorrupt) as err:
        check_data_dir(data_dir, N_SHARDS)
    line = str(err.value)
    assert "\n" not in line and line.startswith("store check: ")
    return line


def test_fresh_data_dir_passes(tmp_path: Path) -> None:
    check_data_dir(tmp_path / "data", N_SHARDS)
    check_data_dir(tmp_path, N_SHARDS)


def test_healthy_data_dir_passes_and_grows(data_dir: Path) -> None:
    check_data_dir(data_dir, N_SHARDS)
    _fill(data_dir / "shards" / "shard-1", 5, start=100)
    check_data_dir(data_dir, N_SHARDS)


def test_manifest_records_every_store(data_dir: Path) -> None:
    recorded = load_manifest(data_dir)
    assert sorted(recorded) == ["catalog", "shards/shard-0", "shards/shard-1"]
    for rel, entry in recorded.items():
        assert entry["txnid"] == _lmdb_facts(data_dir / rel)[0]
        assert entry["recorded_at"] == "start"


def test_empty_recorded_store_is_refused(data_dir: Path) -> None:
    path = data_dir / "shards" / "shard-1" / DATA_FILE
    txnid = read_meta(path).txnid
    os.truncate(path, 0)
    line = _refusal(data_dir)
    assert line == (
        f"store check: {path} is empty but the data directory recorded {txnid} commits there; "
        "restore it from backup or start with a fresh --data-dir"
    )


def test_missing_shard_dir_is_refused(data_dir: Path) -> None:
    shutil.rmtree(data_dir / "shards" / "shard-0")
    line = _refusal(data_dir)
    assert f"{data_dir / 'shards' / 'shard-0' / DATA_FILE} is missing" in line


def test_half_catalog_is_refused(data_dir: Path) -> None:
    path = data_dir / "catalog" / DATA_FILE
    _truncate_half(path)
    assert f"{path} is damaged (truncated: " in _refusal(data_dir)


def test_damaged_store_is_refused_without_a_manifest(data_dir: Path) -> None:
    (data_dir / MANIFEST_NAME).unlink()
    _garbage_header(data_dir / "catalog" / DATA_FILE)
    assert "is damaged (meta page 0" in _refusal(data_dir)


def test_empty_store_without_a_manifest_is_new(data_dir: Path) -> None:
    # Without a manifest nothing says the store held data: LMDB starts it afresh, as before.
    (data_dir / MANIFEST_NAME).unlink()
    os.truncate(data_dir / "shards" / "shard-0" / DATA_FILE, 0)
    check_data_dir(data_dir, N_SHARDS)


def test_older_copy_is_refused(data_dir: Path, tmp_path: Path) -> None:
    shard = data_dir / "shards" / "shard-0"
    backup = tmp_path / "backup"
    shutil.copytree(shard, backup)
    _fill(shard, 4, start=200)
    record_stores(data_dir, N_SHARDS, "stop")
    shutil.rmtree(shard)
    shutil.copytree(backup, shard)
    line = _refusal(data_dir)
    assert f"{shard / DATA_FILE} is older than the data directory recorded" in line
    assert f"delete {data_dir / MANIFEST_NAME}" in line
    # Deleting the manifest is the operator's way to accept the restored copy.
    (data_dir / MANIFEST_NAME).unlink()
    check_data_dir(data_dir, N_SHARDS)


def test_record_keeps_what_it_cannot_read(data_dir: Path) -> None:
    before = load_manifest(data_dir)
    os.truncate(data_dir / "catalog" / DATA_FILE, 0)
    record_stores(data_dir, N_SHARDS, "stop")
    after = load_manifest(data_dir)
    assert after["catalog"] == before["catalog"]
    assert after["shards/shard-0"]["recorded_at"] == "stop"
    assert "is empty" in _refusal(data_dir)


def test_recorded_txnid_never_goes_down(data_dir: Path, tmp_path: Path) -> None:
    shard = data_dir / "shards" / "shard-1"
    backup = tmp_path / "backup"
    shutil.copytree(shard, backup)
    _fill(shard, 4, start=300)
    record_stores(data_dir, N_SHARDS, "start")
    high = load_manifest(data_dir)["shards/shard-1"]["txnid"]
    shutil.rmtree(shard)
    shutil.copytree(backup, shard)
    record_stores(data_dir, N_SHARDS, "stop")
    assert load_manifest(data_dir)["shards/shard-1"]["txnid"] == high


@pytest.mark.parametrize(
    "text", ["", "{not json", json.dumps({"format": 99, "stores": {}}), json.dumps({"x": 1})]
)
def test_unreadable_manifest_is_refused(data_dir: Path, text: str) -> None:
    (data_dir / MANIFEST_NAME).write_text(text)
    line = _refusal(data_dir)
    assert f"{data_dir / MANIFEST_NAME} is unreadable" in line


def test_manifest_write_leaves_no_temp_file(data_dir: Path) -> None:
    record_stores(data_dir, N_SHARDS, "stop")
    assert sorted(p.name for p in data_dir.iterdir()) == ["catalog", MANIFEST_NAME, "shards"]

"""Microbenchmarks of the real code paths, without gRPC or Ray: one table of figures.

Each row times the production function on generated data; nothing is stubbed out. Figures are
best-of-N wall-clock runs, so a noisy neighbour can only make them look worse.

The shard batch path runs twice over the same scans: with static credentials (cards) and with
fresh signed QR codes (each verified once, claimed once), each run on its own fresh store, the two
interleaved so that drift on a shared machine hits both alike.

The shard's clock runs from 10:00 on the benchmark's day, as in service.

The same path again, committed one batch at a time (decide, durable commit, answer, next) and
through the commit pipeline (`actors.shard.pipeline`: batch N+1 decided while N commits, with a
few batches in flight as the ingress sends them), each on a fresh store with real commits on disk.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.catalog import CatalogReader, CatalogWriter, catalog_path
from actors.codec import decode_requests_each, encode_batch
from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from actors.routing import shard_of
from actors.shard.pipeline import CommitPipeline
from actors.shard.service import SWITCH_INTERVAL_S, decide_encoded
from actors.shard.store import BatchWrites, ShardStore
from actors.shard.venue_shard import VenueShard
from bench.disk import entry_batch
from core import qr
from core.clock import local_time
from core.counters import CapacityCounters, warm
from core.keys import usage_key
from core.models import CapacityView, CredentialKind, Direction, QrPolicy, Request, Usage
from core.population import generate_passes
from core.rules import decide
from ops.qr import DEV_KEY_ID, ensure_dev_issuer_key, load_private_key


@dataclass
class Row:
    name: str
    per_item_us: float
    items_per_s: float
    note: str = ""


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Runs fn `runs` times; returns the fastest wall time and the items it handled."""
    best, items = float("inf"), 0
    for _ in range(runs):
        t0 = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - t0)
    return best, items


def _row(name: str, seconds: float, items: int, note: str = "") -> Row:
    return Row(name, seconds / items * 1e6, items / seconds, note)


class Fixture:
    """A province, a populated catalog and shard store in a temporary data directory."""

    def __init__(self, n_passes: int) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="passgate-bench-")
        self.data = Path(self.tmp.name)
        self.province = load_province(DEFAULT_CONFIG_DIR)
        # 10:00 in the province on an ordinary Friday, when the venues are open.
        opens = datetime(2026, 10, 16, 10, 0, tzinfo=ZoneInfo(self.province.default_tz))
        self.today = opens.date().toordinal()
        self.now_ms = int(opens.timestamp() * 1000)
        writer = CatalogWriter(catalog_path(self.data))
        self.passes = list(generate_passes(self.province, 0, n_passes, 7, self.today))
        writer.upsert(self.passes)
        writer.close()
        self.venues = sorted(self.province.venues)

    def requests(
        self, n: int, venues: list[str], sign: Callable[[str], str] | None = None
    ) -> list[Request]:
        """Entries of distinct-ish passes at venues their product covers (mostly admits); with
        `sign`, each presents the signed QR code `sign(pass_id)` instead of its first credential."""
        rows = []
        allowed = set(venues)
        for i in range(n):
            p = self.passes[(i * 7919) % len(self.passes)]
            covered = [v for v in self.province.products[p.product_id].venues if v in allowed]
            venue = self.province.venues[covered[i % len(covered)] if covered else venues[0]]
            gate = sorted(venue.gates)[0]
            kind, value = p.credentials[0]
            if sign is not None:
                kind, value = CredentialKind.QR, sign(p.pass_id)
            rows.append(Request(f"b{i}", venue.venue_id, gate, kind, value))
        return rows

    def running_clock(self) -> Callable[[], int]:
        """A shard clock that starts at `now_ms` and runs, as a shard's clock does in service
        (one standing still puts every record keyed by time on a random page)."""
        start = time.monotonic_ns()
        return lambda: self.now_ms + (time.monotonic_ns() - start) // 1_000_000

    def fresh_data_dir(self, name: str) -> Path:
        """An empty data directory that shares this fixture's catalog and issuer keys."""
        path = self.data / name
        path.mkdir()
        (path / "catalog").symlink_to(self.data / "catalog")
        return path

    def close(self) -> None:
        self.tmp.cleanup()


def bench_decide(fx: Fixture) -> Row:
    venue = fx.province.venues[fx.venues[0]]
    local = local_time(venue.tz, fx.now_ms)
    usage, view = Usage(), CapacityView()
    reqs = [
        Request(f"r{i}", venue.venue_id, sorted(venue.gates)[0], CredentialKind.CARD, "x",
                Direction.ENTRY)
        for i in range(20000)
    ]  # fmt: skip
    passes = fx.passes

    def run() -> int:
        for i, r in enumerate(reqs):
            decide(passes[i % len(passes)], usage, venue, r, fx.now_ms, fx.province, view, local)
        return len(reqs)

    return _row("core.decide", *best_of(5, run))


def bench_counters() -> Row:
    warm()
    c = CapacityCounters(64)
    n = 256
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 64, n).astype(np.int32)
    day = np.full(n, 740000, dtype=np.int32)
    minute = rng.integers(0, 1440, n).astype(np.int32)
    kind = rng.integers(1, 3, n).astype(np.int8)
    slot = np.full(n, -1, dtype=np.int32)

    def run() -> int:
        for _ in range(2000):
            c.apply_batch(idx, day, minute, kind, slot)
        return 2000 * n

    return _row("numba counters apply_batch (256/batch)", *best_of(3, run))


def bench_commit(fx: Fixture, size: int) -> Row:
    store = ShardStore(fx.data / f"commit-{size}")
    batches = max(20, 4096 // size)

    def run() -> int:
        for b in range(batches):
            store.commit(entry_batch(b, size))
        return batches * size

    seconds, items = best_of(2, run)
    store.close()
    note = f"{seconds / batches * 1e3:.2f} ms per commit (fsync)"
    return _row(f"LMDB group commit, batch {size}", seconds, items, note)


def bench_usage_of_pass(fx: Fixture, records: int = 500_000, lookups: int = 2000) -> Row:
    """GetPass reads a pass's usage from every shard, on the shard's event loop: with usage keyed
    by pass first it is one short key range however many records the shard holds."""
    store = ShardStore(fx.data / "usage-of-pass", sync=False)
    venues = fx.venues
    for start in range(0, records, 50_000):
        writes = BatchWrites()
        for i in range(start, min(records, start + 50_000)):
            writes.usage[usage_key(venues[i % len(venues)], f"P{i // 3:010d}")] = Usage(1)
        store.commit(writes)
    owners = [f"P{(i * 7919) % (records // 3):010d}" for i in range(lookups)]

    def run() -> int:
        for pass_id in owners:
            list(store.usage_of_pass(pass_id))
        return lookups

    row = _row(f"usage of one pass (GetPass), {records:,} usage records", *best_of(3, run))
    store.close()
    return row


def bench_catalog(fx: Fixture) -> Row:
    reader = CatalogReader(catalog_path(fx.data))
    creds = [p.credentials[0] for p in fx.passes[:20000]]

    def run() -> int:
        with reader.begin() as txn:
            for kind, value in creds:
                reader.lookup(txn, int(kind), value)
        return len(creds)

    row = _row("catalog lookup (credential -> record)", *best_of(5, run))
    reader.close()
    return row


def _time_shard(fx: Fixture, name: str, payloads: list[bytes], creds: Path) -> float:
    """One pass of `payloads` through a new shard on a fresh store; its wall time."""
    data = fx.fresh_data_dir(name)
    shard = VenueShard(0, 1, fx.province, str(data), fx.running_clock(), str(creds))
    try:
        t0 = time.perf_counter()
        for p in payloads:
            decide_encoded(shard, p)
        return time.perf_counter() - t0
    finally:
        shard.close()


def bench_shard_paths(
    fx: Fixture, batch: int = 256, batches: int = 100, runs: int = 3
) -> list[Row]:
    """The shard batch path with static credentials and with fresh signed QR codes."""
    creds = fx.data / "credentials"
    key = load_private_key(ensure_dev_issuer_key(creds))
    step = qr.step_at(fx.now_ms, QrPolicy())
    mine = [v for v in fx.venues if shard_of(v, 1) == 0]
    n = batch * batches
    static = fx.requests(n, mine)
    signed = fx.requests(n, mine, lambda pass_id: qr.encode(key, DEV_KEY_ID, pass_id, step))
    kinds = {"static": static, "signed": signed}
    payloads = {
        name: [encode_batch(rows[i : i + batch]) for i in range(0, n, batch)]
        for name, rows in kinds.items()
    }
    best = {name: float("inf") for name in kinds}
    for r in range(runs):
        for name in kinds:
            best[name] = min(best[name], _time_shard(fx, f"{name}-{r}", payloads[name], creds))
    drop = 1 - best["static"] / best["signed"]
    return [
        _row(f"shard batch path, static credentials (batch {batch}, incl. LMDB commit)",
             best["static"], n),
        _row(f"shard batch path, fresh signed QR codes (batch {batch}, incl. claims)",
             best["signed"], n, f"{drop:.0%} lower throughput than static"),
    ]  # fmt: skip


async def _through_pipeline(
    pipe: CommitPipeline, shard: VenueShard, payloads: list[bytes], in_flight: int
) -> None:
    """Sends every payload through the pipeline with at most `in_flight` unanswered, in order."""
    gate = asyncio.Semaphore(in_flight)

    async def one(payload: bytes) -> None:
        async with gate:
            items = decode_requests_each(payload)
            encode_batch(await pipe.run(lambda: shard.decide_requests(items)))

    await asyncio.gather(*(one(p) for p in payloads))


def _time_pipelined(fx: Fixture, name: str, payloads: list[bytes], in_flight: int) -> float:
    """As the shard actor runs it: its GIL switch interval, one pipeline over a fresh store."""
    data = fx.fresh_data_dir(name)
    shard = VenueShard(0, 1, fx.province, str(data), fx.running_clock())
    pipe = CommitPipeline(shard)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        t0 = time.perf_counter()
        asyncio.run(_through_pipeline(pipe, shard, payloads, in_flight))
        return time.perf_counter() - t0
    finally:
        sys.setswitchinterval(interval)
        pipe.close()
        shard.close()


def bench_pipeline(
    fx: Fixture, batch: int = 256, batches: int = 100, in_flight: int = 2, runs: int = 5
) -> list[Row]:
    """The shard batch path, one durable commit at a time against the commit pipeline, runs
    interleaved (best of `runs` each)."""
    mine = [v for v in fx.venues if shard_of(v, 1) == 0]
    n = batch * batches
    rows = fx.requests(n, mine)
    payloads = [encode_batch(rows[i : i + batch]) for i in range(0, n, batch)]
    creds = fx.data / "credentials"
    serial = piped = float("inf")
    for r in range(runs):
        serial = min(serial, _time_shard(fx, f"serial-{batch}-{r}", payloads, creds))
        piped = min(piped, _time_pipelined(fx, f"piped-{batch}-{r}", payloads, in_flight))
    gain = serial / piped - 1
    return [
        _row(f"shard batch path, one commit at a time (batch {batch})", serial, n,
             f"{serial / batches * 1e3:.2f} ms per batch"),
        _row(f"shard batch path, pipelined commit (batch {batch}, {in_flight} in flight)",
             piped, n, f"{gain:+.0%} throughput"),
    ]  # fmt: skip


def bench_qr_parts(n: int = 2000) -> list[Row]:
    """Where a signed code's extra time goes: decoding it, and the one Ed25519 verification."""
    key = Ed25519PrivateKey.generate()
    codes = [qr.encode(key, DEV_KEY_ID, f"P{i:010d}", 59_666_666) for i in range(n)]
    tokens = [qr.decode(c) for c in codes]
    pub = key.public_key()

    def decode_all() -> int:
        for c in codes:
            qr.decode(c)
        return n

    def verify_all() -> int:
        for t in tokens:
            assert t is not None
            pub.verify(t.signature, t.signed)
        return n

    verifier = qr.Verifier({DEV_KEY_ID: pub.public_bytes_raw()}, cache_size=n)
    for c in codes:
        verifier.check(c)

    def cached_all() -> int:
        for c in codes:
            verifier.check(c)
        return n

    return [
        _row("signed QR code: decode (no cryptography)", *best_of(5, decode_all)),
        _row("signed QR code: Ed25519 verify (cryptography/OpenSSL)", *best_of(5, verify_all)),
        _row("signed QR code: verifier cache hit (retry, replay)", *best_of(5, cached_all)),
    ]


def run_all(n_passes: int = 50000) -> list[Row]:
    fx = Fixture(n_passes)
    try:
        rows = [bench_decide(fx), bench_counters(), bench_catalog(fx), bench_usage_of_pass(fx)]
        rows += [bench_commit(fx, size) for size in (1, 64, 256, 1024)]
        rows += bench_qr_parts()
        rows += bench_shard_paths(fx)
        rows += bench_pipeline(fx, batch=256, in_flight=2)
        rows += bench_pipeline(fx, batch=16, batches=400, in_flight=4)
        return rows
    finally:
        fx.close()


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | µs per item | items/s | note |", "|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.per_item_us:.2f} | {r.items_per_s:,.0f} | {r.note} |")
    return "\n".join(lines)

"""The province's passes: generated with a fixed seed and imported through Passes.UpsertPasses.

`core.population.generate_passes` is deterministic, so pass i is the same record in every process
and every run: the import is split into slices that several processes generate and stream in
parallel, and the load workers can name pass i's credentials without holding the records. What the
request mix needs (each pass's product, status and credit tier) comes back as compact arrays.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import multiprocessing as mp
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.config_files import load_province
from actors.ingress.convert import pass_proto
from core.population import generate_passes
from loadtest.client import ClientAuth
from proto.passgate.v1 import passes_pb2_grpc

SLICE_MAX = 250_000
# Below this, starting worker processes costs more than it saves.
IN_PROCESS_MAX = 20_000
PROGRESS_EVERY = 1_000
# A slice streams at well over 2,000 passes/s even on a busy box; beyond that it is stuck.
MIN_SLICE_RATE = 2_000
POLL_S = 0.25
LOG_EVERY_S = 5.0

_progress: Any = None


@dataclass
class PopulationIndex:
    """What the request mix needs to know about pass i, as arrays indexed by i."""

    product_ids: tuple[str, ...]
    product: np.ndarray
    status: np.ndarray
    tier: np.ndarray
    groups: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return int(self.product.shape[0])

    def summary(self) -> dict[str, Any]:
        """Shares of products, statuses, credit tiers and groups (for the report)."""
        from core.models import CreditTier, PassStatus

        def shares(arr: np.ndarray, name: Any) -> dict[str, int]:
            values, counts = np.unique(arr, return_counts=True)
            return {name(int(v)): int(c) for v, c in zip(values, counts, strict=True)}

        return {
            "passes": self.count,
            "products": shares(self.product, lambda v: self.product_ids[v]),
            "status": shares(self.status, lambda v: PassStatus(v).name),
            "credit_tier": shares(self.tier, lambda v: CreditTier(v).name),
            "groups": dict(self.groups),
        }


@dataclass(frozen=True)
class _Slice:
    slot: int
    start: int
    count: int
    seed: int
    today: int
    config_dir: str
    product_ids: tuple[str, ...]
    target: str | None
    auth: ClientAuth | None


@dataclass
class _SliceResult:
    slot: int
    product: np.ndarray
    status: np.ndarray
    tier: np.ndarray
    groups: Counter[str]
    upserted: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ImportStats:
    passes: int
    imported: bool
    seconds: float
    upserted: int
    rejected: int
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.passes / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "imported": self.imported,
            "seconds": round(self.seconds, 2),
            "rate_per_s": round(self.rate),
            "upserted": self.upserted,
            "rejected": self.rejected,
            "errors": self.errors[:20],
        }


def _init(progress: Any) -> None:
    global _progress
    _progress = progress


def _run_slice(job: _Slice) -> _SliceResult:
    province = load_province(Path(job.config_dir))
    pos = {pid: i for i, pid in enumerate(job.product_ids)}
    out = _SliceResult(
        job.slot,
        np.zeros(job.count, np.uint16),
        np.zeros(job.count, np.uint8),
        np.zeros(job.count, np.uint8),
        Counter(),
    )

    def records() -> Any:
        passes = generate_passes(province, job.start, job.count, job.seed, job.today)
        for k, rec in enumerate(passes):
            out.product[k] = pos[rec.product_id]
            out.status[k] = int(rec.status)
            out.tier[k] = int(rec.credit_tier)
            out.groups.update(rec.groups)
            if (k + 1) % PROGRESS_EVERY == 0 and _progress is not None:
                _progress[job.slot] = k + 1
            if job.target is not None:
                yield pass_proto(rec)
        if _progress is not None:
            _progress[job.slot] = job.count

    if job.target is None or job.auth is None:
        for _ in records():
            pass
        return out
    with job.auth.channel(job.target) as channel:
        stub = passes_pb2_grpc.PassesStub(channel)
        timeout = 60 + job.count / MIN_SLICE_RATE
        summary = stub.UpsertPasses(records(), timeout=timeout, wait_for_ready=True)
    out.upserted, out.rejected = summary.upserted, summary.rejected
    out.errors = list(summary.errors)
    return out


def _slices(count: int, procs: int) -> list[tuple[int, int]]:
    n = max(procs, math.ceil(count / SLICE_MAX)) if count else 0
    bounds = [count * k // n for k in range(n + 1)] if n else [0]
    return [(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def bar(label: str, done: int, total: int, elapsed: float, width: int = 30) -> str:
    frac = done / total if total else 1.0
    filled = int(width * frac)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("inf")
    eta_text = f"{eta:4.0f}s" if math.isfinite(eta) else "   ?s"
    return (
        f"{label} [{'#' * filled}{'.' * (width - filled)}] {frac:4.0%} "
        f"{done:>11,}/{total:,}  {rate:9,.0f}/s  eta {eta_text}"
    )


class _Progress:
    """Redraws the bar in place on a terminal; in a log, writes a line every LOG_EVERY_S."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.logged = time.monotonic()

    def draw(self, line: str, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        elif final or time.monotonic() - self.logged >= LOG_EVERY_S:
            self.logged = time.monotonic()
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def build_population(
    count: int,
    seed: int,
    today: int,
    config_dir: Path,
    target: str | None,
    procs: int,
    show_progress: bool = True,
    auth: ClientAuth | None = None,
) -> tuple[PopulationIndex, ImportStats]:
    """Generates passes [0, count) and, when `target` is given, imports them into it as `auth`
    (default: the admin token of the default credentials)."""
    if target is not None and auth is None:
        auth = ClientAuth.find()
    product_ids = tuple(sorted(load_province(config_dir).products))
    parts = _slices(count, procs)
    ctx = mp.get_context("spawn")
    progress = ctx.Array("q", max(1, len(parts)), lock=False)
    jobs = [
        _Slice(k, a, n, seed, today, str(config_dir), product_ids, target, auth)
        for k, (a, n) in enumerate(parts)
    ]
    label = "import  " if target else "generate"
    t0 = time.monotonic()
    results: list[_SliceResult] = []
    shown = _Progress(show_progress)
    if jobs and count <= IN_PROCESS_MAX:
        results = [_run_slice(job) for job in jobs]
    elif jobs:
        with cf.ProcessPoolExecutor(
            max_workers=max(1, min(procs, len(jobs))),
            mp_context=ctx,
            initializer=_init,
            initargs=(progress,),
        ) as pool:
            futures = [pool.submit(_run_slice, job) for job in jobs]
            deadline = t0 + 120 + count / MIN_SLICE_RATE
            pending = set(futures)
            while pending and time.monotonic() < deadline:
                _, pending = cf.wait(pending, timeout=POLL_S)
                shown.draw(bar(label, sum(progress), count, time.monotonic() - t0))
            if pending:
                raise TimeoutError(f"{label.strip()} of {count:,} passes did not finish in time")
            results = sorted((f.result() for f in futures), key=lambda r: r.slot)
    seconds = time.monotonic() - t0
    shown.draw(bar(label, count, count, seconds), final=True)
    return _index(product_ids, results), _stats(count, target is not None, seconds, results)


def _index(product_ids: tuple[str, ...], results: list[_SliceResult]) -> PopulationIndex:
    groups: Counter[str] = Counter()
    for r in results:
        groups.update(r.groups)

    def cat(name: str, dtype: Any) -> np.ndarray:
        arrays = [getattr(r, name) for r in results]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype)

    return PopulationIndex(
        product_ids,
        cat("product", np.uint16),
        cat("status", np.uint8),
        cat("tier", np.uint8),
        groups,
    )


def _stats(count: int, imported: bool, seconds: float, results: list[_SliceResult]) -> ImportStats:
    errors = [e for r in results for e in r.errors]
    return ImportStats(
        count,
        imported,
        seconds,
        sum(r.upserted for r in results),
        sum(r.rejected for r in results),
        errors,
    )

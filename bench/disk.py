"""The data disk's durable-commit latency: the floor under every write path's tail.

Every admitted entry waits for its shard's LMDB commit (data sync, then meta sync), and a batch
with pay-later entries first waits for the credit ledger's commit too. A batch call therefore
waits for several durable commits in series, and its p99 can be no better than what those commits
give. This times the shard's own commit (`ShardStore.commit`, the production code) of a small
batch, paced like a shard at holiday load, on a store in the directory given (the data directory's
disk), and reports the quantiles and how often a commit alone takes longer than the latency
objective.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.shard.store import BatchWrites, ShardStore
from core.keys import request_key, usage_key
from core.models import Reason, Usage
from core.records import Decision, LogRecord, RequestRecord
from loadtest.stats import new_hist, percentiles_ms, record

# Entries in each timed commit: a shard batch at holiday load.
ENTRIES_PER_COMMIT = 50


@dataclass
class CommitLatency:
    commits: int
    # p50, p90, p99, p99_9, max and mean in ms, as the load test reports its latencies
    # (`loadtest.stats.percentiles_ms`).
    figures_ms: dict[str, float]
    over_objective: int  # commits that took longer than `objective_ms`
    objective_ms: float

    def summary(self) -> str:
        f = self.figures_ms
        share = self.over_objective / self.commits
        return (
            f"durable LMDB commit, {self.commits} commits of {ENTRIES_PER_COMMIT} entries: "
            f"p50 {f['p50']:.2f}, p90 {f['p90']:.2f}, p99 {f['p99']:.2f}, p99.9 {f['p99_9']:.2f}, "
            f"max {f['max']:.1f} ms; {self.over_objective} ({share:.2%}) over "
            f"{self.objective_ms:g} ms on their own"
        )


def as_dict(found: CommitLatency) -> dict[str, Any]:
    """For a load test's report (JSON): the figures under the load test's own names."""
    return {
        "commits": found.commits,
        **found.figures_ms,
        "over_objective": found.over_objective,
        "objective_ms": found.objective_ms,
    }


def entry_batch(n: int, items: int) -> BatchWrites:
    """A shard batch of `items` admitted entries: usage, request record and log record each."""
    w = BatchWrites()
    for i in range(items):
        pass_id, rid = f"P{n}-{i}", f"r{n}-{i}"
        w.usage[usage_key("v", pass_id)] = Usage(1, 1, 1, 1, True)
        decision = Decision(rid, True, Reason.OK, "ok", pass_id)
        w.requests[request_key("v", "g", rid)] = RequestRecord(
            decision, "v", "g", b"fingerprint!", 1, pass_id, 1, 1, -1, 1, False, 0
        )
        w.log.append(LogRecord(0, rid, "v", "g", pass_id, 1, True, 1, 1, 0, 0, -1, 0, False))
    return w


def measure(
    directory: Path | None, commits: int = 2000, every_s: float = 0.01, objective_ms: float = 20.0
) -> CommitLatency:
    """Commits `commits` batches one by one, starting one every `every_s` (a shard's pace at
    about 5,000 decisions/s on two shards), in a fresh store under `directory` (None: the
    temporary directory, where the load tests keep their data directories)."""
    if commits < 1:
        raise ValueError("commits must be at least 1")
    with tempfile.TemporaryDirectory(prefix="passgate-disk-", dir=directory) as tmp:
        store = ShardStore(Path(tmp))
        hist = new_hist()
        over = 0
        try:
            next_at = time.perf_counter()
            for n in range(commits):
                writes = entry_batch(n, ENTRIES_PER_COMMIT)
                t0 = time.perf_counter()
                store.commit(writes)
                took_s = time.perf_counter() - t0
                record(hist, took_s * 1e6)
                over += took_s * 1e3 > objective_ms
                next_at += every_s
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        finally:
            store.close()
    return CommitLatency(commits, percentiles_ms(hist), over, objective_ms)


def run(commits: int = 2000, every_s: float = 0.01) -> str:
    """`make bench`'s row: on the disk of the temporary directory (the load tests' data)."""
    print(f"timing {commits} durable commits, one every {every_s * 1e3:g} ms ...", flush=True)
    return measure(None, commits, every_s).summary()

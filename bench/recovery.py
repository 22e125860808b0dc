"""How long a shard takes to rebuild its memory from LMDB: `python -m bench.recovery [--records N]`.

Writes N usage records (and as many decision-log entries) for one shard through the real
`ShardStore.commit`, then times `VenueShard(...)` start-up over that directory: catalog open,
usage, request records, venue state, counters snapshot plus log replay, and kernel warm-up. A Ray
restart adds the worker process spawn on top (about a second on a 2-core machine). Usage records
are read from LMDB on first use, so start-up cost is the decision-log replay after the last
counters snapshot: the fill writes no snapshot, so this is the worst case (whole log replayed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from actors.catalog import CatalogWriter, catalog_path
from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from actors.routing import shard_of
from actors.shard.store import BatchWrites, ShardStore
from actors.shard.venue_shard import VenueShard, shard_dir
from core.keys import usage_key
from core.records import LogRecord, Usage

CHUNK = 50_000


def fill(data: Path, venues: list[str], records: int) -> None:
    CatalogWriter(catalog_path(data)).close()
    store = ShardStore(shard_dir(data, 0))
    store.put_meta("n_shards", 1)
    for start in range(0, records, CHUNK):
        w = BatchWrites()
        for i in range(start, min(records, start + CHUNK)):
            venue = venues[i % len(venues)]
            w.usage[usage_key(venue, f"P{i:010d}")] = Usage(1, 740000, 1, 1, True)
            w.log.append(
                LogRecord(0, f"r{i}", venue, "g", f"P{i:010d}", 1, True, 1, 0, 0, 0, -1, 0, False)
            )
        store.commit(w)
    store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", type=int, default=1_000_000)
    args = p.parse_args(argv)
    province = load_province(DEFAULT_CONFIG_DIR)
    venues = [v for v in province.venues if shard_of(v, 1) == 0]
    with tempfile.TemporaryDirectory(prefix="passgate-recovery-") as tmp:
        data = Path(tmp)
        t0 = time.perf_counter()
        fill(data, venues, args.records)
        print(f"wrote {args.records:,} usage records in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        shard = VenueShard(0, 1, province, str(data))
        seconds = time.perf_counter() - t0
        probe = shard.usage_of(f"P{args.records - 1:010d}")
        print(f"shard serving again after {seconds:.2f} s; the last record reads back: {probe}")
        shard.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: microbenchmarks of the real code paths, then the transport limit.

python -m bench                  # micro table + passgate vs bare echo server (step search)
python -m bench --micro-only     # just the table (about a minute)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.micro import Row, run_all, table


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def save(rows: list[Row], where: str, results: Path) -> Path:
    """Writes the micro table as results/bench-<time>.json and .md; returns the JSON path."""
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = results / f"bench-{stamp}.json"
    doc = {"machine": where, "at": stamp, "rows": [asdict(r) for r in rows]}
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    path.with_suffix(".md").write_text(f"# passgate microbenchmarks\n\n{where}\n\n{table(rows)}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--micro-only", action="store_true", help="skip the transport comparison")
    p.add_argument("--passes", type=int, default=50000, help="catalog size for the micro runs")
    p.add_argument("--mode", default="unary", choices=["unary", "stream", "batch"])
    p.add_argument("--seconds", type=float, default=8.0, help="per step of the transport search")
    args = p.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    rows = run_all(args.passes)
    print(table(rows), flush=True)
    saved = save(rows, machine(), Path("results"))
    print(f"saved {saved}", flush=True)
    if not args.micro_only:
        from bench.transport import compare

        print(compare(args.mode, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

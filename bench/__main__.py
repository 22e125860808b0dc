"""`make bench`: microbenchmarks of the real code paths, then the transport limit.

python -m bench                    # micro table, then passgate vs the bare echo server
python -m bench --micro-only       # just the table (about a minute)
python -m bench --channel-only     # just Ray actor call vs channel round trip, per batch
python -m bench --disk-only        # just the disk's durable-commit latency (about 25 s)
python -m bench --transport-only   # just the comparison (about 8 minutes)
python -m bench --transport-only --only unary   # one load run, no h2load or burst

The comparison (bench/transport.py): unary flat 1,000/s, batch 5,000 decisions/s at 100 per call,
a batch step search up to 20,000 decisions/s and a stream step search, each against passgate and
then the echo server with the same generator, with the instrument's validity and issue 9's target
met or missed; h2load's dry-run ratio; a 5,000-call burst.
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


def load_average() -> str:
    """The machine's 1/5/15-minute load averages: other work on a shared machine moves figures."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


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
    p.add_argument("--transport-only", action="store_true", help="skip the micro table")
    p.add_argument(
        "--channel-only", action="store_true", help="just Ray actor call vs channel round trip"
    )
    p.add_argument(
        "--disk-only", action="store_true", help="just the disk's durable-commit latency"
    )
    p.add_argument(
        "--booking-only",
        action="store_true",
        help="just the booking rush, status poll and pass look-ups (its own passgate)",
    )
    p.add_argument(
        "--only",
        default=None,
        choices=["unary", "stream", "batch"],
        help="transport: just this load run (no h2load, no burst)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="transport: a step search's stair; flat runs last twice as long",
    )
    args = p.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    if args.booking_only:
        from bench import booking

        print(booking.run_own(), flush=True)
        return 0
    only_one = args.micro_only or args.transport_only or args.disk_only
    if args.channel_only or not only_one:
        from bench import channel

        print(channel.run(), flush=True)
        if args.channel_only:
            return 0
    if args.disk_only or not (only_one or args.channel_only):
        from bench import disk

        print(disk.run(), flush=True)
        if args.disk_only:
            return 0
    if not args.transport_only:
        rows = run_all(args.passes)
        print(table(rows), flush=True)
        saved = save(rows, machine(), Path("results"))
        print(f"saved {saved}", flush=True)
    if not args.micro_only:
        from bench.transport import compare

        print(f"load average before the comparison: {load_average()}", flush=True)
        print(compare(args.seconds, args.only), flush=True)
        print(f"load average after: {load_average()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

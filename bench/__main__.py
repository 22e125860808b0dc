"""`make bench`: microbenchmarks of the real code paths, then the transport limit.

python -m bench                  # micro table + passgate vs bare echo server (step search)
python -m bench --micro-only     # just the table (about a minute)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from bench.micro import run_all, table


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
    if not args.micro_only:
        from bench.transport import compare

        print(compare(args.mode, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

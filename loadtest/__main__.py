"""Command line: `python -m loadtest [--target HOST:PORT] [--profile ...] [--mode ...] ...`

Without --target it starts passgate itself (run_cluster.py on free ports, its clock starting at
10:00 on the next peak day and running, with development credentials of its own), imports the
population, runs the profile, prints the markdown summary and writes
results/<profile>-<mode>-<timestamp>.{json,md,png}.
Every call goes over TLS with the admin token; with --target the credentials are found as every
passgate client finds them ($PASSGATE_CREDENTIALS, else ./data/credentials, or --credentials).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest import client
from loadtest.config import (
    CLIENTS,
    DISK_COMMITS,
    MODES,
    SEED,
    SERVER_CLOCKS,
    LoadConfig,
    default_workers,
)
from loadtest.profiles import PROFILES
from loadtest.server import stop_on_sigterm


def parse_args(argv: list[str] | None = None) -> LoadConfig:
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = LoadConfig()
    p.add_argument("--target", help="host:port of a running passgate (default: start one)")
    p.add_argument("--profile", choices=PROFILES, default=d.profile)
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        help="scans/s: the peak (holiday-peak), the rate (flat), the first stair (step)",
    )
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds")
    p.add_argument("--step-seconds", type=float, default=d.step_s, help="step: seconds per stair")
    p.add_argument("--step-factor", type=float, default=d.step_factor, help="step: rate factor")
    p.add_argument("--slo-ms", type=float, default=d.slo_ms, help="p99 objective")
    p.add_argument(
        "--warmup",
        type=float,
        default=d.warmup_s,
        help="seconds at the opening rate before the measured run (not counted)",
    )
    p.add_argument("--workers", type=int, default=default_workers(), help="generator processes")
    p.add_argument("--channels", type=int, default=d.channels, help="connections per worker")
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default=d.client,
        help="how workers speak gRPC: wire (lean HTTP/2 client, default) or grpc (grpc.aio)",
    )
    p.add_argument("--streams", type=int, default=d.streams, help="stream: streams per worker")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="batch: scans per call")
    p.add_argument("--max-outstanding", type=int, default=d.max_outstanding, help="per worker")
    p.add_argument("--deadline-ms", type=int, default=d.deadline_ms, help="per call")
    p.add_argument("--arrivals", choices=("poisson", "uniform"), default=d.arrivals)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument(
        "--passes",
        type=int,
        default=None,
        help="population size (default 200,000 self-started, 1,000,000 with --target; "
        "10,000,000 on request)",
    )
    p.add_argument(
        "--skip-import",
        action="store_true",
        help="the population (same --passes and --seed) is already on the server",
    )
    p.add_argument("--import-procs", type=int, default=d.import_procs)
    p.add_argument("--config", type=Path, default=d.config_dir, help="province config directory")
    p.add_argument(
        "--sim-start",
        default=None,
        help='the instant the server believes it is: "peak" (default when self-started: '
        '10:00 on the next peak day), "now", or an ISO instant',
    )
    p.add_argument(
        "--server-clock",
        choices=SERVER_CLOCKS,
        default=d.server_clock,
        help="a self-started server's clock from --sim-start: running (as in service) or "
        "frozen (stands still: every decision in one millisecond)",
    )
    p.add_argument("--zipf", type=float, default=d.zipf_s, help="venue popularity exponent")
    p.add_argument(
        "--shared-share",
        type=float,
        default=d.shared_share,
        help="share of scans that reuse one credential at two venues >= 20 km apart",
    )
    p.add_argument("--holders-per-venue", type=int, default=d.holders_per_venue)
    p.add_argument("--shards", type=int, default=d.shards, help="self-started server's shards")
    p.add_argument(
        "--ingress-procs",
        type=int,
        default=d.ingress_procs,
        help="self-started server's gRPC ingress processes",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra run_cluster.py argument for the self-started server, e.g. "
        "--server-arg=--batch-size=128 (repeatable)",
    )
    p.add_argument(
        "--echo-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="afterwards run the same load against bench/echo_server.py: echo's figures next to "
        "passgate's, passgate / echo, and whether the instrument was valid (generator's p99 "
        "against echo <= 5 ms); --no-echo-baseline skips it (default: on)",
    )
    p.add_argument(
        "--disk-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with a self-started server, time 1,000 lone durable LMDB commits on its data disk "
        "after the run (about 6 s): the floor under every durable answer's latency (default: on)",
    )
    p.add_argument(
        "--generator-nice",
        type=int,
        default=d.generator_nice,
        help="nice value of the generator's workers (negative: ahead of the server, when "
        "allowed; 0: unchanged)",
    )
    p.add_argument(
        "--echo-procs",
        type=int,
        default=None,
        help="echo server processes (default: --ingress-procs when self-started, else 1)",
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    client.add_arguments(p, self_started=True)
    a = p.parse_args(argv)
    cfg = LoadConfig(
        target=a.target,
        profile=a.profile,
        mode=a.mode,
        rate=a.rate,
        duration_s=a.duration,
        step_s=a.step_seconds,
        step_factor=a.step_factor,
        slo_ms=a.slo_ms,
        warmup_s=a.warmup,
        workers=a.workers,
        channels=a.channels,
        streams=a.streams,
        batch_size=a.batch_size,
        max_outstanding=a.max_outstanding,
        deadline_ms=a.deadline_ms,
        arrivals=a.arrivals,
        seed=a.seed,
        passes=a.passes,
        import_passes=not a.skip_import,
        import_procs=a.import_procs,
        config_dir=a.config,
        sim_start=a.sim_start,
        server_clock=a.server_clock,
        zipf_s=a.zipf,
        shared_share=a.shared_share,
        holders_per_venue=a.holders_per_venue,
        shards=a.shards,
        ingress_procs=a.ingress_procs,
        server_args=a.server_arg,
        echo_baseline=a.echo_baseline,
        disk_commits=DISK_COMMITS if a.disk_check else 0,
        generator_nice=a.generator_nice,
        client=a.client,
        echo_procs=a.echo_procs,
        results_dir=a.results,
        live=not a.quiet,
        credentials=a.credentials,
        identity=a.identity,
        insecure=a.insecure,
    )
    try:
        cfg.check()
    except ValueError as exc:
        p.error(str(exc))
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    stop_on_sigterm()
    from loadtest.report import markdown
    from loadtest.run import run_load

    try:
        report = run_load(cfg)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"load test failed: {exc}", file=sys.stderr)
        return 1
    print(markdown(report))
    if report["failures"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

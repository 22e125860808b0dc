"""Starts passgate: a local Ray instance (or joins one), the catalog, the shards and the ingress.

    python run_cluster.py --data-dir data --port 50051 --shards 2

Ctrl-C or SIGTERM drains in-flight requests and shuts down cleanly.

Exit status: 0 after a clean stop; 2 for a config error; 3 when the start-up store check refuses
the data directory (a store missing, empty or damaged); 1 for any other error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import ray
import uvloop
from prometheus_client import start_http_server

from actors.cluster import start_actors
from actors.config_files import DEFAULT_CONFIG_DIR, load_demo_passes, load_province
from actors.errors import PassgateError
from actors.ingress import metrics
from actors.ingress.pool import extra_ingresses
from actors.ingress.server import IngressSettings, serve_until_signalled
from actors.routing import NAMESPACE
from actors.seed import seed_if_empty
from actors.shard.store_check import StoreCorrupt, check_data_dir, record_stores
from core.clock import local_time
from core.config import ConfigError
from ops.channels import default_credentials_dir
from ops.credentials import ensure_dev_credentials, summary_line

log = logging.getLogger("passgate")
INSECURE_WARNING = (
    "WARNING: --insecure: gRPC is plaintext; bearer tokens and holder data cross the network "
    "readable. Use it only on a trusted network."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_DIR, help="config directory")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="LMDB data directory")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0 = any free port)")
    p.add_argument(
        "--host", default="127.0.0.1", help="gRPC listen address (0.0.0.0 = every interface)"
    )
    p.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="credentials directory (default $PASSGATE_CREDENTIALS, else <data-dir>/credentials;\n"
        "created on first start: dev CA, server certificate, signing key, tokens)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext gRPC instead of TLS (bearer tokens are still required)",
    )
    p.add_argument("--shards", type=int, default=2, help="number of VenueShard actors")
    p.add_argument(
        "--ledgers", type=int, default=1, help="credit-ledger actors (passes split by crc32)"
    )
    p.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="/metrics listen address")
    p.add_argument("--batch-size", type=int, default=256, help="flush a shard batch at B items")
    p.add_argument("--batch-delay-us", type=int, default=1000, help="or after T microseconds")
    p.add_argument(
        "--max-inflight-batches",
        type=int,
        default=1,
        help="per shard; 1 lets the next batch grow while one is decided (measured best)",
    )
    p.add_argument("--max-queue", type=int, default=8192, help="waiting requests per shard")
    p.add_argument(
        "--ingress-procs", type=int, default=1, help="gRPC ingress processes (SO_REUSEPORT)"
    )
    p.add_argument("--seed-passes", type=int, default=10000, help="synthetic passes on first start")
    IngressSettings.add_flags(p)
    clock = p.add_mutually_exclusive_group()
    clock.add_argument(
        "--frozen-clock",
        default=None,
        help="ISO instant the shards use as 'now', standing still (demos and tests only)",
    )
    clock.add_argument(
        "--clock-start",
        default=None,
        help="ISO instant the shards' clock starts at, then runs at the wall clock's pace "
        "(load tests and benchmarks only)",
    )
    args = p.parse_args(argv)
    if args.shards < 1 or args.ledgers < 1:
        p.error("--shards and --ledgers must be at least 1")
    if args.ingress_procs < 1 or (args.ingress_procs > 1 and args.port == 0):
        p.error("--ingress-procs must be >= 1, and more than one needs a fixed --port")
    if args.batch_size < 1 or args.batch_delay_us < 0:
        p.error("--batch-size must be >= 1 and --batch-delay-us >= 0")
    if args.credentials is None:
        args.credentials = default_credentials_dir(args.data_dir)
    flag, instant = (
        ("--clock-start", args.clock_start)
        if args.clock_start is not None
        else ("--frozen-clock", args.frozen_clock)
    )
    try:
        args.clock_ms = _frozen_ms(instant)
    except ValueError:
        p.error(f"{flag}: not an ISO instant: {instant!r}")
    return args


def _server_names(host: str) -> list[str]:
    """A specific --host goes into the server certificate, so clients can verify it."""
    return [] if host in ("", "0.0.0.0", "::", "[::]") else [host.strip("[]")]


def _frozen_ms(text: str | None) -> int | None:
    if text is None:
        return None
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return int(instant.timestamp() * 1000)


def server_today(frozen_ms: int | None, default_tz: str) -> int:
    """The server clock's date (frozen or real) in the province's time zone, as an ordinal: the
    synthetic passes seeded at first start are valid around it, not around the host's date."""
    now_ms = frozen_ms if frozen_ms is not None else time.time_ns() // 1_000_000
    return local_time(ZoneInfo(default_tz), now_ms).day


def _record_stores(data_dir: Path, n_shards: int, when: str) -> None:
    """Notes the stores' LMDB facts for the next start's check. Failing to is no reason to stop
    serving: the previous record stays, and it can only be lower, so the check stays sound."""
    try:
        record_stores(data_dir, n_shards, when)
    except (OSError, StoreCorrupt) as exc:
        log.warning("could not update the data-directory manifest: %s", exc)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    try:
        province = load_province(args.config)
        demo = load_demo_passes(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        ensure_dev_credentials(args.credentials, province, _server_names(args.host))
    except (OSError, ValueError) as exc:
        print(f"error: credentials in {args.credentials}: {exc}", file=sys.stderr)
        return 1
    print(summary_line(args.credentials), flush=True)
    if args.insecure:
        print(INSECURE_WARNING, flush=True)
    try:
        # Before Ray and LMDB: LMDB takes an emptied store for a new one and maps a truncated one
        # until a read faults, so this is the only place the damage can be named.
        check_data_dir(args.data_dir, args.shards)
    except StoreCorrupt as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    ray.init(
        address=args.address,
        namespace=NAMESPACE,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    try:
        handles = start_actors(
            province,
            args.data_dir,
            args.shards,
            args.clock_ms,
            args.credentials,
            args.ledgers,
            clock_runs=args.clock_start is not None,
        )
        _record_stores(args.data_dir, args.shards, "start")
        today = server_today(args.clock_ms, province.default_tz)
        seeded = seed_if_empty(handles, province, demo, args.seed_passes, today)
        if seeded:
            print(f"seeded {seeded} passes into the catalog", flush=True)
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.REGISTRY)
        with extra_ingresses(args, ray.get_runtime_context().gcs_address):
            settings = IngressSettings.from_args(args)
            uvloop.run(
                serve_until_signalled(handles, province, args.data_dir, settings, "passgate")
            )
    except PassgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    _record_stores(args.data_dir, args.shards, "stop")
    print("passgate stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""An extra ingress process: joins the running Ray cluster, finds the named actors and serves the
same gRPC port as the first ingress (SO_REUSEPORT), so the kernel spreads connections over them.

Started by run_cluster.py for --ingress-procs > 1; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import ray
import uvloop
from prometheus_client import start_http_server

from actors.config_files import load_province
from actors.ingress import metrics
from actors.ingress.server import IngressSettings, serve_until_signalled
from actors.routing import NAMESPACE, connect


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--address", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--credentials", type=Path, required=True)
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--batch-delay-us", type=int, required=True)
    p.add_argument("--max-inflight-batches", type=int, required=True)
    p.add_argument("--max-queue", type=int, required=True)
    IngressSettings.add_flags(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    province = load_province(args.config)
    ray.init(address=args.address, namespace=NAMESPACE, logging_level=logging.WARNING)
    try:
        handles = connect(args.shards)
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.REGISTRY)
        settings = IngressSettings.from_args(args, poll_metrics=False)
        label = f"passgate ingress {args.index}"
        uvloop.run(serve_until_signalled(handles, province, args.data_dir, settings, label))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

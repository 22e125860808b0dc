"""Starts and stops the extra ingress processes of `run_cluster.py --ingress-procs N`."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from actors.errors import PassgateError
from actors.ingress.connections import ConnectionLimits

READY_TIMEOUT_S = 120


def _command(args: argparse.Namespace, address: str, index: int) -> list[str]:
    metrics_port = args.metrics_port + index if args.metrics_port else 0
    return [
        sys.executable, "-m", "actors.ingress.proc",
        "--address", address, "--index", str(index),
        "--config", str(args.config), "--data-dir", str(args.data_dir),
        "--shards", str(args.shards), "--port", str(args.port), "--host", args.host,
        "--metrics-port", str(metrics_port), "--metrics-host", args.metrics_host,
        "--credentials", str(args.credentials), *(["--insecure"] if args.insecure else []),
        "--batch-size", str(args.batch_size), "--batch-delay-us", str(args.batch_delay_us),
        "--max-inflight-batches", str(args.max_inflight_batches),
        "--max-queue", str(args.max_queue),
        *ConnectionLimits.from_args(args).argv(),
    ]  # fmt: skip


def _relay(proc: subprocess.Popen[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if "ready on port" in line:
            ready.set()


@contextlib.contextmanager
def extra_ingresses(
    args: argparse.Namespace, address: str
) -> Iterator[list[subprocess.Popen[str]]]:
    """Runs ingress processes 1..N-1 for the duration of the block; stops them on exit."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for index in range(1, args.ingress_procs):
            proc = subprocess.Popen(
                _command(args, address, index),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(proc)
            ready = threading.Event()
            threading.Thread(target=_relay, args=(proc, ready), daemon=True).start()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.wait(0.2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise PassgateError(f"ingress process {index} did not start")
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

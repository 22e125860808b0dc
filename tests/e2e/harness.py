"""Starts a real passgate (run_cluster.py in its own process group) and always cleans it up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtest.server import free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    metrics_port: int
    data_dir: Path
    output: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def shard_pid(self, shard_id: int) -> int:
        return int((self.data_dir / "shards" / f"shard-{shard_id}" / "pid").read_text())

    def log(self) -> str:
        return "".join(self.output[-200:])


def _pump(proc: subprocess.Popen[str], out: list[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        if "passgate ready on port" in line:
            ready.set()


@contextlib.contextmanager
def running_server(data_dir: Path, *extra: str, config: Path | None = None) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable,
        str(ROOT / "run_cluster.py"),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    server = Server(proc, port, metrics_port, data_dir)
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc, server.output, ready), daemon=True).start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"passgate did not start:\n{server.log()}")
        yield server
    finally:
        stop_group(proc)

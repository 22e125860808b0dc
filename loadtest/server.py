"""A passgate the load test starts itself when no --target is given.

run_cluster.py runs in its own process group (Ray's helpers join it), on free ports, with an empty
data directory and no seeded passes; on the way out (normal end, error or Ctrl-C) the whole group
gets SIGTERM, then SIGKILL. It is always told its credentials directory (it creates the development
CA, server certificate and tokens there on first start), so its clients find them without guessing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from loadtest.client import ClientAuth

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "passgate ready on port"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StartedServer:
    proc: subprocess.Popen[str]
    port: int
    metrics_port: int
    credentials_dir: Path
    insecure: bool = False
    output: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def auth(self, identity: str = "admin") -> ClientAuth:
        """How a client of this server reaches it as `identity`."""
        return ClientAuth(self.credentials_dir, identity, self.insecure)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.output[-lines:])


def _pump(proc: subprocess.Popen[str], out: list[str], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(line)
        del out[:-500]
        if READY_LINE in line:
            ready.set()


def stop_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT_S)
    # Ray's helper processes share the group: nothing may outlive the load test.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def passgate_process(
    data_dir: Path,
    extra_args: list[str],
    config_dir: Path | None = None,
    log: bool = True,
    ready_timeout_s: float = READY_TIMEOUT_S,
    credentials: Path | None = None,
) -> Iterator[StartedServer]:
    """run_cluster.py on free ports over `data_dir` (credentials in `credentials`, default
    `<data_dir>/credentials`), in its own process group; waits for its ready line and stops the
    whole group on the way out, also on error."""
    port, metrics_port = free_port(), free_port()
    creds = credentials if credentials is not None else data_dir / "credentials"
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
        "--credentials",
        str(creds),
        *extra_args,
    ]
    if config_dir is not None:
        cmd += ["--config", str(config_dir)]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"}
    if log:
        print(f"starting passgate on 127.0.0.1:{port} (data in {data_dir})", file=sys.stderr)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    server = StartedServer(proc, port, metrics_port, creds, "--insecure" in extra_args)
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc, server.output, ready), daemon=True).start()
    try:
        t0 = time.monotonic()
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() - t0 > ready_timeout_s:
                raise RuntimeError(f"passgate did not start:\n{server.tail()}")
        if log:
            print(f"passgate ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        yield server
    finally:
        stop_group(proc)


@contextlib.contextmanager
def running_passgate(
    extra_args: list[str],
    config_dir: Path | None = None,
    log: bool = True,
    credentials: Path | None = None,
) -> Iterator[StartedServer]:
    """A throw-away passgate: empty temporary data directory, no seeded passes; its credentials in
    `credentials` when given (so they can outlive it), else in the temporary directory."""
    with tempfile.TemporaryDirectory(prefix="passgate-loadtest-") as data_dir:
        args = ["--seed-passes", "0", *extra_args]
        with passgate_process(
            Path(data_dir), args, config_dir, log, credentials=credentials
        ) as server:
            yield server


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM takes the same way out as Ctrl-C, so a self-started server is always stopped."""
    signal.signal(signal.SIGTERM, _terminate)

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
START_ATTEMPTS = 3
PORT_IN_USE = "Address already in use"
# How long a failed start's output may take to end once its group is stopped.
PUMP_DRAIN_S = 10.0


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


def _pump(proc: subprocess.Popen[str], server: StartedServer, ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        server.output.append(line)
        del server.output[:-500]
        if READY_LINE in line:
            server.port = int(line.rsplit(maxsplit=1)[-1])
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


class PortTaken(RuntimeError):
    """The server could not bind a port that was free when it was chosen."""


def _command(
    data_dir: Path, creds: Path, extra_args: list[str], config_dir: Path | None, metrics_port: int
) -> list[str]:
    # One ingress binds port 0 and names the port in its ready line, so no other process can take
    # it first. Several ingress processes share a fixed port, chosen here: Ray starts its own
    # services on random ports before the ingress binds, so that choice can still lose a race.
    port = free_port() if "--ingress-procs" in extra_args else 0
    cmd = [
        sys.executable, str(ROOT / "run_cluster.py"), "--data-dir", str(data_dir),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--credentials", str(creds), *extra_args,
    ]  # fmt: skip
    if config_dir is not None:
        cmd += ["--config", str(config_dir)]
    return cmd


def _start(
    cmd: list[str], metrics_port: int, creds: Path, insecure: bool, ready_timeout_s: float
) -> StartedServer:
    """Starts `cmd` in its own process group and waits for its ready line. On failure the group is
    stopped and RuntimeError (PortTaken for a lost port race) raised with the output's tail."""
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
    server = StartedServer(proc, 0, metrics_port, creds, insecure)
    ready = threading.Event()
    pump = threading.Thread(target=_pump, args=(proc, server, ready), daemon=True)
    pump.start()
    t0 = time.monotonic()
    try:
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() - t0 > ready_timeout_s:
                break
        else:
            return server
    except BaseException:
        stop_group(proc)
        raise
    stop_group(proc)
    pump.join(PUMP_DRAIN_S)  # the output ends with the group: its last lines are in
    clash = any(PORT_IN_USE in line for line in server.output)
    raise (PortTaken if clash else RuntimeError)(f"passgate did not start:\n{server.tail()}")


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
    whole group on the way out, also on error. A start that loses a port to another process is
    tried again on other ports."""
    creds = credentials if credentials is not None else data_dir / "credentials"
    insecure = "--insecure" in extra_args
    if log:
        print(f"starting passgate on 127.0.0.1 (data in {data_dir})", file=sys.stderr)
    t0 = time.monotonic()
    for attempt in range(1, START_ATTEMPTS + 1):
        metrics_port = free_port()
        cmd = _command(data_dir, creds, extra_args, config_dir, metrics_port)
        try:
            server = _start(cmd, metrics_port, creds, insecure, ready_timeout_s)
            break
        except PortTaken:
            if attempt == START_ATTEMPTS:
                raise
            print(f"passgate lost a port to another process; start {attempt + 1}", file=sys.stderr)
    try:
        if log:
            print(
                f"passgate ready on 127.0.0.1:{server.port} in {time.monotonic() - t0:.1f} s",
                file=sys.stderr,
            )
        yield server
    finally:
        stop_group(server.proc)


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

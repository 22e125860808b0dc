"""Starts, watches and stops the extra ingress processes of `run_cluster.py --ingress-procs N`.

Ingress processes 1..N-1 share the listening port with the main one (SO_REUSEPORT). One that
exits while the stack runs (a crash, an OOM kill, a stray SIGKILL) is started again by a watcher
thread, after a pause that doubles with each exit in a row (RESTART_MIN_S up to RESTART_MAX_S) and
goes back to the minimum once a process has lived STABLE_S; meanwhile the others serve. Stopping
the stack stops the watcher first, so a process it stops is not started again.
"""

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
WATCH_INTERVAL_S = 0.5
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0


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


def _spawn(command: list[str]) -> tuple[subprocess.Popen[str], threading.Event]:
    """Starts one ingress process, its output relayed; the event is set once it serves."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()
    threading.Thread(target=_relay, args=(proc, ready), daemon=True).start()
    return proc, ready


def _start(command: list[str], index: int, stopping: threading.Event) -> subprocess.Popen[str]:
    """Starts one ingress process and waits until it serves (or the stack stops meanwhile)."""
    proc, ready = _spawn(command)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.wait(0.2):
        if stopping.is_set():
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop([proc])
            raise PassgateError(f"ingress process {index} did not start")
    return proc


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class IngressPool:
    """The extra ingress processes, each started again when it exits (see the module's text)."""

    def __init__(self, commands: dict[int, list[str]]) -> None:
        """`commands`: each extra ingress process's command line, by its index."""
        self._commands = commands
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.restarts = 0
        self._watcher = threading.Thread(target=self._watch, name="ingress-pool", daemon=True)

    def start(self) -> None:
        for index, command in self._commands.items():
            self.procs[index] = _start(command, index, self._stopping)
        if self.procs:
            self._watcher.start()

    def stop(self) -> None:
        with self._lock:  # no restart begins after this
            self._stopping.set()
            procs = list(self.procs.values())
        _stop(procs)
        if self._watcher.is_alive():
            self._watcher.join(timeout=READY_TIMEOUT_S)

    def _watch(self) -> None:
        started = dict.fromkeys(self.procs, time.monotonic())
        pause = dict.fromkeys(self.procs, RESTART_MIN_S)
        while not self._stopping.wait(WATCH_INTERVAL_S):
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                if self._stopping.is_set():
                    return  # stopped by `stop`, not by a failure
                if time.monotonic() - started[index] >= STABLE_S:
                    pause[index] = RESTART_MIN_S
                print(
                    f"ingress process {index} exited (code {code}); "
                    f"starting it again in {pause[index]:g} s",
                    flush=True,
                )
                if self._stopping.wait(pause[index]):
                    return
                pause[index] = min(RESTART_MAX_S, pause[index] * 2)
                started[index] = time.monotonic()
                self._restart(index)

    def _restart(self, index: int) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            try:
                self.procs[index], _ = _spawn(self._commands[index])
            except OSError as exc:
                print(f"ingress process {index} could not be started: {exc}", flush=True)
                return  # still the exited process: the next round tries again
            self.restarts += 1


@contextlib.contextmanager
def extra_ingresses(args: argparse.Namespace, address: str) -> Iterator[IngressPool]:
    """Runs ingress processes 1..N-1, restarted when they exit, for the duration of the block;
    stops them on exit."""
    pool = IngressPool({i: _command(args, address, i) for i in range(1, args.ingress_procs)})
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()

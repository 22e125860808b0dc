"""The transport limit: a bare grpc.aio + uvloop server on the passgate.v1 Gate proto.

It answers every scan "allowed" without deciding anything, so a load run against it measures only
gRPC, protobuf, the event loop and the load generator. Driving it and passgate with the same
generator at the same rate and process count gives the ratio passgate / echo.

    python -m bench.echo_server --port 50061 --procs 2

With --procs N, N processes bind the same port with SO_REUSEPORT (as passgate's ingress does) and
the kernel spreads connections over them. `running_echo()` starts it in a subprocess for a load
run or a test; `start_in_thread()` runs one in-process server on a background thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop

from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc

READY_LINE = "echo ready on port"
READY_TIMEOUT_S = 30.0
MAX_BATCH_ITEMS = 1000
# The same channel options as passgate's ingress, so the comparison is like for like.
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_concurrent_streams", 1024),
]
ROOT = Path(__file__).resolve().parents[1]


def _decision(req: gate_pb2.ValidateRequest) -> gate_pb2.Decision:
    return gate_pb2.Decision(
        request_id=req.request_id,
        allowed=True,
        reason=common_pb2.REASON_OK,
        remaining_entries=-1,
        venue_alert=common_pb2.ALERT_LEVEL_GREEN,
        decided_at_ms=int(time.time() * 1000),
    )


class EchoGate(gate_pb2_grpc.GateServicer):
    """Gate with no state and no rules: one Decision per request, request_id copied."""

    async def Validate(
        self, request: gate_pb2.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.Decision:
        return _decision(request)

    async def ValidateStream(
        self,
        request_iterator: AsyncIterator[gate_pb2.ValidateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gate_pb2.Decision]:
        async for req in request_iterator:
            yield _decision(req)

    async def ValidateBatch(
        self, request: gate_pb2.ValidateBatchRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.ValidateBatchResponse:
        n = len(request.requests)
        if n > MAX_BATCH_ITEMS:
            text = f"requests: batch of {n} exceeds the limit of {MAX_BATCH_ITEMS}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, text)
        return gate_pb2.ValidateBatchResponse(decisions=[_decision(r) for r in request.requests])

    async def Annul(
        self, request: gate_pb2.AnnulRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.AnnulResponse:
        return gate_pb2.AnnulResponse(annulled=False, reason="echo server keeps no entries")


async def start_server(host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int]:
    """Starts one echo server on the running loop; returns it and the bound port."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    gate_pb2_grpc.add_GateServicer_to_server(EchoGate(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"echo server could not bind {host}:{port}")
    await server.start()
    return server, bound


async def _serve_until_signalled(host: str, port: int, ready: Any = None) -> None:
    server, bound = await start_server(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.put(bound)
    await stop.wait()
    await server.stop(1.0)


def _child(host: str, port: int, ready: Any) -> None:
    uvloop.run(_serve_until_signalled(host, port, ready))


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Holds a bound (not listening) SO_REUSEPORT socket so that port 0 becomes one fixed port
    that every child can bind, with no window for another program to take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield int(sock.getsockname()[1])


def serve_procs(host: str, port: int, procs: int) -> int:
    """Runs `procs` echo processes on one port until SIGINT/SIGTERM; returns an exit code."""
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    children: list[Any] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with _reserved_port(host, port) as fixed:
            for _ in range(procs):
                child = ctx.Process(target=_child, args=(host, fixed, ready), daemon=True)
                child.start()
                children.append(child)
            for _ in range(procs):
                ready.get(timeout=READY_TIMEOUT_S)
        print(f"{READY_LINE} {fixed} (procs {procs}, pid {os.getpid()})", flush=True)
        while not stop.wait(0.5):
            if any(not c.is_alive() for c in children):
                print("echo server: a child process died", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        _stop_children(children)


def _stop_children(children: list[Any]) -> None:
    for child in children:
        if child.is_alive() and child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join(timeout=5)


@dataclass
class ThreadedEcho:
    """An in-process echo server on its own thread and uvloop loop."""

    port: int
    _loop: asyncio.AbstractEventLoop
    _server: grpc.aio.Server
    _thread: threading.Thread

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        done = asyncio.run_coroutine_threadsafe(self._server.stop(0.5), self._loop)
        done.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def start_in_thread(host: str = "127.0.0.1", port: int = 0) -> ThreadedEcho:
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="echo-server", daemon=True)
    thread.start()
    server, bound = asyncio.run_coroutine_threadsafe(start_server(host, port), loop).result(10)
    return ThreadedEcho(bound, loop, server, thread)


def _pump(proc: subprocess.Popen[str], port: list[int], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY_LINE in line:
            port.append(int(line.split(READY_LINE, 1)[1].split()[0]))
            ready.set()


@contextlib.contextmanager
def running_echo(procs: int = 1, host: str = "127.0.0.1") -> Iterator[str]:
    """Starts `python -m bench.echo_server` in its own process group; yields "host:port"."""
    cmd = [sys.executable, "-m", "bench.echo_server", "--host", host, "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--procs", str(procs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    port: list[int] = []
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc, port, ready), daemon=True).start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"echo server did not start (exit code {proc.poll()})")
        yield f"{host}:{port[0]}"
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=int, default=50061, help="port (0 = any free port)")
    p.add_argument("--procs", type=int, default=1, help="processes sharing the port")
    args = p.parse_args(argv)
    if args.procs < 1:
        p.error("--procs must be at least 1")
    return serve_procs(args.host, args.port, args.procs)


if __name__ == "__main__":
    sys.exit(main())

"""The transport limit: a bare grpc.aio + uvloop server on the passgate.v1 Gate proto.

It answers every scan "allowed" without deciding anything, so a load run against it measures only
gRPC, TLS, the bearer-token check, protobuf, the event loop and the load generator. Driving it and
passgate with the same generator at the same rate and process count gives the ratio passgate / echo.

Like for like: it serves TLS with the same server certificate as passgate (`server.pem` and
`server.key` of the credentials directory) and requires the same bearer token, checked by the same
code (`actors.ingress.auth.Authenticator`: the signature once per token, then a cache lookup per
call, and the method table for unary calls). With --insecure it serves plaintext and still
requires the token, as passgate does.

    python -m bench.echo_server --port 50061 --procs 2 [--credentials DIR] [--insecure]

With --procs N, N processes bind the same port with SO_REUSEPORT (as passgate's ingress does) and
the kernel spreads connections over them. `running_echo()` starts it in a subprocess for a load
run or a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop

from actors.errors import PermissionDenied, Unauthenticated
from actors.ingress.auth import SERVER_CERT, SERVER_KEY, Authenticator, authorize
from ops.channels import default_credentials_dir
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
VALIDATE = "/passgate.v1.Gate/Validate"
ANNUL = "/passgate.v1.Gate/Annul"


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
    """Gate with no state and no rules: one Decision per request, request_id copied, after the
    caller's token passed the same check as at passgate."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def _refusal(
        self, context: grpc.aio.ServicerContext, method: str | None = None, request: Any = None
    ) -> tuple[grpc.StatusCode, str] | None:
        """Why the call is refused (code, message), or None. Streams pass no method: passgate
        checks their items one by one, which for the load test's admin token is a no-op."""
        try:
            principal = self._auth.authenticate(context.invocation_metadata())
            if method is not None:
                authorize(principal, method, request)
        except Unauthenticated as exc:
            return grpc.StatusCode.UNAUTHENTICATED, str(exc)
        except PermissionDenied as exc:
            return grpc.StatusCode.PERMISSION_DENIED, str(exc)
        return None

    async def Validate(
        self, request: gate_pb2.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.Decision:
        if (refused := self._refusal(context, VALIDATE, request)) is not None:
            await context.abort(*refused)
        return _decision(request)

    async def ValidateStream(
        self,
        request_iterator: AsyncIterator[gate_pb2.ValidateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gate_pb2.Decision]:
        if (refused := self._refusal(context)) is not None:
            await context.abort(*refused)
        async for req in request_iterator:
            yield _decision(req)

    async def ValidateBatch(
        self, request: gate_pb2.ValidateBatchRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.ValidateBatchResponse:
        if (refused := self._refusal(context)) is not None:
            await context.abort(*refused)
        n = len(request.requests)
        if n > MAX_BATCH_ITEMS:
            text = f"requests: batch of {n} exceeds the limit of {MAX_BATCH_ITEMS}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, text)
        return gate_pb2.ValidateBatchResponse(decisions=[_decision(r) for r in request.requests])

    async def Annul(
        self, request: gate_pb2.AnnulRequest, context: grpc.aio.ServicerContext
    ) -> gate_pb2.AnnulResponse:
        if (refused := self._refusal(context, ANNUL, request)) is not None:
            await context.abort(*refused)
        return gate_pb2.AnnulResponse(annulled=False, reason="echo server keeps no entries")


@dataclass(frozen=True)
class Security:
    """Where the server certificate, key and token-signing key are, and whether to serve
    plaintext (tokens are required either way)."""

    credentials: Path
    insecure: bool = False

    def can_serve(self) -> bool:
        files = [self.credentials / "token-signing.pub"]
        if not self.insecure:
            files += [self.credentials / SERVER_CERT, self.credentials / SERVER_KEY]
        return all(f.is_file() for f in files)


def _bind(server: grpc.aio.Server, address: str, security: Security) -> int:
    if security.insecure:
        return server.add_insecure_port(address)
    key = (security.credentials / SERVER_KEY).read_bytes()
    cert = (security.credentials / SERVER_CERT).read_bytes()
    return server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))


async def start_server(
    security: Security,
    host: str = "127.0.0.1",
    port: int = 0,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int]:
    """Starts one echo server on the running loop; returns it and the bound port. `options`:
    more gRPC server options (a test's short connection age, say)."""
    server = grpc.aio.server(options=[*SERVER_OPTIONS, *options])
    auth = Authenticator.from_dir(security.credentials)
    gate_pb2_grpc.add_GateServicer_to_server(EchoGate(auth), server)
    bound = _bind(server, f"{host}:{port}", security)
    if bound == 0:
        raise OSError(f"echo server could not bind {host}:{port}")
    await server.start()
    return server, bound


async def _serve_until_signalled(
    security: Security, host: str, port: int, ready: Any = None
) -> None:
    server, bound = await start_server(security, host, port)
    # What startup made (gRPC, protobuf, the authenticator) lives as long as the process: keep
    # it out of the collector's full passes, whose pauses would be charged to the generator.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.put(bound)
    await stop.wait()
    await server.stop(1.0)


def _child(security: Security, host: str, port: int, ready: Any) -> None:
    uvloop.run(_serve_until_signalled(security, host, port, ready))


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Holds a bound (not listening) SO_REUSEPORT socket so that port 0 becomes one fixed port
    that every child can bind, with no window for another program to take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield int(sock.getsockname()[1])


def serve_procs(security: Security, host: str, port: int, procs: int) -> int:
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
                child = ctx.Process(target=_child, args=(security, host, fixed, ready), daemon=True)
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


def _pump(proc: subprocess.Popen[str], port: list[int], ready: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if READY_LINE in line:
            port.append(int(line.split(READY_LINE, 1)[1].split()[0]))
            ready.set()


@dataclass(frozen=True)
class EchoTarget:
    """A running echo server: where it listens and the credentials its clients use."""

    target: str
    credentials: Path
    insecure: bool


@contextlib.contextmanager
def running_echo(
    procs: int = 1,
    host: str = "127.0.0.1",
    credentials: Path | None = None,
    insecure: bool = False,
) -> Iterator[EchoTarget]:
    """Starts `python -m bench.echo_server` in its own process group. It serves with
    `credentials` (normally passgate's own, so the comparison is like for like); when that
    directory cannot serve (None, or no server key: a client-only copy), with a fresh set of
    development credentials made the same way, in a temporary directory."""
    with contextlib.ExitStack() as stack:
        security = Security(credentials or Path("-"), insecure)
        if credentials is None or not security.can_serve():
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="passgate-echo-")))
            security = Security(fresh_credentials(home / "credentials"), insecure)
        yield stack.enter_context(_echo_process(procs, host, security))


def fresh_credentials(creds_dir: Path) -> Path:
    """Development credentials (CA, server certificate, signing key, tokens) in `creds_dir`,
    made by the same code as passgate's first start."""
    from actors.config_files import DEFAULT_CONFIG_DIR, load_province
    from ops.credentials import ensure_dev_credentials

    ensure_dev_credentials(creds_dir, load_province(DEFAULT_CONFIG_DIR))
    return creds_dir


@contextlib.contextmanager
def _echo_process(procs: int, host: str, security: Security) -> Iterator[EchoTarget]:
    cmd = [sys.executable, "-m", "bench.echo_server", "--host", host, "--port", "0"]
    cmd += ["--credentials", str(security.credentials)]
    if security.insecure:
        cmd.append("--insecure")
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
        yield EchoTarget(f"{host}:{port[0]}", security.credentials, security.insecure)
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
    p.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="passgate's credentials directory (default: $PASSGATE_CREDENTIALS, else "
        "./data/credentials): its server.pem/server.key and token-signing.pub",
    )
    p.add_argument(
        "--insecure", action="store_true", help="plaintext (the token is still required)"
    )
    args = p.parse_args(argv)
    if args.procs < 1:
        p.error("--procs must be at least 1")
    security = Security(args.credentials or default_credentials_dir(), args.insecure)
    if not security.can_serve():
        p.error(f"no server certificate, key or token-signing key in {security.credentials}")
    if security.insecure:
        print("WARNING: echo server serving plaintext (--insecure)", file=sys.stderr, flush=True)
    return serve_procs(security, args.host, args.port, args.procs)


if __name__ == "__main__":
    sys.exit(main())

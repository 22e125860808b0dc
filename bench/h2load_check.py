"""Cross-check with an independent C load generator: h2load (Debian's nghttp2-client) sends one
prepared gRPC unary `Gate/Validate` request over and over.

    python -m bench.h2load_check --target 127.0.0.1:50051 [--requests N --clients C --streams S]
                                 [--credentials DIR] [--identity NAME] [--insecure]
                                 [--echo-procs N]

h2load can send only one request body, so the request is a `dry_run` entry of a demo pass: it goes
through the ingress, the batcher, a Ray call, the catalog and the rules, but commits nothing (a
repeated non-dry request_id would be answered from the idempotency record instead). Its figures
therefore bound the decision path from above and are no substitute for `make loadtest`.

It speaks TLS (`https://`, ALPN h2; h2load does not verify the certificate) and sends the bearer
token of --identity (default admin) from the credentials directory ($PASSGATE_CREDENTIALS, else
./data/credentials, or --credentials), as every passgate client does; --insecure for a plaintext
server. With --echo-procs N it then starts the echo server (N processes) with the same
credentials, so it serves the same certificate and checks the same token, runs the same h2load
against it and prints passgate / echo.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.echo_server import running_echo
from loadtest import client
from loadtest.client import ClientAuth
from proto.passgate.v1 import common_pb2, gate_pb2

# Where `make bench` unpacks Debian's nghttp2-client when the system has no h2load
# (ops/fetch_h2load.sh): inside the virtual environment.
FETCHED = Path(sys.prefix) / "h2load"
MISSING = "h2load not found (apt-get install nghttp2-client, or make bench fetches it)"


def h2load_command(fetched: Path = FETCHED) -> tuple[str, dict[str, str] | None] | None:
    """The h2load to run and its environment (None: this process's): the system's, else the one
    `make bench` fetched, with its libraries on the loader's path; None when there is neither."""
    found = shutil.which("h2load")
    if found is not None:
        return found, None
    binary = fetched / "usr" / "bin" / "h2load"
    if not os.access(binary, os.X_OK):
        return None
    libs = sorted({str(lib.parent) for lib in fetched.glob("usr/lib/**/*.so*")})
    env = dict(os.environ)
    inherited = [env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *inherited])
    return str(binary), env


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message: flag byte (0 = uncompressed) and a big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def prepared_request(venue: str, gate: str, card: str) -> bytes:
    req = gate_pb2.ValidateRequest(
        request_id="h2load-dry-run",
        venue_id=venue,
        gate_id=gate,
        credential=common_pb2.Credential(kind=common_pb2.CREDENTIAL_KIND_CARD, value=card),
        dry_run=True,
    )
    return grpc_frame(req.SerializeToString())


def run(
    target: str, requests: int, clients: int, streams: int, body: bytes, auth: ClientAuth
) -> str:
    found = h2load_command()
    if found is None:
        raise SystemExit(MISSING)
    h2load, env = found
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(body)
        f.flush()
        scheme = "http" if auth.insecure else "https"
        cmd = [
            h2load, "-n", str(requests), "-c", str(clients), "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"authorization: Bearer {auth.bearer}",
            "-d", f.name, f"{scheme}://{target}/passgate.v1.Gate/Validate",
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    return out.stdout + out.stderr + refusal_warning(out.stdout)


def refusal_warning(report: str) -> str:
    """h2load counts HTTP status only, and a gRPC error (a refused token too) is an HTTP 200 with
    no message: when no response carried a message, say so instead of printing a false rate."""
    found = re.search(r"\((\d+)\) data", report)
    if found is None or int(found.group(1)) > 0:
        return ""
    return "\nWARNING: no response carried a message: every call failed (check the token)\n"


def requests_per_s(report: str) -> float | None:
    found = re.search(r"finished in [^,]+, ([0-9.]+) req/s", report)
    return float(found.group(1)) if found else None


def against_echo(
    procs: int, requests: int, clients: int, streams: int, body: bytes, auth: ClientAuth
) -> str:
    """The same h2load run against the echo server, serving with `auth`'s credentials."""
    with running_echo(procs, credentials=auth.credentials, insecure=auth.insecure) as echo:
        if echo.credentials != auth.credentials:  # a client-only credentials directory
            auth = ClientAuth(echo.credentials, "admin", echo.insecure)
        return run(echo.target, requests, clients, streams, body, auth)


def ratio_line(ours: str, echo: str) -> str:
    a, b = requests_per_s(ours), requests_per_s(echo)
    if not a or not b:
        return "passgate / echo: n/a (a run did not finish)"
    return f"passgate {a:,.0f} req/s, echo {b:,.0f} req/s: passgate / echo = {a / b:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--streams", type=int, default=16, help="concurrent streams per client")
    p.add_argument("--venue", default="hz-leifeng")
    p.add_argument("--gate", default="hz-leifeng-g01")
    p.add_argument("--card", default="DEMO-CARD-RESIDENT")
    p.add_argument("--save", type=Path, default=None, help="also write the request body here")
    p.add_argument(
        "--echo-procs",
        type=int,
        default=0,
        help="then the same run against the echo server with this many processes (0: no)",
    )
    client.add_arguments(p)
    args = p.parse_args(argv)
    try:
        auth = ClientAuth.find(args.credentials, args.identity, args.insecure).require()
    except FileNotFoundError as exc:
        p.error(str(exc))
    body = prepared_request(args.venue, args.gate, args.card)
    if args.save is not None:
        args.save.write_bytes(body)
    load = (args.requests, args.clients, args.streams, body, auth)
    ours = run(args.target, *load)
    print(ours)
    if args.echo_procs > 0:
        echo = against_echo(args.echo_procs, *load)
        print(f"--- the same against the echo server ({args.echo_procs} process(es)) ---")
        print(echo)
        print(ratio_line(ours, echo))
    return 0


if __name__ == "__main__":
    sys.exit(main())

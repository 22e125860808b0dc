"""Cross-check with an independent C load generator: h2load (Debian's nghttp2-client) sends one
prepared gRPC unary `Gate/Validate` request over and over.

    python -m bench.h2load_check --target 127.0.0.1:50051 [--requests N --clients C --streams S]

h2load can send only one request body, so the request is a `dry_run` entry of a demo pass: it goes
through the ingress, the batcher, a Ray call, the catalog and the rules, but commits nothing (a
repeated non-dry request_id would be answered from the idempotency record instead). Its figures
therefore bound the decision path from above and are no substitute for `make loadtest`.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from proto.passgate.v1 import common_pb2, gate_pb2


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


def run(target: str, requests: int, clients: int, streams: int, body: bytes) -> str:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(body)
        f.flush()
        cmd = [
            "h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-d", f.name, f"http://{target}/passgate.v1.Gate/Validate",
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    return out.stdout + out.stderr


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
    args = p.parse_args(argv)
    body = prepared_request(args.venue, args.gate, args.card)
    if args.save is not None:
        args.save.write_bytes(body)
    print(run(args.target, args.requests, args.clients, args.streams, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

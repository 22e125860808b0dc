"""How the load test, the burst, the fuzz campaign and the benchmarks reach a server: TLS with the
development CA and a bearer token, found the way every passgate client finds them (ops.channels:
`--credentials DIR`, else `PASSGATE_CREDENTIALS`, else `./data/credentials`), or plaintext with the
token still attached when `insecure` is set.

The load generator's hot path attaches the token as per-call metadata on a TLS-only channel
instead of gRPC call credentials: call credentials run a Python metadata plugin for every call,
which cost the generator about 0.2 ms of CPU per call on a 2-core machine (measured), and the
generator's own cost is what the echo baseline must keep small.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import grpc

from ops import channels

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ClientAuth:
    """One client identity: a credentials directory, the identity's name (or a .jwt path) and
    whether the server speaks plaintext. Picklable, so it travels to spawned worker processes."""

    credentials: Path
    identity: str = "admin"
    insecure: bool = False

    @classmethod
    def find(
        cls, credentials: Path | None = None, identity: str = "admin", insecure: bool = False
    ) -> ClientAuth:
        """`credentials` or the default directory (PASSGATE_CREDENTIALS, else ./data)."""
        where = credentials if credentials is not None else channels.default_credentials_dir()
        return cls(Path(where), identity, insecure)

    def require(self) -> ClientAuth:
        """Itself, once its token (and the CA, unless insecure) can be read; else an error that
        says where they were looked for and how to make them."""
        needed = [] if self.insecure else [self.ca_file]
        if not (self.identity.endswith(".jwt") or os.sep in self.identity):
            needed.append(self.credentials / "tokens" / f"{self.identity}.jwt")
        else:
            needed.append(Path(self.identity))
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"no credentials: {', '.join(missing)} not found. Start passgate once (make run) "
                "or run `python -m ops.credentials init`, or pass --credentials DIR"
            )
        return self

    @cached_property
    def bearer(self) -> str:
        return channels.token(self.identity, self.credentials)

    @property
    def metadata(self) -> Metadata:
        """The authorization header, for calls on a `lean_aio_channel`."""
        return (("authorization", f"Bearer {self.bearer}"),)

    @property
    def ca_file(self) -> Path:
        return self.credentials / "ca.pem"

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel that sends the token on every call (ops.channels)."""
        return channels.channel(target, self.identity, self.credentials, options, self.insecure)

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """An asyncio channel that sends the token on every call (ops.channels)."""
        return channels.aio_channel(target, self.identity, self.credentials, options, self.insecure)

    def lean_aio_channel(
        self, target: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """TLS (plaintext when insecure) without call credentials: every call must pass
        `metadata` itself. For the load generator's hot path."""
        if self.insecure:
            return grpc.aio.insecure_channel(target, options=list(options))
        tls = grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes())
        return grpc.aio.secure_channel(target, tls, options=list(options))

    def ssl_context(self) -> ssl.SSLContext | None:
        """For raw-socket clients: verifies the server against the CA and offers HTTP/2 by ALPN,
        as gRPC does. None when insecure (plain TCP)."""
        if self.insecure:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.set_alpn_protocols(["h2"])
        return ctx


def add_arguments(parser: argparse.ArgumentParser, self_started: bool = False) -> None:
    """--credentials, --identity and --insecure, worded alike for every command of loadtest/ and
    bench/. `self_started`: the command starts its own server when given no --target."""
    where = "credentials directory (default: $PASSGATE_CREDENTIALS, else ./data/credentials"
    if self_started:
        where += "; without --target the server started here makes its own unless this is given"
    parser.add_argument("--credentials", type=Path, default=None, help=where + ")")
    parser.add_argument(
        "--identity",
        default="admin",
        help="whose token to send: a name under <credentials>/tokens/ or a .jwt file",
    )
    insecure = "plaintext, for a server started with --insecure (the token is still sent)"
    if self_started:
        insecure += "; without --target the server started here is started so"
    parser.add_argument("--insecure", action="store_true", help=insecure)

"""Starts a real passgate (run_cluster.py in its own process group) and always cleans it up.

The server serves TLS with the development credentials it creates under
`<data_dir>/credentials`; `Server.channel(identity)` opens a TLS channel that sends that identity's
bearer token, as every real client does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from actors.frozen_clock import write_advance
from loadtest.client import ClientAuth
from loadtest.server import StartedServer, passgate_process
from ops import channels

READY_TIMEOUT_S = 120


@dataclass
class Server:
    started: StartedServer
    data_dir: Path

    @property
    def port(self) -> int:
        return self.started.port

    @property
    def metrics_port(self) -> int:
        return self.started.metrics_port

    @property
    def target(self) -> str:
        return self.started.target

    @property
    def credentials_dir(self) -> Path:
        return self.started.credentials_dir

    def channel(
        self, identity: str = "admin", options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.Channel:
        """A TLS channel that sends `identity`'s token (a name under tokens/ or a .jwt path)."""
        insecure = self.started.insecure
        return channels.channel(self.target, identity, self.credentials_dir, options, insecure)

    def aio_channel(
        self, identity: str = "admin", options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        insecure = self.started.insecure
        return channels.aio_channel(self.target, identity, self.credentials_dir, options, insecure)

    def auth(self, identity: str = "admin") -> ClientAuth:
        """For the load-test tools (burst, raw sockets): the same credentials as `channel`."""
        return self.started.auth(identity)

    def advance_clock(self, minutes: float) -> None:
        """Moves the server's frozen clock (`--frozen-clock`) to its start plus `minutes`."""
        write_advance(self.data_dir, int(minutes * 60_000))

    def shard_pid(self, shard_id: int) -> int:
        return int((self.data_dir / "shards" / f"shard-{shard_id}" / "pid").read_text())


@contextlib.contextmanager
def running_server(data_dir: Path, *extra: str, config: Path | None = None) -> Iterator[Server]:
    with passgate_process(data_dir, list(extra), config, False, READY_TIMEOUT_S) as started:
        yield Server(started, data_dir)

"""Starts a real passgate (run_cluster.py in its own process group) and always cleans it up."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from loadtest.server import StartedServer, passgate_process

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

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def shard_pid(self, shard_id: int) -> int:
        return int((self.data_dir / "shards" / f"shard-{shard_id}" / "pid").read_text())


@contextlib.contextmanager
def running_server(data_dir: Path, *extra: str, config: Path | None = None) -> Iterator[Server]:
    with passgate_process(data_dir, list(extra), config, False, READY_TIMEOUT_S) as started:
        yield Server(started, data_dir)

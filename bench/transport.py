"""The transport limit: the same load generator, rate steps and process count against passgate
and against a bare grpc.aio + uvloop echo server of the same `Gate` proto, in one invocation.

Reported as passgate / echo: the share of what gRPC in Python could carry at all that the full
decision path (ingress -> Ray shard -> rules -> LMDB commit -> reply) keeps.
"""

from __future__ import annotations

from pathlib import Path

from loadtest.config import LoadConfig
from loadtest.report import markdown
from loadtest.run import run_load


def compare(mode: str, step_seconds: float, start_rate: float = 250.0) -> str:
    cfg = LoadConfig(
        profile="step",
        mode=mode,
        rate=start_rate,
        step_s=step_seconds,
        step_factor=1.25,
        passes=100_000,
        echo_baseline=True,
        results_dir=Path("results"),
    )
    report = run_load(cfg)
    return markdown(report)

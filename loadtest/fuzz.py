"""Command line: `python -m loadtest.fuzz [--target HOST:PORT] [--seed N] [--duration S] ...`

A fuzz campaign against a real passgate: random and mutated protobufs, oversized, non-UTF-8 and
control-character ids, unknown enums, cut HTTP/2 frames, batches and streams with bad items,
imports with bad records, request_id hijacks, EXIT scans with unknown credentials, while canary
gates scan well-formed requests alongside. Prints the inputs tried, the answers by status code
and a verdict over every check, writes results/fuzz-<time>.json, and exits non-zero when any
check fails. Without --target it starts passgate itself (the test province, two shards, its
clock frozen at 10:00 on a peak day); a --target must run that same province and serve nobody
else. Every call, hostile or canary, goes over TLS with the admin token (loadtest/client.py), so
hostile inputs reach the decoders and rules behind the authentication. See loadtest/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest import client, fuzz_report, fuzz_state
from loadtest import fuzz_world as w
from loadtest.client import ClientAuth
from loadtest.fuzz_campaign import Budget, Campaign
from loadtest.fuzz_inputs import Ctx
from loadtest.server import running_passgate, stop_on_sigterm

SEED = 20261001


@dataclass
class FuzzConfig:
    target: str | None = None
    seed: int = SEED
    # A hard bound on the number of inputs; the default leaves --duration as the bound.
    count: int = 1_000_000
    duration_s: float = 300.0
    # The campaign fails when fewer inputs than this were tried.
    min_count: int = 20_000
    concurrency: int = 48
    # Hostile inputs per second; 0 = as fast as the concurrency allows.
    rate: float = 250.0
    canary_rate: float = 20.0
    shards: int = 2
    server_args: list[str] = field(default_factory=list)
    results_dir: Path | None = Path("results")
    quiet: bool = False
    # With --target: how to reach it (None: $PASSGATE_CREDENTIALS, else ./data/credentials).
    credentials: Path | None = None
    identity: str = "admin"
    insecure: bool = False


def run_fuzz(cfg: FuzzConfig) -> dict[str, Any]:
    """Runs one campaign (starting a server unless cfg.target) and returns its report."""
    if cfg.target is not None:
        auth = ClientAuth.find(cfg.credentials, cfg.identity, cfg.insecure).require()
        return _run(cfg, cfg.target, auth, "external", lambda: True)
    args = ["--shards", str(cfg.shards), "--frozen-clock", w.FROZEN_CLOCK, *cfg.server_args]
    if cfg.insecure:
        args.append("--insecure")
    started = running_passgate(
        args, w.TEST_PROVINCE, log=not cfg.quiet, credentials=cfg.credentials
    )
    with started as srv:
        auth = srv.auth(cfg.identity)
        report = _run(cfg, srv.target, auth, "self-started", lambda: srv.proc.poll() is None)
        if report["failures"]:
            report["server_output_tail"] = srv.tail(30).splitlines()
        return report


def _run(
    cfg: FuzzConfig, target: str, auth: ClientAuth, server: str, alive: Callable[[], bool]
) -> dict[str, Any]:
    started = datetime.now().astimezone()
    # Fresh ids for every run against a long-lived target; a self-started server is empty.
    token = f"{cfg.seed:x}" if server == "self-started" else f"{cfg.seed:x}.{int(time.time()):x}"
    with auth.channel(target) as channel:
        setup = fuzz_state.setup_world(channel, token)
        before = fuzz_state.snapshot(channel)
    ctx = Ctx(random.Random(cfg.seed), token, bearer=auth.bearer, tls=not auth.insecure)
    budget = Budget(
        cfg.count, cfg.duration_s, cfg.concurrency, cfg.canary_rate, cfg.rate, quiet=cfg.quiet
    )
    campaign = Campaign(target, ctx, budget, auth)
    result = asyncio.run(campaign.run())
    tally, canary = campaign.tally, result["canary"]
    checks = {
        "inputs_tried": fuzz_report.check(tally.total >= cfg.min_count, tally.total),
        "server_alive": _alive_check(target, auth, alive, tally),
        "canary_unharmed": fuzz_report.check(
            canary.harmed == 0 and canary.ok > 0, canary.harmed, canary.samples
        ),
        **fuzz_report.call_checks(tally),
        **_state_checks(target, auth, before, campaign.ledger),
    }
    config = {**asdict(cfg), "target": target, "server": server, "token": token}
    config["results_dir"] = str(cfg.results_dir)
    report = fuzz_report.build(config, tally, canary, setup, checks, result["elapsed_s"], started)
    if cfg.results_dir is not None:
        report["file"] = str(fuzz_report.write(report, cfg.results_dir))
    return report


def _alive_check(
    target: str, auth: ClientAuth, alive: Callable[[], bool], tally: fuzz_report.Tally
) -> dict[str, Any]:
    problems = [s["answer"] for s in tally.samples["server_alive"]]
    if not alive():
        problems.append("the server process exited")
    try:
        with auth.channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        if status != health_pb2.HealthCheckResponse.SERVING:
            problems.append(f"health: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    except grpc.RpcError as exc:
        problems.append(f"health check failed: {exc.code().name}")
    return fuzz_report.check(not problems, len(problems), problems)


def _state_checks(
    target: str, auth: ClientAuth, before: fuzz_state.Snapshot, ledger: fuzz_state.CanaryLedger
) -> dict[str, dict[str, Any]]:
    try:
        with auth.channel(target) as channel:
            after = fuzz_state.snapshot(channel)
    except grpc.RpcError as exc:
        failed = fuzz_report.check(False, 1, [f"snapshot failed: {exc.code().name}"])
        names = ("trap_state_unchanged", "canary_state_exact", "occupancy_not_lowered")
        return dict.fromkeys((*names, "mix_passes_unchanged"), failed)
    return fuzz_state.compare(before, after, ledger)


def parse_args(argv: list[str] | None = None) -> FuzzConfig:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = FuzzConfig()
    p.add_argument("--target", help="host:port of a passgate running the test province")
    p.add_argument("--seed", type=int, default=d.seed, help="the same seed sends the same inputs")
    p.add_argument("--count", type=int, default=d.count, help="stop after this many inputs")
    p.add_argument(
        "--duration", type=float, default=d.duration_s, help="stop after this many seconds"
    )
    p.add_argument("--min-count", type=int, default=d.min_count, help="fail when fewer were tried")
    p.add_argument(
        "--rate", type=float, default=d.rate, help="hostile inputs per second (0: no pacing)"
    )
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="hostile calls in flight")
    p.add_argument(
        "--canary-rate", type=float, default=d.canary_rate, help="canary scans per second"
    )
    p.add_argument("--shards", type=int, default=d.shards, help="self-started server's shards")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra run_cluster.py argument"
    )
    p.add_argument("--results", type=Path, default=d.results_dir, help="results directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    client.add_arguments(p, self_started=True)
    a = p.parse_args(argv)
    if (
        a.count < 1
        or a.duration <= 0
        or not 1 <= a.concurrency <= 256
        or a.canary_rate <= 0
        or a.rate < 0
    ):
        p.error("need --count >= 1, --duration > 0, 1 <= --concurrency <= 256, --canary-rate > 0")
    return FuzzConfig(
        target=a.target,
        seed=a.seed,
        count=a.count,
        duration_s=a.duration,
        min_count=a.min_count,
        concurrency=a.concurrency,
        rate=a.rate,
        canary_rate=a.canary_rate,
        shards=a.shards,
        server_args=a.server_arg,
        results_dir=a.results,
        quiet=a.quiet,
        credentials=a.credentials,
        identity=a.identity,
        insecure=a.insecure,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    stop_on_sigterm()
    try:
        report = run_fuzz(cfg)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, grpc.RpcError) as exc:
        print(f"fuzz campaign failed to run: {exc}", file=sys.stderr)
        return 2
    print(fuzz_report.render(report))
    if "file" in report:
        print(f"\nwritten: {report['file']}")
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())

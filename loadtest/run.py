"""One whole load test: server (started or given), population, reservations, traffic, report.

Every call goes over TLS with a bearer token (loadtest/client.py). A self-started server makes its
development credentials in a temporary directory that outlives it, so the echo baseline that runs
afterwards serves the same certificate and accepts the same token.

from loadtest.config import LoadConfig
from loadtest.run import run_load
report = run_load(LoadConfig(target="127.0.0.1:50051", profile="flat", rate=500))
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.config_files import load_province
from bench import disk
from bench.echo_server import running_echo
from core.models import Province
from loadtest import profiles
from loadtest.client import ClientAuth
from loadtest.config import LoadConfig
from loadtest.mix import MixPlan, MixShares, build_plan
from loadtest.population import build_population
from loadtest.report import build_report, transport_section, write_files
from loadtest.reservations import book_holders
from loadtest.runner import WARMUP, run_traffic
from loadtest.server import running_passgate
from loadtest.stats import percentiles_ms
from loadtest.worker import WorkerSpec

# One lone commit every 5 ms during the disk check: a shard's pace near 10,000 decisions/s.
DISK_PACE_S = 0.005


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _credentials(cfg: LoadConfig) -> Iterator[Path | None]:
    """Where a self-started server keeps its credentials (None with --target): --credentials, or
    a temporary directory that outlives the server, for the echo baseline."""
    if cfg.target is not None or cfg.credentials is not None:
        yield cfg.credentials
        return
    with tempfile.TemporaryDirectory(prefix="passgate-creds-") as home:
        yield Path(home) / "credentials"


@contextlib.contextmanager
def _target(
    cfg: LoadConfig, province: Province, creds: Path | None
) -> Iterator[tuple[str, ClientAuth]]:
    """The server's address and how to reach it."""
    if cfg.target is not None:
        yield cfg.target, ClientAuth.find(creds, cfg.identity, cfg.insecure).require()
        return
    args = ["--shards", str(cfg.shards)]
    if cfg.ingress_procs != 1:
        args += ["--ingress-procs", str(cfg.ingress_procs)]
    args += cfg.server_args
    args += cfg.clock_args(province)
    if cfg.insecure:
        args.append("--insecure")
    with running_passgate(args, cfg.config_dir, log=cfg.live, credentials=creds) as server:
        yield server.target, server.auth(cfg.identity)


def specs_for(
    cfg: LoadConfig,
    target: str,
    auth: ClientAuth,
    profile: profiles.RateProfile,
    plan: MixPlan,
    phase: int = 0,
) -> list[WorkerSpec]:
    """One spec per worker. `phase` varies the scans (a warm-up must not rehearse the run's
    passes, or the run would meet them as anti-passback); the run itself is phase 0, so it is
    the same sequence with or without a warm-up, and against passgate or the echo server."""
    run_tag = f"lt{int(time.time() * 1000) % (1 << 40):x}{os.getpid() % 4096:x}"
    return [
        WorkerSpec(
            worker_id=i,
            workers=cfg.workers,
            target=target,
            auth=auth,
            mode=cfg.mode,
            profile=profile,
            seed=cfg.seed + 7919 * phase,
            id_prefix=run_tag,
            plan=plan,
            channels=cfg.channels,
            streams=cfg.streams,
            batch_size=cfg.batch_size,
            max_outstanding=cfg.max_outstanding,
            deadline_s=cfg.deadline_ms / 1000,
            arrivals=cfg.arrivals,
            nice=cfg.generator_nice,
            client=cfg.client,
        )
        for i in range(cfg.workers)
    ]


def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Runs the load test described by `cfg`; returns the report (and writes its files when
    cfg.results_dir is set)."""
    cfg.check()
    started = datetime.now(UTC)
    province = load_province(cfg.config_dir)
    sim = cfg.sim_instant(province)
    profile = profiles.build(cfg.profile, cfg.rate, cfg.duration_s, cfg.step_s, cfg.step_factor)
    with _credentials(cfg) as creds:
        report, auth, plan = _against_passgate(cfg, province, creds, sim, profile, started)
        if cfg.self_started and cfg.disk_commits > 0:
            report["disk"] = disk_check(cfg)
        if cfg.echo_baseline:
            report["transport"] = _echo_baseline(cfg, auth, profile, plan, report)
    if cfg.results_dir is not None:
        write_files(report, cfg.results_dir)
    return report


def disk_check(cfg: LoadConfig) -> dict[str, Any]:
    """Lone durable LMDB commits on the disk where the self-started server kept its data (the
    temporary directory), timed once the server has stopped: the floor under the latency of
    every answer that waits for a commit."""
    if cfg.live:
        _say(f"timing {cfg.disk_commits:,} durable commits on the data disk ...")
    found = disk.measure(None, cfg.disk_commits, every_s=DISK_PACE_S, objective_ms=cfg.slo_ms)
    return disk.as_dict(found)


def _against_passgate(
    cfg: LoadConfig,
    province: Province,
    creds: Path | None,
    sim: datetime,
    profile: profiles.RateProfile,
    started: datetime,
) -> tuple[dict[str, Any], ClientAuth, MixPlan]:
    """Population, reservations, warm-up and the measured run: the report, how the server was
    reached and the mix plan. A self-started server is stopped on return."""
    extra: dict[str, Any] = {}
    with _target(cfg, province, creds) as (target, auth):
        index, stats = build_population(
            cfg.population,
            cfg.seed,
            sim.date().toordinal(),
            cfg.config_dir,
            target if cfg.import_passes else None,
            cfg.import_procs,
            show_progress=cfg.live,
            auth=auth,
        )
        if stats.rejected:
            _say(f"warning: the server rejected {stats.rejected:,} passes: {stats.errors[:3]}")
        shares = MixShares(shared=cfg.shared_share)
        plan = build_plan(province, index, cfg.seed, shares, zipf_s=cfg.zipf_s)
        per_venue = cfg.holders_per_venue
        plan, booked = book_holders(target, province, plan, sim, per_venue, cfg.seed, auth)
        if booked.get("error") and cfg.live:
            _say(f"warning: no reservations booked ({booked['error']}); the mix has no holders")
        extra["population"] = {"import": stats.to_dict(), **index.summary(), "reservations": booked}
        extra["mix"] = plan.summary()
        extra["warmup"] = warm_up(cfg, target, auth, profile, plan)
        if cfg.live:
            _say(f"{cfg.profile} / {cfg.mode} against {target}: {profile.duration_s:.0f} s")
        specs = specs_for(cfg, target, auth, profile, plan)
        result = run_traffic(specs, profile, cfg.slo_ms, cfg.live)
        report = build_report(
            result, cfg.report_dict(target, sim), started, os.cpu_count() or 1, extra
        )
    return report, auth, plan


def warm_up(
    cfg: LoadConfig,
    target: str,
    auth: ClientAuth,
    profile: profiles.RateProfile,
    plan: MixPlan,
) -> dict[str, Any] | None:
    """Runs the profile's opening rate for cfg.warmup_s seconds; returns its figures apart."""
    if cfg.warmup_s <= 0:
        return None
    rate = max(1.0, profile.rate_at(0.0))
    warm = profiles.RateProfile(WARMUP, ((0.0, rate), (cfg.warmup_s, rate)))
    specs = specs_for(cfg, target, auth, warm, plan, 1)
    result = run_traffic(specs, warm, cfg.slo_ms, cfg.live)
    lat = percentiles_ms(result.hist)
    return {
        "seconds": cfg.warmup_s,
        "rate": rate,
        "sent": result.tally.sent,
        "answered": result.tally.answered,
        "errors": result.tally.errors,
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
    }


def _echo_baseline(
    cfg: LoadConfig,
    auth: ClientAuth,
    profile: profiles.RateProfile,
    plan: MixPlan,
    report: dict[str, Any],
) -> dict[str, Any]:
    """The same generator, rate, mix, process count, TLS and token against the bare echo
    server (it serves passgate's certificate and checks passgate's token)."""
    procs = cfg.echo_processes
    with running_echo(procs, credentials=auth.credentials, insecure=auth.insecure) as echo:
        if echo.credentials != auth.credentials:  # a client-only credentials directory
            auth = ClientAuth(echo.credentials, "admin", echo.insecure)
        if cfg.live:
            _say(f"transport baseline: the same run against the echo server at {echo.target}")
        warm_up(cfg, echo.target, auth, profile, plan)
        specs = specs_for(cfg, echo.target, auth, profile, plan)
        result = run_traffic(specs, profile, cfg.slo_ms, cfg.live)
    security = "plaintext + token" if auth.insecure else "TLS + token"
    return transport_section(report, result, procs, security)

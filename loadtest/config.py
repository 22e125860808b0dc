"""Settings of one load-test run, with the defaults `make loadtest` uses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from actors.config_files import DEFAULT_CONFIG_DIR
from core.models import Province

MODES = ("unary", "stream", "batch")
SEED = 20261001
# Lone durable commits timed on the data disk after a self-started run (`--disk-check`).
DISK_COMMITS = 1000

# Population when the load test starts its own server: big enough to be a province's worth of
# distinct passes for a one-minute run, small enough to import in well under a minute.
SELF_STARTED_PASSES = 200_000
EXTERNAL_PASSES = 1_000_000
PEAK_HOUR = time(10, 0)
CLIENTS = ("wire", "grpc")
# A self-started server's clock: runs from the simulated instant, or stands still there.
SERVER_CLOCKS = ("running", "frozen")


def default_workers() -> int:
    return max(2, min(8, (os.cpu_count() or 2) // 2))


@dataclass
class LoadConfig:
    # None: start run_cluster.py on free ports and stop it afterwards.
    target: str | None = None
    profile: str = "holiday-peak"
    mode: str = "unary"
    # Peak rate (holiday-peak), the rate (flat) or the first stair (step), in scans per second.
    # Issue 9's holiday-peak target: a 1,000/s peak.
    rate: float = 1000.0
    duration_s: float = 60.0
    step_s: float = 10.0
    step_factor: float = 1.25
    slo_ms: float = 20.0
    # Seconds at the profile's opening rate before the measured run (a fresh server JITs, opens
    # its LMDB pages and fills caches); reported apart, never mixed into the figures.
    warmup_s: float = 5.0
    workers: int = field(default_factory=default_workers)
    channels: int = 2
    streams: int = 4
    batch_size: int = 50
    max_outstanding: int = 20_000
    deadline_ms: int = 5_000
    arrivals: str = "poisson"
    # The generator's workers run at this nice value (negative: ahead of the server and of
    # everything else on the machine, when the user may raise priority; 0: unchanged).
    generator_nice: int = -10
    # How the workers speak gRPC: "wire", the lean HTTP/2 client (loadtest/h2wire.py), or
    # "grpc", grpc.aio channels (about 0.5 ms of a worker's CPU per call, against about 0.3).
    client: str = "wire"
    seed: int = SEED
    # None: SELF_STARTED_PASSES with a self-started server, EXTERNAL_PASSES with --target.
    passes: int | None = None
    # False: the passes are already on the server (or it is the echo server): generate only.
    import_passes: bool = True
    # Parallel UpsertPasses streams; past ~4 the server's ingress process is the limit.
    import_procs: int = field(default_factory=lambda: max(2, min(4, os.cpu_count() or 2)))
    config_dir: Path = DEFAULT_CONFIG_DIR
    # The instant the server believes it is: "peak" (10:00 on the next configured peak day; the
    # self-started server's clock starts there), "now" (real clock) or an ISO instant.
    sim_start: str | None = None
    # A self-started server's clock from `sim_start`: "running" (starts there and runs, as in
    # service) or "frozen" (stands still there: every decision in one millisecond).
    server_clock: str = "running"
    zipf_s: float = 1.0
    # Share of scans that reuse one credential at two far-apart venues (loadtest/mix.py).
    shared_share: float = 0.01
    holders_per_venue: int = 40
    shards: int = 2
    # Self-started server's gRPC ingress processes (run_cluster.py --ingress-procs).
    ingress_procs: int = 1
    server_args: list[str] = field(default_factory=list)
    echo_baseline: bool = False
    # Self-started only: after the run, time this many lone durable LMDB commits on the disk of
    # the server's data directory (bench/disk.py); 0 skips it.
    disk_commits: int = 0
    # None: as many as the self-started server's ingress processes (1 with --target).
    echo_procs: int | None = None
    results_dir: Path | None = Path("results")
    live: bool = True
    # How clients reach the server (loadtest/client.py). A self-started server makes its own
    # credentials; with --target, None means $PASSGATE_CREDENTIALS, else ./data/credentials.
    credentials: Path | None = None
    identity: str = "admin"
    # Plaintext: with --target, a server started with --insecure; self-started, start it so.
    insecure: bool = False

    @property
    def self_started(self) -> bool:
        return self.target is None

    @property
    def echo_processes(self) -> int:
        if self.echo_procs is not None:
            return self.echo_procs
        return self.ingress_procs if self.self_started else 1

    @property
    def population(self) -> int:
        if self.passes is not None:
            return self.passes
        return SELF_STARTED_PASSES if self.self_started else EXTERNAL_PASSES

    def check(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.rate <= 0 or self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("rate and duration must be positive, warm-up not negative")
        if self.workers < 1 or self.channels < 1 or self.streams < 1:
            raise ValueError("workers, channels and streams must be at least 1")
        if not 1 <= self.batch_size <= 1000:
            raise ValueError("batch size must be 1..1000 (the server's batch limit)")
        if self.profile == "step" and (self.step_s < 1 or self.step_s != int(self.step_s)):
            raise ValueError("step seconds must be a whole number of seconds")
        if self.ingress_procs < 1 or (self.echo_procs is not None and self.echo_procs < 1):
            raise ValueError("ingress and echo processes must be at least 1")
        if self.import_procs < 1:
            raise ValueError("import processes must be at least 1")
        if not -20 <= self.generator_nice <= 19:
            raise ValueError("generator nice must be -20..19")
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        if self.arrivals not in ("poisson", "uniform"):
            raise ValueError("arrivals must be poisson or uniform")
        if not 0 <= self.shared_share <= 0.2:
            raise ValueError("shared-card share must be 0..0.2")
        if self.server_clock not in SERVER_CLOCKS:
            raise ValueError(
                f"server clock must be one of {', '.join(SERVER_CLOCKS)}, got {self.server_clock!r}"
            )

    def sim_instant(self, province: Province) -> datetime:
        tz = ZoneInfo(province.default_tz)
        choice = self.sim_start or ("peak" if self.self_started else "now")
        if choice == "now":
            return datetime.now(tz)
        if choice == "peak":
            today = datetime.now(tz).date()
            later = sorted(d for d in province.peak_days if d >= today.toordinal())
            day = date.fromordinal(later[0]) if later else today
            return datetime.combine(day, PEAK_HOUR, tz)
        instant = datetime.fromisoformat(choice)
        return instant if instant.tzinfo else instant.replace(tzinfo=tz)

    def clock_args(self, province: Province) -> list[str]:
        """A self-started server's clock flag (none: the real clock)."""
        if not self.sim_clock_used:
            return []
        flag = "--frozen-clock" if self.server_clock == "frozen" else "--clock-start"
        return [flag, self.sim_instant(province).isoformat()]

    def report_dict(self, target: str, sim: datetime) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "mode": self.mode,
            "target": target,
            "server": "self-started" if self.self_started else "external",
            "ingress_procs": self.ingress_procs if self.self_started else None,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "workers": self.workers,
            "channels_per_worker": self.channels,
            "streams_per_worker": self.streams if self.mode == "stream" else None,
            "batch_size": self.batch_size if self.mode == "batch" else None,
            "step_s": self.step_s if self.profile == "step" else None,
            "step_factor": self.step_factor if self.profile == "step" else None,
            "slo_ms": self.slo_ms,
            "warmup_s": self.warmup_s,
            "deadline_ms": self.deadline_ms,
            "max_outstanding_per_worker": self.max_outstanding,
            "arrivals": self.arrivals,
            "seed": self.seed,
            "passes": self.population,
            "sim_instant": sim.isoformat(),
            "clock": self.server_clock if self.sim_clock_used else "server",
            "transport": "plaintext" if self.insecure else "TLS",
            "identity": self.identity,
            "generator_nice": self.generator_nice,
            "generator_client": self.client,
        }

    @property
    def sim_clock_used(self) -> bool:
        return self.self_started and (self.sim_start or "peak") != "now"

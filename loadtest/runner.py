"""Runs the traffic: starts the worker processes, merges what they report each second, draws the
live line, stops a step search at the first stair that misses the objective, and returns the
merged result.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.profiles import RateProfile, Step
from loadtest.stats import Tally, merge, new_hist, percentiles_ms
from loadtest.worker import WorkerSpec, worker_main

SPAWN_TIMEOUT_S = 90.0
# Workers start together this long after the last one is ready.
START_DELAY_S = 0.5
POLL_S = 0.2
JOIN_TIMEOUT_S = 10.0
WARMUP = "warm-up"


@dataclass
class Second:
    """All workers' view of one second: counters plus the merged histogram."""

    sent: int = 0
    answered: int = 0
    errors: int = 0
    unsent: int = 0
    reports: int = 0
    cpu: dict[int, float] = field(default_factory=dict)
    # The whole machine's CPU use (all processes, server included), when known.
    box_cpu: float | None = None
    # The profile's offered rate in the middle of this second.
    target: float = 0.0
    hist: HdrHistogram = field(default_factory=new_hist)

    def add(self, worker: int, msg: dict[str, Any]) -> None:
        for name in ("sent", "answered", "errors", "unsent"):
            setattr(self, name, getattr(self, name) + msg[name])
        self.cpu[worker] = msg["cpu_pct"]
        self.hist.add(HdrHistogram.decode(msg["hist"]))
        self.reports += 1

    def row(self, t: int) -> dict[str, Any]:
        pct = percentiles_ms(self.hist)
        return {
            "t": t,
            "target": round(self.target, 1),
            "sent": self.sent,
            "answered": self.answered,
            "errors": self.errors,
            "unsent": self.unsent,
            "p50": pct["p50"],
            "p90": pct["p90"],
            "p99": pct["p99"],
            "max": pct["max"],
            "box_cpu_pct": self.box_cpu,
        }


@dataclass
class StepResult:
    step: Step
    answered: int
    errors: int
    unsent: int
    p99_ms: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.step.start_s,
            "rate": round(self.step.rate, 1),
            "answered": self.answered,
            "throughput_per_s": round(self.answered / (self.step.end_s - self.step.start_s), 1),
            "errors": self.errors,
            "unsent": self.unsent,
            "p99_ms": self.p99_ms,
            "passed": self.passed,
        }


@dataclass
class TrafficResult:
    tally: Tally
    hist: HdrHistogram
    service: HdrHistogram
    lag: HdrHistogram
    seconds: dict[int, Second]
    workers: list[dict[str, Any]]
    elapsed_s: float
    stopped_early: bool
    steps: list[StepResult]
    failures: list[str]


class BoxCpu:
    """Busy share of all CPUs since the previous sample, from /proc/stat (Linux only)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def sample(self) -> float | None:
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        total, idle = now[0] - last[0], now[1] - last[1]
        return round(100.0 * (total - idle) / total, 1)


class Live:
    """The one-line progress display on stderr (redrawn in place on a terminal)."""

    def __init__(self, profile: RateProfile, enabled: bool) -> None:
        self.profile = profile
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.errors = 0

    def show(self, t: int, sec: Second) -> None:
        self.errors += sec.errors
        if not self.enabled:
            return
        pct = percentiles_ms(sec.hist)
        cpu = " ".join(f"{c:3.0f}%" for _, c in sorted(sec.cpu.items()))
        clock = f"{t + 1:4d}s/{self.profile.duration_s:.0f}s"
        if t >= self.profile.duration_s:
            clock = f"drain {t + 1:3d}s"
        if self.profile.name == WARMUP:
            clock = f"warm-up {clock}"
        line = (
            f"[{clock}] "
            f"target {self.profile.rate_at(t + 0.5):7,.0f}/s  answered {sec.answered:7,}/s  "
            f"p50 {pct['p50']:6.2f}ms  p99 {pct['p99']:7.2f}ms  max {pct['max']:7.1f}ms  "
            f"errors {self.errors:,}  unsent {sec.unsent:,}  gen cpu {cpu}"
            f"{'' if sec.box_cpu is None else f'  box {sec.box_cpu:.0f}%'}"
        )
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run_traffic(
    specs: list[WorkerSpec], profile: RateProfile, slo_ms: float, live: bool = True
) -> TrafficResult:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=worker_main, args=(spec, out, go, start_at, stop), daemon=True, name=f"lt-{i}"
        )
        for i, spec in enumerate(specs)
    ]
    for p in procs:
        p.start()
    try:
        return _collect(procs, out, go, start_at, stop, profile, slo_ms, Live(profile, live))
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join(timeout=JOIN_TIMEOUT_S)


def _collect(
    procs: list[Any],
    out: Any,
    go: Any,
    start_at: Any,
    stop: Any,
    profile: RateProfile,
    slo_ms: float,
    live: Live,
) -> TrafficResult:
    n = len(procs)
    failures: list[str] = []
    _await_ready(procs, out)
    start_at.value = time.time() + START_DELAY_S
    go.set()
    t_start = time.monotonic() + START_DELAY_S
    seconds: dict[int, Second] = {}
    finals: dict[int, dict[str, Any]] = {}
    shown = 0
    box = BoxCpu()
    deadline = t_start + profile.duration_s + 60.0
    while len(finals) + len(failures) < n and time.monotonic() < deadline:
        try:
            kind, worker, payload = out.get(timeout=POLL_S)
        except queue.Empty:
            if any(not p.is_alive() and p.exitcode for p in procs):
                failures.append("a worker process died")
                break
            continue
        if kind == "tick":
            seconds.setdefault(payload["t"], Second()).add(worker, payload)
        elif kind == "done":
            finals[worker] = payload
        elif kind == "failed":
            failures.append(f"worker {worker} failed:\n{payload}")
            stop.set()
        # Show (and judge, for a step search) every second that all live workers reported.
        while _complete(seconds, shown, n - len(failures), finals):
            seconds[shown].box_cpu = box.sample()
            seconds[shown].target = profile.rate_at(shown + 0.5)
            live.show(shown, seconds[shown])
            shown += 1
            if profile.steps and _step_failed(profile, seconds, shown, slo_ms):
                stop.set()
    live.end()
    if len(finals) < n and not failures:
        failures.append("workers did not finish in time")
    steps = _evaluate_steps(profile, seconds, slo_ms) if profile.steps else []
    return _merge(finals, seconds, steps, failures, time.monotonic() - t_start, stop.is_set())


def _await_ready(procs: list[Any], out: Any) -> None:
    ready: set[int] = set()
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while len(ready) < len(procs):
        if time.monotonic() > deadline:
            raise TimeoutError("load workers did not get ready (is the target reachable?)")
        try:
            kind, worker, payload = out.get(timeout=POLL_S)
        except queue.Empty:
            if any(not p.is_alive() for p in procs):
                raise RuntimeError("a load worker exited before it was ready") from None
            continue
        if kind == "failed":
            raise RuntimeError(f"load worker {worker} failed to start:\n{payload}")
        ready.add(worker)


def _complete(seconds: dict[int, Second], t: int, live: int, finals: dict[int, Any]) -> bool:
    """Second t is complete once every live worker has reported it (each reports every second,
    empty or not) or every worker has finished."""
    sec = seconds.get(t)
    return sec is not None and (sec.reports >= live or len(finals) >= live)


def _stair_of(profile: RateProfile, t_end: int) -> Step | None:
    """The stair that ends exactly at second `t_end` (all its seconds shown), if any."""
    for s in profile.steps:
        if int(s.end_s) == t_end:
            return s
    return None


def _step_result(step: Step, seconds: dict[int, Second], slo_ms: float) -> StepResult:
    secs = [seconds[t] for t in range(int(step.start_s), int(step.end_s)) if t in seconds]
    hist = new_hist()
    for s in secs:
        hist.add(s.hist)
    p99 = percentiles_ms(hist)["p99"]
    answered = sum(s.answered for s in secs)
    errors = sum(s.errors for s in secs)
    unsent = sum(s.unsent for s in secs)
    passed = p99 <= slo_ms and errors == 0 and unsent == 0 and answered > 0
    return StepResult(step, answered, errors, unsent, p99, passed)


def _step_failed(profile: RateProfile, seconds: dict[int, Second], shown: int, slo: float) -> bool:
    stair = _stair_of(profile, shown)
    return stair is not None and not _step_result(stair, seconds, slo).passed


def _evaluate_steps(
    profile: RateProfile, seconds: dict[int, Second], slo: float
) -> list[StepResult]:
    results = []
    for stair in profile.steps:
        result = _step_result(stair, seconds, slo)
        if result.answered == 0 and result.errors == 0:
            break  # the search stopped before this stair
        results.append(result)
        if not result.passed:
            break
    return results


def _merge(
    finals: dict[int, dict[str, Any]],
    seconds: dict[int, Second],
    steps: list[StepResult],
    failures: list[str],
    elapsed: float,
    stopped: bool,
) -> TrafficResult:
    tally = Tally()
    workers = []
    for wid in sorted(finals):
        f = finals[wid]
        tally.add_msg(f["tally"])
        lag = percentiles_ms(merge([f["lag"]]))
        workers.append(
            {
                "worker": wid,
                "busy_pct": f["busy_pct"],
                "max_second_cpu_pct": f["max_second_cpu_pct"],
                "cpu_s": f["cpu_s"],
                "wall_s": f["wall_s"],
                "lag_p99_ms": lag["p99"],
                "lag_max_ms": lag["max"],
                "sent": f["tally"]["sent"],
                "unsent": f["tally"]["unsent"],
                "stream_restarts": f["restarts"],
                "reconnects": f.get("reconnects", 0),
                "nice": f.get("nice", 0),
            }
        )
    hist = merge([f["hist"] for f in finals.values()])
    lag = merge([f["lag"] for f in finals.values()])
    service = merge([f["service"] for f in finals.values()])
    return TrafficResult(
        tally, hist, service, lag, seconds, workers, elapsed, stopped, steps, failures
    )

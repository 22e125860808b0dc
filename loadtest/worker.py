"""One load-generator process: its own uvloop loop, gRPC channels and share of the arrivals.

Open loop: arrival times come from the rate profile alone, requests go out at those times without
waiting for earlier replies, and latency is measured from each request's *intended* send time, so a
stalled server cannot hide behind a stalled generator (no coordinated omission). How late the
generator itself was is recorded separately ("lag"), with its CPU use, so the report can tell
when the generator, not the server, was the limit.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

import uvloop

from loadtest.client import ClientAuth
from loadtest.mix import Mix, MixPlan
from loadtest.profiles import RateProfile
from loadtest.senders import SENDERS, Sender
from loadtest.stats import Bucket, Tally, new_hist, record
from loadtest.wire_senders import WIRE_SENDERS, connect_wire
from proto.passgate.v1 import common_pb2

READY_TIMEOUT_S = 30.0
GO_TIMEOUT_S = 120.0
STOP_CHECK_S = 0.1
# After this many back-to-back sends the loop yields, so replies are read even when behind.
BURST = 64
TICK_OFFSET_S = 0.05
# A chunk of scans is made while idle only if the next arrival is at least this far off.
PREPARE_MARGIN_S = 0.001
CHANNEL_OPTIONS = [
    # One TCP connection per channel (by default channels to one target share a subchannel).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 << 20),
]


@dataclass(frozen=True)
class WorkerSpec:
    worker_id: int
    workers: int
    target: str
    auth: ClientAuth
    mode: str
    profile: RateProfile
    seed: int
    id_prefix: str
    plan: MixPlan
    channels: int = 2
    streams: int = 4
    batch_size: int = 50
    max_outstanding: int = 20_000
    deadline_s: float = 5.0
    arrivals: str = "poisson"
    # Scheduling priority of the worker process (0: unchanged); see _raise_priority.
    nice: int = 0
    # "wire": the lean HTTP/2 client (loadtest/h2wire.py); "grpc": grpc.aio channels.
    client: str = "wire"

    @property
    def unit(self) -> int:
        """Scans per arrival: a batch call carries batch_size scans."""
        return self.batch_size if self.mode == "batch" else 1


def worker_main(spec: WorkerSpec, out: Any, go: Any, start_at: Any, stop: Any) -> None:
    """Process entry point. Ctrl-C belongs to the parent, which sets `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _raise_priority(spec.nice)
    try:
        final = uvloop.run(Worker(spec, out).run(go, start_at, stop))
        out.put(("done", spec.worker_id, final))
    except BaseException:
        out.put(("failed", spec.worker_id, traceback.format_exc()))


class Worker:
    def __init__(self, spec: WorkerSpec, out: Any) -> None:
        self.spec = spec
        self.out = out
        prefix = f"{spec.id_prefix}-w{spec.worker_id}"
        self.mix = Mix(spec.plan, spec.seed * 1009 + spec.worker_id, prefix)
        self.tally = Tally()
        self.hist = new_hist()
        self.lag = new_hist()
        # From the actual send time: what the latency would look like with coordinated omission.
        self.service = new_hist()
        self.buckets: dict[int, Bucket] = {}
        self.outstanding = 0
        # Set while the schedule naps with scans to make: woken when the last call out returns.
        self._idle: asyncio.Future[None] | None = None
        # Sent with every call: the channels carry TLS but no call credentials (client.py).
        self.metadata = spec.auth.metadata
        self.t0 = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cpu_mark = (time.process_time(), time.monotonic())
        self._cpu_max = 0.0
        self._flushed = 0

    # --- time and accounting ------------------------------------------------------------

    def now(self) -> float:
        # Not loop.time(): uvloop's clock has millisecond resolution.
        return time.monotonic() - self.t0

    def bucket(self, t: float) -> Bucket:
        # A late count for a second already reported goes to the first open one.
        sec = max(self._flushed, int(t))
        b = self.buckets.get(sec)
        if b is None:
            b = self.buckets[sec] = Bucket()
        return b

    def on_sent(self, intended: float, n: int = 1) -> float:
        """Counts a send; returns the actual send time."""
        self.tally.sent += n
        self.bucket(intended).sent += n
        self.outstanding += n
        return self.now()

    def _returned(self, n: int) -> None:
        self.outstanding -= n
        if not self.outstanding and self._idle is not None:
            _settle_nap(self._idle)

    def on_answer(self, intended: float, sent_at: float, req: Any, decision: Any) -> None:
        self._returned(1)
        now = self.now()
        if decision.reason == 0:
            # Inside a stream or batch an item that failed carries its error in the message.
            self._error(now, in_band_code(decision.message))
            return
        micros = (now - intended) * 1e6
        record(self.hist, micros)
        record(self.service, (now - sent_at) * 1e6)
        b = self.bucket(now)
        record(b.hist, micros)
        b.answered += 1
        t = self.tally
        t.answered += 1
        t.reasons[REASON_NAMES.get(decision.reason, str(decision.reason))] += 1
        t.allowed += decision.allowed
        t.pay_later += decision.pay_later
        if decision.shared_card_suspected:
            t.shared_cards += 1
            t.shared_planned += self.mix.is_far_scan(req)
        self.mix.observe(req, decision)

    def on_batch_answer(
        self, intended: float, sent_at: float, reqs: list[Any], decisions: Any
    ) -> None:
        """A batch's decisions: they share one latency, so each histogram gets one record with
        a count instead of one per decision (a batch of 100 would otherwise cost ~300 records)."""
        now = self.now()
        t, observe = self.tally, self.mix.observe
        reasons = t.reasons
        ok = failed = 0
        for req, decision in zip(reqs, decisions, strict=False):
            if decision.reason == 0:
                failed += 1
                self._error(now, in_band_code(decision.message))
                continue
            ok += 1
            reasons[REASON_NAMES.get(decision.reason, str(decision.reason))] += 1
            t.allowed += decision.allowed
            t.pay_later += decision.pay_later
            if decision.shared_card_suspected:
                t.shared_cards += 1
                t.shared_planned += self.mix.is_far_scan(req)
            observe(req, decision)
        self._returned(ok + failed)  # a short answer's missing items are the caller's errors
        if not ok:
            return
        micros = (now - intended) * 1e6
        record(self.hist, micros, ok)
        record(self.service, (now - sent_at) * 1e6, ok)
        b = self.bucket(now)
        record(b.hist, micros, ok)
        b.answered += ok
        t.answered += ok

    def on_error(self, code: str, n: int = 1) -> None:
        self._returned(n)
        self._error(self.now(), code, n)

    def _error(self, now: float, code: str, n: int = 1) -> None:
        self.tally.errors_by_code[code] += n
        self.bucket(now).errors += n

    def _cpu_pct(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        c0, w0 = self._cpu_mark
        self._cpu_mark = (cpu, wall)
        pct = 100.0 * (cpu - c0) / (wall - w0) if wall > w0 else 0.0
        self._cpu_max = max(self._cpu_max, pct)
        return round(pct, 1)

    def _flush(self, upto: int | None) -> None:
        """Reports every second before `upto` (all of them when None), empty ones too, so the
        parent knows when a second is complete."""
        cpu = self._cpu_pct()
        if upto is None:
            upto = max(self.buckets, default=self._flushed - 1) + 1
        for sec in range(self._flushed, upto):
            bucket = self.buckets.pop(sec, None) or Bucket()
            self.out.put(("tick", self.spec.worker_id, bucket.to_msg(sec, cpu)))
        self._flushed = max(self._flushed, upto)

    async def _ticks(self) -> None:
        while True:
            now = self.now()
            await asyncio.sleep(int(now) + 1 + TICK_OFFSET_S - now)
            self._flush(int(self.now()))

    # --- the run ------------------------------------------------------------------------

    async def run(self, go: Any, start_at: Any, stop: Any) -> dict[str, Any]:
        self.loop = loop = asyncio.get_running_loop()
        spec = self.spec
        channels: list[Any] = []
        try:
            channels = await self._connect()
            senders = WIRE_SENDERS if spec.client == "wire" else SENDERS
            sender = senders[spec.mode](self, channels)
            await sender.open()
            while sender.prepare():
                pass
            _quiet_gc()
            self.out.put(("ready", spec.worker_id, None))
            if not await loop.run_in_executor(None, go.wait, GO_TIMEOUT_S):
                raise TimeoutError("the parent never gave the start signal")
            self.t0 = time.monotonic() + (start_at.value - time.time())
            cpu0, wall0 = time.process_time(), time.monotonic()
            self._cpu_mark = (cpu0, wall0)
            ticker = loop.create_task(self._ticks())
            await self._schedule(sender, stop)
            await sender.drain(spec.deadline_s + 1.0)
            ticker.cancel()
            self._flush(None)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        finally:
            gc.enable()
            closing = (ch.close() if spec.client == "wire" else ch.close(None) for ch in channels)
            await asyncio.gather(*closing, return_exceptions=True)
        return self._final(cpu, wall, sender)

    async def _connect(self) -> list[Any]:
        """The worker's connections, open and ready: `spec.channels` of them."""
        spec, n = self.spec, max(1, self.spec.channels)
        if spec.client == "wire":
            return list(await asyncio.gather(*(connect_wire(spec) for _ in range(n))))
        lean = spec.auth.lean_aio_channel
        channels = [lean(spec.target, options=CHANNEL_OPTIONS) for _ in range(n)]
        ready = asyncio.gather(*(ch.channel_ready() for ch in channels))
        await asyncio.wait_for(ready, READY_TIMEOUT_S)
        return channels

    def _final(self, cpu: float, wall: float, sender: Sender) -> dict[str, Any]:
        return {
            "tally": self.tally.to_msg(),
            "hist": self.hist.encode(),
            "lag": self.lag.encode(),
            "service": self.service.encode(),
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "busy_pct": round(100.0 * cpu / wall, 1) if wall > 0 else 0.0,
            "max_second_cpu_pct": self._cpu_max,
            "restarts": sender.restarts,
            "reconnects": sender.reconnects,
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
        }

    async def _schedule(self, sender: Sender, stop: Any) -> None:
        spec = self.spec
        arrivals = Arrivals(
            spec.profile, spec.workers, spec.unit, spec.arrivals, spec.seed, spec.worker_id
        )
        duration = spec.profile.duration_s
        next_check, burst = 0.0, 0
        t = arrivals.first()
        while t < duration:
            now = self.now()
            if now >= next_check:
                if stop.is_set():
                    break
                next_check = now + STOP_CHECK_S
            if t > now:
                burst = 0
                # Idle until the next arrival: make the next scans now, off the send path, a
                # chunk at a time with the loop free in between to read replies. Not while a
                # call is out (unless few are left): on two cores the server's wake-up for that
                # call would wait behind this worker, and the call would be charged with it.
                quiet = not self.outstanding or sender.ready < sender.low_water
                made = sender.prepare() if quiet else 0
                now = self.now()
                if t > now:
                    if made and t - now > PREPARE_MARGIN_S:
                        # The CPU to whatever else is runnable on it (the server, answering the
                        # other worker) before the next chunk: this worker outranks it (nice).
                        os.sched_yield()
                        await asyncio.sleep(0)
                    else:
                        wanted = not quiet and sender.ready < sender.lookahead
                        await self._nap(min(t - now, STOP_CHECK_S), wanted)
                continue
            record(self.lag, (now - t) * 1e6)
            self.tally.scheduled += spec.unit
            if self.outstanding + spec.unit > spec.max_outstanding:
                self.tally.unsent += spec.unit
                self.bucket(t).unsent += spec.unit
            else:
                sender.send(t)
            t = arrivals.next(t)
            burst += 1
            if burst >= BURST:
                burst = 0
                await asyncio.sleep(0)

    async def _nap(self, delay: float, until_idle: bool) -> None:
        """Sleeps `delay`; with `until_idle`, wakes as soon as no call is out."""
        if not until_idle:
            await asyncio.sleep(delay)
            return
        assert self.loop is not None
        self._idle = idle = self.loop.create_future()
        timer = self.loop.call_later(delay, _settle_nap, idle)
        try:
            await idle
        finally:
            timer.cancel()
            self._idle = None


def _settle_nap(idle: asyncio.Future[None]) -> None:
    if not idle.done():
        idle.set_result(None)


def _raise_priority(nice: int) -> None:
    """The instrument first: a worker at a higher priority than the server (negative nice) is
    not kept waiting for a CPU by the server or by anything else on the machine, so the time a
    request waits is the server's. Needs the right to raise priority; without it the worker runs
    at the normal priority and says so in the report (`nice` in its final figures)."""
    if nice == 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        return


def _quiet_gc() -> None:
    """No garbage-collector pauses in the measured run. Everything made so far (the mix plan,
    channels, protobuf classes) is moved out of the collector's sight, and automatic collection
    is off until the run ends: a generation-2 pass over a worker's heap takes milliseconds, which
    would be charged to the server's latency. The run is bounded in time and the hot path makes
    few reference cycles, so the garbage left for later is small."""
    gc.collect()
    gc.freeze()
    gc.disable()


class Arrivals:
    """This worker's arrival times: its share of the profile's rate (1 / workers, in arrivals of
    `unit` scans), as a Poisson process (thinning against the peak) or evenly spaced."""

    def __init__(
        self, profile: RateProfile, workers: int, unit: int, kind: str, seed: int, worker: int
    ) -> None:
        self.profile = profile
        self.share = workers * unit
        self.kind = kind
        self.peak = profile.peak / self.share
        self.rng = random.Random(seed * 7919 + worker)
        # Evenly spaced workers interleave instead of sending in lockstep.
        self.offset = worker * unit / max(1.0, profile.rate_at(0.0))

    def first(self) -> float:
        if self.kind == "uniform":
            return min(self.offset, self.profile.duration_s)
        return self.next(0.0)

    def next(self, t: float) -> float:
        end = self.profile.duration_s
        if self.peak <= 0:
            return end
        if self.kind == "uniform":
            rate = self.profile.rate_at(t) / self.share
            return t + (1.0 / rate if rate > 0 else 0.01)
        for _ in range(100_000):
            t += self.rng.expovariate(self.peak)
            if t >= end or self.rng.random() * self.peak <= self.profile.rate_at(t) / self.share:
                return t
        return end


REASON_NAMES = {v: common_pb2.Reason.Name(v) for v in common_pb2.Reason.values()}


def in_band_code(message: str) -> str:
    """The gRPC code an in-band failed item stands for (see actors.ingress.gate_service)."""
    if message.startswith("INVALID_ARGUMENT"):
        return "INVALID_ARGUMENT"
    if message.startswith("overloaded"):
        return "RESOURCE_EXHAUSTED"
    if message.startswith("shard unavailable"):
        return "UNAVAILABLE"
    return "UNSPECIFIED_REASON"

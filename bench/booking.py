"""The per-request calls that are not validations, under load: a booking rush and hard polling.

Against a running passgate whose clock stands on a day a reservation museum is open, before its
last slot (the transport comparison's own passgate, or `python -m bench --booking-only`, which
starts one), started with its per-caller rate switched off (`UNLIMITED`), so that the figures
measure the path (with `--target`, start it so yourself; `--flood` wants it as shipped):

- booking rush: `Reserve` calls of distinct passes for ONE slot of one museum (today's last, which
  the load runs' holders leave empty), `IN_FLIGHT` at a time; calls/s, latency, and how many
  were confirmed: exactly the slot's capacity, as the rush outnumbers it (the row says so, or
  how it missed);
- status poll: `GetVenueStatus` flat out over every venue, `IN_FLIGHT` at a time, for a bounded
  time; calls/s and latency;
- pass look-ups: `GetPass` of the rush's passes, `IN_FLIGHT` at a time; calls/s and latency.

`--flood SECONDS` only floods a running passgate with GetVenueStatus from FLOOD_CALLERS callers
(a broken or hostile dashboard), for a load test run beside it to show what the gates feel.

Each loop is bounded in calls and in time. The rush's passes (active ones, numbered apart from
the load runs' population) are imported first: only an existing, active pass books.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from actors.ingress.convert import pass_proto
from core.models import PassRecord, PassStatus, Province
from core.population import generate_passes
from loadtest.client import ClientAuth
from loadtest.config import LoadConfig
from loadtest.reservations import current_slot
from loadtest.server import running_passgate
from proto.passgate.v1 import passes_pb2, passes_pb2_grpc, quota_pb2, quota_pb2_grpc

RUSH_CALLS = 3_000
IN_FLIGHT = 64
POLL_CALLS = 20_000
POLL_SECONDS = 5.0
LOOKUPS = 3_000
CALL_TIMEOUT_S = 10.0
# Passes numbered from here, apart from the load runs' population (which starts at 0).
FIRST_PASS = 5_000_000
SEED = 20261001
# The server's per-caller rate for these calls (`actors/ingress/call_budget.py`) switched off:
# these figures measure the path; `--flood` beside a load test shows what the rate protects.
UNLIMITED = ["--calls-per-caller-per-s", "0"]
# A broken or hostile dashboard: this many callers, each calling again as soon as answered.
FLOOD_CALLERS = 32


@dataclass
class Figures:
    """One call kind's run: calls answered, errors, wall seconds and latencies (ms)."""

    label: str
    answered: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    note: str = ""

    @property
    def per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def row(self) -> dict[str, Any]:
        """For the saved results and `table`."""
        return {
            "label": self.label,
            "answered": self.answered,
            "errors": self.errors,
            "per_s": round(self.per_s, 1),
            "p50_ms": round(self.pct(0.5), 2),
            "p99_ms": round(self.pct(0.99), 2),
            "note": self.note,
        }


async def _flat_out(
    calls: list[Callable[[], Awaitable[object]]], in_flight: int, max_seconds: float
) -> tuple[list[float], int, float, list[object]]:
    """Runs `calls` with `in_flight` at a time until done or `max_seconds` passed; returns the
    latencies (ms), the error count, the wall time and the answers."""
    it = iter(calls)
    latencies: list[float] = []
    answers: list[object] = []
    errors = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds

    async def worker() -> None:
        nonlocal errors
        for call in it:
            if time.perf_counter() > deadline:
                return
            began = time.perf_counter()
            try:
                answers.append(await call())
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - began) * 1e3)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies, errors, time.perf_counter() - t0, answers


def _museum(province: Province, at: datetime) -> tuple[str, str, str, int]:
    """(venue_id, date, slot_id, capacity) of the last slot today of the first reservation
    museum: later than the slot the load runs' holders book (the current one), so the rush
    starts on an empty slot."""
    for venue in sorted(province.venues.values(), key=lambda v: v.venue_id):
        local = at.astimezone(venue.tz)
        if not venue.reservation_required or not venue.slots:
            continue
        last = max(venue.slots, key=lambda s: s.start_min)
        if current_slot(venue, at) not in (None, (local.date().isoformat(), last.slot_id)):
            return venue.venue_id, local.date().isoformat(), last.slot_id, last.capacity
    raise RuntimeError(f"no reservation venue has a later slot at {at.isoformat()}")


def _status_polls(
    quota: quota_pb2_grpc.QuotaStub, province: Province, n: int
) -> list[Callable[[], Awaitable[object]]]:
    """`n` GetVenueStatus calls, round the province's venues."""
    venues = sorted(province.venues)
    refs = [quota_pb2.VenueRef(venue_id=venues[i % len(venues)]) for i in range(n)]
    return [functools.partial(quota.GetVenueStatus, ref, timeout=CALL_TIMEOUT_S) for ref in refs]


async def _measure(
    target: str, auth: ClientAuth, province: Province, at: datetime, passes: list[str]
) -> list[Figures]:
    venue_id, date, slot_id, capacity = _museum(province, at)
    async with auth.aio_channel(target) as channel:
        book = passes_pb2_grpc.PassesStub(channel)
        quota = quota_pb2_grpc.QuotaStub(channel)

        def reserve(pass_id: str) -> Callable[[], Awaitable[object]]:
            req = passes_pb2.ReserveRequest(
                pass_id=pass_id, venue_id=venue_id, date=date, slot_id=slot_id
            )
            return lambda: book.Reserve(req, timeout=CALL_TIMEOUT_S)

        def get_pass(pass_id: str) -> Callable[[], Awaitable[object]]:
            ref = passes_pb2.PassRef(pass_id=pass_id)
            return lambda: book.GetPass(ref, timeout=CALL_TIMEOUT_S)

        lat, errors, seconds, answers = await _flat_out(
            [reserve(p) for p in passes], IN_FLIGHT, 60.0
        )
        confirmed = sum(1 for a in answers if isinstance(a, passes_pb2.Reservation) and a.confirmed)
        full = min(capacity, len(passes))
        verdict = "OVERBOOKED" if confirmed > capacity else "filled exactly"
        if confirmed < full:
            verdict = f"{full - confirmed:,} places left unbooked"
        rush = Figures(
            f"Reserve, booking rush ({RUSH_CALLS:,} passes, one slot)", len(answers), errors,
            seconds, lat, f"{confirmed:,} confirmed for {capacity:,} places: {verdict}",
        )  # fmt: skip
        lat, errors, seconds, answers = await _flat_out(
            _status_polls(quota, province, POLL_CALLS), IN_FLIGHT, POLL_SECONDS
        )
        poll = Figures("GetVenueStatus, flat out", len(answers), errors, seconds, lat)
        lat, errors, seconds, answers = await _flat_out(
            [get_pass(p) for p in passes[:LOOKUPS]], IN_FLIGHT, POLL_SECONDS
        )
        lookups = Figures("GetPass, flat out", len(answers), errors, seconds, lat)
    return [rush, poll, lookups]


def _import(target: str, auth: ClientAuth, province: Province, today: int) -> list[str]:
    """Imports RUSH_CALLS active passes (numbered from FIRST_PASS) into the server; their ids."""
    wanted: list[PassRecord] = []
    start = FIRST_PASS
    while len(wanted) < RUSH_CALLS:
        made = generate_passes(province, start, RUSH_CALLS, SEED, today)
        wanted += [rec for rec in made if rec.status == PassStatus.ACTIVE]
        start += RUSH_CALLS
    wanted = wanted[:RUSH_CALLS]
    with auth.channel(target) as channel:
        summary = passes_pb2_grpc.PassesStub(channel).UpsertPasses(
            iter([pass_proto(rec) for rec in wanted]), timeout=120
        )
    if summary.rejected:
        raise RuntimeError(f"the booking passes' import rejected {summary.rejected}")
    return [rec.pass_id for rec in wanted]


def run(target: str, auth: ClientAuth, at: datetime) -> list[dict[str, Any]]:
    """Imports the rush's passes, then measures the three call kinds against `target`; a row
    (`Figures.row`) each."""
    province = load_province(DEFAULT_CONFIG_DIR)
    passes = _import(target, auth, province, at.date().toordinal())
    print(f"\n== booking rush, status poll, pass look-ups ({IN_FLIGHT} in flight) ==", flush=True)
    return [f.row() for f in asyncio.run(_measure(target, auth, province, at, passes))]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"| call ({IN_FLIGHT} in flight, one caller, per-caller rate off) | answered | errors "
        "| calls/s | p50 ms | p99 ms | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['answered']:,} | {r['errors']:,} | {r['per_s']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['note']} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _own_passgate() -> Iterator[tuple[str, ClientAuth, datetime]]:
    province = load_province(DEFAULT_CONFIG_DIR)
    at = LoadConfig().sim_instant(province)
    with tempfile.TemporaryDirectory(prefix="passgate-bench-") as home:
        creds = Path(home) / "credentials"
        args = ["--shards", "2", "--clock-start", at.isoformat(), *UNLIMITED]
        with running_passgate(args, DEFAULT_CONFIG_DIR, credentials=creds) as server:
            yield server.target, ClientAuth(creds), at


def run_own() -> str:
    """`python -m bench --booking-only`: its own passgate, then the table."""
    with _own_passgate() as (target, auth, at):
        return table(run(target, auth, at))


async def _flood(target: str, auth: ClientAuth, province: Province, seconds: float) -> Figures:
    """GetVenueStatus as fast as FLOOD_CALLERS callers can, for `seconds` (bounded in calls)."""
    async with auth.aio_channel(target) as channel:
        calls = _status_polls(quota_pb2_grpc.QuotaStub(channel), province, int(seconds * 20_000))
        lat, errors, took, answers = await _flat_out(calls, FLOOD_CALLERS, seconds)
    return Figures(
        f"GetVenueStatus flood, {FLOOD_CALLERS} callers", len(answers), errors, took, lat
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.booking --target HOST:PORT --credentials DIR --at ISO`: against a
    running passgate whose clock stands at `at` (default: start one)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--target",
        default=None,
        help="a running passgate (default: start one); for the booking figures started with "
        "--calls-per-caller-per-s 0, for --flood as shipped",
    )
    p.add_argument("--credentials", type=Path, default=None, help="its credentials directory")
    p.add_argument("--at", default=None, help="the instant its clock stands at (ISO 8601)")
    p.add_argument(
        "--flood",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="only flood --target with GetVenueStatus for SECONDS (run a load test beside it)",
    )
    args = p.parse_args(argv)
    if args.flood > 0:
        if args.target is None:
            p.error("--flood needs --target")
        auth = ClientAuth.find(args.credentials)
        flood = _flood(args.target, auth, load_province(DEFAULT_CONFIG_DIR), args.flood)
        print(table([asyncio.run(flood).row()]), flush=True)
        return 0
    if args.target is None:
        print(run_own(), flush=True)
        return 0
    if args.at is None:
        p.error("--at is required with --target")
    at = datetime.fromisoformat(args.at)
    print(table(run(args.target, ClientAuth.find(args.credentials), at)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

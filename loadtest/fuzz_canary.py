"""The canary: well-formed gates scanning canary passes in and out of the canary venues while the
hostile traffic runs. Every call must be answered OK with the decision an honest server gives;
whatever it was told goes into the ledger that the state checks compare against.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from loadtest import fuzz_world as w
from loadtest.fuzz_checks import good_answer
from loadtest.fuzz_inputs import Ctx
from loadtest.fuzz_state import CanaryLedger
from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc

CALL_TIMEOUT_S = 5.0
RETRIES = 3
RETRY_PAUSE_S = 0.2
# Entries per canary venue before the canary switches to dry runs (daily capacity is 10,000).
MAX_ENTRIES_PER_VENUE = 3_000
MAX_SAMPLES = 10
COMPLETED_KEPT = 1_000


@dataclass
class CanaryStats:
    calls: int = 0
    ok: int = 0
    harmed: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


class Canary:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        ctx: Ctx,
        ledger: CanaryLedger,
        rate: float,
        in_flight: dict[str, int],
    ) -> None:
        self._stub = gate_pb2_grpc.GateStub(channel)
        self._ctx = ctx
        self._ledger = ledger
        self._in_flight = in_flight
        self.stats = CanaryStats()
        # Two gates at each canary venue, each with its own share of the canary passes.
        self._lanes = [(v, g) for v in w.CANARY_VENUES for g in (1, 2)]
        self._interval = len(self._lanes) / max(rate, 0.1)

    async def run(self, stop: asyncio.Event) -> None:
        per_lane = w.CANARY_PASSES // len(self._lanes)
        await asyncio.gather(
            *(
                self._lane(venue, g, list(range(k * per_lane, (k + 1) * per_lane)), stop)
                for k, (venue, g) in enumerate(self._lanes)
            )
        )

    async def _lane(self, venue: str, gate_n: int, passes: list[int], stop: asyncio.Event) -> None:
        inside: dict[int, bool] = dict.fromkeys(passes, False)
        next_at = time.monotonic()
        turn = 0
        while not stop.is_set() and inside:
            i = list(inside)[turn % len(inside)]
            turn += 1
            settled = await self._scan(venue, gate_n, i, inside[i])
            if settled is None:
                del inside[i]  # its state is unknown now: keep the expectations exact
            else:
                inside[i] = settled
            next_at += self._interval
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                next_at = time.monotonic()

    async def _scan(self, venue: str, gate_n: int, i: int, inside: bool) -> bool | None:
        """One scan of canary pass `i`; returns whether it is inside afterwards (None: unknown)."""
        dry = self._ledger.entries[venue] >= MAX_ENTRIES_PER_VENUE and not inside
        direction = gate_pb2.DIRECTION_EXIT if inside else gate_pb2.DIRECTION_ENTRY
        req = gate_pb2.ValidateRequest(
            request_id=self._ctx.rid("cn"),
            venue_id=venue,
            gate_id=w.gate(venue, gate_n),
            credential=common_pb2.Credential(kind=w.CARD, value=w.canary_card(i)),
            direction=direction,
            dry_run=dry,
        )
        pid = w.canary_pass(i)
        self.stats.calls += 1
        first = await self._call(req)
        d = first
        if (
            isinstance(first, gate_pb2.Decision)
            and good_answer(first, req.request_id)
            and first.pass_id == pid
        ):
            self.stats.ok += 1
        else:
            self._harmed(req, first)
            d = await self._retry(req)
        if not isinstance(d, gate_pb2.Decision):
            self._ledger.uncertain[venue] += 1
            return None
        self._ctx.completed.append((req.request_id, venue, gate_n, pid, w.canary_card(i)))
        del self._ctx.completed[:-COMPLETED_KEPT]
        if not d.allowed or dry:
            return inside
        if inside:
            self._ledger.exits[venue] += 1
            return False
        self._ledger.entries[venue] += 1
        self._ledger.pass_entries[(pid, venue)] += 1
        return True

    async def _call(
        self, req: gate_pb2.ValidateRequest
    ) -> gate_pb2.Decision | grpc.aio.AioRpcError:
        try:
            return await self._stub.Validate(req, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return exc

    async def _retry(self, req: gate_pb2.ValidateRequest) -> gate_pb2.Decision | None:
        # A gate retries with the same request_id; the answer is the committed decision.
        for _ in range(RETRIES):
            await asyncio.sleep(RETRY_PAUSE_S)
            got = await self._call(req)
            if isinstance(got, gate_pb2.Decision):
                return got
        return None

    def _harmed(
        self, req: gate_pb2.ValidateRequest, got: gate_pb2.Decision | grpc.aio.AioRpcError
    ) -> None:
        self.stats.harmed += 1
        if len(self.stats.samples) >= MAX_SAMPLES:
            return
        if isinstance(got, grpc.aio.AioRpcError):
            answer = f"{got.code().name}: {(got.details() or '')[:200]!r}"
        else:
            answer = (
                f"allowed={got.allowed} reason={got.reason} pass_id={got.pass_id!r}"
                f" {got.message[:80]!r}"
            )
        direction = "EXIT" if req.direction == gate_pb2.DIRECTION_EXIT else "ENTRY"
        self.stats.samples.append(
            {
                "input": f"{req.venue_id} {req.gate_id} {req.credential.value} {direction}",
                "answer": answer,
                "hostile_in_flight": {k: v for k, v in self._in_flight.items() if v},
                "t": self._ctx.elapsed(),
            }
        )

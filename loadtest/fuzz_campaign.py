"""The hostile half of the fuzz campaign: bounded concurrent senders over raw-bytes gRPC calls,
alongside the canary, with a progress line every few seconds.

Every call has a deadline and the loop stops at --count inputs or --duration seconds, whichever
comes first; calls in flight then finish (within their deadlines) before the tally is final.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc

from loadtest import fuzz_transport
from loadtest.client import ClientAuth
from loadtest.fuzz_canary import Canary
from loadtest.fuzz_checks import judge, parse
from loadtest.fuzz_inputs import BIDI, CLIENT_STREAM, RAW, SERVER_STREAM, UNARY, Ctx, Probe
from loadtest.fuzz_report import Tally
from loadtest.fuzz_source import ProbeSource
from loadtest.fuzz_state import CanaryLedger
from proto.passgate.v1 import common_pb2, passes_pb2, passes_pb2_grpc

UNARY_TIMEOUT_S = 10.0
# Every item is answered within the server's 5 s budget, so a stream still open after this hangs.
STREAM_TIMEOUT_S = 10.0
# A watch on a venue that exists streams forever: its first message is the answer.
WATCH_TIMEOUT_S = 5.0
BIG_TIMEOUT_S = 60.0
BIG_BYTES = 1 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.enable_retries", 0),
]
Answer = tuple[str, str, list[bytes]]


@dataclass
class Budget:
    count: int
    duration_s: float
    concurrency: int
    canary_rate: float
    # Hostile inputs per second (0: as fast as `concurrency` allows). Pacing keeps the server
    # below overload, so a canary refused RESOURCE_EXHAUSTED is harm, not volume.
    rate: float = 0.0
    progress_s: float = 10.0
    quiet: bool = False


def _timeout(probe: Probe) -> float:
    if probe.size > BIG_BYTES:
        return BIG_TIMEOUT_S
    return {UNARY: UNARY_TIMEOUT_S, SERVER_STREAM: WATCH_TIMEOUT_S}.get(
        probe.shape, STREAM_TIMEOUT_S
    )


async def send(channel: grpc.aio.Channel, probe: Probe) -> Answer:
    """One call with the probe's bytes as they are (no serializer): (status name, details,
    raw replies)."""
    replies: list[bytes] = []
    timeout = _timeout(probe)
    try:
        if probe.shape == UNARY:
            replies.append(
                await channel.unary_unary(probe.method)(probe.payloads[0], timeout=timeout)
            )
        elif probe.shape == CLIENT_STREAM:
            call = channel.stream_unary(probe.method)
            replies.append(await call(iter(probe.payloads), timeout=timeout))
        elif probe.shape == BIDI:
            async for reply in channel.stream_stream(probe.method)(
                iter(probe.payloads), timeout=timeout
            ):
                replies.append(reply)
        else:
            stream = channel.unary_stream(probe.method)(probe.payloads[0], timeout=timeout)
            first = await stream.read()
            if first is grpc.aio.EOF:
                return (await stream.code()).name, await stream.details() or "", replies
            stream.cancel()
            replies.append(first)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or "", replies
    except (ValueError, TypeError, grpc.aio.UsageError) as exc:
        # The client refused to send it: shown as a failure, so the input gets looked at.
        return "CLIENT_ERROR", f"{type(exc).__name__}: {exc}", replies
    return "OK", "", replies


async def verify_import(channel: grpc.aio.Channel, probe: Probe) -> list[tuple[str, str]]:
    """After an import with bad records said OK: the good records landed and the bad did not."""
    stub = passes_pb2_grpc.PassesStub(channel)
    out = []
    for pid in probe.info["good_ids"][:3]:
        try:
            await stub.GetPass(passes_pb2.PassRef(pass_id=pid), timeout=UNARY_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            out.append(
                ("imports_per_record", f"good record {pid} lost ({exc.code().name}): {probe.label}")
            )
    for card in probe.info["bad_cards"]:
        ref = passes_pb2.PassRef(
            credential=common_pb2.Credential(kind=common_pb2.CREDENTIAL_KIND_CARD, value=card)
        )
        try:
            await stub.GetPass(ref, timeout=UNARY_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                out.append(("imports_per_record", f"GetPass of a bad record: {exc.code().name}"))
            continue
        out.append(("imports_per_record", f"bad record stored: {probe.label}"))
    return out


class Campaign:
    def __init__(self, target: str, ctx: Ctx, budget: Budget, auth: ClientAuth) -> None:
        self.target = target
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        # Hostile inputs carry a valid token: they are meant to reach the decoders and the rules.
        self.auth = auth
        self.tls = auth.ssl_context()
        self.ctx = ctx
        self.budget = budget
        self.source = ProbeSource(ctx)
        self.tally = Tally()
        self.ledger = CanaryLedger()
        self._t0 = 0.0
        self._next_at = 0.0

    async def run(self) -> dict[str, Any]:
        self._t0 = self.ctx.t0 = self.tally.t0 = self._next_at = time.monotonic()
        stop_canary = asyncio.Event()
        async with (
            self.auth.aio_channel(self.target, options=CHANNEL_OPTIONS) as hostile,
            self.auth.aio_channel(self.target) as gates,
        ):
            canary = Canary(
                gates, self.ctx, self.ledger, self.budget.canary_rate, self.tally.in_flight
            )
            canary_task = asyncio.create_task(canary.run(stop_canary))
            progress = asyncio.create_task(self._progress(canary))
            senders = [self._sender(hostile) for _ in range(self.budget.concurrency)]
            await asyncio.gather(*senders)
            stop_canary.set()
            await canary_task
            progress.cancel()
        self.tally.skipped = self.source.skipped
        return {"elapsed_s": round(time.monotonic() - self._t0, 1), "canary": canary.stats}

    def _more(self) -> bool:
        elapsed = time.monotonic() - self._t0
        return self.tally.total < self.budget.count and elapsed < self.budget.duration_s

    async def _pace(self) -> None:
        if self.budget.rate <= 0:
            return
        now = time.monotonic()
        slot = max(self._next_at, now)
        self._next_at = slot + 1.0 / self.budget.rate
        await asyncio.sleep(slot - now)

    async def _sender(self, channel: grpc.aio.Channel) -> None:
        while self._more():
            await self._pace()
            if not self._more():
                return
            probe = self.source.next()
            self.tally.started(probe)
            try:
                await self._one(channel, probe)
            finally:
                self.tally.in_flight[probe.category] -= 1

    async def _one(self, channel: grpc.aio.Channel, probe: Probe) -> None:
        if probe.shape == RAW:
            try:
                tls = fuzz_transport.tls_for(probe, self.tls)
                payload = probe.payloads[0]
                outcome = await fuzz_transport.send_raw(self.host, self.port, payload, tls)
            except OSError as exc:  # refused, reset or timed out: the server may be gone
                self.tally.violation("server_alive", probe, f"connection failed: {exc}")
                outcome = "connection failed"
            self.tally.transport[outcome] += 1
            return
        code, details, raw = await send(channel, probe)
        answers = parse(probe, raw)
        if answers is None:
            self.tally.violation("expected_status", probe, f"{code} with undecodable reply bytes")
            answers = []
        violations = judge(probe, code, details, answers)
        if probe.check == "upsert" and code == "OK":
            violations += await verify_import(channel, probe)
        self.tally.answered(probe, code, answers)
        for check, detail in violations:
            self.tally.violation(check, probe, detail)

    async def _progress(self, canary: Canary) -> None:
        if self.budget.quiet:
            return
        while True:
            await asyncio.sleep(self.budget.progress_s)
            elapsed = time.monotonic() - self._t0
            s = canary.stats
            n, bad = self.tally.total, sum(self.tally.violations.values())
            print(
                f"fuzz {elapsed:5.0f} s  tried {n:,} ({n / elapsed:,.0f}/s)  canary {s.ok:,} ok"
                f" / {s.harmed:,} harmed  violations {bad:,}",
                file=sys.stderr,
                flush=True,
            )

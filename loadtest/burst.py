"""Overload, measured: a burst of N Validate calls at once, each with a short deadline.

    python -m loadtest.burst [--target HOST:PORT] [--calls 5000] [--deadline-ms 200]
                             [--concurrency 200] [--credentials DIR] [--insecure]

At most --concurrency calls are outstanding at once (like `ghz -c`); a call's deadline starts when
it is sent. A Python client cannot itself send 5,000 calls in the same instant and read their
answers within 200 ms: against the bare echo server, 5,000 unlimited calls from one process get
under 1 % answered in time, so the burst is bounded by what the generator can carry.

Every call names its own pass (imported first), so afterwards GetPass tells exactly which calls
were committed. Prints how many calls were answered before their deadline (OK or
RESOURCE_EXHAUSTED) and checks the promises of admission control: no call told RESOURCE_EXHAUSTED
was committed, every admit that was answered was committed. Exit status 1 when a promise breaks.
Without --target it starts passgate itself on 127.0.0.1 (test province, frozen clock). Calls go
over TLS with the admin token (loadtest/client.py says where the credentials are found).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtest import client
from loadtest.client import ClientAuth, Metadata
from loadtest.server import running_passgate
from proto.passgate.v1 import (
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
)

ROOT = Path(__file__).resolve().parents[1]
TEST_PROVINCE = ROOT / "tests" / "e2e" / "province"
FROZEN = "2026-10-01T10:00:00+08:00"
VENUE = "t-lake"
CARD = common_pb2.CREDENTIAL_KIND_CARD
IN_TIME = ("OK", "RESOURCE_EXHAUSTED")


@dataclass
class BurstResult:
    calls: int
    deadline_ms: int
    codes: Counter[str] = field(default_factory=Counter)
    refused_but_committed: int = 0
    admitted_but_missing: int = 0
    elapsed_s: float = 0.0

    @property
    def answered_in_time(self) -> int:
        # The client library enforces the deadline: an answer after it is DEADLINE_EXCEEDED.
        return sum(self.codes[c] for c in IN_TIME)

    @property
    def promises_kept(self) -> bool:
        return self.refused_but_committed == 0 and self.admitted_but_missing == 0

    def line(self, checked: bool = True) -> str:
        """One line: the share answered in time and (`checked`) the promises."""
        share = 100.0 * self.answered_in_time / max(1, self.calls)
        text = (
            f"{self.answered_in_time:,} of {self.calls:,} answered within {self.deadline_ms} ms "
            f"({share:.1f} %; OK {self.codes['OK']:,}, RESOURCE_EXHAUSTED "
            f"{self.codes['RESOURCE_EXHAUSTED']:,})"
        )
        if checked:
            text += (
                f"; refused but committed {self.refused_but_committed}, admitted but not "
                f"committed {self.admitted_but_missing}"
            )
        return text

    def summary(self) -> str:
        share = 100.0 * self.answered_in_time / max(1, self.calls)
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.codes.items()))
        return (
            f"burst of {self.calls} calls, {self.deadline_ms} ms deadline, done in "
            f"{self.elapsed_s:.2f} s\n"
            f"  answered before the deadline: {self.answered_in_time} ({share:.1f} %)\n"
            f"  by status: {codes}\n"
            f"  refused RESOURCE_EXHAUSTED but committed: {self.refused_but_committed}\n"
            f"  admitted but not committed: {self.admitted_but_missing}"
        )


def _pass_id(tag: str, i: int) -> str:
    return f"BURST-{tag}-{i}"


def _records(tag: str, n: int) -> list[passes_pb2.PassRecord]:
    return [
        passes_pb2.PassRecord(
            pass_id=_pass_id(tag, i),
            product_id="t-annual",
            credentials=[common_pb2.Credential(kind=CARD, value=f"CARD-{_pass_id(tag, i)}")],
            valid_from="2026-01-01",
            valid_until="2027-12-31",
        )
        for i in range(n)
    ]


async def _one(
    stub: gate_pb2_grpc.GateStub,
    tag: str,
    i: int,
    deadline_s: float,
    sem: asyncio.Semaphore,
    metadata: Metadata,
) -> tuple[str, bool]:
    """(status name, allowed)."""
    async with sem:
        return await _call(stub, tag, i, deadline_s, metadata)


async def _call(
    stub: gate_pb2_grpc.GateStub, tag: str, i: int, deadline_s: float, metadata: Metadata
) -> tuple[str, bool]:
    req = gate_pb2.ValidateRequest(
        request_id=f"burst-{tag}-{i}",
        venue_id=VENUE,
        gate_id=f"{VENUE}-g0{1 + i % 4}",
        credential=common_pb2.Credential(kind=CARD, value=f"CARD-{_pass_id(tag, i)}"),
    )
    try:
        d = await stub.Validate(req, timeout=deadline_s, metadata=metadata)
        return "OK", d.allowed
    except grpc.aio.AioRpcError as err:
        return err.code().name, False


async def _burst(
    target: str,
    calls: int,
    deadline_ms: int,
    channels: int,
    concurrency: int,
    auth: ClientAuth,
    check: bool = True,
) -> BurstResult:
    """`check` False (the echo server, which has no Passes service): no import, no verification,
    only how many calls were answered in time."""
    tag = uuid.uuid4().hex[:8]
    result = BurstResult(calls, deadline_ms)
    md = auth.metadata
    # The token goes as plain metadata: call credentials would add client CPU to every call.
    chans = [
        auth.lean_aio_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        passes = passes_pb2_grpc.PassesStub(chans[0])
        if check:
            records = iter(_records(tag, calls))
            summary = await passes.UpsertPasses(records, timeout=120, metadata=md)
            if summary.upserted != calls:
                raise SystemExit(f"import failed: {list(summary.errors)[:3]}")
        stubs = [gate_pb2_grpc.GateStub(c) for c in chans]
        for c in chans:
            await c.channel_ready()
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()
        outcomes = await asyncio.gather(
            *(_one(stubs[i % channels], tag, i, deadline_ms / 1000, sem, md) for i in range(calls))
        )
        result.elapsed_s = time.monotonic() - t0
        if check:
            await _verify(passes, tag, outcomes, result, md)
        else:
            result.codes.update(code for code, _ in outcomes)
    finally:
        for c in chans:
            await c.close()
    return result


async def _verify(
    passes: passes_pb2_grpc.PassesStub,
    tag: str,
    outcomes: list[tuple[str, bool]],
    result: BurstResult,
    metadata: Metadata,
) -> None:
    sem = asyncio.Semaphore(32)

    async def committed(i: int) -> bool:
        ref = passes_pb2.PassRef(pass_id=_pass_id(tag, i))
        async with sem:
            view = await passes.GetPass(ref, timeout=30, metadata=metadata)
        return any(u.venue_id == VENUE and u.entries > 0 for u in view.usage)

    for code, _ in outcomes:
        result.codes[code] += 1
    checks = [
        (i, code, allowed)
        for i, (code, allowed) in enumerate(outcomes)
        if code == "RESOURCE_EXHAUSTED" or (code == "OK" and allowed)
    ]
    stored = await asyncio.gather(*(committed(i) for i, _, _ in checks))
    for (_, code, _), was_committed in zip(checks, stored, strict=True):
        if code == "RESOURCE_EXHAUSTED" and was_committed:
            result.refused_but_committed += 1
        if code == "OK" and not was_committed:
            result.admitted_but_missing += 1


def run_burst(
    target: str,
    calls: int,
    deadline_ms: int,
    channels: int = 4,
    concurrency: int = 200,
    auth: ClientAuth | None = None,
    check: bool = True,
) -> BurstResult:
    """`auth` None: the default credentials (client.ClientAuth.find). `check` False: against a
    server without the Passes service (the echo server): no import, no verification."""
    who = auth if auth is not None else ClientAuth.find()
    return asyncio.run(_burst(target, calls, deadline_ms, channels, concurrency, who, check))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.burst", description=__doc__)
    p.add_argument("--target", help="host:port of a running passgate (default: start one)")
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--deadline-ms", type=int, default=200)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=200, help="calls outstanding at once")
    client.add_arguments(p, self_started=True)
    args = p.parse_args(argv)
    if not 1 <= args.calls <= 100_000:
        p.error("--calls must be between 1 and 100000")
    target, auth = args.target, None
    if target is not None:
        try:
            auth = ClientAuth.find(args.credentials, args.identity, args.insecure).require()
        except FileNotFoundError as exc:
            p.error(str(exc))
    with contextlib.ExitStack() as stack:
        if target is None or auth is None:
            extra = ["--shards", "2", "--frozen-clock", FROZEN]
            extra += ["--insecure"] if args.insecure else []
            started = running_passgate(extra, TEST_PROVINCE, credentials=args.credentials)
            server = stack.enter_context(started)
            target, auth = server.target, server.auth(args.identity)
        result = run_burst(
            target, args.calls, args.deadline_ms, args.channels, args.concurrency, auth
        )
    print(result.summary())
    return 0 if result.promises_kept else 1


if __name__ == "__main__":
    sys.exit(main())

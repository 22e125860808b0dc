"""N concurrent requests to one shard cost far fewer than N channel round trips, and every batch
the shard decides arrives over the channel (none by a Ray decide_batch call).

Reads the figures from /metrics: the ingress's frames sent per shard (counted as they go) and the
shard's frames served and batches decided (from the ingress's once-a-second poll of its stats).
Real entries at t-lake (no anti-passback, room for a million a day), as test_metrics.py makes:
each batch pays its commit, as at a real gate.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import pytest

from actors.routing import shard_of
from proto.passgate.v1 import gate_pb2, gate_pb2_grpc
from tests.e2e.conftest import card
from tests.e2e.harness import Server
from tests.e2e.test_gate import req

pytestmark = pytest.mark.e2e
N = 200
VENUE = "t-lake"
SHARD = shard_of(VENUE, 2)
POLL_WAIT_S = 30.0


def _scrape(server: Server) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def _value(text: str, name: str) -> float:
    m = re.search(rf'^{name}{{shard="{SHARD}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _figures(server: Server) -> tuple[float, float, float]:
    """(frames the ingress sent, frames the shard served, batches the shard decided)."""
    text = _scrape(server)
    return (
        _value(text, "passgate_channel_frames_sent_total"),
        _value(text, "passgate_shard_channel_frames_served"),
        _value(text, "passgate_shard_batches"),
    )


def _settled(server: Server) -> tuple[float, float, float]:
    """The figures once the shard poll has caught up with the frames sent (bounded wait)."""
    deadline = time.monotonic() + POLL_WAIT_S
    figures = _figures(server)
    while figures[0] != figures[1] and time.monotonic() < deadline:
        time.sleep(0.3)
        figures = _figures(server)
    return figures


def test_concurrent_requests_cost_far_fewer_channel_round_trips(server: Server) -> None:
    sent0, served0, batches0 = _settled(server)
    requests = [req(VENUE, card("ANNUAL", k % 400)) for k in range(N)]

    async def burst() -> list[gate_pb2.Decision]:
        async with server.aio_channel() as ch:
            stub = gate_pb2_grpc.GateStub(ch)
            return list(await asyncio.gather(*(stub.Validate(r, timeout=30) for r in requests)))

    answers = asyncio.run(burst())
    assert [d.request_id for d in answers] == [r.request_id for r in requests]
    assert all(d.allowed for d in answers), {d.reason for d in answers}

    sent1, served1, batches1 = _settled(server)
    sent, served, batches = sent1 - sent0, served1 - served0, batches1 - batches0
    print(f"{N} concurrent requests: {sent:.0f} frames sent, {served:.0f} served")
    assert served == sent, "the shard's poll never caught up with the frames sent"
    assert 0 < served <= N / 4, f"{N} requests took {served} channel round trips"
    # Every batch the shard decided came over the channel: none by a Ray decide_batch call.
    assert batches == served
    assert batches1 == served1

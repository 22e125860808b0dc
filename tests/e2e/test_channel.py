"""N concurrent requests to one shard cost far fewer than N channel round trips, and every batch
the shard decides arrives over the channel (none by a Ray decide_batch call); so do the other
per-request calls (status reads, Annul, GetPass's share), as call frames.

How many requests share a batch depends on how fast they reach the ingress against how long a
round trip takes, and on a loaded test machine the ingress takes them in slowly. So the shard is
held (SIGSTOP) for a moment while the N calls arrive, as when it is busy with a slow commit:
then all N are waiting at once, whatever the machine's load. Its own server, so the pause and
the service model's memory of it cannot disturb other tests.

Reads the figures from /metrics: the ingress's frames sent per shard (counted as they go) and the
shard's frames served and batches decided (from the ingress's once-a-second poll of its stats).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

from actors.routing import shard_of
from proto.passgate.v1 import (
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)
from tests.e2e.conftest import FROZEN, TEST_PROVINCE, import_annual_passes
from tests.e2e.harness import Server, running_server
from tests.e2e.test_gate import req

pytestmark = pytest.mark.e2e
N = 200
VENUE = "t-lake"
SHARD = shard_of(VENUE, 2)
POLL_WAIT_S = 30.0
PAUSE_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("channel-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as ch:
            import_annual_passes(ch, "CHAN", N)
        yield srv


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
    requests = [req(VENUE, f"CARD-CHAN-{k}") for k in range(N)]
    shard_pid = server.shard_pid(SHARD)

    async def burst() -> list[gate_pb2.Decision]:
        async with server.aio_channel() as ch:
            stub = gate_pb2_grpc.GateStub(ch)
            await stub.Validate(req(VENUE, "CARD-CHAN-0", dry_run=True), timeout=30)  # connected
            os.kill(shard_pid, signal.SIGSTOP)
            try:
                calls = [asyncio.ensure_future(stub.Validate(r, timeout=60)) for r in requests]
                await asyncio.sleep(PAUSE_S)
            finally:
                os.kill(shard_pid, signal.SIGCONT)
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(burst())
    assert [d.request_id for d in answers] == [r.request_id for r in requests]
    assert all(d.allowed for d in answers), {d.reason for d in answers}

    sent1, served1, batches1 = _settled(server)
    sent, served, batches = sent1 - sent0, served1 - served0, batches1 - batches0
    print(f"{N} concurrent requests: {sent:.0f} frames sent, {served:.0f} served")
    assert served == sent, "the shard's poll never caught up with the frames sent"
    # Measured 3 (the warm-up, the batch held by the pause, then all the rest); N would be one each.
    assert 0 < served <= N / 10, f"{N} requests took {served} channel round trips"
    # Every batch the shard decided came over the channel: none by a Ray decide_batch call.
    assert batches == served
    assert batches1 == served1


def _calls_served(server: Server) -> float:
    return _value(_scrape(server), "passgate_shard_channel_calls_served")


def test_the_other_per_request_calls_go_over_the_channel_too(server: Server) -> None:
    """Status reads, GetPass's share and Annul are call frames on the shard's channel: the
    shard counts each one it answers (a Ray actor call would not be counted)."""
    before = _calls_served(server)
    reads = 20
    with server.channel() as ch:
        import_annual_passes(ch, "CALLS", 1)
        gate = gate_pb2_grpc.GateStub(ch)
        quota = quota_pb2_grpc.QuotaStub(ch)
        for _ in range(reads):  # one after another: none shares another's read
            assert quota.GetVenueStatus(quota_pb2.VenueRef(venue_id=VENUE), timeout=10).venue_id
        r = req(VENUE, "CARD-CALLS-0")
        assert gate.Validate(r, timeout=10).allowed
        ann = gate_pb2.AnnulRequest(
            request_id=r.request_id, venue_id=VENUE, gate_id=r.gate_id, credential=r.credential
        )
        assert gate.Annul(ann, timeout=10).annulled
        view = passes_pb2_grpc.PassesStub(ch).GetPass(
            passes_pb2.PassRef(pass_id="CALLS-0"), timeout=10
        )
        assert [(u.venue_id, u.entries) for u in view.usage] == [(VENUE, 0)]
    expected = before + reads + 2  # the reads, the annul, and this shard's share of GetPass
    deadline = time.monotonic() + POLL_WAIT_S
    served = _calls_served(server)
    while served < expected and time.monotonic() < deadline:
        time.sleep(0.3)
        served = _calls_served(server)
    assert served == expected

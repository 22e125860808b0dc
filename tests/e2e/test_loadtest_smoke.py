"""Smoke test of the load generator: a few seconds at a low rate in every mode against the echo
server, and once against a real passgate that the load test starts itself.

It asserts structure (a well-formed report, its three files, every request answered, no errors,
the echo baseline's columns and the instrument's verdict), never speed: whether the instrument was
valid depends on the machine, so only its presence and consistency are checked. Both servers are
reached over TLS with a bearer token, and the echo server refuses a call without one, as passgate
does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import orjson
import pytest

from bench.echo_server import (
    SERVER_OPTIONS,
    VALIDATE,
    EchoTarget,
    Security,
    fresh_credentials,
    running_echo,
    start_server,
)
from loadtest.client import ClientAuth
from loadtest.config import LoadConfig
from loadtest.h2wire import WireChannel, request_headers
from loadtest.report import INSTRUMENT_P99_LIMIT_MS, check_shape
from loadtest.run import run_load
from loadtest.senders import VALIDATE_STREAM
from loadtest.wire_senders import WireSlots, connect_wire
from ops import channels
from proto.passgate.v1 import gate_pb2, gate_pb2_grpc

pytestmark = pytest.mark.e2e

LATENCY_KEYS = {"p50", "p90", "p99", "p99_9", "max"}
MAX_STREAMS = dict(SERVER_OPTIONS)["grpc.max_concurrent_streams"]


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoTarget]:
    with running_echo(procs=1) as server:
        yield server


def _small(**settings: Any) -> LoadConfig:
    """A few seconds at a low rate with two workers and 2,000 passes, quietly."""
    base: dict[str, Any] = {
        "duration_s": 3.0,
        "workers": 2,
        "passes": 2_000,
        "holders_per_venue": 5,
        "warmup_s": 0.0,
        "live": False,
    }
    return LoadConfig(**{**base, **settings})


def _assert_well_formed(report: dict[str, Any], results: Path) -> None:
    assert check_shape(report) == []
    assert set(report["latency_ms"]) >= LATENCY_KEYS
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    totals = report["totals"]
    assert totals["sent"] > 0
    assert totals["answered"] == totals["sent"], totals
    assert totals["errors"] == 0 and totals["errors_by_code"] == {}
    assert totals["unsent"] == 0
    assert sum(totals["decisions_by_reason"].values()) == totals["answered"]
    assert isinstance(totals["throughput_per_s"], float) and totals["throughput_per_s"] > 0
    rows = report["timeline"]
    assert [r["t"] for r in rows] == list(range(len(rows)))
    assert sum(r["answered"] for r in rows) == totals["answered"]
    assert sum(r["sent"] for r in rows) == totals["sent"]
    gen = report["generator"]
    assert len(gen["workers"]) == report["config"]["workers"]
    assert all(isinstance(w["busy_pct"], float) for w in gen["workers"])
    assert isinstance(gen["saturated"], bool) and isinstance(gen["warnings"], list)
    assert report["failures"] == []
    files = report["files"]
    for kind in ("json", "md", "png"):
        path = Path(files[kind])
        assert path.parent == results and path.stat().st_size > 0
    on_disk = orjson.loads(Path(files["json"]).read_bytes())
    assert on_disk["totals"] == totals
    assert Path(files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(files["md"]).read_text().startswith("# passgate load test")


@pytest.mark.parametrize("client", ["wire", "grpc"])
@pytest.mark.parametrize(
    ("mode", "profile"), [("unary", "flat"), ("stream", "holiday-peak"), ("batch", "flat")]
)
def test_modes_against_echo(
    echo: EchoTarget, tmp_path: Path, mode: str, profile: str, client: str
) -> None:
    cfg = _small(
        target=echo.target,
        credentials=echo.credentials,
        client=client,
        mode=mode,
        profile=profile,
        rate=200.0,
        batch_size=20,
        import_passes=False,
        results_dir=tmp_path,
    )
    report = run_load(cfg)
    _assert_well_formed(report, tmp_path)
    assert report["config"]["mode"] == mode
    assert report["config"]["generator_client"] == client
    assert report["totals"]["decisions_by_reason"] == {"REASON_OK": report["totals"]["answered"]}


def test_step_search_with_echo_baseline(echo: EchoTarget, tmp_path: Path) -> None:
    """The echo server as the target and as its own baseline: the report carries echo's figures
    next to every stair and says whether the instrument was valid, consistently with them."""
    cfg = _small(
        target=echo.target,
        credentials=echo.credentials,
        profile="step",
        rate=100.0,
        step_s=1.0,
        duration_s=2.0,
        import_passes=False,
        echo_baseline=True,
        results_dir=tmp_path,
    )
    report = run_load(cfg)
    _assert_well_formed(report, tmp_path)
    stairs = report["step"]["stairs"]
    assert [s["rate"] for s in stairs] == [100.0, 125.0]
    assert all(
        {"rate", "p99_ms", "passed", "echo_p99_ms", "instrument_valid"} <= set(s) for s in stairs
    )
    echo_side = report["transport"]["echo"]
    assert echo_side["answered"] == echo_side["sent"] > 0 and echo_side["errors"] == 0
    assert set(echo_side["latency_ms"]) >= LATENCY_KEYS
    ins = report["instrument"]
    assert ins["checked"] is True and ins["limit_ms"] == INSTRUMENT_P99_LIMIT_MS
    worst = max(s["echo_p99_ms"] for s in stairs)
    assert ins["echo_p99_ms"] == worst
    assert ins["valid"] is (worst <= INSTRUMENT_P99_LIMIT_MS)
    assert all(s["instrument_valid"] is (s["echo_p99_ms"] <= ins["limit_ms"]) for s in stairs)
    text = Path(report["files"]["md"]).read_text()
    assert "| echo, same generator |" in text
    assert ("Instrument: **valid**" in text) is ins["valid"]
    assert ("Instrument: **INVALID**" in text) is (not ins["valid"])


def test_echo_serves_tls_and_requires_the_token(echo: EchoTarget) -> None:
    scan = gate_pb2.ValidateRequest(request_id="smoke-1", venue_id="v", gate_id="v-g01")
    bare = channels.no_token_channel(echo.target, echo.credentials)
    with bare, pytest.raises(grpc.RpcError) as refused:
        gate_pb2_grpc.GateStub(bare).Validate(scan, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    with channels.channel(echo.target, "admin", echo.credentials) as ch:
        assert gate_pb2_grpc.GateStub(ch).Validate(scan, timeout=10).request_id == "smoke-1"


def test_wire_client_beyond_the_stream_limit_and_with_a_bad_token(echo: EchoTarget) -> None:
    """The generator's HTTP/2 client on a real grpc server: twice the server's stream limit on
    one connection, all answered (calls over the limit wait; a refused stream is started again),
    and a wrong token's failure decoded from the trailers."""
    auth = ClientAuth(echo.credentials)
    host, port = echo.target.rsplit(":", 1)
    scan = gate_pb2.ValidateRequest(request_id="wire-1", venue_id="v", gate_id="v-g01")

    async def calls() -> tuple[Counter[str], list[str], str]:
        ch = await WireChannel.connect(host, int(port), auth.ssl_context(), host)
        try:
            head = request_headers(VALIDATE, echo.target, True, auth.bearer, 10.0)
            n = 2 * MAX_STREAMS
            statuses: Counter[str] = Counter()
            ids: list[str] = []
            done = asyncio.get_running_loop().create_future()

            def end(reply: bytes | None, status: str) -> None:
                statuses[status] += 1
                if reply is not None:
                    ids.append(gate_pb2.Decision.FromString(reply).request_id)
                if sum(statuses.values()) == n:
                    done.set_result(None)

            for _ in range(n):
                ch.unary(head, scan.SerializeToString(), end)
            await asyncio.wait_for(done, 60)
            bad_head = request_headers(VALIDATE, echo.target, True, "not-a-token", 10.0)
            refused = asyncio.get_running_loop().create_future()
            ch.unary(bad_head, scan.SerializeToString(), lambda _r, s: refused.set_result(s))
            return statuses, ids, await asyncio.wait_for(refused, 10)
        finally:
            await ch.close()

    statuses, ids, bad = asyncio.run(calls())
    assert statuses == Counter({"": 2 * MAX_STREAMS})
    assert ids == ["wire-1"] * (2 * MAX_STREAMS)
    assert bad == "UNAUTHENTICATED"


def test_real_server_self_started(tmp_path: Path) -> None:
    """`make loadtest` in miniature: start run_cluster.py, import passes, run, stop."""
    cfg = _small(
        target=None,
        profile="flat",
        mode="unary",
        rate=100.0,
        warmup_s=1.0,
        results_dir=tmp_path,
        disk_commits=20,
    )
    report = run_load(cfg)
    _assert_well_formed(report, tmp_path)
    imported = report["population"]["import"]
    assert imported["upserted"] == 2_000 and imported["rejected"] == 0
    assert report["config"]["server"] == "self-started"
    assert report["config"]["transport"] == "TLS"
    assert report["config"]["clock"] == "running"  # --clock-start, as a server in service runs
    assert report["warmup"]["answered"] == report["warmup"]["sent"] > 0
    # No echo baseline here (it has its own test): the report says the instrument is unchecked.
    assert report["instrument"]["checked"] is False and report["instrument"]["valid"] is None
    reasons = report["totals"]["decisions_by_reason"]
    # Real decisions: some admitted, and the mix's unknown credentials and the like denied.
    assert reasons.get("REASON_OK", 0) > 0 and len(reasons) > 1
    # The data disk's lone commits, timed after the run, are in the report and its text.
    disk = report["disk"]
    assert disk["commits"] == 20 and 0 < disk["p50"] <= disk["p99"] <= disk["max"]
    assert disk["objective_ms"] == cfg.slo_ms
    assert "Data disk: 20 lone durable LMDB commits" in Path(report["files"]["md"]).read_text()


# An echo server whose connections get GOAWAY every 300 ms (--max-connection-age-ms).
CONNECTION_AGE = [("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 10_000)]


@contextlib.asynccontextmanager
async def _aging_echo(tmp_path: Path) -> AsyncIterator[SimpleNamespace]:
    """That echo server, in this process; yields what the wire client connects with."""
    auth = ClientAuth(fresh_credentials(tmp_path / "credentials"))
    server, port = await start_server(Security(auth.credentials, False), options=CONNECTION_AGE)
    try:
        yield SimpleNamespace(target=f"127.0.0.1:{port}", auth=auth)
    finally:
        await server.stop(None)


def test_wire_connections_closed_by_the_server_are_opened_again(tmp_path: Path) -> None:
    """Against connections aging out every 300 ms, the generator's wire connections are opened
    again and every call is answered, none refused for a closed one."""
    scan = gate_pb2.ValidateRequest(request_id="age-1", venue_id="v", gate_id="v-g01")
    n = 400

    async def calls(spec: SimpleNamespace) -> tuple[Counter[str], int]:
        tasks: set[asyncio.Future[None]] = set()

        def spawn(reopening: Any) -> None:
            tasks.add(asyncio.ensure_future(reopening))

        channels = [await connect_wire(spec) for _ in range(2)]
        slots = WireSlots(channels, lambda: connect_wire(spec), spawn)
        try:
            head = request_headers(VALIDATE, spec.target, True, spec.auth.bearer, 10.0)
            statuses: Counter[str] = Counter()
            done = asyncio.get_running_loop().create_future()

            def end(reply: bytes | None, status: str) -> None:
                statuses[status or "OK"] += 1
                if sum(statuses.values()) == n:
                    done.set_result(None)

            for i in range(n):  # about 2 s: several ages of each connection
                slots.pick(i % 2).unary(head, scan.SerializeToString(), end)
                await asyncio.sleep(0.005)
            await asyncio.wait_for(done, 60)
            return statuses, slots.reopened
        finally:
            await asyncio.gather(*(ch.close() for ch in slots.all()), return_exceptions=True)

    async def run() -> tuple[Counter[str], int]:
        async with _aging_echo(tmp_path) as spec:
            return await calls(spec)

    statuses, reopened = asyncio.run(run())
    assert statuses == Counter({"OK": n})
    assert reopened >= 2


def test_a_stream_goes_on_over_a_draining_connection(tmp_path: Path) -> None:
    """After the server's GOAWAY a connection takes no new call, but a stream it already carries
    still sends and is answered until it ends (the generator moves its gate streams off
    meanwhile)."""

    async def stream(spec: SimpleNamespace) -> tuple[list[str], str, str]:
        ch = await connect_wire(spec)
        try:
            loop = asyncio.get_running_loop()
            goaway = loop.create_future()
            ch.on_close = lambda: goaway.set_result(None)
            replies: list[str] = []
            ended = loop.create_future()
            opened = loop.create_future()
            ch.open_stream(
                request_headers(VALIDATE_STREAM, spec.target, True, spec.auth.bearer, None),
                lambda raw: replies.append(gate_pb2.Decision.FromString(raw).request_id),
                lambda _reply, status: ended.set_result(status),
                opened.set_result,
            )
            stream_id = await asyncio.wait_for(opened, 10)
            await asyncio.wait_for(goaway, 10)
            assert ch.draining and not ch.accepting
            refused = loop.create_future()
            ch.unary(b"", b"", lambda _r, status: refused.set_result(status))
            scan = gate_pb2.ValidateRequest(request_id="after-goaway", venue_id="v", gate_id="g")
            ch.send(stream_id, scan.SerializeToString())
            ch.end_stream(stream_id)
            return replies, await asyncio.wait_for(ended, 10), await refused
        finally:
            await ch.close()

    async def run() -> tuple[list[str], str, str]:
        async with _aging_echo(tmp_path) as spec:
            return await stream(spec)

    replies, status, refused = asyncio.run(run())
    assert replies == ["after-goaway"]
    assert status == "" and refused == "UNAVAILABLE"

"""Connection hygiene against a real server started with small limits: connections over the cap
are closed at once while existing gates keep working, idle and half-open connections are closed,
200 watchers of one venue cost about one shard poll per tick, the watcher cap answers
RESOURCE_EXHAUSTED, and a caller polling flat out waits its turn under its rate while other
callers and validations go on.

Raw sockets speak just enough TLS (the ssl module, trusting the server's CA, ALPN h2) and HTTP/2
(preface, SETTINGS, one HEADERS and DATA with the bearer token) to play a client that opens a
connection and goes silent.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import struct
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from actors.errors import RETRY
from proto.passgate.v1 import (
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE, import_annual_passes
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e

MAX_CONNECTIONS = 50
MAX_WATCHERS = 200
TICK_S = 0.5  # the feed's poll interval
FLAGS = (
    "--max-connections", str(MAX_CONNECTIONS), "--max-watchers", str(MAX_WATCHERS),
    "--idle-timeout-ms", "8000", "--handshake-timeout-ms", "2000",
    "--keepalive-time-ms", "10000", "--keepalive-timeout-ms", "1000",
    "--calls-per-caller-per-s", "20",
)  # fmt: skip
N_PASSES = 20
WAIT_S = 30.0  # bound on every wait for the server to act

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0, 1, 4, 6, 7
ACK, END_STREAM, END_HEADERS = 1, 1, 4


@pytest.fixture(scope="module")
def conn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("connections-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN, *FLAGS)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as ch:
            import_annual_passes(ch, "CONN", N_PASSES)
        yield srv


def _entry(venue: str, i: int) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=f"conn-{uuid.uuid4().hex[:12]}",
        venue_id=venue,
        gate_id=f"{venue}-g01",
        credential=common_pb2.Credential(kind=CARD, value=f"CARD-CONN-{i % N_PASSES}"),
    )


# --- raw HTTP/2 -------------------------------------------------------------------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
    return head + payload


def _hpack_length(n: int) -> bytes:
    # HPACK integer with a 7-bit prefix (the Huffman bit left clear): a bearer token is longer
    # than the 126 bytes one prefix byte holds.
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes([*out, n])


def _literal(name: str, value: str) -> bytes:
    # HPACK "literal header field without indexing", plain (not Huffman-coded) strings.
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_length(len(n)) + n + _hpack_length(len(v)) + v


def _watch_frames(stream: int, venue: str, bearer: str) -> bytes:
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", "passgate"),
        (":path", "/passgate.v1.Quota/WatchVenueStatus"),
        ("content-type", "application/grpc"), ("te", "trailers"),
        ("authorization", f"Bearer {bearer}"),
    ]  # fmt: skip
    block = b"".join(_literal(k, v) for k, v in headers)
    message = quota_pb2.VenueRef(venue_id=venue).SerializeToString()
    body = b"\x00" + struct.pack(">I", len(message)) + message
    return _frame(HEADERS, END_HEADERS, stream, block) + _frame(DATA, END_STREAM, stream, body)


def _connect(server: Server, hello: bool, tls: bool = True) -> socket.socket | None:
    """A raw connection that does TLS as a gRPC client does (unless `tls` is False) and, with
    `hello`, the HTTP/2 preface. None when the server closed it during the TLS handshake: a
    connection over the cap is closed at once, before TLS can start."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
    context = server.auth().ssl_context()
    if tls and context is not None:
        try:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        except (ssl.SSLError, ConnectionError):
            sock.close()
            return None
    if hello:
        sock.sendall(PREFACE + _frame(SETTINGS, 0, 0))
    return sock


def _open(server: Server, hello: bool, tls: bool = True) -> socket.socket:
    sock = _connect(server, hello, tls)
    assert sock is not None, "the server closed a connection during the TLS handshake"
    return sock


class _Reader:
    """Reads frames off a raw connection until the server closes it or WAIT_S passes."""

    def __init__(self, sock: socket.socket, answer_settings: bool = True) -> None:
        self.sock = sock
        self.answer_settings = answer_settings
        self.buf = b""
        self.kinds: list[int] = []
        self.goaway = b""
        self.closed = False

    def read(self, stop: Callable[[_Reader], bool] = lambda r: False) -> _Reader:
        deadline = time.monotonic() + WAIT_S
        while not self.closed and not stop(self) and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except (ConnectionResetError, ssl.SSLError):  # a TLS session cut without close_notify
                chunk = b""
            self.closed = not chunk
            self.buf += chunk
            self._split()
        return self

    def _split(self) -> None:
        while len(self.buf) >= 9 and len(self.buf) >= 9 + int.from_bytes(self.buf[:3], "big"):
            size = int.from_bytes(self.buf[:3], "big")
            kind, flags, payload = self.buf[3], self.buf[4], self.buf[9 : 9 + size]
            self.buf = self.buf[9 + size :]
            self.kinds.append(kind)
            if kind == SETTINGS and not flags & ACK and self.answer_settings:
                self.sock.sendall(_frame(SETTINGS, ACK, 0))  # pings, though, are never answered
            if kind == GOAWAY:
                self.goaway = payload[8:]


# --- metrics ----------------------------------------------------------------------------------


def _metric(server: Server, name: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _wait_watchers(server: Server, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while _metric(server, "passgate_status_watchers") != count:
        assert time.monotonic() < deadline, "watchers not released"
        time.sleep(0.2)


# --- tests ------------------------------------------------------------------------------------


def test_connections_over_the_cap_are_closed_and_gates_keep_working(conn_server: Server) -> None:
    with conn_server.channel() as gate_channel:
        gate = gate_pb2_grpc.GateStub(gate_channel)
        # An open watch keeps the gate's connection busy, so the idle timeout leaves it alone.
        watch = quota_pb2_grpc.QuotaStub(gate_channel).WatchVenueStatus(
            quota_pb2.VenueRef(venue_id="t-small"), timeout=120
        )
        assert next(watch).venue_id == "t-small"
        assert gate.Validate(_entry("t-lake", 0), timeout=10).allowed

        attempts = [_connect(conn_server, hello=True) for _ in range(MAX_CONNECTIONS + 10)]
        flood = [s for s in attempts if s is not None]
        try:
            # Served connections get the server's SETTINGS first; refused ones only an EOF,
            # during the TLS handshake (None above) or right after it.
            firsts = [_Reader(s).read(lambda r: bool(r.kinds)) for s in flood]
            served = [r for r in firsts if r.kinds]
            refused = [r for r in firsts if r.closed and not r.kinds]
            print(
                f"{len(attempts)} connections: {len(served)} served, "
                f"{len(attempts) - len(flood)} closed during the TLS handshake, "
                f"{len(refused)} closed right after it"
            )
            assert len(served) + len(refused) == len(flood)
            assert len(served) <= MAX_CONNECTIONS - 1  # the gate holds one

            # The gate that was connected before the flood is still answered.
            assert all(gate.Validate(_entry("t-lake", i), timeout=10).allowed for i in range(5))

            # Idle connections are closed by the server, which frees their places.
            for r in served:
                assert r.read().closed, "an idle connection was left open"
        finally:
            for s in flood:
                s.close()
        watch.cancel()

    with conn_server.channel() as late_channel:
        late = gate_pb2_grpc.GateStub(late_channel)
        decision = late.Validate(_entry("t-lake", 1), timeout=WAIT_S, wait_for_ready=True)
        assert decision.allowed


def test_a_connection_that_never_starts_tls_is_closed(conn_server: Server) -> None:
    with _open(conn_server, hello=False, tls=False) as sock:
        reader = _Reader(sock, answer_settings=False).read()
    assert reader.closed, "a connection without a TLS handshake was left open"
    assert reader.kinds == []  # no HTTP/2 is spoken before TLS


def test_a_connection_that_never_starts_http2_is_closed(conn_server: Server) -> None:
    with _open(conn_server, hello=False) as sock:
        reader = _Reader(sock, answer_settings=False).read()
    assert reader.closed, "a connection without the HTTP/2 preface was left open"
    assert GOAWAY in reader.kinds  # the server gave up on it; it did not just fail a parse


def test_a_watch_whose_client_stops_answering_pings_is_closed(conn_server: Server) -> None:
    with _open(conn_server, hello=True) as sock:
        reader = _Reader(sock).read(lambda r: SETTINGS in r.kinds)
        sock.sendall(_watch_frames(1, "t-small", conn_server.auth().bearer))
        reader.read()
    assert DATA in reader.kinds, "the watch was not served"
    assert reader.closed, "a silent client's watch was kept open"
    assert b"ping" in reader.goaway  # closed for the unanswered ping, not for idleness


def test_two_hundred_watchers_share_one_poll_per_tick(conn_server: Server) -> None:
    _wait_watchers(conn_server, 0)

    async def scenario() -> tuple[int, float, float, list[int]]:
        async with conn_server.aio_channel() as channel:
            quota = quota_pb2_grpc.QuotaStub(channel)
            gate = gate_pb2_grpc.GateStub(channel)
            calls = [
                quota.WatchVenueStatus(quota_pb2.VenueRef(venue_id="t-lake"), timeout=120)
                for _ in range(MAX_WATCHERS)
            ]
            firsts = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), WAIT_S)
            polls0, t0 = _metric(conn_server, "passgate_status_feed_polls_total"), time.monotonic()
            decisions = await asyncio.gather(
                *(gate.Validate(_entry("t-lake", i), timeout=10) for i in range(20))
            )
            assert all(d.allowed for d in decisions)
            entries = max(f.entries_today for f in firsts) + 20

            async def until_seen(call: grpc.aio.UnaryStreamCall) -> int:
                while (status := await call.read()).entries_today < entries:
                    pass
                return int(status.entries_today)

            seen = await asyncio.wait_for(asyncio.gather(*(until_seen(c) for c in calls)), WAIT_S)
            watchers = int(_metric(conn_server, "passgate_status_watchers"))
            polls = _metric(conn_server, "passgate_status_feed_polls_total") - polls0
            elapsed = time.monotonic() - t0
            for c in calls:
                c.cancel()
            return watchers, polls, elapsed, seen

    watchers, polls, elapsed, seen = asyncio.run(scenario())
    assert watchers == MAX_WATCHERS
    assert len(seen) == MAX_WATCHERS  # every watcher saw the 20 new entries
    # One poll per tick for the one venue; polling per watcher would be 200 per tick.
    assert 1 <= polls <= elapsed / TICK_S + 2


def test_watchers_over_the_cap_get_resource_exhausted(conn_server: Server) -> None:
    _wait_watchers(conn_server, 0)

    async def scenario() -> None:
        async with conn_server.aio_channel() as channel:
            quota = quota_pb2_grpc.QuotaStub(channel)

            def watch() -> grpc.aio.UnaryStreamCall:
                return quota.WatchVenueStatus(quota_pb2.VenueRef(venue_id="t-small"), timeout=120)

            calls = [watch() for _ in range(MAX_WATCHERS)]
            await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), WAIT_S)
            extra = watch()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(extra.read(), WAIT_S)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "watchers" in (refused.value.details() or "")
            assert len(refused.value.details() or "") < 80

            calls.pop().cancel()  # a freed place is taken again
            deadline = time.monotonic() + WAIT_S
            while True:
                again = watch()
                try:
                    assert (await asyncio.wait_for(again.read(), WAIT_S)).venue_id == "t-small"
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "the freed place was not released"
                    await asyncio.sleep(0.1)
            for c in (*calls, again):
                c.cancel()

    asyncio.run(scenario())
    _wait_watchers(conn_server, 0)


def test_a_caller_polling_flat_out_waits_its_turn_and_no_one_else_does(conn_server: Server) -> None:
    refused_before = _metric(conn_server, "passgate_caller_rate_refusals_total")
    ref = quota_pb2.VenueRef(venue_id="t-small")

    async def flood() -> list[object]:
        async with conn_server.aio_channel() as channel:  # admin
            quota = quota_pb2_grpc.QuotaStub(channel)
            calls = [quota.GetVenueStatus(ref, timeout=WAIT_S) for _ in range(200)]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(flood())
    answered = [r for r in results if isinstance(r, quota_pb2.VenueStatus)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(answered) + len(refused) == 200, results
    for exc in refused:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert exc.details() == f"over 20 calls/s for this caller; {RETRY} later"
    # A second's calls at once, then turns up to 2 s away (and what refilled as they arrived);
    # the rest refused.
    assert 20 <= len(answered) < 200 and refused
    assert _metric(conn_server, "passgate_caller_rate_waits_total") > 0
    assert _metric(conn_server, "passgate_caller_rate_refusals_total") == refused_before + len(
        refused
    )
    # Right after it: another caller's call goes, and so do the flooding caller's validations.
    with conn_server.channel("operator-t-small") as channel:
        assert quota_pb2_grpc.QuotaStub(channel).GetVenueStatus(ref, timeout=10).venue_id
    with conn_server.channel() as channel:
        gate = gate_pb2_grpc.GateStub(channel)
        for k in range(30):
            r = gate_pb2.ValidateRequest(
                request_id=f"rate-{k}",
                venue_id="t-small",
                gate_id="t-small-g01",
                credential=common_pb2.Credential(kind=CARD, value="CARD-CONN-0"),
                dry_run=True,
            )
            assert gate.Validate(r, timeout=10).request_id == r.request_id


def test_watch_refuses_a_missing_or_unknown_venue(conn_server: Server) -> None:
    with conn_server.channel() as channel:
        quota = quota_pb2_grpc.QuotaStub(channel)
        for venue, code in (("", "INVALID_ARGUMENT"), ("t-nowhere", "NOT_FOUND")):
            call = quota.WatchVenueStatus(quota_pb2.VenueRef(venue_id=venue), timeout=WAIT_S)
            with pytest.raises(grpc.RpcError) as err:
                next(call)
            assert err.value.code().name == code  # type: ignore[attr-defined]
            assert "venue_id" in err.value.details()  # type: ignore[attr-defined]
    _wait_watchers(conn_server, 0)

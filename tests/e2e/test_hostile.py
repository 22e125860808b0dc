"""Issue 7's findings, each replayed against a real server as a hostile client would send it.

One bad or hostile request must never harm anyone else's entry: every test sends well-formed
requests from other gates alongside the hostile ones and checks that none of them is harmed.
Its own server, so the hostile traffic cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from proto.passgate.v1 import (
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
    quota_pb2_grpc,
)
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE, annual_pass, card, import_passes
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e
R = common_pb2
EMOJI_ID = "\U0001f600" * 128  # 128 characters, 512 bytes: over LMDB's 511-byte key limit
VALIDATE = "/passgate.v1.Gate/Validate"
STREAM = "/passgate.v1.Gate/ValidateStream"
UPSERT = "/passgate.v1.Passes/UpsertPasses"
OK_CODES = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("hostile-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as channel:
            assert import_passes(channel).rejected == 0
        yield srv


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def gate(channel: grpc.Channel) -> gate_pb2_grpc.GateStub:
    return gate_pb2_grpc.GateStub(channel)


@pytest.fixture(scope="module")
def passes(channel: grpc.Channel) -> passes_pb2_grpc.PassesStub:
    return passes_pb2_grpc.PassesStub(channel)


@pytest.fixture(scope="module")
def quota(channel: grpc.Channel) -> quota_pb2_grpc.QuotaStub:
    return quota_pb2_grpc.QuotaStub(channel)


def req(
    venue: str,
    value: str,
    *,
    gate: str | None = None,
    request_id: str | None = None,
    exit_: bool = False,
) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=request_id or uuid.uuid4().hex,
        venue_id=venue,
        gate_id=gate or f"{venue}-g01",
        credential=common_pb2.Credential(kind=CARD, value=value),
        direction=gate_pb2.DIRECTION_EXIT if exit_ else gate_pb2.DIRECTION_ENTRY,
    )


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


# -- 1. a poisoned batch --------------------------------------------------------------------------


def test_an_oversized_request_id_poisons_nobody_else(gate: gate_pb2_grpc.GateStub) -> None:
    """128 emoji pass a character count but not LMDB's key limit. Hostile unary calls interleave
    with legitimate admits from other gates, so they share the shard's batches."""

    def hostile(k: int) -> grpc.StatusCode:
        r = req("t-lake", card("ANNUAL", 200 + k), gate="t-lake-g04", request_id=EMOJI_ID)
        return _code(lambda: gate.Validate(r, timeout=20))

    def legit(k: int) -> gate_pb2.Decision:
        return gate.Validate(req("t-lake", card("ANNUAL", k), gate="t-lake-g01"), timeout=20)

    with ThreadPoolExecutor(16) as pool:
        bad = [pool.submit(hostile, k) for k in range(40)]
        good = [pool.submit(legit, k) for k in range(40)]
        codes = [f.result() for f in bad]
        decisions = [f.result() for f in good]
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert all(d.allowed and d.reason == R.REASON_OK for d in decisions)


def test_one_poisoned_item_fails_alone_in_a_validate_batch(gate: gate_pb2_grpc.GateStub) -> None:
    items = [req("t-soft", card("ANNUAL", 40 + k), gate="t-soft-g02") for k in range(5)]
    items.insert(2, req("t-soft", card("ANNUAL", 49), gate="t-soft-g02", request_id=EMOJI_ID))
    batch = gate.ValidateBatch(gate_pb2.ValidateBatchRequest(requests=items), timeout=20)
    assert len(batch.decisions) == 6
    bad = batch.decisions[2]
    assert not bad.allowed and bad.message.startswith("INVALID_ARGUMENT: request_id")
    assert bad.request_id == ""  # the oversized id is not echoed back
    others = [d for i, d in enumerate(batch.decisions) if i != 2]
    assert all(d.allowed for d in others)
    assert [d.request_id for d in others] == [
        r.request_id for r in items if r.request_id != EMOJI_ID
    ]


# -- 2. a shard killed for good -------------------------------------------------------------------


def test_control_characters_in_ids_are_refused_and_a_restart_still_serves(
    server: Server, gate: gate_pb2_grpc.GateStub, passes: passes_pb2_grpc.PassesStub
) -> None:
    summary = passes.UpsertPasses(iter([annual_pass("NUL\x00PASS", "CARD-NUL")]), timeout=20)
    assert (summary.upserted, summary.rejected) == (0, 1)
    assert "control character" in summary.errors[0]
    resv = passes_pb2.ReserveRequest(
        pass_id="ANNUAL-1\x00x", venue_id="t-museum", date="2026-10-01", slot_id="am"
    )
    assert _code(lambda: passes.Reserve(resv, timeout=20)) == grpc.StatusCode.INVALID_ARGUMENT
    ok = passes.Reserve(
        passes_pb2.ReserveRequest(
            pass_id="ANNUAL-3", venue_id="t-museum", date="2026-10-01", slot_id="am"
        ),
        timeout=20,
    )
    assert ok.confirmed
    # Kill the shard that owns the museum (and its reservation) for real; Ray restarts it.
    os.kill(server.shard_pid(1), signal.SIGKILL)
    deadline = time.monotonic() + 90
    decision = None
    while time.monotonic() < deadline:
        try:
            decision = gate.Validate(req("t-museum", card("ANNUAL", 3)), timeout=10)
            break
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
            time.sleep(0.5)
    assert decision is not None and decision.allowed, "the restarted shard serves again"
    assert gate.Validate(req("t-hard", card("ANNUAL", 3)), timeout=10).allowed


# -- 3. capacity bypass through exits -------------------------------------------------------------


def test_exits_of_unknown_credentials_cannot_make_room(
    gate: gate_pb2_grpc.GateStub, quota: quota_pb2_grpc.QuotaStub
) -> None:
    """t-small admits 50 at a time. 50 exit scans of cards nobody saw enter make no room."""
    admitted = [
        gate.Validate(req("t-small", card("ANNUAL", 100 + k)), timeout=20).allowed
        for k in range(50)
    ]
    assert all(admitted)
    for k in range(50):
        d = gate.Validate(req("t-small", f"FORGED-EXIT-{k}", exit_=True), timeout=20)
        assert d.allowed  # nobody is trapped inside, and the exit is recorded
    # Known passes that never entered, and a revoked one: no room either.
    gate.Validate(req("t-small", card("ANNUAL", 300), exit_=True), timeout=20)
    gate.Validate(req("t-small", card("REVOKED", 0), exit_=True), timeout=20)
    more = [gate.Validate(req("t-small", card("ANNUAL", 160 + k)), timeout=20) for k in range(50)]
    assert not any(d.allowed for d in more)
    assert {d.reason for d in more} == {R.REASON_VENUE_FULL}
    st = quota.GetVenueStatus(quota_pb2.VenueRef(venue_id="t-small"), timeout=20)
    assert (st.occupancy, st.exits_today, st.unmatched_exits_today) == (50, 0, 52)
    # A real exit still frees exactly one place.
    assert gate.Validate(req("t-small", card("ANNUAL", 100), exit_=True), timeout=20).allowed
    again = [gate.Validate(req("t-small", card("ANNUAL", 170 + k)), timeout=20) for k in range(2)]
    assert [d.allowed for d in again] == [True, False]


# -- 4. someone else's decision -------------------------------------------------------------------


def test_a_reused_request_id_reveals_nothing_and_cannot_annul(
    gate: gate_pb2_grpc.GateStub,
) -> None:
    victim = req("t-hard", card("ANNUAL", 20), gate="t-hard-g01")
    first = gate.Validate(victim, timeout=20)
    assert first.allowed and first.pass_id == "ANNUAL-20"
    # The same gate retrying the same scan gets the same decision, and nothing counts twice.
    assert gate.Validate(victim, timeout=20) == first
    # Another gate reusing the id decides its own scan; nothing of the victim's comes back.
    bogus = req("t-hard", "BOGUS-CARD", gate="t-hard-g02", request_id=victim.request_id)
    other = gate.Validate(bogus, timeout=20)
    assert not other.allowed and other.reason == R.REASON_UNKNOWN_CREDENTIAL
    assert other.pass_id == ""
    # The victim's own gate with another card: refused as a reused id, naming the field only.
    forged = req("t-hard", "BOGUS-CARD", gate="t-hard-g01", request_id=victim.request_id)
    with pytest.raises(grpc.RpcError) as err:
        gate.Validate(forged, timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("request_id:")
    assert "ANNUAL-20" not in err.value.details()

    def annul(gate_id: str, value: str) -> gate_pb2.AnnulResponse:
        return gate.Annul(
            gate_pb2.AnnulRequest(
                request_id=victim.request_id,
                venue_id="t-hard",
                gate_id=gate_id,
                credential=common_pb2.Credential(kind=CARD, value=value),
            ),
            timeout=20,
        )

    assert not annul("t-hard-g02", card("ANNUAL", 20)).annulled  # another gate
    assert not annul("t-hard-g01", "BOGUS-CARD").annulled  # the right gate, another card
    bare = gate_pb2.AnnulRequest(
        request_id=victim.request_id, venue_id="t-hard", gate_id="t-hard-g01"
    )
    assert _code(lambda: gate.Annul(bare, timeout=20)) == grpc.StatusCode.INVALID_ARGUMENT
    # The entry stands: hard anti-passback still applies to the victim's pass.
    again = gate.Validate(req("t-hard", card("ANNUAL", 20), gate="t-hard-g03"), timeout=20)
    assert again.reason == R.REASON_ANTI_PASSBACK
    assert annul("t-hard-g01", card("ANNUAL", 20)).annulled  # the real gate and card can


# -- 5. a stream that hangs -----------------------------------------------------------------------


def test_an_undecodable_stream_item_fails_alone(channel: grpc.Channel) -> None:
    call = channel.stream_stream(STREAM)  # raw bytes both ways
    good = [req("t-lake", card("ANNUAL", 60 + k), gate="t-lake-g02") for k in range(6)]
    frames = [g.SerializeToString() for g in good]
    frames.insert(3, b"\xff\xff\xff\xff")  # not a protobuf message
    frames.insert(5, req("t-lake", card("ANNUAL", 69), request_id=EMOJI_ID).SerializeToString())
    answers = [gate_pb2.Decision.FromString(raw) for raw in call(iter(frames), timeout=30)]
    assert len(answers) == 8  # the call ends, every item answered
    by_id = {a.request_id: a for a in answers if a.request_id}
    assert all(by_id[g.request_id].allowed for g in good)
    bad = [a for a in answers if not a.request_id]
    assert len(bad) == 2 and all(a.message.startswith("INVALID_ARGUMENT") for a in bad)


# -- 6. imports that drop good records ------------------------------------------------------------


def test_one_bad_record_does_not_drop_the_good_ones(
    channel: grpc.Channel, passes: passes_pb2_grpc.PassesStub, gate: gate_pb2_grpc.GateStub
) -> None:
    records = [annual_pass(f"BULK-{i}", f"CARD-BULK-{i}") for i in range(100)]
    records[57] = annual_pass("P" * 512, "CARD-BULK-57")
    summary = passes.UpsertPasses(iter(records), timeout=60)
    assert (summary.upserted, summary.rejected) == (99, 1)
    assert summary.errors[0].startswith("record 57")
    assert "pass_id" in summary.errors[0] and "P" * 40 not in summary.errors[0]
    assert gate.Validate(req("t-lake", "CARD-BULK-99"), timeout=20).allowed
    # An undecodable frame in the stream: counted at its position, its neighbours stored.
    frames = [annual_pass(f"RAW-{i}", f"CARD-RAW-{i}").SerializeToString() for i in range(3)]
    frames.insert(1, b"\x0a\xff\xff\xff\xff\x0f")  # a length that runs past the frame
    raw = channel.stream_unary(UPSERT)(iter(frames), timeout=30)
    summary = passes_pb2.UpsertSummary.FromString(raw)
    assert (summary.upserted, summary.rejected) == (3, 1)
    assert summary.errors[0].startswith("record 1")


# -- 7. errors leak internals ---------------------------------------------------------------------


def test_undecodable_and_oversized_input_gets_a_short_invalid_argument(
    channel: grpc.Channel, gate: gate_pb2_grpc.GateStub
) -> None:
    raw = channel.unary_unary(VALIDATE)
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    huge = req("t-lake", "X" * 2_000_000, gate="t-lake-g03")
    with pytest.raises(grpc.RpcError) as err:
        gate.Validate(huge, timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("credential.value:") and len(details) < 200
    for leak in ("Traceback", "pid", "127.0.0.1", "Actor", "ray"):
        assert leak not in details


def test_unknown_enum_values_are_invalid_argument(gate: gate_pb2_grpc.GateStub) -> None:
    r = req("t-lake", card("ANNUAL", 70))
    r.credential.kind = 99  # type: ignore[assignment]
    assert _code(lambda: gate.Validate(r, timeout=20)) == grpc.StatusCode.INVALID_ARGUMENT
    r = req("t-lake", card("ANNUAL", 70))
    r.direction = 7  # type: ignore[assignment]
    assert _code(lambda: gate.Validate(r, timeout=20)) == grpc.StatusCode.INVALID_ARGUMENT

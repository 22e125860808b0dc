"""Gate over real gRPC: every implemented reason, idempotent retry, annul, dry run, revocation,
bad input, batch and stream, health and reflection."""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, passes_pb2, passes_pb2_grpc
from tests.e2e.conftest import CARD, card
from tests.e2e.harness import Server

pytestmark = pytest.mark.e2e
R = common_pb2
_ids = itertools.count()


def rid() -> str:
    return f"t-{next(_ids)}-{uuid.uuid4().hex[:8]}"


def req(
    venue: str,
    value: str,
    *,
    gate: str | None = None,
    exit_: bool = False,
    dry_run: bool = False,
    request_id: str | None = None,
) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=request_id or rid(),
        venue_id=venue,
        gate_id=gate or f"{venue}-g01",
        credential=common_pb2.Credential(kind=CARD, value=value),
        direction=gate_pb2.DIRECTION_EXIT if exit_ else gate_pb2.DIRECTION_ENTRY,
        dry_run=dry_run,
    )


@pytest.fixture(scope="module")
def gate(channel: grpc.Channel) -> gate_pb2_grpc.GateStub:
    return gate_pb2_grpc.GateStub(channel)


@pytest.fixture(scope="module")
def passes(channel: grpc.Channel) -> passes_pb2_grpc.PassesStub:
    return passes_pb2_grpc.PassesStub(channel)


def validate(gate: gate_pb2_grpc.GateStub, r: gate_pb2.ValidateRequest) -> gate_pb2.Decision:
    return gate.Validate(r, timeout=10)


# One scan -> its expected reason. The first scan of each pass at each venue, so order-free.
SINGLE_SCANS = [
    ("ok", "t-lake", card("ANNUAL", 0), None, R.REASON_OK),
    ("unknown venue", "t-nowhere", card("ANNUAL", 1), "t-nowhere-g01", R.REASON_UNKNOWN_VENUE),
    ("gate of another venue", "t-lake", card("ANNUAL", 1), "t-hard-g01", R.REASON_NOT_AUTHORIZED),
    ("unknown credential", "t-lake", "NO-SUCH-CARD", None, R.REASON_UNKNOWN_CREDENTIAL),
    ("revoked", "t-lake", card("REVOKED"), None, R.REASON_REVOKED),
    ("blocked", "t-lake", card("BLOCKED"), None, R.REASON_BLOCKED),
    ("not yet valid", "t-lake", card("FUTURE"), None, R.REASON_NOT_YET_VALID),
    ("expired", "t-lake", card("OLD"), None, R.REASON_EXPIRED),
    ("venue not covered", "t-uncovered", card("ANNUAL", 1), None, R.REASON_VENUE_NOT_COVERED),
    ("closed now", "t-closed", card("ANNUAL", 1), None, R.REASON_VENUE_CLOSED),
    ("reservation needed", "t-museum", card("ANNUAL", 1), None, R.REASON_RESERVATION_REQUIRED),
    ("peak-day window", "t-window", card("CITY", 0), None, R.REASON_OUTSIDE_TIME_WINDOW),
    ("credit: poor tier", "t-state", card("POOR", 0), None, R.REASON_CREDIT_DENIED),
    ("credit: over debt", "t-lake", card("DEBTOR", 0), None, R.REASON_CREDIT_DENIED),
]


@pytest.mark.parametrize(
    ("venue", "value", "gate_id", "reason"),
    [s[1:] for s in SINGLE_SCANS],
    ids=[s[0] for s in SINGLE_SCANS],
)
def test_single_scan_reason(
    gate: gate_pb2_grpc.GateStub, venue: str, value: str, gate_id: str | None, reason: int
) -> None:
    d = validate(gate, req(venue, value, gate=gate_id))
    assert (d.reason, d.allowed) == (reason, reason == R.REASON_OK), d.message
    assert d.message


def test_hard_passback_denies_second_entry(gate: gate_pb2_grpc.GateStub) -> None:
    assert validate(gate, req("t-hard", card("ANNUAL", 2))).allowed
    second = validate(gate, req("t-hard", card("ANNUAL", 2)))
    assert second.reason == R.REASON_ANTI_PASSBACK and not second.allowed


def test_soft_passback_allows_second_entry(gate: gate_pb2_grpc.GateStub) -> None:
    assert validate(gate, req("t-soft", card("ANNUAL", 2))).allowed
    assert validate(gate, req("t-soft", card("ANNUAL", 2))).allowed


def test_entry_limit_and_daily_limit(gate: gate_pb2_grpc.GateStub) -> None:
    first = validate(gate, req("t-lake", card("ONCE", 0)))
    assert first.allowed and first.remaining_entries == 0
    assert validate(gate, req("t-lake", card("ONCE", 0))).reason == R.REASON_ENTRY_LIMIT_REACHED
    assert validate(gate, req("t-lake", card("DAILY", 0))).remaining_entries == -1
    assert validate(gate, req("t-lake", card("DAILY", 0))).reason == R.REASON_DAILY_LIMIT_REACHED


def test_pay_later_and_trusted_first_visit(gate: gate_pb2_grpc.GateStub) -> None:
    paid = validate(gate, req("t-lake", card("GOOD", 0)))
    assert paid.allowed and paid.pay_later and paid.charge_fen > 0
    free = validate(gate, req("t-state", card("TRUSTED", 0)))
    assert free.allowed and not free.pay_later and free.charge_fen == 0
    validate(gate, req("t-state", card("TRUSTED", 0), exit_=True))
    second = validate(gate, req("t-state", card("TRUSTED", 0)))
    assert second.reason == R.REASON_CREDIT_DENIED


def test_exit_without_entry_is_allowed(gate: gate_pb2_grpc.GateStub) -> None:
    d = validate(gate, req("t-lake", "NEVER-SEEN", exit_=True))
    assert d.allowed and d.reason == R.REASON_OK


def test_retry_with_same_request_id_returns_same_decision(
    gate: gate_pb2_grpc.GateStub, passes: passes_pb2_grpc.PassesStub
) -> None:
    r = req("t-lake", card("ANNUAL", 3))
    first, again = validate(gate, r), validate(gate, r)
    assert first == again and first.allowed
    view = passes.GetPass(passes_pb2.PassRef(pass_id="ANNUAL-3"), timeout=10)
    assert [(u.venue_id, u.entries) for u in view.usage] == [("t-lake", 1)]


def test_dry_run_changes_nothing(
    gate: gate_pb2_grpc.GateStub, passes: passes_pb2_grpc.PassesStub
) -> None:
    d = validate(gate, req("t-hard", card("ANNUAL", 4), dry_run=True))
    assert d.allowed
    view = passes.GetPass(passes_pb2.PassRef(pass_id="ANNUAL-4"), timeout=10)
    assert list(view.usage) == []
    assert validate(gate, req("t-hard", card("ANNUAL", 4))).allowed


def test_annul_undoes_the_entry(
    gate: gate_pb2_grpc.GateStub, passes: passes_pb2_grpc.PassesStub
) -> None:
    r = req("t-hard", card("ANNUAL", 5))
    assert validate(gate, r).allowed
    other = gate.Annul(
        gate_pb2.AnnulRequest(
            request_id=r.request_id,
            venue_id="t-hard",
            gate_id="t-hard-g02",
            credential=r.credential,
        )
    )
    assert not other.annulled
    ann = gate_pb2.AnnulRequest(
        request_id=r.request_id, venue_id="t-hard", gate_id=r.gate_id, credential=r.credential
    )
    assert gate.Annul(ann, timeout=10).annulled
    view = passes.GetPass(passes_pb2.PassRef(pass_id="ANNUAL-5"), timeout=10)
    assert [(u.venue_id, u.entries, u.inside) for u in view.usage] == [("t-hard", 0, False)]
    # The annulled entry no longer blocks the pass: hard passback does not apply.
    assert validate(gate, req("t-hard", card("ANNUAL", 5))).allowed


def test_revocation_is_seen_within_one_second(
    gate: gate_pb2_grpc.GateStub, passes: passes_pb2_grpc.PassesStub
) -> None:
    assert validate(gate, req("t-lake", card("ANNUAL", 6))).allowed
    t0 = time.monotonic()
    passes.RevokePass(passes_pb2.RevokeRequest(pass_id="ANNUAL-6", reason="lost"), timeout=10)
    seen = None
    while time.monotonic() - t0 < 1.0:
        d = validate(gate, req("t-soft", card("ANNUAL", 6)))
        if d.reason == R.REASON_REVOKED:
            seen = time.monotonic() - t0
            break
    assert seen is not None and seen < 1.0


def test_get_pass_by_credential(passes: passes_pb2_grpc.PassesStub) -> None:
    ref = passes_pb2.PassRef(credential=common_pb2.Credential(kind=CARD, value=card("GOOD", 2)))
    view = passes.GetPass(ref, timeout=10)
    assert getattr(view, "pass").pass_id == "GOOD-2"
    with pytest.raises(grpc.RpcError) as err:
        passes.GetPass(passes_pb2.PassRef(pass_id="NOPE"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_upsert_rejects_bad_dates_without_stopping(passes: passes_pb2_grpc.PassesStub) -> None:
    def records() -> list[passes_pb2.PassRecord]:
        cred = common_pb2.Credential(kind=CARD, value="CARD-IMPORT")
        good = passes_pb2.PassRecord(
            pass_id="IMPORT-1",
            product_id="t-annual",
            credentials=[cred],
            valid_from="2026-01-01",
            valid_until="2026-12-31",
        )
        bad = passes_pb2.PassRecord(
            pass_id="IMPORT-2",
            product_id="t-annual",
            credentials=[common_pb2.Credential(kind=CARD, value="CARD-IMPORT-2")],
            valid_from="2026-13-45",
            valid_until="2026-12-31",
        )
        backwards = passes_pb2.PassRecord(
            pass_id="IMPORT-3",
            product_id="t-annual",
            credentials=[common_pb2.Credential(kind=CARD, value="CARD-IMPORT-3")],
            valid_from="2026-12-31",
            valid_until="2026-01-01",
        )
        return [bad, good, backwards]

    summary = passes.UpsertPasses(iter(records()), timeout=30)
    assert (summary.upserted, summary.rejected) == (1, 2)
    assert any("IMPORT-2" in e and "valid_from" in e for e in summary.errors)
    assert any("IMPORT-3" in e and "valid_until" in e for e in summary.errors)
    assert passes.GetPass(passes_pb2.PassRef(pass_id="IMPORT-1"), timeout=10)
    with pytest.raises(grpc.RpcError):
        passes.GetPass(passes_pb2.PassRef(pass_id="IMPORT-2"), timeout=10)


BAD_REQUESTS = [
    ("no venue", {"venue_id": ""}, "venue_id"),
    ("no request id", {"request_id": ""}, "request_id"),
    ("no gate", {"gate_id": ""}, "gate_id"),
    ("empty credential", {"value": ""}, "credential.value"),
    ("unknown kind", {"kind": 7}, "credential.kind"),
    ("unspecified kind", {"kind": 0}, "credential.kind"),
    ("unknown direction", {"direction": 9}, "direction"),
]


@pytest.mark.parametrize(
    ("change", "field"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_malformed_request_is_invalid_argument(
    gate: gate_pb2_grpc.GateStub, passes: passes_pb2_grpc.PassesStub, change: dict, field: str
) -> None:
    fields = {"request_id": rid(), "venue_id": "t-lake", "gate_id": "t-lake-g01", "direction": 1}
    cred = {"kind": CARD, "value": card("ANNUAL", 7)}
    for key, value in change.items():
        (cred if key in cred else fields)[key] = value
    r = gate_pb2.ValidateRequest(credential=common_pb2.Credential(**cred), **fields)
    with pytest.raises(grpc.RpcError) as err:
        validate(gate, r)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
    view = passes.GetPass(passes_pb2.PassRef(pass_id="ANNUAL-7"), timeout=10)
    assert list(view.usage) == []


def test_batch_keeps_order_and_fails_bad_items_alone(gate: gate_pb2_grpc.GateStub) -> None:
    bad = req("t-lake", card("ANNUAL", 8))
    bad.credential.kind = 0
    batch = [
        req("t-lake", card("ANNUAL", 8)),
        bad,
        req("t-lake", "NO-SUCH"),
        req("t-hard", card("ANNUAL", 8)),
    ]
    resp = gate.ValidateBatch(gate_pb2.ValidateBatchRequest(requests=batch), timeout=10)
    assert [d.request_id for d in resp.decisions] == [r.request_id for r in batch]
    assert [d.reason for d in resp.decisions] == [
        R.REASON_OK,
        R.REASON_UNSPECIFIED,
        R.REASON_UNKNOWN_CREDENTIAL,
        R.REASON_OK,
    ]
    assert "credential.kind" in resp.decisions[1].message


def test_oversized_batch_is_refused(gate: gate_pb2_grpc.GateStub) -> None:
    batch = [req("t-lake", card("ANNUAL", 9)) for _ in range(1001)]
    with pytest.raises(grpc.RpcError) as err:
        gate.ValidateBatch(gate_pb2.ValidateBatchRequest(requests=batch), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests" in (err.value.details() or "")


def test_stream_answers_every_request(gate: gate_pb2_grpc.GateStub) -> None:
    reqs = [req("t-lake", card("ANNUAL", 20 + i), gate=f"t-lake-g0{1 + i % 4}") for i in range(60)]
    answers = list(gate.ValidateStream(iter(reqs), timeout=30))
    assert sorted(d.request_id for d in answers) == sorted(r.request_id for r in reqs)
    assert all(d.allowed for d in answers)


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(
        iter(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        )
    )
    names = {s.name for s in answer.list_services_response.service}
    assert {"passgate.v1.Gate", "passgate.v1.Passes", "passgate.v1.Quota"} <= names


def _raw_connection(server: Server, inside_tls: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    tls = server.auth().ssl_context()
    if inside_tls and tls is not None:
        return tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def test_garbage_bytes_do_not_take_the_server_down(
    server: Server, gate: gate_pb2_grpc.GateStub
) -> None:
    # Plain bytes meet the TLS handshake; the same bytes inside a TLS session meet HTTP/2.
    for inside_tls in (False, True):
        for payload in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 8):
            with _raw_connection(server, inside_tls) as s:
                s.sendall(payload)
                s.settimeout(2)
                with contextlib.suppress(TimeoutError, ConnectionResetError, ssl.SSLError):
                    s.recv(1024)
    assert validate(gate, req("t-lake", card("ANNUAL", 10))).allowed


def test_get_pass_without_reference_is_invalid(passes: passes_pb2_grpc.PassesStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        passes.GetPass(passes_pb2.PassRef(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pass_id" in (err.value.details() or "")

"""Who may do what, over TLS against a real server: every passgate method with no credential, with
each role's credential and across venues; a gate held to its venue and gates; a revoked gate cut
off within a bounded wait; health open, reflection behind a token; GetPass limited for a gate."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ops import channels
from proto.passgate.v1 import (
    common_pb2,
    gate_pb2,
    gate_pb2_grpc,
    passes_pb2,
    passes_pb2_grpc,
    quota_pb2,
)
from tests.e2e.conftest import FROZEN, TEST_PROVINCE, card, import_passes
from tests.e2e.harness import Server, running_server
from tests.unit.test_auth import EXPECTED

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VENUE, OTHER = "t-lake", "t-hard"
GATE, OTHER_GATE = "t-lake-g01", "t-lake-g02"
CALL_TIMEOUT_S = 15.0
REVOKE_WAIT_S = 5.0
CODE = grpc.StatusCode
# One identity per role, as run_cluster creates them for the test province.
IDENTITIES = {
    "gate": f"gate-{VENUE}",
    "card_centre": "card-centre",
    "venue_operator": f"operator-{VENUE}",
    "planner": "planner",
    "admin": "admin",
}
SERVICES = [
    svc
    for module in (gate_pb2, passes_pb2, quota_pb2)
    for svc in module.DESCRIPTOR.services_by_name.values()
]
METHODS = {f"{svc.name}/{m.name}": m for svc in SERVICES for m in svc.methods}


def _credential(value: str) -> common_pb2.Credential:
    return common_pb2.Credential(kind=common_pb2.CREDENTIAL_KIND_CARD, value=value)


def _validate(
    venue: str = VENUE, gate: str = GATE, rid: str = "auth-1"
) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=rid,
        venue_id=venue,
        gate_id=gate,
        credential=_credential(card("ANNUAL", 3)),
        dry_run=True,
    )


def _reserve(cls: Any, venue: str = VENUE) -> Any:
    return cls(pass_id="ANNUAL-0", venue_id=venue, date="2026-10-01", slot_id="no-such-slot")


# A request per method (at VENUE) and the answer an allowed caller gets: OK or a domain error,
# never one of the auth codes. Nothing here changes state other tests could see.
REQUESTS: dict[str, tuple[Callable[[], Any], grpc.StatusCode]] = {
    "Gate/Validate": (_validate, CODE.OK),
    "Gate/ValidateStream": (_validate, CODE.OK),
    "Gate/ValidateBatch": (
        lambda: gate_pb2.ValidateBatchRequest(requests=[_validate()]),
        CODE.OK,
    ),
    "Gate/Annul": (
        lambda: gate_pb2.AnnulRequest(
            request_id="never-seen", venue_id=VENUE, gate_id=GATE, credential=_credential("C")
        ),
        CODE.OK,
    ),
    "Passes/UpsertPasses": (
        lambda: passes_pb2.PassRecord(
            pass_id="AUTH-0",
            product_id="t-annual",
            credentials=[_credential("CARD-AUTH-0")],
            valid_from="2026-01-01",
            valid_until="2027-12-31",
            status=passes_pb2.PASS_STATUS_ACTIVE,
        ),
        CODE.OK,
    ),
    "Passes/GetPass": (lambda: passes_pb2.PassRef(pass_id="ANNUAL-0"), CODE.OK),
    "Passes/RevokePass": (lambda: passes_pb2.RevokeRequest(pass_id="NO-SUCH-PASS"), CODE.NOT_FOUND),
    "Passes/Reserve": (lambda: _reserve(passes_pb2.ReserveRequest), CODE.OK),
    "Passes/CancelReservation": (lambda: _reserve(passes_pb2.CancelReservationRequest), CODE.OK),
    "Quota/SetVenueQuota": (
        lambda: quota_pb2.VenueQuota(
            venue_id=VENUE, daily_capacity=1_000_000, instant_capacity=100_000
        ),
        CODE.OK,
    ),
    "Quota/GetVenueStatus": (lambda: quota_pb2.VenueRef(venue_id=VENUE), CODE.OK),
    "Quota/WatchVenueStatus": (lambda: quota_pb2.VenueRef(venue_id=VENUE), CODE.OK),
    "Quota/PauseEntry": (lambda: quota_pb2.VenueRef(venue_id=VENUE), CODE.OK),
    "Quota/ResumeEntry": (lambda: quota_pb2.VenueRef(venue_id=VENUE), CODE.OK),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("passgate-auth")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel("card-centre") as ch:
            assert import_passes(ch).rejected == 0
        yield srv


@pytest.fixture(scope="module")
def chans(server: Server) -> Iterator[dict[str | None, grpc.Channel]]:
    """One channel per identity (None = TLS without a token)."""
    with contextlib.ExitStack() as stack:
        out: dict[str | None, grpc.Channel] = {
            None: stack.enter_context(
                channels.no_token_channel(server.target, server.credentials_dir)
            )
        }
        for name in IDENTITIES.values():
            out[name] = stack.enter_context(server.channel(name))
        yield out


def invoke(ch: grpc.Channel, name: str, request: Any) -> grpc.StatusCode:
    """Calls `name` generically from its descriptor; the status code of the call (a streaming
    answer: of its first message)."""
    method = METHODS[name]
    out_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    shape = {
        (False, False): ch.unary_unary,
        (False, True): ch.unary_stream,
        (True, False): ch.stream_unary,
        (True, True): ch.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    call = shape(path, request_serializer=_serialize, response_deserializer=out_cls.FromString)
    payload = iter([request]) if method.client_streaming else request
    try:
        if method.server_streaming:
            answers = call(payload, timeout=CALL_TIMEOUT_S)
            next(answers)
            answers.cancel()
        else:
            call(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return CODE.OK


def _serialize(msg: Any) -> bytes:
    return msg.SerializeToString()  # type: ignore[no-any-return]


def test_the_walk_covers_every_method_of_every_passgate_service() -> None:
    assert len(METHODS) == 14
    assert sorted(REQUESTS) == sorted(METHODS) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_no_credential_is_unauthenticated(chans: dict[str | None, grpc.Channel], name: str) -> None:
    make, _ = REQUESTS[name]
    assert invoke(chans[None], name, make()) == CODE.UNAUTHENTICATED


@pytest.mark.parametrize("role", sorted(IDENTITIES))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_role_on_each_method(
    chans: dict[str | None, grpc.Channel], name: str, role: str
) -> None:
    make, answer = REQUESTS[name]
    got = invoke(chans[IDENTITIES[role]], name, make())
    if name == "Quota/PauseEntry" and got == CODE.OK:  # the other tests validate at VENUE
        invoke(chans["admin"], "Quota/ResumeEntry", make())
    rule = EXPECTED[name][role]  # type: ignore[index]
    assert got == (answer if rule else CODE.PERMISSION_DENIED), rule


@pytest.mark.parametrize(
    ("name", "request_"),
    [
        pytest.param("Gate/Validate", _validate(OTHER, f"{OTHER}-g01"), id="validate"),
        pytest.param(
            "Gate/Annul",
            gate_pb2.AnnulRequest(
                request_id="x", venue_id=OTHER, gate_id=f"{OTHER}-g01", credential=_credential("C")
            ),
            id="annul",
        ),
        pytest.param("Passes/Reserve", _reserve(passes_pb2.ReserveRequest, OTHER), id="reserve"),
        pytest.param(
            "Passes/CancelReservation",
            _reserve(passes_pb2.CancelReservationRequest, OTHER),
            id="cancel",
        ),
    ],
)
def test_a_gate_of_one_venue_cannot_act_at_another(
    chans: dict[str | None, grpc.Channel], name: str, request_: Any
) -> None:
    assert invoke(chans[IDENTITIES["gate"]], name, request_) == CODE.PERMISSION_DENIED


@pytest.mark.parametrize("name", ["Quota/PauseEntry", "Quota/GetVenueStatus", "Passes/Reserve"])
def test_an_operator_of_one_venue_cannot_act_at_another(
    chans: dict[str | None, grpc.Channel], name: str
) -> None:
    own = IDENTITIES["venue_operator"]
    other = (
        _reserve(passes_pb2.ReserveRequest, OTHER)
        if name == "Passes/Reserve"
        else quota_pb2.VenueRef(venue_id=OTHER)
    )
    assert invoke(chans[own], name, other) == CODE.PERMISSION_DENIED


def test_batch_and_stream_items_for_another_venue_fail_alone(
    chans: dict[str | None, grpc.Channel],
) -> None:
    stub = gate_pb2_grpc.GateStub(chans[IDENTITIES["gate"]])
    items = [_validate(rid="own"), _validate(OTHER, f"{OTHER}-g01", rid="other")]
    batch = stub.ValidateBatch(gate_pb2.ValidateBatchRequest(requests=items), timeout=30)
    streamed = list(stub.ValidateStream(iter(items), timeout=30))
    for decisions in (list(batch.decisions), streamed):
        by_id = {d.request_id: d for d in decisions}
        assert by_id["own"].allowed, by_id["own"]
        assert not by_id["other"].allowed
        assert by_id["other"].message.startswith("PERMISSION_DENIED: ")


def test_a_gate_limited_to_some_gates_cannot_use_the_others(server: Server) -> None:
    _cli(server, "issue", "gate-one", "--role", "gate", "--venue", VENUE, "--gate", GATE)
    with server.channel("gate-one") as ch:
        stub = gate_pb2_grpc.GateStub(ch)
        assert stub.Validate(_validate(gate=GATE), timeout=CALL_TIMEOUT_S).allowed
        with pytest.raises(grpc.RpcError) as err:
            stub.Validate(_validate(gate=OTHER_GATE), timeout=CALL_TIMEOUT_S)
    assert err.value.code() == CODE.PERMISSION_DENIED


def test_a_revoked_gate_is_refused_within_a_bounded_wait(server: Server) -> None:
    _cli(server, "issue", "gate-revoked", "--role", "gate", "--venue", VENUE)
    with server.channel("gate-revoked") as ch:
        stub = gate_pb2_grpc.GateStub(ch)
        assert stub.Validate(_validate(), timeout=CALL_TIMEOUT_S).allowed
        stream = stub.ValidateStream(_paced(_validate(rid="s"), REVOKE_WAIT_S), timeout=30)
        assert next(stream).allowed
        _cli(server, "revoke", "gate-revoked")
        t0 = time.monotonic()
        code = CODE.OK
        while code == CODE.OK and time.monotonic() - t0 < REVOKE_WAIT_S:
            try:
                stub.Validate(_validate(), timeout=CALL_TIMEOUT_S)
                time.sleep(0.01)
            except grpc.RpcError as exc:
                code = exc.code()
        delay = time.monotonic() - t0
        print(f"revoked gate refused {delay * 1000:.0f} ms after `ops.credentials revoke` returned")
        assert code == CODE.UNAUTHENTICATED
        # The stream opened before the revocation ends at its next item.
        with pytest.raises(grpc.RpcError) as err:
            for _ in stream:
                pass
        assert err.value.code() == CODE.UNAUTHENTICATED
    with server.channel(f"gate-{VENUE}") as ch:  # the venue's other gate credential still works
        assert gate_pb2_grpc.GateStub(ch).Validate(_validate(), timeout=CALL_TIMEOUT_S).allowed


def _paced(req: gate_pb2.ValidateRequest, seconds: float) -> Iterator[gate_pb2.ValidateRequest]:
    """The same item every 50 ms for a bounded time (a gate that keeps scanning)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        yield req
        time.sleep(0.05)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not-a-token", id="garbage"),
        pytest.param(
            jwt.encode(
                {"sub": "admin", "role": "admin", "iat": 0, "exp": 2**40, "jti": "x"},
                Ed25519PrivateKey.generate(),
                algorithm="EdDSA",
            ),
            id="forged",
        ),
    ],
)
def test_a_forged_or_garbled_token_is_unauthenticated(
    server: Server, tmp_path: Path, token: str
) -> None:
    path = tmp_path / "bad.jwt"
    path.write_text(token)
    with channels.channel(server.target, str(path), server.credentials_dir) as ch:
        assert invoke(ch, "Quota/GetVenueStatus", quota_pb2.VenueRef(venue_id=VENUE)) == (
            CODE.UNAUTHENTICATED
        )


def test_health_is_open_and_reflection_needs_a_token(
    chans: dict[str | None, grpc.Channel],
) -> None:
    health = health_pb2_grpc.HealthStub(chans[None])
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as err:
        list(
            reflection_pb2_grpc.ServerReflectionStub(chans[None]).ServerReflectionInfo(iter([ask]))
        )
    assert err.value.code() == CODE.UNAUTHENTICATED
    stub = reflection_pb2_grpc.ServerReflectionStub(chans["planner"])
    (reply,) = list(stub.ServerReflectionInfo(iter([ask]), timeout=CALL_TIMEOUT_S))
    names = {s.name for s in reply.list_services_response.service}
    assert {"passgate.v1.Gate", "passgate.v1.Passes", "passgate.v1.Quota"} <= names


def test_plaintext_is_not_served(server: Server) -> None:
    with server.channel() as tls:
        assert invoke(tls, "Quota/GetVenueStatus", quota_pb2.VenueRef(venue_id=VENUE)) == CODE.OK
    plain = channels.channel(server.target, "admin", server.credentials_dir, insecure=True)
    with plain:
        got = invoke(plain, "Quota/GetVenueStatus", quota_pb2.VenueRef(venue_id=VENUE))
    assert got == CODE.UNAVAILABLE


def test_get_pass_shows_a_gate_only_what_its_display_needs(
    chans: dict[str | None, grpc.Channel],
) -> None:
    ref = passes_pb2.PassRef(credential=_credential(card("DEBTOR", 0)))
    full = passes_pb2_grpc.PassesStub(chans["card-centre"]).GetPass(ref, timeout=CALL_TIMEOUT_S)
    assert getattr(full, "pass").credentials and getattr(full, "pass").outstanding_debt_fen > 0
    for who in (IDENTITIES["gate"], IDENTITIES["venue_operator"]):
        view = passes_pb2_grpc.PassesStub(chans[who]).GetPass(ref, timeout=CALL_TIMEOUT_S)
        rec = getattr(view, "pass")
        assert rec.pass_id == "DEBTOR-0" and rec.product_id and rec.valid_until
        assert not rec.credentials and not rec.groups
        assert rec.credit_tier == 0 and rec.outstanding_debt_fen == 0
        assert {u.venue_id for u in view.usage} <= {VENUE}


def _cli(server: Server, *argv: str) -> None:
    base = ["--credentials", str(server.credentials_dir), "--config", str(TEST_PROVINCE)]
    subprocess.run(
        [sys.executable, "-m", "ops.credentials", *base, *argv],
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
    )

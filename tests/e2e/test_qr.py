"""Signed dynamic QR codes against a real server: 2 shards, 2 ingress processes, frozen clock.

A fresh code admits; a tampered, foreign-key, unknown-key or malformed code is INVALID_CODE; a
code from outside its window is CODE_EXPIRED; the same code at a venue of the other shard, sent
through the other ingress process, is REPLAYED_CODE; a second issuer key is trusted next to the
first. Codes are minted with the development issuer key the server created on first start.
Its own server, so its codes and claims cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.routing import shard_of
from core import qr
from core.models import QrPolicy
from ops.qr import load_private_key
from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, passes_pb2, passes_pb2_grpc
from tests.e2e.conftest import FROZEN, TEST_PROVINCE
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FROZEN_MS = int(datetime.fromisoformat(FROZEN).timestamp() * 1000)
# The t-dynamic product of the test province: 60 s steps, one step of skew, no static codes.
DYNAMIC = QrPolicy(step_seconds=60, skew_steps=1, static=False)
QR = common_pb2.CREDENTIAL_KIND_QR
CARD = common_pb2.CREDENTIAL_KIND_CARD
VENUE_A, VENUE_B = "t-lake", "t-hard"
N_PASSES = 12
OWN_CHANNEL = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def qr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("qr-data")
    args = ("--shards", "2", "--seed-passes", "0", "--frozen-clock", FROZEN, "--ingress-procs", "2")
    with running_server(data_dir, *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as ch:
            summary = passes_pb2_grpc.PassesStub(ch).UpsertPasses(_passes(), timeout=60)
        assert summary.upserted == N_PASSES + 1, list(summary.errors)
        yield srv


def _passes() -> Iterator[passes_pb2.PassRecord]:
    for i in range(N_PASSES):
        yield _pass(f"QRD-{i}", "t-dynamic", f"STATIC-QRD-{i}")
    yield _pass("QRS-0", "t-annual", "STATIC-QRS-0")


def _pass(pass_id: str, product: str, static_qr: str) -> passes_pb2.PassRecord:
    return passes_pb2.PassRecord(
        pass_id=pass_id,
        product_id=product,
        credentials=[
            common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}"),
            common_pb2.Credential(kind=QR, value=static_qr),
        ],
        valid_from="2026-01-01",
        valid_until="2027-12-31",
    )


def _dev_key(srv: Server) -> Ed25519PrivateKey:
    return load_private_key(srv.credentials_dir / "qr" / "dev1.key")


def _mint(
    srv: Server, pass_id: str, at_ms: int = FROZEN_MS, key: Any = None, key_id: str = "dev1"
) -> str:
    return qr.encode(key or _dev_key(srv), key_id, pass_id, qr.step_at(at_ms, DYNAMIC))


def _validate(
    ch: grpc.Channel, rid: str, venue: str, value: str, gate: int = 1, kind: Any = QR, **kw: Any
) -> gate_pb2.Decision:
    req = gate_pb2.ValidateRequest(
        request_id=rid,
        venue_id=venue,
        gate_id=f"{venue}-g0{gate}",
        credential=common_pb2.Credential(kind=kind, value=value),
        **kw,
    )
    return gate_pb2_grpc.GateStub(ch).Validate(req, timeout=20)


def _reason(d: gate_pb2.Decision) -> str:
    return common_pb2.Reason.Name(d.reason)


def test_a_fresh_code_admits_and_its_retry_is_not_a_replay(qr_server: Server) -> None:
    code = _mint(qr_server, "QRD-0")
    with qr_server.channel() as ch:
        first = _validate(ch, "fresh-1", VENUE_A, code)
        retry = _validate(ch, "fresh-1", VENUE_A, code)
    assert (first.allowed, _reason(first), first.pass_id) == (True, "REASON_OK", "QRD-0")
    assert retry == first


def _tampered(code: str) -> str:
    body = code[len(qr.PREFIX) :]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 0x01
    return qr.PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_bad_codes_are_invalid(qr_server: Server) -> None:
    stranger = Ed25519PrivateKey.generate()
    cases = {
        "tampered": _tampered(_mint(qr_server, "QRD-1")),
        "wrong key": _mint(qr_server, "QRD-1", key=stranger),
        "unknown key id": _mint(qr_server, "QRD-1", key=stranger, key_id="unknown-issuer"),
        "malformed": qr.PREFIX + "not*base64",
        "unknown pass": _mint(qr_server, "NO-SUCH-PASS"),
        "static value of a signed-only product": "STATIC-QRD-1",
    }
    with qr_server.channel() as ch:
        for i, (name, value) in enumerate(cases.items()):
            d = _validate(ch, f"bad-{i}", VENUE_A, value)
            assert (d.allowed, _reason(d), d.pass_id) == (False, "REASON_INVALID_CODE", ""), name
        # A product that still allows static codes takes them, and nothing above used QRD-1's
        # real code.
        assert _validate(ch, "static-ok", VENUE_A, "STATIC-QRS-0").allowed
        assert _validate(ch, "bad-ok", VENUE_A, _mint(qr_server, "QRD-1")).allowed


def test_a_code_outside_its_window_is_expired(qr_server: Server) -> None:
    five_steps_ago = FROZEN_MS - 5 * DYNAMIC.step_seconds * 1000
    with qr_server.channel() as ch:
        old = _validate(ch, "old-1", VENUE_A, _mint(qr_server, "QRD-2", five_steps_ago))
        edge = _validate(ch, "edge-1", VENUE_A, _mint(qr_server, "QRD-2", FROZEN_MS - 60_000))
    assert (old.allowed, _reason(old)) == (False, "REASON_CODE_EXPIRED")
    assert "refresh" in old.message
    assert edge.allowed  # one step of skew


def _served(port: int) -> dict[str, float]:
    """Decisions this ingress process answered, by reason."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("passgate_decisions_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = out.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _total(srv: Server) -> list[float]:
    return [sum(_served(srv.metrics_port + k).values()) for k in (0, 1)]


def _process_of(srv: Server, ch: grpc.Channel, probe: str) -> int:
    """Which ingress process serves this connection: the one whose decision count moves."""
    before = _total(srv)
    _validate(ch, probe, VENUE_A, "CARD-QRS-0", gate=4, kind=CARD, dry_run=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        moved = [k for k, (a, b) in enumerate(zip(before, _total(srv), strict=True)) if b > a]
        if len(moved) == 1:
            return moved[0]
        time.sleep(0.05)
    raise AssertionError("the probe was not counted by exactly one ingress process")


def test_a_code_used_on_one_shard_is_a_replay_on_the_other_through_the_other_ingress(
    qr_server: Server,
) -> None:
    assert shard_of(VENUE_A, 2) != shard_of(VENUE_B, 2)
    with contextlib.ExitStack() as stack:
        # Private connections until one lands on each ingress process (SO_REUSEPORT spreads them).
        by_process: dict[int, grpc.Channel] = {}
        for attempt in range(24):
            ch = stack.enter_context(qr_server.channel(options=OWN_CHANNEL))
            by_process.setdefault(_process_of(qr_server, ch, f"probe-{attempt}"), ch)
            if len(by_process) == 2:
                break
        assert len(by_process) == 2, "connections never reached the second ingress process"
        code = _mint(qr_server, "QRD-3")
        replays_before = _served(qr_server.metrics_port + 1).get("REASON_REPLAYED_CODE", 0.0)
        first = _validate(by_process[0], "replay-1", VENUE_A, code)
        second = _validate(by_process[1], "replay-2", VENUE_B, code, gate=2)
        again = _validate(by_process[1], "replay-1", VENUE_A, code)
    assert first.allowed and _reason(first) == "REASON_OK"
    assert (second.allowed, _reason(second), second.pass_id) == (
        False,
        "REASON_REPLAYED_CODE",
        "QRD-3",
    )
    assert again == first  # the first gate's retry, through the other process: its own record
    replays = _served(qr_server.metrics_port + 1).get("REASON_REPLAYED_CODE", 0.0)
    assert replays == replays_before + 1


def _ops_qr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.qr", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_key_rotation_two_keys_are_valid_at_once(qr_server: Server) -> None:
    creds = str(qr_server.credentials_dir)
    made = _ops_qr("keygen", "--key", "rot2", "--credentials", creds)
    assert made.returncode == 0, made.stderr
    new_key = load_private_key(qr_server.credentials_dir / "qr" / "rot2.key")
    with qr_server.channel() as ch:
        new = _validate(
            ch, "rot-new", VENUE_A, _mint(qr_server, "QRD-4", key=new_key, key_id="rot2")
        )
        old = _validate(ch, "rot-old", VENUE_A, _mint(qr_server, "QRD-5"))
        # The key id picks the key: the old key cannot sign for the new id.
        forged = _validate(ch, "rot-bad", VENUE_A, _mint(qr_server, "QRD-6", key_id="rot2"))
    assert new.allowed and old.allowed
    assert _reason(forged) == "REASON_INVALID_CODE"


def test_mint_prints_a_code_the_gate_client_accepts(qr_server: Server, tmp_path: Path) -> None:
    png = tmp_path / "code.png"
    minted = _ops_qr(
        "mint", "--pass", "QRD-7", "--data-dir", str(qr_server.data_dir),
        "--credentials", str(qr_server.credentials_dir), "--config", str(TEST_PROVINCE),
        "--at", FROZEN, "--png", str(png),
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    code = minted.stdout.strip()
    # The step came from the pass's product (60 s), found through the catalog.
    token = qr.decode(code)
    assert token is not None and token.step == qr.step_at(FROZEN_MS, DYNAMIC)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gate = subprocess.run(
        [
            sys.executable, "-m", "ops.gatecli", "--target", qr_server.target,
            "--credentials", str(qr_server.credentials_dir),
            "validate", "--venue", VENUE_B, "--gate", f"{VENUE_B}-g03", "--qr", code,
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert gate.returncode == 0, gate.stderr[-500:]
    assert "ALLOWED" in gate.stdout and "QRD-7" in gate.stdout, gate.stdout

"""actors/shard/code_claims.py: the node's shared claims of signed codes and the issuer keys."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.shard.code_claims import Claim, CodeClaims, IssuerKeys, claim_owner, issuer_dir

ROOT = Path(__file__).resolve().parents[2]
CODE_A, CODE_B = b"A" * 16, b"B" * 16
GATE_1 = claim_owner(b"venue-1/gate-1/r1")
GATE_2 = claim_owner(b"venue-2/gate-9/r1")
NOW = 1_000_000


@pytest.fixture
def claims(tmp_path: Path) -> Iterator[CodeClaims]:
    store = CodeClaims(tmp_path / "codes")
    yield store
    store.close()


def test_first_claim_wins_and_a_second_request_is_a_replay(claims: CodeClaims) -> None:
    assert claims.claim([Claim(CODE_A, GATE_1, NOW + 60_000)], NOW) == [False]
    assert claims.claim([Claim(CODE_A, GATE_2, NOW + 60_000)], NOW + 1) == [True]
    assert claims.claim([Claim(CODE_B, GATE_2, NOW + 60_000)], NOW + 1) == [False]


def test_the_same_request_again_is_not_its_own_replay(claims: CodeClaims) -> None:
    claims.claim([Claim(CODE_A, GATE_1, NOW + 60_000)], NOW)
    assert claims.claim([Claim(CODE_A, GATE_1, NOW + 60_000)], NOW + 5) == [False]


def test_claims_earlier_in_one_batch_count_for_later_ones(claims: CodeClaims) -> None:
    batch = [
        Claim(CODE_A, GATE_1, NOW + 60_000),
        Claim(CODE_A, GATE_2, NOW + 60_000),
        Claim(CODE_A, GATE_1, NOW + 60_000),
    ]
    assert claims.claim(batch, NOW) == [False, True, False]


def test_a_dry_run_sees_a_claim_but_makes_none(claims: CodeClaims) -> None:
    assert claims.claim([Claim(CODE_A, GATE_1, NOW + 60_000, check_only=True)], NOW) == [False]
    assert claims.count() == 0
    claims.claim([Claim(CODE_A, GATE_1, NOW + 60_000)], NOW)
    assert claims.claim([Claim(CODE_A, GATE_2, NOW + 60_000, check_only=True)], NOW) == [True]


def test_an_expired_claim_no_longer_counts_and_is_purged(claims: CodeClaims) -> None:
    claims.claim([Claim(CODE_A, GATE_1, NOW + 60_000), Claim(CODE_B, GATE_1, NOW + 90_000)], NOW)
    assert claims.claim([Claim(CODE_A, GATE_2, NOW + 120_000)], NOW + 60_000) == [False]
    assert claims.count() == 2
    # The batch at 60 s purged CODE_A's first index entry but kept its new claim; at 90 s only
    # CODE_B's claim goes.
    assert claims.purge(NOW + 90_000) == 1
    assert claims.count() == 1
    assert claims.claim([Claim(CODE_A, GATE_1, NOW + 200_000)], NOW + 90_001) == [True]
    assert claims.purge(NOW + 120_000) == 1
    assert claims.count() == 0


def test_batches_purge_on_their_own(claims: CodeClaims) -> None:
    claims.claim([Claim(bytes([i]) * 16, GATE_1, NOW + 1_000) for i in range(5)], NOW)
    claims.claim([Claim(CODE_A, GATE_1, NOW + 100_000)], NOW + 20_000)
    assert claims.count() == 1


def test_shards_in_one_process_share_one_environment(tmp_path: Path) -> None:
    one, two = CodeClaims(tmp_path / "codes"), CodeClaims(tmp_path / "codes")
    try:
        one.claim([Claim(CODE_A, GATE_1, NOW + 60_000)], NOW)
        assert two.claim([Claim(CODE_A, GATE_2, NOW + 60_000)], NOW) == [True]
        one.close()
        assert two.count() == 1  # still open for the other user
    finally:
        one.close()
        two.close()


def test_a_claim_made_by_another_process_is_seen(claims: CodeClaims, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from actors.shard.code_claims import Claim, CodeClaims
        store = CodeClaims(Path({str(tmp_path / "codes")!r}))
        print(store.claim([Claim({CODE_A!r}, {GATE_1!r}, {NOW + 60_000})], {NOW}))
        store.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "[False]"
    assert claims.claim([Claim(CODE_A, GATE_2, NOW + 60_000)], NOW + 1) == [True]


# -- issuer keys ------------------------------------------------------------------------------


def _write_pub(qr_dir: Path, key_id: str) -> bytes:
    key = Ed25519PrivateKey.generate()
    qr_dir.mkdir(parents=True, exist_ok=True)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (qr_dir / f"{key_id}.pub").write_bytes(pem)
    return key.public_key().public_bytes_raw()


def test_issuer_keys_come_from_the_directory_and_the_config(tmp_path: Path) -> None:
    qr_dir = tmp_path / "qr"
    dev1 = _write_pub(qr_dir, "dev1")
    (qr_dir / "bad id!.pub").write_bytes(b"x")
    (qr_dir / "broken.pub").write_bytes(b"not a key")
    configured = {"app-1": b"\x01" * 32}
    keys = IssuerKeys(configured, qr_dir)
    assert keys.keys == {"dev1": dev1, "app-1": b"\x01" * 32}


def test_issuer_keys_pick_up_a_new_key_when_the_directory_changes(tmp_path: Path) -> None:
    qr_dir = tmp_path / "qr"
    _write_pub(qr_dir, "dev1")
    keys = IssuerKeys({}, qr_dir)
    assert keys.refresh() is False
    rot2 = _write_pub(qr_dir, "rot2")
    # Some file systems keep mtime in coarse ticks; touching the directory makes it certain.
    stat = qr_dir.stat()
    os.utime(qr_dir, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert keys.refresh() is True
    assert keys.keys["rot2"] == rot2


def test_a_missing_key_directory_means_only_the_configs_keys(tmp_path: Path) -> None:
    assert IssuerKeys({"k": b"\x02" * 32}, tmp_path / "nowhere").keys == {"k": b"\x02" * 32}


def test_issuer_dir_follows_flag_then_environment_then_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PASSGATE_CREDENTIALS", raising=False)
    assert issuer_dir(tmp_path) == tmp_path / "credentials" / "qr"
    monkeypatch.setenv("PASSGATE_CREDENTIALS", str(tmp_path / "env"))
    assert issuer_dir(tmp_path) == tmp_path / "env" / "qr"
    assert issuer_dir(tmp_path, tmp_path / "flag") == tmp_path / "flag" / "qr"


def test_the_start_up_check_drops_a_damaged_claims_store(tmp_path: Path) -> None:
    from actors.shard.store_check import check_data_dir

    store = CodeClaims(tmp_path / "codes")
    store.claim([Claim(CODE_A, GATE_1, NOW + 60_000)], NOW)
    store.close()
    data = tmp_path / "codes" / "data.mdb"
    check_data_dir(tmp_path, 1)
    assert data.exists()  # healthy: kept, claims and all
    with data.open("r+b") as f:
        f.truncate(4096 + 100)  # inside meta page 1
    check_data_dir(tmp_path, 1)
    assert not data.exists()
    fresh = CodeClaims(tmp_path / "codes")
    try:
        assert fresh.count() == 0
    finally:
        fresh.close()

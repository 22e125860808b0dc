"""core/qr.py: the signed-code format, its decoding, verification with the cache, and the window."""

from __future__ import annotations

import base64
import binascii

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.limits import CREDENTIAL_VALUE
from core.models import QrPolicy, Reason
from core.qr import (
    BAD_SIGNATURE,
    MALFORMED,
    PREFIX,
    UNKNOWN_KEY,
    Token,
    Verifier,
    claim_expiry_ms,
    decode,
    encode,
    is_signed,
    public_key_bytes,
    signed_bytes,
    step_at,
    window_problem,
)

# RFC 8032, test 1: a fixed key so that the format below is pinned byte for byte.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUB = KEY.public_key().public_bytes_raw()
POLICY = QrPolicy(step_seconds=30, skew_steps=1)
NOW_MS = 1_790_000_000_000  # 2026-09-21T13:33:20Z
STEP = NOW_MS // 1000 // 30


def _raw(text: str) -> bytes:
    body = text[len(PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _text(raw: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_layout_is_prefix_then_base64url_of_fields_and_signature() -> None:
    code = encode(KEY, "dev1", "P42", 7)
    assert code.startswith(PREFIX) and "=" not in code
    raw = _raw(code)
    assert raw[:-64] == b"\x01" + b"\x04dev1" + b"\x03P42" + (7).to_bytes(4, "big")
    # The signature covers the prefix and every field, and Ed25519 is deterministic.
    assert raw[-64:] == KEY.sign(b"PG1." + raw[:-64])
    assert signed_bytes("dev1", "P42", 7) == b"PG1." + raw[:-64]


def test_decode_round_trips_without_verifying() -> None:
    token = decode(encode(KEY, "app-2026a", "P0000000001", STEP))
    assert token is not None
    assert (token.key_id, token.pass_id, token.step) == ("app-2026a", "P0000000001", STEP)
    assert len(token.signature) == 64


def test_key_id_and_pass_id_share_118_bytes_of_a_credential_value() -> None:
    code = encode(KEY, "k" * 32, "p" * 86, STEP)
    assert len(code) == CREDENTIAL_VALUE.chars
    with pytest.raises(ValueError, match="over 256"):
        encode(KEY, "k" * 32, "p" * 87, STEP)


@pytest.mark.parametrize(
    ("key_id", "pass_id", "step"),
    [("", "P1", 1), ("a b", "P1", 1), ("k" * 33, "P1", 1), ("k", "", 1), ("k", "P\x00", 1),
     ("k", "P1", -1), ("k", "P1", 1 << 32)],
)  # fmt: skip
def test_encode_refuses_bad_fields(key_id: str, pass_id: str, step: int) -> None:
    with pytest.raises(ValueError):
        encode(KEY, key_id, pass_id, step)


def test_is_signed_tells_signed_from_static_values() -> None:
    assert is_signed(encode(KEY, "dev1", "P1", 1))
    assert not is_signed("DEMO-QR-ANNUAL") and not is_signed("pg1.abc")


GOOD = encode(KEY, "dev1", "P1", STEP)
GOOD_RAW = _raw(GOOD)
MALFORMED_CASES = {
    "empty body": PREFIX,
    "not base64": PREFIX + "!!!!",
    "padding": GOOD + "==",
    "too short": _text(GOOD_RAW[:40]),
    "extra byte": _text(GOOD_RAW + b"\x00"),
    "version 2": _text(b"\x02" + GOOD_RAW[1:]),
    "zero key length": _text(b"\x01\x00" + GOOD_RAW[6:]),
    "key length past the end": _text(b"\x01\xff" + GOOD_RAW[2:]),
    "pass length past the end": _text(GOOD_RAW[:6] + b"\xff" + GOOD_RAW[7:]),
    "non-ascii key id": _text(b"\x01\x04d\xc3\xa9v" + GOOD_RAW[6:]),
    "control character in pass id": _text(GOOD_RAW[:7] + b"\x00" + GOOD_RAW[8:]),
    "whitespace": GOOD[:20] + " " + GOOD[20:],
    "too long": PREFIX + "A" * 300,
}


@pytest.mark.parametrize("text", MALFORMED_CASES.values(), ids=MALFORMED_CASES.keys())
def test_malformed_codes_do_not_decode(text: str) -> None:
    assert decode(text) is None
    assert Verifier({"dev1": PUB}).check(text) == MALFORMED


def test_a_second_spelling_of_the_same_bytes_is_refused() -> None:
    # The last base64 character carries unused low bits; flipping them spells the same bytes.
    body = GOOD[len(PREFIX) :]
    assert len(body) % 4 != 0
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = GOOD[:-1] + alphabet[alphabet.index(GOOD[-1]) ^ 1]
    std = twin[len(PREFIX) :].replace("-", "+").replace("_", "/")
    assert binascii.a2b_base64(std + "=" * (-len(std) % 4)) == GOOD_RAW
    assert decode(GOOD) is not None and decode(twin) is None


def test_verifier_accepts_a_good_code_and_names_each_refusal() -> None:
    verifier = Verifier({"dev1": PUB})
    token = verifier.check(GOOD)
    assert isinstance(token, Token) and token.pass_id == "P1"
    other = Ed25519PrivateKey.generate()
    assert verifier.check(encode(other, "dev1", "P1", STEP)) == BAD_SIGNATURE  # wrong key
    assert verifier.check(encode(KEY, "nope", "P1", STEP)) == UNKNOWN_KEY
    raw = bytearray(GOOD_RAW)
    raw[8] ^= 0x01  # the pass id changes: P1 -> P0
    tampered = _text(bytes(raw))
    assert decode(tampered) is not None
    assert verifier.check(tampered) == BAD_SIGNATURE


def test_verifier_caches_by_text_and_forgets_only_unknown_keys() -> None:
    verifier = Verifier({"dev1": PUB}, cache_size=2)
    for _ in range(3):
        assert isinstance(verifier.check(GOOD), Token)
    assert verifier.verified == 1
    unknown = encode(KEY, "dev2", "P1", STEP)
    assert verifier.check(unknown) == UNKNOWN_KEY
    verifier.replace_keys({"dev1": PUB, "dev2": PUB})  # a rotation adds the key
    assert isinstance(verifier.check(unknown), Token)
    # Least recently used goes first.
    a, b, c = (encode(KEY, "dev1", f"P{i}", STEP) for i in (7, 8, 9))
    for code in (a, b, a, c):
        verifier.check(code)
    before = verifier.verified
    verifier.check(a)
    assert verifier.verified == before
    verifier.check(b)
    assert verifier.verified == before + 1


def test_key_rotation_two_keys_both_valid() -> None:
    new = Ed25519PrivateKey.generate()
    verifier = Verifier({"dev1": PUB, "app-2027": new.public_key().public_bytes_raw()})
    assert isinstance(verifier.check(encode(KEY, "dev1", "P1", STEP)), Token)
    assert isinstance(verifier.check(encode(new, "app-2027", "P1", STEP)), Token)
    # A key id selects the key: the old key's signature under the new id is refused.
    assert verifier.check(encode(KEY, "app-2027", "P1", STEP)) == BAD_SIGNATURE


@pytest.mark.parametrize(
    ("steps_off", "expected"),
    [(-2, Reason.CODE_EXPIRED), (-1, None), (0, None), (1, None), (2, Reason.CODE_EXPIRED)],
)
def test_window_is_skew_steps_either_side(steps_off: int, expected: Reason | None) -> None:
    problem = window_problem(STEP + steps_off, NOW_MS, POLICY)
    assert (problem[0] if problem else None) == expected
    if problem is not None:
        assert "refresh" in problem[1]


def test_window_follows_the_products_policy() -> None:
    slow = QrPolicy(step_seconds=60, skew_steps=0)
    step = step_at(NOW_MS, slow)
    assert window_problem(step, NOW_MS, slow) is None
    assert window_problem(step - 1, NOW_MS, slow) is not None
    assert step_at(NOW_MS, POLICY) == STEP


def test_claim_outlives_the_window_exactly() -> None:
    expiry = claim_expiry_ms(STEP, POLICY)
    last_ok = (STEP + 2) * 30_000 - 1  # the last instant whose step is STEP + skew
    assert window_problem(STEP, last_ok, POLICY) is None
    assert window_problem(STEP, expiry, POLICY) is not None
    assert expiry == last_ok + 1


def test_claim_key_is_the_same_for_the_same_code_only() -> None:
    one, two = decode(GOOD), decode(encode(KEY, "dev1", "P1", STEP + 1))
    assert one is not None and two is not None
    again = decode(encode(KEY, "dev1", "P1", STEP))
    assert again is not None and again.claim_key() == one.claim_key()
    assert one.claim_key() != two.claim_key() and len(one.claim_key()) == 16


def test_public_key_bytes_from_pem_or_raw() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_key_bytes(pem) == PUB
    assert public_key_bytes(PUB) == PUB
    with pytest.raises(ValueError):
        public_key_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")

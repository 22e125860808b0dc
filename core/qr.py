"""Signed dynamic QR codes: the token format, its cheap decoding, Ed25519 checks and the window.

A code is the text `PG1.` followed by base64url (no padding) of

    version (1 byte, = 1) | key_id (1 length byte + ASCII) | pass_id (1 length byte + UTF-8)
    | step (uint32 big-endian: issue time // step_seconds) | Ed25519 signature (64 bytes)

The signature covers `PG1.` and every byte before it, so neither the prefix nor a field can be
changed. A code must fit a credential value (256 characters), which leaves 118 bytes for the key
id and the pass id together. A code is valid for steps in [now_step - skew, now_step + skew] of
its pass's product (`QrPolicy`). The issuing app holds the private key; passgate trusts public
keys by key id, so a new key can be added next to the old one and the old one dropped later
(rotation, no flag day).

Pure: the instant is passed in (`now_ms`), keys arrive as bytes, nothing here reads a clock or a
file. Ed25519 itself is `cryptography`'s (OpenSSL); nothing cryptographic is written here.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import struct
from collections import OrderedDict
from collections.abc import Mapping

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.labels import LABELS
from core.limits import CREDENTIAL_VALUE, text_problem
from core.models import QrPolicy, Reason

PREFIX = "PG1."
_PREFIX_BYTES = PREFIX.encode()
VERSION = 1
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
MAX_KEY_ID = 32
KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
# Verified (or refused) codes kept per verifier; a retry or a replayed code costs a dict lookup.
CACHE_SIZE = 16_384

_STEP = struct.Struct(">I")
# version, key length, pass length, step, signature: the smallest possible token.
_MIN_RAW = 1 + 1 + 1 + 1 + 1 + _STEP.size + SIGNATURE_BYTES
# Every base64 text of a token that fits the credential-value limit is at most this long.
_MAX_BODY = CREDENTIAL_VALUE.chars - len(PREFIX)
# bytes.translate: a C table lookup (str.translate costs microseconds per code).
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_STD_TO_URL = bytes.maketrans(b"+/", b"-_")

# Why a code was refused before any pass was looked at (kept apart for tests and logs; the gate
# sees REASON_INVALID_CODE for all of them).
MALFORMED = "malformed"
UNKNOWN_KEY = "unknown key"
BAD_SIGNATURE = "bad signature"

_NOT_YET = "code not valid yet: check the phone's clock and refresh the code"


class Token(msgspec.Struct, frozen=True, gc=False):
    """A decoded code. `signed` is what the signature covers; nothing here is verified yet."""

    key_id: str
    pass_id: str
    step: int
    signed: bytes
    signature: bytes

    def claim_key(self) -> bytes:
        """Identifies the code for replay claims: a hash of the signed bytes, so a re-encoded text
        or a second signature of the same code cannot escape an earlier claim."""
        return hashlib.sha256(self.signed).digest()[:16]


def is_signed(value: str) -> bool:
    """A QR credential value in the signed format (anything else is a static QR value)."""
    return value.startswith(PREFIX)


# -- encoding --------------------------------------------------------------------------------


def _field(text: str, what: str) -> bytes:
    raw = text.encode()
    if not raw or len(raw) > 255:
        raise ValueError(f"{what}: 1 to 255 bytes")
    return bytes((len(raw),)) + raw


def signed_bytes(key_id: str, pass_id: str, step: int) -> bytes:
    """The bytes a code's signature covers (the prefix included)."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError("key_id: letters, digits, '.', '_', '-'; at most 32")
    problem = text_problem(pass_id)
    if problem is not None:
        raise ValueError(f"pass_id: {problem}")
    if not 0 <= step < 1 << 32:
        raise ValueError("step: outside uint32")
    payload = bytes((VERSION,)) + _field(key_id, "key_id") + _field(pass_id, "pass_id")
    return _PREFIX_BYTES + payload + _STEP.pack(step)


def encode(key: Ed25519PrivateKey, key_id: str, pass_id: str, step: int) -> str:
    """Signs a code for `pass_id` at `step`; ValueError when it would not fit a credential."""
    signed = signed_bytes(key_id, pass_id, step)
    raw = signed[len(_PREFIX_BYTES) :] + key.sign(signed)
    text = PREFIX + _b64(raw)
    if len(text) > CREDENTIAL_VALUE.chars:
        raise ValueError(f"code is {len(text)} characters, over {CREDENTIAL_VALUE.chars}")
    return text


def _b64url(raw: bytes) -> bytes:
    return binascii.b2a_base64(raw, newline=False).translate(_STD_TO_URL).rstrip(b"=")


def _b64(raw: bytes) -> str:
    return _b64url(raw).decode()


# -- decoding ----------------------------------------------------------------------------------


def decode(text: str) -> Token | None:
    """The code's fields, or None when it is not a well-formed code. Cheap: no cryptography."""
    body_text = text[len(PREFIX) :]
    if not text.startswith(PREFIX) or not 0 < len(body_text) <= _MAX_BODY:
        return None
    try:
        body = body_text.encode("ascii")
        std = body.translate(_URL_TO_STD) + b"=" * (-len(body) % 4)
        raw = binascii.a2b_base64(std, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    # One text per code: unused trailing bits would give the same bytes several spellings.
    if len(raw) < _MIN_RAW or _b64url(raw) != body:
        return None
    return _fields(raw)


def _fields(raw: bytes) -> Token | None:
    if raw[0] != VERSION:
        return None
    pos = 1
    key_len = raw[pos]
    key_id_raw = raw[pos + 1 : pos + 1 + key_len]
    pos += 1 + key_len
    if pos >= len(raw):
        return None
    pass_len = raw[pos]
    pass_raw = raw[pos + 1 : pos + 1 + pass_len]
    pos += 1 + pass_len
    if pos + _STEP.size + SIGNATURE_BYTES != len(raw) or not key_len or not pass_len:
        return None
    try:
        key_id, pass_id = key_id_raw.decode("ascii"), pass_raw.decode()
    except UnicodeDecodeError:
        return None
    if not KEY_ID_RE.fullmatch(key_id) or text_problem(pass_id) is not None:
        return None
    (step,) = _STEP.unpack_from(raw, pos)
    end = pos + _STEP.size
    return Token(key_id, pass_id, step, _PREFIX_BYTES + raw[:end], raw[end:])


# -- keys and verification ---------------------------------------------------------------------


def public_key_bytes(pem_or_raw: bytes) -> bytes:
    """The raw 32-byte public key from a PEM SubjectPublicKeyInfo (or raw bytes); ValueError if
    it is not an Ed25519 public key."""
    if len(pem_or_raw) == PUBLIC_KEY_BYTES:
        return bytes(pem_or_raw)
    key = serialization.load_pem_public_key(pem_or_raw)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key.public_bytes_raw()


class Verifier:
    """Checks codes against the trusted public keys, with an LRU cache keyed by the code's text.

    A fresh code costs one Ed25519 verification; the same text again (a retry, a replay, a code
    shown at a second gate) costs a dict lookup. Only signatures are cached: the window and the
    replay claim are checked on every scan.
    """

    def __init__(self, keys: Mapping[str, bytes], cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, Token | str] = OrderedDict()
        self._cache_size = cache_size
        self._keys: dict[str, Ed25519PublicKey] = {}
        self.verified = 0
        self.replace_keys(keys)

    def replace_keys(self, keys: Mapping[str, bytes]) -> None:
        """Trusts exactly `keys` (key id -> raw public key) from now on."""
        self._keys = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in keys.items()}
        self._cache.clear()

    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def check(self, text: str) -> Token | str:
        """The verified token, or why not (`MALFORMED`, `UNKNOWN_KEY`, `BAD_SIGNATURE`)."""
        cache = self._cache
        hit = cache.get(text)
        if hit is not None:
            cache.move_to_end(text)
            return hit
        result = self._check(text)
        # A key may be added later: never remember its absence.
        if not (isinstance(result, str) and result == UNKNOWN_KEY):
            cache[text] = result
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return result

    def _check(self, text: str) -> Token | str:
        token = decode(text)
        if token is None:
            return MALFORMED
        key = self._keys.get(token.key_id)
        if key is None:
            return UNKNOWN_KEY
        self.verified += 1
        try:
            key.verify(token.signature, token.signed)
        except InvalidSignature:
            return BAD_SIGNATURE
        return token


# -- the window ------------------------------------------------------------------------------


def step_at(at_ms: int, policy: QrPolicy) -> int:
    """The step a code issued at `at_ms` carries."""
    return at_ms // 1000 // policy.step_seconds


def window_problem(step: int, now_ms: int, policy: QrPolicy) -> tuple[Reason, str] | None:
    """CODE_EXPIRED when `step` is outside [now_step - skew, now_step + skew], else None."""
    now_step = step_at(now_ms, policy)
    if step < now_step - policy.skew_steps:
        return Reason.CODE_EXPIRED, LABELS[Reason.CODE_EXPIRED]
    if step > now_step + policy.skew_steps:
        return Reason.CODE_EXPIRED, _NOT_YET
    return None


def claim_expiry_ms(step: int, policy: QrPolicy) -> int:
    """When a code leaves its window for good: its replay claim is useless after this."""
    return (step + policy.skew_steps + 1) * policy.step_seconds * 1000


__all__ = [
    "BAD_SIGNATURE",
    "MALFORMED",
    "PREFIX",
    "UNKNOWN_KEY",
    "Ed25519PrivateKey",
    "QrPolicy",
    "Token",
    "Verifier",
    "claim_expiry_ms",
    "decode",
    "encode",
    "is_signed",
    "public_key_bytes",
    "signed_bytes",
    "step_at",
    "window_problem",
]

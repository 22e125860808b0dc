"""Signed QR codes on one node: the trusted issuer keys and the claims store shared by its shards.

Claims: one LMDB environment, `<data-dir>/codes/`, opened by every shard process on the node. A
batch claims all of its signed codes in ONE write transaction before the shard commits its own
store; LMDB serialises writers across processes, so a code shown at two venues owned by two
shards (reached through two ingress processes) is claimed once and the second scan is a replay.
A claim names the request that made it (a hash of venue, gate and request_id), so a retry of
that same request is never its own replay. Claims end with their code's window and are purged
periodically through an expiry index.

The environment is not fsynced: a crashed process loses nothing (its writes are in the page
cache), and after a power cut a node takes longer to come back than a code's window lasts with
the default policy (30 s steps, one step of skew). Replay detection covers ONE node: shards on
other nodes of a Ray cluster keep their own claims.

Issuer keys: the province's (`config/qr_keys.toml`) plus every `<credentials>/qr/<key_id>.pub`,
re-read when that directory changes, so a key added for a rotation is trusted without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lmdb

from actors.errors import storage_error
from actors.shard import node_env, stamps
from core.qr import KEY_ID_RE, public_key_bytes

log = logging.getLogger("passgate.codes")

CODES_MAP_SIZE = 1 << 30  # sparse; a claim takes well under 100 bytes with its index entry
PURGE_EVERY_MS = 10_000
PURGE_MAX = 10_000  # expired claims deleted per purge, so one batch never pays for a backlog
ENV_CREDENTIALS = "PASSGATE_CREDENTIALS"

_VALUE = struct.Struct(">Q16s")  # expiry_ms, owner


def codes_path(data_dir: Path) -> Path:
    return data_dir / "codes"


def issuer_dir(data_dir: Path, credentials_dir: Path | None = None) -> Path:
    """`<credentials>/qr`: `credentials_dir`, else $PASSGATE_CREDENTIALS, else
    `<data_dir>/credentials` (the same rule as the clients')."""
    if credentials_dir is None:
        env = os.environ.get(ENV_CREDENTIALS)
        credentials_dir = Path(env) if env else data_dir / "credentials"
    return credentials_dir / "qr"


def claim_owner(request_key: bytes) -> bytes:
    """The 16 bytes that name the request making a claim."""
    return hashlib.blake2b(request_key, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Claim:
    key: bytes  # `core.qr.Token.claim_key()`
    owner: bytes  # `claim_owner(request key)`
    expiry_ms: int
    # A dry run: report a live claim by another request, claim nothing.
    check_only: bool = False


class CodeClaims:
    """The node's claims of signed codes: one write transaction per batch."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._env = node_env.acquire(path, CODES_MAP_SIZE, 2, "code claims")
        self._claims = self._env.open_db(b"claims")
        # expiry_ms (8 bytes, big-endian) + claim key -> b"": purges in expiry order.
        self._expiry = self._env.open_db(b"expiry")
        self._next_purge_ms = 0
        self._closed = False

    def claim(self, claims: Sequence[Claim], now_ms: int) -> list[bool]:
        """Claims every code in one transaction; for each, True when another request already holds
        a live claim on it (a replay). Claims earlier in `claims` count for later ones."""
        try:
            with self._env.begin(write=True) as txn:
                replayed = [self._claim_one(txn, c, now_ms) for c in claims]
                if now_ms >= self._next_purge_ms:
                    self._purge(txn, now_ms)
        except lmdb.Error as exc:
            raise storage_error("code claims write failed", exc) from exc
        if now_ms >= self._next_purge_ms:
            self._next_purge_ms = now_ms + PURGE_EVERY_MS
        return replayed

    def _claim_one(self, txn: lmdb.Transaction, c: Claim, now_ms: int) -> bool:
        raw = txn.get(c.key, db=self._claims)
        if raw is not None:
            expiry_ms, owner = _VALUE.unpack(raw)
            if expiry_ms > now_ms:
                return owner != c.owner
        if not c.check_only:
            txn.put(c.key, _VALUE.pack(c.expiry_ms, c.owner), db=self._claims)
            txn.put(stamps.stamp_key(c.expiry_ms, c.key), b"", db=self._expiry)
        return False

    def _purge(self, txn: lmdb.Transaction, now_ms: int) -> int:
        """Deletes up to PURGE_MAX claims whose window has passed; returns how many."""
        # A later claim of the same code (after this one expired) keeps its own entry.
        return stamps.purge_index(
            txn, self._expiry, self._claims, now_ms, PURGE_MAX,
            lambda raw: _VALUE.unpack(raw)[0] <= now_ms,
        )  # fmt: skip

    def purge(self, now_ms: int) -> int:
        """Purges expired claims now (tests and tools; batches purge on their own)."""
        try:
            with self._env.begin(write=True) as txn:
                return self._purge(txn, now_ms)
        except lmdb.Error as exc:
            raise storage_error("code claims write failed", exc) from exc

    def count(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._claims)["entries"])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            node_env.release(self._path)


class IssuerKeys:
    """The public keys signed codes may name: the province's plus `<credentials>/qr/*.pub`."""

    def __init__(self, configured: Mapping[str, bytes], qr_dir: Path) -> None:
        self._configured = dict(configured)
        self._dir = qr_dir
        self._stamp: int | None = None
        self.keys: dict[str, bytes] = {}
        self.refresh()

    def refresh(self) -> bool:
        """Re-reads the key directory when it changed since the last read; True if it did."""
        stamp = _mtime_ns(self._dir)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        keys = _dir_keys(self._dir)
        for key_id, raw in self._configured.items():
            if keys.get(key_id, raw) != raw:
                log.warning("issuer key %r differs in qr_keys.toml and %s: using the config's",
                            key_id, self._dir)  # fmt: skip
            keys[key_id] = raw
        changed = keys != self.keys
        self.keys = keys
        return changed


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _dir_keys(qr_dir: Path) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    try:
        files = sorted(qr_dir.glob("*.pub"))
    except OSError:
        return keys
    for path in files:
        if not KEY_ID_RE.fullmatch(path.stem):
            log.warning("ignoring issuer key %s: not a valid key id", path.name)
            continue
        try:
            keys[path.stem] = public_key_bytes(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("ignoring issuer key %s: %s", path.name, str(exc)[:80])
    return keys

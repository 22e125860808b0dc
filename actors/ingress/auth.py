"""Who may call what: bearer-token identities, the method -> roles table, and the check that every
passgate method goes through once (the wrapper of `error_map.py` in this package calls it).

A caller sends `authorization: Bearer <jwt>`; the JWT is signed with the Ed25519 key of the
credentials directory (ops/credentials.py writes it) and names a role, its venues and, for a gate,
its gate ids. No token, a bad one, an expired one or a revoked one is UNAUTHENTICATED; a valid token
whose role, venue or gate does not fit the call is PERMISSION_DENIED.

The hot path pays one dict lookup per call: a token's signature is verified once and its principal
cached until it expires or the deny-list (`revoked.json`, re-read when it changes, looked at no more
than every 250 ms) changes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from actors.errors import PermissionDenied, Unauthenticated

log = logging.getLogger("passgate.auth")

# The credentials directory, as ops/credentials.py lays it out.
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
SIGNING_KEY = "token-signing.key"
SIGNING_PUB = "token-signing.pub"
TOKENS_DIR = "tokens"
REVOKED = "revoked.json"

ALGORITHM = "EdDSA"
DENY_CHECK_INTERVAL_S = 0.25
# Longer than any token we issue; a longer header is refused before it is parsed.
MAX_TOKEN_CHARS = 4096
MAX_CACHED = 4096
# Allowed difference between the issuer's clock and ours (for an `nbf` claim).
CLOCK_SKEW_S = 60
PASSGATE_PREFIX = "/passgate."


class Role(StrEnum):
    GATE = "gate"
    CARD_CENTRE = "card_centre"
    VENUE_OPERATOR = "venue_operator"
    PLANNER = "planner"
    ADMIN = "admin"


class Scope(Enum):
    """How far a role's permission for one method reaches."""

    ANY = "any"  # every request
    VENUE = "venue"  # request.venue_id is one of the caller's venues
    GATE = "gate"  # ... and request.gate_id one of its gates (all of them when it lists none)
    ITEMS = "items"  # each item of a batch or stream is checked alone, with item_allowed
    LIMITED = "limited"  # allowed; the servicer answers with a limited view


def _method(service: str, name: str) -> str:
    return f"/passgate.v1.{service}/{name}"


_ADMIN = {Role.ADMIN: Scope.ANY}
_CARD_CENTRE = {**_ADMIN, Role.CARD_CENTRE: Scope.ANY}
_GATE_CALL = {**_ADMIN, Role.GATE: Scope.GATE}
_GATE_ITEMS = {**_ADMIN, Role.GATE: Scope.ITEMS}
_RESERVE = {**_CARD_CENTRE, Role.VENUE_OPERATOR: Scope.VENUE, Role.GATE: Scope.VENUE}
_OPERATE = {**_ADMIN, Role.VENUE_OPERATOR: Scope.VENUE}
_WATCH = {**_OPERATE, Role.PLANNER: Scope.ANY}

# Every passgate method and who may call it; tests/unit/test_auth.py walks the proto descriptors.
RULES: dict[str, dict[Role, Scope]] = {
    _method("Gate", "Validate"): _GATE_CALL,
    _method("Gate", "ValidateStream"): _GATE_ITEMS,
    _method("Gate", "ValidateBatch"): _GATE_ITEMS,
    _method("Gate", "Annul"): _GATE_CALL,
    _method("Passes", "UpsertPasses"): _CARD_CENTRE,
    _method("Passes", "GetPass"): {
        **_CARD_CENTRE,
        Role.GATE: Scope.LIMITED,
        Role.VENUE_OPERATOR: Scope.LIMITED,
    },
    _method("Passes", "RevokePass"): _CARD_CENTRE,
    _method("Passes", "Reserve"): _RESERVE,
    _method("Passes", "CancelReservation"): _RESERVE,
    _method("Quota", "SetVenueQuota"): _OPERATE,
    _method("Quota", "GetVenueStatus"): _WATCH,
    _method("Quota", "WatchVenueStatus"): _WATCH,
    _method("Quota", "PauseEntry"): _OPERATE,
    _method("Quota", "ResumeEntry"): _OPERATE,
}
# Open to everyone (load balancers); every other non-passgate method needs a valid token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified claims of one token."""

    sub: str
    role: Role
    venues: frozenset[str]
    gates: frozenset[str]
    jti: str
    exp: float

    @property
    def full_view(self) -> bool:
        """May see holder data (credentials, groups, credit tier, debt)."""
        return self.role in (Role.ADMIN, Role.CARD_CENTRE)


def authorize(principal: Principal, method: str, request: Any) -> None:
    """Raises PermissionDenied unless `principal` may call `method` with `request` (None for a
    request stream, whose items are checked one by one)."""
    scopes = RULES.get(method)
    if scopes is None:
        raise PermissionDenied("method not permitted")
    scope = scopes.get(principal.role)
    if scope is None:
        name = method.rsplit("/", 1)[-1]
        raise PermissionDenied(f"role {principal.role.value} may not call {name}")
    if scope is Scope.VENUE:
        problem = _venue_problem(principal, request.venue_id)
    elif scope is Scope.GATE:
        problem = item_allowed(principal, request.venue_id, request.gate_id)
    else:
        return
    if problem is not None:
        raise PermissionDenied(problem)


def item_allowed(principal: Principal, venue_id: str, gate_id: str) -> str | None:
    """Why `principal` may not validate at this venue and gate, or None when it may."""
    if principal.role is Role.ADMIN:
        return None
    if principal.role is not Role.GATE:
        return f"role {principal.role.value} may not validate"
    problem = _venue_problem(principal, venue_id)
    if problem is None and principal.gates and gate_id not in principal.gates:
        problem = "credential not valid for this gate"
    return problem


def _venue_problem(principal: Principal, venue_id: str) -> str | None:
    if principal.role is Role.ADMIN or venue_id in principal.venues:
        return None
    return "credential not valid for this venue"


class DenyList:
    """`revoked.json` ({"jti": [...], "sub": [...]}), re-read when its file changes."""

    def __init__(self, path: Path, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._monotonic = monotonic
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None
        self.jti: frozenset[str] = frozenset()
        self.sub: frozenset[str] = frozenset()

    def refresh(self) -> bool:
        """Looks at the file if 250 ms have passed since the last look; True when it changed."""
        now = self._monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + DENY_CHECK_INTERVAL_S
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self._load()
        return True

    def denies(self, principal: Principal) -> bool:
        return principal.jti in self.jti or principal.sub in self.sub

    def _load(self) -> None:
        if self._stamp is None:
            self.jti, self.sub = frozenset(), frozenset()
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            jti, sub = _strings(data.get("jti", [])), _strings(data.get("sub", []))
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            # Keep the last good list: an unreadable edit must not un-revoke anyone.
            log.error("cannot read %s, keeping the previous deny-list: %s", self.path.name, exc)
            return
        self.jti, self.sub = jti, sub


def _stamp(path: Path) -> tuple[int, int, int] | None:
    # The inode too: ops/credentials.py replaces the file by rename, possibly within one mtime tick.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _strings(values: Any) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("expected a list of strings")
    return frozenset(values)


class Authenticator:
    """Verifies bearer tokens against the signing key and the deny-list."""

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        deny: DenyList,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = public_key
        self._deny = deny
        self._clock = clock
        self._cache: dict[str, Principal] = {}

    @classmethod
    def from_dir(cls, creds_dir: Path) -> Authenticator:
        key = load_pem_public_key((creds_dir / SIGNING_PUB).read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{SIGNING_PUB} is not an Ed25519 public key")
        return cls(key, DenyList(creds_dir / REVOKED))

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        """The principal of the call's bearer token; raises Unauthenticated."""
        return self.verify(_bearer(metadata))

    def verify(self, token: str) -> Principal:
        if self._deny.refresh():
            self._cache.clear()
        principal = self._cache.get(token)
        if principal is None:
            principal = self._decode(token)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[token] = principal
        self._still_valid(principal)
        return principal

    def recheck(self, principal: Principal) -> None:
        """For a long call: raises Unauthenticated once its token expired or was revoked."""
        self._deny.refresh()
        self._still_valid(principal)

    def _still_valid(self, principal: Principal) -> None:
        if principal.exp <= self._clock():
            raise Unauthenticated("credential expired")
        if self._deny.denies(principal):
            raise Unauthenticated("credential revoked")

    def _decode(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid credential")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                # Expiry is checked on every call (cached tokens too) by _still_valid; the issue
                # time is informational, so an issuer's clock running ahead does not lock gates out.
                options={
                    "require": ["sub", "exp", "iat", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
                leeway=CLOCK_SKEW_S,
            )
            return _principal(claims)
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            raise Unauthenticated("invalid credential") from None


def _principal(claims: dict[str, Any]) -> Principal:
    role = Role(claims["role"])
    venues = _claim_list(claims.get("venues", []))
    gates = _claim_list(claims.get("gates", []))
    if role is Role.GATE and len(venues) != 1:
        raise ValueError("a gate token names exactly one venue")
    if role is not Role.GATE and gates:
        raise ValueError("only a gate token names gates")
    for name in ("sub", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise ValueError(f"{name} must be a non-empty string")
    return Principal(
        sub=claims["sub"],
        role=role,
        venues=venues,
        gates=gates,
        jti=claims["jti"],
        exp=float(claims["exp"]),
    )


def _claim_list(values: Any) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ValueError("expected a list of ids")
    return frozenset(values)


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key != "authorization":
            continue
        scheme, _, token = str(value).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        return token.strip()
    raise Unauthenticated("missing credential: send 'authorization: Bearer <token>'")


@dataclass(frozen=True, slots=True)
class _Caller:
    principal: Principal
    authenticator: Authenticator


_CALLER: ContextVar[_Caller | None] = ContextVar("passgate_caller", default=None)


def bind(principal: Principal, authenticator: Authenticator) -> None:
    """Makes `principal` the caller of the running call (each call runs in its own task)."""
    _CALLER.set(_Caller(principal, authenticator))


def caller() -> Principal:
    """The running call's principal. Unbound only if a servicer is called around the error map's
    wrapper: refuse rather than assume anything."""
    bound = _CALLER.get()
    if bound is None:
        raise Unauthenticated("missing credential")
    return bound.principal


def recheck_caller() -> Principal:
    """The running call's principal, re-checked against expiry and the deny-list (streams)."""
    bound = _CALLER.get()
    if bound is None:
        raise Unauthenticated("missing credential")
    bound.authenticator.recheck(bound.principal)
    return bound.principal

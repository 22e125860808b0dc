"""Development credentials: a local CA and server certificate for TLS, an Ed25519 token-signing
key, one bearer token per identity, and the deny-list that revokes them.

    python -m ops.credentials init                  # whatever is missing (run_cluster does this)
    python -m ops.credentials issue gate-east --role gate --venue hz-lingyin --gate hz-lingyin-g01
    python -m ops.credentials revoke gate-east      # that token; --sub NAME revokes an identity
    python -m ops.credentials list

Layout of `<data-dir>/credentials/` (or `--credentials DIR`, or `PASSGATE_CREDENTIALS`):
`ca.pem`/`ca.key`, `server.pem`/`server.key`, `token-signing.key`/`.pub`, `tokens/<name>.jwt` and
`revoked.json`. The server re-reads `revoked.json` within 250 ms of a change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from actors.ingress.auth import (
    ALGORITHM,
    CA_CERT,
    CA_KEY,
    REVOKED,
    SERVER_CERT,
    SERVER_KEY,
    SIGNING_KEY,
    SIGNING_PUB,
    TOKENS_DIR,
    Role,
)
from core.config import ConfigError
from core.models import Province
from ops.channels import default_credentials_dir
from ops.qr import DEV_KEY_ID, ensure_dev_issuer_key

CA_DAYS = 3650
SERVER_DAYS = 365
# The default identities' tokens; `init` re-issues one that has less than RENEW_DAYS left.
DEV_TOKEN_DAYS = 365
ISSUE_DAYS = 90
RENEW_DAYS = 7
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DAY_S = 86_400


@dataclass(frozen=True)
class Identity:
    """What one token says: who, which role, which venues and gates."""

    name: str
    role: Role
    venues: tuple[str, ...] = ()
    gates: tuple[str, ...] = ()


def dev_identities(province: Province) -> list[Identity]:
    """admin, card-centre, planner, and an operator and a gate identity per venue."""
    out = [
        Identity("admin", Role.ADMIN),
        Identity("card-centre", Role.CARD_CENTRE),
        Identity("planner", Role.PLANNER),
    ]
    for venue_id in sorted(province.venues):
        out.append(Identity(f"operator-{venue_id}", Role.VENUE_OPERATOR, (venue_id,)))
        out.append(Identity(f"gate-{venue_id}", Role.GATE, (venue_id,)))
    return out


def ensure_dev_credentials(
    creds_dir: Path, province: Province, server_names: Sequence[str] = ()
) -> list[str]:
    """Creates whatever is missing, stale or no longer matching its key; returns what it made."""
    creds_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(creds_dir, 0o700)
    made: list[str] = []
    ca_cert, ca_key = _ensure_ca(creds_dir, made)
    _ensure_server_cert(creds_dir, ca_cert, ca_key, (*SERVER_NAMES, *server_names), made)
    signing = _ensure_signing_key(creds_dir, made)
    issued = 0
    for ident in dev_identities(province):
        if not _token_usable(creds_dir / TOKENS_DIR / f"{ident.name}.jwt", signing):
            issue_token(creds_dir, ident, DEV_TOKEN_DAYS, signing)
            issued += 1
    if issued:
        made.append(f"{issued} token(s) in {TOKENS_DIR}/")
    if not (creds_dir / REVOKED).exists():
        _write_deny_list(creds_dir, set(), set())
        made.append(REVOKED)
    _ensure_qr_issuer(creds_dir, made)
    return made


def _ensure_qr_issuer(creds_dir: Path, made: list[str]) -> None:
    """The signed-QR development issuer key (ops/qr.py owns its format)."""
    key = creds_dir / "qr" / f"{DEV_KEY_ID}.key"
    existed = key.exists()
    ensure_dev_issuer_key(creds_dir)
    if not existed:
        made.append(f"qr/{DEV_KEY_ID}.key")


def summary_line(creds_dir: Path) -> str:
    return (
        f"credentials in {creds_dir} (admin token: {creds_dir / TOKENS_DIR / 'admin.jwt'}, "
        f"CA: {creds_dir / CA_CERT})"
    )


# --- TLS ----------------------------------------------------------------------------------------


def _ensure_ca(
    creds_dir: Path, made: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = creds_dir / CA_CERT, creds_dir / CA_KEY
    loaded = _load_pair(cert_path, key_path)
    if loaded is not None and _days_left(loaded[0]) > 30:
        return loaded
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "passgate development CA")])
    cert = (
        _builder(name, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key)
    made.append(CA_CERT)
    return cert, key


def _ensure_server_cert(
    creds_dir: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    made: list[str],
) -> None:
    cert_path, key_path = creds_dir / SERVER_CERT, creds_dir / SERVER_KEY
    loaded = _load_pair(cert_path, key_path)
    if loaded is not None and _server_cert_fits(loaded[0], ca_cert, names):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "passgate")])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), SERVER_DAYS)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_pair(cert_path, key_path, cert, key)
    made.append(SERVER_CERT)


def _server_cert_fits(
    cert: x509.Certificate, ca_cert: x509.Certificate, names: Sequence[str]
) -> bool:
    """Signed by this CA, not about to expire, and naming every wanted host."""
    try:
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return _days_left(cert) > 30 and set(_san(names)) <= set(san)


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: Any, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _days_left(cert: x509.Certificate) -> float:
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left.total_seconds() / _DAY_S


def _load_pair(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        return None
    return cert, key


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    _write(key_path, _private_pem(key), secret=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _private_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# --- tokens -------------------------------------------------------------------------------------


def _ensure_signing_key(creds_dir: Path, made: list[str]) -> Ed25519PrivateKey:
    key_path, pub_path = creds_dir / SIGNING_KEY, creds_dir / SIGNING_PUB
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, Ed25519PrivateKey):
            pub = _public_pem(key)
            if not pub_path.is_file() or pub_path.read_bytes() != pub:
                _write(pub_path, pub)
            return key
    except (OSError, ValueError):
        pass
    key = Ed25519PrivateKey.generate()
    _write(key_path, _private_pem(key), secret=True)
    _write(pub_path, _public_pem(key))
    made.append(SIGNING_KEY)
    return key


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signing_key(creds_dir: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key((creds_dir / SIGNING_KEY).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{SIGNING_KEY} is not an Ed25519 private key")
    return key


def issue_token(
    creds_dir: Path,
    ident: Identity,
    days: float = ISSUE_DAYS,
    key: Ed25519PrivateKey | None = None,
    now: float | None = None,
) -> Path:
    """Signs a token for `ident` and writes it to tokens/<name>.jwt; returns the path."""
    if not _NAME_RE.fullmatch(ident.name):
        raise ValueError(f"bad identity name {ident.name!r} (letters, digits, . _ -)")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": ident.name,
        "role": ident.role.value,
        "venues": list(ident.venues),
        "gates": list(ident.gates),
        "iat": issued,
        "exp": issued + int(days * _DAY_S),
        "jti": secrets.token_urlsafe(12),
    }
    signed = jwt.encode(claims, key or signing_key(creds_dir), algorithm=ALGORITHM)
    path = creds_dir / TOKENS_DIR / f"{ident.name}.jwt"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    _write(path, signed.encode("ascii") + b"\n", secret=True)
    return path


def read_claims(path: Path, key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    """The claims of a token file; verified when `key` is given (raises jwt.InvalidTokenError)."""
    text = path.read_text(encoding="ascii").strip()
    if key is None:
        return dict(jwt.decode(text, options={"verify_signature": False}))
    return dict(jwt.decode(text, key.public_key(), algorithms=[ALGORITHM]))


def _token_usable(path: Path, key: Ed25519PrivateKey) -> bool:
    try:
        claims = read_claims(path, key)
    except (OSError, ValueError, jwt.InvalidTokenError):
        return False
    return float(claims.get("exp", 0)) - time.time() > RENEW_DAYS * _DAY_S


# --- revocation ---------------------------------------------------------------------------------


def read_deny_list(creds_dir: Path) -> tuple[set[str], set[str]]:
    try:
        data = json.loads((creds_dir / REVOKED).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set(), set()
    return set(data.get("jti", [])), set(data.get("sub", []))


def revoke(creds_dir: Path, jtis: Sequence[str] = (), subs: Sequence[str] = ()) -> None:
    """Adds token ids and identities to the deny-list (one atomic replace of revoked.json)."""
    jti, sub = read_deny_list(creds_dir)
    _write_deny_list(creds_dir, jti | set(jtis), sub | set(subs))


def _write_deny_list(creds_dir: Path, jti: set[str], sub: set[str]) -> None:
    body = json.dumps({"jti": sorted(jti), "sub": sorted(sub)}, indent=1) + "\n"
    _write(creds_dir / REVOKED, body.encode("utf-8"))


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Atomically: a reader (the server) sees the old file or the new one, never a half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- command line -------------------------------------------------------------------------------


def _creds_dir(args: argparse.Namespace) -> Path:
    return Path(args.credentials) if args.credentials else default_credentials_dir(args.data_dir)


def _province(args: argparse.Namespace) -> Province:
    return load_province(args.config)


def _cmd_init(args: argparse.Namespace) -> int:
    creds = _creds_dir(args)
    made = ensure_dev_credentials(creds, _province(args), args.san)
    print(f"created: {', '.join(made)}" if made else "nothing to create")
    print(summary_line(creds))
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    ident = Identity(args.name, Role(args.role), tuple(args.venue), tuple(args.gate))
    problem = _identity_problem(ident, _province(args))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(issue_token(_creds_dir(args), ident, args.ttl_days))
    return 0


def _identity_problem(ident: Identity, province: Province) -> str | None:
    unknown = [v for v in ident.venues if v not in province.venues]
    if unknown:
        return f"unknown venue(s): {', '.join(unknown)}"
    if ident.role is Role.GATE:
        if len(ident.venues) != 1:
            return "a gate identity names exactly one --venue"
        stray = [g for g in ident.gates if g not in province.venues[ident.venues[0]].gates]
        if stray:
            return f"gate(s) not of venue {ident.venues[0]}: {', '.join(stray)}"
    elif ident.gates:
        return "only a gate identity names --gate"
    if ident.role is Role.VENUE_OPERATOR and not ident.venues:
        return "a venue_operator identity names at least one --venue"
    return None


def _cmd_revoke(args: argparse.Namespace) -> int:
    creds = _creds_dir(args)
    jtis = []
    for name in args.tokens:
        path = Path(name) if name.endswith(".jwt") else creds / TOKENS_DIR / f"{name}.jwt"
        jtis.append(str(read_claims(path)["jti"]))
    if not jtis and not args.sub:
        print("error: name a token or give --sub", file=sys.stderr)
        return 2
    revoke(creds, jtis, args.sub)
    for name in args.tokens:
        print(f"revoked token {name}")
    for name in args.sub:
        print(f"revoked every token of {name}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    creds = _creds_dir(args)
    jti, sub = read_deny_list(creds)
    for path in sorted((creds / TOKENS_DIR).glob("*.jwt")):
        c = read_claims(path)
        state = "revoked" if c["jti"] in jti or c["sub"] in sub else "ok"
        if float(c["exp"]) <= time.time():
            state = "expired"
        until = dt.datetime.fromtimestamp(float(c["exp"]), dt.UTC).date().isoformat()
        where = ",".join(c.get("venues", [])) or "-"
        print(f"{path.stem:32} {c['role']:15} {where:24} until {until} {state}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ops.credentials",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--credentials", type=Path, default=None, help="default <data-dir>/credentials")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_DIR, help="config directory")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create whatever is missing")
    init.add_argument("--san", action="append", default=[], help="extra server name or IP")
    issue = sub.add_parser("issue", help="issue a token")
    issue.add_argument("name")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role])
    issue.add_argument("--venue", action="append", default=[])
    issue.add_argument("--gate", action="append", default=[], help="gate role: its gate ids")
    issue.add_argument("--ttl-days", type=float, default=ISSUE_DAYS)
    rev = sub.add_parser("revoke", help="revoke tokens (by name or .jwt path) or identities")
    rev.add_argument("tokens", nargs="*")
    rev.add_argument("--sub", action="append", default=[], help="revoke every token of SUB")
    sub.add_parser("list", help="list issued tokens")
    return p


_COMMANDS = {"init": _cmd_init, "issue": _cmd_issue, "revoke": _cmd_revoke, "list": _cmd_list}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, jwt.InvalidTokenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

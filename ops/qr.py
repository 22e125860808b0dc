"""Signed dynamic QR codes for people at a terminal: mint a code, create and show issuer keys.

python -m ops.qr mint --pass DEMO-ANNUAL                 # prints a fresh code for a pass
python -m ops.qr mint --pass DEMO-ANNUAL --png code.png  # and renders it as a QR image
python -m ops.qr keygen --key app-2027                   # a second issuer key (rotation)
python -m ops.qr pubkey --key app-2027                   # its public key for config/qr_keys.toml

Issuer keys live under `<credentials>/qr/` (`<key_id>.key` private, `<key_id>.pub` public); the
development key `dev1` is created there on the server's first start (`ensure_dev_issuer_key`).
A real issuing app keeps its private key to itself and gives passgate only the public one.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.shard.code_claims import issuer_dir
from core.models import QrPolicy
from core.qr import KEY_ID_RE, encode, step_at

DEV_KEY_ID = "dev1"


class QrToolError(Exception):
    """A problem the operator can fix; printed as one line."""


# -- keys ------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Written whole or not at all (temp file + rename), readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)


def create_issuer_key(qr_dir: Path, key_id: str) -> Path:
    """A new Ed25519 key pair `<key_id>.key` / `<key_id>.pub` in `qr_dir`; refuses to overwrite."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise QrToolError(f"bad key id {key_id[:40]!r} (letters, digits, '.', '_', '-'; <= 32)")
    qr_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = qr_dir / f"{key_id}.key"
    if path.exists():
        raise QrToolError(f"{path} exists already")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem)
    # The public half last: a shard that sees the .pub can rely on the pair being complete.
    _write_public(qr_dir / f"{key_id}.pub", key)
    return path


def ensure_dev_issuer_key(creds_dir: Path) -> Path:
    """The development issuer key `dev1` under `<creds_dir>/qr/`, created when missing
    (idempotent); returns the private key's path."""
    qr_dir = creds_dir / "qr"
    path = qr_dir / f"{DEV_KEY_ID}.key"
    if not path.exists():
        return create_issuer_key(qr_dir, DEV_KEY_ID)
    pub = qr_dir / f"{DEV_KEY_ID}.pub"
    if not pub.exists():
        _write_public(pub, load_private_key(path))
    return path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise QrToolError(f"no issuer key {path}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise QrToolError(f"cannot read issuer key {path}: {str(exc)[:80]}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise QrToolError(f"{path} is not an Ed25519 private key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The raw public key as config/qr_keys.toml takes it (base64url, no padding)."""
    return base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()


# -- minting ---------------------------------------------------------------------------------


def mint(key: Ed25519PrivateKey, key_id: str, pass_id: str, at_ms: int, policy: QrPolicy) -> str:
    """The code a holder's app would show at `at_ms` for a product with `policy`."""
    try:
        return encode(key, key_id, pass_id, step_at(at_ms, policy))
    except ValueError as exc:
        raise QrToolError(str(exc)) from None


def _instant_ms(text: str | None) -> int:
    if text is None:
        return time.time_ns() // 1_000_000
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise QrToolError(f"--at: not an ISO date-time: {text[:40]!r}") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return int(instant.timestamp() * 1000)


def _policy_of(pass_id: str, data_dir: Path, config_dir: Path | None) -> QrPolicy | None:
    """The QR policy of the pass's product, from the node's catalog and the config; None when
    either cannot tell (another node, a pass not imported yet)."""
    from actors.catalog import CatalogReader, catalog_path
    from actors.config_files import DEFAULT_CONFIG_DIR, load_province

    path = catalog_path(data_dir)
    if not (path / "data.mdb").exists():
        return None
    try:
        reader = CatalogReader(path)
        try:
            record = reader.get(pass_id)
        finally:
            reader.close()
        product = load_province(config_dir or DEFAULT_CONFIG_DIR).products.get(
            record.product_id if record else ""
        )
    except Exception:  # an unreadable catalog or config only means "use the default step"
        return None
    return product.qr if product is not None else None


def _render_png(code: str, path: Path) -> None:
    import segno

    segno.make_qr(code, error="m").save(str(path), scale=6, border=4)


def _mint_cmd(args: argparse.Namespace) -> int:
    qr_dir = issuer_dir(args.data_dir, args.credentials)
    key = load_private_key(qr_dir / f"{args.key}.key")
    policy = _policy_of(args.pass_id, args.data_dir, args.config)
    if args.step_seconds is not None:
        policy = QrPolicy(step_seconds=args.step_seconds)
    elif policy is None:
        policy = QrPolicy()
        print(
            f"note: pass not found in {args.data_dir}'s catalog; "
            f"using a {policy.step_seconds} s step (--step-seconds to choose)",
            file=sys.stderr,
        )
    code = mint(key, args.key, args.pass_id, _instant_ms(args.at), policy)
    print(code)
    if args.png is not None:
        _render_png(code, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _keygen_cmd(args: argparse.Namespace) -> int:
    path = create_issuer_key(issuer_dir(args.data_dir, args.credentials), args.key)
    print(f"created {path} and {path.with_suffix('.pub')}")
    return 0


def _pubkey_cmd(args: argparse.Namespace) -> int:
    key = load_private_key(issuer_dir(args.data_dir, args.credentials) / f"{args.key}.key")
    print(public_key_b64(key))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=Path("data"), help="server data dir")
    common.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="credentials directory (default: $PASSGATE_CREDENTIALS or <data-dir>/credentials)",
    )
    m = sub.add_parser("mint", parents=[common], help="print a fresh signed code for a pass")
    m.add_argument("--pass", dest="pass_id", required=True, help="pass id")
    m.add_argument("--key", default=DEV_KEY_ID, help="issuer key id (default: dev1)")
    m.add_argument("--at", default=None, help="issue instant, ISO 8601 (default: now)")
    m.add_argument("--png", type=Path, default=None, help="also write the code as a PNG image")
    m.add_argument(
        "--step-seconds",
        type=int,
        default=None,
        help="the product's qr.step_seconds (default: looked up through the catalog, else 30)",
    )
    m.add_argument("--config", type=Path, default=None, help="config directory (for the step)")
    m.set_defaults(run=_mint_cmd)
    k = sub.add_parser("keygen", parents=[common], help="create a new issuer key pair")
    k.add_argument("--key", required=True, help="key id")
    k.set_defaults(run=_keygen_cmd)
    pk = sub.add_parser("pubkey", parents=[common], help="print a key's public half (base64)")
    pk.add_argument("--key", default=DEV_KEY_ID, help="key id (default: dev1)")
    pk.set_defaults(run=_pubkey_cmd)
    args = p.parse_args(argv)
    if getattr(args, "step_seconds", None) is not None and args.step_seconds < 1:
        p.error("--step-seconds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.run(args))
    except QrToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

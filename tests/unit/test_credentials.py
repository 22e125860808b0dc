"""ops/credentials.py and ops/channels.py: the development credentials are complete, consistent,
private and idempotent; issue validates identities against the config; revoke lands in the
deny-list the server reads; clients find the files."""

from __future__ import annotations

import ipaddress
import json
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from actors.config_files import load_province
from actors.errors import Unauthenticated
from actors.ingress.auth import Authenticator, DenyList, Role
from core.models import Province
from ops import channels, credentials
from ops.credentials import Identity, ensure_dev_credentials, issue_token

TEST_PROVINCE = Path(__file__).resolve().parents[1] / "e2e" / "province"


@pytest.fixture(scope="module")
def province() -> Province:
    return load_province(TEST_PROVINCE)


@pytest.fixture
def creds(tmp_path: Path, province: Province) -> Path:
    out = tmp_path / "credentials"
    ensure_dev_credentials(out, province)
    return out


def authenticator(creds: Path) -> Authenticator:
    return Authenticator.from_dir(creds)


def bearer(path: Path) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {path.read_text().strip()}")]


def test_every_default_identity_gets_a_token_the_server_accepts(
    creds: Path, province: Province
) -> None:
    authn = authenticator(creds)
    names = {p.stem for p in (creds / "tokens").glob("*.jwt")}
    venues = sorted(province.venues)
    assert names == {"admin", "card-centre", "planner"} | {
        f"{kind}-{v}" for v in venues for kind in ("gate", "operator")
    }
    gate = authn.authenticate(bearer(creds / "tokens" / f"gate-{venues[0]}.jwt"))
    assert (gate.role, gate.venues, gate.gates) == (Role.GATE, frozenset({venues[0]}), frozenset())
    op = authn.authenticate(bearer(creds / "tokens" / f"operator-{venues[1]}.jwt"))
    assert (op.role, op.venues) == (Role.VENUE_OPERATOR, frozenset({venues[1]}))
    assert authn.authenticate(bearer(creds / "tokens" / "card-centre.jwt")).role is Role.CARD_CENTRE


def test_private_files_are_private(creds: Path) -> None:
    for name in ("ca.key", "server.key", "token-signing.key", "tokens/admin.jwt"):
        assert stat.S_IMODE((creds / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700


def test_the_server_certificate_is_signed_by_the_ca_for_loopback_names(creds: Path) -> None:
    ca = x509.load_pem_x509_certificate((creds / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((creds / "server.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_a_second_run_changes_nothing(creds: Path, province: Province) -> None:
    before = {p: p.read_bytes() for p in creds.rglob("*") if p.is_file()}
    assert ensure_dev_credentials(creds, province) == []
    assert {p: p.read_bytes() for p in creds.rglob("*") if p.is_file()} == before


def test_whatever_is_missing_or_stale_is_made_again(creds: Path, province: Province) -> None:
    (creds / "tokens" / "admin.jwt").unlink()
    issue_token(creds, Identity("planner", Role.PLANNER), days=1)  # about to expire
    ca_before = (creds / "ca.pem").read_bytes()
    made = ensure_dev_credentials(creds, province, ["passgate.internal"])
    assert made == ["server.pem", "2 token(s) in tokens/"]
    assert (creds / "ca.pem").read_bytes() == ca_before
    cert = x509.load_pem_x509_certificate((creds / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "passgate.internal" in san.get_values_for_type(x509.DNSName)


def test_a_new_signing_key_reissues_every_token(creds: Path, province: Province) -> None:
    (creds / "token-signing.key").unlink()
    made = ensure_dev_credentials(creds, province)
    assert "token-signing.key" in made
    authn = authenticator(creds)
    for path in (creds / "tokens").glob("*.jwt"):
        authn.authenticate(bearer(path))


def test_a_new_ca_reissues_the_server_certificate(creds: Path, province: Province) -> None:
    (creds / "ca.key").unlink()
    made = ensure_dev_credentials(creds, province)
    assert made[:2] == ["ca.pem", "server.pem"]
    ca = x509.load_pem_x509_certificate((creds / "ca.pem").read_bytes())
    x509.load_pem_x509_certificate((creds / "server.pem").read_bytes()).verify_directly_issued_by(
        ca
    )


def test_revoke_by_token_name_and_by_identity(creds: Path) -> None:
    authn = Authenticator.from_dir(creds)
    deny = DenyList(creds / "revoked.json", monotonic=lambda: 0.0)
    gate = creds / "tokens" / "gate-t-lake.jwt"
    planner = creds / "tokens" / "planner.jwt"
    assert credentials.main(["--credentials", str(creds), "revoke", "gate-t-lake"]) == 0
    assert credentials.main(["--credentials", str(creds), "revoke", "--sub", "planner"]) == 0
    data = json.loads((creds / "revoked.json").read_text())
    assert data["sub"] == ["planner"] and len(data["jti"]) == 1
    deny.refresh()
    for path in (gate, planner):
        who = Authenticator(authn._key, DenyList(creds / "revoked.json")).authenticate
        with pytest.raises(Unauthenticated, match="revoked"):
            who(bearer(path))
    # A re-issued gate token has a new jti and works; the revoked identity stays revoked.
    issue_token(creds, Identity("gate-t-lake", Role.GATE, ("t-lake",)))
    fresh = Authenticator(authn._key, DenyList(creds / "revoked.json"))
    assert fresh.authenticate(bearer(gate)).sub == "gate-t-lake"


@pytest.mark.parametrize(
    ("argv", "ok"),
    [
        pytest.param(["g1", "--role", "gate", "--venue", "t-lake"], True, id="gate"),
        pytest.param(
            ["g2", "--role", "gate", "--venue", "t-lake", "--gate", "t-lake-g01"], True, id="gates"
        ),
        pytest.param(["g3", "--role", "gate"], False, id="gate-no-venue"),
        pytest.param(["g4", "--role", "gate", "--venue", "nowhere"], False, id="unknown-venue"),
        pytest.param(
            ["g5", "--role", "gate", "--venue", "t-lake", "--gate", "t-hard-g01"],
            False,
            id="gate-of-other-venue",
        ),
        pytest.param(["o1", "--role", "venue_operator"], False, id="operator-no-venue"),
        pytest.param(["p1", "--role", "planner", "--gate", "t-lake-g01"], False, id="gates"),
        pytest.param(["../evil", "--role", "admin"], False, id="bad-name"),
    ],
)
def test_issue_checks_the_identity_against_the_config(
    creds: Path, argv: list[str], ok: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--credentials", str(creds), "--config", str(TEST_PROVINCE), "issue"]
    code = credentials.main([*base, *argv])
    assert (code == 0) == ok, capsys.readouterr()
    assert (creds / "tokens" / f"{argv[0]}.jwt").is_file() == ok


def test_an_issued_token_expires_when_asked(creds: Path) -> None:
    path = issue_token(creds, Identity("short", Role.PLANNER), days=1, now=time.time() - 2 * 86400)
    with pytest.raises(Unauthenticated, match="expired"):
        authenticator(creds).authenticate(bearer(path))


def test_clients_find_the_credentials(
    creds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(channels.ENV_CREDENTIALS, raising=False)
    assert channels.default_credentials_dir() == Path("data") / "credentials"
    assert channels.default_credentials_dir(tmp_path) == tmp_path / "credentials"
    monkeypatch.setenv(channels.ENV_CREDENTIALS, str(creds))
    assert channels.default_credentials_dir(tmp_path) == creds
    admin = (creds / "tokens" / "admin.jwt").read_text().strip()
    assert channels.token() == admin
    assert channels.token(str(creds / "tokens" / "admin.jwt")) == admin
    with channels.channel("127.0.0.1:1") as ch:  # builds TLS + token credentials, no call made
        assert ch is not None

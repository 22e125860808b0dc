"""The committed generated code must match what `make proto` would write now."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto.generate import PROTO_DIR, ROOT, generate


def _generated(directory: Path) -> dict[str, str]:
    return {
        p.name: p.read_text()
        for p in directory.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = _generated(tmp_path / PROTO_DIR.relative_to(ROOT))
    committed = _generated(PROTO_DIR)
    assert fresh, "protoc generated nothing"
    stale = sorted(
        name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name)
    )
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


@pytest.mark.parametrize("proto", ["common", "gate", "passes", "quota"])
def test_every_proto_has_generated_code(proto: str) -> None:
    assert (PROTO_DIR / f"{proto}_pb2.py").exists()


def test_reason_enum_mirrors_core() -> None:
    from core.models import AlertLevel, Reason
    from proto.passgate.v1 import common_pb2

    assert {r.name: int(r) for r in Reason} == {
        n.removeprefix("REASON_"): v for n, v in common_pb2.Reason.items()
    }
    assert {a.name: int(a) for a in AlertLevel} == {
        n.removeprefix("ALERT_LEVEL_"): v for n, v in common_pb2.AlertLevel.items()
    }

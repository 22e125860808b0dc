"""`make fuzz` in miniature: a few hundred hostile inputs of every kind against a passgate the
campaign starts itself, with the canary gates alongside. Asserts the verdict's fields (nothing
crashed, no canary harmed, no forbidden status or leaking text, no state changed by invalid
input), never speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtest.fuzz import FuzzConfig, run_fuzz
from loadtest.fuzz_source import WEIGHTS

pytestmark = pytest.mark.e2e

COUNT = 400
# Kinds that name a method in their category instead ("GetPass_hostile"...), and hijacks, which
# fall back to a hostile Annul until a canary call has been answered.
_NAMED_BY_METHOD = {"passes_hostile", "quota_hostile", "annul_hostile", "hijack"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = FuzzConfig(
        count=COUNT,
        duration_s=120.0,  # a safety bound only: the run ends at COUNT inputs
        min_count=COUNT,
        concurrency=16,
        rate=200.0,
        canary_rate=20.0,
        results_dir=tmp_path_factory.mktemp("fuzz-results"),
        quiet=True,
    )
    return run_fuzz(cfg)


def _assert_ok(report: dict[str, Any], *names: str) -> None:
    failed = {n: report["checks"][n]["samples"][:3] for n in names if not report["checks"][n]["ok"]}
    assert not failed, failed


def test_every_kind_of_input_was_tried(report: dict[str, Any]) -> None:
    tried = report["tried"]
    assert tried["total"] == COUNT
    kinds = set(tried["by_category"])
    assert set(WEIGHTS) - _NAMED_BY_METHOD <= kinds
    assert any(k.endswith("_hostile") for k in kinds)
    answered = sum(report["answers_by_code"].values())
    assert answered + sum(report["transport_outcomes"].values()) == COUNT
    assert report["items_inside_calls"] > 0


def test_server_survived_and_canary_unharmed(report: dict[str, Any]) -> None:
    _assert_ok(report, "server_alive", "canary_unharmed")
    canary = report["canary"]
    assert canary["calls"] > 0 and canary["ok"] == canary["calls"]


def test_no_forbidden_status_hang_or_leak(report: dict[str, Any]) -> None:
    _assert_ok(report, "no_forbidden_status", "every_call_answered", "no_leaks")
    assert {"UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED"}.isdisjoint(report["answers_by_code"])


def test_invalid_inputs_refused_and_fail_alone(report: dict[str, Any]) -> None:
    _assert_ok(
        report,
        "invalid_refused",
        "expected_status",
        "items_fail_alone",
        "imports_per_record",
        "no_foreign_effect",
    )


def test_no_state_changed_by_invalid_input(report: dict[str, Any]) -> None:
    _assert_ok(
        report,
        "trap_state_unchanged",
        "canary_state_exact",
        "occupancy_not_lowered",
        "mix_passes_unchanged",
    )


def test_verdict_and_file(report: dict[str, Any]) -> None:
    failed = [name for name, check in report["checks"].items() if not check["ok"]]
    assert report["failures"] == failed
    assert report["verdict"] == ("PASS" if not failed else "FAIL")
    on_disk = orjson.loads(Path(report["file"]).read_bytes())
    assert on_disk["checks"] == report["checks"]
    assert Path(report["file"]).name.startswith("fuzz-")

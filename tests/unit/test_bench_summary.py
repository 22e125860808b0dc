"""The `make bench` summary (bench.transport.summary_markdown) says how many of its runs had a
valid instrument, rather than a legend that reads as a verdict."""

from __future__ import annotations

from typing import Any

from bench.transport import summary_markdown


def _run(label: str, valid: bool, echo_p99: float) -> dict[str, Any]:
    lat = {"p50": 1.0, "p99": 2.0, "p99_9": 3.0}
    side = {"latency_ms": lat, "throughput_per_s": 1000.0, "highest_passing_rate": None}
    return {
        "label": label,
        "passgate": side,
        "echo": side,
        "ratio_highest_rate": None,
        "ratio_throughput": 1.0,
        "instrument": {"valid": valid, "echo_p99_ms": echo_p99},
    }


def test_the_summary_counts_the_runs_whose_instrument_was_valid() -> None:
    text = summary_markdown({"runs": [_run("unary", True, 2.9), _run("batch", False, 5.6)]})
    assert "| batch | 1.00 / 2.00 / 3.00 |" in text
    assert "**INVALID** (echo p99 5.60 ms)" in text
    assert "Instrument valid in 1 of 2 runs" in text
    all_valid = summary_markdown({"runs": [_run("unary", True, 2.9)]})
    assert "Instrument valid in 1 of 1 runs" in all_valid

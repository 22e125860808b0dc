"""The `make bench` summary (bench.transport.summary_markdown) says how many of its runs had a
valid instrument, rather than a legend that reads as a verdict, and carries the booking rows."""

from __future__ import annotations

from typing import Any

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from bench import booking
from bench.transport import runs, summary_markdown
from loadtest.config import LoadConfig
from loadtest.reservations import current_slot


def _run(label: str, valid: bool, echo_p99: float) -> dict[str, Any]:
    lat = {"p50": 1.0, "p99": 2.0, "p99_9": 3.0}
    side = {
        "latency_ms": lat,
        "throughput_per_s": 1000.0,
        "errors": 0,
        "highest_passing_rate": None,
    }
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


def _stepped(label: str, ours: float | None, theirs: float) -> dict[str, Any]:
    row = _run(label, True, 2.0)
    row["passgate"] = {**row["passgate"], "highest_passing_rate": ours}
    row["echo"] = {**row["echo"], "highest_passing_rate": theirs}
    row["ratio_highest_rate"] = (ours or 0.0) / theirs
    return row


def test_each_run_is_judged_against_its_issue_9_target() -> None:
    unary, batch, search, stream = runs(10.0)
    fast, slow = _run("unary", True, 2.0), _run("unary", True, 2.0)
    slow["passgate"] = {**slow["passgate"], "latency_ms": {"p50": 5.0, "p99": 21.0, "p99_9": 30.0}}
    assert unary.target.met(fast) and not unary.target.met(slow)
    assert batch.target.met(fast) and not batch.target.met(slow)
    # The batch search climbs to exactly the target, so only its top stair passing meets it.
    top = search.settings["rate"] * search.settings["step_factor"] ** 8
    assert round(top, 6) == 20_000.0
    assert search.target.met(_stepped("search", round(top, 1), 20_000.0))
    assert not search.target.met(_stepped("search", 16_000.0, 20_000.0))
    assert not search.target.met(_stepped("search", None, 20_000.0))
    assert stream.target.met(_stepped("stream", 1_800.0, 2_384.0))
    assert not stream.target.met(_stepped("stream", 1_221.0, 2_384.0))


def test_the_summary_says_met_or_missed_beside_each_target() -> None:
    _, batch, search, _ = runs(10.0)
    met = {**_run("batch", True, 2.0), "target": batch.target.text, "target_met": True}
    missed = {
        **_stepped("search", 4_194.0, 20_000.0),
        "target": search.target.text,
        "target_met": False,
    }
    text = summary_markdown({"runs": [met, missed]})
    assert "| p99 <= 20 ms: met |" in text
    assert "highest stair with p99 <= 20 ms >= 20,000/s: **missed** |" in text


def test_the_booking_rows_join_the_summary_and_the_rush_takes_an_empty_later_slot() -> None:
    figures = booking.Figures("Reserve, booking rush", 3, 1, 2.0, [1.0, 2.0, 40.0], "3 confirmed")
    row = figures.row()
    assert (row["per_s"], row["p50_ms"], row["p99_ms"]) == (1.5, 2.0, 40.0)
    text = summary_markdown({"runs": [_run("unary", True, 2.9)], "booking": [row]})
    assert "| Reserve, booking rush | 3 | 1 | 2 | 2.00 | 40.00 | 3 confirmed |" in text
    province = load_province(DEFAULT_CONFIG_DIR)
    at = LoadConfig().sim_instant(province)
    venue_id, date, slot_id, capacity = booking._museum(province, at)
    venue = province.venues[venue_id]
    assert venue.reservation_required and date == at.astimezone(venue.tz).date().isoformat()
    assert slot_id == max(venue.slots, key=lambda s: s.start_min).slot_id
    assert current_slot(venue, at) != (date, slot_id)  # not the one the load runs book
    assert capacity < booking.RUSH_CALLS  # the rush outnumbers it: filled exactly, or broken

"""The transport comparison of `make bench`: every passgate figure next to the same generator's
figure against the bare echo server (bench/echo_server.py) at the same rate, with the same TLS
certificate, token check and process count, and whether the instrument was valid (the
generator's own p99 against echo within loadtest.report.INSTRUMENT_P99_LIMIT_MS).

One self-started passgate (2 shards, 1 ingress process, its clock starting at 10:00 on a peak
day and running as in service, 100,000 imported passes) carries the load runs of issue 9's
targets in turn:

- unary, flat 1,000/s (write path: the load test's mix);
- batch, 5,000 decisions/s at 100 per call;
- batch, step search at 100 per call whose top stair is 20,000 decisions/s (x1.25 per stair),
  for issue 9's "highest batch rate with p99 <= 20 ms";
- stream, step search from 500/s (x1.25 per stair);

Each row also says whether issue 9's target for it was met (`Run.target`).

then, on the same passgate, a booking rush, a status poll and pass look-ups (bench/booking.py: the
per-request calls that are not validations); then h2load (an independent C generator, one prepared
dry-run Validate) against passgate and the echo server, one process each, for the dry-run ratio;
then a 5,000-call burst with a 200 ms deadline (loadtest.burst, its own passgate with the test
province) and the same burst against the echo server. Each load run writes its own
results/<profile>-<mode>-<time>.{json,md,png}; the summary goes to
results/bench-transport-<time>.{json,md}.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from actors.config_files import DEFAULT_CONFIG_DIR, load_province
from bench import booking, h2load_check
from bench.echo_server import running_echo
from core.models import CredentialKind
from core.population import credential_of
from loadtest import burst
from loadtest.client import ClientAuth
from loadtest.config import LoadConfig
from loadtest.mix import build_plan, pick_pass
from loadtest.population import build_population
from loadtest.report import instrument_line
from loadtest.run import run_load
from loadtest.server import running_passgate

PASSES = 100_000
SEED = 20261001
RESULTS = Path("results")
BURST_CALLS = 5_000
BURST_DEADLINE_MS = 200
H2LOAD = {"requests": 20_000, "clients": 4, "streams": 16}
SLO_MS = LoadConfig.slo_ms  # the load test's objective
# The batch step search climbs x1.25 a stair to exactly this rate, so that passing the top stair
# is passing the target.
BATCH_TARGET_PER_S = 20_000.0
BATCH_STAIRS = 9
STEP_FACTOR = 1.25
STREAM_TARGET_RATIO = 0.7


@dataclass(frozen=True)
class Target:
    """Issue 9's target for one load run: `text` says it, `met` judges a result row."""

    text: str
    met: Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Run:
    label: str
    settings: dict[str, Any]
    target: Target


def _latency_met(p99_ms: float, p99_9_ms: float | None = None) -> Target:
    text = f"p99 <= {p99_ms:g} ms" + (f", p99.9 <= {p99_9_ms:g} ms" if p99_9_ms else "")

    def met(row: dict[str, Any]) -> bool:
        ours = row["passgate"]
        lat = ours["latency_ms"]
        return (
            ours["errors"] == 0
            and lat["p99"] <= p99_ms
            and (p99_9_ms is None or lat["p99_9"] <= p99_9_ms)
        )

    return Target(text, met)


def _rate_met(rate: float) -> Target:
    def met(row: dict[str, Any]) -> bool:
        return (row["passgate"]["highest_passing_rate"] or 0.0) >= rate - 0.5

    return Target(f"highest stair with p99 <= {SLO_MS:g} ms >= {rate:,.0f}/s", met)


def _ratio_met(ratio: float) -> Target:
    def met(row: dict[str, Any]) -> bool:
        return (row["ratio_highest_rate"] or 0.0) >= ratio

    return Target(f">= {ratio:g}x the echo server's highest stair", met)


def runs(seconds: float) -> list[Run]:
    """Issue 9's loads; `seconds` is the step searches' stair and half the flat runs' length."""
    stair = float(max(1, round(seconds)))
    return [
        Run(
            "unary, flat 1,000/s, write path",
            {"mode": "unary", "profile": "flat", "rate": 1000.0, "duration_s": 2 * seconds},
            _latency_met(SLO_MS, 50.0),
        ),
        Run(
            "batch, 5,000 decisions/s, 100 per call",
            {
                "mode": "batch",
                "profile": "flat",
                "rate": 5000.0,
                "batch_size": 100,
                "duration_s": 2 * seconds,
            },
            _latency_met(SLO_MS),
        ),
        Run(
            f"batch, step search to {BATCH_TARGET_PER_S:,.0f} decisions/s, 100 per call",
            {
                "mode": "batch",
                "profile": "step",
                "rate": BATCH_TARGET_PER_S / STEP_FACTOR ** (BATCH_STAIRS - 1),
                "step_factor": STEP_FACTOR,
                "batch_size": 100,
                "step_s": stair,
                "duration_s": BATCH_STAIRS * stair,
            },
            _rate_met(BATCH_TARGET_PER_S),
        ),
        Run(
            "stream, step search from 500/s",
            {
                "mode": "stream",
                "profile": "step",
                "rate": 500.0,
                "step_factor": STEP_FACTOR,
                "step_s": stair,
                "duration_s": 8 * stair,
            },
            _ratio_met(STREAM_TARGET_RATIO),
        ),
    ]


def compare(seconds: float = 10.0, only: str | None = None) -> str:
    """Runs everything; returns the summary as markdown (and writes it to results/).
    `only`: run just the load runs whose mode is `only` (no h2load, no burst)."""
    started = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with _passgate() as (target, creds, start):
        for run in runs(seconds):
            if only is not None and run.settings["mode"] != only:
                continue
            # The first run imports the population; the others find it there.
            rows.append(_load_row(run, target, creds, start, imported=bool(rows)))
        if only is None:
            extra["booking"] = booking.run(target, ClientAuth(creds), datetime.fromisoformat(start))
            extra["h2load"] = _h2load(target, ClientAuth(creds))
    if only is None:
        extra["burst"] = _burst()
    doc = {"started_at": started.isoformat(timespec="seconds"), "runs": rows, **extra}
    text = summary_markdown(doc)
    _save(doc, text, started)
    return text


@contextlib.contextmanager
def _passgate() -> Iterator[tuple[str, Path, str]]:
    """A passgate for the load runs: (target, credentials directory, the instant its clock
    started at)."""
    province = load_province(DEFAULT_CONFIG_DIR)
    start = LoadConfig().sim_instant(province).isoformat()
    # Per-caller rate off: the booking rows measure the path (bench/booking.py).
    args = ["--shards", "2", "--clock-start", start, *booking.UNLIMITED]
    with tempfile.TemporaryDirectory(prefix="passgate-bench-") as home:
        creds = Path(home) / "credentials"
        with running_passgate(args, DEFAULT_CONFIG_DIR, credentials=creds) as server:
            yield server.target, creds, start


def _load_row(run: Run, target: str, creds: Path, start: str, imported: bool) -> dict[str, Any]:
    print(f"\n== {run.label}: passgate, then the echo server ==", flush=True)
    cfg = LoadConfig(
        target=target,
        credentials=creds,
        sim_start=start,
        passes=PASSES,
        import_passes=not imported,
        echo_baseline=True,
        results_dir=RESULTS,
        **run.settings,
    )
    report = run_load(cfg)
    tr, lat = report["transport"], report["latency_ms"]
    step = report.get("step") or {}
    row = {
        "label": run.label,
        "passgate": {
            "latency_ms": lat,
            "throughput_per_s": report["totals"]["throughput_per_s"],
            "errors": report["totals"]["errors"],
            "highest_passing_rate": step.get("highest_passing_rate"),
        },
        "echo": {
            "latency_ms": tr["echo"]["latency_ms"],
            "throughput_per_s": tr["echo"]["throughput_per_s"],
            "errors": tr["echo"]["errors"],
            "highest_passing_rate": tr["echo"].get("highest_passing_rate"),
        },
        "ratio_highest_rate": tr.get("ratio_highest_rate"),
        "ratio_throughput": tr["ratio_throughput"],
        "instrument": report["instrument"],
        "instrument_line": instrument_line(report),
        "files": report.get("files", {}),
        "target": run.target.text,
    }
    row["target_met"] = run.target.met(row)
    return row


def _dry_run_body() -> bytes:
    """One prepared dry-run Validate of a real imported pass at the most popular venue."""
    province = load_province(DEFAULT_CONFIG_DIR)
    today = LoadConfig().sim_instant(province).date().toordinal()
    index, _ = build_population(
        PASSES, SEED, today, DEFAULT_CONFIG_DIR, None, 1, show_progress=False
    )
    plan = build_plan(province, index, SEED)
    venue = next(v for v in plan.venues if v.products and not v.needs_reservation)
    pass_index = pick_pass(plan, venue, random.Random(SEED))
    assert pass_index is not None
    card = credential_of(pass_index, CredentialKind.CARD)
    return h2load_check.prepared_request(venue.venue_id, venue.gates[0], card)


def _h2load(target: str, auth: ClientAuth) -> dict[str, Any]:
    if h2load_check.h2load_command() is None:
        return {"skipped": f"{h2load_check.MISSING}: no dry-run ratio"}
    print("\n== h2load: dry-run Validate, passgate then echo (1 process each) ==", flush=True)
    body = _dry_run_body()
    load = (H2LOAD["requests"], H2LOAD["clients"], H2LOAD["streams"], body, auth)
    ours = h2load_check.run(target, *load)
    echo = h2load_check.against_echo(1, *load)
    a, b = h2load_check.requests_per_s(ours), h2load_check.requests_per_s(echo)
    return {
        **H2LOAD,
        "passgate_req_per_s": a,
        "echo_req_per_s": b,
        "ratio": round(a / b, 3) if a and b else None,
        "warnings": [w.strip() for w in (h2load_check.refusal_warning(ours),) if w],
    }


def _burst() -> dict[str, Any]:
    print(f"\n== burst: {BURST_CALLS:,} calls, {BURST_DEADLINE_MS} ms deadline ==", flush=True)
    args = ["--shards", "2", "--frozen-clock", burst.FROZEN]
    with running_passgate(args, burst.TEST_PROVINCE) as server:
        ours = burst.run_burst(
            server.target, BURST_CALLS, BURST_DEADLINE_MS, auth=server.auth(), check=True
        )
        with running_echo(1, credentials=server.credentials_dir) as echo:
            auth = ClientAuth(echo.credentials, "admin", echo.insecure)
            theirs = burst.run_burst(
                echo.target, BURST_CALLS, BURST_DEADLINE_MS, auth=auth, check=False
            )
    return {
        "calls": BURST_CALLS,
        "deadline_ms": BURST_DEADLINE_MS,
        "passgate": _burst_dict(ours),
        "echo": _burst_dict(theirs),
        "promises_kept": ours.promises_kept,
        "passgate_line": ours.line(),
        "echo_line": theirs.line(checked=False),
    }


def _burst_dict(result: burst.BurstResult) -> dict[str, Any]:
    return {
        "answered_in_time": result.answered_in_time,
        "codes": dict(result.codes),
        "refused_but_committed": result.refused_but_committed,
        "admitted_but_missing": result.admitted_but_missing,
        "elapsed_s": round(result.elapsed_s, 3),
    }


def _ms(lat: dict[str, float]) -> str:
    return f"{lat['p50']:.2f} / {lat['p99']:.2f} / {lat['p99_9']:.2f}"


def summary_markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# passgate vs the bare echo server (same generator, rate, TLS and token)",
        "",
        "| load | passgate p50 / p99 / p99.9 ms | echo p50 / p99 / p99.9 ms | passgate / echo "
        "| instrument | issue 9 target |",
        "|---|---|---|---|---|---|",
    ]
    for row in doc["runs"]:
        ours, theirs, ins = row["passgate"], row["echo"], row["instrument"]
        if row["ratio_highest_rate"] is not None:
            ratio = (
                f"highest stair with p99 <= 20 ms: {ours['highest_passing_rate'] or 0:,.0f}/s vs "
                f"{theirs['highest_passing_rate'] or 0:,.0f}/s = {row['ratio_highest_rate']:.2f}"
            )
        else:
            ratio = (
                f"{ours['throughput_per_s']:,.0f}/s vs {theirs['throughput_per_s']:,.0f}/s "
                f"= {row['ratio_throughput']:.2f}"
            )
        verdict = "valid" if ins["valid"] else "**INVALID**"
        lines.append(
            f"| {row['label']} | {_ms(ours['latency_ms'])} | {_ms(theirs['latency_ms'])} | "
            f"{ratio} | {verdict} (echo p99 {ins['echo_p99_ms']:.2f} ms) | {_target_cell(row)} |"
        )
    valid = sum(1 for row in doc["runs"] if row["instrument"]["valid"])
    lines += [
        "",
        f"Instrument valid in {valid} of {len(doc['runs'])} runs (valid: the generator's p99 "
        "against echo <= 5 ms, no errors; an invalid run's passgate figures also measure the "
        "generator).",
    ]
    if doc.get("booking"):
        lines += ["", booking.table(doc["booking"])]
    lines += _h2load_lines(doc.get("h2load"))
    lines += _burst_lines(doc.get("burst"))
    return "\n".join(lines) + "\n"


def _target_cell(row: dict[str, Any]) -> str:
    if "target" not in row:
        return ""
    return f"{row['target']}: {'met' if row['target_met'] else '**missed**'}"


def _h2load_lines(h2: dict[str, Any] | None) -> list[str]:
    if h2 is None:
        return []
    if "skipped" in h2:
        return ["", f"h2load cross-check skipped: {h2['skipped']}"]
    a, b = h2["passgate_req_per_s"], h2["echo_req_per_s"]
    if not a or not b:
        return ["", "h2load cross-check: a run did not finish (no ratio)"]
    shape = f"{h2['requests']:,} requests, {h2['clients']} connections x {h2['streams']} streams"
    lines = [
        "",
        f"h2load dry-run Validate ({shape}, 1 process each): passgate {a:,.0f} req/s, echo "
        f"{b:,.0f} req/s: passgate / echo = **{h2['ratio']:.2f}**",
    ]
    return lines + [f"- WARNING: {w}" for w in h2["warnings"]]


def _burst_lines(b: dict[str, Any] | None) -> list[str]:
    if b is None:
        return []
    kept = "kept" if b["promises_kept"] else "**BROKEN**"
    return [
        "",
        f"burst (python -m loadtest.burst): passgate {b['passgate_line']}: promises {kept}",
        f"burst, same generator against echo: {b['echo_line']}",
    ]


def _save(doc: dict[str, Any], text: str, started: datetime) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"bench-transport-{started.strftime('%Y%m%d-%H%M%S')}"
    base.with_suffix(".json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    base.with_suffix(".md").write_text(text, encoding="utf-8")
    print(f"saved {base}.json and .md", flush=True)

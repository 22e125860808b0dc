"""The results of a run: one JSON report, a markdown summary and a PNG plot, all in results/.

`build_report` turns a TrafficResult into the JSON document (schema below, "passgate.loadtest/1");
`write_files` writes the three files; `markdown` is also what the CLI prints at the end.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from loadtest.mix import ROAMING_HOLDERS
from loadtest.runner import TrafficResult
from loadtest.stats import percentiles_ms

SCHEMA = "passgate.loadtest/1"
BUSY_WARN_PCT = 90.0
LAG_WARN_MS = 10.0
# The instrument is trusted only when the same generator, at the same rate against the bare echo
# server, sees a p99 no higher than this: above it, the generator (or the machine) adds as much
# latency as the server's budget can absorb, and passgate's figures measure the generator too.
INSTRUMENT_P99_LIMIT_MS = 5.0
LATENCY_KEYS = ("p50", "p90", "p99", "p99_9", "max", "mean")


def generator_section(result: TrafficResult, cpus: int) -> dict[str, Any]:
    """Per-worker CPU and schedule lag, and whether the generator itself was the limit."""
    warnings: list[str] = []
    for w in result.workers:
        if w["busy_pct"] >= BUSY_WARN_PCT or w["max_second_cpu_pct"] >= 100.0:
            warnings.append(
                f"worker {w['worker']} was {w['busy_pct']:.0f}% busy on average "
                f"(peak second {w['max_second_cpu_pct']:.0f}%): it may have limited the load; "
                "add --workers or lower the rate"
            )
        if w["lag_p99_ms"] > LAG_WARN_MS:
            warnings.append(
                f"worker {w['worker']} fell behind its schedule (p99 lag {w['lag_p99_ms']:.1f} ms,"
                f" max {w['lag_max_ms']:.0f} ms); latencies include that delay"
            )
    if result.tally.unsent:
        warnings.append(
            f"{result.tally.unsent:,} arrivals were not sent: the outstanding-request bound was "
            "reached (the server is not keeping up, or raise --max-outstanding)"
        )
    total_busy = sum(w["busy_pct"] for w in result.workers) / 100
    if cpus and total_busy > 0.9 * cpus:
        warnings.append(
            f"the workers used {total_busy:.1f} of {cpus} CPUs: generator and server compete"
        )
    box = [s.box_cpu for s in result.seconds.values() if s.box_cpu is not None]
    box_mean = round(sum(box) / len(box), 1) if box else None
    if box_mean is not None and box_mean >= BUSY_WARN_PCT:
        warnings.append(
            f"the machine's CPUs were {box_mean:.0f}% busy on average: generator, server and "
            "anything else running compete; latencies include waiting for a CPU"
        )
    lag = percentiles_ms(result.lag)
    return {
        "workers": result.workers,
        "lag_ms": {"p50": lag["p50"], "p99": lag["p99"], "max": lag["max"]},
        "cpus": cpus,
        "box_cpu_pct": {"mean": box_mean, "max": max(box, default=None)},
        "saturated": _saturated(result),
        "warnings": warnings,
    }


def _saturated(result: TrafficResult) -> bool:
    busy = any(w["busy_pct"] >= BUSY_WARN_PCT for w in result.workers)
    lag = any(w["lag_p99_ms"] > LAG_WARN_MS for w in result.workers)
    return busy or lag or result.tally.unsent > 0


def timeline(result: TrafficResult) -> list[dict[str, Any]]:
    return [result.seconds[t].row(t) for t in sorted(result.seconds)]


def build_report(
    result: TrafficResult,
    config: dict[str, Any],
    started_at: datetime,
    cpus: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    t = result.tally
    rows = timeline(result)
    run_s = _run_seconds(config, result)
    latency = percentiles_ms(result.hist)
    service = percentiles_ms(result.service)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "totals": {
            "scheduled": t.scheduled,
            "sent": t.sent,
            "answered": t.answered,
            "errors": t.errors,
            "unsent": t.unsent,
            "unanswered": t.sent - t.answered - t.errors,
            "errors_by_code": dict(sorted(t.errors_by_code.items())),
            "decisions_by_reason": dict(sorted(t.reasons.items(), key=lambda kv: -kv[1])),
            "allowed": t.allowed,
            "denied": t.answered - t.allowed,
            "pay_later": t.pay_later,
            "shared_card_flags": t.shared_cards,
            # Of which on the mix's planned far scans (the rest: the random mix sent one pass to
            # two venues within their travel time; a frozen clock makes them simultaneous).
            "shared_card_flags_planned": t.shared_planned,
            "shared_card_far_scans": t.kinds.get("shared", 0) // 2,
            "scan_kinds": dict(sorted(t.kinds.items(), key=lambda kv: -kv[1])),
            "run_seconds": round(run_s, 2),
            "offered_per_s": round(t.scheduled / run_s, 1) if run_s else 0.0,
            "throughput_per_s": round(t.answered / run_s, 1) if run_s else 0.0,
            "peak_second_per_s": max((r["answered"] for r in rows), default=0),
        },
        "latency_ms": {k: latency[k] for k in ("p50", "p90", "p99", "p99_9", "max", "mean")},
        # For comparison only: measured from the actual send time (hides generator lag).
        "service_ms": {k: service[k] for k in ("p50", "p99", "max")},
        "slo": {
            "p99_limit_ms": config["slo_ms"],
            "met": latency["p99"] <= config["slo_ms"] and t.errors == 0 and t.answered > 0,
        },
        "timeline": rows,
        "generator": generator_section(result, cpus),
        "instrument": unchecked_instrument(),
        "failures": result.failures,
    }
    if result.steps:
        passing = [s for s in result.steps if s.passed]
        report["step"] = {
            "stairs": [s.to_dict() for s in result.steps],
            "highest_passing_rate": round(passing[-1].step.rate, 1) if passing else None,
            "stopped_early": result.stopped_early,
            # False: every stair passed, so the limit lies above the last one.
            "limit_found": any(not s.passed for s in result.steps),
        }
    report.update(extra or {})
    return report


def unchecked_instrument() -> dict[str, Any]:
    """No echo baseline ran: nothing says whether the generator's own latency was small."""
    return {
        "checked": False,
        "valid": None,
        "limit_ms": INSTRUMENT_P99_LIMIT_MS,
        "echo_p99_ms": None,
        "why": "no echo baseline (run with --echo-baseline)",
    }


def instrument_section(echo: TrafficResult, stairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Valid when the generator's p99 against the echo server stayed within the limit with no
    errors or unsent arrivals; for a step search, at every stair passgate ran (`stairs` are
    the passgate stairs, already carrying their echo p99)."""
    limit = INSTRUMENT_P99_LIMIT_MS
    lat = percentiles_ms(echo.hist)
    if stairs:
        worst = max((s["echo_p99_ms"] for s in stairs if s["echo_p99_ms"] is not None), default=0)
        p99 = float(worst)
        missing = [s["rate"] for s in stairs if s["echo_p99_ms"] is None]
    else:
        p99, missing = lat["p99"], []
    problems = []
    if p99 > limit:
        where = "at its worst stair " if stairs else ""
        problems.append(f"the generator's p99 against echo {where}was {p99:.2f} ms > {limit:g} ms")
    if missing:
        problems.append(f"echo did not run the stairs at {missing} /s")
    if echo.tally.errors or echo.tally.unsent or echo.tally.answered == 0:
        problems.append(
            f"against echo: {echo.tally.errors:,} errors, {echo.tally.unsent:,} unsent, "
            f"{echo.tally.answered:,} answered"
        )
    within = f"the generator's p99 against echo was {p99:.2f} ms <= {limit:g} ms"
    why = "; ".join(problems) or within
    return {
        "checked": True,
        "valid": not problems,
        "limit_ms": limit,
        "echo_p99_ms": p99,
        "echo_lag_p99_ms": percentiles_ms(echo.lag)["p99"],
        "why": why,
    }


def transport_section(
    report: dict[str, Any], echo: TrafficResult, echo_procs: int, security: str = "TLS + token"
) -> dict[str, Any]:
    """passgate / echo for the same load: the echo run's figures (same keys as passgate's),
    the ratios, and for a step search every stair's echo p99 next to passgate's. Also sets
    report["instrument"]. `security` names what both servers were reached with (the same)."""
    lat = percentiles_ms(echo.hist)
    run_s = _run_seconds(report["config"], echo)
    throughput = echo.tally.answered / run_s if run_s else 0.0
    section: dict[str, Any] = {
        "echo": {
            "procs": echo_procs,
            "security": security,
            "sent": echo.tally.sent,
            "answered": echo.tally.answered,
            "errors": echo.tally.errors,
            "unsent": echo.tally.unsent,
            "throughput_per_s": round(throughput, 1),
            "latency_ms": {k: lat[k] for k in LATENCY_KEYS},
            "generator": generator_section(echo, report["generator"]["cpus"]),
            # Flat keys kept for readers of earlier reports.
            "p50": lat["p50"],
            "p99": lat["p99"],
        }
    }
    stairs: list[dict[str, Any]] = []
    if echo.steps:
        by_rate = {round(s.step.rate, 1): s for s in echo.steps}
        for row in report["step"]["stairs"]:
            theirs = by_rate.get(row["rate"])
            row["echo_p99_ms"] = theirs.p99_ms if theirs is not None else None
            ok = theirs is not None and theirs.p99_ms <= INSTRUMENT_P99_LIMIT_MS
            row["instrument_valid"] = ok
            stairs.append(row)
        section["echo"]["stairs"] = [s.to_dict() for s in echo.steps]
        passing = [s.step.rate for s in echo.steps if s.passed]
        theirs_best = passing[-1] if passing else None
        ours = report["step"]["highest_passing_rate"]
        section["echo"]["highest_passing_rate"] = round(theirs_best, 1) if theirs_best else None
        section["ratio_highest_rate"] = _ratio(ours or 0.0, theirs_best or 0.0)
        section["ratio_is_upper_bound"] = all(s.passed for s in echo.steps)
    section["ratio_throughput"] = _ratio(report["totals"]["throughput_per_s"], throughput)
    section["ratio_p50"] = _ratio(report["latency_ms"]["p50"], lat["p50"])
    section["ratio_p99"] = _ratio(report["latency_ms"]["p99"], lat["p99"])
    report["instrument"] = instrument_section(echo, stairs)
    return section


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _run_seconds(config: dict[str, Any], result: TrafficResult) -> float:
    if result.steps and result.stopped_early:
        return max(s.step.end_s for s in result.steps)
    return float(config["duration_s"])


def check_shape(report: dict[str, Any]) -> list[str]:
    """Problems with a report's structure (empty when well-formed); used by the smoke test."""
    problems = []
    for key in ("config", "totals", "latency_ms", "timeline", "generator", "instrument"):
        if key not in report:
            problems.append(f"missing {key}")
    lat = report.get("latency_ms", {})
    order = [lat.get(k) for k in ("p50", "p90", "p99", "p99_9", "max")]
    if None in order or order != sorted(order):
        problems.append(f"latency percentiles out of order: {order}")
    for row in report.get("timeline", []):
        if set(row) < {"t", "sent", "answered", "errors", "p50", "p99"}:
            problems.append(f"timeline row incomplete: {row}")
            break
    return problems


# --- markdown ------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    c, t, lat, gen = report["config"], report["totals"], report["latency_ms"], report["generator"]
    lines = [
        f"# passgate load test: {c['profile']} / {c['mode']}",
        "",
        f"{report['started_at']} · target `{c['target']}` ({c['server']}"
        f"{', ' + c['transport'] if 'transport' in c else ''}) · "
        f"{c['duration_s']:.0f} s · rate {c['rate']:,.0f}/s"
        f"{' (peak)' if c['profile'] == 'holiday-peak' else ''} · {c['workers']} workers · "
        f"seed {c['seed']}",
        "",
        "| server | p50 | p90 | p99 | p99.9 | max | throughput | sent | answered | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        _latency_row("passgate", lat, t["throughput_per_s"], t),
        *_echo_row(report),
        "",
        f"p99 objective {report['slo']['p99_limit_ms']:g} ms: "
        f"**{'met' if report['slo']['met'] else 'MISSED'}**. "
        f"Latency is measured from each request's intended send time (open loop).",
        instrument_line(report),
        *disk_lines(report),
    ]
    warm = report.get("warmup")
    if warm:
        lines.append(
            f"Warm-up before the run, not counted: {warm['seconds']:g} s at {warm['rate']:,.0f}/s "
            f"(p99 {warm['p99_ms']:.2f} ms, {warm['errors']:,} errors)."
        )
    lines += _step_lines(report)
    lines += _transport_lines(report)
    lines += _population_lines(report)
    lines += ["", "## Decisions", "", "| reason | count | share |", "|---|---:|---:|"]
    answered = max(1, t["answered"])
    for reason, n in t["decisions_by_reason"].items():
        lines.append(f"| {reason} | {n:,} | {n / answered:.1%} |")
    lines.append(
        f"\nallowed {t['allowed']:,}, denied {t['denied']:,}, pay-later {t['pay_later']:,}"
    )
    lines.append(_pay_later_line(t))
    lines.append(_shared_line(t))
    if t["errors_by_code"]:
        lines += ["", "## Errors", "", "| code | count |", "|---|---:|"]
        lines += [f"| {code} | {n:,} |" for code, n in t["errors_by_code"].items()]
    kinds = ", ".join(f"{k} {n:,}" for k, n in t["scan_kinds"].items())
    lines += ["", f"Scan kinds sent: {kinds}."]
    lines += _generator_lines(gen, t)
    if report.get("files"):
        lines += ["", "Files: " + ", ".join(f"`{p}`" for p in report["files"].values())]
    return "\n".join(lines) + "\n"


def _latency_row(name: str, lat: dict[str, Any], throughput: float, t: dict[str, Any]) -> str:
    return (
        f"| {name} | {lat['p50']:.2f} ms | {lat['p90']:.2f} ms | {lat['p99']:.2f} ms | "
        f"{lat['p99_9']:.2f} ms | {lat['max']:.1f} ms | {throughput:,.0f}/s | "
        f"{t['sent']:,} | {t['answered']:,} | {t['errors']:,} |"
    )


def _echo_row(report: dict[str, Any]) -> list[str]:
    e = report.get("transport", {}).get("echo")
    if not e or "latency_ms" not in e:
        return []
    return [_latency_row("echo, same generator", e["latency_ms"], e["throughput_per_s"], e)]


def _pay_later_line(t: dict[str, Any]) -> str:
    refused = t["decisions_by_reason"].get("REASON_CREDIT_DENIED", 0)
    return (
        f"\nPay-later: {t['pay_later']:,} admitted on credit, {refused:,} refused by the credit "
        f"rules (debt limit, tier); {t['scan_kinds'].get('pay_later', 0):,} pay-later scans sent, "
        f"many by {ROAMING_HOLDERS} roaming holders per product at any pay-later venue."
    )


def _shared_line(t: dict[str, Any]) -> str:
    flags = t.get("shared_card_flags", 0)
    planned, far = t.get("shared_card_flags_planned", 0), t.get("shared_card_far_scans", 0)
    return (
        f"\nShared-card flags (admitted and flagged, or refused): {flags:,}; {planned:,} on the "
        f"mix's {far:,} planned far scans (one pass at a venue >= 20 km from its last). Every "
        "other pass has a home venue for its plain entries; the other flags come from the "
        "roaming pay-later holders, and from passes met again away from home (a far scan's "
        "pass, an ordinary holder paying later where home does not let them)."
    )


def instrument_line(report: dict[str, Any]) -> str:
    """One line: may the figures above be read as the server's?"""
    ins = report.get("instrument") or unchecked_instrument()
    if not ins["checked"]:
        return f"Instrument: **not checked** ({ins['why']})."
    verdict = "valid" if ins["valid"] else "INVALID"
    return f"Instrument: **{verdict}** ({ins['why']})."


def disk_lines(report: dict[str, Any]) -> list[str]:
    """The data disk's lone durable commits (`loadtest.run.disk_check`), when timed: every
    admitted entry waits for at least one, so a p99 objective below theirs cannot be met."""
    d = report.get("disk")
    if not d:
        return []
    share = d["over_objective"] / max(1, d["commits"])
    floor = (
        " The disk alone misses the objective: no durable answer can beat it."
        if d["p99"] > d["objective_ms"]
        else ""
    )
    return [
        f"Data disk: {d['commits']:,} lone durable LMDB commits after the run, p50 {d['p50']:.2f}, "
        f"p99 {d['p99']:.2f}, p99.9 {d['p99_9']:.2f}, max {d['max']:.1f} ms; {share:.2%} took "
        f"longer than the {d['objective_ms']:g} ms objective on their own.{floor}"
    ]


def _step_lines(report: dict[str, Any]) -> list[str]:
    step = report.get("step")
    if not step:
        return []
    best = step["highest_passing_rate"]
    slo = report["slo"]["p99_limit_ms"]
    head = (
        f"highest rate with p99 <= {slo:g} ms and no errors: **{best:,.0f}/s**"
        if best
        else (f"no stair met p99 <= {slo:g} ms")
    )
    if best and not step["limit_found"]:
        head += " (every stair passed: the limit is higher; add stairs with --duration)"
    lines = ["", "## Step search", "", head, ""]
    echo = any("echo_p99_ms" in s for s in step["stairs"])
    extra = " echo p99 | instrument |" if echo else ""
    lines += [
        f"| rate | throughput | p99 | errors | unsent | passed |{extra}",
        "|---:|---:|---:|---:|---:|---|" + ("---:|---|" if echo else ""),
    ]
    for s in step["stairs"]:
        cells = ""
        if echo:
            theirs = s.get("echo_p99_ms")
            cells = (
                f" {'-' if theirs is None else f'{theirs:.2f} ms'} | "
                f"{'valid' if s.get('instrument_valid') else 'INVALID'} |"
            )
        lines.append(
            f"| {s['rate']:,.0f}/s | {s['throughput_per_s']:,.0f}/s | {s['p99_ms']:.2f} ms | "
            f"{s['errors']:,} | {s['unsent']:,} | {'yes' if s['passed'] else 'no'} |{cells}"
        )
    return lines


def _transport_lines(report: dict[str, Any]) -> list[str]:
    tr = report.get("transport")
    if not tr:
        return []
    e = tr["echo"]
    security = f", {e['security']} as passgate" if "security" in e else ""
    lines = [
        "",
        f"## Transport limit (echo server, {e['procs']} process(es), same load{security})",
        "",
    ]
    if "ratio_highest_rate" in tr:
        bound = " at most" if tr["ratio_is_upper_bound"] else ""
        ours = report["step"]["highest_passing_rate"]
        lines.append(
            f"highest passing stair: passgate {ours or 0:,.0f}/s, echo "
            f"{e['highest_passing_rate'] or 0:,.0f}/s"
            f"{' (passed every stair)' if tr['ratio_is_upper_bound'] else ''}: "
            f"passgate / echo ={bound} **{tr['ratio_highest_rate']:.2f}**"
        )
        return lines
    return [
        *lines,
        f"passgate / echo: throughput {tr['ratio_throughput']:.2f}, p50 {tr['ratio_p50']:.2f}, "
        f"p99 {tr['ratio_p99']:.2f} (echo's figures are in the table at the top)",
    ]


def _population_lines(report: dict[str, Any]) -> list[str]:
    pop = report.get("population")
    if not pop:
        return []
    imp = pop["import"]
    verb = "imported" if imp["imported"] else "generated (already on the server)"
    return [
        "",
        f"Population: {imp['passes']:,} passes {verb} in {imp['seconds']:.1f} s "
        f"({imp['rate_per_s']:,.0f}/s), {imp['rejected']:,} rejected; "
        f"{pop['reservations']['confirmed']:,} reservations booked at "
        f"{pop['reservations']['venues']} venues.",
    ]


def _generator_lines(gen: dict[str, Any], totals: dict[str, Any]) -> list[str]:
    cpu = ", ".join(f"{w['busy_pct']:.0f}%" for w in gen["workers"])
    box = gen["box_cpu_pct"]["mean"]
    box_text = "" if box is None else f"; machine CPU {box:.0f}% busy"
    lines = [
        "",
        f"Generator: {len(gen['workers'])} workers, CPU {cpu}{box_text}; schedule lag p99 "
        f"{gen['lag_ms']['p99']:.2f} ms; unsent {totals['unsent']:,}; "
        f"{'**saturated**' if gen['saturated'] else 'not saturated'}.",
    ]
    lines += [f"- WARNING: {w}" for w in gen["warnings"]]
    return lines


# --- plot ----------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = report["timeline"]
    ts = [r["t"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    top.plot(ts, [r["target"] for r in rows], label="target/s", color="black", ls=":", lw=1)
    top.plot(ts, [r["sent"] for r in rows], label="sent/s", color="tab:gray", lw=1)
    top.plot(ts, [r["answered"] for r in rows], label="answered/s", color="tab:blue", lw=1.6)
    if any(r["errors"] for r in rows):
        top.plot(ts, [r["errors"] for r in rows], label="errors/s", color="tab:red", lw=1)
    top.set_ylabel("requests / s")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    c = report["config"]
    top.set_title(f"passgate {c['profile']} / {c['mode']} against {c['target']}")
    for name, color in (("p50", "tab:green"), ("p90", "tab:olive"), ("p99", "tab:orange")):
        bottom.plot(ts, [_positive(r[name]) for r in rows], label=name, color=color, lw=1.4)
    bottom.plot(ts, [_positive(r["max"]) for r in rows], label="max", color="tab:red", lw=0.8)
    slo = c["slo_ms"]
    bottom.axhline(slo, color="black", ls="--", lw=1, label=f"{slo:g} ms")
    bottom.set_yscale("log")
    bottom.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    bottom.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    bottom.yaxis.set_minor_formatter(ticker.NullFormatter())
    bottom.set_ylabel("latency (ms, log)")
    bottom.set_xlabel("seconds since start")
    bottom.legend(loc="upper left", ncol=5)
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _positive(value: float) -> float:
    return value if value > 0 else math.nan


def write_files(report: dict[str, Any], results_dir: Path) -> dict[str, str]:
    """Writes <profile>-<mode>-<timestamp>.json/.md/.png; returns their paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    c = report["config"]
    stamp = datetime.fromisoformat(report["started_at"]).strftime("%Y%m%d-%H%M%S")
    base = results_dir / f"{c['profile']}-{c['mode']}-{stamp}"
    for k in range(2, 100):
        if not base.with_suffix(".json").exists():
            break
        base = results_dir / f"{c['profile']}-{c['mode']}-{stamp}-{k}"
    files = {"json": f"{base}.json", "md": f"{base}.md", "png": f"{base}.png"}
    report["files"] = files
    plot(report, Path(files["png"]))
    Path(files["md"]).write_text(markdown(report), encoding="utf-8")
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    Path(files["json"]).write_bytes(orjson.dumps(report, option=opts) + b"\n")
    return files

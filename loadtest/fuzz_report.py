"""The fuzz campaign's figures: the running tally, the verdict over all checks, the printed
summary and the JSON file in results/."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.message import Message

from loadtest.fuzz_checks import item_code
from loadtest.fuzz_inputs import Probe
from proto.passgate.v1 import gate_pb2

SCHEMA = "passgate.fuzz/1"
MAX_SAMPLES = 8
# Checks judged call by call (fuzz_checks.py), in the order the summary shows them.
CALL_CHECKS = (
    "no_forbidden_status",
    "every_call_answered",
    "no_leaks",
    "invalid_refused",
    "expected_status",
    "items_fail_alone",
    "imports_per_record",
    "no_foreign_effect",
)
ABOUT = {
    "inputs_tried": "at least --min-count hostile inputs were sent",
    "server_alive": "the server process group lives and health says SERVING",
    "canary_unharmed": "every canary call was answered OK with the right decision",
    "no_forbidden_status": "no UNKNOWN, INTERNAL, UNAVAILABLE... answer",
    "every_call_answered": "no call (or stream) hung past its deadline",
    "no_leaks": "answers are short (<= 300 chars): no traceback, pid, address, Ray internals",
    "invalid_refused": "inputs invalid by the contract were refused",
    "expected_status": "each refusal carried the status the contract names",
    "items_fail_alone": "a bad batch or stream item failed alone; every good one was admitted",
    "imports_per_record": "imports stored every good record and counted every bad one",
    "no_foreign_effect": "a reused request_id revealed and annulled nothing",
    "trap_state_unchanged": "venues and passes named only by invalid inputs did not change",
    "canary_state_exact": "canary venues and passes changed by exactly what the canary was told",
    "occupancy_not_lowered": "EXIT scans with unknown credentials did not lower occupancy",
    "mix_passes_unchanged": "dry runs mixed into hostile batches changed nothing",
}


@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    by_category: defaultdict[str, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    item_answers: Counter[str] = field(default_factory=Counter)
    transport: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    samples: defaultdict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    in_flight: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    skipped: int = 0
    t0: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.tried.values())

    def started(self, probe: Probe) -> None:
        self.tried[probe.category] += 1
        self.in_flight[probe.category] += 1
        self.bytes_sent += probe.size
        if len(probe.payloads) > 1 or probe.check in ("batch", "stream", "upsert"):
            self.items[probe.category] += max(len(probe.payloads), len(probe.info.get("kinds", ())))

    def answered(self, probe: Probe, code: str, answers: list[Message]) -> None:
        self.codes[code] += 1
        self.by_category[probe.category][code] += 1
        for a in answers:
            decisions = a.decisions if isinstance(a, gate_pb2.ValidateBatchResponse) else [a]
            for d in decisions:
                if isinstance(d, gate_pb2.Decision):
                    self.item_answers[_item_kind(d)] += 1

    def violation(self, check: str, probe: Probe | None, detail: str) -> None:
        self.violations[check] += 1
        if len(self.samples[check]) < MAX_SAMPLES:
            where = {} if probe is None else {"category": probe.category, "method": probe.method}
            label = "" if probe is None else probe.label[:200]
            at = round(time.monotonic() - self.t0, 1)
            self.samples[check].append({**where, "input": label, "answer": detail[:300], "t": at})


def _item_kind(d: gate_pb2.Decision) -> str:
    code = item_code(d)
    if code != "OK":
        return f"failed alone: {code}"
    if d.reason == 0:
        return "no reason (REASON_UNSPECIFIED)"
    return "admitted" if d.allowed else "denied"


def check(ok: bool, count: int = 0, samples: list[Any] | None = None) -> dict[str, Any]:
    return {"ok": ok, "count": count, "samples": samples or []}


def call_checks(t: Tally) -> dict[str, dict[str, Any]]:
    return {
        name: check(t.violations[name] == 0, t.violations[name], t.samples[name])
        for name in CALL_CHECKS
    }


def build(
    config: dict[str, Any],
    t: Tally,
    canary: Any,
    setup: dict[str, Any],
    checks: dict[str, dict[str, Any]],
    elapsed_s: float,
    started_at: datetime,
) -> dict[str, Any]:
    failures = [name for name, c in checks.items() if not c["ok"]]
    return {
        "schema": SCHEMA,
        "started_at": started_at.isoformat(timespec="seconds"),
        "config": config,
        "setup": setup,
        "elapsed_s": elapsed_s,
        "tried": {"total": t.total, "by_category": dict(sorted(t.tried.items()))},
        "items_inside_calls": sum(t.items.values()),
        "bytes_sent": t.bytes_sent,
        "skipped_protected": t.skipped,
        "answers_by_code": dict(t.codes.most_common()),
        "answers_by_category": {k: dict(v.most_common()) for k, v in sorted(t.by_category.items())},
        "item_answers": dict(t.item_answers.most_common()),
        "transport_outcomes": dict(t.transport.most_common()),
        "canary": {
            "calls": canary.calls,
            "ok": canary.ok,
            "harmed": canary.harmed,
            "samples": canary.samples,
        },
        "checks": checks,
        "verdict": "PASS" if not failures else "FAIL",
        "failures": failures,
    }


def write(report: dict[str, Any], results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report["started_at"]).strftime("%Y%m%d-%H%M%S")
    out = results_dir / f"fuzz-{stamp}.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return out


def render(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"passgate fuzz campaign: seed {c['seed']}, target {c['target']} ({c['server']})",
        f"{r['tried']['total']:,} inputs in {r['elapsed_s']:.0f} s, {r['items_inside_calls']:,} "
        f"items inside batches, streams and imports, {r['bytes_sent'] / 1e6:,.1f} MB; "
        f"{r['skipped_protected']:,} mutations skipped (they named a checked id)",
        "",
        f"{'input kind':<26}{'tried':>8}  answers",
    ]
    for cat, n in sorted(r["tried"]["by_category"].items(), key=lambda kv: -kv[1]):
        answers = r["answers_by_category"].get(cat) or {}
        text = " · ".join(f"{code} {k:,}" for code, k in answers.items())
        if cat == "raw_transport":
            text = " · ".join(f"{o} {k:,}" for o, k in r["transport_outcomes"].items())
        lines.append(f"{cat:<26}{n:>8,}  {text}")
    lines += ["", "answers by status code"]
    lines += [f"  {code:<24}{n:>8,}" for code, n in r["answers_by_code"].items()]
    lines += ["", "answers to the items inside batches and streams"]
    lines += [f"  {kind:<36}{n:>8,}" for kind, n in r["item_answers"].items()]
    k = r["canary"]
    lines += [
        "",
        f"canary: {k['calls']:,} calls, {k['ok']:,} answered right, {k['harmed']:,} harmed",
        "",
        "checks",
    ]
    for name, res in r["checks"].items():
        mark = "ok  " if res["ok"] else "FAIL"
        lines.append(f"  {mark} {name:<24}{ABOUT.get(name, '')}")
        if not res["ok"]:
            lines.append(f"         {res['count']:,} found, e.g.")
            lines += [f"           {_sample_text(s)}" for s in res["samples"][:3]]
    verdict = (
        r["verdict"]
        if r["verdict"] == "PASS"
        else f"FAIL ({len(r['failures'])} of {len(r['checks'])} checks)"
    )
    lines += ["", f"verdict: {verdict}"]
    return "\n".join(lines)


def _sample_text(s: Any) -> str:
    if isinstance(s, dict):
        head = " ".join(str(s[k]) for k in ("category", "input") if s.get(k))
        tail = s.get("answer", "")
        flight = s.get("hostile_in_flight")
        more = f" [hostile in flight: {', '.join(sorted(flight))}]" if flight else ""
        return f"{head} -> {tail}{more}"[:400]
    return str(s)[:400]

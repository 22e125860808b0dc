"""How an answer to a fuzz input is judged: its status code, the text it shows, and for batches,
streams, imports and hijacks what it says item by item.

`judge` returns violations as (check, detail) pairs; the check names are the rows of the
campaign's verdict (see fuzz_report.py).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from loadtest.fuzz_inputs import METHODS, Probe
from proto.passgate.v1 import gate_pb2, passes_pb2

# Ordinary answers to a bad call. Anything else (UNKNOWN, INTERNAL, UNAVAILABLE, DATA_LOSS...)
# means the server broke, or leaked a failure it should have mapped.
ALLOWED = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
        "FAILED_PRECONDITION",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
    }
)
# No answer before the deadline: a hang.
NO_ANSWER = "DEADLINE_EXCEEDED"
MAX_TEXT = 300
LEAKS = (
    ("traceback", re.compile(r"Traceback|File \"|line \d+, in ")),
    ("pid", re.compile(r"\bpid[=: ]+\d", re.IGNORECASE)),
    ("ip address", re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")),
    (
        "ray internals",
        re.compile(
            r"\bray\b|RayTaskError|RayActorError|\bActor\b|actor_id|ObjectRef", re.IGNORECASE
        ),
    ),
)
REASON_OK = 1
_STATUS_PREFIX = re.compile(r"^([A-Z_]+): ")
_STATUS_NAMES = frozenset(c.name for c in grpc.StatusCode)
Violation = tuple[str, str]


def text_problem(text: str) -> str | None:
    if len(text) > MAX_TEXT:
        return f"{len(text):,} chars: {text[:80]!r}..."
    for name, pattern in LEAKS:
        if pattern.search(text):
            return f"{name}: {text[:160]!r}"
    return None


def parse(probe: Probe, responses: list[bytes]) -> list[Message] | None:
    m = METHODS.get(probe.method)
    if m is None:
        return []
    try:
        return [m.response.FromString(r) for r in responses]
    except DecodeError:
        return None


def texts_of(msg: Message) -> list[str]:
    """The human-readable texts in an answer."""
    if isinstance(msg, gate_pb2.Decision):
        return [msg.message]
    if isinstance(msg, gate_pb2.ValidateBatchResponse):
        return [d.message for d in msg.decisions]
    if isinstance(msg, gate_pb2.AnnulResponse | passes_pb2.Reservation):
        return [msg.reason]
    if isinstance(msg, passes_pb2.UpsertSummary):
        return list(msg.errors)
    return []


def judge(probe: Probe, code: str, details: str, answers: list[Message]) -> list[Violation]:
    out: list[Violation] = []
    expect = probe.expect
    if code == NO_ANSWER:
        out.append(
            ("every_call_answered", f"no answer before the deadline ({len(answers)} replies)")
        )
    elif code not in ALLOWED and (expect is None or code not in expect):
        out.append(("no_forbidden_status", f"{code}: {details[:160]!r}"))
    elif expect is not None and code not in expect | {"RESOURCE_EXHAUSTED"}:
        name = "invalid_refused" if code == "OK" else "expected_status"
        out.append((name, f"{code}, expected {'/'.join(sorted(expect))}: {details[:120]!r}"))
    for text in [details, *(t for a in answers for t in texts_of(a))]:
        problem = text_problem(text)
        if problem:
            out.append(("no_leaks", problem))
    if code == "OK":
        out += _deep(probe, answers)
    return out


def _deep(probe: Probe, answers: list[Message]) -> list[Violation]:
    check = probe.check
    if check == "batch":
        batch = answers[0] if answers else gate_pb2.ValidateBatchResponse()
        assert isinstance(batch, gate_pb2.ValidateBatchResponse)
        return _items_in_order(probe.info, list(batch.decisions))
    if check == "stream":
        return _items_any_order(
            probe.info, [a for a in answers if isinstance(a, gate_pb2.Decision)]
        )
    if check == "upsert":
        return _upsert_counts(probe.info, answers)
    if check in ("deny", "hijack"):
        return [
            v for a in answers if isinstance(a, gate_pb2.Decision) for v in _no_admission(probe, a)
        ]
    if check == "annul":
        annulled = any(isinstance(a, gate_pb2.AnnulResponse) and a.annulled for a in answers)
        return [("no_foreign_effect", f"annulled: {probe.label}")] if annulled else []
    if check == "reserve":
        ok = any(isinstance(a, passes_pb2.Reservation) and a.confirmed for a in answers)
        return [("invalid_refused", f"confirmed: {probe.label}")] if ok else []
    return []


def _no_admission(probe: Probe, d: gate_pb2.Decision) -> list[Violation]:
    name = "no_foreign_effect" if probe.check == "hijack" else "invalid_refused"
    victim = probe.info.get("victim_pass", "")
    if d.allowed or d.pass_id or (victim and victim in d.message):
        return [(name, f"allowed={d.allowed} pass_id={d.pass_id!r}: {probe.label}")]
    return []


def good_answer(d: gate_pb2.Decision, rid: str) -> bool:
    return d.allowed and d.reason == REASON_OK and d.request_id == rid


def item_code(d: gate_pb2.Decision) -> str:
    """The status an item of a batch or stream got: a failed item carries no reason and a message
    that starts with the status name ("INVALID_ARGUMENT: request_id: ...")."""
    if d.allowed or d.reason != 0:
        return "OK"
    code = _STATUS_PREFIX.match(d.message)
    return code.group(1) if code and code.group(1) in _STATUS_NAMES else "OK"


def _item_problem(d: gate_pb2.Decision, kind: str, rid: str) -> str | None:
    """What is wrong with one item's answer, or None. A good item may be told it came at a bad
    time (RESOURCE_EXHAUSTED); a bad item must be refused as invalid."""
    code = item_code(d)
    if kind == "good" and (good_answer(d, rid) or code == "RESOURCE_EXHAUSTED"):
        return None
    if kind == "bad" and code == "INVALID_ARGUMENT":
        return None
    what = "good item not admitted" if kind == "good" else "bad item not refused in-band"
    return f"{what}: allowed={d.allowed} reason={d.reason} {d.message[:100]!r}"


def _item_violations(decisions: list[gate_pb2.Decision], problems: list[str]) -> list[Violation]:
    out: list[Violation] = []
    if problems:
        out.append(("items_fail_alone", f"{len(problems)} x {problems[0]}"))
    for d in decisions:
        if item_code(d) not in ALLOWED:
            out.append(("no_forbidden_status", f"item answered {d.message[:160]!r}"))
            break
    return out


def _items_in_order(info: dict[str, Any], decisions: list[gate_pb2.Decision]) -> list[Violation]:
    kinds, rids = info["kinds"], info["rids"]
    if len(decisions) != len(kinds):
        return [("items_fail_alone", f"{len(decisions)} decisions for {len(kinds)} items")]
    problems = [_item_problem(d, k, rid) for k, rid, d in zip(kinds, rids, decisions, strict=True)]
    return _item_violations(decisions, [p for p in problems if p])


def _items_any_order(info: dict[str, Any], decisions: list[gate_pb2.Decision]) -> list[Violation]:
    kinds, rids = info["kinds"], info["rids"]
    good = {rid for kind, rid in zip(kinds, rids, strict=True) if kind == "good"}
    if len(decisions) != len(kinds):
        return [("items_fail_alone", f"{len(decisions)} answers for {len(kinds)} items")]
    by_rid = Counter(d.request_id for d in decisions)
    problems = []
    for d in decisions:
        if d.request_id in good:
            problem = _item_problem(d, "good", d.request_id)
            if problem or by_rid[d.request_id] != 1:
                problems.append(problem or f"good item answered {by_rid[d.request_id]} times")
    missing = [rid for rid in good if not by_rid[rid]]
    if missing:
        problems.append(f"{len(missing)} of {len(good)} good items got no answer")
    refused = sum(1 for d in decisions if item_code(d) == "INVALID_ARGUMENT")
    n_bad = len(kinds) - len(good)
    if refused != n_bad:
        problems.append(f"{refused} of {n_bad} bad items refused as INVALID_ARGUMENT")
    return _item_violations(decisions, problems)


def _upsert_counts(info: dict[str, Any], answers: list[Message]) -> list[Violation]:
    summary = answers[0] if answers else passes_pb2.UpsertSummary()
    assert isinstance(summary, passes_pb2.UpsertSummary)
    n_good, n_bad = len(info["good_ids"]), len(info["bad_cards"])
    if summary.upserted != n_good or summary.rejected != n_bad:
        got = f"upserted {summary.upserted}, rejected {summary.rejected}"
        return [("imports_per_record", f"{got}; sent {n_good} good, {n_bad} bad")]
    return []

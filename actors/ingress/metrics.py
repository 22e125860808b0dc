"""Every Prometheus metric passgate exports, in one place (`passgate_` prefix, help on each).

The ingress records request-side figures as they happen; shard-side figures (venue counters, LMDB
commit time) arrive through one periodic poll per shard, never through a per-request Ray call.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

DECISIONS = Counter(
    "passgate_decisions",
    "Decisions answered, by reason code (REASON_OK for admissions).",
    ["reason", "allowed"],
    registry=REGISTRY,
)
SHARED_CARDS = Counter(
    "passgate_shared_card_flags",
    "Entries whose pass was admitted elsewhere too recently to have travelled here, by action "
    "(flag: admitted and flagged; refuse: refused with REASON_SHARED_CARD_SUSPECTED).",
    ["action"],
    registry=REGISTRY,
)
DECISION_LATENCY = Histogram(
    "passgate_decision_latency_seconds",
    "Time from receipt of a validation at the ingress to its reply.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GRPC_ERRORS = Counter(
    "passgate_grpc_errors",
    "Calls answered with a gRPC error status, by code.",
    ["code"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "passgate_batch_size",
    "Items per batch sent by the ingress to a shard (one sample per batch).",
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
SHARD_CALLS = Counter(
    "passgate_shard_calls",
    "Batches the ingress sent to a shard to decide (one channel call each), per shard.",
    ["shard"],
    registry=REGISTRY,
)
CALLER_WAITS = Counter(
    "passgate_caller_rate_waits_total",
    "Calls other than validations that waited their turn under their caller's rate.",
    registry=REGISTRY,
)
CALLER_REFUSALS = Counter(
    "passgate_caller_rate_refusals_total",
    "Calls other than validations refused RESOURCE_EXHAUSTED: their caller's turn was too far.",
    registry=REGISTRY,
)
CHANNEL_FRAMES = Counter(
    "passgate_channel_frames_sent",
    "Batch frames this ingress wrote to a shard's channel, resends after a reconnect included.",
    ["shard"],
    registry=REGISTRY,
)
CHANNEL_RECONNECTS = Counter(
    "passgate_channel_reconnects",
    "Times one of this ingress's channels to a shard (batches, other calls) was opened again.",
    ["shard"],
    registry=REGISTRY,
)
SHARD_CHANNEL_FRAMES = Gauge(
    "passgate_shard_channel_frames_served",
    "Batch frames the shard answered on its channel since it (re)started, as polled.",
    ["shard"],
    registry=REGISTRY,
)
SHARD_CHANNEL_CALLS = Gauge(
    "passgate_shard_channel_calls_served",
    "Other calls (annul, reservations, quotas, status, GetPass) the shard answered on its "
    "channel since it (re)started, as polled.",
    ["shard"],
    registry=REGISTRY,
)
SHARD_BATCHES = Gauge(
    "passgate_shard_batches",
    "Batches the shard decided since it (re)started, by any path, as polled.",
    ["shard"],
    registry=REGISTRY,
)
SHARD_STORE_BYTES = Gauge(
    "passgate_shard_store_bytes",
    "Bytes the shard's LMDB store file uses (its pages in use), as polled: it grows with the "
    "decision log until the province's decision_log_days, then holds.",
    ["shard"],
    registry=REGISTRY,
)
DECISION_LOG_LINES = Gauge(
    "passgate_decision_log_lines",
    "Lines the shard's decision log holds now (one per decision, denials too), as polled.",
    ["shard"],
    registry=REGISTRY,
)
DECISION_LOG_TRIMMED = Gauge(
    "passgate_decision_log_lines_trimmed",
    "Decision-log lines the shard has trimmed past the province's decision_log_days, in all.",
    ["shard"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "passgate_shard_queue_depth",
    "Requests waiting at the ingress for their shard's next batch.",
    ["shard"],
    registry=REGISTRY,
)
LMDB_COMMIT = Gauge(
    "passgate_lmdb_commit_seconds",
    "Duration of the shard's most recent LMDB group commit.",
    ["shard"],
    registry=REGISTRY,
)
LMDB_COMMIT_HIST = Histogram(
    "passgate_lmdb_commit_duration_seconds",
    "LMDB group-commit durations reported by the shards.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSES = Histogram(
    "passgate_gc_pause_seconds",
    "Pauses of the Python garbage collector, by process (ingress, shard) and generation.",
    ["process", "generation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    registry=REGISTRY,
)
CREDIT_HOLDS = Gauge(
    "passgate_credit_holds",
    "Pay-later holds asked of the credit ledger by each shard since it started, by result "
    "(granted, refused, unavailable: not answered in time, refused for a retry).",
    ["shard", "result"],
    registry=REGISTRY,
)
POLL_FAILURES = Counter(
    "passgate_shard_poll_failures",
    "Failed polls of the shards' figures (once a second); the shard gauges keep their last "
    "values meanwhile.",
    registry=REGISTRY,
)
LAST_POLL = Gauge(
    "passgate_shard_poll_last_success_timestamp_seconds",
    "When the shards' figures were last polled successfully (Unix time): more than a few "
    "seconds ago means the shard gauges are stale.",
    registry=REGISTRY,
)
STATUS_WATCHERS = Gauge(
    "passgate_status_watchers",
    "Open WatchVenueStatus streams served by this ingress process.",
    registry=REGISTRY,
)
STATUS_FEED_POLLS = Counter(
    "passgate_status_feed_polls",
    "Shard status polls made by the shared status feed (one per watched venue per tick).",
    registry=REGISTRY,
)

_VENUE_GAUGES = {
    "occupancy": (
        "People inside the venue now: counted (entries minus exits), or estimated from recent "
        "entries and the typical stay where passgate_venue_occupancy_estimated is 1."
    ),
    "occupancy_estimated": (
        "1 when the venue has no exit readers and its occupancy is estimated; 0 when counted."
    ),
    "instant_capacity": "Approved instantaneous capacity (people inside at once).",
    "daily_capacity": "Approved daily capacity (entries per local day).",
    "entries_today": "Entries admitted since local midnight.",
    "exits_today": "Exits since local midnight that a known entry justified.",
    "unmatched_exits_today": (
        "Exit scans since local midnight that no known entry justified (unknown, revoked or "
        "not inside): counted, never subtracted from occupancy."
    ),
    "alert_level": "Alert level: 1 green, 2 yellow, 3 orange, 4 red, 5 full.",
    "paused": "1 when an operator has paused admission.",
    "entries_per_minute": "Entries per minute over the last 5 minutes.",
    "minutes_to_full": "Forecast minutes until full from recent net inflow; -1 when not filling.",
}
VENUE: dict[str, Gauge] = {
    name: Gauge(f"passgate_venue_{name}", text, ["venue", "city"], registry=REGISTRY)
    for name, text in _VENUE_GAUGES.items()
}


def observe_batch(shard: int, size: int) -> None:
    BATCH_SIZE.observe(size)
    SHARD_CALLS.labels(str(shard)).inc()


def set_shard_figures(stats: dict[str, Any]) -> None:
    """From one shard's polled stats()."""
    label = str(stats["shard_id"])
    SHARD_CHANNEL_FRAMES.labels(label).set(stats.get("channel_frames", 0))
    SHARD_CHANNEL_CALLS.labels(label).set(stats.get("channel_calls", 0))
    SHARD_BATCHES.labels(label).set(stats["batches"])
    SHARD_STORE_BYTES.labels(label).set(stats.get("store_bytes", 0))
    DECISION_LOG_LINES.labels(label).set(stats.get("log_lines", 0))
    DECISION_LOG_TRIMMED.labels(label).set(stats.get("log_lines_trimmed", 0))


def set_venue_figures(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        labels = (row["venue_id"], row["city"])
        for name, gauge in VENUE.items():
            gauge.labels(*labels).set(float(row[name]))


def observe_gc(process: str, pauses: list[tuple[int, float]]) -> None:
    for generation, seconds in pauses:
        GC_PAUSES.labels(process, str(generation)).observe(seconds)


def set_credit_figures(stats: dict[str, Any]) -> None:
    """From a shard's stats (actors.shard.credit)."""
    shard = str(stats["shard_id"])
    for result in ("granted", "refused", "unavailable"):
        CREDIT_HOLDS.labels(shard, result).set(float(stats.get(f"credit_holds_{result}", 0)))

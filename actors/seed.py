"""First-start seeding: the demo passes from config/ plus a synthetic population."""

from __future__ import annotations

import ray

from actors.codec import encode_batch
from actors.errors import PassgateError
from actors.routing import Handles
from core.models import PassRecord, Province
from core.population import generate_passes

SEED = 20261001
CHUNK = 5000
SEED_CALL_TIMEOUT_S = 300


def _write(handles: Handles, chunk: list[PassRecord]) -> int:
    stored, problems = ray.get(
        handles.catalog.upsert_rows.remote(encode_batch(chunk)), timeout=SEED_CALL_TIMEOUT_S
    )
    if problems:
        index, problem = problems[0]
        raise PassgateError(f"seed pass {chunk[index].pass_id!r} refused: {problem}")
    return int(stored)


def seed_if_empty(
    handles: Handles, province: Province, demo: list[PassRecord], count: int, today: int
) -> int:
    """Fills an empty catalog; returns how many passes were written (0 when not empty)."""
    if ray.get(handles.catalog.count.remote(), timeout=SEED_CALL_TIMEOUT_S) > 0:
        return 0
    written = _write(handles, demo)
    chunk: list[PassRecord] = []
    for rec in generate_passes(province, 0, count, SEED, today):
        chunk.append(rec)
        if len(chunk) >= CHUNK:
            written += _write(handles, chunk)
            chunk = []
    if chunk:
        written += _write(handles, chunk)
    return written

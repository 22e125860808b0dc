"""First-start seeding: the demo passes from config/ plus a synthetic population."""

from __future__ import annotations

from typing import Any

import ray

from actors.cluster import Handles
from actors.codec import packb, pass_to_list
from core.models import PassRecord, Province
from core.population import generate_passes

SEED = 20261001
CHUNK = 5000


def seed_if_empty(
    handles: Handles, province: Province, demo: list[PassRecord], count: int, today: int
) -> int:
    """Fills an empty catalog; returns how many passes were written (0 when not empty)."""
    if ray.get(handles.catalog.count.remote()) > 0:
        return 0
    written = ray.get(handles.catalog.upsert_rows.remote(packb([pass_to_list(p) for p in demo])))
    chunk: list[Any] = []
    for rec in generate_passes(province, 0, count, SEED, today):
        chunk.append(pass_to_list(rec))
        if len(chunk) >= CHUNK:
            written += ray.get(handles.catalog.upsert_rows.remote(packb(chunk)))
            chunk = []
    if chunk:
        written += ray.get(handles.catalog.upsert_rows.remote(packb(chunk)))
    return int(written)

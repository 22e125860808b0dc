"""actors/gc_pauses.py: the collector settled after start-up, and its pauses recorded."""

from __future__ import annotations

import gc
from pathlib import Path

from actors.catalog import CatalogReader, CatalogWriter, catalog_path
from actors.gc_pauses import GEN0_THRESHOLD, INGRESS_GEN0_THRESHOLD, GcPauses, settle
from core.models import CredentialKind
from tests.unit.test_shard import _pass


def test_settle_freezes_the_start_up_heap_and_records_pauses() -> None:
    before = gc.get_threshold()
    try:
        pauses = settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        assert settle() is pauses, "settling twice must not install a second hook"
        pauses.take()
        gc.collect(0)
        gc.collect(2)
        recorded = pauses.take()
        generations = [g for g, _ in recorded]
        assert 0 in generations and 2 in generations
        assert all(seconds >= 0 for _, seconds in recorded)
        assert pauses.take() == []
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.callbacks[:] = [cb for cb in gc.callbacks if not isinstance(cb, GcPauses)]
        import actors.gc_pauses

        actors.gc_pauses._PAUSES = None


def test_the_ingress_settles_with_its_own_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle(INGRESS_GEN0_THRESHOLD)
        assert gc.get_threshold() == (INGRESS_GEN0_THRESHOLD, before[1], before[2])
        assert INGRESS_GEN0_THRESHOLD < GEN0_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.callbacks[:] = [cb for cb in gc.callbacks if not isinstance(cb, GcPauses)]
        import actors.gc_pauses

        actors.gc_pauses._PAUSES = None


def test_pauses_are_counted_per_generation() -> None:
    pauses = GcPauses()
    pauses("start", {"generation": 1})
    pauses("stop", {"generation": 1})
    assert pauses.count == [0, 1, 0]
    assert pauses.max_s == pauses.total_s[1]


def test_pass_lookups_leave_nothing_for_the_collector_to_walk(tmp_path: Path) -> None:
    """A shard looks up a pass for every scan: what stays behind must not be tracked by the
    collector, or every young and full collection walks it again (a decoded-record cache once
    left five tracked objects per pass: 50-100 ms collections with 100,000 passes)."""
    writer = CatalogWriter(catalog_path(tmp_path))
    writer.upsert(_pass(i) for i in range(2_000))
    writer.close()
    reader = CatalogReader(catalog_path(tmp_path))
    try:
        gc.collect()
        before = len(gc.get_objects())
        with reader.begin() as txn:
            for i in range(2_000):
                rec = reader.lookup(txn, CredentialKind.CARD, f"C{i}")
                assert rec is not None and rec.pass_id == f"P{i}"
                assert not gc.is_tracked(rec)
        del rec
        gc.collect()
        assert len(gc.get_objects()) - before < 100
    finally:
        reader.close()

"""Ray wiring: the actor wrappers and their start-up (run_cluster only; ingresses use routing).

`ray.remote` is applied here, late, over the plain classes; nothing in core/ knows about Ray.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from actors.catalog import CatalogWriter, catalog_path
from actors.codec import decode_passes
from actors.errors import DataDirMismatch, StartupFailed
from actors.frozen_clock import FrozenClock, RunningClock
from actors.ledger.ledger import LedgerService, check_ledger_count
from actors.routing import NAMESPACE, Handles, ledger_name
from actors.shard.service import ShardService
from actors.shard.store import ShardStore
from actors.shard.venue_shard import layout_problem, shard_dir
from core.models import PassRecord, PassStatus, Province

# Retrying a batch on a restarted shard is safe: request_ids make every item idempotent. The
# shard is an asyncio actor: calls run concurrently on its event loop (a batch is decided while
# earlier ones wait for their commits) and its commit pipeline keeps the writes in order, so the
# bound only caps the calls waiting at once.
SHARD_OPTIONS: dict[str, Any] = {
    "max_restarts": -1,
    "max_task_retries": 5,
    "num_cpus": 0,
    "max_concurrency": 64,
}
# Test hook, read by start_actors only: each shard commit waits this long in the commit thread
# first, so that a crash test can kill a shard between two commits
# (`actors.shard.service.HELD_MARKER`).
ENV_COMMIT_DELAY_MS = "PASSGATE_TEST_COMMIT_DELAY_MS"


class CatalogActor(CatalogWriter):
    """The catalog writer as an actor; takes encoded records so imports cross Ray cheaply."""

    def upsert_rows(self, payload: bytes) -> tuple[int, list[tuple[int, str]]]:
        """(stored, [(index in payload, problem)]): a bad record fails alone."""
        return self.upsert_each(decode_passes(payload))

    def revoke(self, pass_id: str) -> PassRecord | None:
        return self.set_status(pass_id, PassStatus.REVOKED)


# A hold is idempotent by its charge key, so a call retried on a restarted ledger is safe.
LEDGER_OPTIONS: dict[str, Any] = {"max_restarts": -1, "max_task_retries": -1, "num_cpus": 0}

ShardActor: Any = ray.remote(ShardService)
LedgerActor: Any = ray.remote(LedgerService)
CatalogRemote: Any = ray.remote(CatalogActor)


# Bounds every start-up wait: with max_restarts=-1 an actor whose constructor keeps failing
# restarts for ever, and the server would neither serve nor exit.
START_TIMEOUT_S = 120.0


def check_layout(data_dir: Path, n_shards: int) -> None:
    """Refuses a data directory made with another shard count before any actor starts; reads the
    count shard 0 recorded (each shard checks it again when it opens its store)."""
    path = shard_dir(data_dir, 0)
    if not path.exists():
        return
    store = ShardStore(path)
    try:
        seen = store.get_meta("n_shards")
    finally:
        store.close()
    if seen is not None and seen != n_shards:
        raise DataDirMismatch(layout_problem(seen, n_shards))


def start_actors(
    province: Province,
    data_dir: Path,
    n_shards: int,
    frozen_ms: int | None = None,
    credentials_dir: Path | None = None,
    n_ledgers: int = 1,
    clock_runs: bool = False,
) -> Handles:
    """Creates the catalog writer first (it creates the LMDB file the shards read), then the
    credit-ledger actors (the shards recover against them as they start), then shards.
    The shards trust the signed-QR issuer keys under `<credentials_dir>/qr` (default: the
    `actors.shard.code_claims.issuer_dir` rule). With `frozen_ms`, the shards' clock stands at
    that instant, or with `clock_runs` starts there and runs (`actors.frozen_clock`)."""
    check_layout(data_dir, n_shards)
    check_ledger_count(data_dir, n_ledgers)
    clock = None
    if frozen_ms is not None:
        make = RunningClock if clock_runs else FrozenClock
        clock = make(frozen_ms, str(data_dir))
    creds = None if credentials_dir is None else str(credentials_dir)
    # The channel secret: only members of the Ray cluster learn it (through channel_address).
    channel_secret = secrets.token_bytes(32)
    delay_s = _commit_delay_s()
    catalog = CatalogRemote.options(
        name="catalog", namespace=NAMESPACE, max_restarts=-1, max_task_retries=3, num_cpus=0
    ).remote(catalog_path(data_dir))
    _await_ready({"the catalog actor": catalog.ping.remote()})
    ledgers = [
        LedgerActor.options(name=ledger_name(k), namespace=NAMESPACE, **LEDGER_OPTIONS).remote(
            k, n_ledgers, str(data_dir), channel_secret
        )
        for k in range(n_ledgers)
    ]
    _await_ready({f"ledger actor {k}": led.ping.remote() for k, led in enumerate(ledgers)})
    shards = [
        ShardActor.options(name=f"shard-{i}", namespace=NAMESPACE, **SHARD_OPTIONS).remote(
            i,
            n_shards,
            province,
            str(data_dir),
            clock,
            creds,
            channel_secret,
            None,
            delay_s,
            n_ledgers,
        )
        for i in range(n_shards)
    ]
    _await_ready({f"shard actor {i}": s.ping.remote() for i, s in enumerate(shards)})
    return Handles(shards, catalog, n_shards, ledgers)


def _commit_delay_s() -> float:
    raw = os.environ.get(ENV_COMMIT_DELAY_MS, "")
    try:
        return max(0.0, float(raw) / 1000) if raw else 0.0
    except ValueError:
        return 0.0


def _await_ready(pings: dict[str, Any], timeout_s: float = START_TIMEOUT_S) -> None:
    """Waits for every actor's first ping under one deadline; names the first that fails."""
    deadline = time.monotonic() + timeout_s
    for what, ref in pings.items():
        try:
            ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except GetTimeoutError:
            raise StartupFailed(
                f"start-up: {what} did not answer within {timeout_s:.0f} s "
                "(still starting, or crashing and restarting); see the log above"
            ) from None
        except RayError as exc:
            raise StartupFailed(f"start-up: {what} died while starting{_init_error(exc)}") from None


def _init_error(exc: RayError) -> str:
    """The last line of the constructor's traceback ("Type: message"), shortened for one line."""
    if not isinstance(exc, RayActorError) or not exc.actor_init_failed:
        return "; see the log above"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""

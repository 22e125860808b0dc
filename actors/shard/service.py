"""ShardService: the shard as Ray serves it. It owns the bytes on the wire (`actors.codec`) and
hands `VenueShard` typed records; `actors.cluster` applies `ray.remote` to it.

An asyncio actor: every call runs on the actor's one event loop. Every write (batches, annul,
reservations, quotas, pause) goes through one `CommitPipeline`, so batch N+1 is decided while batch
N commits in the pipeline's commit thread, and each answer leaves after its own commit. Reads
answer from memory or from LMDB's committed state at once. The ingress's batches arrive over the
channel (actors/channel_server.py) served on that same loop, and so do its other per-request calls
(annul, reservations, quotas, pause, status, a pass's share: `serve_call`, actors/shard_calls.py);
only the metrics poll, start-up and tests use Ray actor calls. Pay-later entries ask the
credit-ledger actors (actors/ledger/) over a channel of the same kind, awaited on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import ray

from actors import gc_pauses
from actors.channel_frames import ChannelAddress
from actors.channel_server import ChannelServer
from actors.codec import decode_requests_each, encode_batch
from actors.errors import BadRequest, ShardUnavailable, StorageError
from actors.ledger.client import ChannelLedgerClient
from actors.routing import ledger_handles
from actors.shard.pipeline import CommitPipeline
from actors.shard.store import BatchWrites
from actors.shard.venue_shard import VenueShard, shard_dir
from actors.shard_calls import (
    READS,
    AnnulAnswer,
    AnnulCall,
    Answer,
    FieldProblem,
    PassPartsCall,
    ReservationAnswer,
    ReserveCall,
    SetPausedCall,
    SetQuotaCall,
    ShardCall,
    StatusAnswer,
    VenueStatusCall,
    decode_call,
)
from core.models import Province
from core.records import PassParts, encode

log = logging.getLogger("passgate.shard")

# Test hook (`actors.cluster.ENV_COMMIT_DELAY_MS`): this file, in the shard's directory, names the
# commit being held open and how many calls are staged behind it.
HELD_MARKER = "commit-held-open"
# After memory could not be rebuilt: time for the failed calls' answers to leave before the exit.
FATAL_EXIT_DELAY_S = 0.2
# The event loop, Ray's threads and the commit thread take turns at the GIL; a thread back from
# an fsync or a put waits up to this long for it (the interpreter's default is 5 ms).
SWITCH_INTERVAL_S = 0.0005
RECOVERING = "shard starting: its credit ledger recovery failed; retry with the same request_id"


def decide_encoded(shard: VenueShard, payload: bytes) -> bytes:
    """An encoded batch in, its encoded decisions out: the shard's wire path (durable commit)."""
    return encode_batch(shard.decide_requests(decode_requests_each(payload)))


class ShardService:
    def __init__(
        self,
        shard_id: int,
        n_shards: int,
        province: Province,
        data_dir: str,
        clock_ms: Any = None,
        credentials_dir: str | None = None,
        channel_secret: bytes | None = None,
        ledgers: list[Any] | None = None,
        commit_delay_s: float = 0.0,
        n_ledgers: int = 0,
    ) -> None:
        """`ledgers`: the credit-ledger actors themselves (tests); `n_ledgers`: how many to find
        by name. Ray passes the count, not handles: an actor's constructor arguments that hold
        handles are kept in the object store, where a restart of this actor may not find them
        again (ray-project/ray#53727; Ray says so at every start)."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if ledgers is None and n_ledgers:
            ledgers = ledger_handles(n_ledgers)
        # The credit-ledger actors (actors.ledger); the shard asks them over their channels.
        client = ChannelLedgerClient(ledgers) if ledgers else None
        # The ledger recovery (outbox replay, fencing) is awaited on the loop before the first
        # call (`_ready`), not run blocking here.
        self.shard = VenueShard(
            shard_id, n_shards, province, data_dir, clock_ms, credentials_dir, client,
            recover_ledger=client is None,
        )  # fmt: skip
        self._recovery: asyncio.Future[None] | None = None
        self._secret = channel_secret or secrets.token_bytes(32)
        self._channel = ChannelServer(self.decide_batch, self._secret, calls=self.serve_call)
        self._marker = shard_dir(Path(data_dir), shard_id) / HELD_MARKER
        self._commit_delay_s = commit_delay_s
        self._held = 0
        commit = self._held_open_commit if commit_delay_s > 0 else None
        self.pipeline = CommitPipeline(self.shard, commit=commit, on_fatal=self._fatal)
        # Batches received and not yet answered; one alone commits on the loop. The held-open
        # commit (a test hook) always runs in the commit thread, with calls staged behind it.
        self._open = 0
        self._inline = commit is None
        # Everything loaded so far lives as long as the process: out of the collector's way.
        self._gc = gc_pauses.settle()

    def _held_open_commit(self, group: list[BatchWrites], written: Callable[[], None]) -> None:
        """Test hook, in the commit thread: holds each commit back for `commit_delay_s`, while
        the marker file names it, counts the calls staged behind it and says when it began, so
        that a crash test can kill the shard between two commits and prove it did (the file
        outlives the process)."""
        self._held += 1
        written()  # no puts while held: the loop decides on meanwhile
        began = time.time()
        deadline = time.monotonic() + self._commit_delay_s
        behind = -1
        while True:
            queued = self.pipeline.queued()
            if queued != behind:
                behind = queued
                self._marker.write_text(f"{self._held} {behind} {began:.6f}")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.005, left))
        self.shard.commit_writes(group, written)
        self._marker.unlink(missing_ok=True)

    async def _ready(self) -> None:
        """Before the first call is served: the credit ledger has taken this incarnation's
        recovery (once; every call waits for the same one). Should it fail, the calls fail for
        a retry and the process exits so that Ray starts the shard afresh."""
        if self.shard.credit.recovered:
            return
        if self._recovery is None:
            self._recovery = asyncio.ensure_future(self._recover())
        await asyncio.shield(self._recovery)

    async def _recover(self) -> None:
        try:
            await self.shard.credit.recover_async()
        except Exception as exc:
            log.error(
                "shard %s: credit ledger recovery failed (%r); exiting so that Ray restarts it",
                self.shard.shard_id, exc,
            )  # fmt: skip
            asyncio.get_running_loop().call_later(FATAL_EXIT_DELAY_S, os._exit, 70)
            raise ShardUnavailable(RECOVERING) from None

    def _fatal(self, exc: StorageError) -> None:
        # Memory could not be rebuilt: exiting (not ray.actor.exit_actor) makes Ray restart the
        # shard, which rebuilds from LMDB.
        log.error("shard %s: %s; exiting so that Ray restarts it", self.shard.shard_id, exc)
        asyncio.get_running_loop().call_later(FATAL_EXIT_DELAY_S, os._exit, 70)

    # -- writes ---------------------------------------------------------------------------------

    async def decide_batch(self, payload: bytes) -> bytes:
        """Decides every request of an encoded batch; answers after the batch's own commit. A
        batch alone on the shard commits on the loop, others go through the commit thread
        (`CommitPipeline.run`).

        A batch with pay-later candidates awaits the credit ledger's holds between its plan and
        its decision; the loop serves other batches and commits meanwhile. Memory may move on in
        between: the plan holds only what stays true (problems, claimed codes, holds keyed by
        attempt), and the decision reads memory afresh."""
        await self._ready()
        shard = self.shard
        self._open += 1
        try:
            plan = shard.plan_batch(decode_requests_each(payload))
            try:
                await shard.credit.hold(plan.credit)
                alone = self._inline and self._open == 1
                decisions = await self.pipeline.run(
                    lambda: shard.decide_planned(plan, hand_over=True), alone
                )
            except (Exception, asyncio.CancelledError):
                if not plan.entered:
                    shard.credit.abandon(plan.credit)  # never decided: its holds go
                if plan.sightings is not None:
                    shard.sharing.discard(plan.sightings)  # its commit failed: nobody entered
                raise
        finally:
            self._open -= 1
        if plan.sightings is not None:
            # Advisory and not synced: written once the answer is on its way (the channel
            # writes it in this same step), off the gates' wait.
            asyncio.get_running_loop().call_soon(shard.sharing.record, plan.sightings)
        return encode_batch(decisions)

    async def channel_address(self) -> ChannelAddress:
        """Where this shard serves its channel; starts the listener on the first call, on the
        node's address as Ray reports it (any port)."""
        await self._ready()
        return await self._channel.address(ray.util.get_node_ip_address())

    async def serve_call(self, payload: bytes) -> bytes:
        """One call frame (`actors.shard_calls`): its answer record, encoded. Writes answer after
        their commit, through the pipeline as batches do; reads answer from memory or LMDB's
        committed state at once."""
        try:
            call = decode_call(payload)
        except msgspec.DecodeError:  # a ValidationError is one too
            raise BadRequest("shard call", "malformed") from None
        if not isinstance(call, READS):
            await self._ready()
        return encode(await self._serve(call))

    async def _serve(self, call: ShardCall) -> Answer:
        shard, run = self.shard, self.pipeline.run
        match call:
            case AnnulCall(request_id, venue_id, gate_id, kind, value):
                annulled, message = await run(
                    lambda: shard.annul(request_id, venue_id, gate_id, kind, value)
                )
                return AnnulAnswer(annulled, message)
            case ReserveCall(pass_id, venue_id, day, slot_id, cancel):
                book = shard.cancel_reservation if cancel else shard.reserve
                return ReservationAnswer(*await run(lambda: book(pass_id, venue_id, day, slot_id)))
            case SetQuotaCall(venue_id, daily, instant, caps, alerts, overbook):
                problems, row = await run(
                    lambda: shard.set_quota(venue_id, daily, instant, caps, alerts, overbook)
                )
                return StatusAnswer(row, [FieldProblem(f, p) for f, p in problems])
            case SetPausedCall(venue_id, paused):
                return StatusAnswer(await run(lambda: shard.set_paused(venue_id, paused)))
            case VenueStatusCall(venue_id):
                return StatusAnswer(shard.venue_status(venue_id))
            case PassPartsCall(pass_id):
                return PassParts(
                    shard.usage_of(pass_id),
                    shard.reservations_of(pass_id),
                    shard.shared_flags_of(pass_id),
                )
        raise BadRequest("shard call", f"unknown call {type(call).__name__}")

    # -- reads ----------------------------------------------------------------------------------

    async def all_status(self) -> list[dict[str, Any]]:
        return self.shard.all_status()

    async def stored_admits(self) -> int:
        return self.shard.stored_admits()

    async def stats(self) -> dict[str, Any]:
        frames = {
            "channel_frames": self._channel.frames_served,
            "channel_calls": self._channel.calls_served,
            "gc_pauses": self._gc.take(),
        }
        return {**self.shard.stats(), **self.pipeline.stats(), **frames}

    async def pid(self) -> int:
        return self.shard.pid()

    async def ping(self) -> bool:
        """Ready to serve: the ledger recovery done (the cluster's start waits for it)."""
        await self._ready()
        return not self.pipeline.broken

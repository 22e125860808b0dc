"""The ingress's end of the channel to one shard: batch (or call) frames out, answers back by
call id.

Ray stays the owner of the shard: `resolve` asks the shard's Ray handle for its channel address
(`channel_address.remote()`, which waits for a restarting actor) once per (re)connection. Many
calls are in flight on the one connection. When it drops (the shard died and Ray restarts it),
the client resolves again with bounded backoff and resends every batch still unanswered: safe,
since every item is idempotent by request_id and a retried request is answered from its record.
A call sent with `resend=False` (a write of `actors.shard_calls`) fails instead with
ShardUnavailable, for its caller to retry, as when a Ray actor call's actor dies.
A call not answered within `max_wait_s` fails with ShardUnavailable (retry with the same
request_id). A connection is opened when the first call needs it and kept while it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.channel_frames import (
    MAX_FRAME_BYTES,
    ChannelAddress,
    FrameError,
    Kind,
    frame,
    hello,
    read_frame,
    rebuild_error,
)
from actors.errors import RETRY, ShardUnavailable

log = logging.getLogger("passgate.channel")
Resolve = Callable[[], Awaitable[ChannelAddress]]
Hook = Callable[[], None]


@dataclass(frozen=True)
class ClientSettings:
    # Covers a shard's restart by Ray (a few seconds); after it the caller hears ShardUnavailable.
    max_wait_s: float = 15.0
    connect_timeout_s: float = 5.0
    backoff_min_s: float = 0.05
    backoff_max_s: float = 1.0
    max_frame_bytes: int = MAX_FRAME_BYTES


LOST = f"connection to the shard lost; {RETRY}"


@dataclass
class _Call:
    payload: bytes
    fut: asyncio.Future[bytes]
    timer: asyncio.TimerHandle
    kind: Kind = Kind.BATCH
    # Sent again on a new connection once sent on one that dropped (else it fails: LOST).
    resend: bool = True
    sent: bool = False


class ChannelClient:
    def __init__(
        self,
        resolve: Resolve,
        settings: ClientSettings | None = None,
        *,
        on_frame: Hook | None = None,
        on_reconnect: Hook | None = None,
    ) -> None:
        self._resolve = resolve
        self.settings = settings or ClientSettings()
        self._on_frame = on_frame
        self._on_reconnect = on_reconnect
        self._ids = itertools.count(1)
        self._pending: dict[int, _Call] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._wanted: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected_once = False
        self.frames_sent = 0
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def call(self, payload: bytes, kind: Kind = Kind.BATCH, resend: bool = True) -> bytes:
        """Sends an encoded batch (or, with `kind` CALL, another call); returns its encoded answer
        (or raises the shard's error). Without `resend`, a call already sent when the connection
        drops fails with ShardUnavailable instead of going again on the next one."""
        if self._closed:
            raise ShardUnavailable("channel closed")
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        fut: asyncio.Future[bytes] = loop.create_future()
        timer = loop.call_later(self.settings.max_wait_s, self._expire, call_id)
        call = _Call(payload, fut, timer, kind, resend)
        self._pending[call_id] = call
        if self._writer is not None:
            self._send(self._writer, call_id, call)
        self._ensure_running()
        try:
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)

    async def close(self) -> None:
        """Stops reconnecting and fails whatever is unanswered."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for call in list(self._pending.values()):
            _fail(call, ShardUnavailable("channel closed"))

    def _ensure_running(self) -> None:
        if self._wanted is None:
            self._wanted = asyncio.Event()
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._manage())

    def _send(self, writer: asyncio.StreamWriter, call_id: int, call: _Call) -> None:
        writer.write(frame(call_id, call.kind, call.payload))
        call.sent = True
        self.frames_sent += 1
        if self._on_frame is not None:
            self._on_frame()

    def _expire(self, call_id: int) -> None:
        call = self._pending.pop(call_id, None)
        if call is not None:
            _fail(call, ShardUnavailable("shard did not answer; retry with the same request_id"))

    async def _manage(self) -> None:
        """Connects, serves one connection until it drops, and reconnects while calls wait."""
        assert self._wanted is not None
        failures = 0
        while not self._closed:
            await self._wanted.wait()
            try:
                reader, writer = await self._open()
            except Exception as exc:  # Ray could not resolve, or the connect or hello failed
                failures += 1
                log.warning("channel connect failed (attempt %d): %s", failures, exc)
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            self._count_connect()
            await self._serve_connection(reader, writer)
            if not self._pending:
                self._wanted.clear()
            await asyncio.sleep(self.settings.backoff_min_s)

    def _backoff(self, failures: int) -> float:
        s = self.settings
        return min(s.backoff_max_s, s.backoff_min_s * 2 ** min(failures, 16))

    def _count_connect(self) -> None:
        if self._connected_once:
            self.reconnects += 1
            if self._on_reconnect is not None:
                self._on_reconnect()
        self._connected_once = True

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        timeout = self.settings.connect_timeout_s
        address = await asyncio.wait_for(self._resolve(), timeout)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host, address.port), timeout
        )
        try:
            writer.write(hello(address.secret))
            header, _ = await asyncio.wait_for(
                read_frame(reader, self.settings.max_frame_bytes), timeout
            )
            if header.kind != Kind.WELCOME:
                raise FrameError(f"expected a welcome, got {header.kind.name}")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writer = writer
        try:
            # Whatever was sent on a lost connection goes again (batches are idempotent by
            # request_id), but for the calls that must not (`_drop_unsafe`).
            for call_id, call in list(self._pending.items()):
                self._send(writer, call_id, call)
            await self._read_answers(reader)
        except (asyncio.IncompleteReadError, ConnectionError, FrameError, OSError) as exc:
            log.warning("channel connection lost: %s", type(exc).__name__)
        finally:
            self._writer = None
            writer.close()
            self._drop_unsafe()

    def _drop_unsafe(self) -> None:
        """Fails the calls sent on the connection just lost that may not be sent again: the
        shard may or may not have done them, and the caller retries (as after a Ray actor call
        whose actor died)."""
        for call_id, call in list(self._pending.items()):
            if call.sent and not call.resend:
                del self._pending[call_id]
                _fail(call, ShardUnavailable(LOST))

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        limit = self.settings.max_frame_bytes
        while True:
            header, payload = await read_frame(reader, limit)
            call = self._pending.pop(header.call_id, None)
            if call is None or call.fut.done():
                continue  # the answer to a call that expired meanwhile
            if header.kind == Kind.RESULT:
                call.fut.set_result(payload)
            elif header.kind == Kind.ERROR:
                call.fut.set_exception(rebuild_error(payload))
            else:
                raise FrameError(f"unexpected frame kind {header.kind.name}")


def _fail(call: _Call, exc: Exception) -> None:
    call.timer.cancel()
    if not call.fut.done():
        call.fut.set_exception(exc)

"""The serving end of a channel: a TCP listener on an asyncio actor's own event loop that answers
call frames (actors/channel_frames.py) with the actor's handler. The shard serves the ingress's
batches on it, and the credit ledger the shards' holds and outcomes.

A connection is admitted by its first frame, a hello carrying the cluster's channel secret
(compared in constant time); a wrong or missing secret closes it without an answer. Every batch
frame (and call frame, when the server takes calls) is served in its own task, so many calls are in
flight per connection and each answer carries its call id. Per connection at most `max_pending`
calls are served at once (further frames are not read until one is answered and written), and a
frame over `max_frame_bytes` closes that connection alone. The handler answers only after the
batch's commit, so a result frame never precedes its durability.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.channel_frames import (
    MAX_FRAME_BYTES,
    ChannelAddress,
    FrameError,
    Kind,
    decode_hello,
    error_body,
    frame,
    read_frame,
)
from actors.errors import PassgateError

log = logging.getLogger("passgate.channel")
Handler = Callable[[bytes], Awaitable[bytes]]


@dataclass(frozen=True)
class ServerLimits:
    max_frame_bytes: int = MAX_FRAME_BYTES
    # More than the batcher's max_inflight per shard ever asks for; only a broken client hits it.
    max_pending: int = 64
    # A connection that does not say hello in time is closed.
    hello_timeout_s: float = 10.0


class ChannelServer:
    def __init__(
        self,
        handler: Handler,
        secret: bytes,
        limits: ServerLimits | None = None,
        calls: Handler | None = None,
    ) -> None:
        """`handler` answers batch frames; `calls`, when given, call frames (without it a call
        frame breaks the protocol)."""
        self._handler = handler
        self._calls = calls
        self._secret = secret
        self.limits = limits or ServerLimits()
        self._server: asyncio.Server | None = None
        self._listening: asyncio.Future[tuple[str, int]] | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.frames_served = 0  # batch frames answered
        self.calls_served = 0  # call frames answered
        self.refused = 0  # connections closed for a bad hello
        self.dropped = 0  # connections closed for a bad frame

    async def start(self, host: str, port: int = 0) -> tuple[str, int]:
        """Listens on `host` (the node's address as Ray reports it); returns (host, port)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        return host, int(bound[1])

    async def address(self, host: str) -> ChannelAddress:
        """Where this server listens (host, port and the secret to say); starts listening on
        `host` (the node's address as Ray reports it, any port) on the first call."""
        if self._listening is None:
            self._listening = asyncio.ensure_future(self.start(host))
        try:
            bound_host, port = await asyncio.shield(self._listening)
        except OSError:
            self._listening = None  # could not listen: the next call tries again
            raise
        return ChannelAddress(bound_host, port, self._secret)

    async def close(self) -> None:
        """Stops listening and drops every connection (batches being decided run to their end)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if await self._admit(reader):
                writer.write(frame(0, Kind.WELCOME))
                await self._serve_calls(reader, writer)
            else:
                self.refused += 1
        except FrameError as exc:
            self.dropped += 1
            log.warning("channel connection closed: %s", exc)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the peer went away, or never said hello
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _admit(self, reader: asyncio.StreamReader) -> bool:
        limits = self.limits
        header, payload = await asyncio.wait_for(
            read_frame(reader, limits.max_frame_bytes), limits.hello_timeout_s
        )
        said = decode_hello(payload) if header.kind == Kind.HELLO else None
        return said is not None and hmac.compare_digest(said.secret, self._secret)

    async def _serve_calls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        pending: set[asyncio.Task[None]] = set()
        while True:
            header, payload = await read_frame(reader, self.limits.max_frame_bytes)
            handler = self._handler if header.kind == Kind.BATCH else None
            if header.kind == Kind.CALL:
                handler = self._calls
            if handler is None:
                raise FrameError(f"unexpected frame kind {header.kind.name}")
            while len(pending) >= self.limits.max_pending:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.get_running_loop().create_task(
                self._answer(handler, header.call_id, payload, writer)
            )
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def _answer(
        self, handler: Handler, call_id: int, payload: bytes, writer: asyncio.StreamWriter
    ) -> None:
        # Not cancelled when its connection drops: a batch being committed runs to its end, and
        # the client's resend is answered from the requests' records.
        try:
            out = frame(call_id, Kind.RESULT, await handler(payload))
        except Exception as exc:
            if not isinstance(exc, PassgateError):
                log.exception("channel call failed")
            out = frame(call_id, Kind.ERROR, error_body(exc))
        if handler is self._handler:
            self.frames_served += 1
        else:
            self.calls_served += 1
        if writer.is_closing():
            return
        writer.write(out)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

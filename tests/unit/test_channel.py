"""The ingress-to-shard channel without Ray: a ChannelServer with a fake handler and a
ChannelClient on one event loop. Framing, many calls in flight answered by id, shard errors
rebuilt as their class, a wrong secret, an oversize frame, bounded pending work, and resending
after the server restarts."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from actors.channel_client import ChannelClient, ClientSettings
from actors.channel_frames import (
    ChannelAddress,
    ErrorBody,
    FrameError,
    Header,
    Kind,
    frame,
    hello,
    read_frame,
    rebuild_error,
)
from actors.channel_server import ChannelServer, ServerLimits
from actors.errors import (
    BadRequest,
    NotFound,
    Overloaded,
    PassgateError,
    ShardUnavailable,
    StorageError,
    StorageFull,
)
from actors.ingress.error_map import status_of

SECRET = b"s" * 32
HOST = "127.0.0.1"
FAST = ClientSettings(max_wait_s=5.0, connect_timeout_s=2.0, backoff_min_s=0.01)


async def echo(payload: bytes) -> bytes:
    return b"re:" + payload


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[bytes], Awaitable[bytes]] = echo,
    limits: ServerLimits | None = None,
    secret: bytes = SECRET,
) -> AsyncIterator[tuple[ChannelServer, ChannelAddress]]:
    server = ChannelServer(handler, secret, limits)
    host, port = await server.start(HOST)
    try:
        yield server, ChannelAddress(host, port, secret)
    finally:
        await server.close()


def client_of(address: ChannelAddress, settings: ClientSettings = FAST) -> ChannelClient:
    async def resolve() -> ChannelAddress:
        return address

    return ChannelClient(resolve, settings)


async def _raw(address: ChannelAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(address.host, address.port)


# -- frames ----------------------------------------------------------------------------------


def test_frames_round_trip_in_order() -> None:
    async def go() -> list[tuple[Header, bytes]]:
        data = frame(7, Kind.BATCH, b"abc") + frame(8, Kind.RESULT) + hello(SECRET)
        reader = _reader(data)
        return [await read_frame(reader, 1024) for _ in range(3)]

    (h1, p1), (h2, p2), (h3, _) = asyncio.run(go())
    assert (h1, p1) == (Header(7, Kind.BATCH), b"abc")
    assert (h2, p2) == (Header(8, Kind.RESULT), b"")
    assert h3 == Header(0, Kind.HELLO)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (frame(1, Kind.BATCH, b"x" * 200), "over the 100-byte limit"),
        (struct.pack(">IH", 4, 9) + b"abcd", "header length"),
        (struct.pack(">IH", 3, 3) + b"\xc1\xc1\xc1", "malformed frame header"),
        (struct.pack(">IH", 3, 3) + b"\x92\x01\x63", "malformed frame header"),  # kind 99
    ],
)
def test_bad_frames_are_refused(data: bytes, problem: str) -> None:
    async def go() -> None:
        await read_frame(_reader(data), 100)

    with pytest.raises(FrameError, match=problem):
        asyncio.run(go())


# -- calls -----------------------------------------------------------------------------------


def test_many_calls_in_flight_are_answered_by_id() -> None:
    n = 40
    arrived: list[asyncio.Event] = []
    all_in = asyncio.Event()

    async def reverse(payload: bytes) -> bytes:
        # Holds every call until all have arrived, then answers the last first.
        mine = asyncio.Event()
        arrived.append(mine)
        if len(arrived) == n:
            all_in.set()
        await mine.wait()
        index = arrived.index(mine)
        if index > 0:
            arrived[index - 1].set()
        return b"re:" + payload

    async def go() -> tuple[list[bytes], int, int]:
        async with serving(reverse) as (server, address):
            client = client_of(address)
            calls = [asyncio.ensure_future(client.call(b"%d" % i)) for i in range(n)]
            await all_in.wait()
            arrived[-1].set()
            answers = await asyncio.gather(*calls)
            await client.close()
            return answers, server.frames_served, client.frames_sent

    answers, served, sent = asyncio.run(go())
    assert answers == [b"re:%d" % i for i in range(n)]
    assert served == sent == n


@pytest.mark.parametrize(
    ("raised", "cls", "code"),
    [
        (StorageFull("commit: storage full"), StorageFull, "RESOURCE_EXHAUSTED"),
        (StorageError("commit: Error"), StorageError, "UNAVAILABLE"),
        (Overloaded("too much"), Overloaded, "RESOURCE_EXHAUSTED"),
        (NotFound("no such venue"), NotFound, "NOT_FOUND"),
        (BadRequest("venue_id", "empty"), BadRequest, "INVALID_ARGUMENT"),
        (KeyError("/secret/path"), PassgateError, "INTERNAL"),
    ],
)
def test_shard_errors_arrive_as_their_class(raised: Exception, cls: type, code: str) -> None:
    async def failing(_payload: bytes) -> bytes:
        raise raised

    async def go() -> BaseException:
        async with serving(failing) as (_, address):
            client = client_of(address)
            try:
                await client.call(b"x")
            except PassgateError as exc:
                return exc
            finally:
                await client.close()
        raise AssertionError("the call did not fail")

    got = asyncio.run(go())
    assert type(got) is cls
    status, message = status_of(got)
    assert status.name == code
    assert "secret" not in message and "KeyError" not in message
    if isinstance(raised, BadRequest):
        assert isinstance(got, BadRequest) and got.field == "venue_id"


def test_an_error_frame_naming_a_foreign_class_is_internal() -> None:
    got = rebuild_error(msgspec.msgpack.encode(ErrorBody("SystemExit", "bye")))
    assert type(got) is PassgateError
    assert type(rebuild_error(b"\xc1")) is PassgateError


# -- admission and limits ---------------------------------------------------------------------


def test_a_wrong_secret_is_closed_without_an_answer() -> None:
    async def go() -> tuple[bytes, int, int]:
        async with serving() as (server, address):
            reader, writer = await _raw(address)
            writer.write(hello(b"w" * 32) + frame(1, Kind.BATCH, b"x"))
            answer = await reader.read()
            writer.close()
            return answer, server.refused, server.frames_served

    answer, refused, served = asyncio.run(go())
    assert answer == b"" and refused == 1 and served == 0


def test_a_client_with_a_wrong_secret_gets_shard_unavailable() -> None:
    async def go() -> tuple[Any, int]:
        async with serving() as (server, address):
            wrong = ChannelAddress(address.host, address.port, b"w" * 32)
            client = client_of(wrong, ClientSettings(max_wait_s=0.3, backoff_min_s=0.01))
            with pytest.raises(ShardUnavailable, match="retry with the same request_id"):
                await client.call(b"x")
            await client.close()
            return server.frames_served, server.refused

    served, refused = asyncio.run(go())
    assert served == 0 and refused >= 1


def test_a_batch_before_hello_is_refused() -> None:
    async def go() -> tuple[bytes, int]:
        async with serving() as (server, address):
            reader, writer = await _raw(address)
            writer.write(frame(1, Kind.BATCH, b"x"))
            answer = await reader.read()
            writer.close()
            return answer, server.frames_served

    assert asyncio.run(go()) == (b"", 0)


def test_an_oversize_frame_closes_only_its_connection() -> None:
    limits = ServerLimits(max_frame_bytes=1000)

    async def go() -> tuple[bytes, bytes, bytes, int]:
        async with serving(limits=limits) as (server, address):
            client = client_of(address)
            before = await client.call(b"before")
            reader, writer = await _raw(address)
            writer.write(hello(SECRET) + frame(1, Kind.BATCH, b"x" * 5000))
            answer = await reader.read()  # the welcome, then the close
            writer.close()
            after = await client.call(b"after")
            await client.close()
            return before, answer, after, server.dropped

    before, answer, after, dropped = asyncio.run(go())
    assert answer == frame(0, Kind.WELCOME)
    assert (before, after, dropped) == (b"re:before", b"re:after", 1)


def test_pending_work_per_connection_is_bounded() -> None:
    limits = ServerLimits(max_pending=4)
    started: list[asyncio.Event] = []
    release = asyncio.Event()

    async def held(payload: bytes) -> bytes:
        started.append(asyncio.Event())
        await release.wait()
        return payload

    async def go() -> tuple[int, list[bytes]]:
        async with serving(held, limits) as (_, address):
            client = client_of(address)
            calls = [asyncio.ensure_future(client.call(b"%d" % i)) for i in range(10)]
            for _ in range(200):  # bounded: let the server read all it will read
                await asyncio.sleep(0.001)
            held_at_once = len(started)
            release.set()
            answers = await asyncio.gather(*calls)
            await client.close()
            return held_at_once, answers

    held_at_once, answers = asyncio.run(go())
    assert held_at_once == 4
    assert answers == [b"%d" % i for i in range(10)]


# -- restarts --------------------------------------------------------------------------------


def test_calls_in_flight_are_resent_after_the_server_restarts() -> None:
    got_first = asyncio.Event()
    never = asyncio.Event()

    async def dies_with_the_call(_payload: bytes) -> bytes:
        got_first.set()
        await never.wait()  # the shard dies before it answers
        return b"lost"

    async def go() -> tuple[list[bytes], int, int, int]:
        first = ChannelServer(dies_with_the_call, SECRET)
        second = ChannelServer(echo, SECRET)
        address = ChannelAddress(*await first.start(HOST), SECRET)
        resolved = 0

        async def resolve() -> ChannelAddress:
            nonlocal resolved
            resolved += 1
            return address

        client = ChannelClient(resolve, FAST)
        calls = [asyncio.ensure_future(client.call(b"%d" % i)) for i in range(3)]
        await got_first.wait()
        await first.close()
        address = ChannelAddress(*await second.start(HOST), SECRET)
        answers = await asyncio.gather(*calls)
        never.set()
        await client.close()
        await second.close()
        return answers, client.reconnects, second.frames_served, resolved

    answers, reconnects, served, resolved = asyncio.run(go())
    assert answers == [b"re:0", b"re:1", b"re:2"]
    assert reconnects == 1 and served == 3
    assert resolved >= 2  # the address was asked again for the new connection


def test_a_call_fails_in_time_when_the_shard_stays_away() -> None:
    async def unreachable() -> ChannelAddress:
        raise ConnectionRefusedError("no shard")

    async def go() -> None:
        client = ChannelClient(unreachable, ClientSettings(max_wait_s=0.2, backoff_min_s=0.01))
        with pytest.raises(ShardUnavailable):
            await client.call(b"x")
        await client.close()

    asyncio.run(go())


async def _calls(payload: bytes) -> bytes:
    return b"call:" + payload


def test_call_frames_go_to_the_calls_handler_and_batches_to_the_batch_one() -> None:
    async def go() -> tuple[list[bytes], int]:
        server = ChannelServer(echo, SECRET, calls=_calls)
        address = ChannelAddress(*await server.start(HOST), SECRET)
        client = client_of(address)
        try:
            answers = await asyncio.gather(
                client.call(b"a"), client.call(b"b", Kind.CALL), client.call(b"c", Kind.CALL, False)
            )
            return list(answers), server.frames_served + 10 * server.calls_served
        finally:
            await client.close()
            await server.close()

    assert asyncio.run(go()) == ([b"re:a", b"call:b", b"call:c"], 21)  # 1 batch, 2 calls


def test_a_call_frame_to_a_server_without_calls_closes_that_connection() -> None:
    async def go() -> tuple[bytes, int]:
        async with serving() as (server, address):
            reader, writer = await _raw(address)
            writer.write(hello(SECRET) + frame(1, Kind.CALL, b"x"))
            header, _ = await read_frame(reader, 1024)
            assert header.kind == Kind.WELCOME
            rest = await reader.read()  # the server closes without answering the call
            writer.close()
            return rest, server.dropped

    assert asyncio.run(go()) == (b"", 1)


def test_a_write_call_in_flight_fails_when_the_connection_drops_and_a_batch_goes_again() -> None:
    got = asyncio.Event()
    never = asyncio.Event()

    async def dies(_payload: bytes) -> bytes:
        got.set()
        await never.wait()
        return b"lost"

    async def go() -> tuple[bytes, BaseException | bytes, int]:
        first = ChannelServer(dies, SECRET, calls=dies)
        second = ChannelServer(echo, SECRET, calls=_calls)
        address = ChannelAddress(*await first.start(HOST), SECRET)

        async def resolve() -> ChannelAddress:
            return address

        client = ChannelClient(resolve, FAST)
        batch = asyncio.ensure_future(client.call(b"b"))
        write = asyncio.ensure_future(client.call(b"w", Kind.CALL, resend=False))
        await got.wait()  # both were sent on connecting, in order; the server holds them
        await first.close()
        address = ChannelAddress(*await second.start(HOST), SECRET)
        lost = await asyncio.gather(write, return_exceptions=True)
        answer = await batch
        never.set()
        await client.close()
        await second.close()
        return answer, lost[0], second.frames_served

    answer, lost, served = asyncio.run(go())
    assert answer == b"re:b"
    assert isinstance(lost, ShardUnavailable) and "retry" in str(lost)
    assert served == 1  # the write was not sent again

"""The one error map: every exception a servicer lets escape becomes a gRPC status and a short
message here, and nowhere else. Clients never see a traceback, a pid, an address or an actor id.

`ErrorMapInterceptor` wraps every registered method once:
- it decodes request bytes itself, so undecodable bytes are INVALID_ARGUMENT, not UNKNOWN; inside a
  request stream an undecodable message arrives as an `Undecodable` item, and the servicer answers
  it alone (a bad item never ends its stream);
- it maps whatever escapes the servicer through `status_of`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import lmdb
import ray.exceptions as rex

from actors import metrics
from actors.errors import (
    BadRequest,
    DataDirMismatch,
    NotFound,
    Overloaded,
    PassgateError,
    ShardUnavailable,
    StartupFailed,
    StorageError,
    StorageFull,
    StoreCorrupt,
)

log = logging.getLogger("passgate.errors")
MAX_MESSAGE_CHARS = 200
RETRY = "retry with the same request_id"
Code = grpc.StatusCode
Status: TypeAlias = grpc.StatusCode

# Every passgate error class, most specific first; a test proves each class is listed.
PASSGATE_CODES: dict[type[BaseException], Status] = {
    BadRequest: Code.INVALID_ARGUMENT,
    NotFound: Code.NOT_FOUND,
    Overloaded: Code.RESOURCE_EXHAUSTED,
    StorageFull: Code.RESOURCE_EXHAUSTED,
    StorageError: Code.UNAVAILABLE,
    ShardUnavailable: Code.UNAVAILABLE,
    DataDirMismatch: Code.FAILED_PRECONDITION,
    StoreCorrupt: Code.FAILED_PRECONDITION,
    StartupFailed: Code.UNAVAILABLE,
    PassgateError: Code.INTERNAL,
}
# Errors of the layers below, as (class, code, fixed message): their own text is never shown.
FOREIGN: tuple[tuple[type[BaseException], Status, str], ...] = (
    (lmdb.MapFullError, Code.RESOURCE_EXHAUSTED, f"storage full; {RETRY} later"),
    (lmdb.DiskError, Code.RESOURCE_EXHAUSTED, f"storage full; {RETRY} later"),
    (lmdb.Error, Code.UNAVAILABLE, f"storage unavailable; {RETRY}"),
    (rex.ObjectStoreFullError, Code.RESOURCE_EXHAUSTED, f"overloaded; {RETRY}"),
    (rex.OutOfDiskError, Code.RESOURCE_EXHAUSTED, f"storage full; {RETRY} later"),
    (rex.GetTimeoutError, Code.UNAVAILABLE, f"shard did not answer in time; {RETRY}"),
    (rex.RayActorError, Code.UNAVAILABLE, f"shard restarting; {RETRY}"),
    (rex.ActorUnavailableError, Code.UNAVAILABLE, f"shard restarting; {RETRY}"),
    (rex.RayError, Code.UNAVAILABLE, f"cluster unavailable; {RETRY}"),
    (asyncio.TimeoutError, Code.RESOURCE_EXHAUSTED, f"overloaded: no answer in time; {RETRY}"),
    (OSError, Code.UNAVAILABLE, f"unavailable; {RETRY}"),
)
_SUFFIX = {
    Code.UNAVAILABLE: f"; {RETRY}",
    Code.RESOURCE_EXHAUSTED: f"; {RETRY}",
}


def _unwrap(exc: BaseException) -> BaseException:
    """A passgate error raised inside an actor reaches us wrapped by Ray: use the cause."""
    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def short(text: str) -> str:
    """One printable line of at most MAX_MESSAGE_CHARS."""
    line = " ".join(text.split())
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 3] + "..."


def status_of(exc: BaseException) -> tuple[Status, str]:
    """The status code and client-safe message of any exception."""
    exc = _unwrap(exc)
    for cls in type(exc).__mro__:
        code = PASSGATE_CODES.get(cls)
        if code is not None:
            if code == Code.INTERNAL:
                break
            text = short(str(exc))
            suffix = _SUFFIX.get(code, "")
            return code, text if RETRY in text else short(text + suffix)
    for cls, code, message in FOREIGN:
        if isinstance(exc, cls):
            return code, message
    return Code.INTERNAL, "internal error"


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A message of a request stream that did not parse; `index` counts from 0."""

    index: int
    problem: str


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    code, message = status_of(exc)
    if code == Code.INTERNAL:
        log.error("%s failed", method, exc_info=exc)
    metrics.GRPC_ERRORS.labels(code.name).inc()
    await context.abort(code, message)


def _decode_one(decode: Callable[[bytes], Any], raw: bytes, name: str) -> Any:
    try:
        return decode(raw)
    except Exception:
        raise BadRequest("request", f"not a valid {name} message") from None


async def _decode_stream(
    raw_iter: AsyncIterator[bytes], decode: Callable[[bytes], Any], name: str
) -> AsyncIterator[Any]:
    index = 0
    async for raw in raw_iter:
        try:
            yield decode(raw)
        except Exception:
            yield Undecodable(index, f"not a valid {name} message")
        index += 1


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    decode = handler.request_deserializer or (lambda raw: raw)
    name = method.rsplit("/", 1)[-1]
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner_uu(_decode_one(decode, raw, name), context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serializer)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for item in inner_us(_decode_one(decode, raw, name), context):
                    yield item
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return grpc.unary_stream_rpc_method_handler(unary_stream, None, serializer)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(raw_iter: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner_su(_decode_stream(raw_iter, decode, name), context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serializer)
    inner_ss = handler.stream_stream

    async def stream_stream(raw_iter: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in inner_ss(_decode_stream(raw_iter, decode, name), context):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return grpc.stream_stream_rpc_method_handler(stream_stream, None, serializer)


class ErrorMapInterceptor(grpc.aio.ServerInterceptor):
    """Applies the error map to every passgate method (health and reflection keep their own)."""

    def __init__(self, prefix: str = "/passgate.") -> None:
        self._prefix = prefix
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(self._prefix):
            return handler
        wrapped = _wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped

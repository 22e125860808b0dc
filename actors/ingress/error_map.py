"""The one error map: every exception a servicer lets escape becomes a gRPC status and a short
message here, and nowhere else. Clients never see a traceback, a pid, an address or an actor id.

`ErrorMapInterceptor` wraps every registered method once:
- it decodes request bytes itself, so undecodable bytes are INVALID_ARGUMENT, not UNKNOWN; inside a
  request stream an undecodable message arrives as an `Undecodable` item, and the servicer answers
  it alone (a bad item never ends its stream);
- it maps whatever escapes the servicer through `status_of`;
- it admits the caller first (actors/ingress/auth.py): authenticated before the request is decoded,
  authorized against the method table with the decoded request, then bound to the call. Health
  stays open; reflection (every other method) needs a valid token.
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

from actors.errors import (
    RETRY,
    BadRequest,
    DataDirMismatch,
    NotFound,
    Overloaded,
    PassgateError,
    PermissionDenied,
    ShardUnavailable,
    StartupFailed,
    StorageError,
    StorageFull,
    StoreCorrupt,
    Unauthenticated,
)
from actors.ingress import metrics
from actors.ingress.auth import (
    OPEN_PREFIXES,
    PASSGATE_PREFIX,
    Authenticator,
    Principal,
    authorize,
    bind,
)
from actors.ingress.call_budget import LIMITED, CallBudget

log = logging.getLogger("passgate.errors")
MAX_MESSAGE_CHARS = 200
Code = grpc.StatusCode
Status: TypeAlias = grpc.StatusCode

# Every passgate error class, most specific first; a test proves each class is listed.
PASSGATE_CODES: dict[type[BaseException], Status] = {
    BadRequest: Code.INVALID_ARGUMENT,
    NotFound: Code.NOT_FOUND,
    Unauthenticated: Code.UNAUTHENTICATED,
    PermissionDenied: Code.PERMISSION_DENIED,
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


def _admit(
    auth: Authenticator, context: grpc.aio.ServicerContext, method: str, request: Any
) -> None:
    """Authorizes an authenticated caller for `method` and binds it to the running call."""
    principal = _who(auth, context)
    authorize(principal, method, request)
    bind(principal, auth)


def _who(auth: Authenticator, context: grpc.aio.ServicerContext) -> Principal:
    return auth.authenticate(context.invocation_metadata())


async def _take_turn(budget: CallBudget, caller: str, context: grpc.aio.ServicerContext) -> None:
    """Waits for the caller's turn under its rate (Overloaded: too far away)."""
    try:
        wait = budget.turn(caller, context.time_remaining())
    except Overloaded:
        metrics.CALLER_REFUSALS.inc()
        raise
    if wait > 0:
        metrics.CALLER_WAITS.inc()
        await asyncio.sleep(wait)


def _wrap(
    handler: grpc.RpcMethodHandler,
    method: str,
    auth: Authenticator,
    budget: CallBudget | None = None,
) -> grpc.RpcMethodHandler:
    decode = handler.request_deserializer or (lambda raw: raw)
    name = method.rsplit("/", 1)[-1]
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary
        limited = budget if method in LIMITED else None

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                principal = _who(auth, context)
                request = _decode_one(decode, raw, name)
                authorize(principal, method, request)
                bind(principal, auth)
                if limited is not None:
                    await _take_turn(limited, principal.sub, context)
                return await inner_uu(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, serializer)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                principal = _who(auth, context)
                request = _decode_one(decode, raw, name)
                authorize(principal, method, request)
                bind(principal, auth)
                async for item in inner_us(request, context):
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
                _admit(auth, context, method, None)
                return await inner_su(_decode_stream(raw_iter, decode, name), context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _abort(context, exc, method)

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, serializer)
    inner_ss = handler.stream_stream

    async def stream_stream(raw_iter: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _admit(auth, context, method, None)
            async for item in inner_ss(_decode_stream(raw_iter, decode, name), context):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return grpc.stream_stream_rpc_method_handler(stream_stream, None, serializer)


def _authenticated_only(
    handler: grpc.RpcMethodHandler, method: str, auth: Authenticator
) -> grpc.RpcMethodHandler:
    """Reflection and any other foreign service: a valid token of any role, nothing else changed
    (its own decoding and errors)."""
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(request_iter: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                _who(auth, context)
            except Exception as exc:
                await _abort(context, exc, method)
            async for item in inner_ss(request_iter, context):
                yield item

        return handler._replace(stream_stream=stream_stream)  # type: ignore[attr-defined]
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                _who(auth, context)
            except Exception as exc:
                await _abort(context, exc, method)
            return await inner_uu(request, context)

        return handler._replace(unary_unary=unary_unary)  # type: ignore[attr-defined]
    # No other shape is served outside passgate's own services: refuse rather than pass it open.
    return grpc.unary_unary_rpc_method_handler(_unsupported)


async def _unsupported(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(Code.UNIMPLEMENTED, "method not available")


class ErrorMapInterceptor(grpc.aio.ServerInterceptor):
    """Admits the caller and applies the error map on every passgate method (and the caller's
    rate, `call_budget.py`, to those it limits); health is open, every other method (reflection)
    needs a valid token and keeps its own errors."""

    def __init__(
        self, auth: Authenticator, prefix: str = PASSGATE_PREFIX, budget: CallBudget | None = None
    ) -> None:
        """`budget`: each caller's rate for the calls that are not validations (None: none)."""
        self._auth = auth
        self._prefix = prefix
        self._budget = budget
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
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if method.startswith(self._prefix):
            wrapped = _wrap(handler, method, self._auth, self._budget)
        else:
            wrapped = _authenticated_only(handler, method, self._auth)
        self._wrapped[method] = wrapped
        return wrapped

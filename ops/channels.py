"""Client channels to a passgate server: TLS with the dev CA plus a bearer token.

Every client (the gate CLI, the load test, the benchmarks, the tests) opens its channel here so that
they all find the credentials the same way: `PASSGATE_CREDENTIALS`, else `<data-dir>/credentials`
as created by `python -m ops.credentials init` or by run_cluster on its first start.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

ENV_CREDENTIALS = "PASSGATE_CREDENTIALS"
DEFAULT_DATA_DIR = Path("data")


def default_credentials_dir(data_dir: Path | None = None) -> Path:
    """`PASSGATE_CREDENTIALS` if set, else `<data_dir or ./data>/credentials`."""
    env = os.environ.get(ENV_CREDENTIALS)
    if env:
        return Path(env)
    return Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR) / "credentials"


def token(identity: str = "admin", creds_dir: Path | None = None) -> str:
    """The bearer token of `identity` (a name under tokens/, or a path to a .jwt file)."""
    return _token_path(identity, creds_dir).read_text(encoding="ascii").strip()


def channel(
    target: str,
    identity: str = "admin",
    creds_dir: Path | None = None,
    options: Sequence[tuple[str, Any]] = (),
    insecure: bool = False,
) -> grpc.Channel:
    """A blocking channel that sends `identity`'s token on every call."""
    bearer = token(identity, creds_dir)
    if insecure:
        plain = grpc.insecure_channel(target, options=list(options))
        return grpc.intercept_channel(plain, _SyncBearer(bearer))
    creds = grpc.composite_channel_credentials(
        _tls(creds_dir), grpc.access_token_call_credentials(bearer)
    )
    return grpc.secure_channel(target, creds, options=list(options))


def aio_channel(
    target: str,
    identity: str = "admin",
    creds_dir: Path | None = None,
    options: Sequence[tuple[str, Any]] = (),
    insecure: bool = False,
) -> grpc.aio.Channel:
    """An asyncio channel that sends `identity`'s token on every call."""
    bearer = token(identity, creds_dir)
    if insecure:
        interceptors = [cls(bearer) for cls in _AIO_BEARERS]
        return grpc.aio.insecure_channel(
            target,
            options=list(options),
            interceptors=interceptors,  # type: ignore[arg-type]
        )
    creds = grpc.composite_channel_credentials(
        _tls(creds_dir), grpc.access_token_call_credentials(bearer)
    )
    return grpc.aio.secure_channel(target, creds, options=list(options))


def no_token_channel(
    target: str, creds_dir: Path | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """TLS without a token: what an outsider (or a load balancer's health check) gets."""
    return grpc.secure_channel(target, _tls(creds_dir), options=list(options))


def _token_path(identity: str, creds_dir: Path | None) -> Path:
    # A path to a token file wins, so a gate can be given just its own .jwt.
    if identity.endswith(".jwt") or os.sep in identity:
        return Path(identity)
    return _dir(creds_dir) / "tokens" / f"{identity}.jwt"


def _tls(creds_dir: Path | None) -> grpc.ChannelCredentials:
    ca = (_dir(creds_dir) / "ca.pem").read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=ca)


def _dir(creds_dir: Path | None) -> Path:
    return Path(creds_dir) if creds_dir is not None else default_credentials_dir()


def _with_bearer(details: Any, bearer: str) -> Any:
    """A copy of the aio call details with the authorization header appended."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {bearer}")
    return details._replace(metadata=metadata)


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Attaches the token on a plaintext channel (call credentials need TLS)."""

    def __init__(self, bearer: str) -> None:
        self._bearer = bearer

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_SyncDetails.of(client_call_details, self._bearer), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_SyncDetails.of(client_call_details, self._bearer), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_SyncDetails.of(client_call_details, self._bearer), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_SyncDetails.of(client_call_details, self._bearer), request_iterator)


class _SyncDetails(grpc.ClientCallDetails):
    """grpc's sync ClientCallDetails is an abstract class, not a namedtuple: rebuild it."""

    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)

    @classmethod
    def of(cls, base: Any, bearer: str) -> _SyncDetails:
        metadata = list(base.metadata or ())
        metadata.append(("authorization", f"Bearer {bearer}"))
        return cls(base, metadata)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, bearer: str) -> None:
        self._bearer = bearer

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_bearer(client_call_details, self._bearer), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, bearer: str) -> None:
        self._bearer = bearer

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(_with_bearer(client_call_details, self._bearer), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, bearer: str) -> None:
        self._bearer = bearer

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_with_bearer(client_call_details, self._bearer), request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, bearer: str) -> None:
        self._bearer = bearer

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(_with_bearer(client_call_details, self._bearer), request_iterator)


# One aio interceptor per call shape: grpc.aio dispatches by the base class.
_AIO_BEARERS = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)

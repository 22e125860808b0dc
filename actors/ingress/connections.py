"""Connection hygiene for an ingress process: limits on connections, streams, calls and watchers,
each caller's rate for the calls that are not validations (`call_budget.py`), keepalive and
timeouts, as flags with defaults for a gate fleet, and the grpc core options they become. Also
raises the process's open-file limit so the connection cap, not the kernel, decides.

What each grpc option does in grpcio 1.85 (checked against a live server with raw sockets):
- `grpc.max_allowed_incoming_connections`: a connection over the cap is accepted and closed at
  once, before any HTTP/2 byte, so a flood of connections costs no lasting file descriptor.
- `grpc.server_handshake_timeout_ms`: a connection that has not sent the HTTP/2 preface and
  SETTINGS within it gets GOAWAY and is closed (default two minutes).
- `grpc.max_connection_idle_ms`: a connection with no call for that long gets GOAWAY and is
  closed; keepalive pings do not count as activity, an open watch stream does.
- `grpc.keepalive_time_ms` with `grpc.keepalive_permit_without_calls`: the server pings a
  connection that has been quiet that long, with or without calls; `grpc.http2.ping_timeout_ms`
  closes it when a ping (keepalive or flow-control probe) is not acknowledged in time. Without
  the ping timeout an unanswered ping is only given up after a minute. `grpc.keepalive_timeout_ms`
  is set to the same value for clarity.
- `grpc.http2.min_ping_interval_without_data_ms`: clients may ping this often without sending
  data; faster pingers get GOAWAY "too_many_pings" after two strikes (default five minutes, which
  would drop gates that keep their watch streams alive with pings).
- `grpc.max_concurrent_streams`: announced in SETTINGS; a stream over it is refused
  (RST_STREAM REFUSED_STREAM) and grpc clients queue instead of opening it.
- `maximum_concurrent_rpcs` of grpc.aio.server: calls over it end RESOURCE_EXHAUSTED at once.
- `grpc.max_connection_age_ms` / `_grace_ms`: GOAWAY after the age (jittered), open calls get the
  grace, then the connection closes; spreads long-lived gates over SO_REUSEPORT processes.
- `grpc.http2.max_pings_without_data` is left alone: it limits the pinging side, and the server's
  keepalive pings ignore it.
"""

from __future__ import annotations

import argparse
import logging
import resource
from dataclasses import asdict, dataclass, fields
from typing import Any

log = logging.getLogger("passgate.connections")

# File descriptors kept free of gRPC connections: Ray's channels to its GCS and raylet, the LMDB
# catalog reader, the metrics server, logs and the event loop need them whatever the load.
FD_HEADROOM = 512
# Clients may ping every 10 s without data, so a gate's keepalive does not get it disconnected.
MIN_CLIENT_PING_INTERVAL_MS = 10_000
# Calls open when a connection reaches --max-connection-age-ms get this long to finish.
CONNECTION_AGE_GRACE_MS = 30_000


@dataclass(frozen=True)
class ConnectionLimits:
    """Per ingress process; 0 switches off the idle timeout, keepalive pings or the age limit."""

    max_connections: int = 4096
    max_streams_per_connection: int = 1024
    max_concurrent_rpcs: int = 20_000
    max_watchers: int = 10_000
    idle_timeout_ms: int = 300_000
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    handshake_timeout_ms: int = 10_000
    max_connection_age_ms: int = 0
    max_message_bytes: int = 16 << 20
    calls_per_caller_per_s: int = 500

    @classmethod
    def from_args(cls, args: Any) -> ConnectionLimits:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def argv(self) -> list[str]:
        """The same limits as command-line flags, for an extra ingress process."""
        out: list[str] = []
        for name, value in asdict(self).items():
            out += [_flag(name), str(value)]
        return out

    def grpc_options(self, max_connections: int) -> list[tuple[str, int]]:
        """Channel arguments for grpc.aio.server; `max_connections` as capped by the fd limit."""
        options = [
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.server_handshake_timeout_ms", self.handshake_timeout_ms),
        ]
        if self.idle_timeout_ms:
            options.append(("grpc.max_connection_idle_ms", self.idle_timeout_ms))
        if self.keepalive_time_ms:
            options += [
                ("grpc.keepalive_time_ms", self.keepalive_time_ms),
                ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
                ("grpc.http2.ping_timeout_ms", self.keepalive_timeout_ms),
            ]
        if self.max_connection_age_ms:
            options += [
                ("grpc.max_connection_age_ms", self.max_connection_age_ms),
                ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_MS),
            ]
        return options


_HELP = {
    "max_connections": "open connections per ingress process; more are closed at once "
    "(capped below the open-file limit)",
    "max_streams_per_connection": "concurrent HTTP/2 streams per connection",
    "max_concurrent_rpcs": "calls in progress per ingress process; more get RESOURCE_EXHAUSTED",
    "max_watchers": "WatchVenueStatus streams per ingress process; more get RESOURCE_EXHAUSTED",
    "idle_timeout_ms": "close a connection without calls after this long (0 = never)",
    "keepalive_time_ms": "ping a quiet connection after this long (0 = never)",
    "keepalive_timeout_ms": "close a connection whose ping is unanswered this long",
    "handshake_timeout_ms": "close a connection that has not started HTTP/2 within this",
    "max_connection_age_ms": f"GOAWAY after this long, then {CONNECTION_AGE_GRACE_MS // 1000} s "
    "for open calls (0 = never)",
    "max_message_bytes": "largest request message",
    "calls_per_caller_per_s": "calls a second each caller (token subject) may make other than "
    "validations; more wait their turn, up to 2 s, then get RESOURCE_EXHAUSTED (0 = no limit)",
}
# The rest may be 0: a switched-off timeout, or no watchers at all.
_POSITIVE = {
    "max_connections",
    "max_streams_per_connection",
    "max_concurrent_rpcs",
    "keepalive_timeout_ms",
    "handshake_timeout_ms",
    "max_message_bytes",
}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per ConnectionLimits field, with its default and help."""
    defaults = ConnectionLimits()
    for f in fields(ConnectionLimits):
        default = getattr(defaults, f.name)
        parser.add_argument(
            _flag(f.name),
            type=_positive if f.name in _POSITIVE else _non_negative,
            default=default,
            metavar="MS" if f.name.endswith("_ms") else "N",
            help=f"{_HELP[f.name]} (default {default})",
        )


def raise_fd_limit() -> int:
    """Raises this process's soft open-file limit to the hard limit; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


def connection_cap(wanted: int, fd_limit: int) -> int:
    """`wanted`, lowered so FD_HEADROOM descriptors stay free for everything but connections."""
    cap = max(1, min(wanted, fd_limit - FD_HEADROOM))
    if cap < wanted:
        log.warning(
            "--max-connections lowered to %d: the open-file limit is %d and %d are kept free",
            cap,
            fd_limit,
            FD_HEADROOM,
        )
    return cap


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value

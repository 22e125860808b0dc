"""Connection-limit flags: defaults, validation, the grpc options they become, the hand-over to
extra ingress processes, and the cap that keeps file descriptors free."""

from __future__ import annotations

import argparse
import resource

import pytest

from actors.ingress.connections import (
    FD_HEADROOM,
    ConnectionLimits,
    add_flags,
    connection_cap,
    raise_fd_limit,
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(argv)


def test_defaults_suit_a_gate_fleet() -> None:
    limits = ConnectionLimits.from_args(_parse())
    assert limits == ConnectionLimits()
    options = dict(limits.grpc_options(limits.max_connections))
    assert options["grpc.max_allowed_incoming_connections"] == 4096
    assert options["grpc.max_concurrent_streams"] == 1024
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.keepalive_time_ms"] == 30_000
    # An unanswered ping of any kind closes the connection after the keepalive timeout.
    assert options["grpc.http2.ping_timeout_ms"] == options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.server_handshake_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert "grpc.max_connection_age_ms" not in options


def test_flags_reach_the_options() -> None:
    args = _parse(
        "--max-connections", "50", "--max-streams-per-connection", "8", "--idle-timeout-ms", "0",
        "--keepalive-time-ms", "0", "--max-connection-age-ms", "60000", "--max-watchers", "0",
    )  # fmt: skip
    limits = ConnectionLimits.from_args(args)
    assert limits.max_watchers == 0
    options = dict(limits.grpc_options(40))
    assert options["grpc.max_allowed_incoming_connections"] == 40
    assert options["grpc.max_concurrent_streams"] == 8
    assert "grpc.max_connection_idle_ms" not in options
    assert "grpc.keepalive_time_ms" not in options
    assert options["grpc.max_connection_age_ms"] == 60_000
    assert options["grpc.max_connection_age_grace_ms"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ("--max-connections", "0"),
        ("--max-streams-per-connection", "-1"),
        ("--keepalive-timeout-ms", "0"),
        ("--idle-timeout-ms", "-5"),
        ("--max-watchers", "many"),
    ],
)
def test_bad_values_are_refused(argv: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)
    assert argv[0] in capsys.readouterr().err


def test_extra_ingress_processes_get_the_same_limits() -> None:
    limits = ConnectionLimits(max_connections=77, idle_timeout_ms=1234, max_watchers=5)
    assert ConnectionLimits.from_args(_parse(*limits.argv())) == limits


def test_connections_leave_headroom_below_the_fd_limit() -> None:
    assert connection_cap(4096, 1 << 20) == 4096
    assert connection_cap(4096, 1024) == 1024 - FD_HEADROOM
    assert connection_cap(10, 100) == 1  # never zero: the server must still take a connection


def test_the_fd_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if soft > 64:  # start lower, so there is something to raise
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        got = raise_fd_limit()
        assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got >= soft
        if hard != resource.RLIM_INFINITY:
            assert got == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

"""Start-up waits in actors.cluster: each is bounded and ends in one line naming the actor.

Ray is never started: `ray.get` and `ray.get_actor` are replaced by stand-ins that fail the way a
hung or crash-looping actor makes them fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from ray.exceptions import GetTimeoutError, RayActorError

from actors import cluster, routing
from actors.errors import StartupFailed


def _get_failing_with(exc: Exception, bad: str) -> Any:
    def get(ref: str, timeout: float | None = None) -> str:
        assert timeout is not None  # every start-up wait is bounded
        if ref == bad:
            raise exc
        return "pong"

    return get


def _refusal(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> str:
    monkeypatch.setattr(cluster.ray, "get", _get_failing_with(exc, "ref-1"))
    with pytest.raises(StartupFailed) as err:
        cluster._await_ready({"shard actor 0": "ref-0", "shard actor 1": "ref-1"}, 5.0)
    line = str(err.value)
    assert "\n" not in line
    return line


def test_all_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.ray, "get", _get_failing_with(RuntimeError("unused"), "none"))
    cluster._await_ready({"the catalog actor": "ref-0"}, 5.0)


def test_timeout_names_the_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _refusal(monkeypatch, GetTimeoutError("Get timed out"))
    assert line.startswith("start-up: shard actor 1 did not answer within 5 s")


def test_constructor_error_gives_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = (
        "The actor died because of an error raised in its creation task, ray::VenueShard\n"
        '  File "shard.py", line 80, in __init__\n'
        "actors.errors.StorageError: cannot open shard store: MDB_INVALID\n"
    )
    exc = RayActorError(error_msg=trace, actor_init_failed=True)
    line = _refusal(monkeypatch, exc)
    assert line == (
        "start-up: shard actor 1 died while starting: "
        "actors.errors.StorageError: cannot open shard store: MDB_INVALID"
    )


def test_dead_process_points_to_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    exc = RayActorError(error_msg="The actor died unexpectedly\n\tpid: 1\n\tip: 1.2.3.4")
    line = _refusal(monkeypatch, exc)
    assert line == "start-up: shard actor 1 died while starting; see the log above"


def test_connect_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, namespace: str | None = None) -> Any:
        raise ValueError(f"Failed to look up actor {name}")

    monkeypatch.setattr(routing.ray, "get_actor", missing)
    with pytest.raises(StartupFailed, match="were not found within 0 s"):
        routing.connect(2, timeout_s=0.0)

"""The one error map: every passgate error class is mapped, foreign errors never leak their text,
and every message is short and printable."""

from __future__ import annotations

import grpc
import lmdb
import pytest
import ray.exceptions as rex

from actors import errors
from actors.errors import BadRequest, PassgateError, StorageFull
from actors.ingress.error_map import MAX_MESSAGE_CHARS, PASSGATE_CODES, status_of

Code = grpc.StatusCode


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def _defined_errors() -> set[type]:
    return {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, PassgateError)
    }


def test_every_passgate_error_class_is_mapped_explicitly() -> None:
    classes = _all_subclasses(PassgateError) | _defined_errors()
    assert len(classes) >= 8
    missing = sorted(c.__name__ for c in classes if c not in PASSGATE_CODES)
    assert missing == [], f"add these to PASSGATE_CODES: {missing}"


@pytest.mark.parametrize("cls", sorted(_defined_errors() - {PassgateError}, key=str))
def test_each_error_gets_its_own_code_not_internal(cls: type[PassgateError]) -> None:
    exc = BadRequest("field", "problem") if cls is BadRequest else cls("what went wrong")
    code, message = status_of(exc)
    assert code == PASSGATE_CODES[cls] != Code.INTERNAL
    assert "what went wrong" in message or "field: problem" in message


def test_a_bare_passgate_error_is_internal_and_says_nothing() -> None:
    assert status_of(PassgateError("shard 3 at 10.1.2.3 pid 4242")) == (
        Code.INTERNAL,
        "internal error",
    )


def test_an_error_raised_in_an_actor_is_unwrapped_without_its_traceback() -> None:
    cause = StorageFull("shard commit failed: storage full")
    wrapped = rex.RayTaskError(
        "decide_batch", 'Traceback (most recent call last):\n  File "x.py"\npid=4242', cause
    ).as_instanceof_cause()
    code, message = status_of(wrapped)
    assert code == Code.RESOURCE_EXHAUSTED
    assert "Traceback" not in message and "pid" not in message
    assert message.startswith("shard commit failed: storage full")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        pytest.param(lmdb.MapFullError("mdb_put: MDB_MAP_FULL"), Code.RESOURCE_EXHAUSTED, id="map"),
        pytest.param(lmdb.DiskError("/data/x: No space"), Code.RESOURCE_EXHAUSTED, id="disk"),
        pytest.param(lmdb.CorruptedError("/data/x"), Code.UNAVAILABLE, id="lmdb"),
        pytest.param(
            rex.GetTimeoutError("GetTimeoutError at 10.0.0.7"), Code.UNAVAILABLE, id="get"
        ),
        pytest.param(rex.RayActorError(), Code.UNAVAILABLE, id="actor-died"),
        pytest.param(TimeoutError(), Code.RESOURCE_EXHAUSTED, id="timeout"),
        pytest.param(RuntimeError("worker 10.0.0.9:6379 pid 77"), Code.INTERNAL, id="bug"),
    ],
)
def test_foreign_errors_get_a_fixed_message(exc: BaseException, code: grpc.StatusCode) -> None:
    got, message = status_of(exc)
    assert got == code
    for leak in ("10.0.0", "pid", "/data", "MDB_", "6379"):
        assert leak not in message


def test_messages_are_short_and_printable() -> None:
    code, message = status_of(BadRequest("request_id", "x" * 5000 + "\x00\n"))
    assert code == Code.INVALID_ARGUMENT
    assert len(message) <= MAX_MESSAGE_CHARS
    assert message.isprintable()

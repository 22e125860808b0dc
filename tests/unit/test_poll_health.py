"""actors/ingress/poll_health.py: a failing poll of the shards' figures is told once, then at most
once a minute with the count, and its recovery once; a Ray error's many lines become one."""

from __future__ import annotations

from actors.ingress.poll_health import WARN_EVERY_S, PollHealth, first_line

RAY_ERROR = RuntimeError(
    "The actor died unexpectedly before finishing this task.\n\tclass_name: ShardService\n\tpid: 7"
)


def test_a_run_of_failures_is_one_line_then_one_a_minute_then_the_recovery() -> None:
    health = PollHealth()
    lines = [health.failed(RAY_ERROR, float(second)) for second in range(int(WARN_EVERY_S) + 3)]
    said = [line for line in lines if line is not None]
    assert said == [
        "metrics poll failed: The actor died unexpectedly before finishing this task.",
        "metrics poll still failing: 60 more failures (61 in a row); shard figures are stale: "
        "The actor died unexpectedly before finishing this task.",
    ]
    assert health.failing == WARN_EVERY_S + 3
    assert health.succeeded() == "metrics poll recovered after 63 failures"
    assert health.succeeded() is None  # healthy polls say nothing


def test_a_new_run_of_failures_after_a_recovery_is_told_at_once() -> None:
    health = PollHealth()
    assert health.failed(RAY_ERROR, 0.0) is not None
    health.succeeded()
    assert health.failed(RAY_ERROR, 1.0) == (
        "metrics poll failed: The actor died unexpectedly before finishing this task."
    )


def test_an_error_without_text_is_named_by_its_type_and_long_lines_are_cut() -> None:
    assert first_line(TimeoutError()) == "TimeoutError"
    assert len(first_line(ValueError("x" * 1000))) == 200

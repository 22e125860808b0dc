"""Whether the ingress's once-a-second poll of the shards' figures works, told once, not once a
second: the first failure of a run of failures is logged (its first line only), then at most
one line a minute with the count, and the recovery once. The caller counts every failure in
`passgate_shard_poll_failures_total` and stamps every success in
`passgate_shard_poll_last_success_timestamp_seconds`, so a capacity planner can tell fresh
shard figures from stale ones (the gauges keep their last values while the poll fails)."""

from __future__ import annotations

WARN_EVERY_S = 60.0


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (Ray's errors run to a dozen lines)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class PollHealth:
    """A run of failures and what to log of it; the caller passes the monotonic time."""

    def __init__(self) -> None:
        self.failing = 0  # failures in a row
        self._unsaid = 0  # failures since the last line logged
        self._next_line_at = 0.0

    def failed(self, exc: BaseException, now: float) -> str | None:
        """A line to log for this failure, or None while one was logged less than a minute ago."""
        self.failing += 1
        self._unsaid += 1
        if self.failing > 1 and now < self._next_line_at:
            return None
        self._next_line_at = now + WARN_EVERY_S
        unsaid, self._unsaid = self._unsaid, 0
        if self.failing == 1:
            return f"metrics poll failed: {first_line(exc)}"
        return (
            f"metrics poll still failing: {unsaid} more failures ({self.failing} in a row); "
            f"shard figures are stale: {first_line(exc)}"
        )

    def succeeded(self) -> str | None:
        """A line to log when this success ends a run of failures, else None."""
        failing, self.failing, self._unsaid = self.failing, 0, 0
        return f"metrics poll recovered after {failing} failures" if failing else None

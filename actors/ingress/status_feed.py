"""The shared per-venue status feed behind `WatchVenueStatus`.

One poll loop per watched venue asks the owning shard for the venue's status once per tick (at
least INTERVAL_S apart), however many callers watch it, and hands each change to every watcher of
that venue. The loop starts with the venue's first watcher and stops when its last one leaves. A
watcher holds only the latest value, so a slow reader never holds up the loop or the other
watchers: it skips to the newest status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from actors.errors import NotFound, Overloaded
from actors.ingress import metrics

INTERVAL_S = 0.5
DEFAULT_MAX_WATCHERS = 10_000
# Watchers woken per event-loop turn: each wakes to write one gRPC message (~50-100 us), so
# waking thousands at once would stall the gates' calls on this loop for tens of milliseconds.
FANOUT_CHUNK = 64

Row = dict[str, Any]
Fetch = Callable[[str], Awaitable[Row | None]]


class FeedClosed(Exception):
    """The server is shutting down; the watch ends and the caller may watch again elsewhere."""


def _comparable(row: Row) -> Row:
    # as_of_ms moves on every poll; only a change in the figures is news to a watcher.
    return {**row, "as_of_ms": 0}


class Watcher:
    """One caller's view of a venue's feed: the newest status not yet taken, or why it ended."""

    def __init__(self, feed: StatusFeed, venue_id: str) -> None:
        self.venue_id = venue_id
        self._feed = feed
        self._latest: Any = None
        self._error: BaseException | None = None
        self._ready = asyncio.Event()

    def _offer(self, value: Any) -> None:
        self._latest = value  # replaces a value the caller has not taken yet
        self._ready.set()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()

    async def next(self) -> Any:
        """Waits for the next change; raises the reason when the venue's feed ended."""
        await self._ready.wait()
        self._ready.clear()
        if self._error is not None:
            raise self._error
        value, self._latest = self._latest, None
        return value

    def close(self) -> None:
        """Leaves the feed; safe to call more than once."""
        self._feed._leave(self)


class _Venue:
    """The loop and watchers of one venue."""

    def __init__(self, venue_id: str) -> None:
        self.venue_id = venue_id
        self.watchers: set[Watcher] = set()
        self.key: Row | None = None
        self.latest: Any = None
        self.task: asyncio.Task[None] | None = None


class StatusFeed:
    """Per-venue poll loops fanned out to watchers, with a cap on watchers in this process.

    `fetch(venue_id)` returns the shard's status row, or None for an unknown venue; `render` turns
    a row into what watchers receive, once per change rather than once per watcher.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        max_watchers: int = DEFAULT_MAX_WATCHERS,
        interval_s: float = INTERVAL_S,
        render: Callable[[Row], Any] = lambda row: row,
        fanout_chunk: int = FANOUT_CHUNK,
    ) -> None:
        self._fetch = fetch
        self._render = render
        self._chunk = fanout_chunk
        self.max_watchers = max_watchers
        self.interval_s = interval_s
        self._venues: dict[str, _Venue] = {}
        self._watchers = 0
        self._closed = False
        self.polls = 0

    @property
    def watchers(self) -> int:
        return self._watchers

    @property
    def venues(self) -> int:
        """Venues with a running poll loop."""
        return len(self._venues)

    def subscribe(self, venue_id: str) -> Watcher:
        """A new watcher of `venue_id`; its first `next()` returns the current status.
        Raises Overloaded past `max_watchers` and FeedClosed once the feed is closed."""
        if self._closed:
            raise FeedClosed("server shutting down")
        if self._watchers >= self.max_watchers:
            raise Overloaded("too many status watchers")
        venue = self._venues.get(venue_id)
        if venue is None:
            venue = self._venues[venue_id] = _Venue(venue_id)
            venue.task = asyncio.get_running_loop().create_task(self._run(venue))
        watcher = Watcher(self, venue_id)
        venue.watchers.add(watcher)
        self._count(+1)
        if venue.latest is not None:
            watcher._offer(venue.latest)
        return watcher

    def close(self) -> None:
        """Stops every loop and ends every watch with FeedClosed; later subscribes are refused."""
        self._closed = True
        for venue in list(self._venues.values()):
            self._end(venue, FeedClosed("server shutting down"))

    def _leave(self, watcher: Watcher) -> None:
        venue = self._venues.get(watcher.venue_id)
        if venue is None or watcher not in venue.watchers:
            return
        venue.watchers.discard(watcher)
        self._count(-1)
        if not venue.watchers:
            self._stop(venue)

    def _count(self, delta: int) -> None:
        self._watchers += delta
        metrics.STATUS_WATCHERS.inc(delta)

    def _stop(self, venue: _Venue) -> None:
        del self._venues[venue.venue_id]
        if venue.task is not None:
            venue.task.cancel()  # from inside the loop too: it returns right after

    def _end(self, venue: _Venue, error: BaseException) -> None:
        """The venue's feed is over: every watcher gets `error`, and a later watcher starts anew."""
        watchers = list(venue.watchers)
        venue.watchers.clear()
        self._count(-len(watchers))
        self._stop(venue)
        for watcher in watchers:
            watcher._fail(error)

    async def _run(self, venue: _Venue) -> None:
        while True:
            try:
                row = await self._fetch(venue.venue_id)
            except Exception as exc:  # the watchers learn why; they may watch again
                self._end(venue, exc)
                return
            self.polls += 1
            metrics.STATUS_FEED_POLLS.inc()
            if row is None:
                self._end(venue, NotFound("venue_id: unknown venue"))
                return
            await self._publish(venue, row)
            await asyncio.sleep(self.interval_s)

    async def _publish(self, venue: _Venue, row: Row) -> None:
        key = _comparable(row)
        if key == venue.key:
            return
        venue.key = key
        venue.latest = value = self._render(row)  # a watcher joining meanwhile starts from it
        watchers = list(venue.watchers)
        for start in range(0, len(watchers), self._chunk):
            if start:
                await asyncio.sleep(0)  # let the loop serve other calls between chunks
            for watcher in watchers[start : start + self._chunk]:
                watcher._offer(value)

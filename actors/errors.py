"""passgate's own error hierarchy: LMDB and Ray failures become these at the actor boundary."""

from __future__ import annotations

import lmdb

# How every error a client may retry ends (the error map adds it where a message lacks it).
RETRY = "retry with the same request_id"


class PassgateError(Exception):
    """Base of every error passgate raises on purpose."""


class StorageError(PassgateError):
    """LMDB could not read or commit; nothing was acknowledged."""


class ShardUnavailable(PassgateError):
    """The owning shard did not answer (crashed and restarting, or gone)."""


class Overloaded(PassgateError):
    """Too much in flight, or the deadline would pass before an answer."""


class BadRequest(PassgateError):
    """A malformed call; `field` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @classmethod
    def from_text(cls, text: str) -> BadRequest:
        """From a `field: problem` line (as a shard's invalid decision carries it)."""
        field, _, problem = text.partition(": ")
        return cls(field, problem)


class DataDirMismatch(PassgateError):
    """The data directory was created with another shard count."""


class StorageFull(StorageError):
    """The disk or the LMDB map is full; nothing was acknowledged. Heals once space is freed."""


class NotFound(PassgateError):
    """The named pass, venue or slot does not exist."""


class StoreCorrupt(PassgateError):
    """A store is missing, empty or damaged although the data directory recorded data in it."""


class StartupFailed(PassgateError):
    """An actor did not answer within its start-up timeout, or died while starting."""


class Unauthenticated(PassgateError):
    """No credential, or one that is malformed, expired, wrongly signed or revoked."""


class PermissionDenied(PassgateError):
    """A valid credential whose role, venue or gate does not allow this call."""


def storage_error(what: str, exc: lmdb.Error) -> StorageError:
    """LMDB's error as passgate's: a full map or disk is told apart (it heals when space frees)."""
    if isinstance(exc, lmdb.MapFullError | lmdb.DiskError) or "No space" in str(exc):
        return StorageFull(f"{what}: storage full")
    return StorageError(f"{what}: {type(exc).__name__}")

"""The node's shared, advisory LMDB environments (signed-code claims, shared-card sightings): one
open per process, counted, because LMDB allows a process to open an environment only once and
shards constructed side by side in one process (unit tests, benchmarks) share it. Neither store
is fsynced: a claim or a sighting lost in a power cut costs a replay window or a flag, never an
entry."""

from __future__ import annotations

from pathlib import Path

import lmdb

from actors.errors import storage_error


class _Shared:
    __slots__ = ("env", "users")

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.users = 0


_OPEN: dict[str, _Shared] = {}


def acquire(path: Path, map_size: int, max_dbs: int, what: str) -> lmdb.Environment:
    """Opens (or shares) the environment at `path`; `what` names it in an error."""
    path.mkdir(parents=True, exist_ok=True)
    name = str(path.resolve())
    shared = _OPEN.get(name)
    if shared is None:
        try:
            env = lmdb.open(
                name,
                map_size=map_size,
                max_dbs=max_dbs,
                sync=False,
                metasync=False,
                readahead=False,
                max_readers=1024,
            )
        except lmdb.Error as exc:
            raise storage_error(f"cannot open {what} at {path}", exc) from exc
        shared = _OPEN[name] = _Shared(env)
    shared.users += 1
    return shared.env


def release(path: Path) -> None:
    """Closes the environment once its last user in this process lets go."""
    name = str(path.resolve())
    shared = _OPEN.get(name)
    if shared is None:
        return
    shared.users -= 1
    if shared.users == 0:
        del _OPEN[name]
        shared.env.close()

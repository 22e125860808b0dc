"""A full disk: admits are refused RESOURCE_EXHAUSTED (never UNKNOWN, nothing acknowledged), and
the server recovers by itself once space is freed; a retried request_id then commits once.

The data directory lives on a small tmpfs mounted for this test (needs root, as CI runs; skipped
elsewhere), which a filler file then fills up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, quota_pb2, quota_pb2_grpc
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE, card, import_passes
from tests.e2e.harness import Server, running_server

pytestmark = pytest.mark.e2e
TMPFS_MB = 96
MAX_FILL_BATCHES = 40


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mount = tmp_path_factory.mktemp("small-disk")
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def server(small_disk: Path) -> Iterator[Server]:
    args = ("--shards", "1", "--seed-passes", "0", "--frozen-clock", FROZEN)
    with running_server(small_disk / "data", *args, config=TEST_PROVINCE) as srv:
        with srv.channel() as channel:
            assert import_passes(channel).rejected == 0
        yield srv


def _fill(path: Path) -> int:
    """Writes until the file system says no; returns the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while written < TMPFS_MB << 20:
            written += f.write(chunk)
    small = b"\0" * 4096
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(small)
    return written


def _batch(tag: str, n: int = 1000) -> gate_pb2.ValidateBatchRequest:
    # Long request ids make each batch write far more than LMDB can recycle from freed pages.
    return gate_pb2.ValidateBatchRequest(
        requests=[
            gate_pb2.ValidateRequest(
                request_id=f"{tag}-{k}-{uuid.uuid4().hex}{'x' * 80}",
                venue_id="t-lake",
                gate_id="t-lake-g01",
                credential=common_pb2.Credential(kind=CARD, value=card("ANNUAL", k % 400)),
            )
            for k in range(n)
        ]
    )


def test_a_full_disk_refuses_cleanly_and_heals(server: Server, small_disk: Path) -> None:
    with server.channel() as ch:
        gate = gate_pb2_grpc.GateStub(ch)
        quota = quota_pb2_grpc.QuotaStub(ch)
        one = gate_pb2.ValidateRequest(
            request_id="before-full",
            venue_id="t-lake",
            gate_id="t-lake-g02",
            credential=common_pb2.Credential(kind=CARD, value=card("ANNUAL", 1)),
        )
        assert gate.Validate(one, timeout=20).allowed
        filler = small_disk / "filler"
        _fill(filler)
        refused = None
        for i in range(MAX_FILL_BATCHES):
            out = gate.ValidateBatch(_batch(f"fill{i}"), timeout=60)
            failed = [d for d in out.decisions if not d.allowed]
            if failed:
                refused = failed[0]
                break
        assert refused is not None, "the disk never filled up"
        assert refused.message.startswith("RESOURCE_EXHAUSTED: "), refused.message
        probe = gate_pb2.ValidateRequest(
            request_id="while-full",
            venue_id="t-lake",
            gate_id="t-lake-g03",
            credential=common_pb2.Credential(kind=CARD, value=card("ANNUAL", 2)),
        )
        with pytest.raises(grpc.RpcError) as err:
            gate.Validate(probe, timeout=20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for leak in ("Traceback", "No space", "mdb", "/"):
            assert leak not in err.value.details()
        entries_while_full = quota.GetVenueStatus(
            quota_pb2.VenueRef(venue_id="t-lake"), timeout=20
        ).entries_today
        filler.unlink()
        # Space is back: the refused request commits on retry, exactly once.
        d = gate.Validate(probe, timeout=20)
        assert d.allowed and d.pass_id == "ANNUAL-2"
        assert gate.Validate(probe, timeout=20) == d
        after = quota.GetVenueStatus(quota_pb2.VenueRef(venue_id="t-lake"), timeout=20)
        assert after.entries_today == entries_while_full + 1

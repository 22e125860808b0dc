"""The holder-wide credit ledger against a real server: 3 shards, 2 ingress processes, one ledger.

A GOOD-tier holder of a product with a 500-yuan debt limit pays later 90, 300 and 230 yuan at
three venues owned by three different shards: the third is refused, and GetPass shows the debt and
the charges behind it. An annulled entry's charge is released. Many pay-later entries for the same
holders, at venues of different shards and through both ingress processes at once, never take a
holder over the limit; and a SIGKILL of the ledger's process in the middle loses nothing and counts
nothing twice: each holder's debt in GetPass is the sum of the charges of the entries the gates
were told were admitted.

Its own server (and a copy of the test province with one more product), so the kill and the debts
cannot disturb the other end-to-end tests.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from actors.routing import shard_of
from proto.passgate.v1 import common_pb2, gate_pb2, gate_pb2_grpc, passes_pb2, passes_pb2_grpc
from tests.e2e.conftest import CARD, FROZEN, TEST_PROVINCE
from tests.e2e.harness import Server, running_server
from tests.e2e.test_crash import Ledger

pytestmark = pytest.mark.e2e

N_SHARDS = 3
PRICES = {"t-quota": 90_00, "t-lake": 300_00, "t-pause": 230_00}
LIMIT = 500_00
OWN_CHANNEL = [("grpc.use_local_subchannel_pool", 1)]
R = common_pb2.Reason
HELD = passes_pb2.CHARGE_STATE_HELD
SETTLED = passes_pb2.CHARGE_STATE_SETTLED
RELEASED = passes_pb2.CHARGE_STATE_RELEASED
UNAVAILABLE = "credit check unavailable"
CONCURRENT_HOLDERS = 6
KILL_HOLDERS = 30
SETTLE_SECONDS = 60.0
RETRY_SECONDS = 120.0

WIDE_PRODUCT = """

# tests/e2e/test_credit_ledger.py: one debt limit over venues of three different shards.
[[product]]
id = "t-wide"
name = "Credit pass with a holder-wide limit"
price_yuan = 0

[product.credit]
pay_later_tiers = ["GOOD"]
debt_limit_yuan = 500

[product.default]
entries_per_period = "unlimited"
entries_per_day = "unlimited"
"""


def _province(tmp: Path) -> Path:
    config = tmp / "province"
    shutil.copytree(TEST_PROVINCE, config)
    covers = "".join(
        f'\n[[product.cover]]\nvenues = ["{venue}"]\npay_later_price_yuan = {fen // 100}\n'
        for venue, fen in PRICES.items()
    )
    with (config / "products.toml").open("a") as f:
        f.write(WIDE_PRODUCT + covers)
    return config


def _holder(pass_id: str) -> passes_pb2.PassRecord:
    return passes_pb2.PassRecord(
        pass_id=pass_id,
        product_id="t-wide",
        credentials=[common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}")],
        valid_from="2026-01-01",
        valid_until="2027-12-31",
        credit_tier=passes_pb2.CREDIT_TIER_GOOD,
    )


def _holders() -> Iterator[passes_pb2.PassRecord]:
    yield from (_holder(f"WIDE-{i}") for i in range(3))
    yield from (_holder(f"CONC-{i}") for i in range(CONCURRENT_HOLDERS))
    yield from (_holder(f"KILL-{i}") for i in range(KILL_HOLDERS))
    yield from (_holder(f"SHARDKILL-{i}") for i in range(KILL_HOLDERS))


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    assert sorted(shard_of(v, N_SHARDS) for v in PRICES) == list(range(N_SHARDS))
    tmp = tmp_path_factory.mktemp("credit-ledger")
    args = ("--shards", str(N_SHARDS), "--seed-passes", "0", "--frozen-clock", FROZEN)
    extra = ("--ingress-procs", "2")
    with running_server(tmp / "data", *args, *extra, config=_province(tmp)) as srv:
        with srv.channel() as ch:
            summary = passes_pb2_grpc.PassesStub(ch).UpsertPasses(_holders(), timeout=60)
        assert summary.upserted == 3 + CONCURRENT_HOLDERS + 2 * KILL_HOLDERS, list(summary.errors)
        yield srv


def _req(rid: str, venue: str, pass_id: str) -> gate_pb2.ValidateRequest:
    return gate_pb2.ValidateRequest(
        request_id=rid,
        venue_id=venue,
        gate_id=f"{venue}-g01",
        credential=common_pb2.Credential(kind=CARD, value=f"CARD-{pass_id}"),
    )


def _credit(ch: grpc.Channel, pass_id: str) -> passes_pb2.CreditView:
    view = passes_pb2_grpc.PassesStub(ch).GetPass(passes_pb2.PassRef(pass_id=pass_id), timeout=30)
    assert view.HasField("credit")
    return view.credit


def _settled_credit(ch: grpc.Channel, pass_id: str) -> passes_pb2.CreditView:
    """The credit view once no charge is held any more (settles and releases are sent after the
    shard's commit, without the gate waiting for them)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        credit = _credit(ch, pass_id)
        if all(c.state != HELD for c in credit.charges) or time.monotonic() > deadline:
            return credit
        time.sleep(0.2)


def test_the_limit_holds_across_three_shards(wide_server: Server) -> None:
    with wide_server.channel() as ch:
        gate = gate_pb2_grpc.GateStub(ch)
        told = [gate.Validate(_req(f"three-{v}", v, "WIDE-0"), timeout=30) for v in PRICES]
        first, second, third = told
        assert (first.allowed, first.pay_later, first.charge_fen) == (True, True, 90_00)
        assert (second.allowed, second.pay_later, second.charge_fen) == (True, True, 300_00)
        assert (third.allowed, third.reason) == (False, R.REASON_CREDIT_DENIED)
        assert third.message == "debt over limit: owe 390.00 of 500.00 yuan"
        credit = _settled_credit(ch, "WIDE-0")
    assert (credit.debt_fen, credit.limit_fen, credit.imported_debt_fen) == (390_00, LIMIT, 0)
    shown = sorted((c.venue_id, c.amount_fen, c.state, c.request_id) for c in credit.charges)
    assert shown == [
        ("t-lake", 300_00, SETTLED, "three-t-lake"),
        ("t-quota", 90_00, SETTLED, "three-t-quota"),
    ]
    assert all(c.at_ms > 0 for c in credit.charges)
    holds = _holds_shown(wide_server, lambda h: h["granted"] >= 2 and h["refused"] >= 1)
    assert holds["granted"] >= 2 and holds["refused"] >= 1, holds


def _holds_shown(server: Server, enough: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """passgate_credit_holds summed over the shards, once `enough` (the first ingress polls the
    shards once a second)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            lines = resp.read().decode().splitlines()
        holds = {"granted": 0.0, "refused": 0.0, "unavailable": 0.0}
        for line in lines:
            if line.startswith("passgate_credit_holds{"):
                result = line.split('result="', 1)[1].split('"', 1)[0]
                holds[result] += float(line.rsplit(" ", 1)[1])
        if enough(holds) or time.monotonic() > deadline:
            return holds
        time.sleep(0.5)


def test_annul_releases_the_charge(wide_server: Server) -> None:
    with wide_server.channel() as ch:
        gate = gate_pb2_grpc.GateStub(ch)
        assert gate.Validate(_req("annul-1", "t-lake", "WIDE-1"), timeout=30).pay_later
        annulled = gate.Annul(
            gate_pb2.AnnulRequest(
                request_id="annul-1",
                venue_id="t-lake",
                gate_id="t-lake-g01",
                credential=common_pb2.Credential(kind=CARD, value="CARD-WIDE-1"),
            ),
            timeout=30,
        )
        assert annulled.annulled
        credit = _settled_credit(ch, "WIDE-1")
        assert credit.debt_fen == 0
        assert [(c.request_id, c.state) for c in credit.charges] == [("annul-1", RELEASED)]
        # The released 300 yuan are free again: 300 + 90 fit, 230 more does not.
        again = [
            gate.Validate(_req(f"annul-{v}", v, "WIDE-1"), timeout=30).allowed
            for v in ("t-lake", "t-quota", "t-pause")
        ]
        assert again == [True, True, False]
        assert _settled_credit(ch, "WIDE-1").debt_fen == 390_00


# -- many gates at once ---------------------------------------------------------------------------


class Told(Ledger):
    """What the gates were told, and which requests are still in doubt."""

    def still_open(self, d: gate_pb2.Decision | None) -> bool:
        # "Retry" answers are not recorded by the server: the request is still open.
        return d is None or d.message.startswith(UNAVAILABLE)

    def charges_by_holder(self, requests: dict[str, str]) -> dict[str, int]:
        owed: dict[str, int] = {}
        for rid, d in self.decided.items():
            if d.allowed:
                assert d.pay_later and d.charge_fen > 0
                owed[requests[rid]] = owed.get(requests[rid], 0) + d.charge_fen
        return owed


def _send(server: Server, reqs: list[gate_pb2.ValidateRequest], told: Told, timeout: float) -> None:
    # A private connection per client, so the kernel spreads them over both ingress processes.
    with server.channel(options=OWN_CHANNEL) as ch:
        gate = gate_pb2_grpc.GateStub(ch)
        for r in reqs:
            try:
                told.record(r, gate.Validate(r, timeout=timeout))
            except grpc.RpcError:
                told.record(r, None)


def _workload(prefix: str, holders: list[str], per_holder: int, seed: int) -> list[tuple[str, str]]:
    """(request_id, holder) pairs; the requests go to random venues of all three shards."""
    rnd = random.Random(seed)
    pairs = [(f"{prefix}-{h}-{n}", h) for h in holders for n in range(per_holder)]
    rnd.shuffle(pairs)
    return pairs


def _requests(pairs: list[tuple[str, str]], seed: int) -> list[gate_pb2.ValidateRequest]:
    rnd = random.Random(seed)
    return [_req(rid, rnd.choice(list(PRICES)), holder) for rid, holder in pairs]


def _resolve(server: Server, told: Told) -> None:
    """Retries every request in doubt with its request_id until each has its decision."""
    with server.channel() as ch:
        gate = gate_pb2_grpc.GateStub(ch)
        deadline = time.monotonic() + RETRY_SECONDS
        while told.in_doubt and time.monotonic() < deadline:
            for r in list(told.in_doubt.values()):
                try:
                    told.record(r, gate.Validate(r, timeout=15))
                except grpc.RpcError:
                    time.sleep(0.2)
    assert not told.in_doubt, f"{len(told.in_doubt)} requests never got a decision"


def _check_debts(server: Server, told: Told, holders: list[str], pairs: dict[str, str]) -> int:
    """Each holder's debt in GetPass is the sum of its admitted charges, within the limit, and
    every charge that counts belongs to an admitted entry. Returns the admits."""
    owed = told.charges_by_holder(pairs)
    assert max(owed.values()) <= LIMIT, owed
    admitted = {rid for rid, d in told.decided.items() if d.allowed}
    with server.channel() as ch:
        for holder in holders:
            credit = _settled_credit(ch, holder)
            # An admitted entry may have an earlier, released attempt (a hold of a shard that was
            # killed, or one not answered in time); exactly one of its charges counts.
            counting = [c for c in credit.charges if c.state != RELEASED]
            counted = sorted(c.request_id for c in counting)
            mine = sorted(rid for rid in admitted if pairs[rid] == holder)
            assert credit.debt_fen == owed.get(holder, 0) <= LIMIT, holder
            assert counted == mine, holder
            unsettled = [c for c in counting if c.state != SETTLED]
            assert not unsettled, f"{holder}: admitted but not settled: {unsettled}"
    return len(admitted)


def _served(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("passgate_decisions_total{")
    )


def test_concurrent_entries_through_two_ingresses_never_exceed_the_limit(
    wide_server: Server,
) -> None:
    holders = [f"CONC-{i}" for i in range(CONCURRENT_HOLDERS)]
    pairs = _workload("conc", holders, 12, seed=1)
    reqs = _requests(pairs, seed=2)
    told = Told()
    served_before = [_served(wide_server.metrics_port + k) for k in (0, 1)]
    clients = 12
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda c: _send(wide_server, reqs[c::clients], told, 30), range(clients)))
    _resolve(wide_server, told)
    served = [_served(wide_server.metrics_port + k) - served_before[k] for k in (0, 1)]
    assert min(served) > 0, served  # both ingress processes took part
    admits = _check_debts(wide_server, told, holders, dict(pairs))
    refused = [d for d in told.decided.values() if not d.allowed]
    assert admits >= CONCURRENT_HOLDERS  # each holder's first charge fits
    assert refused and all(d.reason == R.REASON_CREDIT_DENIED for d in refused)


def _ledger_pid_file(server: Server) -> Path:
    return server.data_dir / "ledger" / "ledger-0" / "pid"


def _shard_pid_file(server: Server) -> Path:
    return server.data_dir / "shards" / f"shard-{shard_of('t-lake', N_SHARDS)}" / "pid"


def _wait_for_new_pid(pid_file: Path, old: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            pid = old
        if pid != old:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"no new process wrote {pid_file.name}")


@pytest.mark.parametrize(
    ("victim", "prefix"),
    [(_ledger_pid_file, "KILL"), (_shard_pid_file, "SHARDKILL")],
    ids=["the ledger", "a shard"],
)
def test_sigkill_loses_and_double_counts_nothing(
    wide_server: Server, victim: Callable[[Server], Path], prefix: str
) -> None:
    """SIGKILL of the ledger's process, or of a shard's, in the middle of pay-later traffic."""
    holders = [f"{prefix}-{i}" for i in range(KILL_HOLDERS)]
    pairs = _workload(prefix.lower(), holders, 8, seed=3)
    reqs = _requests(pairs, seed=4)
    told = Told()
    clients = 8
    threads = [
        threading.Thread(target=_send, args=(wide_server, reqs[c::clients], told, 5))
        for c in range(clients)
    ]
    for t in threads:
        t.start()
    try:
        # Wait until a good part of the traffic is answered, then kill the ledger mid-stream.
        deadline = time.monotonic() + 60
        while len(told.decided) < len(reqs) // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        before_kill = len(told.decided)
        pid_file = victim(wide_server)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        _wait_for_new_pid(pid_file, pid)
    finally:
        for t in threads:
            t.join(timeout=RETRY_SECONDS)
    doubted = len(told.in_doubt)
    _resolve(wide_server, told)
    admits = _check_debts(wide_server, told, holders, dict(pairs))
    print(f"admits {admits}, decided before the kill {before_kill}, in doubt after it {doubted}")
    assert 0 < before_kill < len(reqs), "the kill did not land in the middle of the traffic"
    assert admits >= KILL_HOLDERS

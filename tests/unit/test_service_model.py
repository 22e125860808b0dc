"""ServiceModel: the fitted batch time the batcher uses to refuse overload at admission."""

from __future__ import annotations

import pytest

from actors.ingress.service_model import PRIOR_OVERHEAD_S, ServiceModel


def test_fits_overhead_and_per_item_cost() -> None:
    model = ServiceModel()
    for n in (1, 4, 16, 64, 256) * 20:
        model.observe(n, 0.002 + n * 0.00004)
    assert model.overhead_s == pytest.approx(0.002, rel=0.05)
    assert model.per_item_s == pytest.approx(0.00004, rel=0.05)
    assert model.batch_s(100) == pytest.approx(0.006, rel=0.05)


def test_equal_batch_sizes_still_give_a_usable_estimate() -> None:
    model = ServiceModel()
    for _ in range(30):
        model.observe(10, 0.005)
    assert model.batch_s(10) == pytest.approx(0.005, rel=0.01)


def test_wait_grows_with_the_queue_ahead_and_the_calls_in_flight() -> None:
    model = ServiceModel()
    for n in (1, 8, 32) * 10:
        model.observe(n, 0.001 + n * 0.0001)
    idle = model.wait_s(0, 32, 0)
    busy = model.wait_s(0, 32, 8)
    deep = model.wait_s(320, 32, 8)
    assert idle == pytest.approx(model.batch_s(1))
    assert idle < busy < deep
    assert deep == pytest.approx(model.batch_s(8) + model.batch_s(32) * 10 + model.batch_s(1))


def test_one_slow_commit_on_a_quiet_shard_does_not_refuse_good_requests() -> None:
    """Batches of one or two items and a 4 s stall: the estimate for a small queue stays far
    below a gate's 5 s budget."""
    model = ServiceModel()
    for n in (1, 2) * 50:
        model.observe(n, 0.002)
    model.observe(1, 4.0)
    model.observe(2, 0.002)
    assert model.wait_s(3, 256, 2) < 1.0


def test_before_any_observation_the_prior_applies() -> None:
    assert ServiceModel().batch_s(0) == PRIOR_OVERHEAD_S

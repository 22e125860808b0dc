"""Unit tests never start Ray: any attempt to do so fails loudly."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a runtime dependency
        return

    def _refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; put this test under tests/e2e/")

    monkeypatch.setattr(ray, "init", _refuse)

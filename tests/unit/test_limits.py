"""core.limits.text_problem: the fast path for printable ASCII gives the same answers as the
full check at every boundary."""

from __future__ import annotations

import pytest

from core.limits import CREDENTIAL_VALUE, ID, text_problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "required"),
        ("a", None),
        ("a b~", None),  # space and tilde: printable ASCII
        ("x" * 128, None),
        ("x" * 129, "longer than 128 characters"),
        ("é" * 64, None),  # 128 bytes
        ("é" * 65, "longer than 128 bytes in UTF-8"),
        ("\U0001f600" * 33, "longer than 128 bytes in UTF-8"),  # 33 characters, 132 bytes
        ("bad\ud800", "not valid UTF-8"),
        ("a\x00b", "contains a control character"),
        ("tab\there", "contains a control character"),
        ("end\x1f", "contains a control character"),
        ("del\x7f", "contains a control character"),
        ("c1\x85", "contains a control character"),
        ("ok-\u4e2d\u6587", None),
    ],
)
def test_an_id_at_each_boundary(value: str, problem: str | None) -> None:
    assert text_problem(value) == problem


def test_a_credential_value_has_its_own_limits() -> None:
    assert text_problem("9" * 256, CREDENTIAL_VALUE) is None
    assert text_problem("9" * 257, CREDENTIAL_VALUE) == "longer than 256 characters"
    assert text_problem("é" * 192, CREDENTIAL_VALUE) is None  # 384 bytes
    assert text_problem("é" * 193, CREDENTIAL_VALUE) == "longer than 384 bytes in UTF-8"


def test_an_empty_optional_value_is_fine() -> None:
    assert text_problem("", ID, required=False) is None
    assert text_problem("", ID) == "required"

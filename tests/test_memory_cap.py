"""How the suite takes a memory cap (``--emulate-memory-gb``) and says it: a byte at least, as
``litgpt-min --memory-cap-gb`` and ``conformance estimate --capacity-gb`` take it, and said as it
was given wherever a rounded figure would name another cap."""

from __future__ import annotations

import argparse

import pytest

from conformance.display import cap_figure, cap_text
from conformance.options import _memory_cap
from conformance.profiles import display_cap
from conformance.record import _cap_option
from litgpt_min.result import MIN_MEMORY_GB


@pytest.mark.parametrize("text", ["5e-324", "1e-10", "0.0000000009"])
def test_a_cap_below_a_byte_is_refused(text: str) -> None:
    """Before: taken and passed on to litgpt-min's --memory-cap-gb, whose pre-flight said "exceeds
    the limit 0.00 GB (the memory cap)"."""
    with pytest.raises(
        argparse.ArgumentTypeError, match=rf"^a memory cap must be at least 1e-09 GB \(a byte\), got '{text}'$"
    ):
        _memory_cap(text)


def test_a_byte_is_the_least_cap_everywhere() -> None:
    assert _memory_cap("1e-9") == MIN_MEMORY_GB
    assert _memory_cap("auto") == "auto" and _memory_cap("40") == 40.0


@pytest.mark.parametrize(
    ("cap", "said"),
    [(40.0, "40"), (0.01, "0.01"), (0.1448849, "0.1448849"), (1e-8, "0.00000001"), (123.4567891, "123.4567891")],
)
def test_a_cap_is_said_as_it_was_given(cap: float, said: str) -> None:
    """Before: ``:g``'s six significant digits (0.1448849 read "0.144885", 1e-8 "1e-08")."""
    assert cap_figure(cap) == said
    assert cap_text(cap) == f"a {said} GB memory cap"
    assert display_cap(cap) == said


def test_the_command_that_records_under_a_cap_gives_that_cap() -> None:
    """Before: "--emulate-memory-gb 0.144885" for a profile recorded under 0.1448849: another cap,
    which the profile's own check then refuses."""
    assert _cap_option({"sku": "NVIDIA X", "memory_cap_gb": 0.1448849}) == "--emulate-memory-gb 0.1448849"
    assert _cap_option({"sku": "NVIDIA X", "memory_cap_gb": 40}) == "--emulate-memory-gb 40"
    assert _cap_option({"sku": "NVIDIA X"}) == "without --emulate-memory-gb"

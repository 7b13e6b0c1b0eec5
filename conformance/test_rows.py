"""The conformance checks: one parametrized test per check kind, one item per expectations row.

The plugin (``conformance/plugin.py``) parametrizes these from the active profiles; ids are
``<profile>:<case id>``, so ``-k llama2_7b``, ``-k nf4_dq``, ``-k mb2`` or
``-k '[a100-sxm4-40gb:finetune-lora-llama2_7b-noquant-mb1-1gpu]'`` select what they say. The
rules live in ``conformance/checks.py``.
"""

from __future__ import annotations

from conformance.checks import RowCheck


def test_params(conformance_row: RowCheck) -> None:
    """Trainable (finetune rows) and total parameters, exact, counted on the meta device: runs anywhere."""
    conformance_row.check_params()


def test_run(conformance_row: RowCheck) -> None:
    """The row's measured run: outcome, peak memory (two-sided), the runner's counts."""
    conformance_row.check_run()


def test_speed(conformance_row: RowCheck) -> None:
    """Time per 1k iterations or tokens per second (within a factor), on the profile's own hardware only."""
    conformance_row.check_speed()


def test_estimate(conformance_row: RowCheck) -> None:
    """The GPU-free estimate of the row (fake tensors, any machine): outcome at the profile's card,
    peak memory within the profile's estimate tolerance (two-sided)."""
    conformance_row.check_estimate()

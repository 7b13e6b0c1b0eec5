"""The real Alpaca file and tokenizers, for the tests that need them (``needs_data``).

``CONFORMANCE_DATA_DIR`` names a folder laid out as ``benchmarks/derive_lengths.py``'s
``--data-dir``: ``alpaca/alpaca_data.json`` and ``tokenizers/<family>/``, and where recorded
``alpaca/lengths_<family>.json``. Without it those tests skip, saying what they need; the tests
that compare with a family's recorded statistics skip without its file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "CONFORMANCE_DATA_DIR"
DATA = Path(os.environ.get(DATA_ENV) or "/nonexistent")
ALPACA = DATA / "alpaca" / "alpaca_data.json"
needs_data = pytest.mark.skipif(
    not ALPACA.is_file(),
    reason=f"needs the real Alpaca file and tokenizers: set {DATA_ENV} to a folder with alpaca/alpaca_data.json"
    f" and tokenizers/<family>/ ({DATA_ENV}={os.environ.get(DATA_ENV, '')!r})",
)

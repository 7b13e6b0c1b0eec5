"""What every test module of this folder shares.

pytester's in-process runs (the plugin's black-box tests) drop, when they end, the modules they
imported. ``torch._dynamo`` registers an operator library when it is imported and cannot register
it twice, so a test that imports it after an in-process run did (fake tensors, FSDP, Fabric) would
fail with "Only a single TORCH_LIBRARY can be used to register the namespace _inductor_test".
Imported here, once, before any test runs, it is never imported by an in-process run.

The tests that stand in for a user's Ctrl-C send SIGINT to the commands they start. A suite
started with SIGINT ignored (a script's background job, ``pytest tests &`` in a CI script) hands
that on to every command it starts, which then runs on through the signal, and a bash script
there cannot even trap it. So the suite's process takes the disposition a terminal gives it, as
Python sets it at start-up, and the commands it starts inherit that.
"""

import signal
from collections.abc import Iterator

import pytest
import torch._dynamo  # noqa: F401
from side_by_side import SideBySide

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def side_by_side(request: pytest.FixtureRequest) -> Iterator[SideBySide]:
    """A module's commands run side by side (``SideBySide``); what still runs at its end is killed."""
    started = SideBySide(request.session)
    yield started
    started.close()

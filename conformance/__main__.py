"""``python -m conformance``: the ``conformance`` command."""

from conformance.cli import main

raise SystemExit(main())

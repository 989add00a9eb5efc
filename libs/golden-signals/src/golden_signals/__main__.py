"""``python -m golden_signals``: the command line."""

from golden_signals.cli import main

raise SystemExit(main())

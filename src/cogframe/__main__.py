"""``python -m cogframe``: the same command line as the ``cogframe`` script."""

from cogframe.cli import main

raise SystemExit(main())

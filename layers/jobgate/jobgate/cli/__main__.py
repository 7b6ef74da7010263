"""`python -m jobgate.cli`: the same as the `jobgate` console script."""

from jobgate.cli import main

raise SystemExit(main())

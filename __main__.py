"""``python -m painmon`` runs the command-line interface."""

from painmon.core.cli import main

raise SystemExit(main())

"""``python -m painmon`` runs the command-line interface."""

from painmon.core.tools.cli import main

raise SystemExit(main())

"""Allows ``python -m metasuite``."""

from metasuite.cli import main

raise SystemExit(main())

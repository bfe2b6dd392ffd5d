"""What ``generate_configs.py`` and ``generate_scripts.py`` both run: ``metasuite generate``.

The MAML++ reference repository generated configs and scripts with two scripts run
from this folder. Both are kept for its users; both now run the one generator, which
writes the configs and the scripts together (so they never disagree) from
experiment_template_config/suite.toml. Any ``metasuite generate`` option works,
e.g. ``--check`` or ``--only 'omniglot_*'``, from any current directory.
"""

from __future__ import annotations

import sys
from pathlib import Path


def generate(argv: list[str] | None = None) -> int:
    """``metasuite generate ARGV`` (default: this script's arguments), with the checkout's
    own source when metasuite is not installed."""
    try:
        from metasuite.cli import main
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from metasuite.cli import main
    return main(["generate", *(sys.argv[1:] if argv is None else argv)])

"""Reference-repo entry point: ``python generate_scripts.py`` = ``metasuite generate``.

The MAML++ reference repository generated configs and scripts with two scripts run
from this folder. Both are kept for its users; both now run the one generator, which
writes the configs and the scripts together (so they never disagree) from
experiment_template_config/suite.toml. Any ``metasuite generate`` option works here,
e.g. ``--check`` or ``--only 'omniglot_*'``. Works from any current directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from metasuite.cli import main
    except ModuleNotFoundError:  # not installed: use the checkout's own source
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from metasuite.cli import main
    raise SystemExit(main(["generate", *sys.argv[1:]]))

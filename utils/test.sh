#!/usr/bin/env bash
# The project's test command (README, .ci/run): lint, then the whole test suite.
#   bash utils/test.sh            everything, slow learning tests included (what CI runs)
#   bash utils/test.sh -m 'not slow'   pass any pytest arguments through
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m ruff check src tests bench script_generation_tools
"$PYTHON" -m ruff format --check src tests bench script_generation_tools
exec "$PYTHON" -m pytest "$@"

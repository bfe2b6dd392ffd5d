#!/usr/bin/env bash
# A prepared check of a GPU machine (at most ~5 minutes on one GPU); the last line of
# its output is one JSON object. Without CUDA it says so and runs the CPU half.
#   bash bench/device_check.sh            on a GPU machine: CUDA half; else the CPU half
#   bash bench/device_check.sh --cpu      the CPU half even where CUDA is available
# Details: bench/device_check.py. Exit status 0 when every check passed.
set -euo pipefail
here="$(CDPATH='' cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="${here}/../src${PYTHONPATH:+:${PYTHONPATH}}"
exec "${PYTHON:-python3}" "${here}/device_check.py" "$@"

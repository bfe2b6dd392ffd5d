#!/usr/bin/env bash
# Installs everything metasuite needs; safe to run again (idempotent).
#   - pbzip2 (parallel bzip2) through apt when apt is there; carries on without it
#   - torch: kept when already installed; else torch==2.13.0 (CPU wheel) when no GPU
#     is visible, or the default (CUDA) build when nvidia-smi sees a GPU
#   - metasuite itself, editable, with its test extras
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"

if ! command -v pbzip2 >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "install.sh: installing pbzip2 with apt-get"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pbzip2 shellcheck >/dev/null) \
            || echo "install.sh: apt-get could not install pbzip2; archives will be unpacked with Python's tarfile"
    else
        echo "install.sh: no apt-get (or not root); archives will be unpacked with Python's tarfile"
    fi
fi

# Slurm (slurmctld, slurmd, clients) lets tests/test_slurm_cluster.py submit real jobs to
# a throw-away one-node cluster. Only in CI or on request (METASUITE_INSTALL_SLURM=1): on a
# workstation with systemd, installing the daemons would also enable them.
if [ -n "${CI:-}${METASUITE_INSTALL_SLURM:-}" ] && ! command -v slurmctld >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "install.sh: installing Slurm (slurmctld slurmd slurm-client) with apt-get"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends slurmctld slurmd slurm-client >/dev/null) \
            || echo "install.sh: apt-get could not install Slurm; the local-cluster tests will be skipped"
    fi
fi

if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "install.sh: keeping installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install.sh: GPU visible; installing torch (CUDA build)"
    "$PYTHON" -m pip install -q torch
else
    echo "install.sh: no GPU visible; installing torch==2.13.0 (CPU wheel)"
    "$PYTHON" -m pip install -q torch==2.13.0
fi

"$PYTHON" -m pip install -q -e ".[test]"
echo "install.sh: done ($("$PYTHON" -c 'import metasuite, torch; print("metasuite", metasuite.__version__, "torch", torch.__version__)'))"

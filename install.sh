#!/usr/bin/env bash
# Installs everything metasuite needs; safe to run again (idempotent).
#   - system tools through apt when apt is there (see below); carries on without them
#   - torch: kept when already installed; else torch==2.13.0 (CPU wheel) when no GPU
#     is visible, or the default (CUDA) build when nvidia-smi sees a GPU
#   - metasuite itself, editable, with its test, tensorboard, tune (optuna,
#     psycopg2-binary) and text (tokenizers, transformers: imported only by text
#     experiments) extras
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"

# System tools through apt (root only; everything works without them):
#   pbzip2     parallel bzip2 for the data set archives (else Python's tarfile)
#   pigz       parallel gzip for .tar.gz/.tgz archives (else Python's tarfile)
#   ShellCheck: lints the generated experiment scripts in the tests (else only bash -n)
#   chromium   headless browser for tests/results/test_html.py (else that test is skipped)
#   Slurm      slurmctld, slurmd and clients let tests/suite/test_slurm_cluster.py submit real jobs
#              to a throw-away one-node cluster; only in CI or on request
#              (METASUITE_INSTALL_SLURM=1): on a workstation with systemd, installing the
#              daemons would also enable them.
#   PostgreSQL postgresql lets tests/search/test_postgres.py start a throw-away server for a
#              shared Optuna study; only in CI or on request (METASUITE_INSTALL_POSTGRES=1),
#              for the same reason (the package starts a system server).
apt_packages=()
command -v pbzip2 >/dev/null 2>&1 || apt_packages+=(pbzip2)
command -v pigz >/dev/null 2>&1 || apt_packages+=(pigz)
command -v shellcheck >/dev/null 2>&1 || apt_packages+=(shellcheck)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || apt_packages+=(chromium)
if [ -n "${CI:-}${METASUITE_INSTALL_SLURM:-}" ] && ! command -v slurmctld >/dev/null 2>&1; then
    apt_packages+=(slurmctld slurmd slurm-client)
fi
if [ -n "${CI:-}${METASUITE_INSTALL_POSTGRES:-}" ] && ! command -v initdb >/dev/null 2>&1 \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_packages+=(postgresql)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "install.sh: installing ${apt_packages[*]} with apt-get"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${apt_packages[@]}" >/dev/null) \
            || echo "install.sh: apt-get could not install ${apt_packages[*]}; carrying on" \
                "(archives unpack with Python's tarfile; shellcheck/Slurm/PostgreSQL tests are skipped)"
    else
        echo "install.sh: no apt-get (or not root): ${apt_packages[*]} not installed; carrying on" \
            "(archives unpack with Python's tarfile; shellcheck/Slurm tests are skipped)"
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

"$PYTHON" -m pip install -q -e ".[test,tensorboard,tune,text]"
echo "install.sh: done ($("$PYTHON" -c 'import metasuite, torch; print("metasuite", metasuite.__version__, "torch", torch.__version__)'))"

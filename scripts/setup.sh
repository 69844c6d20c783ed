#!/usr/bin/env bash
# Create .venv (python3 -m venv + pip) and install lesionprop with its test extras.
# torch/torchvision come from the local wheel store when pip has one configured.
# On x86_64 that is a CUDA build: about 6 GB in .venv, plus room for pip to unpack it.
set -euo pipefail
cd "$(dirname "$0")/.."
NEED_GB=7
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$NEED_GB" ]; then
    echo "setup: only ${free_gb} GB free on $(df -P . | awk 'NR==2 {print $6}');" \
         "installing torch + torchvision needs about ${NEED_GB} GB. pip may fail with 'No space left on device'." >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
pip_install() {
  # Quiet on success; on failure, show pip's own message and stop.
  if ! .venv/bin/python -m pip install -q --no-cache-dir "$@" >"$log" 2>&1; then
    echo "setup: 'pip install $*' failed:" >&2
    grep -v '^WARNING: Location' "$log" | tail -n 20 >&2
    exit 1
  fi
}
pip_install --upgrade pip
pip_install -e '.[test]'
.venv/bin/python -c "import lesionprop, torch, torchvision; print('lesionprop ready: torch', torch.__version__, 'torchvision', torchvision.__version__)"

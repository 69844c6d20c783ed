#!/usr/bin/env bash
# Create .venv (python3 -m venv + pip) and install lesionprop with its test extras.
# torch/torchvision come from the local wheel store when pip has one configured.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -vE '^WARNING: Location|^\s*$' || true
.venv/bin/python -c "import lesionprop, torch, torchvision; print('lesionprop ready: torch', torch.__version__, 'torchvision', torchvision.__version__)"

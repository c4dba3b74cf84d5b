#!/usr/bin/env bash
# Set up a fresh machine: Debian's Fashion-MNIST package (when apt is usable) and a venv
# with requirements.txt. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: could not install dataset-fashion-mnist; the quickstart will download Fashion-MNIST instead"
  else
    echo "setup: not root or no apt-get; the quickstart will download Fashion-MNIST (or: sudo apt-get install dataset-fashion-mnist)"
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -c "import torch, torchvision, timm; print(f'setup: torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}')"
# The package itself, editable: the `trainkit` command (trainkit --help) and `import trainkit` from anywhere.
# (Without network, pip's isolated build cannot fetch setuptools: then build with the venv's own.)
.venv/bin/python -m pip install -q --no-deps -e . 2>/dev/null \
  || .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
  || echo "setup: could not install the trainkit command (pip install -e . failed); python train.py ... works without it"

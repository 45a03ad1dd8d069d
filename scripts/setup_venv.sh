#!/usr/bin/env bash
# Create the virtual environment and install the project with its dev extra.
# Without a GPU we install the CPU build of torch first (a local wheel where the
# machine has one, else the registry's CPU index), so pip never pulls the
# multi-GB CUDA build; with a GPU the registry's normal torch is used.
set -euo pipefail
VENV=${1:-.venv}
PY=${PY:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        $PIP install "torch>=2.2"
    # The +cpu local version matches only CPU builds: the wheel that lies on this kind of
    # machine (pip's find-links), never PyPI's CUDA build.
    elif $PIP install "torch==2.13.0+cpu"; then
        :
    else
        $PIP install "torch>=2.2" --index-url https://download.pytorch.org/whl/cpu \
            --extra-index-url https://pypi.org/simple
    fi
fi
$PIP install -e ".[dev]"

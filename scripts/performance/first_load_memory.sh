#!/usr/bin/env bash
# Peak RSS and wall time of the first SmolLM2 load (empty cache: GGUF de-quantization and
# conversion) and of a warm load, each in a fresh process under /usr/bin/time -v.
#
#   bash scripts/performance/first_load_memory.sh [--markdown docs/generated/first_load.md]
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE"' EXIT
measure() {
  TL_UNLEARN_CACHE="$CACHE" /usr/bin/time -v .venv/bin/python -c \
    "from tl_unlearn import load_model; load_model()" 2>&1 >/dev/null |
    awk '/Maximum resident/ {rss=$6/1e6} /Elapsed/ {t=$8} END {printf "%.2f GB | %s", rss, t}'
}
first=$(measure)
warm=$(measure)
table="| load | peak RSS | wall time (m:ss) |
| --- | --- | --- |
| first (empty cache) | ${first} |
| warm | ${warm} |"
echo "$table"
if [ "${1:-}" = "--markdown" ]; then
  printf '<!-- written by scripts/performance/first_load_memory.sh -->\n%s\n' "$table" > "$2.tmp" && mv "$2.tmp" "$2"
fi

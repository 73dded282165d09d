#!/usr/bin/env bash
# GPU benchmark at Llama-3-8B shape (random bf16 weights made on the GPU: nothing is downloaded there).
#
#   benchmarks/gpu_bench.sh --prepare        # here, with a package registry: wheels the GPU image lacks -> .whl/
#   benchmarks/gpu_bench.sh                  # on the GPU: install .whl/*.whl (--no-deps), measure, print JSON
#   benchmarks/gpu_bench.sh --dry-run        # on CPU, tiny shapes: checks the whole script in seconds
#
# Extra arguments go to benchmarks/gpu_bench.py (e.g. --output bench.json, --eval-docs 4096, --skip-qlora).
# PYTHON picks the interpreter (default python3); for --prepare use the project's environment, whose
# package versions are the ones pinned. GPU_BENCH_WHEELS moves the wheel folder (default <repo>/.whl,
# which `--prepare` adds to .git/info/exclude so that git ignores it and the device tool carries it).
# See benchmarks/README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${GPU_BENCH_WHEELS:-$REPO/.whl}"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

case "${1:-}" in
  --prepare)
    shift
    exclude="$(git -C "$REPO" rev-parse --git-path info/exclude 2>/dev/null || true)"
    if [[ -n "$exclude" && "$WHEELS" == "$REPO/.whl" ]] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then
      mkdir -p "$(dirname "$exclude")" && echo '/.whl/' >> "$exclude"
    fi
    exec "$PY" "$REPO/benchmarks/gpu_bench.py" prepare --wheels "$WHEELS" "$@"
    ;;
  --dry-run)
    shift
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    exec "$PY" "$REPO/benchmarks/gpu_bench.py" run --dry-run "$@"
    ;;
esac

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  site="${GPU_BENCH_SITE:-/tmp/gpu_bench_site}"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO:${PYTHONPATH:-}"
exec "$PY" "$REPO/benchmarks/gpu_bench.py" run "$@"

#!/usr/bin/env bash
# The CUDA checks of onebit in one go (benchmarks/gpu_check.py does the work):
#   1. pytest -m gpu                                   -> benchmarks/results/gpu_pytest.json
#   2. packed int8 inference vs cuDNN fp16/bf16/fp32,
#      reactnet_a and bnext_tiny at 224, batch 1 and 256 -> benchmarks/results/gpu_infer.json
#   3. a training step of bnext_tiny and reactnet_a, reference vs lean path,
#      with and without bf16 autocast, batch 64 at 224  -> benchmarks/results/gpu_train.json
# Without a CUDA device (or with --cpu) it runs the CPU-side parts only: the imports and a CPU smoke of the same
# code paths at a tiny size (gpu_check.py smoke), says what it skipped, and exits 0 when they pass.
#
# usage: benchmarks/gpu_check.sh [--quick] [--cpu] [--out-dir DIR] [--smoke-models "M ..."] [--smoke-resolution N]
#   --quick             fewer repeats, batch 32 for training
#   --cpu               behave as on a machine without CUDA (the CPU-side parts only)
#   --out-dir DIR       where the JSON goes (default benchmarks/results; the CPU smoke writes only when given)
#   --smoke-models ...  models of the CPU smoke (default "reactnet_a bnext_tiny"), --smoke-resolution (default 32)
# PYTHON=... selects the interpreter (default: python). Exit code: 0 when every part that ran passed.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
QUICK=0
FORCE_CPU=0
OUT_DIR=""
SMOKE_MODELS="reactnet_a bnext_tiny"
SMOKE_RES=32
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --cpu | --dry) FORCE_CPU=1 ;;
    --out-dir) OUT_DIR=$2; shift ;;
    --smoke-models) SMOKE_MODELS=$2; shift ;;
    --smoke-resolution) SMOKE_RES=$2; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

echo "== imports"
if ! "$PY" -c "import torch, onebit, onebit.kernels.int8 as i8; from onebit.kernels import backend_info
print('torch', torch.__version__, '| CUDA build', torch.version.cuda, '| int8 GEMM', i8.available(), '|', backend_info())"; then
  echo "gpu_check.sh: onebit or torch does not import with $PY" >&2
  exit 1
fi
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$FORCE_CPU" = 1 ] || [ "$CUDA" != 1 ]; then
  why="no CUDA device"
  [ "$FORCE_CPU" = 1 ] && why="--cpu"
  echo "== CPU smoke ($why): the inference and training code paths at ${SMOKE_RES}x${SMOKE_RES}"
  out=()
  [ -n "$OUT_DIR" ] && out=(--out "$OUT_DIR/gpu_check_cpu_smoke.json")
  # shellcheck disable=SC2086  # the model list is split on purpose
  if ! "$PY" benchmarks/gpu_check.py smoke --models $SMOKE_MODELS --resolution "$SMOKE_RES" "${out[@]}"; then
    echo "gpu_check.sh: the CPU smoke FAILED" >&2
    exit 1
  fi
  echo "SKIPPED ($why): pytest -m gpu, packed int8 vs cuDNN inference and the CUDA training steps need a CUDA"
  echo "device; run benchmarks/gpu_check.sh on a CUDA machine for them."
  exit 0
fi

OUT_DIR=${OUT_DIR:-benchmarks/results}
mkdir -p "$OUT_DIR"
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print('== CUDA device:', p.name, round(p.total_memory / 2**30), 'GiB')"
if [ "$QUICK" = 1 ]; then
  INFER=(--warmup 3 --repeats 10)
  TRAIN=(--batch 32 --warmup 1 --repeats 3)
else
  INFER=()
  TRAIN=()
fi
failed=()
echo "== pytest -m gpu"
"$PY" benchmarks/gpu_check.py pytest --out "$OUT_DIR/gpu_pytest.json" || failed+=(pytest)
echo "== packed int8 vs cuDNN inference"
"$PY" benchmarks/gpu_check.py infer "${INFER[@]}" --out "$OUT_DIR/gpu_infer.json" || failed+=(infer)
echo "== training step, reference vs lean, bf16 autocast"
"$PY" benchmarks/gpu_check.py train "${TRAIN[@]}" --out "$OUT_DIR/gpu_train.json" || failed+=(train)
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check.sh: all parts passed; JSON in $OUT_DIR"

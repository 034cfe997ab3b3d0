#!/usr/bin/env bash
# CI sanitizer job (called by .ci/run, inside its virtual environment): build the packed-kernel library from every
# onebit/kernels/csrc/*.c with AddressSanitizer + UndefinedBehaviorSanitizer (OpenMP, as the normal build) into a
# separate shared object, then run the kernel, engine and fuzz tests against it (ONEBIT_KERNEL_LIBRARY, see
# onebit/kernels/_native.py). Any sanitizer report aborts the test process and fails the job.
#
# Python and torch are not instrumented: the sanitizer runtimes are preloaded (LD_PRELOAD) so that they come first
# and intercept malloc (torch's CPU tensors are then heap blocks with ASan redzones); leak checking is off because
# the interpreter itself keeps memory until exit. A planted out-of-bounds read is run first: the job fails if the
# sanitizer does not catch it (a setup that silently stopped sanitizing).
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-gcc}
PYTHON=${PYTHON:-python}
out=build/sanitize
lib="$PWD/$out/_bitconv_asan.so"
mkdir -p "$out"
"$CC" -shared -fPIC -std=c11 -ffp-contract=off -fno-strict-aliasing -fopenmp \
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1 \
    onebit/kernels/csrc/*.c -o "$lib" -lm

export LD_PRELOAD="$("$CC" -print-file-name=libasan.so):$("$CC" -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export ONEBIT_KERNEL_LIBRARY="$lib"

# the sanitizer build is the one loaded, and it catches a planted overflow (a residual of 1 pixel read as 2x2)
canary=$("$PYTHON" - <<'EOF' 2>&1 || true
import os
import torch
from onebit.kernels import _native, backend_info
assert backend_info()["library"] == os.environ["ONEBIT_KERNEL_LIBRARY"], backend_info()
lib = _native.load()
z, r, a, hb, out = torch.randn(1, 2, 2, 8), torch.randn(1, 1, 1, 8), torch.randn(1, 8), torch.randn(8), torch.empty(1, 2, 2, 8)
lib.ob_gate_residual(z.data_ptr(), r.data_ptr(), 1, 2, 2, 8, a.data_ptr(), hb.data_ptr(), 0, out.data_ptr(), 8, None, None, 0, 1, 0, 1)
print("sanitizer did not report the planted overflow")
EOF
)
if ! grep -q "heap-buffer-overflow" <<<"$canary"; then
    echo "$canary" >&2
    echo "sanitize.sh: the ASan build did not catch the planted overflow" >&2
    exit 1
fi
echo "sanitize.sh: ASan/UBSan build $lib loaded and active"

# the fuzz tests on the native backend only: the torch/int8 backends run no compiled code (the main suite fuzzes them)
ONEBIT_FUZZ_BACKENDS=native "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow and not gpu" \
    tests/test_kernels.py tests/test_kernels_chain.py tests/test_kernels_bnext_chain.py tests/test_pack.py \
    tests/test_kernels_int8.py tests/test_packed_fuzz.py

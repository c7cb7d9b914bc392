#!/usr/bin/env bash
# The GPU check of the DPO kernels (issue #8): one prepared script for a lent H100/H200.
#
#   OUT=/some/folder bash scripts/gpu_check.sh          # from the repository root
#
# It prints nvidia-smi, installs the carried wheels (.whl/: liger-kernel), runs the `gpu`-marked tests
# and the Triton tests natively (no interpreter; pytest -x), then the GPU benchmark
# (python -m alignment_dynamics.bench dpo --gpu). Everything it makes goes to $OUT:
#   nvidia-smi.txt  versions.txt  gpu_tests.log  bench_gpu.json  bench_gpu.log  status.txt
# It stays within about 6 minutes on an H100 (LIMIT_S, default 345 s): the benchmark gets what the
# tests leave, saves its JSON after every measurement and lists what it had to skip. Failures are
# recorded in status.txt and the script goes on; its exit code is the worst step's.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/_build/gpu_check}"
mkdir -p "$OUT"
: > "$OUT/status.txt"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
unset TRITON_INTERPRET
LIMIT_S="${LIMIT_S:-345}"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
note() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$OUT/status.txt"; }
worst=0

nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt" || note "nvidia-smi failed"

if ls .whl/*.whl >/dev/null 2>&1; then
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
    export PYTHONPATH="/tmp/site:$PWD/lib"
    note "wheels installed: $(ls .whl | tr '\n' ' ')"
  else
    export PYTHONPATH="$PWD/lib"
    note "wheel install FAILED; continuing without them"
  fi
else
  export PYTHONPATH="$PWD/lib"
  note "no .whl/ carried: Liger-Kernel will be missing from the benchmark"
fi

python3 - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")
try:
    import liger_kernel
    print("liger_kernel", getattr(liger_kernel, "__version__", "?"))
except Exception as exc:
    print("liger_kernel missing:", exc)
PY

# 1. the gpu-marked tests and the Triton tests, natively (first compiles included)
note "tests start"
timeout 170 python3 -m pytest -x -q -ra -p no:cacheprovider -m "gpu or triton" --durations=10 \
  tests/test_dpo_triton.py 2>&1 | tee "$OUT/gpu_tests.log"
rc=${PIPESTATUS[0]}
note "tests rc=$rc"
[ "$rc" -ne 0 ] && worst=$rc

# 2. the benchmark, with the time that is left (the JSON is rewritten after every record)
left=$(( LIMIT_S - $(elapsed) ))
budget=$(( left - 60 ))
if [ "$budget" -lt 30 ]; then budget=30; fi
note "benchmark start (budget ${budget}s, hard stop $(( left - 5 ))s)"
timeout $(( left > 40 ? left - 5 : 35 )) python3 -m alignment_dynamics.bench dpo --gpu --budget-s "$budget" \
  --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
rc=${PIPESTATUS[0]}
note "benchmark rc=$rc; bench_gpu.json $( [ -s "$OUT/bench_gpu.json" ] && echo written || echo MISSING )"
[ "$rc" -ne 0 ] && [ "$worst" -eq 0 ] && worst=$rc
note "done, exit $worst"
exit "$worst"

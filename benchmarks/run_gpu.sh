#!/usr/bin/env bash
# The Triton target's GPU checks as one prepared run (fits one 10-minute device command on an
# H100/H200): the Triton tests for real on the GPU, then `moec bench --target triton` in bf16
# (moec vs PyTorch eager, torch.compile, dense bmm; tokens 1..4096; both standard layers), then
# fp8 weights on the decode and prefill ends, int4 (W4A16) at decode.  Writes logs and JSON into OUTDIR ($OUT on the
# device tool, else ./gpu_out): 7 files (summary.txt, tests.log, bench_bf16.log, three bench JSONs,
# triton_tuning.json); the device tool brings back 8 at most.
#
# Needs python3 with torch (CUDA), triton, onnx, onnxruntime, numpy, ml_dtypes, networkx; lark is
# installed from .whl/ when that folder holds its wheel (the device image has no lark):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl lark==1.3.1
# and carry .whl.  Each step has its own time limit so that a slow step cannot eat the others.
set -uo pipefail
OUTDIR=${1:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
SITE=/tmp/moec_site
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . >/tmp/moec_install.log 2>&1 \
    || { cat /tmp/moec_install.log; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export MOEC_CACHE_DIR=/tmp/moec_cache
nvidia-smi -L 2>&1 | tee "$OUTDIR/summary.txt"
$PY -c "import torch, triton, moec; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUTDIR/summary.txt" || { echo "run_gpu.sh: no CUDA GPU here (torch cannot see one)"; exit 1; }

step() {  # name, seconds, command...  (the full log comes back for tests and bench_bf16; the
          # others' tails go into summary.txt: the device tool returns 8 files at most)
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS log="$OUTDIR/$name.log"
    case $name in tests|bench_bf16) ;; *) log="/tmp/moec_$name.log" ;; esac
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $limit)" | tee -a "$OUTDIR/summary.txt"
    tail -n 25 "$log" | tee -a "$OUTDIR/summary.txt"
}

# 1. the Triton tests on the GPU (no interpreter): zoo, quantised modes, fp8, split-K, align plan
step tests 170 $PY -m pytest -q -p no:warnings -x tests/test_triton.py tests/test_fp8.py
# 2. bf16 bench, both layers, all token counts, with torch.compile (120 s of compiling at most);
#    tiles autotuned for decode (split-K candidates), the shipped defaults for prefill
step bench_bf16 290 $PY -m moec.bench_triton --layers mixtral,deepseek --tokens 1,16,128,1024,4096 \
    --reps 10 --autotune decode --compile-budget 120 -o "$OUTDIR/bf16"
# 3. fp8 weights (sm_89+): decode and prefill ends, eager and dense peers only
step bench_fp8 70 $PY -m moec.bench_triton --layers mixtral,deepseek --tokens 1,16,4096 --reps 10 --no-compile \
    --autotune none --weights fp8 -o "$OUTDIR/fp8"
# 4. int4 weights with bf16 activations (W4A16, group 128): the decode end, where bytes decide
step bench_int4 50 $PY -m moec.bench_triton --layers mixtral,deepseek --tokens 1,16 --reps 10 --no-compile \
    --autotune none --weights int4 -o "$OUTDIR/int4"
cp "$MOEC_CACHE_DIR/triton_tuning.json" "$OUTDIR/triton_tuning.json" 2>/dev/null
echo "done: $OUTDIR/summary.txt"

#!/usr/bin/env bash
# Issue 21's GPU measurement as one prepared run: about 8 minutes on an H100/H200, each step with its
# own time limit (a slow step cannot eat the others), writing ONE JSON and ONE table:
#   OUTDIR/issue21.json, OUTDIR/issue21.txt   (benchmarks/issue21_report.py: targets met / missed /
#                                               not measured, every bench table with per-stage times)
# plus summary.txt (each step's status and log tail), tests.log, bench_bf16.log, tune.log and the
# tile-search file (the device tool brings back a handful of files: keep it at 8 or fewer).
#
#   bash benchmarks/run_gpu.sh [OUTDIR]          # the GPU run (OUTDIR: $OUT on the device tool, else ./gpu_out)
#   bash benchmarks/run_gpu.sh --smoke [OUTDIR]  # the same steps at small sizes, on the CPU under Triton's
#                                                # interpreter (CI runs it: .ci/run); ~1 minute on 2 cores
# Steps (GPU): 1. the Triton tests on the GPU (a selection: kernels, split-K, combine, align, reproducibility,
# the kernel variants, w8a8, the split-K GEMV router, CUDA-graph replay);
# 2. the tile search (tune_moe, --space small) for the Mixtral-shaped layer at 1 and 4096 tokens, uniform
# and Zipf routing, written where step 3 reads it (~1.5 minutes; `--space full` over all token counts takes
# far longer: run it on its own); 3. `moec bench --target triton` bf16, both layers,
# tokens 1..4096, PyTorch eager / torch.compile / dense peers, matmul and copy probes, per-stage times
# (routing, align, gemm1, gemm2, combine), and each row replayed as one CUDA graph;
# 4. the kernel variants (swap-AB, persistent tile queue, TMA each flipped from the row's tiles) on the
# Mixtral-shaped layer at 1, 16, 4096 tokens; 5. fp8 w8a8 (fp8 weights, per-token fp8 activations, fp8 x fp8
# wgmma) at 1, 16, 4096 tokens; 6. int4 (W4A16) at decode; 7. the report.
#
# Needs python3 with torch (CUDA), triton, onnx, onnxruntime, numpy, ml_dtypes, networkx; lark is
# installed from .whl/ when that folder holds its wheel (the device image has no lark):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl lark==1.3.1
# and carry .whl.  The smoke run uses the moec already installed (CI installs it first).
set -uo pipefail
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUTDIR=${1:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
export PYTHONUNBUFFERED=1
if [ $SMOKE = 1 ]; then
    WORK="$OUTDIR"
    export MOEC_CACHE_DIR="$WORK/cache"
    # no GPU: the interpreter (it must be chosen before triton is imported)
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || export TRITON_INTERPRET=1
else
    WORK=/tmp/moec_run
    rm -rf "$WORK"
    mkdir -p "$WORK"
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
fi
# the tile search writes where the bench's lookup reads (tuning.user_config_dir)
export MOEC_TRITON_CONFIGS="$WORK/tune"
: > "$WORK/steps.tsv"
FAILED=0

step() {  # name, seconds, command...  (logs: tests, bench_bf16 and tune come back whole, the others' tails
          # go into summary.txt)
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS log="$OUTDIR/$name.log"
    case $name in tests|bench_bf16|tune) ;; *) log="$WORK/$name.log" ;; esac
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    [ $rc = 0 ] || FAILED=1
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$WORK/steps.tsv"
    echo "== $name: rc $rc in $((SECONDS - t0)) s (limit $limit)" | tee -a "$OUTDIR/summary.txt"
    tail -n 25 "$log" | tee -a "$OUTDIR/summary.txt"
}

if [ $SMOKE = 1 ]; then
    step bench_smoke 240 $PY -m moec.bench_triton --smoke --variants --cuda-graphs -o "$WORK/smoke"
    step tune 90 $PY -m moec.codegen.triton.tune_moe --E 4 --N 32 --K 64 --topk 2 --tokens 1 --smoke -o "$WORK/tune"
else
    # 1. the Triton tests on the GPU (no interpreter)
    step tests 60 $PY -m pytest -q -p no:warnings -x tests/test_triton.py tests/test_triton_tune.py \
        tests/test_triton_variants.py -k "kernels_really_run or 16_bit or split_k_matches or combine_fused or bitwise \
        or align_plan or tile_order or kernel_variants or w8a8_matches or few_row or cuda_graph_replays"
    # 2. tile search, Mixtral-shaped layer, decode and prefill ends (small space; each token count is
    #    written as it is found)
    step tune 90 $PY -m moec.codegen.triton.tune_moe --layer mixtral --tokens 1,4096 --space small --reps 5 \
        -o "$WORK/tune"
    # 3. bf16 bench, both layers, all token counts, torch.compile (90 s of compiling at most); tiles from the
    #    tile-search files (step 2's token counts, the shipped H100 ones for the others: each row's tile_source)
    step bench_bf16 190 $PY -m moec.bench_triton --layers mixtral,deepseek --tokens 1,16,128,1024,4096 \
        --reps 10 --autotune none --compile-budget 90 --cuda-graphs -o "$WORK/bf16"
    # 4. each kernel variant flipped from the row's tiles (its kernels compile here: a minute)
    step bench_variants 60 $PY -m moec.bench_triton --layers mixtral --tokens 1,16,4096 --reps 5 --no-compile \
        --autotune none --variants -o "$WORK/variants"
    # 5. fp8 w8a8 (sm_89+): decode and prefill ends, eager and dense peers only
    step bench_fp8 50 $PY -m moec.bench_triton --layers mixtral,deepseek --tokens 1,16,4096 --reps 10 --no-compile \
        --autotune none --weights fp8 --activations fp8 -o "$WORK/fp8"
    # 6. int4 weights with bf16 activations (W4A16, group 128): the decode end, where bytes decide
    step bench_int4 25 $PY -m moec.bench_triton --layers mixtral,deepseek --tokens 1,16 --reps 10 --no-compile \
        --autotune none --weights int4 -o "$WORK/int4"
fi
step report 60 $PY "$HERE/issue21_report.py" "$WORK"
if [ "$WORK" != "$OUTDIR" ]; then
    cp "$WORK/issue21.json" "$WORK/issue21.txt" "$OUTDIR/" 2>/dev/null
    for f in "$WORK"/tune/E=*.json; do  # the tile-search file (not its .search.json log)
        case $f in *.search.json) ;; *) [ -e "$f" ] && cp "$f" "$OUTDIR/" ;; esac
    done
fi
echo "done: $OUTDIR/issue21.txt (failed steps: $FAILED)"
exit $FAILED

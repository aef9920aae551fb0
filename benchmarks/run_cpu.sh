#!/usr/bin/env bash
# The CPU benchmark table (issue 4): the Mixtral-like layer in every weight mode and the DeepSeek-like
# layer, moec against onnxruntime (graph and fused com.microsoft.MoE op) in one run, with this
# machine's sgemm and copy probes.  About 15 minutes on 2 cores.  Benchmarks are not tests.
#   bash benchmarks/run_cpu.sh [OUTDIR]        (default benchmarks/out; tables also in OUTDIR/summary.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/out}
moec=${MOEC:-moec}
py=${PYTHON:-python}
mkdir -p "$out"
[ -f benchmarks/models/mixtral_like_d1024.onnx ] && [ -f benchmarks/models/deepseek_like_e64.onnx ] \
  || "$py" benchmarks/build_layers.py
summary="$out/summary.txt"
: > "$summary"
run() {  # name model weights tokens
  "$moec" bench "benchmarks/models/$2.onnx" --weights "$3" --tokens "$4" -o "$out/$1" --force | tee -a "$summary"
}
run mixtral_f32 mixtral_like_d1024 f32 1,8,64,256,1024
for w in bf16 int8 int4 w8a8; do
  run "mixtral_$w" mixtral_like_d1024 "$w" 1,8,256
done
run deepseek_f32 deepseek_like_e64 f32 1,8,64,256,1024
echo "tables: $summary"

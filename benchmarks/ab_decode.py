#!/usr/bin/env python
"""usage: python ab_decode.py base=STEP_DIR,new=STEP_DIR ROUNDS

The decode steps (decode_bench.compile_step_in_child, max_len 160) of the 2-layer Mixtral: a 128-token prompt, then
32 greedy tokens, 2 threads; median ms per token, the artifacts interleaved."""
import sys, statistics, numpy as np, subprocess
W = r'''
import sys, numpy as np
from moec.decode_bench import _artifact_step, _gen
step = _artifact_step(sys.argv[1], 2)
geo = {"layers": 2, "kv_heads": 8, "head_dim": 128, "vocab": 32000}
print("ok", flush=True)
for line in sys.stdin:
    prompt = np.random.default_rng(128).integers(3, 32000, (1, 128))
    t, pre, dec = _gen(step, geo, 160, prompt, 32)
    print(float(np.median(dec)), pre, " ".join(map(str, np.asarray(t).ravel()[:8])), flush=True)
'''
if len(sys.argv) < 3:
    sys.exit(__doc__ if __doc__ and 'usage' in __doc__ else open(__file__).read().splitlines()[1])
arts = dict(a.split("=") for a in sys.argv[1].split(","))
ps = {}
for n, d in arts.items():
    p = subprocess.Popen([sys.executable, "-c", W, d], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ok"; ps[n] = p
res = {n: [] for n in arts}; toks = {}
for r in range(int(sys.argv[2])):
    for n in (list(arts) if r % 2 == 0 else list(arts)[::-1]):
        ps[n].stdin.write("go\n"); ps[n].stdin.flush()
        ln = ps[n].stdout.readline().split(" ", 2)
        res[n].append(float(ln[0])); toks[n] = ln[2].strip()
for p in ps.values(): p.stdin.close(); p.wait()
b = list(arts)[0]
for n in arts:
    m = statistics.median(res[n])
    print(f"{n}: {1000/m:.1f} tok/s (median ms/token {m:.2f}; {len(res[n])} runs)  ratio tok/s vs {b}: {statistics.median(res[b])/m:.3f}  tokens {toks[n]}")

#!/usr/bin/env python
"""usage: python ab_decode.py base=[PYTHON:]STEP_DIR,new=[PYTHON:]STEP_DIR ROUNDS [CONTEXT]

The decode steps (decode_bench.compile_step_in_child, max_len CONTEXT + 32; CONTEXT 128 by default) of the 2-layer
Mixtral: a CONTEXT-token prompt, then 32 greedy tokens, 2 threads; median ms per token per round, the artifacts
interleaved (the order alternating), the paired per-round tok/s ratio against the first arm, and GB/s of each step's
bytes per token (bench_model.moec_decode_bytes) as a fraction of the read / copy probes measured before and after.
An arm's PYTHON (another worktree's venv) runs its own moec's loop on its artifact (A/B of the Python side too);
without it, this interpreter's."""
import json, os, statistics, subprocess, sys
W = r'''
import sys, numpy as np
from moec.decode_bench import _artifact_step, _gen
step = _artifact_step(sys.argv[1], 2)
C, cap = int(sys.argv[2]), int(sys.argv[3])
geo = {"layers": 2, "kv_heads": 8, "head_dim": 128, "vocab": 32000}
print("ok", flush=True)
for line in sys.stdin:
    prompt = np.random.default_rng(C).integers(3, 32000, (1, C))
    t, pre, dec = _gen(step, geo, cap, prompt, 32)
    print(float(np.median(dec)), pre, " ".join(map(str, np.asarray(t).ravel()[:12])), flush=True)
'''
if len(sys.argv) < 3:
    sys.exit(__doc__.splitlines()[0])
C = int(sys.argv[3]) if len(sys.argv) > 3 else 128
cap, R = C + 32, int(sys.argv[2])
arms = {}
for a in sys.argv[1].split(","):
    n, rest = a.split("=", 1)
    py, d = rest.split(":", 1) if ":" in rest else (sys.executable, rest)
    arms[n] = (py, d)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moec.bench import copy_probe, read_probe  # noqa: E402
from bench_model import moec_decode_bytes  # noqa: E402
probes = [(read_probe(threads=2), copy_probe(threads=2))]
ps = {}
for n, (py, d) in arms.items():
    p = subprocess.Popen([py, "-c", W, d, str(C), str(cap)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ok"
    ps[n] = p
res = {n: [] for n in arms}
toks = {}
for r in range(R):
    for n in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
        ps[n].stdin.write("go\n")
        ps[n].stdin.flush()
        ln = ps[n].stdout.readline().split(" ", 2)
        res[n].append(float(ln[0]))
        toks[n] = ln[2].strip()
for p in ps.values():
    p.stdin.close()
    p.wait()
probes.append((read_probe(threads=2), copy_probe(threads=2)))
rd, cp = max(p[0] for p in probes), max(p[1] for p in probes)
b = list(arms)[0]
out = {"context": C, "rounds": R, "read_probe_gbps": [p[0] for p in probes], "copy_probe_gbps": [p[1] for p in probes],
       "arms": {}}
for n, (py, d) in arms.items():
    m = statistics.median(res[n])
    ratios = [x / y for x, y in zip(res[b], res[n])]
    by = moec_decode_bytes(d, C + 16, cap)["total"]
    gbs = by / (m / 1e3) / 1e9
    out["arms"][n] = {"ms": res[n], "median_ms": m, "paired_tok_s_ratio": statistics.median(ratios),
                      "bytes_per_token": by, "gbps": gbs, "of_read_probe": gbs / rd, "of_copy_probe": gbs / cp,
                      "tokens": toks[n]}
    print(f"context {C} {n}: {1000 / m:.1f} tok/s (median ms/token {m:.3f}; {R} rounds)  paired tok/s ratio vs {b}: "
          f"median {statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]  {by / 1e6:.1f} MB/token "
          f"{gbs:.1f} GB/s = {gbs / rd:.0%} of the read probe ({rd:.1f}), {gbs / cp:.0%} of the copy probe ({cp:.1f})  "
          f"tokens {toks[n]}", flush=True)
print("JSON " + json.dumps(out))

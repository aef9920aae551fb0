#!/usr/bin/env python
# usage: python ab_prefill.py base=ART_DIR,new=ART_DIR 64,256 ROUNDS CALLS THREADS   (artifact folders of moec compile)
"""A/B: persistent worker per artifact, interleaved rounds; prints medians and new/base ratios; checks logits equal.
Also the median over rounds of each round's ratio of medians (paired within the round: the host's load swings move it
less).  Used by benchmarks/results/i8_w8a8_prefill_2026-12-07 and wq_int8_prefill_2026-12-07."""
import os, sys, json, subprocess, statistics, time
import numpy as np
WORKER = r'''
import sys, time, numpy as np
from moec.targets.cpu_backend import CpuArtifact
art = CpuArtifact(sys.argv[1], threads=int(sys.argv[2]))
print("ok", flush=True)
for line in sys.stdin:
    N, k = map(int, line.split())
    x = np.random.default_rng(N).integers(0, 32000, (1, N)).astype(np.int64)
    out = art([x])
    ts = []
    for _ in range(k):
        t0 = time.perf_counter(); art([x]); ts.append(time.perf_counter() - t0)
    o = np.asarray(out[0]).ravel()
    print(" ".join(f"{t*1e3:.3f}" for t in ts), "|", float(o.sum()), float(np.abs(o).max()), o[:4].tolist(), flush=True)
    np.save(f"/tmp/moec_ab_logits_{sys.argv[3]}_{N}.npy", o)
'''
if len(sys.argv) < 5:
    sys.exit(__doc__ if __doc__ and 'usage' in __doc__ else open(__file__).read().splitlines()[1])
arts = dict(a.split("=", 1) for a in sys.argv[1].split(","))
Ns = [int(v) for v in sys.argv[2].split(",")]
rounds, k, th = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "2"
procs = {}
for name, d in arts.items():
    p = subprocess.Popen([sys.executable, "-c", WORKER, d, th, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ok"
    procs[name] = p
res = {}
for r in range(rounds):
    order = list(procs) if r % 2 == 0 else list(procs)[::-1]
    for N in Ns:
        for name in order:
            p = procs[name]
            p.stdin.write(f"{N} {k}\n"); p.stdin.flush()
            ln = p.stdout.readline()
            ts = [float(v) for v in ln.split("|")[0].split()]
            res.setdefault((name, N), []).extend(ts)
            res.setdefault(("round", name, N), []).append(statistics.median(ts))
for p in procs.values(): p.stdin.close(); p.wait()
names = list(arts)
for N in Ns:
    med = {n: statistics.median(res[(n, N)]) for n in names}
    s = "  ".join(f"{n} {med[n]:.2f} ms" for n in names)
    base = names[0]
    rat = "  ".join(f"{n}/{base} {med[n]/med[base]:.3f} (paired per round {statistics.median(a / b for a, b in zip(res[('round', n, N)], res[('round', base, N)])):.3f})" for n in names[1:])
    same = all(np.array_equal(np.load(f"/tmp/moec_ab_logits_{base}_{N}.npy"), np.load(f"/tmp/moec_ab_logits_{n}_{N}.npy")) for n in names[1:])
    print(f"N={N}: {s}  {rat}  (medians of {len(res[(base, N)])}; logits identical: {same})")

"""Steady-state A/B in one process, calls interleaved: steady.py T THREADS ROUNDS ART_A ART_B..."""
import json, re, sys, time
import numpy as np
from moec.targets.cpu_backend import CpuArtifact
T, threads, rounds, arts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
A = [CpuArtifact(a, threads=threads) for a in arts]
def inputs(art):
    rng = np.random.default_rng(0); ins = []
    for i in art.manifest["inputs"]:
        parts = i["type"][7:].split(",")[0].rstrip(">").split("x"); dims, dt = parts[:-1], parts[-1]
        shape = [T if d == "?" else int(d) for d in dims]
        if i["name"] == "input_ids": ins.append(rng.integers(3, 1000, shape).astype(np.int64))
        elif i["name"] == "pos": ins.append(np.array([100], np.int64))
        else: ins.append(np.zeros(shape, np.float32))
    return ins
I = [inputs(a) for a in A]
outs = [a(i) for a, i in zip(A, I)]
for a, i in zip(A, I): a(i)
t = {k: [] for k in range(len(A))}
for r in range(rounds):
    for k, (a, i) in enumerate(zip(A, I)):
        t0 = time.perf_counter(); a(i); t[k].append((time.perf_counter() - t0) * 1e3)
same = all(all(np.array_equal(x, y) for x, y in zip(outs[0], o)) for o in outs[1:])
print(json.dumps({"T": T, "threads": threads, "rounds": rounds, "bit_identical_outputs": same,
                  "median_ms": {arts[k]: round(float(np.median(v)), 3) for k, v in t.items()},
                  "min_ms": {arts[k]: round(float(np.min(v)), 3) for k, v in t.items()}}))

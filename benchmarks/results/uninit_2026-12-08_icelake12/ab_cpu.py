#!/usr/bin/env python
# usage: python ab_cpu.py mm|ids base=ART,new=ART 64,256 ROUNDS CALLS THREADS
"""A/B of an artifact pair: persistent worker per artifact, interleaved rounds (order alternating); per call the wall
time and the process CPU time (all threads; less moved by other processes on a loaded host); medians, minima and the
median of per-round ratios; outputs checked equal.  Probe: a 32 MB fill (numpy) in the same worker, each round."""
import sys, subprocess, statistics, tempfile
tmp = tempfile.mkdtemp(prefix="ab_cpu_")
import numpy as np
WORKER = r'''
import sys, time, numpy as np
from moec.targets.cpu_backend import CpuArtifact
mode = sys.argv[4]
art = CpuArtifact(sys.argv[1], threads=int(sys.argv[2]))
buf = np.empty(8 << 20, np.float32); buf.fill(1)
print("ok", flush=True)
for line in sys.stdin:
    T, k = map(int, line.split())
    if mode == "mm":
        x = np.random.default_rng(T).standard_normal((T, 1024)).astype(np.float32)
    else:
        x = np.random.default_rng(T).integers(0, 32000, (1, T)).astype(np.int64)
    out = art([x])
    ts, cs = [], []
    for _ in range(k):
        c0 = time.process_time(); t0 = time.perf_counter(); art([x]); t1 = time.perf_counter(); c1 = time.process_time()
        ts.append(t1 - t0); cs.append(c1 - c0)
    f0 = time.perf_counter(); buf.fill(0); f1 = time.perf_counter()
    np.save(f"{sys.argv[5]}/ab_{sys.argv[3]}_{mode}_{T}.npy", np.asarray(out[0]))
    print(" ".join(f"{t*1e3:.3f}" for t in ts), "|", " ".join(f"{c*1e3:.3f}" for c in cs), "|", f"{(f1-f0)*1e3:.3f}", flush=True)
'''
mode = sys.argv[1]
arts = dict(a.split("=", 1) for a in sys.argv[2].split(","))
Ts = [int(v) for v in sys.argv[3].split(",")]
rounds, k, th = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
procs = {n: subprocess.Popen([sys.executable, "-c", WORKER, d, th, n, mode, tmp], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) for n, d in arts.items()}
for p in procs.values():
    assert p.stdout.readline().strip() == "ok"
res = {}
for r in range(rounds):
    order = list(procs) if r % 2 == 0 else list(procs)[::-1]
    for T in Ts:
        for n in order:
            procs[n].stdin.write(f"{T} {k}\n"); procs[n].stdin.flush()
            w, c, f = procs[n].stdout.readline().split("|")
            w = [float(v) for v in w.split()]; c = [float(v) for v in c.split()]
            res.setdefault(("w", n, T), []).extend(w)
            res.setdefault(("c", n, T), []).extend(c)
            res.setdefault(("fill",), []).append(float(f))
            res.setdefault(("rw", n, T), []).append(statistics.median(w))
            res.setdefault(("rc", n, T), []).append(statistics.median(c))
for p in procs.values():
    p.stdin.close(); p.wait()
names = list(arts)
b = names[0]
print(f"probe: 32 MB fill {statistics.median(res[('fill',)]):.2f} ms median (min {min(res[('fill',)]):.2f})")
for T in Ts:
    for n in names[1:]:
        same = np.array_equal(np.load(f"{tmp}/ab_{b}_{mode}_{T}.npy"), np.load(f"{tmp}/ab_{n}_{mode}_{T}.npy"))
        for kind, lab in (("w", "wall"), ("c", "cpu")):
            mb, mn = statistics.median(res[(kind, b, T)]), statistics.median(res[(kind, n, T)])
            nb, nn = min(res[(kind, b, T)]), min(res[(kind, n, T)])
            paired = statistics.median(x / y for x, y in zip(res[("r" + kind, n, T)], res[("r" + kind, b, T)]))
            print(f"T={T} {lab}: {b} {mb:.2f} ms (min {nb:.2f})  {n} {mn:.2f} ms (min {nn:.2f})  {n}/{b} medians "
                  f"{mn/mb:.3f} mins {nn/nb:.3f} paired per round {paired:.3f}  ({len(res[(kind, b, T)])} calls each; "
                  f"outputs identical: {same})")

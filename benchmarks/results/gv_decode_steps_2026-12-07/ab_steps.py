"""Interleaved decode timing of compiled decode-step artifacts of one model (issue 17, GV): each a folder made by
compile_step / bench_model.py's decode part (or rebuild_step.py: the same model.c against another runtime).

    python ab_steps.py CONTEXT ROUNDS STEPS DIR_A DIR_B [...]

Per artifact a prompt of CONTEXT ids, then per round STEPS greedy steps from the context on (2 warm-up steps
left out), the artifacts in turn (order reversed every other round); prints per artifact the median of the round
medians, the median of the per-round ratios to the first, percentiles of every step, process CPU time per step,
the bytes one step reads (bench_model.moec_decode_bytes) as GB/s against the 2-thread read / copy probes taken
before and after (the better).  The host is shared: compare ratios within a run."""
import os, sys, time, numpy as np
from moec.targets.cpu_backend import CpuArtifact
from moec import decode
from moec.ir.parser import parse_type
C, rounds, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
from moec.bench import read_probe, copy_probe
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
import bench_model
probes = [(read_probe(threads=2), copy_probe(threads=2))]
dirs = sys.argv[4:]
gens = []
for d in dirs:
    art = CpuArtifact(d, threads=2)
    names = art.input_names
    k0 = parse_type(art.manifest["inputs"][names.index("k_0")]["type"]).shape
    cap = k0[2]
    L = sum(1 for n in names if n not in decode.input_names(0)) // 2
    g = decode.Generator(lambda *xs, art=art: art(list(xs)), L, k0[1], k0[3], cap)
    x = np.random.default_rng(C).integers(3, 32000, (1, C)).astype(np.int64)
    lg = g(x)
    gens.append((g, lg[:, -1].argmax(-1)[:, None], cap, lg))
# same logits for the prompt?
ref = gens[0][3]
for i, (g, t, cap, lg) in enumerate(gens[1:], 1):
    print(f"prompt logits {dirs[i]} vs {dirs[0]}: max abs diff {np.abs(lg - ref).max():.3g}")
res = [[] for _ in dirs]
allts = [[] for _ in dirs]
cts = [[] for _ in dirs]
toks = [[] for _ in dirs]
for r in range(rounds):
    order = range(len(dirs)) if r % 2 == 0 else reversed(range(len(dirs)))
    for i in order:
        g, tok, cap, _ = gens[i]
        g.pos = C
        ts = []
        tk = tok
        for s in range(steps + 2):
            c0 = time.process_time(); t0 = time.perf_counter(); lg = g(tk); dt = time.perf_counter() - t0; dc = time.process_time() - c0
            tk = lg[:, -1].argmax(-1)[:, None]
            if s >= 2: ts.append(dt); cts[i].append(dc)
            if r == 0: toks[i].append(int(tk[0, 0]))
        res[i].append(np.median(ts) * 1e3)
        allts[i].extend(ts)
probes.append((read_probe(threads=2), copy_probe(threads=2)))
rd, cp = max(p[0] for p in probes), max(p[1] for p in probes)
print(f"probes (2 threads, before / after): read {probes[0][0]:.1f} / {probes[1][0]:.1f} GB/s, copy {probes[0][1]:.1f} / {probes[1][1]:.1f} GB/s")
base = np.array(res[0])
for i, d in enumerate(dirs):
    a = np.array(res[i])
    print(f"{os.path.basename(d.rstrip('/')):28s} ctx {C}: median {np.median(a):.3f} ms/token ({1000/np.median(a):.1f} tok/s)"
          f"  ratio to first (per round, median) {np.median(a / base):.3f}  [{np.min(a/base):.3f}..{np.max(a/base):.3f}]"
          f"  tokens equal to first: {toks[i] == toks[0]}")
    q = np.array(allts[i]) * 1e3; q0 = np.array(allts[0]) * 1e3
    cap_ = gens[i][2]
    mb = bench_model.moec_decode_bytes(d, C, cap_)["total"] / 1e6
    gbs = mb / np.median(a)
    print(f"    {mb:.1f} MB/token: {gbs:.1f} GB/s at the median = {100*gbs/rd:.0f}% of read ({rd:.1f}), {100*gbs/cp:.0f}% of copy ({cp:.1f}); at p10 step {mb/np.percentile(q,10):.1f} GB/s = {100*mb/np.percentile(q,10)/rd:.0f}% of read")
    print(f"    all steps: p10 {np.percentile(q,10):.3f} ms (ratio {np.percentile(q,10)/np.percentile(q0,10):.3f}), p25 {np.percentile(q,25):.3f} (ratio {np.percentile(q,25)/np.percentile(q0,25):.3f}), min {q.min():.3f} (ratio {q.min()/q0.min():.3f})")
for i, d in enumerate(dirs):
    c = np.array(cts[i]) * 1e3; c0 = np.array(cts[0]) * 1e3
    print(f"  cpu time per step {os.path.basename(d.rstrip('/'))}: median {np.median(c):.3f} ms (ratio {np.median(c)/np.median(c0):.3f}), p25 {np.percentile(c,25):.3f} (ratio {np.percentile(c,25)/np.percentile(c0,25):.3f})")

"""A/B of whole-model decode between two moec versions' compiled KV steps (decode_bench.compile_step_in_child of
each version, e.g. --weights f32 and w4a8 at capacity 1056), loaded in one process and driven by the same greedy
loop (a prompt of C tokens, then 32 tokens), interleaved repeats in alternating order; per engine the median ms
per decoded token (wall and process CPU), the median over rounds of its ratio to the first engine in the same
round (paired: robust to a host whose load changes between rounds), the prefill ms, the bytes per token (bench_model.moec_decode_bytes of
each artifact) as GB/s, and the copy probe.  The layout of each step's K cache: ``t`` [B, Hkv, D, M] (moec before
the row layout), ``rows`` [B, Hkv, M, D], or ``rows16``: rows of a half-precision cache (f16 K and V:
decode.compile_step(kv_cache="f16")).

    python benchmarks/kv_ab_decode.py THREADS REPEATS base:ART_A:t new:ART_B:rows"""
import os
import sys
import time

import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moec.targets.cpu_backend import CpuArtifact

L, HKV, D, M = 2, 8, 128, 1056
threads = int(sys.argv[1]); repeats = int(sys.argv[2]); steps = 32
specs = [s.split(":") for s in sys.argv[3:]]  # name:dir:layout(t|rows)


class Gen:
    def __init__(self, art, lay):
        self.art, self.lay = art, lay
        dt = np.float16 if lay == "rows16" else np.float32
        self.k = np.zeros((L, 1, HKV, D, M) if lay == "t" else (L, 1, HKV, M, D), dt)
        self.v = np.zeros((L, 1, HKV, M, D), dt)
        self.args = [a for l in range(L) for a in (self.k[l], self.v[l])]

    def __call__(self, ids, pos):
        lg, new = self.art([np.ascontiguousarray(ids, np.int64), np.array([pos], np.int64), *self.args])
        t = ids.shape[1]
        if self.lay == "t":
            self.k[:, :, :, :, pos:pos + t] = new[:, 0].transpose(0, 1, 2, 4, 3)
        else:
            self.k[:, :, :, pos:pos + t] = new[:, 0]
        self.v[:, :, :, pos:pos + t] = new[:, 1]
        return lg

    def run(self, prompt):
        t0 = time.perf_counter()
        lg = self(prompt, 0)
        pre = (time.perf_counter() - t0) * 1e3
        pos = prompt.shape[1]
        toks, dec, cpu = [int(lg[0, -1].argmax())], [], []
        for _ in range(steps - 1):
            t0, c0 = time.perf_counter(), time.process_time()
            lg = self(np.array([[toks[-1]]]), pos)
            dec.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
            pos += 1
            toks.append(int(lg[0, -1].argmax()))
        return toks, (float(np.median(dec)), float(np.median(cpu)), pre)


from bench_model import moec_decode_bytes
from moec.bench import copy_probe
arts = [(n, Gen(CpuArtifact(d, threads=threads), lay), d) for n, d, lay in specs]
res = {}
for C in (128, 1024):
    prompt = np.random.default_rng(C).integers(3, 32000, (1, C))
    cp = [copy_probe(threads=threads)]
    ms = {n: [] for n, _, _ in arts}; cs = {n: [] for n, _, _ in arts}; ps = {n: [] for n, _, _ in arts}; toks = {}
    for r in range(repeats):
        for n, g, _ in (arts if r % 2 == 0 else arts[::-1]):
            t, (m, c, p) = g.run(prompt)
            ms[n].append(m); cs[n].append(c); ps[n].append(p); toks[n] = t
    cp.append(copy_probe(threads=threads))
    base = float(np.median(ms[arts[0][0]]))
    cbase, pbase = float(np.median(cs[arts[0][0]])), float(np.median(ps[arts[0][0]]))
    for n, g, d in arts:
        md, mc, mp = float(np.median(ms[n])), float(np.median(cs[n])), float(np.median(ps[n]))
        b = moec_decode_bytes(d, C + steps // 2, M)  # (each artifact's own: an f16 cache reads half the cache bytes)
        tot = b["total"]
        print(f"th={threads} C={C} {n}: {md:.3f} ms/token ({1000/md:.1f} tok/s) runs {[round(x,3) for x in ms[n]]} "
              f"ratio vs {arts[0][0]} {md/base:.3f}; cpu {mc:.3f} ms/token ratio {mc/cbase:.3f}; prefill {mp:.1f} ms ratio {mp/pbase:.3f}; {tot/1e6:.1f} MB/token -> {tot/md/1e6:.1f} GB/s; "
              f"kv cache {b['kv cache']/1e6:.1f} MB; copy probe {max(cp):.1f} GB/s; tokens same as first: {toks[n] == toks[arts[0][0]]}; "
              f"paired ratio (median over rounds of this / first in the same round) "
              f"{float(np.median(np.array(ms[n]) / np.array(ms[arts[0][0]]))):.3f}", flush=True)

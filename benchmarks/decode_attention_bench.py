"""Micro-benchmark of the decode step's attention over a KV cache (issue 17): the fused
``moec.kv_step_attention`` kernel against the decomposed graph it replaces (compiler/decode.py's split
softmax as generic batched matmuls + select / reduce_max / exp / reduce_sum / div), one query token,
the benchmark model's geometry (8 query heads, 8 kv heads, head 128) at several context lengths.

Reports per (threads, context): median ms of interleaved calls of both artifacts, the cache bytes read
per call (K and V rows < pos) as GB/s, and that against the copy probe (moec.bench.copy_probe, same
threads).  ``--cold`` writes a 256 MB array between calls (a decode step streams its weights between two
attentions: the cache comes from memory).  On a shared, loaded host the wall clock counts the time the
process waits for a core: the table gives the CPU time of the calls too (the calling thread's with one
thread; the process's, all threads summed, with more), and GB/s from both.  Usage: python benchmarks/decode_attention_bench.py [--ctx 128,1024,4096] [--threads 1,2]"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np


def split_module(Hq, Hkv, D, M):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from test_decode_attention import _split_attention
    from moec.frontend.torch_import import import_torch
    scale = D ** -0.5

    class Att(torch.nn.Module):
        def forward(self, q, kc, vc, k, v, pos):
            return _split_attention(q, kc, vc, k, v, pos, scale)

    ex = (torch.zeros(1, Hq, 1, D), torch.zeros(1, Hkv, M, D), torch.zeros(1, Hkv, M, D), torch.zeros(1, Hkv, 1, D),
          torch.zeros(1, Hkv, 1, D), torch.tensor([2]))
    dims = {0: {2: "T"}, 1: {}, 2: {}, 3: {2: "T"}, 4: {2: "T"}, 5: {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_torch(Att().eval(), ex, dynamic_dims=dims)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", default="128,1024,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--cold", action="store_true")
    a = ap.parse_args(argv)
    from moec.bench import copy_probe
    from moec.driver import build_module
    from moec.passes.dce import DeadCodeElimination
    from moec.passes.recognize_decoder import RecognizeDecoder
    Hq, Hkv, D = a.heads, a.kv_heads, a.head_dim
    print(f"# uptime: {os.popen('uptime').read().strip()}")
    print(f"# {'cold' if a.cold else 'warm'} cache; ms: wall / cpu")
    print("| threads | context | decomposed ms | fused ms | speedup wall / cpu | fused GB/s wall / cpu | copy probe GB/s "
          "| fused % of copy wall / cpu |")
    print("|---|---|---|---|---|---|---|---|")
    flush = np.ones(64 << 20, np.float32) if a.cold else None
    tmp = tempfile.mkdtemp(prefix="decatt_")
    for th in [int(x) for x in a.threads.split(",")]:
        cp = copy_probe(threads=th)
        for ctx in [int(x) for x in a.ctx.split(",")]:
            M = ctx + 32
            dec = split_module(Hq, Hkv, D, M)
            fus = split_module(Hq, Hkv, D, M)
            assert RecognizeDecoder(ops=("moec.kv_step_attention",)).run(fus)
            DeadCodeElimination().run(fus)
            arts = [build_module(x, os.path.join(tmp, f"{n}_{ctx}_{th}"), threads=th) for n, x in (("d", dec), ("f", fus))]
            r = np.random.default_rng(0)
            xs = [r.standard_normal(s).astype(np.float32) for s in
                  ((1, Hq, 1, D), (1, Hkv, M, D), (1, Hkv, M, D), (1, Hkv, 1, D), (1, Hkv, 1, D))]
            xs.append(np.array([ctx], np.int64))
            outs = [art(xs)[0] for art in arts]
            np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
            ts, cs = [[], []], [[], []]
            cpu = time.thread_time if th == 1 else time.process_time
            for _ in range(a.calls):
                for i, art in enumerate(arts):
                    if flush is not None:
                        flush += 1.0
                    t0, c0 = time.perf_counter(), cpu()
                    art(xs)
                    cs[i].append(cpu() - c0)
                    ts[i].append(time.perf_counter() - t0)
            md = [float(np.median(t)) * 1e3 for t in ts]
            mc = [float(np.median(t)) * 1e3 for t in cs]
            by = 2 * Hkv * ctx * D * 4
            gw, gc = by / md[1] / 1e6, by / max(mc[1], 1e-6) / 1e6
            print(f"| {th} | {ctx} | {md[0]:.3f} / {mc[0]:.3f} | {md[1]:.3f} / {mc[1]:.3f} | {md[0] / md[1]:.2f}x / "
                  f"{mc[0] / max(mc[1], 1e-6):.2f}x | {gw:.1f} / {gc:.1f} | {cp:.1f} | {100 * gw / cp:.0f}% / "
                  f"{100 * gc / cp:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

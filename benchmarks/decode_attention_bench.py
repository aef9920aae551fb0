"""Micro-benchmark of the decode step's attention over a KV cache (issue 17): the fused
``moec.kv_step_attention`` kernel against the decomposed graph it replaces (compiler/decode.py's split
softmax as generic batched matmuls + select / reduce_max / exp / reduce_sum / div), one query token,
the benchmark model's geometry (8 query heads, 8 kv heads, head 128) at several context lengths.

Reports per (threads, context): median ms of interleaved calls of both artifacts, the cache bytes read
per call (K and V rows < pos) as GB/s, and that against the copy probe (moec.bench.copy_probe, same
threads).  ``--cold`` writes a 256 MB array between calls (a decode step streams its weights between two
attentions: the cache comes from memory).  On a shared, loaded host the wall clock counts the time the
process waits for a core: the table gives the CPU time of the calls too (the calling thread's with one
thread; the process's, all threads summed, with more), and GB/s from both.  ``--kv-cache f32,f16`` (default):
the fused kernel also over a half-precision cache (the same op with f16 K and V rows, half the bytes; its
result within the rounding's effect of the f32 one), a row per cache type.
Usage: python benchmarks/decode_attention_bench.py [--ctx 128,1024,4096] [--threads 1,2] [--kv-cache f32,f16]"""
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


def fused_module(Hq, Hkv, D, M, cache):
    """The fused op alone with caches of element type ``cache`` (tests/test_kv_f16.py's module)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from test_kv_f16 import _step_module
    return _step_module(1, Hq, Hkv, D, D, M, D ** -0.5, cache=cache)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", default="128,1024,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--kv-cache", default="f32,f16", help="the fused kernel's cache types (a row each)")
    a = ap.parse_args(argv)
    from moec.bench import copy_probe
    from moec.driver import build_module
    from moec.passes.dce import DeadCodeElimination
    from moec.passes.recognize_decoder import RecognizeDecoder
    Hq, Hkv, D = a.heads, a.kv_heads, a.head_dim
    print(f"# uptime: {os.popen('uptime').read().strip()}")
    print(f"# {'cold' if a.cold else 'warm'} cache; ms: wall / cpu")
    print("| threads | context | cache | decomposed ms | fused ms | speedup wall / cpu | fused GB/s wall / cpu | "
          "copy probe GB/s | fused % of copy wall / cpu |")
    print("|---|---|---|---|---|---|---|---|---|")
    kinds = [k for k in a.kv_cache.split(",") if k]
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
            mods = [("d", dec)] + [(k, fus if k == "f32" else fused_module(Hq, Hkv, D, M, k)) for k in kinds]
            arts = [build_module(x, os.path.join(tmp, f"{n}_{ctx}_{th}"), threads=th) for n, x in mods]
            r = np.random.default_rng(0)
            xs = [r.standard_normal(s).astype(np.float32) for s in
                  ((1, Hq, 1, D), (1, Hkv, M, D), (1, Hkv, M, D), (1, Hkv, 1, D), (1, Hkv, 1, D))]
            xs.append(np.array([ctx], np.int64))
            feeds = [xs] + [[xs[0], xs[1].astype(np.float16), xs[2].astype(np.float16), *xs[3:]] if k == "f16" else xs
                            for k in kinds]
            outs = [art(x)[0] for art, x in zip(arts, feeds)]
            for k, o in zip(kinds, outs[1:]):  # (f16: within the rounding's effect, ~1e-2 on these inputs)
                np.testing.assert_allclose(o, outs[0], rtol=1e-4, atol=5e-2 if k == "f16" else 1e-5)
            ts, cs = [[] for _ in arts], [[] for _ in arts]
            cpu = time.thread_time if th == 1 else time.process_time
            for _ in range(a.calls):
                for i, art in enumerate(arts):
                    if flush is not None:
                        flush += 1.0
                    t0, c0 = time.perf_counter(), cpu()
                    art(feeds[i])
                    cs[i].append(cpu() - c0)
                    ts[i].append(time.perf_counter() - t0)
            md = [float(np.median(t)) * 1e3 for t in ts]
            mc = [float(np.median(t)) * 1e3 for t in cs]
            for i, k in enumerate(kinds, 1):
                by = 2 * Hkv * ctx * D * (2 if k == "f16" else 4)
                gw, gc = by / md[i] / 1e6, by / max(mc[i], 1e-6) / 1e6
                print(f"| {th} | {ctx} | {k} | {md[0]:.3f} / {mc[0]:.3f} | {md[i]:.3f} / {mc[i]:.3f} | "
                      f"{md[0] / md[i]:.2f}x / {mc[0] / max(mc[i], 1e-6):.2f}x | {gw:.1f} / {gc:.1f} | {cp:.1f} | "
                      f"{100 * gw / cp:.0f}% / {100 * gc / cp:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decode tokens/s with a KV cache at a context length: moec vs onnxruntime vs torch eager.

    python -m moec.decode_bench [--context 128] [--steps 32] [--hidden 512] [--vocab 8000] [--threads 2]

One random 2-layer MixtralForCausalLM (transformers' own code; sizes from the flags).  Engines:
- moec: ``moec.compile`` of the KV-cache step (compiler/decode.py), driven by ``Generator``;
- onnxruntime: the same step exported with torch.onnx (dynamo), the same loop (its own session.run);
- torch step: the same step in eager PyTorch, the same loop;
- torch hf: transformers' own forward with its DynamicCache (what a torch user runs).
Each engine: the prompt of ``context`` tokens (prefill), then ``steps`` greedy tokens; prefill ms and
the median decode ms per token; engines run interleaved ``repeats`` times, the median reported.  All
engines' tokens must agree (printed)."""
from __future__ import annotations

import argparse
import os
import tempfile
import warnings

import numpy as np


def build(hidden: int, inter: int, experts: int, heads: int, kv_heads: int, vocab: int, layers: int, seed: int = 0):
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(hidden_size=hidden, intermediate_size=inter, num_local_experts=experts,
                        num_experts_per_tok=2, num_attention_heads=heads, num_key_value_heads=kv_heads,
                        vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=4096,
                        sliding_window=None)
    cfg._experts_implementation = "batched_mm"
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixtralForCausalLM(cfg).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--inter", type=int, default=1408)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--weights", default="f32")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from moec import decode
    model = build(a.hidden, a.inter, a.experts, a.heads, a.kv_heads, a.vocab, a.layers)
    geo = decode.cache_geometry(model)
    max_len = a.context + a.steps
    prompt = np.random.default_rng(0).integers(3, a.vocab, (1, a.context))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = decode.compile_step(model, max_len, weights=a.weights, verify=False)
        path = decode.export_onnx(model, os.path.join(tempfile.mkdtemp(prefix="moec_db_"), "step.onnx"), max_len)
    steps = {"moec": decode.moec_step(cm, a.threads), "onnxruntime": decode.ort_step(path, a.threads),
             "torch step": decode.torch_step(model)}
    res = {k: [] for k in [*steps, "torch hf"]}
    toks = {}
    for _ in range(a.repeats):
        for name, fn in steps.items():
            gen = decode.Generator(fn, geo["layers"], geo["kv_heads"], geo["head_dim"], max_len)
            r = gen.generate(prompt, a.steps)
            res[name].append((r.prefill_ms, float(np.median(r.decode_ms))))
            toks[name] = r.tokens[0].tolist()
        t, pre, dec = decode.hf_decode(model, prompt, a.steps)
        res["torch hf"].append((pre, float(np.median(dec))))
        toks["torch hf"] = t[0].tolist()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"2-layer Mixtral, {n_params / 1e6:.1f}M parameters (hidden {a.hidden}, F {a.inter}, E {a.experts} top-2, "
          f"{a.heads} heads / {a.kv_heads} kv, vocab {a.vocab}), moec weights {a.weights}, {a.threads} threads, "
          f"context {a.context}, {a.steps} steps, median of {a.repeats}")
    print("| engine | prefill ms | decode ms/token | decode tokens/s | vs moec |")
    print("|---|---|---|---|---|")
    base = float(np.median([d for _, d in res["moec"]]))
    for name, v in res.items():
        pre = float(np.median([x for x, _ in v]))
        dec = float(np.median([d for _, d in v]))
        print(f"| {name} | {pre:.2f} | {dec:.3f} | {1000 / dec:.1f} | {dec / base:.2f}x |")
    agree = len({tuple(t) for t in toks.values()}) == 1
    print("tokens agree across engines:", agree)
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())

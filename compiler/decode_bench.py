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
import time
import warnings
from typing import Callable, Dict, Optional, Sequence

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


def llama_cpp_step_loop(path: str, threads: int, n_ctx: int):
    """llama.cpp (llama-cpp-python) on a GGUF: ``run(prompt, steps)`` -> (tokens, prefill ms, decode ms list),
    the same greedy loop as ``Generator.generate``: the prompt in one eval from an empty cache, then one eval
    per new token (the last token chosen is not fed back); logits of the last position only."""
    from llama_cpp import Llama
    n_ctx = -(-n_ctx // 256) * 256
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=min(n_ctx, 2048), n_ubatch=min(n_ctx, 512), n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    V = llm.n_vocab()

    def last():
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(V,))

    def run(prompt, steps: int):
        toks = [int(t) for t in np.asarray(prompt).reshape(-1)]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks)
        pre = (time.perf_counter() - t0) * 1e3
        out, dec = [int(last().argmax())], []
        for _ in range(steps - 1):
            t0 = time.perf_counter()
            llm.eval([out[-1]])
            dec.append((time.perf_counter() - t0) * 1e3)
            out.append(int(last().argmax()))
        return np.array([out]), pre, dec
    run.llm = llm
    return run


def whole_model_decode(ckpt: str, contexts: Sequence[int], formats: Sequence[str], ggufs: Dict[str, str],
                       threads: int = 2, steps: int = 32, repeats: int = 3, group_size: int = 64,
                       work: Optional[str] = None, log=print, torch_eager: bool = True) -> dict:
    """Decode tokens/s with a KV cache on a transformers CausalLM checkpoint (issue 17's whole-model table):
    moec in each of ``formats`` (``compile_step``, the cache read in place), onnxruntime f32 (the same step
    exported), torch eager f32 (transformers' own loop and DynamicCache) and llama.cpp on each GGUF of
    ``ggufs`` ({label: path}).  Per context length C: a random prompt of C tokens (prefill), then ``steps``
    greedy tokens; the cache holds C + steps positions (moec / onnxruntime are compiled / exported per C).
    Engines run interleaved ``repeats`` times; per engine the median over repeats of the median ms per
    decoded token.  One context's engines are loaded at a time and freed after it; the onnxruntime step's
    export is kept in ``work`` and reused (step_<C>.onnx).  ``torch_eager=False`` leaves torch out."""
    import gc
    import torch
    from transformers import AutoModelForCausalLM
    from moec import decode
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    default_impl = model.config._experts_implementation  # (what a user's model runs: torch eager is timed with it)
    model.config._experts_implementation = "batched_mm"  # (exportable; the same math as transformers' loop)
    geo = decode.cache_geometry(model)
    work = work or tempfile.mkdtemp(prefix="moec_decode_")
    os.makedirs(work, exist_ok=True)
    rows = []
    for C in contexts:
        max_len = C + steps
        prompt = np.random.default_rng(C).integers(3, geo["vocab"], (1, C))
        engines: Dict[str, Callable] = {}
        t0 = time.time()
        for f in formats:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cm = decode.compile_step(model, max_len, weights=f, verify=False, group_size=group_size)
            fn = decode.moec_step(cm, threads)
            engines[f"moec {f}"] = (lambda fn=fn: lambda p, n: _gen(fn, geo, max_len, p, n))()
        path = os.path.join(work, f"step_{C}_{steps}.onnx")
        if not os.path.exists(path):
            decode.export_onnx(model, path, max_len)
        ofn = decode.ort_step(path, threads)
        # (the export's MoE is batched_mm, which copies the chosen experts' weights per token: its prompt goes in
        # chunks of 32 tokens, or a 1024-token prompt would need tens of GB)
        engines["onnxruntime f32"] = lambda p, n: _gen(ofn, geo, max_len, p, n, chunk=32)
        if torch_eager:
            engines["torch eager f32"] = lambda p, n: decode.hf_decode(model, p, n)
        for tag, gpath in ggufs.items():
            engines[f"llama.cpp {tag}"] = llama_cpp_step_loop(gpath, threads, max_len)
        model.config._experts_implementation = default_impl
        log(f"decode context {C}: {len(engines)} engines ready ({time.time() - t0:.0f} s)")
        res: Dict[str, list] = {k: [] for k in engines}
        toks: Dict[str, list] = {}
        for _ in range(repeats):
            for name, run in engines.items():
                with torch.inference_mode() if name.startswith("torch") else _nullctx():
                    t, pre, dec = run(prompt, steps)
                res[name].append((pre, float(np.median(dec))))
                toks[name] = np.asarray(t).reshape(-1).tolist()
        ref = toks.get("torch eager f32", toks.get("onnxruntime f32"))
        row = {"context": C, "steps": steps, "engines": {}}
        for name, v in res.items():
            dec = float(np.median([d for _, d in v]))
            row["engines"][name] = {"prefill_ms": float(np.median([p for p, _ in v])), "decode_ms_per_token": dec,
                                    "tokens_per_s": 1000.0 / dec,
                                    "tokens_equal_reference": None if ref is None else toks[name] == ref}
        rows.append(row)
        log(f"decode context {C}: " + ", ".join(f"{k} {e['tokens_per_s']:.1f} tok/s" for k, e in row["engines"].items()))
        engines.clear()
        gc.collect()
        model.config._experts_implementation = "batched_mm"
    return {"threads": threads, "steps": steps, "repeats": repeats, "formats": list(formats),
            "tokens_reference": "torch eager f32" if torch_eager else "onnxruntime f32",
            "ggufs": dict(ggufs), "rows": rows,
            "how": "per engine: a random prompt of `context` tokens (prefill, one call), then `steps` greedy tokens "
                   "one call each; median over interleaved repeats of the median ms per decoded token"}


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _gen(step, geo, max_len, prompt, steps, chunk: Optional[int] = None):
    from moec import decode
    g = decode.Generator(step, geo["layers"], geo["kv_heads"], geo["head_dim"], max_len)
    if not chunk:
        r = g.generate(prompt, steps)
        return r.tokens, r.prefill_ms, r.decode_ms
    prompt = np.asarray(prompt, np.int64)
    t0 = time.perf_counter()
    for i in range(0, prompt.shape[1], chunk):  # (the same greedy loop as Generator.generate, the prompt in chunks)
        logits = g(prompt[:, i:i + chunk])
    pre = (time.perf_counter() - t0) * 1e3
    toks, dec = [logits[:, -1].argmax(-1)], []
    for _ in range(steps - 1):
        t0 = time.perf_counter()
        logits = g(toks[-1][:, None])
        dec.append((time.perf_counter() - t0) * 1e3)
        toks.append(logits[:, -1].argmax(-1))
    return np.stack(toks, 1), pre, dec


if __name__ == "__main__":
    raise SystemExit(main())

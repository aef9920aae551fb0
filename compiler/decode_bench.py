"""Decode tokens/s with a KV cache at a context length: moec vs onnxruntime vs torch eager.

    python -m moec.decode_bench [--context 128] [--steps 32] [--hidden 512] [--vocab 8000] [--threads 2]
                                [--kv-cache f16|f32]

One random 2-layer MixtralForCausalLM (transformers' own code; sizes from the flags).  Engines:
- moec: ``moec.compile`` of the KV-cache step (compiler/decode.py), driven by ``Generator``, its cache of
  ``--kv-cache`` (default f16, as ``moec generate``; the other engines keep f32, llama.cpp its own f16);
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
    p.add_argument("--kv-cache", default="f16", help="moec's cache type (f16 / f32)")
    p.add_argument("--logits-step", action="store_true",
                   help="moec's step returns the logits (the loop takes their argmax) instead of choosing the token")
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
        cm = decode.compile_step(model, max_len, weights=a.weights, verify=False, kv_cache=a.kv_cache,
                                 greedy=not a.logits_step)
        path = decode.export_onnx(model, os.path.join(tempfile.mkdtemp(prefix="moec_db_"), "step.onnx"), max_len)
    steps = {"moec": decode.moec_step(cm, a.threads), "onnxruntime": decode.ort_step(path, a.threads),
             "torch step": decode.torch_step(model)}
    res = {k: [] for k in [*steps, "torch hf"]}
    toks = {}
    for _ in range(a.repeats):
        for name, fn in steps.items():
            gen = decode.Generator(fn, geo["layers"], geo["kv_heads"], geo["head_dim"], max_len, 1,
                                   a.kv_cache if name == "moec" else "f32")
            r = gen.generate(prompt, a.steps)
            res[name].append((r.prefill_ms, float(np.median(r.decode_ms))))
            toks[name] = r.tokens[0].tolist()
        t, pre, dec = decode.hf_decode(model, prompt, a.steps)
        res["torch hf"].append((pre, float(np.median(dec))))
        toks["torch hf"] = t[0].tolist()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"2-layer Mixtral, {n_params / 1e6:.1f}M parameters (hidden {a.hidden}, F {a.inter}, E {a.experts} top-2, "
          f"{a.heads} heads / {a.kv_heads} kv, vocab {a.vocab}), moec weights {a.weights}, {a.threads} threads, "
          f"context {a.context}, {a.steps} steps, median of {a.repeats}; KV cache: moec {a.kv_cache}, the others f32")
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
    run_kv = llama_cpp_kv_cache(llm)

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
    run.kv_cache = run_kv
    return run


def llama_cpp_kv_cache(llm) -> str:
    """The KV cache type a llama-cpp-python ``Llama`` runs with (its context parameters' type_k / type_v:
    f16 unless ``Llama(type_k=..., type_v=...)`` says otherwise), e.g. "f16" or "k q8_0 / v f16"."""
    import llama_cpp
    names = {getattr(llama_cpp, n): n[len("GGML_TYPE_"):].lower() for n in dir(llama_cpp) if n.startswith("GGML_TYPE_")
             and n != "GGML_TYPE_COUNT"}
    k, v = (names.get(int(getattr(llm.context_params, t)), str(getattr(llm.context_params, t))) for t in ("type_k", "type_v"))
    return k if k == v else f"k {k} / v {v}"


def whole_model_decode(ckpt: str, contexts: Sequence[int], formats: Sequence[str], ggufs: Dict[str, str],
                       threads: int = 2, steps: int = 32, repeats: int = 3, group_size: int = 64,
                       work: Optional[str] = None, log=print, torch_eager: bool = True, kv_cache: str = "f16",
                       onnxruntime: bool = True, greedy: bool = True) -> dict:
    """Decode tokens/s with a KV cache on a transformers CausalLM checkpoint (issue 17's whole-model table):
    moec in each of ``formats`` (``compile_step``, the cache read in place), onnxruntime f32 (the same step
    exported), torch eager f32 (transformers' own loop and DynamicCache) and llama.cpp on each GGUF of
    ``ggufs`` ({label: path}).  Per context length C: a random prompt of C tokens (prefill), then ``steps``
    greedy tokens; the cache holds C + steps positions (moec / onnxruntime are compiled / exported per C).
    Engines run interleaved ``repeats`` times; per engine the median over repeats of the median ms per
    decoded token.  Each moec step is compiled in a child process (``compile_step_in_child``: the artifact in
    ``work``, reused when made from the same checkpoint and options), so this process, which holds the torch
    model, onnxruntime's session and llama.cpp, never holds a compile's memory.  One context's engines are loaded at a time and freed after it; the onnxruntime step's
    export is kept in ``work`` and reused (step_<C>.onnx).  ``torch_eager=False`` leaves torch out,
    ``onnxruntime=False`` onnxruntime (its session of the batched_mm export holds several GB).  ``kv_cache``:
    moec's cache type (onnxruntime and torch keep the model's f32, llama.cpp its context's type_k / type_v: f16
    by default); each row's ``kv_cache`` says each engine's.  ``greedy``: moec's steps choose the token inside the
    step (``compile_step(greedy=True)``: token ids out, not logits), as a user's greedy loop does."""
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
    decode.check_kv_cache(kv_cache)
    rows, compiles = [], {}
    for C in contexts:
        max_len = C + steps
        prompt = np.random.default_rng(C).integers(3, geo["vocab"], (1, C))
        engines: Dict[str, Callable] = {}
        kv_of: Dict[str, str] = {}
        t0 = time.time()
        for f in formats:  # (each compile in its own process: this one never holds a compile's memory)
            art_dir = os.path.join(work, f"moec_{f}_{max_len}_g{group_size}" + ("" if kv_cache == "f32" else f"_kv{kv_cache}")
                                   + ("_greedy" if greedy else ""))
            info = compile_step_in_child(ckpt, art_dir, f, max_len, group_size, kv_cache, greedy)
            compiles[f"moec {f} max_len {max_len}"] = dict(info, art_dir=art_dir)
            fn = _artifact_step(art_dir, threads)
            kv_of[f"moec {f}"] = decode.artifact_kv_cache(fn.artifact.manifest)
            engines[f"moec {f}"] = (lambda fn=fn: lambda p, n: _gen(fn, geo, max_len, p, n))()
        if onnxruntime:
            path = os.path.join(work, f"step_{C}_{steps}.onnx")
            if not os.path.exists(path):
                decode.export_onnx(model, path, max_len)
            ofn = decode.ort_step(path, threads)
            # (the export's MoE is batched_mm, which copies the chosen experts' weights per token: its prompt goes
            # in chunks of 32 tokens, or a 1024-token prompt would need tens of GB)
            engines["onnxruntime f32"] = lambda p, n: _gen(ofn, geo, max_len, p, n, chunk=32)
            kv_of["onnxruntime f32"] = "f32"
        if torch_eager:
            engines["torch eager f32"] = lambda p, n: decode.hf_decode(model, p, n)
            kv_of["torch eager f32"] = "f32"  # (transformers' DynamicCache: the model's dtype)
        for tag, gpath in ggufs.items():
            engines[f"llama.cpp {tag}"] = llama_cpp_step_loop(gpath, threads, max_len)
            kv_of[f"llama.cpp {tag}"] = engines[f"llama.cpp {tag}"].kv_cache
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
                                    "tokens_per_s": 1000.0 / dec, "kv_cache": kv_of.get(name),
                                    "tokens_equal_reference": None if ref is None else toks[name] == ref}
        rows.append(row)
        log(f"decode context {C}: " + ", ".join(f"{k} {e['tokens_per_s']:.1f} tok/s" for k, e in row["engines"].items()))
        engines.clear()
        gc.collect()
        model.config._experts_implementation = "batched_mm"
    return {"threads": threads, "steps": steps, "repeats": repeats, "formats": list(formats), "kv_cache": kv_cache,
            "moec_greedy_step": greedy,
            "tokens_reference": "torch eager f32" if torch_eager else "onnxruntime f32" if onnxruntime else None,
            "ggufs": dict(ggufs), "rows": rows, "moec_compiles": compiles,
            "how": "per engine: a random prompt of `context` tokens (prefill, one call), then `steps` greedy tokens "
                   "one call each; median over interleaved repeats of the median ms per decoded token"}


STAMP = "moec_decode_step.json"


def _step_inputs_key(ckpt: str, fmt: str, max_len: int, group_size: int, kv_cache: str = "f32",
                     greedy: bool = False) -> dict:
    """What a compiled step is made from: the checkpoint's files (name, size, mtime), the options and moec's own
    sources (jit_api's compiler hash): an artifact with another key is rebuilt."""
    from moec.jit_api import _compiler_hash
    files = sorted((f, os.stat(os.path.join(ckpt, f)).st_size, os.stat(os.path.join(ckpt, f)).st_mtime_ns)
                   for f in os.listdir(ckpt) if os.path.isfile(os.path.join(ckpt, f)))
    return {"checkpoint": os.path.abspath(ckpt), "files": [list(x) for x in files], "weights": fmt,
            "max_len": max_len, "group_size": group_size, "verify": False, "compiler": _compiler_hash(),
            **({} if kv_cache == "f32" else {"kv_cache": kv_cache}), **({"greedy": True} if greedy else {})}


def compile_step_in_child(ckpt: str, art_dir: str, fmt: str, max_len: int, group_size: int = 64,
                          kv_cache: str = "f32", greedy: bool = False) -> dict:
    """``decode.compile_step`` of the checkpoint ``ckpt`` (moec weights ``fmt``, cache capacity ``max_len`` of
    element type ``kv_cache``, unverified, exported with batched_mm; ``greedy``: token ids out) in a child process, the artifact written to
    ``art_dir``; reused
    without a child when ``art_dir`` holds one made from the same inputs and options (its stamp,
    moec_decode_step.json).  Returns the stamp: the inputs' key, the child's pid, its peak RSS (MB) and the
    compile's seconds, and ``reused``."""
    import json
    import subprocess
    import sys
    key = _step_inputs_key(ckpt, fmt, max_len, group_size, kv_cache, greedy)
    stamp = os.path.join(art_dir, STAMP)
    if os.path.exists(stamp):
        with open(stamp) as fh:
            old = json.load(fh)
        if old.get("key") == key:
            return dict(old, reused=True)
    cmd = [sys.executable, "-c", "import sys; from moec.decode_bench import _compile_step_child as c; "
           "sys.exit(c(sys.argv[1:]))", ckpt, art_dir, fmt, str(max_len), str(group_size), kv_cache,
           "greedy" if greedy else "logits"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode or not os.path.exists(stamp):
        raise RuntimeError(f"the decode step's compile (--weights {fmt}, max_len {max_len}) failed in its process "
                           f"(exit {r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
    with open(stamp) as fh:
        return dict(json.load(fh), reused=False)


def _compile_step_child(argv) -> int:
    """The child of ``compile_step_in_child``: load, compile (no on-disk jit cache), move the build to art_dir."""
    import json
    import resource
    import shutil
    import torch
    from transformers import AutoModelForCausalLM
    from moec import decode
    ckpt, art_dir, fmt, max_len, group_size = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    kv_cache = argv[5] if len(argv) > 5 else "f32"
    greedy = len(argv) > 6 and argv[6] == "greedy"
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
        model.config._experts_implementation = "batched_mm"  # (exportable; the same math as transformers' loop)
        cm = decode.compile_step(model, max_len, weights=fmt, verify=False, group_size=group_size, cache=False,
                                 kv_cache=kv_cache, greedy=greedy)
    built = cm.stats.outdir
    del cm
    if os.path.exists(art_dir):
        shutil.rmtree(art_dir)
    os.makedirs(os.path.dirname(os.path.abspath(art_dir)), exist_ok=True)
    shutil.move(built, art_dir)
    shutil.rmtree(os.path.dirname(built), ignore_errors=True)  # (the jit root's build folder, now empty)
    info = {"key": _step_inputs_key(ckpt, fmt, max_len, group_size, kv_cache, greedy), "kv_cache": kv_cache, "pid": os.getpid(), "seconds": time.time() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    with open(os.path.join(art_dir, STAMP), "w") as fh:
        json.dump(info, fh, indent=1)
    return 0


def _artifact_step(art_dir: str, threads: int) -> Callable:
    """The step function of a compiled step's artifact folder (as ``decode.moec_step``)."""
    from moec.targets.cpu_backend import CpuArtifact
    art = CpuArtifact(art_dir, threads=threads)

    def step(*xs):
        return art(list(xs))
    step.artifact = art
    return step


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _gen(step, geo, max_len, prompt, steps, chunk: Optional[int] = None):
    from moec import decode
    art = getattr(step, "artifact", None)  # (a compiled step keeps its own cache type; the others f32)
    kv = decode.artifact_kv_cache(art.manifest) if art is not None else "f32"
    g = decode.Generator(step, geo["layers"], geo["kv_heads"], geo["head_dim"], max_len, 1, kv)
    if not chunk:
        r = g.generate(prompt, steps)
        return r.tokens, r.prefill_ms, r.decode_ms
    prompt = np.asarray(prompt, np.int64)
    t0 = time.perf_counter()
    for i in range(0, prompt.shape[1], chunk):  # (the same greedy loop as Generator.generate, the prompt in chunks)
        logits = g(prompt[:, i:i + chunk])
    pre = (time.perf_counter() - t0) * 1e3
    toks, dec = [g.next_tokens(logits)], []
    for _ in range(steps - 1):
        t0 = time.perf_counter()
        logits = g(toks[-1][:, None])
        dec.append((time.perf_counter() - t0) * 1e3)
        toks.append(g.next_tokens(logits))
    return np.stack(toks, 1), pre, dec


if __name__ == "__main__":
    raise SystemExit(main())

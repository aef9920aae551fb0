"""Issue 17's whole-model table, by one command (see benchmarks/README.md, "Whole models"):

    python benchmarks/bench_model.py --llama-src LLAMA_SRC   # the issue's model, every part, 2 threads
    python benchmarks/bench_model.py --small --tokens 1,8 --contexts 16   # a tiny model (smoke run)

1. makes a MixtralForCausalLM from a seeded random init (2 layers, hidden 1024, intermediate 2816, 8 experts,
   top-2, 8 heads, vocab 32000, rotary base 10000; --small: a tiny one) and save_pretrained's it into a work
   folder, with a synthetic Llama-style BPE tokenizer (byte fallback; the ids are what is fed, the tokenizer only
   lets llama.cpp's converter read the checkpoint);
2. exports it with torch.onnx (dynamo) as input_ids [1, S] -> last-position logits (logits_to_keep=1);
3. with llama-cpp-python importable and --llama-src pointing at llama.cpp's sources (convert_hf_to_gguf.py
   and gguf-py/), makes GGUFs from the same checkpoint (``converter_input``: the router renamed so that
   converter maps it): f32 and bf16 by the converter, q8_0 and q4_0 by llama.cpp's own quantiser
   (llama_model_quantize) over the same tensors moec's --weights quantises (every linear layer: attention
   projections, experts, output layer; the token embedding kept f32, the router never quantised);
4. runs the parts (--parts): prefill (`moec bench`: every format, onnxruntime f32, torch eager, llama.cpp, one
   interleaved loop per N), decode with a KV cache (compiler/decode_bench.py), the MatMul
   [T,1024]x[1024,32000] probe (bench_dense.py) and a perf profile of moec's prefill; writes bench.json,
   bench.png and table.md into benchmarks/results/model_<date>/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

ISSUE_MODEL = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                   num_attention_heads=8, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                   max_position_embeddings=4096)
SMALL_MODEL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=512)
# The rotary base: llama.cpp's converter of llama-cpp-python 0.3.16 reads ``rope_theta`` from the config's top level,
# which transformers 5 no longer has (it is inside ``rope_parameters``; AutoConfig drops a top-level copy), so the
# GGUF gets no rope.freq_base and llama.cpp uses its default, 10000.  The model here is made with that base
# (Mixtral's own is 1e6) so that every engine runs the same model; make_ggufs checks it.
ROPE_THETA = 10000.0
# moec --weights mode -> the llama.cpp GGUF of the same format (None: made by the converter)
GGUF_OF = {"f32": "f32", "bf16": "bf16", "int8": "q8_0", "int4": "q4_0", "w8a8": "q8_0", "w4a8": "q4_0",
           "int8_bf16": "q8_0", "int4_bf16": "q4_0"}
# (llama.cpp's q8_0 / q4_0 matmuls on CPUs quantise the activations to q8_0 blocks: int8 / int4 weights with int8
# activations, like moec's w8a8 / w4a8 (--weights int4 --activations int8); moec's int8 and int4 keep f32 activations)
# (int8_bf16 / int4_bf16: int8 / int4 weights with activations rounded to bf16, --activations bf16: bf16 arithmetic)
# moec formats whose GGUF is another format's file: w8a8 -> int8's q8_0, w4a8 -> int4's q4_0 (and the _bf16 ones)
SHARED_GGUF = {"w8a8": "int8", "w4a8": "int4", "int8_bf16": "int8", "int4_bf16": "int4"}


def make_checkpoint(d: str, small: bool, seed: int = 0) -> None:
    """A seeded random MixtralForCausalLM + a synthetic BPE tokenizer, save_pretrained into ``d``."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models
    cfg = MixtralConfig(**(SMALL_MODEL if small else ISSUE_MODEL), bos_token_id=1, eos_token_id=2,
                        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    torch.manual_seed(seed)
    model = MixtralForCausalLM(cfg).eval()
    model.save_pretrained(d)
    V = cfg.vocab_size
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab.update({f"\u2581t{i}": i for i in range(len(vocab), V)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(d)


def export_onnx(ckpt: str, path: str) -> None:
    """input_ids [1, S] -> logits of the last position, torch.onnx's dynamo exporter."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    model.config._experts_implementation = "batched_mm"  # (transformers' eager experts loop cannot be exported)

    class LastLogits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits[:, -1]

    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    torch.onnx.export(LastLogits(model).eval(), (ids,), path, input_names=["input_ids"], output_names=["logits"],
                      dynamo=True, dynamic_shapes={"input_ids": {1: torch.export.Dim("S", max=4096)}},
                      external_data=False)


def converter_input(ckpt: str, dst: str) -> str:
    """The checkpoint ``ckpt`` (the same weights) in the layout llama.cpp's converter of llama-cpp-python 0.3.16
    reads correctly.  Two things a transformers 5 checkpoint spells differently:

    * the router ``model.layers.N.block_sparse_moe.gate.weight``: in that converter's gguf-py tensor map the
      name is listed under FFN_GATE_INP (mixtral) and again, later, under FFN_GATE (smallthinker); the later
      entry wins, so the router was written as ``blk.N.ffn_gate`` (a dense FFN's gate) and llama.cpp refused
      the file ("missing tensor 'blk.0.ffn_gate_inp.weight'").  Here it is stored under the name the same map
      gives Mixtral's original checkpoints, ``layers.N.feed_forward.gate.weight`` (FFN_GATE_INP only).
    The rotary base is not carried over by that converter (see ROPE_THETA): a base other than llama.cpp's
    default 10000 is refused.  Everything else is linked, not copied."""
    import torch
    from safetensors.torch import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(ckpt):
        if f.endswith(".safetensors") or f in ("config.json", "model.safetensors.index.json"):
            continue
        if not os.path.exists(os.path.join(dst, f)):
            os.symlink(os.path.abspath(os.path.join(ckpt, f)), os.path.join(dst, f))
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", ROPE_THETA))
    if float(theta) != ROPE_THETA:
        raise RuntimeError(f"{ckpt}: rope_theta {theta}: this llama.cpp converter would write no rotary base and "
                           f"llama.cpp would use {ROPE_THETA:g} (a different model)")
    if not os.path.lexists(os.path.join(dst, "config.json")):
        os.symlink(os.path.abspath(os.path.join(ckpt, "config.json")), os.path.join(dst, "config.json"))
    shards = sorted(f for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    if len(shards) != 1:
        raise RuntimeError(f"{ckpt}: expected one safetensors file, found {shards}")
    sd = load_file(os.path.join(ckpt, shards[0]))
    fixed = {}
    for k, v in sd.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight", k)
        fixed[f"layers.{m.group(1)}.feed_forward.gate.weight" if m else k] = v
    del sd
    save_file(fixed, os.path.join(dst, shards[0]), metadata={"format": "pt"})
    del fixed, torch
    return dst


def make_ggufs(ckpt: str, llama_src: str, outdir: str, formats) -> dict:
    """GGUF per format: the converter writes f32 / bf16 (from ``converter_input``'s view of the checkpoint);
    q8_0 / q4_0 are llama_model_quantize of the f32 file."""
    import llama_cpp
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_src, "gguf-py") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    f32 = os.path.join(outdir, "model-f32.gguf")
    conv_in = None
    for fmt in ("f32", "bf16"):
        if fmt in formats or fmt == "f32":
            p = os.path.join(outdir, f"model-{fmt}.gguf")
            if not os.path.exists(p):
                conv_in = conv_in or converter_input(ckpt, os.path.join(outdir, "checkpoint_for_converter"))
                r = subprocess.run([sys.executable, os.path.join(llama_src, "convert_hf_to_gguf.py"), conv_in,
                                    "--outtype", fmt, "--outfile", p], env=env, capture_output=True, text=True)
                if r.returncode:
                    raise RuntimeError(f"convert_hf_to_gguf.py --outtype {fmt} failed:\n{r.stderr[-3000:]}")
            out[fmt] = p
    for fmt, ftype, gtype in (("int8", 7, 8), ("int4", 2, 2)):  # LLAMA_FTYPE_MOSTLY_Q8_0 / Q4_0, GGML_TYPE_Q8_0 / Q4_0
        if fmt not in formats and not any(SHARED_GGUF[f] == fmt for f in formats if f in SHARED_GGUF):
            continue
        p = os.path.join(outdir, f"model-{GGUF_OF[fmt]}.gguf")
        if not os.path.exists(p):
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.nthread = 2
            params.token_embedding_type = 0  # GGML_TYPE_F32: the embedding stays in the model's type, as in moec
            params.output_tensor_type = gtype  # the output layer in the format (llama.cpp's default is q6_K/q8_0)
            rc = llama_cpp.llama_model_quantize(f32.encode(), p.encode(), params)
            if rc != 0:
                raise RuntimeError(f"llama_model_quantize -> {rc}")
        out[fmt] = p
    for f, base in SHARED_GGUF.items():
        if f in formats:
            out[f] = out[base]
    return {f: p for f, p in out.items() if f in formats}


# ---- physical limits (issue 17: "decode >= 85% of the copy probe for the bytes read per token; prefill >= 85% of
# the sgemm (or bf16/AMX) probe at N=256"), reported beside the engines' times ------------------------------------
# The arithmetic llama.cpp's CPU matmuls do per GGUF type (ggml's vec_dot_type: f32 rows as f32, bf16 rows with
# activations rounded to bf16, q8_0 / q4_0 rows with activations quantised to q8_0 blocks, int8 dot products).
LLAMA_ARITHMETIC = {"f32": "f32", "bf16": "bf16", "q8_0": "int8", "q4_0": "int8"}
LIMIT_GOAL = 0.85


def text_config(cfg: dict) -> dict:
    """The sizes the FLOP and byte counts need, from a transformers config.json (dict): layers, hidden, heads,
    kv heads, head size, expert FFN size, experts, experts per token, vocab."""
    H = cfg["num_attention_heads"]
    return {"layers": cfg["num_hidden_layers"], "hidden": cfg["hidden_size"], "heads": H,
            "kv_heads": cfg.get("num_key_value_heads") or H,
            "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // H, "ffn": cfg["intermediate_size"],
            "experts": cfg["num_local_experts"], "top_k": cfg["num_experts_per_tok"], "vocab": cfg["vocab_size"]}


def _layer_flops(c: dict, T: int) -> dict:
    """Multiply-add FLOPs of one decoder layer over ``T`` rows (see prefill_flops)."""
    D, hd = c["hidden"], c["head_dim"]
    q_cols, kv_cols = c["heads"] * hd, c["kv_heads"] * hd
    return {"attention projections": 2 * T * D * (2 * q_cols + 2 * kv_cols),
            "attention scores": 2 * 2 * c["heads"] * hd * (T * (T + 1) // 2),
            "router": 2 * T * D * c["experts"],
            "experts": 2 * T * c["top_k"] * 3 * D * c["ffn"]}


def prefill_flops(cfg: dict, tokens: int) -> dict:
    """Multiply-add FLOPs (2 per multiply-add) of one prefill of ``tokens`` tokens of a Mixtral-style decoder with
    last-position logits, per part, from the config (``text_config``'s keys): per layer the attention
    projections (q and o with ``heads`` x ``head_dim`` columns, k and v with ``kv_heads`` x ``head_dim``), the
    attention scores and the weighted sum of values over the causal half (query i sees i + 1 keys: what the math
    needs; an engine computing the whole square does more than is counted), the router (``experts`` logits per
    token), the routed experts (``top_k`` slots per token, each gate, up and down: 3 GEMMs of hidden x ffn); the
    output layer at the last position only.  Norms, rotary, softmax and the SwiGLU product are left out (a
    few MFLOP, not GEMM work).

    Only the last position's logits are wanted, so the last layer is counted as that answer needs it: its k and v
    projections on every row (the last query reads every key), its q projection, the last query's scores and
    weighted sum over the T keys, o_proj, the router and the experts on the last row only.  That is what moec's
    sink-rows pass computes; llama.cpp takes the output rows after the last layer's attention and o_proj (its q,
    o and scores run on every row, a little more than is counted: on the issue's model at N=256 ~1.2 of ~13.5
    GFLOP).  ``total_all_rows`` keeps the earlier count, every layer on every row (what transformers computes with
    logits_to_keep=1, and moec before sink-rows)."""
    c = cfg
    T, L = tokens, c["layers"]
    full, one = _layer_flops(c, T), _layer_flops(c, 1)
    D, hd = c["hidden"], c["head_dim"]
    q_cols, kv_cols = c["heads"] * hd, c["kv_heads"] * hd
    last = {"attention projections": 2 * T * D * 2 * kv_cols + 2 * D * 2 * q_cols,
            "attention scores": 2 * 2 * c["heads"] * hd * T,
            "router": one["router"], "experts": one["experts"]}
    out = {k: full[k] * (L - 1) + last[k] for k in full}
    out["output layer"] = 2 * c["hidden"] * c["vocab"]
    out["total"] = sum(out.values())
    out["total_all_rows"] = sum(v * L for v in full.values()) + out["output layer"]
    return out


def _artifact_module(art_dir: str):
    from moec.ir.io import load_module
    return load_module(os.path.join(art_dir, "model.mlir"))  # (the weights memory-mapped, not read)


def moec_arithmetic(art_dir: str) -> str:
    """module_arithmetic of a compiled artifact folder."""
    return module_arithmetic(_artifact_module(art_dir))


def module_arithmetic(m) -> str:
    """The arithmetic of a moec module's experts (where nearly all of a MoE model's FLOPs are), from its IR:
    int8 activations (aq int8: w8a8 / w4a8) -> "int8"; bf16 activations (aq bf16: int8_bf16 / int4_bf16) or bf16
    weights with no activation type -> "bf16"; else "f32" (f32 weights, and int8 / int4 weights widened to f32)."""
    kinds = set()
    for o in m.main.ops:
        if o.name == "moe.experts":
            aq, wq = o.attrs.get("aq", "none"), o.attrs.get("wq", "none")
            kinds.add("int8" if aq == "int8" else "bf16" if aq == "bf16" or (aq == "none" and wq == "bf16")
                      else "f32")
    if len(kinds) != 1:
        raise RuntimeError(f"expected experts of one arithmetic, found {sorted(kinds) or 'no experts'}")
    return kinds.pop()


def _rows_per_index(v) -> int:
    """Indices a gather reads per call of a decode step (one token: symbolic dims taken as 1)."""
    n = 1
    for d in v.type.shape:
        n *= d if isinstance(d, int) else 1
    return n


def moec_decode_bytes(art_dir: str, context: int, capacity: int) -> dict:
    """module_decode_bytes of a compiled decode step's artifact folder."""
    return module_decode_bytes(_artifact_module(art_dir), context, capacity)


def module_decode_bytes(m, context: int, capacity: int) -> dict:
    """Bytes one decode step (one token) of a moec decode step module (moec.decode.KVStep: input_ids, pos, then
    the cache k_0, v_0, ...) must read, from its IR and weights in their stored types (scales included): every
    constant once; a constant that experts ops read with a leading experts dim: ``k`` / ``E`` of it (the token's
    k experts; k from the op's route); a constant that gathers read along their axis (the embedding, rotary
    tables): the rows the token's indices pick; the cache inputs: ``context`` of their ``capacity`` positions.
    Returns bytes per part and "total"."""
    from moec.decode import input_names
    from moec.ir.opdef import const_value
    f = m.main
    uses = {}
    for o in f.ops:
        for i, v in enumerate(o.operands):
            if v is not None and v.owner is not None and v.owner.name == "moec.constant":
                uses.setdefault(id(v), (v, []))[1].append((o, i))
    parts = {"experts (k of E)": 0, "gathered rows": 0, "other weights": 0}
    for v, us in uses.values():
        nbytes = int(np.asarray(const_value(v, m.weights)).nbytes)
        shape = v.type.shape
        frac, part = 1.0, "other weights"
        if all(o.name == "moe.experts" for o, _ in us):
            E = int(us[0][0].operands[4].type.shape[0])
            k = int(us[0][0].operands[1].owner.attrs["k"])
            if shape and shape[0] == E:
                frac, part = min(1.0, k / E), "experts (k of E)"
        elif all(o.name == "moec.gather" and i == 0 for o, i in us):
            o = us[0][0]
            ax = o.attrs.get("axis", 0) % len(shape)
            frac, part = min(1.0, _rows_per_index(o.operands[1]) / shape[ax]), "gathered rows"
        parts[part] += int(round(nbytes * frac))
    cache = [a for a, n in zip(f.args, f.arg_names) if n not in input_names(0)]  # (all but input_ids, pos)
    parts["kv cache"] = int(sum(int(np.prod(a.type.shape)) * a.type.dtype.itemsize for a in cache) * context
                            // capacity)
    parts["total"] = sum(parts.values())
    return parts


def gguf_decode_bytes(gguf_path: str, cfg: dict, context: int, llama_src: str) -> dict:
    """The same for llama.cpp on a GGUF (read with gguf-py from ``llama_src``): its tensors in their stored types
    (quantisation blocks' scales included); the expert tensors (gguf's FFN_{GATE,UP,DOWN}_EXP): ``top_k`` /
    ``experts``; the token embedding (gguf's TOKEN_EMBD): one row; the KV cache at ``context`` positions in the
    type llama-cpp-python's context gets by default (llama_context_default_params().type_k / type_v)."""
    sys.path.insert(0, os.path.join(llama_src, "gguf-py"))
    try:
        import gguf
    finally:
        sys.path.pop(0)
    import llama_cpp
    T = gguf.MODEL_TENSOR
    exp_re = [re.compile(re.escape(gguf.TENSOR_NAMES[t]).replace(r"\{bid\}", r"\d+") + r"\.weight")
              for t in (T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP)]
    embd = gguf.TENSOR_NAMES[T.TOKEN_EMBD] + ".weight"
    parts = {"experts (k of E)": 0, "gathered rows": 0, "other weights": 0}
    for t in gguf.GGUFReader(gguf_path).tensors:
        if any(r.fullmatch(t.name) for r in exp_re):
            parts["experts (k of E)"] += int(t.n_bytes) * cfg["top_k"] // cfg["experts"]
        elif t.name == embd:
            parts["gathered rows"] += int(t.n_bytes) // cfg["vocab"]
        else:
            parts["other weights"] += int(t.n_bytes)
    p = llama_cpp.llama_context_default_params()
    per_pos = 0
    for ty in (p.type_k, p.type_v):
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ty)]
        per_pos += cfg["layers"] * cfg["kv_heads"] * cfg["head_dim"] * size // block
    parts["kv cache"] = per_pos * context
    parts["total"] = sum(parts.values())
    return parts


def add_decode_bytes(run: dict, fmt: str, gguf, cfg: dict, llama_src) -> None:
    """Each row of a decode run (whole_model_decode's) gets ``bytes_per_token`` for moec (its compiled step) and
    llama.cpp (its GGUF), counted at the context of the run's median timed step: the prompt's C tokens plus half of
    the steps (step i feeds the token at position C + i - 1, which attends to C + i positions)."""
    comp = run.get("moec_compiles") or {}
    for row in run["rows"]:
        C, steps = row["context"], row["steps"]
        ctx, cap = C + steps // 2, C + steps
        b = {}
        info = comp.get(f"moec {fmt} max_len {cap}") or {}
        if info.get("art_dir"):
            b[f"moec {fmt}"] = moec_decode_bytes(info["art_dir"], ctx, cap)
        if gguf and llama_src:
            b[f"llama.cpp {GGUF_OF[fmt]}"] = gguf_decode_bytes(gguf, cfg, ctx, llama_src)
        row["bytes_per_token"] = b
        row["bytes_context"] = ctx


def gguf_tag(path: str) -> str:
    """A GGUF's format tag from its file name (model-<tag>.gguf, as make_ggufs names them)."""
    return os.path.splitext(os.path.basename(path))[0].replace("model-", "")


def _fraction(x, ceiling):
    return None if x is None or not ceiling else x / ceiling


def prefill_limits(run: dict) -> list:
    """Per N of a prefill run: each engine with an arithmetic (moec, llama.cpp) at its model FLOPs / median time
    against the matching GEMM probe timed in the same interleaved loop."""
    out = []
    for row in run["rows"]:
        fl = row.get("model_flops")
        if not fl:
            continue
        cells = {}
        for eng, arith in (run.get("arithmetic") or {}).items():
            pms = (row.get("probe_ms") or {}).get(arith)
            if eng not in row["ms"] or not pms:
                continue
            got = fl["total"] / row["ms"][eng] / 1e6
            probe = run["probes"][arith]["flops"] / pms / 1e6
            cells[eng] = {"arithmetic": arith, "gflops": got, "probe_gflops": probe, "fraction": got / probe}
        out.append({"tokens": row["tokens"], "model_gflop": fl["total"] / 1e9,
                    "model_gflop_all_rows": fl.get("total_all_rows", fl["total"]) / 1e9, "engines": cells})
    return out


def decode_limits(run: dict) -> list:
    """Per context of a decode run: each engine with a bytes count at bytes per token x tokens/s against the copy
    and read probes measured before and after the run (the better of the two: a ceiling)."""
    pr = run.get("probes") or {}
    copy = max(pr["copy_gbps"]) if pr.get("copy_gbps") else None
    read = max(pr["read_gbps"]) if pr.get("read_gbps") else None
    out = []
    for row in run["rows"]:
        cells = {}
        for eng, b in (row.get("bytes_per_token") or {}).items():
            if eng not in row["engines"]:
                continue
            gbps = b["total"] * row["engines"][eng]["tokens_per_s"] / 1e9
            cells[eng] = {"mb_per_token": b["total"] / 1e6, "gbps": gbps, "copy_gbps": copy, "read_gbps": read,
                          "of_copy": _fraction(gbps, copy), "of_read": _fraction(gbps, read)}
        out.append({"context": row["context"], "engines": cells})
    return out


PARTS = ("prefill", "decode", "matmul", "profile")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,8,64,256", help="prefill token counts")
    ap.add_argument("--contexts", default="128,1024", help="decode context lengths")
    ap.add_argument("--steps", type=int, default=32, help="decoded tokens per decode run")
    ap.add_argument("--formats", default="f32,bf16,int8,int4,w8a8,w4a8",
                    help="moec weight modes, each against llama.cpp's GGUF of the format (f32, bf16, int8 and w8a8: "
                         "q8_0, int4 and w4a8 (int4 weights, int8 activations): q4_0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats of the prefill / matmul parts")
    ap.add_argument("--decode-repeats", type=int, default=3)
    ap.add_argument("--decode-formats", default=None, help="moec formats of the decode part (default: --formats)")
    ap.add_argument("--kv-cache", default="f16", choices=("f16", "f32"),
                    help="moec's KV cache type in the decode part (default f16, as moec generate and llama.cpp; "
                         "the table states each engine's)")
    ap.add_argument("--decode-peers", default="onnxruntime,torch",
                    help="peers of the decode part besides llama.cpp: onnxruntime and/or torch (eager, f32 run only); "
                         "'' for none (onnxruntime's session of the batched_mm export holds several GB)")
    ap.add_argument("--ort-max-tokens", type=int, default=64,
                    help="largest prefill N onnxruntime runs (its batched_mm MoE copies expert weights per token)")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="compile the prefill artifacts without verification (no quantisation error reported)")
    ap.add_argument("--group-size", type=int, default=32, help="moec int4 group (32: q4_0's block)")
    ap.add_argument("--parts", default=",".join(PARTS), help="of " + ",".join(PARTS))
    ap.add_argument("--small", action="store_true", help="a tiny model (smoke run)")
    ap.add_argument("--llama-src", default=os.environ.get("LLAMA_CPP_SRC"),
                    help="llama.cpp sources (convert_hf_to_gguf.py, gguf-py/) for the GGUFs; default $LLAMA_CPP_SRC")
    ap.add_argument("--work", default=None, help="work folder for the checkpoint, ONNX and GGUFs (default: a temp dir; "
                                                 "reused when it holds them)")
    ap.add_argument("-o", "--output", default=None,
                    help="results folder (default benchmarks/results/model_<date>[_small])")
    a = ap.parse_args(argv)
    # the engines run interleaved on the same cores: OpenMP workers (torch, llama.cpp) must sleep after a
    # run rather than spin into the next engine's time, as onnxruntime's do (allow_spinning=0 in moec bench)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tokens = [int(t) for t in a.tokens.split(",") if t]
    contexts = [int(t) for t in a.contexts.split(",") if t]
    formats = [f for f in a.formats.split(",") if f]
    parts = [p for p in a.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"--parts {bad[0]}: choose from {', '.join(PARTS)}")
    work = a.work or tempfile.mkdtemp(prefix="moec-bench-model-")
    os.makedirs(work, exist_ok=True)
    out = a.output or os.path.join(HERE, "results", f"model_{datetime.date.today().isoformat()}"
                                   + ("_small" if a.small else ""))
    os.makedirs(out, exist_ok=True)
    ckpt, onnx_path = os.path.join(work, "checkpoint"), os.path.join(work, "model.onnx")
    t0 = time.time()
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        make_checkpoint(ckpt, a.small)
    if "prefill" in parts and not os.path.exists(onnx_path):
        export_onnx(ckpt, onnx_path)
    print(f"checkpoint + ONNX in {work} ({time.time() - t0:.0f} s)", flush=True)
    from moec.bench import copy_probe, gemm_probe, llama_cpp_available, read_probe
    ggufs, why = {}, ""
    if not llama_cpp_available():
        why = "llama-cpp-python is not importable (pip install 'moec[bench]')"
    elif not a.llama_src or not os.path.isfile(os.path.join(a.llama_src, "convert_hf_to_gguf.py")):
        why = "no llama.cpp sources for the converter (--llama-src / $LLAMA_CPP_SRC)"
    else:
        ggufs = make_ggufs(ckpt, a.llama_src, work, formats)
    if why:
        print(f"llama.cpp left out: {why}", flush=True)
    rep = {"model_config": SMALL_MODEL if a.small else ISSUE_MODEL, "threads": a.threads, "formats": formats,
           "group_size": a.group_size, "load_avg_at_start": os.getloadavg(),
           "command": "python benchmarks/bench_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "llama_cpp": {"gguf": ggufs, "left_out": why}}
    old_json = os.path.join(out, "bench.json")
    if os.path.exists(old_json) and set(parts) != set(PARTS):  # (parts not rerun are kept from the folder's last run)
        old = json.load(open(old_json))
        kept = [p for p in PARTS if p not in parts and p in old]
        for p in kept:
            rep[p] = old[p]
        if kept:  # (where the kept parts came from: the run that made them, which may be before the last one)
            before = old.get("kept_from_earlier_run") or {}
            by = {**{p: {"command": old.get("command"), "load_avg": [old.get("load_avg_at_start"),
                                                                     old.get("load_avg_at_end")]} for p in kept},
                  **{p: v for p, v in (before.get("by_part") or {}).items() if p in kept}}
            rep["kept_from_earlier_run"] = {"parts": kept, "by_part": by}
    # (the machine at the start, on the benchmark's threads; each part's limits use probes measured in that part)
    gp = {d: gemm_probe(d, a.threads) for d in ("f32", "bf16", "int8")}
    rep["probes"] = {"sgemm_gflops": gp["f32"].get("gflops"), "bf16_gflops": gp["bf16"].get("gflops"),
                     "int8_gops": gp["int8"].get("gflops"), "copy_gbps": copy_probe(threads=a.threads),
                     "read_gbps": read_probe(threads=a.threads), "threads": a.threads,
                     "how": {d: g.get("how", g.get("error")) for d, g in gp.items()}}

    def save():  # (after each part: a later part failing keeps the earlier ones)
        rep["load_avg_at_end"] = os.getloadavg()
        with open(os.path.join(out, "bench.json"), "w") as fh:
            json.dump(rep, fh, indent=1)
    # One interleaved run per format (moec in the format, llama.cpp's GGUF of the format, onnxruntime f32, torch
    # eager in the f32 / bf16 runs): every ratio is of two engines timed in the same run, and one run holds one
    # moec build (a single run with every build and peer of the 212M model was OOM-killed at 20 GB).
    gguf_of = {f: ggufs[f] for f in formats if f in ggufs}
    if "prefill" in parts:
        runs = {}
        if os.path.exists(old_json):  # (formats not rerun now are kept from the folder's last run)
            runs = {f: r for f, r in (json.load(open(old_json)).get("prefill") or {}).get("runs", {}).items()
                    if f not in formats}
        for f in formats:
            art_dir = os.path.join(work, f"prefill_{f}", "artifact")  # (the compiled artifacts stay in the work folder)
            load0 = os.getloadavg()
            runs[f] = prefill_run(onnx_path, art_dir, f, tokens, a.repeats, a.threads, a.group_size,
                                  ckpt if f in ("f32", "bf16") else None, gguf_of.get(f), a.verify, a.ort_max_tokens)
            runs[f].update(command=rep["command"], load_avg=[load0, os.getloadavg()])  # (this run's own provenance)
            print(f"prefill {f}: " + json.dumps(runs[f]["rows"]), flush=True)
            rep["prefill"] = {"repeats": a.repeats, "runs": runs}
            save()
    if "decode" in parts:
        from moec.decode_bench import whole_model_decode
        dec_formats = [f for f in (a.decode_formats.split(",") if a.decode_formats else formats) if f]
        runs = {}
        if os.path.exists(old_json):  # (formats not rerun now are kept from the folder's last run)
            runs = {f: r for f, r in (json.load(open(old_json)).get("decode") or {}).get("runs", {}).items()
                    if f not in dec_formats}
        tcfg = text_config(json.load(open(os.path.join(ckpt, "config.json"))))
        peers = [x for x in a.decode_peers.split(",") if x]
        if any(x not in ("onnxruntime", "torch") for x in peers):
            ap.error(f"--decode-peers {a.decode_peers}: onnxruntime and/or torch")

        def bw():  # (the copy and read probes on the benchmark's threads, before and after each format's run)
            return copy_probe(threads=a.threads), read_probe(threads=a.threads)
        for i, f in enumerate(dec_formats):
            load0 = os.getloadavg()
            bw0 = bw()
            runs[f] = whole_model_decode(ckpt, contexts, [f], {GGUF_OF[f]: gguf_of[f]} if f in gguf_of else {},
                                         a.threads, a.steps, a.decode_repeats, a.group_size,
                                         work=os.path.join(work, "decode"), log=lambda m: print(m, flush=True),
                                         torch_eager=f == "f32" and "torch" in peers, kv_cache=a.kv_cache,
                                         onnxruntime="onnxruntime" in peers)
            bw1 = bw()
            runs[f]["llama_cpp_key"] = f"llama.cpp {GGUF_OF[f]}" if f in gguf_of else None
            runs[f]["probes"] = {"copy_gbps": [bw0[0], bw1[0]], "read_gbps": [bw0[1], bw1[1]], "threads": a.threads,
                                 "when": "before and after the run"}
            add_decode_bytes(runs[f], f, gguf_of.get(f), tcfg, a.llama_src)
            runs[f].update(command=rep["command"], load_avg=[load0, os.getloadavg()])
            rep["decode"] = {"repeats": a.decode_repeats, "steps": a.steps, "runs": runs}
            save()
    if "matmul" in parts:
        cfg = rep["model_config"]
        js = os.path.join(out, "matmul.json")
        cmd = [sys.executable, os.path.join(HERE, "bench_dense.py"), "--tokens", ",".join(map(str, tokens)),
               "--k", str(cfg["hidden_size"]), "--n", str(cfg["vocab_size"]), "--threads", str(a.threads),
               "--repeats", str(max(a.repeats, 7)), "--weights", ",".join(formats), "--group", str(a.group_size),
               "--json", js]
        subprocess.run(cmd, check=True)
        rep["matmul"] = json.load(open(js))
        rep["matmul"]["command"] = " ".join(cmd[1:])
    if "profile" in parts:
        prof = {}
        for f in formats:
            art = os.path.join(work, f"prefill_{f}", "artifact")
            if not os.path.isdir(art):
                continue
            for T in (min(tokens), max(tokens)):
                prof[f"moec {f} N={T}"] = profile_moec(art, T, rep["model_config"]["vocab_size"], a.threads,
                                                       3.0 if a.small else 10.0, work)
        for f, r in ((rep.get("decode") or {}).get("runs") or {}).items():  # (the decode steps last timed)
            if f not in formats:
                continue
            for row in r["rows"]:
                cap = row["context"] + row["steps"]
                info = (r.get("moec_compiles") or {}).get(f"moec {f} max_len {cap}") or {}
                if info.get("art_dir") and os.path.isdir(info["art_dir"]):
                    prof[f"moec {f} decode context {row['context']}"] = profile_moec(
                        info["art_dir"], row["context"], rep["model_config"]["vocab_size"], a.threads,
                        3.0 if a.small else 10.0, work, capacity=cap)
        rep["profile"] = prof
    save()
    table = summary_table(rep)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(table + "\n")
    plot(rep, os.path.join(out, "bench.png"))
    print(table)
    print(f"wrote {out}/bench.json, bench.png, table.md")
    return 0


BUILD_STAMP = ".build.json"  # (beside the artifact folder, ARTIFACT.build.json: moec compile --force keeps a folder
#                               holding files it did not write)


def build_key(onnx_path: str, fmt: str, threads: int, group_size: int, verify: bool, sizes: str) -> dict:
    """What a prefill artifact is made from: the ONNX file (path, size, mtime), the options and moec's own sources
    (jit_api's compiler hash, the one the decode steps use: the C runtime, codegen, passes, front end)."""
    from moec.jit_api import _compiler_hash
    st = os.stat(onnx_path)
    return {"onnx": [os.path.abspath(onnx_path), st.st_size, st.st_mtime_ns], "weights": fmt, "group_size": group_size,
            "threads": threads, "verify": verify, "sizes": sizes, "compiler": _compiler_hash()}


def compile_artifact(onnx_path: str, art_dir: str, fmt: str, threads: int, group_size: int, verify: bool,
                     sizes: str) -> dict:
    """`moec compile` of the whole model in its own process (its peak memory is returned to the system before the
    engines are loaded); the artifact's report.json, with ``bench_build``: the stamp (art_dir + BUILD_STAMP) and
    whether it was reused.  An artifact is reused only when its stamp's key equals build_key's now: any change
    to moec's sources (a runtime kernel included), the ONNX file or the options recompiles it."""
    key = build_key(onnx_path, fmt, threads, group_size, verify, sizes)
    stamp = os.path.normpath(art_dir) + BUILD_STAMP
    old = json.load(open(stamp)) if os.path.exists(stamp) and os.path.exists(os.path.join(art_dir, "report.json")) \
        else None
    if old is None or old.get("key") != key:
        if os.path.islink(art_dir):  # (a link to another folder's artifact: replaced by a build of its own)
            os.unlink(art_dir)
        cmd = [sys.executable, "-m", "moec.cli", "compile", onnx_path, "-o", art_dir, "--force", "--weights", fmt,
               "--group-size", str(group_size), "--threads", str(threads), "--sizes", sizes]
        t0 = time.time()
        r = subprocess.run(cmd + ([] if verify else ["--no-verify"]), capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"moec compile --weights {fmt} failed: {(r.stderr or r.stdout)[-2000:]}")
        old = {"key": key, "seconds": round(time.time() - t0, 1),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(stamp, "w") as fh:
            json.dump(old, fh, indent=1)
        reused = False
    else:
        reused = True
    report = json.load(open(os.path.join(art_dir, "report.json")))
    report["bench_build"] = dict(old, reused=reused)
    return report


def prefill_run(onnx_path: str, art_dir: str, fmt: str, tokens, repeats: int, threads: int, group_size: int,
                hf_model, gguf, verify: bool, ort_max_tokens: int = 64) -> dict:
    """One interleaved prefill run: moec's artifact in ``fmt``, onnxruntime f32 on the exported graph, torch eager
    on ``hf_model`` (when given) and llama.cpp on ``gguf`` (when given); per N, ids [1, N] drawn from the vocab,
    every engine's last-position logits; median ms over ``repeats`` interleaved rounds after a warm-up.
    onnxruntime runs up to ``ort_max_tokens``: the dynamo export's MoE is transformers' batched_mm, which copies
    the chosen experts' weights per token (2 x 34.6 MB per token and layer at the issue's size: 17.7 GB at
    N = 256, and the process was OOM-killed on a 24 GB host)."""
    import contextlib
    import onnxruntime as ort
    from moec.bench import GemmProbe, whole_model_peers
    from moec.targets.cpu_backend import CpuArtifact
    report = compile_artifact(onnx_path, art_dir, fmt, threads, group_size, verify, f"{min(tokens)},1")
    art = CpuArtifact(art_dir, threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    cfg = json.load(open(os.path.join(os.path.dirname(onnx_path), "checkpoint", "config.json")))
    vocab = cfg["vocab_size"]
    feeder = type("Feeder", (), {"vocab": vocab})()
    peers = whole_model_peers(feeder, hf_model, [gguf] if gguf else [], threads, max(tokens), [fmt])
    if hf_model and fmt != "bf16":
        peers.pop("torch eager bf16", None)
    gg = f"llama.cpp {os.path.splitext(os.path.basename(gguf))[0]}" if gguf else None
    # the physical limit of each engine with a known arithmetic: its GEMM probe, timed in the same interleaved loop
    arith = {"moec": moec_arithmetic(art_dir)}
    if gg and gguf_tag(gguf) in LLAMA_ARITHMETIC:
        arith[gg] = LLAMA_ARITHMETIC[gguf_tag(gguf)]
    probes = {d: GemmProbe(d, threads) for d in dict.fromkeys(arith.values())}
    tcfg = text_config(cfg)
    rows = []
    for T in tokens:
        ids = np.random.default_rng(T).integers(0, vocab, (1, T)).astype(np.int64)
        runners = {"moec": lambda: art([ids])}
        if T <= ort_max_tokens:
            runners["onnxruntime"] = lambda: sess.run(None, {"input_ids": ids})
        for name, make in peers.items():
            runners[name] = make(ids)
        ref = runners.get("onnxruntime", runners.get("torch eager f32", runners["moec"]))
        want = np.asarray(ref()[0] if isinstance(ref(), list) else ref().float().numpy(), np.float32).reshape(-1)
        err = {}
        for k, fn in runners.items():  # (warm-up, and each engine's logits against onnxruntime's)
            got = fn()
            got = got[0] if isinstance(got, list) else got
            got = got.float().numpy() if hasattr(got, "float") and hasattr(got, "numpy") else got
            got = np.asarray(got, np.float32).reshape(-1)
            err[k] = float(np.abs(got - want).max() / max(1e-30, float(np.abs(want).max()))) \
                if got.shape == want.shape else None
        times = {k: [] for k in runners}
        ptimes = {d: [] for d in probes}
        with contextlib.ExitStack() as stack:  # (each probe on the benchmark's thread count while the loop runs)
            for p in probes.values():
                stack.enter_context(p)
                p()
            for _ in range(repeats):
                for k, fn in runners.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            # (the probes after the engines, not between them: OpenBLAS's and OpenMP's worker threads spin for a
            # while after a call, and a probe timed just before moec's next call took its cores -- moec f32
            # prefill at N=64 measured 62 ms that way against 41-48 ms alone, the same artifact)
            time.sleep(0.3)
            for _ in range(repeats):
                for d, p in probes.items():
                    t0 = time.perf_counter()
                    p()
                    ptimes[d].append(time.perf_counter() - t0)
        rows.append({"tokens": T, "ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                     "max_err_rel_to_max": err, "error_reference": "onnxruntime" if "onnxruntime" in runners else
                     ("torch eager f32" if "torch eager f32" in runners else "moec"),
                     "probe_ms": {d: 1e3 * min(v) for d, v in ptimes.items()},  # (a ceiling: its best call)
                     "model_flops": prefill_flops(tcfg, T)})
    return {"format": fmt, "rows": rows, "llama_cpp_key": gg, "repeats": repeats, "arithmetic": arith,
            "probes": {d: {"how": p.how, "flops": p.flops} for d, p in probes.items()},
            "peers": {k: v.describe for k, v in peers.items()},
            "quantization_error": report.get("quantization_error"), "verified": report.get("verified"),
            "weights": report.get("weights"), "build": report.get("bench_build")}


_PROFILE_LOOP = """
import os, signal, subprocess, sys, time, numpy as np
from moec.targets.cpu_backend import CpuArtifact
kept, unlink = [], os.unlink
os.unlink = kept.append  # (the loader unlinks its private copy of model.so: kept until perf report has read it)
try:
    art = CpuArtifact(sys.argv[1], threads=int(sys.argv[2]))
finally:
    os.unlink = unlink
x = np.random.default_rng(0).integers(0, int(sys.argv[4]), (1, int(sys.argv[3]))).astype(np.int64)
call = lambda: art([x])
if len(sys.argv) > 7:  # a decode step (moec.decode.KVStep): the prompt of C tokens once, then one token per call
    from moec import decode
    names, C, cap = art.input_names, int(sys.argv[3]), int(sys.argv[7])
    L = sum(1 for n in names if n not in decode.input_names(0)) // 2
    from moec.ir.parser import parse_type
    k0 = parse_type(art.manifest["inputs"][names.index("k_0")]["type"]).shape  # [B, kv heads, head size, cap]
    g = decode.Generator(lambda *xs: art(list(xs)), L, k0[1], k0[2], cap)
    tok = g(x)[:, -1].argmax(-1)[:, None]

    def call():
        if g.pos >= cap - 1:  # (back to the context: the prompt's cache positions are kept)
            g.pos = C
        g(tok)
call()
perf = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(os.getpid()), "-o", sys.argv[6]],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
t0, n = time.time(), 0
while time.time() - t0 < float(sys.argv[5]):
    call()
    n += 1
perf.send_signal(signal.SIGINT)
perf.wait()
print(" ".join(kept), n, time.time() - t0)
"""


def profile_moec(art_dir: str, tokens: int, vocab: int, threads: int, seconds: float, work: str,
                 capacity: int = 0) -> dict:
    """Where moec's prefill time goes: ``perf record`` (sampling, 999 Hz, every thread) of the compiled artifact
    called in a loop on N ids, attached after the first call (imports and loading left out); the share of
    samples per function of the C runtime / kernels (the ops' code), the rest by library.  With ``capacity``,
    ``art_dir`` is a decode step (cache of that capacity): a prompt of ``tokens`` ids, then one-token steps
    from the context up to the capacity, again and again.  Needs Linux perf; returns {"error": ...} without it."""
    if not shutil.which("perf"):
        return {"error": "perf is not installed"}
    data = os.path.join(work, f"perf_{os.path.basename(os.path.normpath(art_dir))}_{tokens}.data")
    rec = subprocess.run([sys.executable, "-c", _PROFILE_LOOP, art_dir, str(threads), str(tokens), str(vocab),
                          str(seconds), data] + ([str(capacity)] if capacity else []), capture_output=True, text=True)
    if rec.returncode or not os.path.exists(data):
        return {"error": f"perf record failed: {(rec.stderr.strip().splitlines() or ['?'])[-1]}"}
    words = rec.stdout.split()
    calls, secs, copies = words[-2], words[-1], words[:-2]
    rep = subprocess.run(["perf", "report", "-i", data, "--sort", "dso,symbol", "--stdio", "--percent-limit", "0.5"],
                         capture_output=True, text=True)
    for c in copies:
        if os.path.basename(c).startswith("moec-") and c.endswith(".so") and os.path.exists(c):
            os.unlink(c)
    os.unlink(data)
    rows = []
    for ln in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", ln)
        if m:
            rows.append({"percent": float(m.group(1)), "dso": m.group(2), "symbol": m.group(3)})
    model_so = [r for r in rows if r["dso"].startswith("moec-")]  # (the loader's copy of model.so)
    return {"tokens": tokens, "calls": int(calls), "ms_per_call": 1e3 * float(secs) / max(1, int(calls)),
            "top": rows[:25], "in_model_so_percent": sum(r["percent"] for r in model_so)}


def _ratio_cells(vals):
    return " | ".join("-" if v is None else f"{v:.2f}x" for v in vals)


def _run_provenance(runs: dict) -> list:
    """One line per format run that recorded its command and load (runs kept from other invocations differ)."""
    out = []
    for f, r in runs.items():
        if r.get("load_avg"):
            a, b = r["load_avg"]
            out.append(f"- {f}: load average {a[0]:.1f} -> {b[0]:.1f}; `{r['command']}`")
    return out


def _probe_words(pr: dict) -> str:
    w = [f"sgemm {pr['sgemm_gflops']:.1f} GFLOP/s"] if pr.get("sgemm_gflops") else []
    w += [f"bf16 GEMM {pr['bf16_gflops']:.1f} GFLOP/s"] if pr.get("bf16_gflops") else []
    w += [f"int8 GEMM {pr['int8_gops']:.1f} GOP/s"] if pr.get("int8_gops") else []
    w += [f"copy {pr['copy_gbps']:.1f} GB/s"] if pr.get("copy_gbps") else []
    w += [f"read {pr['read_gbps']:.1f} GB/s"] if pr.get("read_gbps") else []
    return ", ".join(w)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _bold_if(ok: bool, text: str) -> str:
    return f"**{text}**" if ok else text


def _prefill_limits_table(runs: dict) -> list:
    """Physical limits of the prefill part at its largest N (the issue's N=256): per run, moec and llama.cpp."""
    lines = []
    for f, r in runs.items():
        lim = prefill_limits(r)
        if not lim:
            continue
        last = lim[-1]
        if not lines:
            lines += ["", f"Physical limit, prefill at N={last['tokens']} (goal >= {LIMIT_GOAL:.0%} of the GEMM "
                          "probe of "
                          "the engine's arithmetic, the probe's best call, timed in the same run after the engines' "
                          "interleaved loop (engines: medians); model FLOPs from the "
                          "config: attention projections, causal scores, router, k experts x 3 GEMMs, last-position "
                          "output layer; the last layer as a last-position forward needs it: its k / v projections on "
                          "every row, its q, o, the last query's scores, router and experts on the last row; beside it "
                          "the count of every layer on every row):", "",
                      "| run | engine | arithmetic | model GFLOP | (all rows) | achieved GFLOP/s | probe GFLOP/s | "
                      "fraction |",
                      "|---|---|---|---|---|---|---|---|"]
        for e, c in last["engines"].items():
            lines.append(f"| {f} | {e} | {c['arithmetic']} | {last['model_gflop']:.4g} | "
                         f"{last.get('model_gflop_all_rows', last['model_gflop']):.4g} | {c['gflops']:.1f} | "
                         f"{c['probe_gflops']:.1f} | {_bold_if(c['fraction'] >= LIMIT_GOAL, _pct(c['fraction']))} |")
    if lines:
        probes = {d: p["how"] for r in runs.values() for d, p in (r.get("probes") or {}).items()}
        lines += [""] + [f"- probe {d}: {how}" for d, how in probes.items()]
    return lines


def _decode_limits_table(runs: dict) -> list:
    """Physical limits of the decode part: bytes read per token x tokens/s against the copy and read probes."""
    lines = []
    for f, r in runs.items():
        for lim in decode_limits(r):
            for e, c in lim["engines"].items():
                if not lines:
                    lines += ["", f"Physical limit, decode (goal >= {LIMIT_GOAL:.0%} of the copy probe; bytes one "
                                  "token "
                                  "must read, in the stored types with scales: the k experts of E, the other weights, "
                                  "the embedding row, the KV cache at the median timed step's context; probes on the "
                                  "benchmark's threads before and after each run, the better):", "",
                              "| run | engine | context | MB per token | achieved GB/s | copy probe GB/s | of copy | "
                              "read probe GB/s | of read |", "|---|---|---|---|---|---|---|---|---|"]
                ok = c["of_copy"] is not None and c["of_copy"] >= LIMIT_GOAL
                lines.append(f"| {f} | {e} | {lim['context']} | {c['mb_per_token']:.4g} | {c['gbps']:.1f} | "
                             f"{c['copy_gbps'] or float('nan'):.1f} | {_bold_if(ok, _pct(c['of_copy']))} | "
                             f"{c['read_gbps'] or float('nan'):.1f} | {_pct(c['of_read'])} |")
    return lines


def summary_table(rep: dict) -> str:
    """The issue's tables: prefill ms per engine and N with moec's ratios to llama.cpp in the same format and to
    onnxruntime f32; decode tokens/s per engine and context with moec's ratios; the MatMul probe; the
    physical limits (sgemm / copy probes) beside."""
    cfg = rep["model_config"]
    pr = rep["probes"]
    out = [f"Model: MixtralForCausalLM {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, intermediate "
           f"{cfg['intermediate_size']}, {cfg['num_local_experts']} experts top-{cfg['num_experts_per_tok']}, vocab "
           f"{cfg['vocab_size']}; {rep['threads']} threads; moec int4 group {rep['group_size']}; probes at the start "
           f"({pr.get('threads', '?')} threads): {_probe_words(pr)}; load average "
           f"{rep['load_avg_at_start'][0]:.1f} at start, {rep.get('load_avg_at_end', [float('nan')])[0]:.1f} at end.",
           f"Command: `{rep['command']}`"]
    if rep.get("kept_from_earlier_run"):
        k = rep["kept_from_earlier_run"]
        for p, v in (k.get("by_part") or {p: k for p in k["parts"]}).items():
            la = [x[0] if x else float("nan") for x in (v.get("load_avg") or [None, None])]
            out.append(f"Part {p} from an earlier run: `{v['command']}` (load average {la[0]:.1f} at start, "
                       f"{la[1]:.1f} at end).")
    if rep["llama_cpp"]["left_out"]:
        out.append(f"llama.cpp left out: {rep['llama_cpp']['left_out']}")
    pre = rep.get("prefill")
    if pre:
        runs = pre["runs"]
        Ns = [r["tokens"] for r in next(iter(runs.values()))["rows"]]
        out += ["", f"### Prefill, last-position logits, ms (median of {pre['repeats']} interleaved runs; one run per "
                    "moec format, its peers timed in the same run)", "",
                "| run | engine | " + " | ".join(f"N={n}" for n in Ns) + " |", "|---|---|" + "---|" * len(Ns)]
        for f, r in runs.items():
            for e in dict.fromkeys(e for row in r["rows"] for e in row["ms"]):
                out.append(f"| {f} | {e} | " + " | ".join(f"{row['ms'][e]:.1f}" if e in row["ms"] else "-"
                                                          for row in r["rows"]) + " |")
        out += ["", "| moec format | vs (goal) | " + " | ".join(f"N={n}" for n in Ns) + " |", "|---|---|" + "---|" * len(Ns)]
        for f, r in runs.items():
            for peer, goal in ([(r["llama_cpp_key"], "<= 1.0")] if r.get("llama_cpp_key") else []) \
                    + [("onnxruntime", "<= 0.8")]:
                out.append(f"| {f} | {peer} ({goal}) | " + _ratio_cells(
                    [row["ms"]["moec"] / row["ms"][peer] if peer in row["ms"] else None for row in r["rows"]]) + " |")
        out += [""] + _run_provenance(runs)
        out += _prefill_limits_table(runs)
        qe = {f: (r.get("quantization_error") or {}) for f, r in runs.items() if f != "f32"}
        if any(qe.values()):
            out.append("")
            out.append("moec's quantisation error vs the f32 model (compile report): " + "; ".join(
                f"{f}: " + ", ".join(f"{k} {v:.3g}" for k, v in e.items() if isinstance(v, (int, float)))
                for f, e in qe.items() if e))
    dec = rep.get("decode")
    if dec:
        runs = dec["runs"]
        ctxs = [r["context"] for r in next(iter(runs.values()))["rows"]]
        out += ["", f"### Decode with a KV cache, tokens/s ({dec['steps']} greedy tokens after a prompt of the context "
                    f"length; median of {dec['repeats']} interleaved runs; one run per moec format)", "",
                "| run | engine | KV cache | " + " | ".join(f"context {c}" for c in ctxs) + " | tokens = reference's |",
                "|---|---|---|" + "---|" * len(ctxs) + "---|"]
        for f, r in runs.items():
            for e in r["rows"][0]["engines"]:
                same = [row["engines"][e]["tokens_equal_reference"] for row in r["rows"]]
                kv = r["rows"][0]["engines"][e].get("kv_cache") or "? (not recorded)"
                out.append(f"| {f} | {e} | {kv} | "
                           + " | ".join(f"{row['engines'][e]['tokens_per_s']:.1f}" for row in r["rows"])
                           + " | " + ", ".join("-" if x is None else "yes" if x else "no" for x in same)
                           + f" ({r['tokens_reference'] or 'no reference engine in this run'}) |")
        out += ["", "| moec format | tokens/s ratio vs (goal >= 1.0) | " + " | ".join(f"context {c}" for c in ctxs)
                + " |", "|---|---|" + "---|" * len(ctxs)]
        for f, r in runs.items():
            for peer in ([r["llama_cpp_key"]] if r.get("llama_cpp_key") else []) + ["onnxruntime f32"]:
                if peer not in r["rows"][0]["engines"]:
                    continue  # (a peer left out of the run: --decode-peers)
                out.append(f"| {f} | {peer} | " + _ratio_cells(
                    [row["engines"][f"moec {f}"]["tokens_per_s"] / row["engines"][peer]["tokens_per_s"]
                     for row in r["rows"]]) + " |")
        out += [""] + _run_provenance(runs)
        out += _decode_limits_table(runs)
    mm = rep.get("matmul")
    if mm:
        Ts = sorted({r["T"] for r in mm["rows"]})
        out += ["", f"### MatMul [T,{mm['k']}] x [{mm['k']},{mm['n']}], moec / onnxruntime f32 (minimum of interleaved "
                    "calls; goal <= 1.0)", "",
                "| moec weights | " + " | ".join(f"T={t}" for t in Ts) + " |", "|---|" + "---|" * len(Ts)]
        for w in dict.fromkeys(r["weights"] for r in mm["rows"]):
            by = {r["T"]: r for r in mm["rows"] if r["weights"] == w}
            out.append(f"| {w} | " + " | ".join(f"{by[t]['vs_ort_f32']:.2f}x ({by[t]['moec_ms_min']:.2f} / "
                                                f"{by[t]['ort_f32_ms_min']:.2f} ms)" for t in Ts) + " |")
    prof = rep.get("profile")
    if prof:
        out += ["", "### Where moec's prefill time goes, and its decode steps' (perf samples per function, all "
                    "threads; decode: one-token steps from the context on)", ""]
        for k, v in prof.items():
            if "error" in v:
                out.append(f"- {k}: {v['error']}")
                continue
            top = ", ".join(f"{r['symbol']} {r['percent']:.0f}%" for r in v["top"][:6])
            out.append(f"- {k} ({v['ms_per_call']:.1f} ms per call while sampled; {v['in_model_so_percent']:.0f}% "
                       f"in model.so): {top}")
    return "\n".join(out)


def plot(rep: dict, path: str) -> None:
    """Prefill ms vs N per engine (log-log) and decode tokens/s per engine and context."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    pre, dec = rep.get("prefill"), rep.get("decode")
    if pre:
        ax = axes[0]
        for f, r in pre["runs"].items():
            N = [row["tokens"] for row in r["rows"]]
            for e in dict.fromkeys(e for row in r["rows"] for e in row["ms"]):
                if e == "moec" or e.startswith("llama.cpp") or (f == "f32" and not e.startswith("moec")):
                    ax.plot(N, [row["ms"].get(e, float("nan")) for row in r["rows"]], marker="o", ls="-" if e == "moec" else "--",
                            label=f"moec {f}" if e == "moec" else e)
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("prompt tokens N"); ax.set_ylabel("prefill ms (lower is better)")
        ax.set_title("prefill, last-position logits"); ax.legend(fontsize=7)
    if dec:
        ax = axes[1]
        vals = {}
        for f, r in dec["runs"].items():
            for row in r["rows"]:
                for e, v in row["engines"].items():
                    if e.startswith("moec") or e.startswith("llama.cpp") or f == next(iter(dec["runs"])):
                        vals.setdefault(e, {})[row["context"]] = v["tokens_per_s"]
        names = list(vals)
        ctxs = sorted({c for v in vals.values() for c in v})
        w = 0.8 / len(ctxs)
        for i, c in enumerate(ctxs):
            ax.barh([k + i * w for k in range(len(names))], [vals[n].get(c, 0) for n in names], height=w,
                    label=f"context {c}")
        ax.set_yticks([k + w / 2 for k in range(len(names))]); ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("decode tokens/s (higher is better)"); ax.set_title("decode with a KV cache"); ax.legend(fontsize=7)
    fig.suptitle(f"whole-model bench, {rep['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())

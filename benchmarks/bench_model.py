"""Issue 17's whole-model benchmark, by one command:

    python benchmarks/bench_model.py                       # the issue's model, N = 1,8,64,256, 2 threads
    python benchmarks/bench_model.py --small --tokens 1,8  # a tiny model (smoke run)

1. makes a MixtralForCausalLM from a seeded random init (2 layers, hidden 1024, intermediate 2816, 8 experts,
   top-2, 8 heads, vocab 32000; --small: a tiny one) and save_pretrained's it into a work folder, with a
   synthetic Llama-style BPE tokenizer (byte fallback; the ids are what is fed, the tokenizer only lets
   llama.cpp's converter read the checkpoint);
2. exports it with torch.onnx (dynamo) as input_ids [1, S] -> last-position logits (logits_to_keep=1);
3. with llama-cpp-python importable and --llama-src pointing at llama.cpp's sources (convert_hf_to_gguf.py
   and gguf-py/), makes GGUFs from the same checkpoint: f32 and bf16 by the converter, q8_0 and q4_0 by
   llama.cpp's own quantiser (llama_model_quantize) over the same tensors moec's --weights quantises (every
   linear layer: attention projections, experts, output layer; the token embedding kept f32, the router
   ffn_gate_inp never quantised by llama.cpp);
4. runs `moec bench` (compiler/bench.py) once: moec in every format, onnxruntime f32, torch eager f32/bf16 on
   the checkpoint, llama.cpp on each GGUF, all in one interleaved loop per N; writes bench.json, bench.png and
   the table (table.md) into benchmarks/results/model_<date>/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

ISSUE_MODEL = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                   num_attention_heads=8, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                   max_position_embeddings=4096)
SMALL_MODEL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=512)
# moec --weights mode -> the llama.cpp GGUF of the same format (None: made by the converter)
GGUF_OF = {"f32": "f32", "bf16": "bf16", "int8": "q8_0", "int4": "q4_0"}


def make_checkpoint(d: str, small: bool, seed: int = 0) -> None:
    """A seeded random MixtralForCausalLM + a synthetic BPE tokenizer, save_pretrained into ``d``."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models
    cfg = MixtralConfig(**(SMALL_MODEL if small else ISSUE_MODEL), bos_token_id=1, eos_token_id=2,
                        tie_word_embeddings=False)
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


def make_ggufs(ckpt: str, llama_src: str, outdir: str, formats) -> dict:
    """GGUF per format: the converter writes f32 / bf16; q8_0 / q4_0 are llama_model_quantize of the f32 file."""
    import llama_cpp
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_src, "gguf-py") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    f32 = os.path.join(outdir, "model-f32.gguf")
    for fmt in ("f32", "bf16"):
        if fmt in formats or fmt == "f32":
            p = os.path.join(outdir, f"model-{fmt}.gguf")
            if not os.path.exists(p):
                subprocess.run([sys.executable, os.path.join(llama_src, "convert_hf_to_gguf.py"), ckpt, "--outtype",
                                fmt, "--outfile", p], check=True, env=env, capture_output=True)
            out[fmt] = p
    for fmt, ftype, gtype in (("int8", 7, 8), ("int4", 2, 2)):  # LLAMA_FTYPE_MOSTLY_Q8_0 / Q4_0, GGML_TYPE_Q8_0 / Q4_0
        if fmt not in formats:
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
    if "f32" not in formats:
        out.pop("f32")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,8,64,256")
    ap.add_argument("--formats", default="f32,bf16,int8,int4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--small", action="store_true", help="a tiny model (smoke run)")
    ap.add_argument("--llama-src", default=os.environ.get("LLAMA_CPP_SRC"),
                    help="llama.cpp sources (convert_hf_to_gguf.py, gguf-py/) for the GGUFs; default $LLAMA_CPP_SRC")
    ap.add_argument("--work", default=None, help="work folder for the checkpoint, ONNX and GGUFs (default: a temp dir)")
    ap.add_argument("-o", "--output", default=None,
                    help="results folder (default benchmarks/results/model_<date>[_small])")
    a = ap.parse_args(argv)
    # the engines run interleaved on the same cores: OpenMP workers (torch, llama.cpp) must sleep after a
    # run rather than spin into the next engine's time, as onnxruntime's do (allow_spinning=0 in moec bench)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tokens = [int(t) for t in a.tokens.split(",")]
    formats = [f for f in a.formats.split(",") if f]
    work = a.work or tempfile.mkdtemp(prefix="moec-bench-model-")
    os.makedirs(work, exist_ok=True)
    out = a.output or os.path.join(HERE, "results", f"model_{datetime.date.today().isoformat()}"
                                   + ("_small" if a.small else ""))
    ckpt, onnx_path = os.path.join(work, "checkpoint"), os.path.join(work, "model.onnx")
    t0 = time.time()
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        make_checkpoint(ckpt, a.small)
    if not os.path.exists(onnx_path):
        export_onnx(ckpt, onnx_path)
    print(f"checkpoint + ONNX in {work} ({time.time() - t0:.0f} s)", flush=True)
    from moec.bench import format_table, llama_cpp_available, run_bench
    ggufs, why = {}, ""
    if not llama_cpp_available():
        why = "llama-cpp-python is not importable (pip install 'moec[bench]')"
    elif not a.llama_src or not os.path.isfile(os.path.join(a.llama_src, "convert_hf_to_gguf.py")):
        why = "no llama.cpp sources for the converter (--llama-src / $LLAMA_CPP_SRC)"
    else:
        ggufs = make_ggufs(ckpt, a.llama_src, work, formats)
    if why:
        print(f"llama.cpp left out: {why}", flush=True)
    rep = run_bench(onnx_path, out, tokens, formats, a.repeats, a.threads, True, a.group_size, hf_model=ckpt,
                    gguf=list(ggufs.values()))
    rep["model_config"] = SMALL_MODEL if a.small else ISSUE_MODEL
    rep["llama_cpp"] = {"gguf": ggufs, "left_out": why}
    rep["matching"] = {f: {"moec": f"moec {f}" if len(formats) > 1 else "moec",
                           "llama.cpp": f"llama.cpp model-{GGUF_OF[f]}" if f in ggufs else None}
                       for f in formats}
    with open(os.path.join(out, "bench.json"), "w") as fh:
        json.dump(rep, fh, indent=1)
    table = summary_table(rep)
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(table + "\n\n```\n" + format_table(rep) + "\n```\n")
    print(table)
    print(f"wrote {out}/bench.json, bench.png, table.md")
    return 0


def summary_table(rep: dict) -> str:
    """The issue's table: ms per engine and N, and moec's ratios to llama.cpp in the same format and to
    onnxruntime f32 (one interleaved run)."""
    rows = rep["rows"]
    lines = ["| engine | " + " | ".join(f"N={r['tokens']}" for r in rows) + " (ms) |",
             "|---|" + "---|" * len(rows)]
    for e in rows[0]["ms"]:
        lines.append(f"| {e} | " + " | ".join(f"{r['ms'][e]:.1f}" for r in rows) + " |")
    lines += ["", "| moec format | vs | " + " | ".join(f"N={r['tokens']}" for r in rows) + " |",
              "|---|---|" + "---|" * len(rows)]
    for f, m in rep["matching"].items():
        for peer in ([m["llama.cpp"]] if m["llama.cpp"] else []) + ["onnxruntime"]:
            lines.append(f"| {f} | {peer} | " + " | ".join(f"{r['ms'][m['moec']] / r['ms'][peer]:.2f}x"
                                                           for r in rows) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

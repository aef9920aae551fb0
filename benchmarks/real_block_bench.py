"""Issue 16 item 7: `moec bench` on a real transformers Mixtral block export against moec's own zoo model of
the same shape, onnxruntime's fused com.microsoft.MoE op built from the same weights, and onnxruntime on the
export itself.

    python benchmarks/real_block_bench.py -o DIR [--tokens 1,256] [--repeats 9] [--small]

Builds transformers' MixtralSparseMoeBlock (hidden 1024, intermediate 2816, 8 experts, top-2; the batched_mm
experts implementation, which both exporters take), exports it with the TorchScript and the dynamo exporter
(input [1, S, 1024], S dynamic), writes benchmarks/build_layers.py's zoo model of that shape, runs `moec bench`
on each (one process after the other, each with its peers interleaved) and writes DIR/table.md with moec's time
on each real export over its time on the zoo model (goal: within 10%), and each run's ratios against its peers.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def export_block(out_dir, D, F, E, k):
    import torch
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    torch.manual_seed(0)
    cfg = MixtralConfig(hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=k)
    cfg._experts_implementation = "batched_mm"
    blk = MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_(0, 0.02)

    class Block(torch.nn.Module):
        def __init__(self, b):
            super().__init__()
            self.b = b

        def forward(self, h):
            o = self.b(h)
            return o[0] if isinstance(o, tuple) else o
    m = Block(blk).eval()
    x = torch.randn(1, 7, D)
    ts, dy = os.path.join(out_dir, "mixtral_block_torchscript.onnx"), os.path.join(out_dir, "mixtral_block_dynamo.onnx")
    torch.onnx.export(m, (x,), ts, dynamo=False, opset_version=18, input_names=["hidden_states"],
                      output_names=["out"], dynamic_axes={"hidden_states": {1: "S"}, "out": {1: "S"}})
    S = torch.export.Dim("S", min=1, max=4096)
    torch.onnx.export(m, (x,), dy, dynamo=True, dynamic_shapes=({1: S},), input_names=["hidden_states"],
                      output_names=["out"], external_data=False)
    return ts, dy


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--tokens", default="1,256")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="D=64, F=128 (a quick check of the script)")
    a = ap.parse_args()
    os.makedirs(a.output, exist_ok=True)
    D, F, E, k = (64, 128, 8, 2) if a.small else (1024, 2816, 8, 2)
    models = dict(zip(("torchscript", "dynamo"), export_block(a.output, D, F, E, k)))
    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    from build_mixtral_like import build
    from onnx import save
    zoo = os.path.join(a.output, "zoo_mixtral_like.onnx")
    save(build(hidden=D, ffn=F, experts=E, top_k=k), zoo)
    models["zoo"] = zoo
    res = {}
    for name, path in models.items():
        out = os.path.join(a.output, "bench_" + name)
        subprocess.run([sys.executable, "-m", "moec.cli", "bench", path, "--tokens", a.tokens, "--repeats",
                        str(a.repeats), "--threads", str(a.threads), "-o", out, "--force"], check=True)
        with open(os.path.join(out, "bench.json")) as fh:
            res[name] = json.load(fh)
    toks = [int(t) for t in a.tokens.split(",")]

    def row_at(r, t):
        return next(row for row in r["rows"] if row["tokens"] == t)
    L = [f"Real transformers MixtralSparseMoeBlock (D={D}, F={F}, E={E}, k={k}, batched_mm) vs moec's zoo model of "
         f"that shape; `moec bench`, {a.threads} threads, median of {a.repeats}.", "",
         "| export | " + " | ".join(f"T={t}: moec ms, / zoo, / ORT MoE op, / ORT on the model" for t in toks) + " |",
         "|---|" + "---|" * len(toks)]
    for name, r in res.items():
        cells = []
        for t in toks:
            row = row_at(r, t)
            fused = [v for kk, v in row["ratio_vs"].items() if kk.startswith("onnxruntime MoE op")]
            ms = row["ms"]["moec"]
            cells.append(f"{ms:.2f}, {ms / row_at(res['zoo'], t)['ms']['moec']:.2f}x, "
                         f"{(fused[0] if fused else float('nan')):.2f}x, "
                         f"{row['ratio_vs'].get('onnxruntime', float('nan')):.2f}x")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    with open(os.path.join(a.output, "table.md"), "w") as fh:
        fh.write("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()

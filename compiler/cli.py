"""The `moec` command line.

    moec compile MODEL --target cpu -o OUTDIR   import, optimise, emit, build, verify
    moec inspect MODEL [--json]                 what is in a model (and its MoE layers)
    moec run OUTDIR --input name=file.npy ...   run a compiled artifact
    moec bench MODEL [--tokens 1,8,64]           time moec against onnxruntime

Exit codes: 0 success, 1 verification failed, 2 bad input or usage, 3 internal build error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import List, Optional

from moec._version import __version__
from moec import ep_cli, ep_cost
from moec import targets
from moec.errors import MoecError, UserInputError, one_line, show_name
from moec.npy_input import save_npy
from moec.passes.quantize import ACTIVATIONS, MODES as WEIGHT_MODES, mode_for
from moec.bench import BENCH_TARGETS
from moec.targets.description import ASCEND_SOCS, DEFAULT_SOC

EPILOG = "Exit codes: 0 success, 1 verification failed, 2 bad input or usage, 3 internal error."


def _sizes(s: str) -> List[int]:
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{s}'") from None
    if not v or any(x < 1 for x in v):
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moec", description="moec: a compiler for Mixture-of-Experts models. ONNX in; C (CPU), "
        "Triton (NVIDIA) and AscendC (Ascend NPU) out; every build verified against onnxruntime.",
        epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"moec {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    c = sub.add_parser("compile", help="compile an ONNX model and verify it against onnxruntime",
                       description="Import MODEL, run moec's passes, generate and build code for the target, "
                       "then run it and onnxruntime on the same seeded random inputs (at several sizes of each "
                       "dynamic dimension) and compare. Writes OUTDIR/report.json.", epilog=EPILOG)
    c.add_argument("model", help="path to an .onnx file (external data files beside it are loaded)")
    c.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output directory for the artifact")
    c.add_argument("--soc", default=DEFAULT_SOC, choices=list(ASCEND_SOCS),
                   help="ascend: the SoC whose cores and buffer sizes tiling and the cost model use")
    c.add_argument("--target", default=targets.DEFAULT, choices=targets.names(),
                   help=f"code generation target (default: {targets.DEFAULT}); triton runs on a CUDA GPU or, "
                        "without one, under Triton's interpreter; reference runs the compiled IR in moec's "
                        "interpreter (debugging)")
    c.add_argument("--arch", default="native", choices=["native", "generic", "avx2", "avx512"],
                   help="CPU description: the host's SIMD (native), or a portable build (generic)")
    c.add_argument("--no-verify", action="store_true", help="skip verification against onnxruntime")
    c.add_argument("--force", action="store_true", help="overwrite OUTDIR if it holds an earlier moec artifact")
    c.add_argument("--dump-ir", metavar="DIR", help="write the IR text after every pipeline stage into DIR")
    c.add_argument("--sizes", type=_sizes, default=[5, 1, 3], metavar="N,N,..",
                   help="sizes tried for each dynamic dimension during verification (default 5,1,3)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random verification inputs")
    c.add_argument("--inputs", metavar="FILE.npz", default=None,
                   help="verification inputs (numpy.savez, one array per model input, named as the inputs): "
                        "tried besides the generated ones, and instead of them where moec cannot derive an "
                        "integer input's valid values")
    c.add_argument("--threads", type=int, default=2, help="threads for the compiled code and onnxruntime")
    c.add_argument("--sanitize", action="store_true", help="build with AddressSanitizer/UBSan (debugging)")
    c.add_argument("--weights", default="f32", choices=list(WEIGHT_MODES),
                   help="storage of the routed experts' weights: f32 (as in the model), bf16, int8 (per "
                        "output channel), int4 (grouped), w8a8 (int8 weights and activations; cpu and ascend), w4a8 (int4 weights, int8 "
                        "activations; cpu), int8_bf16 / int4_bf16 (= --activations bf16), fp8 "
                        "(float8 e4m3 per output channel; triton only, GPUs with fp8: sm_89+); verified against "
                        "the dequantised reference")
    c.add_argument("--activations", default="none", choices=list(ACTIVATIONS),
                   help="the expert GEMMs' inputs: none (as the model, the default), or quantised per token "
                        "at run time: int8 with --weights int8 (= --weights w8a8), int8 with --weights int4 (= w4a8: a "
                        "scale per row and int4 group, integer dot products; cpu), fp8 "
                        "with --weights fp8 (e4m3 rows, fp8 x fp8 dots with f32 accumulation; triton), or bf16 with "
                        "--weights int8 or int4 (each input rounded to bf16, nearest even; the int8 codes / int4 "
                        "q - z exact, products exact, f32 sums per scale group, the scale applied to each group's "
                        "f32 sum: bf16 arithmetic, vdpbf16ps where the CPU has AVX512_BF16; cpu)")
    c.add_argument("--group-size", type=int, default=64, metavar="G",
                   help="int4: weights per scale group along the reduction (32, 64, 128; 0 = whole row)")
    c.add_argument("--zero-point", action="store_true", help="int4: asymmetric groups with zero points")
    c.add_argument("--weights-scope", default="all", choices=["all", "experts"],
                   help="what --weights quantises: all (default: every linear layer the target has kernels for -- "
                        "attention projections, output layer, dense MLPs, routed experts; the router, embeddings "
                        "and norms keep the model's type) or experts (the routed experts only)")

    i = sub.add_parser("inspect", help="summarise a model: inputs, outputs, ops, weights, MoE layers",
                       description="Import MODEL and print its inputs, outputs, op histogram (ONNX and moec IR), "
                       "weight size and the MoE layers moec recognises.", epilog=EPILOG)
    i.add_argument("model", help="path to an .onnx file")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.add_argument("--explain", action="store_true",
                   help="for every top-k / arg-max: the MoE layer recognised (family, routing, E, k, D, F), or the "
                        "step at which recognition stopped, the nodes involved and the reason")
    i.add_argument("--target", default=targets.DEFAULT, choices=targets.names(),
                   help="schedule for this target (ascend: also print the cost-model estimates)")
    i.add_argument("--soc", default=DEFAULT_SOC, choices=list(ASCEND_SOCS))
    i.add_argument("--tokens", type=_sizes, default=[1, 256], metavar="N,N,..",
                   help="ascend: token counts for the cost-model estimates")

    b = sub.add_parser("bench", help="time moec against onnxruntime on a model",
                       description="Compile MODEL, then time moec's code, onnxruntime on the model as given, and "
                       "for each MoE layer onnxruntime's fused com.microsoft.MoE op built from the same weights "
                       "(interleaved runs, medians), next to sgemm and memory-copy probes of this machine. "
                       "Writes bench.json and bench.png into the output folder.", epilog=EPILOG)
    b.add_argument("model", nargs="?", help="path to an .onnx file (cpu target) taking one float [tokens, hidden] or "
                   "[batch, seq, hidden] input (batch 1, seq = tokens), or integer input_ids [batch, seq] (ids drawn "
                   "from the embedding's range; an attention mask / position ids filled in); tokens = batch x seq")
    b.add_argument("--target", default=BENCH_TARGETS[0], choices=list(BENCH_TARGETS),
                   help="cpu: moec vs onnxruntime on MODEL; triton: moec's kernels vs PyTorch eager, "
                        "torch.compile and dense bmm on the standard layers (needs a CUDA GPU)")
    b.add_argument("--layers", default="mixtral,deepseek", help="triton: standard layers to run")
    b.add_argument("--tokens", type=_sizes, default=None, metavar="N,N,..",
                   help="token counts (default cpu 1,8,64,256,1024; triton 1,16,128,1024,4096)")
    b.add_argument("--weights", default="f32", choices=list(WEIGHT_MODES),
                   help="cpu: as in compile; triton: the routed experts' weights, bf16 (the default f32 means "
                        "bf16 there), int8, int4 (W4A16, groups of 128) or fp8 (e4m3, needs an sm_89+ GPU)")
    b.add_argument("--group-size", type=int, default=64, metavar="G", help="int4: weights per scale group")
    b.add_argument("--also-weights", default="", metavar="MODE,..",
                   help="cpu: more weight modes, each compiled and timed in the same interleaved run")
    b.add_argument("--hf-model", default=None, metavar="DIR", help="cpu, a model taking input_ids: also time torch "
                   "eager on this transformers checkpoint (save_pretrained's folder; bf16 too with a bf16 mode)")
    b.add_argument("--gguf", default="", metavar="FILE,..", help="cpu, a model taking input_ids: also time llama.cpp "
                   "on these GGUF files (needs llama-cpp-python: pip install 'moec[bench]')")
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("-o", "--output", default=None, metavar="DIR", help="output folder (default moec_bench_<model>)")
    b.add_argument("--force", action="store_true", help="reuse an output folder that holds other files")

    k = sub.add_parser("conformance", help="run the bundled model zoo on every target and weight mode; "
                                           "print a table, write JSON and HTML")
    conf = targets.names(include_debug=False)
    k.add_argument("--targets", default=",".join(conf), help=f"comma-separated targets ({', '.join(conf)})")
    k.add_argument("--quick", action="store_true", help="one exporter per family and fewer weight modes (CI time)")
    k.add_argument("--no-timing", action="store_true", help="skip the time ratios against onnxruntime")
    k.add_argument("-o", "--output", default="moec_conformance", metavar="DIR", help="output folder")
    r = sub.add_parser("run", help="run a compiled artifact on .npy inputs",
                       description="Run the artifact in OUTDIR (from `moec compile`) on inputs given as "
                       "name=file.npy and write each output as NAME.npy.", epilog=EPILOG)
    r.add_argument("artifact", metavar="OUTDIR", help="directory written by `moec compile`")
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input (repeat for each model input)")
    r.add_argument("--output-dir", "-o", default="moec_outputs", metavar="DIR",
                   help="where to write the outputs (default ./moec_outputs)")
    r.add_argument("--force", action="store_true", help="overwrite existing output files")
    r.add_argument("--threads", type=int, default=2, help="threads for the compiled code")
    ep_cost.add_parser(sub)
    ep_cli.add_arguments(c, r, b, sub)
    from moec import decode
    decode.add_parser(sub)  # moec generate (compiler/decode.py)
    return p


def _arch(a) -> str:
    """The arch option of the chosen target: the flag its backend names (--arch, or --soc)."""
    return getattr(a, targets.backend_class(a.target).arch_flag, "native")


def cmd_compile(a) -> int:
    try:  # --weights W --activations A: one weight mode (passes/quantize.py)
        a.weights = mode_for(a.weights, a.activations)
    except ValueError as e:
        raise UserInputError(str(e)) from None
    if a.ep:
        return ep_cli.cmd_compile(a)
    from moec.driver import CompileOptions, compile_onnx
    opts = CompileOptions(target=a.target, arch=_arch(a), verify=not a.no_verify, dump_ir=a.dump_ir,
                          seed=a.seed, symbol_sizes=a.sizes, threads=a.threads, force=a.force,
                          sanitize=a.sanitize, weights=a.weights, group_size=a.group_size,
                          zero_point=a.zero_point, inputs_file=a.inputs,
                          weights_scope=a.weights_scope)
    res = compile_onnx(a.model, a.output, opts)
    rep = res.report
    t = rep["stage_timings_s"]
    total = sum(t.values())
    print(f"moec: compiled '{show_name(rep['model'])}' for {rep['target']} ({rep['target_desc']['arch']}) into "
          f"{show_name(a.output, 4096)} "
          f"in {total:.2f}s")
    layers = rep.get("moe_layers") or []
    print(f"  MoE layers recognised: {len(layers)}")
    if isinstance(rep.get("amx"), dict):  # an AMX build host (targets/cpu_backend.py)
        print(f"  AMX tiles for the bf16 / w8a8 GEMMs: {rep['amx'].get('run_time', 'built')} (MOEC_AMX=0 turns them off)")
    wq = rep.get("weights") or {}
    if opts.weights != "f32" and wq.get("quantized_layers"):
        scopes = wq.get("by_scope") or {"experts": {"layers": wq["quantized_layers"],
                                                    "tensors": wq["quantized_tensors"]}}
        label = {"experts": "MoE", "dense": "dense linear", "shared": "shared-expert linear"}
        what = ", ".join(f"{s['layers']} {label.get(k, k)} layer(s) ({s['tensors']} "
                         f"tensors)" for k, s in sorted(scopes.items()))
        print(f"  {opts.weights} weights (scope {opts.weights_scope}): {what} quantised, "
              f"{wq['bytes_before'] / 1e6:.2f} MB -> {wq['bytes_after'] / 1e6:.2f} MB")
        if wq.get("activations"):
            print(f"  activations: {wq['activations']}")
        for k in wq.get("dense_kept") or []:
            print(f"  kept in the model's type: {k['layers']} dense layer(s): {k['why']}")
    if wq.get("warning"):
        print(f"  warning: {wq['warning']}")
    if opts.verify:
        shapes = "; ".join(",".join(f"{k}{v}" for k, v in s.items()) for s in rep["shapes_tried"])
        print(f"  verified against {one_line(rep['oracle'])}: max abs error {rep['max_abs_err']:.3g}, "
              f"max rel error {rep['max_rel_err']:.3g} where above atol (shapes: {shapes})")
        for u in rep.get("model_undefined_at") or []:
            at = ",".join(f"{k}{v}" for k, v in u["shapes"].items())
            kind = {"identical": " (every row the same token)"}.get(u.get("kind"), "")
            print(f"  not verified at {at}{kind}: the model itself does not run there ({one_line(u['why'])[:300]})")
        kept = [(i, L["weights"]) for i, L in enumerate(layers) if (L.get("weights") or {}).get("skipped")]
        for i, w in kept:
            print(f"  warning: MoE layer {i} keeps {w['mode']} weights, not {w['requested']}: {w['skipped']}")
        if kept and len(kept) == len(layers):
            print(f"  warning: no MoE layer took {opts.weights} weights; the compiled model computes in "
                  f"{kept[0][1]['mode']}")
        elif rep.get("quantization_error") and wq.get("quantized_layers"):
            q = rep["quantization_error"]
            print(f"  {opts.weights} weights: quantisation error vs {q.get('vs', 'the model')}: median token "
                  f"{q['token_rel_median']:.3g} (bound {q['bound_token_rel_median']}), relative RMS "
                  f"{q['rel_rms']:.3g}, max abs {q['max_abs']:.3g}, tokens over 4x bound: "
                  f"{q['tokens_over_4x_bound']}/{q['tokens']}")
        nothing = " (nothing was quantised: see the warning above)" if wq.get("warning") else ""
        print("  " + one_line(verdict_line(rep)) + nothing)  # the oracle text may quote names from the model
    else:
        print("  not verified (--no-verify)")
    return 0


def verdict_line(rep: dict) -> str:
    """The final line of a verified compile: names the oracle; "against onnxruntime" only when onnxruntime ran
    the model as given in every trial (otherwise the oracle's own description, e.g. "moec's interpreter on
    the imported model (onnxruntime could not run the model: ...)")."""
    oracle = str(rep.get("oracle") or "")
    if rep.get("oracle_is_onnxruntime") and oracle == "onnxruntime":
        return "VERIFIED against onnxruntime"
    return f"VERIFIED against {oracle or 'an unnamed oracle'}"


def inspect_model(path: str, target: str = targets.DEFAULT, arch: str = "native", tokens=(1, 256)) -> dict:
    from moec.driver import load_model_proto
    from moec.frontend.onnx_import import import_model
    from moec.passes.pipeline import run_pipeline
    from moec.passes.recognition_trace import recognition_of
    from moec.verify import moe_layers_of, op_histogram
    proto, name = load_model_proto(path)
    onnx_hist = {}
    for n in proto.graph.node:
        k = n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}"
        onnx_hist[k] = onnx_hist.get(k, 0) + 1
    m = import_model(proto, name)
    backend = targets.backend(target, arch)
    run_pipeline(m, target=backend.desc)
    f = m.main
    extra = backend.inspect(m, tuple(tokens))  # the target's own entries (e.g. a cost model)
    return {
        "model": name, "path": path,
        "opset": int(m.attrs.get("moec.opset", 0)),
        "inputs": [{"name": n, "type": str(a.type)} for n, a in zip(f.arg_names, f.args)],
        "outputs": [{"name": n, "type": str(v.type)} for n, v in zip(f.output_names, f.outputs)],
        "onnx_ops": dict(sorted(onnx_hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ir_ops": op_histogram(m),
        "weights": {"count": len(m.weights), "bytes": m.weights.nbytes()},
        "moe_layers": moe_layers_of(m),
        "recognition": recognition_of(m),
        **extra,
    }


def cmd_inspect(a) -> int:
    info = inspect_model(a.model, a.target, _arch(a), a.tokens)
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"model {show_name(info['model'])} (opset {info['opset']})")
    print("inputs:")
    for x in info["inputs"]:
        print(f"  {show_name(x['name'])}: {show_name(x['type'])}")
    print("outputs:")
    for x in info["outputs"]:
        print(f"  {show_name(x['name'])}: {show_name(x['type'])}")
    w = info["weights"]
    print(f"weights: {w['count']} tensors, {w['bytes'] / 1e6:.2f} MB")
    print("ONNX ops: " + ", ".join(f"{k} x{v}" for k, v in info["onnx_ops"].items()))
    print("moec IR ops (after passes): " + ", ".join(f"{k} x{v}" for k, v in info["ir_ops"].items()))
    print(f"MoE layers: {len(info['moe_layers'])}")
    for i, layer in enumerate(info["moe_layers"]):
        print(f"  [{i}] " + ", ".join(f"{k}={v}" for k, v in layer.items() if k != "replaced_nodes"))
    if a.explain:
        from moec.passes.recognition_trace import format_explain
        print("MoE recognition (--explain):")
        for ln in format_explain(info["recognition"], info["moe_layers"]):
            print("  " + one_line(ln))  # names from the model: one line each, escapes shown
    for ln in targets.backend(a.target, _arch(a)).inspect_lines(info):
        print(ln)
    return 0


def cmd_bench(a) -> int:
    if a.ep:
        return ep_cli.cmd_bench(a)
    from moec.bench import run_bench_cli
    return run_bench_cli(a)


def cmd_conformance(a) -> int:
    from moec.conformance import format_table, run_conformance
    chosen = [t.strip() for t in a.targets.split(",") if t.strip()]
    bad = [t for t in chosen if t not in targets.names(include_debug=False)]
    if bad:
        raise UserInputError(f"unknown target(s) {', '.join(bad)} (choose from {', '.join(targets.names(include_debug=False))})")
    rep = run_conformance(chosen, quick=a.quick, outdir=a.output, timing=not a.no_timing)
    print(format_table(rep))
    print(f"wrote {os.path.join(a.output, 'conformance.json')} and {os.path.join(a.output, 'conformance.html')}")
    failed = sum(s["failed"] for s in rep["summary"].values())
    return 1 if failed else 0


def cmd_run(a) -> int:
    if a.nproc:
        return ep_cli.cmd_run(a)
    import numpy as np
    from moec.npy_input import check_input_names, load_npy_input
    from moec.artifact_dir import safe_file_names, verification_warning
    from moec.ir import parse_type
    d = a.artifact
    man = _run_manifest(d)
    warn = verification_warning(d)  # (exit code unchanged: the user decides whether to trust it)
    if warn:
        print(f"moec run: warning: {warn}", file=sys.stderr)
    given = {}
    for spec in a.input:
        if "=" not in spec:
            raise UserInputError(f"--input '{spec}': expected NAME=FILE.npy")
        k, v = spec.split("=", 1)
        given[k] = v
    names = [x["name"] for x in man["inputs"]]
    check_input_names(names, given)
    # where the outputs go, settled before anything runs: one file per output (distinct, safe names)
    if not a.output_dir or not a.output_dir.strip():
        raise UserInputError("-o: the output path is empty; name a directory")
    files = safe_file_names([o["name"] for o in man["outputs"]], ".npy")
    targets = [os.path.join(a.output_dir, f) for f in files]
    clash = [p for p in targets if os.path.lexists(p)]
    if clash and not a.force:
        raise UserInputError(f"output file(s) already exist: {', '.join(clash)}; pass --force to overwrite")
    arrays, binding = [], {}
    for x in man["inputs"]:
        path = given[x["name"]]
        arr = load_npy_input(path, f"input '{x['name']}'")  # (the header is checked before allocating)
        t = parse_type(x["type"])
        if arr.dtype != t.dtype.np:
            raise UserInputError(f"input '{x['name']}' has dtype {arr.dtype}, the model expects {t.dtype.np} "
                                 f"(type {x['type']})")
        if not t.matches(arr.shape, binding):
            raise UserInputError(f"input '{x['name']}' has shape {list(arr.shape)}, the model expects {x['type']}"
                                 + (f" (symbols bound so far: {binding})" if binding else ""))
        arrays.append(arr)
    try:
        os.makedirs(a.output_dir, exist_ok=True)
    except OSError as e:
        raise UserInputError(f"-o '{a.output_dir}': cannot create the output directory: {e.strerror or e}") from None
    if not os.path.isdir(a.output_dir):
        raise UserInputError(f"-o '{a.output_dir}' exists and is not a directory")
    outs = _artifact_backend(man).run(d, arrays, threads=a.threads)
    for o, p, arr in zip(man["outputs"], targets, outs):
        save_npy(p, arr)
        print(f"{show_name(o['name'])}: {arr.dtype}{list(arr.shape)} -> {show_name(p, 4096)}")
    return 0


def _artifact_backend(man: dict):
    """The backend that built the artifact (its manifest's target and arch; the arch of this machine where
    the recorded one is not an option of the target, e.g. a CPU's detected ISA)."""
    name = man.get("target", targets.DEFAULT)
    if not isinstance(name, str):
        raise UserInputError("the artifact's manifest.json names no target; recompile the artifact")
    try:
        return targets.backend(name, man.get("arch") if isinstance(man.get("arch"), str) else "native")
    except UserInputError:
        return targets.backend(name, "native")


def _run_manifest(d: str) -> dict:
    """The manifest of the artifact directory ``d`` for `moec run`, checked enough to use (exit 2 with
    one line otherwise)."""
    p = os.path.join(d, "manifest.json")
    if not os.path.isfile(p):
        raise UserInputError(f"'{d}' is not a moec artifact directory (no manifest.json); "
                             "create one with `moec compile MODEL -o DIR`")
    try:
        with open(p, "rb") as fh:
            man = json.loads(fh.read(16 << 20).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserInputError(f"'{d}': its manifest.json cannot be read ({type(e).__name__}); recompile the "
                             "artifact") from None
    if isinstance(man, dict) and man.get("kind") == "ir-dump":
        raise UserInputError(f"'{d}' holds IR dumps (--dump-ir), not a compiled artifact")
    ok = isinstance(man, dict) and all(
        isinstance(man.get(k), list) and all(isinstance(x, dict) and isinstance(x.get("name"), str)
                                             and isinstance(x.get("type"), str) for x in man[k])
        for k in ("inputs", "outputs"))
    if not ok:
        raise UserInputError(f"'{d}': its manifest.json does not describe a moec artifact's inputs and outputs; "
                             "recompile the artifact")
    return man


_save_npy = save_npy  # (the name other modules used)


def main(argv: Optional[List[str]] = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if not a.cmd:
        p.print_help()
        return 2
    try:
        return {"compile": cmd_compile, "inspect": cmd_inspect, "run": cmd_run, "bench": cmd_bench,
                "conformance": cmd_conformance, "plan": ep_cost.cmd_plan,
                "profile-routing": ep_cli.cmd_profile_routing,
                "generate": lambda a: a.run_generate(a)}[a.cmd](a)
    except MoecError as e:
        if a.debug:
            traceback.print_exc()
        # one line whatever the message quotes: names from the model cannot forge lines or send escapes
        print(f"moec {a.cmd}: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("moec: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in moec: still one clear line unless --debug
        if a.debug:
            traceback.print_exc()
        else:
            print(f"moec {a.cmd}: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for a traceback "
                  "and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

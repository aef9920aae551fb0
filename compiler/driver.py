"""The compile pipeline: a short list of named stages from an ONNX model to a verified artifact.

    import      ONNX -> moec IR
    <passes>    the IR pipeline (passes/pipeline.py), verified after each stage
    emit        IR -> target source
    build       source -> loadable artifact
    verify      artifact vs onnxruntime on seeded inputs at several shapes

``--dump-ir DIR`` writes the module text after every IR stage.
"""
from __future__ import annotations

import json
import os
import time
import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from .errors import BuildError as UserBuildError
from .errors import RuntimeFailure, UserInputError, VerificationError
from .ir import DType, IRError, Module, print_module, save_module, verify_module
from .ir import run as interpret
from .passes.pipeline import run_pipeline
from .passes.quantize import MODES as WEIGHT_MODES
from .passes.quantize import quantization_record
from .passes.recognition_trace import recognition_of
from .artifact_dir import Staging, check_target, write_manifest
from .targets.registry import get_backend

TARGETS = ("cpu", "triton", "ascend")


@dataclass
class CompileOptions:
    target: str = "cpu"
    arch: str = "native"
    verify: bool = True
    dump_ir: Optional[str] = None
    seed: int = 0
    symbol_sizes: Sequence[int] = (5, 1, 3)
    threads: int = 2
    force: bool = False
    sanitize: bool = False
    check_interpreter: bool = True
    weights: str = "f32"          # routed experts' weights: f32 (as the model), bf16, int8, int4, w8a8, fp8
    group_size: int = 64          # int4: elements per scale group (0: per row)
    zero_point: bool = False      # int4: asymmetric with zero points
    weights_scope: str = "all"    # --weights-scope: all (every linear layer) or experts (routed experts only)
    # input sets given by the user (each {input name: array}, checked by verify.check_user_inputs): extra
    # verification trials, or the only ones where moec cannot derive an integer input's valid values
    inputs: Optional[Sequence[Dict[str, np.ndarray]]] = None
    inputs_file: Optional[str] = None   # --inputs FILE.npz: one more such set (read by verify.load_inputs_npz)


@dataclass
class CompileResult:
    outdir: str
    module: Module
    report: dict
    artifact: object = None


class _Timer:
    def __init__(self):
        self.stages: Dict[str, float] = {}

    def time(self, name):
        timer = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *a):
                timer.stages[name] = round(timer.stages.get(name, 0.0) + time.perf_counter() - self.t0, 4)

        return _T()


def _dump(m: Module, dumps: Optional[Staging], idx: int, stage: str) -> None:
    """Write the module text after stage ``idx`` into the IR dump being staged (``--dump-ir``)."""
    if dumps is None:
        return
    with open(os.path.join(dumps.path, f"{idx:02d}-{stage}.mlir"), "w") as f:
        f.write(print_module(m))


class _Dumps:
    """``--dump-ir DIR``: staged like an artifact (never over existing files without --force, and then
    only over an earlier dump), and published when the compile ends, a failed one too (that is when
    the dumps are wanted), but not after Ctrl-C."""

    def __init__(self, opts: "CompileOptions", protect: Sequence[str]):
        self.st = (Staging(opts.dump_ir, opts.force, protect, kind="ir-dump", flag="--dump-ir")
                   if opts.dump_ir is not None else None)

    def __enter__(self) -> Optional[Staging]:
        return self.st

    def __exit__(self, et, ev, tb) -> None:
        if self.st is None:
            return
        try:
            if et is None or issubclass(et, Exception):
                try:
                    self.st.publish()
                except UserInputError:
                    if et is None:
                        raise
        finally:
            self.st.__exit__(et, ev, tb)


def _check_dirs(outdir: str, opts: "CompileOptions", protect: Sequence[str]) -> None:
    """-o and --dump-ir are usable, before any work: one clear line (exit 2) otherwise."""
    check_target(outdir, opts.force, protect, "-o")
    if opts.dump_ir is not None:
        check_target(opts.dump_ir, opts.force, protect, "--dump-ir")
        a, b = os.path.realpath(outdir), os.path.realpath(opts.dump_ir)
        if a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep):
            raise UserInputError(f"--dump-ir '{opts.dump_ir}' and -o '{outdir}' overlap; give the IR dumps a "
                                 "directory of their own")


def load_model_proto(model):
    """(proto, name) from a path (external data read from the model's folder only) or a ModelProto; either
    is checked (onnx's checker and moec's own checks) before anything else sees it."""
    from .frontend.onnx_import import _shown, check_model_proto, load_onnx
    if isinstance(model, (str, os.PathLike)):
        return load_onnx(os.fspath(model)), os.path.splitext(os.path.basename(os.fspath(model)))[0]
    name = model.graph.name or "model"
    check_model_proto(model, f"model '{_shown(name)}'")
    return model, name


def compile_onnx(model, outdir: str, opts: Optional[CompileOptions] = None) -> CompileResult:
    """Compile an ONNX model (path or ModelProto) into ``outdir`` and (optionally) verify it.

    ``outdir`` must be absent, empty, or (with ``opts.force``) an earlier moec artifact holding only
    the files moec wrote.  A build that fails verification is published where ``outdir`` was absent
    or empty (report.json says verified: false), never over an earlier artifact."""

    opts = opts or CompileOptions()
    if opts.target not in TARGETS:
        raise UserInputError(f"unknown target '{opts.target}' (available: {', '.join(TARGETS)})")
    protect = [os.fspath(model)] if isinstance(model, (str, os.PathLike)) else []
    _check_dirs(outdir, opts, protect)  # (a bad -o / --dump-ir fails at once, before the model is read)
    timer = _Timer()
    proto, name = load_model_proto(model)
    # built in a staging directory beside outdir, published by a rename only when complete: a failure
    # or an interruption anywhere leaves outdir as it was (see artifact_dir.py)
    with Staging(outdir, opts.force, protect) as st, _Dumps(opts, protect) as dumps:
        return _compile_staged(proto, name, outdir, st, dumps, opts, timer)


def _compile_staged(proto, name: str, outdir: str, st: Staging, dumps: Optional[Staging], opts: CompileOptions,
                    timer: _Timer) -> CompileResult:
    from .frontend.onnx_import import import_model
    final, outdir = outdir, st.path  # everything below writes into the staging directory
    with timer.time("import"):
        m = import_model(proto, name)
    try:
        verify_module(m)
    except IRError as e:
        raise UserBuildError(f"internal error: the imported IR of '{name}' does not verify: {e}") from None
    _dump(m, dumps, 0, "import")
    opts = user_inputs(m, opts)  # --inputs / example_inputs checked against the model now: bad ones are exit 2
    pass_log: List[dict] = []

    def after_stage(i, stage, module, info):
        try:
            verify_module(module)
        except IRError as e:
            raise UserBuildError(f"internal error: IR after stage '{stage}' does not verify: {e}") from None
        _dump(module, dumps, i, stage)
        pass_log.append({"stage": stage, **info})

    backend = get_backend(opts.target, opts.arch)
    check_weight_options(opts.target, opts.weights, opts.group_size, backend.desc)
    ref_module = None
    if opts.verify and opts.weights != "f32":
        ref_module = import_model(proto, name)  # the f32 model, to measure the quantisation error
    with timer.time("passes"):
        m = run_pipeline(m, target=backend.desc, after_stage=after_stage, weights=opts.weights,
                         group=opts.group_size, zero_point=opts.zero_point,
                         scope=opts.weights_scope)
    with timer.time("save_ir"):
        save_module(m, os.path.join(outdir, "model.mlir"))
    with timer.time("emit"):
        backend.emit(m, outdir)
    with timer.time("build"):
        build_cached = backend.build(outdir, sanitize=opts.sanitize)
    f = m.main
    manifest = {
        "moec_version": __version__, "model": name, "target": opts.target, "arch": backend.desc.arch,
        "inputs": [{"name": n, "type": str(a.type)} for n, a in zip(f.arg_names, f.args)],
        "outputs": [{"name": n, "type": str(v.type)} for n, v in zip(f.output_names, f.outputs)],
        "kind": "artifact", "roles": backend.files(),
    }
    write_manifest(outdir, manifest)  # (publishing completes its list of files, report.json included)
    report = {
        "moec_version": __version__, "model": name, "target": opts.target, "target_desc": backend.desc.to_json(),
        "verified": False, "verification": "skipped (--no-verify)" if not opts.verify else None,
        "max_abs_err": None, "max_rel_err": None, "tolerance": None, "shapes_tried": [],
        "stage_timings_s": timer.stages, "build_cache_hit": bool(build_cached), "passes": pass_log,
        "weights": {"mode": opts.weights, **({"group_size": opts.group_size, "zero_point": opts.zero_point}
                                             if opts.weights == "int4" else {}),
                    **quantization_record(m, opts.weights)},
        "moe_layers": moe_layers_of(m),
        "recognition": recognition_of(m),
        "op_histogram": op_histogram(m),
    }
    if opts.target == "ascend":
        with open(os.path.join(outdir, "ascend", "plan.json")) as fh:
            plan = json.load(fh)
        report["ascend"] = {"soc": plan["soc"], "host_ops": plan["host_ops"], "tiling_ops": plan.get("tiling_ops", {}),
                            "cost_model": {"note": plan["estimates_are"], "kernels": plan["estimates"]}}
    artifact = None
    if opts.verify:
        with timer.time("verify"):
            artifact = backend.load(outdir, threads=opts.threads)
            try:
                vr = verify_artifact(proto, m, artifact, opts, ref_module)
            except MemoryError:  # e.g. static input dims needing terabytes: the input's fault, not moec's
                raise UserInputError(f"'{name}': verification ran out of memory building inputs of the model's "
                                     "shapes; compile with --no-verify, or smaller --sizes for symbolic "
                                     "dimensions") from None
        report.update(vr)
        if opts.target == "ascend":  # what the emulator ran: kernel launches, cube instruction counts
            report["ascend"]["emulator"] = artifact.stats()
    report["stage_timings_s"] = timer.stages
    with open(os.path.join(outdir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=_json_default)
    result = CompileResult(final, m, report, artifact)
    if opts.verify and not report["verified"]:
        # kept for inspection where nothing was, never in place of an earlier artifact (even with --force)
        if st.publish(replace=False, required=False):
            where = (f"report: {os.path.join(final, 'report.json')}; the artifact is kept there, marked "
                     "verified: false")
        else:
            where = (f"the earlier artifact in '{final}' was left unchanged; compile into a new -o to inspect "
                     "the failed build")
        # neither onnxruntime nor moec's interpreter could run the model on these inputs: nothing disagreed
        # with anything, the model (or the inputs drawn for it) is at fault -> exit 2, not a failed check
        error = UserInputError if report.get("no_oracle") else VerificationError
        raise error(f"verification FAILED for '{name}' on target {opts.target}: "
                    f"{report.get('failure', 'mismatch')} ({where})")
    st.publish()
    return result


def check_fp8(target: str, weights: str, desc, m: Optional[Module] = None) -> None:
    """fp8 (e4m3) weights exist on the triton target only, on a GPU with fp8 support (sm_89+) or under
    Triton's interpreter; anything else is a UserInputError saying what to do.  ``m``: also reject a
    module that already holds fp8 ``moe.experts`` (built from IR text) for another target."""
    if weights != "fp8" and not (m is not None and any(o.name == "moe.experts" and o.attrs.get("wq") == "fp8"
                                                       for o in m.ops())):
        return
    if target != "triton":
        raise UserInputError(f"target {target}: fp8 (float8 e4m3) expert weights are implemented for the triton "
                             "target only; use --weights int8 (or bf16) here, or --target triton")
    if not desc.has("fp8_e4m3"):
        cc = desc.get("compute_capability", "?")
        raise UserInputError(f"target triton: the GPU {desc.get('device', desc.arch)} (compute capability {cc}) "
                             "has no fp8 (e4m3) support, which needs compute capability 8.9 or newer (Ada, "
                             "Hopper: L4/L40S, H100/H200); use --weights int8 or bf16 on this GPU, or compile "
                             "for an fp8-capable one")


def check_weight_options(target: str, weights: str, group_size: int, desc, m: Optional[Module] = None) -> None:
    """The weight mode, its options and the target agree (one message per mistake, naming the flag)."""
    if weights not in WEIGHT_MODES:
        raise UserInputError(f"unknown weight mode '{weights}' (choose {', '.join(WEIGHT_MODES)})")
    check_fp8(target, weights, desc, m)
    if target == "ascend" and weights not in ("f32", "bf16", "int8", "w8a8"):
        raise UserInputError(f"target ascend: --weights {weights} is not implemented (f32, bf16, int8 and w8a8 "
                             "are)")
    if weights == "w8a8" and target not in ("cpu", "ascend"):
        raise UserInputError(f"target {target}: --weights w8a8 (int8 activations) is implemented for the cpu "
                             "and ascend targets only; use --weights int8 (int8 weights, f32 activations)")
    if weights == "int4" and (group_size < 0 or group_size % 2):
        raise UserInputError(f"--group-size {group_size}: int4 packs two weights per byte, so a scale group "
                             "must be an even number of weights (e.g. 32, 64, 128), or 0 for one group per row")


def build_module(m: Module, outdir: str, target: str = "cpu", arch: str = "native", threads: int = 1,
                 force: bool = True, run_passes: bool = False, weights: str = "f32", group: int = 64,
                 zero_point: bool = False, scope: str = "all"):
    """Emit and build an IR module directly (no ONNX, no verification); return the loaded artifact.

    Used by tests and tools that start from IR text: compare the artifact with ``moec.ir.run``.
    ``outdir`` is staged and published as by :func:`compile_onnx` (``force``: an earlier moec artifact
    there may be replaced); the artifact returned is loaded before publishing, so a build that does not
    load is never published."""
    verify_module(m)
    with Staging(outdir, force) as st:
        d = st.path
        backend = get_backend(target, arch)
        check_weight_options(target, weights if run_passes else "f32", group, backend.desc, m)
        if run_passes:
            m = run_pipeline(m, target=backend.desc, weights=weights, group=group, zero_point=zero_point,
                             scope=scope)
        save_module(m, os.path.join(d, "model.mlir"))
        backend.emit(m, d)
        backend.build(d)
        f = m.main
        names = f.output_names or [f"out{i}" for i in range(len(f.outputs))]
        manifest = {"moec_version": __version__, "model": "module", "target": target, "arch": backend.desc.arch,
                    "inputs": [{"name": n, "type": str(a.type)} for n, a in zip(f.arg_names, f.args)],
                    "outputs": [{"name": n, "type": str(v.type)} for n, v in zip(names, f.outputs)],
                    "kind": "artifact", "roles": backend.files()}
        write_manifest(d, manifest)
        art = backend.load(d, threads=threads)
        st.publish()
    return art


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def op_histogram(m: Module) -> Dict[str, int]:
    h: Dict[str, int] = {}
    for o in m.ops():
        h[o.name] = h.get(o.name, 0) + 1
    return dict(sorted(h.items(), key=lambda kv: (-kv[1], kv[0])))


def moe_layers_of(m: Module) -> List[dict]:
    """MoE layers found by the recognition passes: they record one JSON object per layer in the
    module attribute ``moec.moe_layers`` (so the record survives printing and parsing)."""
    return [json.loads(x) for x in m.attrs.get("moec.moe_layers", [])]


def _widened_onnxruntime(proto, lazy: dict, f, xs, threads: int):
    """onnxruntime on the model's f32 analogue (verify.widen_half_model), half inputs widened; None
    where that cannot run either."""
    from .verify import run_onnxruntime, widen_half_model
    try:
        if "widened" not in lazy:
            w = widen_half_model(proto)
            lazy["widened"] = None if w is None else w.SerializeToString()
        if lazy["widened"] is None:
            return None
        from .passes.moe_util import widen
        return [np.asarray(r) for r in run_onnxruntime(lazy["widened"], f.arg_names, [widen(x) for x in xs],
                                                       threads=threads)]
    except Exception:  # noqa: BLE001 - no f32 oracle: the op-by-op interpreter result decides alone
        return None


def user_inputs(m: Module, opts: CompileOptions) -> CompileOptions:
    """``opts`` with the user's input sets (``inputs``, ``inputs_file``) checked against the imported
    model's inputs (names, dtypes, ranks, sizes; the file untrusted: no pickles, sizes bounded), as
    {name: array} dicts in ``inputs``; UserInputError (exit 2) for anything that does not fit."""
    from .verify import check_user_inputs, load_inputs_npz
    if not opts.inputs and not opts.inputs_file:
        return opts
    f = m.main
    sets = [check_user_inputs(f, s, f"example input set {i}" if len(opts.inputs) > 1 else "example inputs")
            for i, s in enumerate(opts.inputs or [])]
    if opts.inputs_file:
        sets.append(load_inputs_npz(opts.inputs_file, f))
    return dataclasses.replace(opts, inputs=sets, inputs_file=None)


def _trials(f, opts: CompileOptions):
    """Verification trials [(symbol binding, kind, user inputs or None)] and the integer inputs whose
    valid values moec cannot derive ({name: why}).  The user's input sets come first; generated trials
    follow (random at each shape, identical tokens, tied router rows where the model selects by value,
    non-finite router rows where a router defines them) unless an integer input is underivable and the
    user gave inputs, then the user's are the only ones."""
    from .verify import int_input_plan, nonfinite_router_args, selection_ops, shape_trials
    _, unknown = int_input_plan(f)
    trials = [({}, "user", given) for given in (opts.inputs or [])]
    if unknown and trials:
        return trials, {}
    gen = [(b, "random", None) for b in shape_trials(f, opts.symbol_sizes)]
    if any(a.type.rank >= 2 and a.type.dtype.is_float for a in f.args):
        gen.append((gen[0][0], "identical", None))  # plus a batch of identical tokens
        if selection_ops(f):
            gen.append((gen[0][0], "tied", None))  # equal router logits: routing ties
    seen = {v.type.dtype for v in f.args} | {r.type.dtype for o in f.ops for r in o.results}
    if nonfinite_router_args(f) and opts.weights == "f32" and not seen & {DType.F16, DType.BF16}:
        gen.append((gen[0][0], "nonfinite", None))  # NaN / Inf router rows (they output 0)
    return trials + gen, unknown


def verify_artifact(proto, m: Module, artifact, opts: CompileOptions, f32_module: Optional[Module] = None) -> dict:
    """Run the artifact and onnxruntime (and the IR interpreter) on seeded inputs at several shapes.

    Quantised builds (``opts.weights`` != f32) are checked against their own reference semantics
    (the IR interpreter on the quantised module: dequantise, then compute in f32) with the f32
    tolerance; the distance to onnxruntime on the f32 model is the quantisation error, measured
    and reported (``quantization_error``) and bounded by ``tolerances.QUANT_ERROR_BOUNDS``."""
    from .verify import check_user_inputs, compare, make_inputs, run_onnxruntime, shape_trials
    f = m.main
    model_bytes = proto.SerializeToString()
    trials, unknown_ints = _trials(f, opts)
    out = {"verified": True, "shapes_tried": [], "max_abs_err": 0.0, "max_rel_err": 0.0,
           "oracle": "onnxruntime", "trials": []}
    quantized = opts.weights != "f32" and f32_module is not None
    qerr = {"max_abs": 0.0, "rel_rms": 0.0, "max_abs_rel_to_max": 0.0, "token_rel_median": 0.0,
            "token_rel_max": 0.0, "tokens": 0, "tokens_over_4x_bound": 0}
    tol_seen = {}
    lazy: Dict[str, object] = {}
    f32_oracle = "onnxruntime on the model"

    def original() -> Module:  # the model as imported, before any pass: its own semantics
        if "orig" not in lazy:
            from .frontend.onnx_import import import_model
            lazy["orig"] = f32_module if f32_module is not None else import_model(proto)
        return lazy["orig"]
    # the narrowest float type the model computes in (bf16 before f16), and whether a float output is
    # wider than that: an f32 output summed from f16 expert outputs carries f16 rounding, which the f32
    # elementwise tolerance would wrongly hold against the compiled code
    seen = {v.type.dtype for v in f.args} | {r.type.dtype for o in f.ops for r in o.results}
    half_dt = DType.BF16 if DType.BF16 in seen else (DType.F16 if DType.F16 in seen else None)
    wide_out = half_dt is not None and any(v.type.dtype in (DType.F32, DType.F64) for v in f.outputs)
    def hinted(msg: str) -> str:  # a failure on inputs moec could not make valid says so
        if not unknown_ints:
            return msg
        why = "; ".join(f"'{n}': {r}" for n, r in unknown_ints.items())
        return (f"{msg} [moec could not derive valid values for integer input(s) ({why}) and drew them from "
                "[0, 4): give inputs with --inputs FILE.npz (moec.compile(..., example_inputs=...))]")
    for ti, (binding, kind, given) in enumerate(trials):
        if given is not None:
            xs = list(check_user_inputs(f, given, "inputs").values())
        else:
            xs = make_inputs(f, binding, seed=opts.seed + ti, kind=kind)
        identical = kind == "identical"
        shapes = {n: list(x.shape) for n, x in zip(f.arg_names, xs)}
        if kind in ("random", "user"):
            out["shapes_tried"].append(shapes)
        oracle, why, half_ref, own_runs = "onnxruntime", None, None, []
        try:
            want = run_onnxruntime(model_bytes, f.arg_names, xs, threads=opts.threads)
        except Exception as e:  # onnxruntime cannot run it (bf16 on its CPU provider, ...)
            why = str(e).splitlines()[0][:200]
            want = None
            if not quantized:  # (a quantised build has its own oracle, below)
                # the model's own semantics op by op (moec's interpreter on the model as imported, not
                # on the compiled module: the passes are what is being checked)
                try:
                    want = list(interpret(original(), xs).values())
                except IRError as ie:
                    msg = f"onnxruntime failed ({why}), moec's interpreter failed ({ie})"
                    if kind == "random" and not unknown_ints:  # the model itself is not defined at these shapes: say so
                        if shapes in out["shapes_tried"]:
                            out["shapes_tried"].remove(shapes)
                        out.setdefault("model_undefined_at", []).append({"shapes": shapes, "why": msg})
                        continue
                    out.update(verified=False, no_oracle=True, failure=hinted(f"no oracle could run the model: {msg}"))
                    return out
                oracle = f"moec's interpreter on the imported model (onnxruntime could not run the model: {why})"
        if not quantized and half_dt is not None and (why is not None or wide_out):
            # judged against the model's f32 analogue, next to the model's own half-precision run(s)
            half_ref = _widened_onnxruntime(proto, lazy, f, xs, opts.threads)
            if half_ref is not None:
                if why is None:  # onnxruntime ran the model; the op-by-op run is a second faithful one
                    try:
                        own_runs.append(list(interpret(original(), xs).values()))
                    except IRError:
                        pass
                oracle = (f"onnxruntime on the model widened to f32 (moec's error must be no worse than the "
                          f"model's own {half_dt.mlir} run"
                          + (f", by moec's interpreter op by op; onnxruntime failed on the model: {why})" if why else
                             ", by onnxruntime and by moec's interpreter op by op: the model returns a wider type)"))
        f32_want = None
        if quantized:
            f32_want = want if want is not None else list(interpret(f32_module, xs).values())
            f32_oracle = "onnxruntime on the model" if want is not None else "moec's interpreter on the model"
            want = None
            oracle = f"interpreter on the {opts.weights} module (dequantise-then-compute)"
        try:
            got = artifact(xs)
        except RuntimeFailure as e:
            out.update(verified=False, failure=hinted(f"compiled code failed at shapes {shapes}: {e}"))
            return out
        trial = {"shapes": shapes, "oracle": oracle, "kind": kind, "identical_rows": identical}
        if opts.check_interpreter or want is None:
            try:
                ref = list(interpret(m, xs).values())
            except IRError as e:
                ref = None
                trial["interpreter_error"] = str(e)
                if want is None:
                    out.update(verified=False, no_oracle=True, failure=hinted(f"no oracle could run the model: {e}"))
                    return out
            if ref is not None:
                if want is None:
                    want = ref
                else:
                    c2 = compare(f.output_names, ref, want)
                    trial["interpreter_vs_onnxruntime"] = {"ok": c2.ok, "max_abs_err": c2.max_abs_err}
        tol_override = None
        if quantized and opts.weights in ("bf16", "w8a8"):
            from .tolerances import QUANT_VERIFY_TOLERANCE
            tol_override = QUANT_VERIFY_TOLERANCE[opts.weights]  # quantised GEMM inputs (see tolerances.py)
        c = compare(f.output_names, got, want, tol_override)
        trial.update(ok=c.ok, max_abs_err=c.max_abs_err, max_rel_err=c.max_rel_err, outputs=c.per_output)
        if quantized and opts.weights == "w8a8" and not c.ok:  # flipped int8 codes (tolerances.py: per-token model)
            from .tolerances import w8a8_flip_check
            fc = w8a8_flip_check(got, want)
            trial["w8a8_flipped_tokens"] = fc
            if fc["ok"]:
                c = dataclasses.replace(c, ok=True, message="")
                trial["ok"] = True
        if half_ref is not None:  # judged against the f32 model, next to the model's own half semantics
            from .verify import half_trial
            ht = half_trial(got, want, half_ref, half_dt.np.name, own_runs)
            trial.update(ok=ht["ok"], half_precision=ht)
            c = dataclasses.replace(c, ok=ht["ok"], message=ht.get("failure", ""))
        if quantized:
            from .tolerances import QUANT_ERROR_BOUNDS, quantization_error
            qe = quantization_error(got, f32_want, QUANT_ERROR_BOUNDS[opts.weights])
            trial["quantization_error"] = qe
            for key in qerr:
                qerr[key] = qerr[key] + qe[key] if key in ("tokens", "tokens_over_4x_bound") else max(qerr[key], qe[key])
        out["trials"].append(trial)
        if ti == 0 or (out["oracle"] == "onnxruntime" and oracle != "onnxruntime"):
            out["oracle"] = oracle  # any trial not judged by onnxruntime on the model itself is what is reported
        out["max_abs_err"] = max(out["max_abs_err"], c.max_abs_err)
        out["max_rel_err"] = max(out["max_rel_err"], c.max_rel_err)
        for p in c.per_output:
            tol_seen[p["dtype"]] = p["tolerance"]
        if not c.ok:
            out.update(verified=False, failure=hinted(f"{c.message} at input shapes {shapes}"
                                                      + (f" ({kind} inputs)" if kind != "random" else "")),
                       worst_output=c.worst_output)
            break
    if not out["trials"] and out.get("model_undefined_at"):  # no drawn shape at which the model itself runs
        out.update(verified=False, no_oracle=True,
                   failure=hinted(f"no oracle could run the model: {out['model_undefined_at'][0]['why']}"))
    out["tolerance"] = tol_seen
    # True only if every trial was judged by onnxruntime running the model as given: the CLI's verdict line
    # and report.json never claim onnxruntime otherwise
    out["oracle_is_onnxruntime"] = bool(out["trials"]) and all(t["oracle"] == "onnxruntime" for t in out["trials"])
    if quantized:
        from .tolerances import QUANT_ERROR_BOUNDS
        bound = QUANT_ERROR_BOUNDS[opts.weights]
        out["quantization_error"] = {**qerr, "vs": f32_oracle, "bound_token_rel_median": bound}
        if out["verified"] and qerr["token_rel_median"] > bound:
            out.update(verified=False, failure=f"quantisation error too large: median per-token relative error "
                                               f"{qerr['token_rel_median']:.3g} vs the f32 model > {bound} allowed "
                                               f"for {opts.weights} weights")
    return out

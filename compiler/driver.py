"""The compile pipeline: a short list of named stages from an ONNX model to a verified artifact.

    import      ONNX -> moec IR
    <passes>    the IR pipeline (passes/pipeline.py), verified after each stage
    emit        IR -> target source
    build       source -> loadable artifact
    verify      artifact vs onnxruntime on seeded inputs at several shapes

``compile_onnx`` runs them all; ``compile_module`` runs the stages after import for a module another front
end made (the JIT's torch.export path, verified against the torch module's own output).

``--dump-ir DIR`` writes the module text after every IR stage.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from moec._version import __version__
from moec.errors import BuildError as UserBuildError
from moec.errors import UserInputError, VerificationError
from moec.ir import IRError, Module, print_module, save_module, verify_module
from moec.passes.pipeline import run_pipeline
from moec.passes.quantize import quantization_record
from moec.artifact_dir import Staging, check_target, write_manifest
from moec.targets import DEFAULT as DEFAULT_TARGET
from moec.targets import backend as target_backend
from moec.targets import backend_class, check_options
from moec.verify import build_report, moe_layers_of, op_histogram, user_inputs, verify_artifact, write_report  # noqa: F401


@dataclass
class CompileOptions:
    target: str = DEFAULT_TARGET     # a name in the target registry (moec.targets)
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
    # passes run once after the pipeline, only where a caller asks (e.g. moec.decode's kv-cache-inplace)
    extra_passes: Sequence = ()


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


def load_model_proto(model, info: Optional[dict] = None):
    """(proto, name) from a path (external data read from the model's folder only) or a ModelProto; either
    is checked (onnx's checker and moec's own checks) before anything else sees it.  ``info``: filled by
    load_onnx for a path (whether the file alone holds the model)."""
    from moec.frontend.onnx_import import _shown, check_model_proto, load_onnx
    if isinstance(model, (str, os.PathLike)):
        return load_onnx(os.fspath(model), info), os.path.splitext(os.path.basename(os.fspath(model)))[0]
    name = model.graph.name or "model"
    check_model_proto(model, f"model '{_shown(name)}'")
    return model, name


def compile_onnx(model, outdir: str, opts: Optional[CompileOptions] = None) -> CompileResult:
    """Compile an ONNX model (path or ModelProto) into ``outdir`` and (optionally) verify it.

    ``outdir`` must be absent, empty, or (with ``opts.force``) an earlier moec artifact holding only
    the files moec wrote.  A build that fails verification is published where ``outdir`` was absent
    or empty (report.json says verified: false), never over an earlier artifact."""

    opts = opts or CompileOptions()
    backend_class(opts.target)  # (an unknown target is exit 2 before anything else)
    protect = [os.fspath(model)] if isinstance(model, (str, os.PathLike)) else []
    _check_dirs(outdir, opts, protect)  # (a bad -o / --dump-ir fails at once, before the model is read)
    timer = _Timer()
    info: dict = {}
    proto, name = load_model_proto(model, info)
    model_file = None
    if info.get("self_contained"):  # onnxruntime verifies on the file itself (no serialised copy of the weights)
        model_file = (os.path.abspath(os.fspath(model)), info["stat"])
    # built in a staging directory beside outdir, published by a rename only when complete: a failure
    # or an interruption anywhere leaves outdir as it was (see artifact_dir.py)
    source = _Source(proto, model_file)
    del proto  # (held by ``source`` alone, which lets it go once nothing but a fallback needs it)
    with Staging(outdir, opts.force, protect) as st, _Dumps(opts, protect) as dumps:
        return _compile_staged(source, name, outdir, st, dumps, opts, timer)


class _Source:
    """The ONNX model being compiled.  Read from a file that alone holds it (``model_file``: path, stat at
    loading), the proto is let go once imported (and the f32 reference made): verification runs onnxruntime on
    the file, and a fallback that needs the proto again (the interpreter where onnxruntime cannot run the
    model, a half model's f32 analogue) reads the file again -- one copy of the weights fewer through the passes,
    the build and verification."""

    def __init__(self, proto, model_file=None):
        self._proto, self.model_file = proto, model_file

    def proto(self):
        if self._proto is None:
            from moec.frontend.onnx_load import load_onnx
            path = self.path()
            if path is None:
                raise UserInputError(f"'{self.model_file[0]}' changed while moec compiled it; compile it again")
            self._proto = load_onnx(path)
        return self._proto

    def release(self) -> None:
        if self.model_file is not None:
            self._proto = None

    def path(self) -> Optional[str]:
        """The model's path where the file is still the one read (size, mtime and inode as at loading)."""
        if self.model_file is None:
            return None
        path, was = self.model_file
        try:
            st = os.stat(path)
        except OSError:
            return None
        return path if (st.st_size, st.st_mtime_ns, st.st_ino) == was else None


def _compile_staged(source: "_Source", name: str, outdir: str, st: Staging, dumps: Optional[Staging],
                    opts: CompileOptions, timer: _Timer) -> CompileResult:
    from moec.frontend.onnx_import import import_model
    with timer.time("import"):
        m = import_model(source.proto(), name)
    _check_imported(m, name)
    opts = user_inputs(m, opts)  # --inputs / example_inputs checked against the model now: bad ones are exit 2
    if not (opts.verify and opts.weights != "f32"):
        source.release()  # (a quantised build's f32 reference is imported from it first, below)

    def oracle(artifact, built: Module, ref_module: Optional[Module]) -> dict:  # onnxruntime (or the interpreter)
        return verify_artifact(source.proto, built, artifact, opts, ref_module, model_file=source.path())

    def reference() -> Module:
        ref = import_model(source.proto(), name)
        source.release()
        return ref

    return _compile_imported(m, name, outdir, st, dumps, opts, timer, oracle, reference=reference)


def _check_imported(m: Module, name: str) -> None:
    try:
        verify_module(m)
    except IRError as e:
        raise UserBuildError(f"internal error: the imported IR of '{name}' does not verify: {e}") from None


def compile_module(m: Module, name: str, outdir: str, opts: CompileOptions,
                   oracle: Optional[Callable[[object, Module, Optional[Module]], dict]] = None,
                   reference: Optional[Callable[[], Module]] = None, head: Optional[dict] = None) -> CompileResult:
    """The stages after import for a module some other front end made (the JIT's torch.export path): passes
    -> emit -> build -> verify with ``oracle(artifact, built module, reference module)`` (a dict of report
    fields with 'verified'; ``reference()``: the f32 module, made only for quantised builds), published
    into ``outdir`` as :func:`compile_onnx` publishes.  ``head``: report entries after the target."""
    backend_class(opts.target)
    _check_dirs(outdir, opts, [])
    if opts.verify and oracle is None:
        raise ValueError("compile_module: verifying needs an oracle")
    _check_imported(m, name)
    with Staging(outdir, opts.force, []) as st, _Dumps(opts, []) as dumps:
        return _compile_imported(m, name, outdir, st, dumps, opts, _Timer(), oracle, reference, head)


def _compile_imported(m: Module, name: str, outdir: str, st: Staging, dumps: Optional[Staging], opts: CompileOptions,
                      timer: _Timer, oracle, reference=None, head: Optional[dict] = None) -> CompileResult:
    final, outdir = outdir, st.path  # everything below writes into the staging directory
    _dump(m, dumps, 0, "import")
    pass_log: List[dict] = []

    def after_stage(i, stage, module, info):
        try:
            verify_module(module)
        except IRError as e:
            raise UserBuildError(f"internal error: IR after stage '{stage}' does not verify: {e}") from None
        _dump(module, dumps, i, stage)
        pass_log.append({"stage": stage, **info})

    backend = target_backend(opts.target, opts.arch)
    check_options(backend, opts)
    ref_module = None
    if opts.verify and opts.weights != "f32" and reference is not None:
        ref_module = reference()  # the f32 model, to measure the quantisation error
    with timer.time("passes"):
        m = run_pipeline(m, target=backend.desc, after_stage=after_stage, weights=opts.weights,
                         group=opts.group_size, zero_point=opts.zero_point,
                         scope=opts.weights_scope)
        for p in opts.extra_passes:
            p.run(m)
            after_stage(len(pass_log) + 1, p.name, m, {"passes": [p.name]})
    with timer.time("save_ir"):
        save_module(m, os.path.join(outdir, "model.mlir"))
    with timer.time("emit"):
        backend.emit(m, outdir)
    with timer.time("build"):
        build_cached = backend.build(outdir, sanitize=opts.sanitize)
    write_manifest(outdir, _manifest(m, name, backend))  # (publishing completes its list of files, report.json included)
    report = build_report(
        m, name, opts.target, head={**(head or {}), "target_desc": backend.desc.to_json()}, verified=False,
        verification="skipped (--no-verify)" if not opts.verify else None,
        max_abs_err=None, max_rel_err=None, tolerance=None, shapes_tried=[], stage_timings_s=timer.stages,
        build_cache_hit=bool(build_cached), passes=pass_log,
        weights={"mode": opts.weights, **({"group_size": opts.group_size, "zero_point": opts.zero_point}
                                          if opts.weights == "int4" else {}),
                 **quantization_record(m, opts.weights)})
    report.update(backend.report(outdir))  # the target's own entries (e.g. a launch plan)
    artifact = None
    if opts.verify:
        with timer.time("verify"):
            artifact = backend.load(outdir, threads=opts.threads)
            try:
                vr = oracle(artifact, m, ref_module)
            except MemoryError:  # e.g. static input dims needing terabytes: the input's fault, not moec's
                raise UserInputError(f"'{name}': verification ran out of memory building inputs of the model's "
                                     "shapes; compile with --no-verify, or smaller --sizes for symbolic "
                                     "dimensions") from None
        report.update(vr)
        report.update(backend.report(outdir, artifact))  # and what the verified artifact ran
    report["stage_timings_s"] = timer.stages
    write_report(outdir, report)
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


def _manifest(m: Module, name: str, backend) -> dict:
    f = m.main
    names = f.output_names or [f"out{i}" for i in range(len(f.outputs))]
    return {"moec_version": __version__, "model": name, "target": backend.name, "arch": backend.desc.arch,
            "inputs": [{"name": n, "type": str(a.type)} for n, a in zip(f.arg_names, f.args)],
            "outputs": [{"name": n, "type": str(v.type)} for n, v in zip(names, f.outputs)],
            "kind": "artifact", "roles": backend.files()}


@dataclass
class _Weights:  # (the options build_module's checks read)
    weights: str
    group_size: int


def build_module(m: Module, outdir: str, target: str = DEFAULT_TARGET, arch: str = "native", threads: int = 1,
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
        backend = target_backend(target, arch)
        check_options(backend, _Weights(weights if run_passes else "f32", group), m)
        if run_passes:
            m = run_pipeline(m, target=backend.desc, weights=weights, group=group, zero_point=zero_point,
                             scope=scope)
        save_module(m, os.path.join(d, "model.mlir"))
        backend.emit(m, d)
        backend.build(d)
        write_manifest(d, _manifest(m, "module", backend))
        art = backend.load(d, threads=threads)
        st.publish()
    return art

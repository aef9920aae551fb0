"""The Python JIT API: ``moec.compile`` and ``@moec.jit``.

Compiled artifacts are cached on disk under ``$MOEC_CACHE_DIR/jit`` (default ``~/.cache/moec/jit``)
by a content hash of (imported graph text, weights, options, target description, compiler source).
A build happens in a private temporary folder and is published with one atomic rename, so two
processes compiling the same model at once both succeed (the second to finish reuses the first's
folder).  Any change of graph, weights, options or moec itself gives a new key (a miss).
Cache contents are untrusted: an entry's COMPLETE marker lists the sha256 of every file in it, and a hit
needs every file to match (and its JSON to have the expected types); a damaged entry (a truncated .so,
weights edited in place, garbage JSON, a missing marker) is discarded and rebuilt, never loaded
(``moec.targets.cache_store``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from moec._version import __version__
from moec.errors import UserInputError, VerificationError

_SOURCE_HASH: Optional[str] = None


def _compiler_hash() -> str:
    """Hash of moec's own sources (so a changed compiler never reuses an old artifact)."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        h = hashlib.sha256(__version__.encode())
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        pkg_dirs = [os.path.dirname(os.path.abspath(__file__))]
        for sub in ("ir", "passes", "codegen", "targets"):
            import importlib
            try:
                mod = importlib.import_module(f"moec.{sub}")
                pkg_dirs.append(os.path.dirname(os.path.abspath(mod.__file__)))
            except ImportError:
                pkg_dirs.append(os.path.join(root, sub))
        for d in pkg_dirs:
            for dp, dns, fns in sorted(os.walk(d)):
                dns.sort()
                for fn in sorted(fns):
                    if fn.endswith((".py", ".c", ".h", ".cpp", ".json")) and "__pycache__" not in dp:
                        with open(os.path.join(dp, fn), "rb") as f:
                            h.update(fn.encode())
                            h.update(f.read())
        _SOURCE_HASH = h.hexdigest()[:16]
    return _SOURCE_HASH


def jit_cache_dir() -> str:
    from moec.targets.cpu import cache_dir
    d = os.path.join(cache_dir(), "jit")
    os.makedirs(d, exist_ok=True)
    return d


@dataclass
class CompileStats:
    cache_hit: bool
    key: str
    outdir: str
    seconds: float
    verified: Optional[bool] = None
    max_abs_err: Optional[float] = None
    report: Dict[str, Any] = field(default_factory=dict)
    verification: Optional[str] = None  # how it was verified where not the plain way (substituted weights)


class CompiledModel:
    """A compiled model: call it like the original (torch tensors in -> torch tensors out, numpy in
    -> numpy out).  ``stats`` says whether the build came from the cache, where it lives, and how it
    verified; ``artifact`` is the target's loaded artifact."""

    def __init__(self, artifact, input_names: List[str], output_names: List[str], stats: CompileStats,
                 target: str):
        self.artifact = artifact
        self.input_names = input_names
        self.output_names = output_names
        self.stats = stats
        self.target = target
        ins = getattr(artifact, "manifest", {}).get("inputs", [])
        self.dynamic = any("?" in i["type"] for i in ins)
        self.static_shape = None

    def __call__(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise UserInputError(f"the compiled model takes {len(self.input_names)} input(s) "
                                 f"({', '.join(self.input_names)}), got {len(inputs)}")
        torch_in = any(_is_tensor(x) for x in inputs)
        if torch_in and hasattr(self.artifact, "call_torch") and all(_is_tensor(x) for x in inputs):
            outs = self.artifact.call_torch(inputs)  # device tensors stay on the device
        else:
            from moec.frontend.torch_import import tensor_to_numpy
            arrays = [tensor_to_numpy(x) if _is_tensor(x) else np.asarray(x) for x in inputs]
            outs = self.artifact(arrays)
            if torch_in:
                from moec.frontend.torch_import import numpy_to_tensor
                dev = next(x.device for x in inputs if _is_tensor(x))
                outs = [numpy_to_tensor(o).to(dev) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        return (f"<moec.CompiledModel target={self.target} cache_hit={self.stats.cache_hit} "
                f"dir={self.stats.outdir}>")


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "device") and hasattr(x, "dtype")


def _options_key(target: str, weights: str, group_size: int, zero_point: bool, soc: Optional[str],
                 weights_scope: str = "all") -> str:
    from moec.targets import target_for
    desc = target_for(target, soc or "native")
    return json.dumps({"target": target, "weights": weights, "group_size": group_size, "zero_point": zero_point,
                       **({"weights_scope": weights_scope} if weights_scope != "all" else {}),
                       "desc": desc.to_json()}, sort_keys=True, default=str)


def _module_tensors(model) -> list:
    """Every tensor the module's forward can read, sorted by name: parameters, buffers (the
    non-persistent ones too, which state_dict leaves out) and plain tensor attributes."""
    import torch
    out = dict(model.named_parameters(remove_duplicate=False))
    out.update(model.named_buffers(remove_duplicate=False))
    for prefix, sub in model.named_modules(remove_duplicate=False):
        for k, v in vars(sub).items():
            if isinstance(v, torch.Tensor):
                out.setdefault(f"{prefix}.{k}" if prefix else k, v)
    return sorted(out.items())


def _module_settings(model) -> str:
    """The plain settings the module's forward reads besides its code and tensors: every submodule's
    attributes of simple types (``self.top_k = 2``) and its ``config`` (transformers' flags such as
    ``norm_topk_prob``, ``use_cache`` and the experts / attention implementations), as text."""
    simple = (bool, int, float, str, type(None))

    def plain(v):
        return isinstance(v, simple) or (isinstance(v, (tuple, list)) and all(isinstance(e, simple) for e in v))
    parts, configs = [], {}
    for prefix, sub in model.named_modules(remove_duplicate=False):
        parts.append((prefix, sorted((k, repr(v)) for k, v in vars(sub).items() if plain(v))))
        c = getattr(sub, "config", None)
        if c is not None and id(c) not in configs:
            try:
                d = c.to_dict() if hasattr(c, "to_dict") else dict(vars(c))
            except Exception:  # noqa: BLE001 - a config that cannot list itself: its repr
                d = {"repr": repr(c)}
            for k in ("_experts_implementation", "_attn_implementation", "use_cache"):
                d[k] = getattr(c, k, None)
            configs[id(c)] = (prefix, sorted((str(k), repr(v)) for k, v in d.items()))
    return repr((parts, sorted(configs.values())))


def _module_code_digest(model) -> Optional[str]:
    """Source of the module's class and of every submodule's class (their files), hashed; None when
    some class has no source file (then the caller hashes the exported graph instead)."""
    import inspect
    if getattr(model, "_moec_fn", None) is not None:
        return None  # a function wrapped by moec.jit: its code and captured modules are not the class's
    h = hashlib.sha256()
    seen = set()
    for sub in model.modules():
        cls = type(sub)
        if cls in seen:
            continue
        seen.add(cls)
        h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        try:
            src_file = inspect.getsourcefile(cls)
            if src_file and src_file not in seen:
                seen.add(src_file)
                with open(src_file, "rb") as f:
                    h.update(f.read())
        except (TypeError, OSError):
            return None
        if not src_file:
            return None
    return h.hexdigest()


def _seal(outdir: str, key: str, verified) -> None:
    """Finish a build folder as a cache entry: the manifest lists every file (COMPLETE included: every file in
    the entry is moec's), then COMPLETE gets the sha256 of every file (cache_store.seal), checked on each hit."""
    from moec.artifact_dir import record_files
    from moec.targets import cache_store
    with open(os.path.join(outdir, cache_store.MARKER), "w") as f:
        f.write("{}")  # (a placeholder, so that the manifest's list names it)
    record_files(outdir)
    cache_store.seal(outdir, key=key, verified=verified)


def _publish(tmp: str, final: str) -> bool:
    """Atomically move a sealed build into place; False if another process published a (checked) entry first
    (the loser uses the winner's).  A damaged entry in the way is discarded, never "Directory not empty"."""
    from moec.targets import cache_store
    return cache_store.publish(tmp, final)


def _entry_json(d: str) -> dict:
    """report.json of a cache entry, after checking the types of what moec reads from it and from
    manifest.json (cache contents are untrusted: a wrong type is a damaged entry, rebuilt)."""
    from moec.targets.cache_store import Damaged
    docs = {}
    for name in ("report.json", "manifest.json"):
        try:
            with open(os.path.join(d, name), "rb") as f:
                docs[name] = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise Damaged(f"{name} is unreadable ({type(e).__name__})") from None
    rep, man = docs["report.json"], docs["manifest.json"]
    num = (int, float)
    if (not isinstance(rep, dict) or rep.get("verified") not in (True, False, None)
            or not (rep.get("max_abs_err") is None or (isinstance(rep["max_abs_err"], num)
                                                      and not isinstance(rep["max_abs_err"], bool)))):
        raise Damaged("report.json has unexpected types")
    if not isinstance(man, dict) or not all(
            isinstance(man.get(k), list) and all(isinstance(x, dict) and isinstance(x.get("name"), str)
                                                 and isinstance(x.get("type"), str) for x in man[k])
            for k in ("inputs", "outputs")):
        raise Damaged("manifest.json has unexpected types")
    return rep


def compile(model: Union["torch.nn.Module", str, os.PathLike, Any],  # noqa: A001,F821 (torch is optional)
            example_inputs: Optional[Sequence] = None, *, target: str = "cpu", weights: str = "f32",
            verify: bool = True, soc: Optional[str] = None, group_size: int = 64, zero_point: bool = False,
            dynamic_dims: Optional[dict] = None, cache: bool = True,
            experts_implementation: Optional[str] = "auto", weights_scope: str = "all",
            expert_parallel: int = 0, cuda_graphs: bool = False, activations: str = "none") -> CompiledModel:
    """Compile a PyTorch module or an ONNX model with moec and return a callable.

    Args:
        model: a ``torch.nn.Module`` (imported with torch.export: needs ``example_inputs``), a path
            to an ``.onnx`` file, or an ``onnx.ModelProto``.
        example_inputs: for modules, a tuple of example tensors (or numpy arrays).  Dimension 0 of
            every input of rank >= 2 is the dynamic token dimension unless ``dynamic_dims`` says
            otherwise, so one compile serves every token count.  For ONNX models (optional): inputs
            to verify with, a dict {input name: array}, a sequence of arrays in the model's input
            order, or a list of such dicts; they are tried besides moec's generated inputs, and
            instead of them where moec cannot derive an integer input's valid values (an integer
            divisor computed from an input, a run-time reshape target, ...).
        target: "cpu" (C, built with the system compiler), "triton" (a CUDA GPU, or Triton's
            interpreter without one) or "ascend" (AscendC, run on moec's emulator here).
        weights: storage of the routed experts' weights: "f32" (as the model), "bf16", "int8" or
            "int4" (see ``group_size`` / ``zero_point``), "w8a8" (int8 weights and dynamic per-token int8
            activations, cpu target) or "fp8" (float8 e4m3 weights with per-channel scales, triton target
            on a GPU with fp8 -- sm_89+ -- or the interpreter); quantised builds are checked against their
            dequantised reference and their quantisation error is bounded.
        activations: "none" (the default: the expert GEMMs' inputs as the model), or "int8" with
            weights="int8" (= "w8a8"), "int8" with weights="int4" (= "w4a8": a scale per row and
            int4 group, integer dot products; cpu target), "fp8" with weights="fp8" (per-token e4m3 activations, fp8 x fp8
            dots with f32 accumulation; triton target), or "bf16" with weights="int8" / "int4" (= "int8_bf16" /
            "int4_bf16": each GEMM input rounded to bf16, the weights exact, f32 sums per scale group times the
            scale: bf16 arithmetic; cpu target).
        verify: compare the compiled code with the original on seeded inputs at several token
            counts (the module's own eager output, or onnxruntime for ONNX) and raise
            ``VerificationError`` on a mismatch.
        soc: for target "ascend", the SoC (Ascend910B1..B4, Ascend910_93; default Ascend910B2).
        group_size: int4 weights per scale group along the reduction (0 = whole row).
        zero_point: int4 with zero points (asymmetric) instead of symmetric.
        weights_scope: "all" (``weights`` applies to every linear layer where the target has dense kernels
            for it: attention projections, output layer, dense MLPs; the router, embeddings and norms keep
            the model's type) or "experts" (the routed experts only).
        dynamic_dims: for modules, {input index: {dim: symbol}} to override the dynamic dims.
        cache: reuse / store the artifact in the on-disk cache (``$MOEC_CACHE_DIR/jit``).
        experts_implementation: for modules holding Hugging Face ``transformers`` experts (classes with
            ``config._experts_implementation``): the implementation they are exported with.  "auto" (the
            default): "batched_mm" and "grouped_mm" as they are set (both recognised as MoE layers),
            transformers' default "eager" (a loop over a data-dependent list of experts, which
            torch.export cannot trace) as "batched_mm", and "grouped_mm" layers that are not recognised
            as "batched_mm" when that recognises more (moec/hf_experts.py).  A name exports every
            experts module with it; ``None`` exports them as they are.  The build is verified against
            the module as it is set (its own implementation); the report's ``experts_implementation``
            says what was replaced, and why where a fallback did it.  transformers models are exported
            and verified with ``use_cache=False`` (a CausalLM returns its logits).  Where torch.export stops on
            a data-dependent loop or guard in the module's own code (experts classes with no other
            implementation, e.g. dbrx's and switch_transformers' loops over the experts hit) or on a
            ``Module.to`` inside forward, the module is traced instead (moec/frontend/torch_trace.py: an example
            hitting every expert, recognised in full); a traced build is always verified, whatever ``verify``
            says, and ``stats.report["export"]`` says what was done.

        expert_parallel: N > 0 spreads the experts over the N ranks of the initialised torch.distributed
            process group (call on every rank); returns each rank's callable for its own tokens
            (compiler/ep.py: ``EPRank``, outputs as torch tensors).
        cuda_graphs: target "triton" on a CUDA GPU: each input signature (shapes, dtypes) is captured once
            as one CUDA graph of the whole launcher and replayed (decode: no launch overhead per kernel;
            codegen/triton/graphs.py).  Under Triton's interpreter, or where the launcher runs ops on the
            host, nothing changes; ``stats.report["cuda_graphs"]`` says "on" or why not.

    Returns:
        A :class:`CompiledModel`; ``.stats.cache_hit`` tells whether this was a cache hit.
    """
    import time
    t0 = time.perf_counter()
    from moec.passes.quantize import MODES as WEIGHT_MODES, mode_for
    if weights not in WEIGHT_MODES:
        raise UserInputError(f"weights='{weights}': choose {', '.join(WEIGHT_MODES)}")
    try:  # weights="fp8", activations="fp8": the fp8a8 mode (passes/quantize.py)
        weights = mode_for(weights, activations)
    except ValueError as e:
        raise UserInputError(str(e).replace("--weights ", "weights=").replace("--activations ", "activations=")) \
            from None
    if cuda_graphs and (target != "triton" or expert_parallel):
        raise UserInputError(f"cuda_graphs=True is for target='triton' without expert_parallel (not {target!r})")
    if expert_parallel:
        from moec.ep import compile_api
        return compile_api(model, example_inputs, expert_parallel, target=target, weights=weights, verify=verify,
                           dynamic_dims=dynamic_dims, experts_implementation=experts_implementation)
    from moec.targets import backend_class
    backend_class(target).prepare()  # (e.g. Triton's interpreter chosen before torch.export imports triton)
    opts_key = _options_key(target, weights, group_size, zero_point, soc, weights_scope)
    is_module = hasattr(model, "forward") and hasattr(model, "state_dict")
    h = hashlib.sha256()
    m = None
    traced = None  # what the trace front end did, where torch.export could not export the module
    if is_module:
        if example_inputs is None:
            raise UserInputError("moec.compile(module) needs example_inputs (a tuple of tensors) for torch.export")
        import torch
        ex = tuple(x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)) for x in example_inputs)
        # the graph is a function of the module's code, its weights and the input signature: hash those
        # (cheap) instead of exporting first; the export runs only on a miss
        code = _module_code_digest(model)
        if code is None:  # no source (a wrapped function, closures): hash the exported graph itself
            from moec.ir import print_module
            m, traced = _import(model, ex, dynamic_dims, experts_implementation)
            h.update(print_module(m).encode())
            h.update(m.weights.digest().encode())
        else:
            h.update(code.encode())
        for k, v in _module_tensors(model):
            h.update(k.encode())
            t = v.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # (0-d: no view)
        h.update(_module_settings(model).encode())
        h.update(repr(JitFunction.signature(ex)).encode() + repr(dynamic_dims).encode())
        h.update(repr(experts_implementation).encode())
        proto, name = None, type(model).__name__
        m = m if code is None else None
    else:
        from moec.driver import load_model_proto
        proto, name = load_model_proto(model)
        m = None
        ex = None
        h.update(proto.SerializeToString())
        onnx_inputs = _onnx_example_sets(example_inputs)
        for s in onnx_inputs:  # (verification depends on them: part of the key)
            for k, v in (sorted(s.items(), key=lambda kv: str(kv[0])) if isinstance(s, dict) else enumerate(s)):
                a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                h.update(repr((k, str(a.dtype), a.shape)).encode() + (a.tobytes() if not a.dtype.hasobject else b"?"))
    h.update(opts_key.encode())
    h.update(_compiler_hash().encode())
    h.update(str(verify).encode())
    key = h.hexdigest()[:32]
    root = jit_cache_dir()
    final = os.path.join(root, key)
    from moec.targets import backend as target_backend
    from moec.targets import cache_store
    backend = target_backend(target, soc or "native")
    hit = False
    if cache and os.path.lexists(final):
        # a hit only when the whole entry checks: every file's sha256 (a damaged .so is never loaded; weights
        # edited in place are not reported as a verified hit), its JSON's types, and the load itself
        try:
            cache_store.check(final, key)
            report = _entry_json(final)
            art = backend.load(final, threads=2)
            hit = True
        except cache_store.Damaged as e:
            cache_store.discard(final, str(e))
    if not hit:
        cache_store.clean_stale(root)  # build folders of killed compiles
        if is_module and m is None:
            m, traced = _import(model, ex, dynamic_dims, experts_implementation)
        tmp = cache_store.new_tmp(root, key)
        outdir = os.path.join(tmp, "a")
        try:
            if traced is None:
                report = _build(m, proto, name, outdir, ex if is_module else onnx_inputs, model if is_module else None,
                                target, weights, verify, soc, group_size, zero_point, weights_scope,
                                importer=lambda mod: _import(mod, ex, dynamic_dims, experts_implementation)[0])
            else:
                report = _build_traced(m, traced, model, name, outdir, ex, dynamic_dims, target, weights, soc,
                                       group_size, zero_point, weights_scope)
            _seal(outdir, key, report.get("verified"))
            if cache:
                _publish(outdir, final)
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                final = outdir
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        report = _entry_json(final)
        art = backend.load(final, threads=2)
    stats = CompileStats(cache_hit=bool(hit), key=key, outdir=final, seconds=time.perf_counter() - t0,
                         verified=report.get("verified"), max_abs_err=report.get("max_abs_err"), report=report,
                         verification=report.get("verification"))
    if report.get("substituted_weights") and report.get("verified"):
        warnings.warn(f"moec.compile('{report.get('model')}'): {report['verification']}", stacklevel=3)
    cm = CompiledModel(art, art.input_names, art.output_names, stats, target)
    if cuda_graphs:
        why = art.enable_cuda_graphs()
        stats.report = dict(stats.report, cuda_graphs="on" if why is None else f"off: {why}")
    if ex:
        cm.static_shape = tuple(ex[0].shape)
    return cm


def _import(model, ex, dynamic_dims, experts_implementation):
    """(moec Module, None) from torch.export (moec.hf_experts.import_module); where torch.export stops on a
    data-dependent loop or guard in the module's own code (transformers' eager experts loop over the experts hit,
    in classes with no other experts implementation: switch_transformers, nllb_moe, dbrx), (Module, what was
    done) from the trace front end (moec.frontend.torch_trace: an example hitting every expert, recognised in
    full, or else a build that verification decides)."""
    from moec.errors import UnsupportedError
    from moec.frontend.torch_trace import import_traced, stops_on_data
    from moec.hf_experts import import_module
    with warnings.catch_warnings(record=True) as said:  # (said again only if torch.export's result is used: its
        warnings.simplefilter("always")                # "compiling for the example shapes only" is not the case
        try:                                           # where the trace takes over)
            m = import_module(model, ex, dynamic_dims, experts_implementation)
        except UnsupportedError as e:
            from moec.frontend.torch_import import _transformers_experts
            switchable = experts_implementation is None and any(
                (x.config._experts_implementation or "eager") == "eager" for x in _transformers_experts(model))
            if not stops_on_data(e) or switchable:  # (eager transformers experts kept as set on request: the
                raise                               # error says the way out, batched_mm)
            why = str(e)
            m = None
    if m is not None:
        for w in said:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return m, None
    m, info = import_traced(model, ex, dynamic_dims, type(model).__name__)
    info["torch_export_stopped"] = why[:400]
    return m, info


def _build_traced(m, traced, model, name, outdir, ex, dynamic_dims, target, weights, soc, group_size, zero_point,
                  weights_scope) -> dict:
    """_build of a traced module, always verified (a trace is the module's function only where its example's
    data-dependent choices hold: verification at several token counts is what shows it is not specialised);
    a dynamic-dims build that fails verification is traced again at the example's static shapes (a size the
    trace read into Python, e.g. a capacity from the token count) and verified there."""
    from moec.frontend.torch_trace import import_traced
    from moec.verify import write_report

    def build(mm, info, out):
        static = info["dims"] == "static"
        r = _build(mm, None, name, out, ex, model, target, weights, True, soc, group_size, zero_point, weights_scope,
                   importer=lambda mod: import_traced(mod, ex, dynamic_dims, name, static)[0],
                   frontend=info["frontend"])
        if not static:
            info["checked_at"] = _check_larger(out, info)
        r["export"] = info
        write_report(out, r)
        return r

    def _check_larger(out, info):
        """The dynamic build against the module at the trace examples' larger token counts too (a value the
        trace froze from its example's size -- NLLB-MoE's capacity ceil(fraction x tokens) -- shows only past
        the verification's few tokens); a VerificationError where it differs."""
        from moec.frontend.torch_trace import examples_like
        from moec.targets import backend as target_backend
        from moec.verify import verify_against_module
        art = target_backend(target, soc or "native").load(out, threads=2)
        at = []
        for cand in examples_like(ex, dynamic_dims)[:2]:
            shapes = [tuple(x.shape) if hasattr(x, "shape") else () for x in cand]
            res = verify_against_module(art, model, cand, weights, name, target, shapes)
            if res.get("no_oracle"):
                break
            if not res.get("verified"):
                raise VerificationError(f"verification FAILED for '{name}' on target {target}: the traced build at "
                                        f"the trace examples' token counts: {res.get('failure')}")
            at.append(shapes)
        return at
    try:
        return build(m, traced, outdir)
    except VerificationError as e:
        if traced["dims"] != "dynamic":
            raise
        first = str(e).splitlines()[0][:300]
    shutil.rmtree(outdir, ignore_errors=True)
    ms, info = import_traced(model, ex, dynamic_dims, name, static=True)
    info["torch_export_stopped"] = traced.get("torch_export_stopped")
    info["dynamic_dims_failed"] = first
    warnings.warn(f"moec: model '{name}': its trace with dynamic token dims did not verify ({first[:160]}); "
                  "compiled for the example shapes only", stacklevel=3)
    return build(ms, info, outdir)


def _onnx_example_sets(example_inputs) -> list:
    """``example_inputs`` given with an ONNX model as a list of input sets (each a dict name -> array or a
    sequence in input order; checked against the model by the driver)."""
    if example_inputs is None:
        return []
    if isinstance(example_inputs, dict):
        return [example_inputs]
    if isinstance(example_inputs, (list, tuple)) and example_inputs and \
            all(isinstance(s, dict) for s in example_inputs):
        return list(example_inputs)
    if isinstance(example_inputs, (list, tuple)):
        return [list(example_inputs)]
    raise UserInputError("example_inputs for an ONNX model: a dict {input name: array}, a sequence of arrays in "
                         "the model's input order, or a list of such dicts")


def _build(m, proto, name, outdir, example_inputs, module, target, weights, verify, soc, group_size,
           zero_point, weights_scope="all", importer=None, frontend="torch.export") -> dict:
    from moec.driver import CompileOptions, compile_onnx
    arch = soc or "native"
    if proto is not None:
        r = compile_onnx(proto, outdir, CompileOptions(target=target, arch=arch, verify=verify, weights=weights,
                                                       group_size=group_size, zero_point=zero_point, force=True,
                                                       weights_scope=weights_scope,
                                                       inputs=list(example_inputs or [])))
        return r.report
    from moec.driver import compile_module
    from moec.verify import verify_module_or_substitute, write_report
    shapes = [tuple(a.type.shape) for a in m.main.args]
    opts = CompileOptions(target=target, arch=arch, verify=verify, weights=weights, group_size=group_size,
                          zero_point=zero_point, force=True, weights_scope=weights_scope)

    def oracle(art, built, _ref):  # the module's own eager output (its dequantised weights for quantised builds)
        # (or, where its own weights leave nothing to verify, the same pipeline on substituted finite weights)
        import dataclasses
        import tempfile

        from moec.targets import backend as target_backend
        with tempfile.TemporaryDirectory(prefix="moec-twin-") as d:
            def build_copy(twin):  # the same import and pipeline for a copy of the module, built unverified
                r = compile_module(importer(twin), name, os.path.join(d, "a"), dataclasses.replace(opts, verify=False),
                                   head={"frontend": frontend})
                return target_backend(target, arch).load(r.outdir, threads=2), r.module
            return verify_module_or_substitute(art, built, module, example_inputs, weights, name, target, shapes,
                                               build_copy)

    r = compile_module(m, name, outdir, opts, oracle=oracle, head={"frontend": frontend})
    report = r.report
    if m.attrs.get("moec.experts_implementation"):
        report["experts_implementation"] = json.loads(m.attrs["moec.experts_implementation"])
        write_report(outdir, report)
    return report


def jit(fn: Optional[Callable] = None, *, target: str = "cpu", weights: str = "f32", verify: bool = True,
        soc: Optional[str] = None, **kw):
    """Decorator: compile ``fn`` (an ``nn.Module`` or a function of tensors) with moec on first call.

    One compile per *input signature* (dtypes, ranks and the non-token dims; the token dimension is
    dynamic, so a new batch size does not recompile).  A call with a new signature compiles again
    and says so once with a ``UserWarning``.  Options as for :func:`compile`.
    Usage: ``@moec.jit(target="cpu")`` on a function, or ``moec.jit(my_module)``.
    """
    def wrap(f):
        return JitFunction(f, dict(target=target, weights=weights, verify=verify, soc=soc, **kw))
    return wrap(fn) if fn is not None else wrap


class JitFunction:
    def __init__(self, f, options: dict):
        self.f = f
        self.options = options
        self.compiled: Dict[Tuple, CompiledModel] = {}
        self.recompiles = 0
        functools.update_wrapper(self, f, updated=())

    def _module(self, n_args: int):
        import torch
        f = self.f
        if isinstance(f, torch.nn.Module):
            return f
        # torch.export needs a forward with named positional parameters (not *args)
        names = ", ".join(f"a{i}" for i in range(n_args))
        ns: Dict[str, Any] = {"f": f}
        exec(f"def forward(self, {names}):\n    return f({names})\n", ns)
        mod_cls = type(getattr(f, "__name__", "fn"), (torch.nn.Module,), {"forward": ns["forward"]})
        w = mod_cls()
        w._moec_fn = f  # (the cache key then hashes the exported graph: the function's code and whatever it
        return w        #  closes over are not in the wrapper's class source or state_dict)

    @staticmethod
    def signature(args) -> Tuple:
        sig = []
        for a in args:
            shape = tuple(a.shape)
            dt = str(a.dtype)
            sig.append((dt, len(shape), shape[1:] if len(shape) >= 2 else shape))
        return tuple(sig)

    def __call__(self, *args):
        sig = self.signature(args)
        cm = self.compiled.get(sig)
        if cm is not None and not cm.dynamic and tuple(args[0].shape) != cm.static_shape:
            sig = sig + (tuple(args[0].shape),)  # compiled with static shapes: key on the full shape
            cm = self.compiled.get(sig)
        if cm is None:
            if self.compiled:
                self.recompiles += 1
                warnings.warn(f"moec.jit: recompiling {getattr(self.f, '__name__', type(self.f).__name__)} for a "
                              f"new input signature {sig} (compiled before: {list(self.compiled)})", stacklevel=2)
            cm = compile(self._module(len(args)), tuple(args), **self.options)
            self.compiled[sig] = cm
        return cm(*args)


__all__ = ["compile", "jit", "CompiledModel", "JitFunction", "jit_cache_dir"]

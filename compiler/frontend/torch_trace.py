"""moec.compile(module)'s second PyTorch front end: torch.jit.trace (through the TorchScript ONNX exporter), for
modules torch.export cannot export because their forward loops over a data-dependent list.

transformers' eager experts loop ``for expert_idx in expert_hit`` (``expert_hit = (mask.sum(...) > 0).nonzero()``,
the experts that received a token) has a trip count known only at run time, and several classes pick the expert by
a Python string of the tensor value (``self[f"expert_{expert_idx[0]}"]``).  torch.export can trace neither (a
guard on an unbacked size: "Could not guard on data-dependent expression"), in strict or non-strict mode; where
transformers offers other experts implementations moec exports batched_mm instead (moec.hf_experts), but the
classes of switch_transformers, nllb_moe and dbrx have no other implementation.  (switch_transformers' and
nllb_moe's routers also reassign ``self.classifier = self.classifier.to(dtype)`` inside forward: non-strict
torch.export holds the parameters as fake tensors, which ``Module._apply`` swaps with ``torch.utils.swap_tensors``,
refused because the exporter keeps a weak reference to them -- "Couldn't swap Linear.weight"; strict export gets
past the ``.to`` but stops at the loop.)

A trace runs the forward on real tensors and records the ops it ran: the loop becomes one copy of its body per
expert the example hit, each reading its row of ``expert_hit`` at run time.  That graph is the module's function
only on inputs that hit the same experts, so:

1. the trace's example must hit every expert: moec traces seeded examples of growing token counts (TRACE_TOKENS;
   the user's example's dtype, non-token dims and spread) and keeps the first whose graph recognize-moe
   recognises in full -- recognition feeds chosen expert ids through the router and proves each expert's token
   set, and replaces the loop by moe.route / moe.experts, exact for any routing;
2. where no example is recognised, the graph is compiled as it is, from the user's own example, and
   verification against the module's eager output (always on for a traced build, at several token counts)
   decides: a build that is right only on its example's routing fails there.  A trace that also read a size
   into Python (nllb_moe's capacity ``ceil(fraction * tokens)``) is right only at its example's shape: when the
   build with dynamic token dims fails verification, moec traces again with static dims (the example's
   shapes), as torch.export's own fallback does, and says so.

Nothing of the module is patched; the trace is of the module as the user runs it.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from moec.errors import UnsupportedError

OPSET = 18
# token counts of the examples traced (batch x sequence where the input has two token dims)
TRACE_TOKENS = ((4, 16), (4, 64), (8, 128))

# what torch.export says when the forward branches or loops on a value known only at run time
_DATA_DEPENDENT = ("data-dependent", "GuardOnDataDependentSymNode", "Could not extract specialized integer",
                   "Couldn't swap", "Cannot swap")


def stops_on_data(err: BaseException) -> bool:
    """Whether a torch.export failure is one the trace front end can get past: a guard or a loop on a
    data-dependent value, or a module converting its own parameters inside forward."""
    return any(s in str(err) for s in _DATA_DEPENDENT)


def _token_dims(example_inputs, dynamic_dims) -> dict:
    """{input index: {dim: symbol}}: as torch_import's default (dim 0 of the rank >= 2 inputs sharing the first's
    size) unless given."""
    import torch
    if dynamic_dims is not None:
        return {int(i): dict(d) for i, d in dynamic_dims.items() if d}
    t0 = next((x.shape[0] for x in example_inputs if isinstance(x, torch.Tensor) and x.dim() >= 2), None)
    return {i: {0: "T"} for i, x in enumerate(example_inputs)
            if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == t0 and t0 > 1}


def _examples(example_inputs, dims) -> List[tuple]:
    """Seeded examples with more tokens than the user's: each token dim resized (two token dims: batch x seq as
    TRACE_TOKENS; one: their product), values drawn like the user's (floats: normal with its mean and spread;
    integers: uniform over its range)."""
    import torch
    out = []
    for b, s in TRACE_TOKENS:
        g = torch.Generator().manual_seed(b * 1000 + s)
        xs = []
        for i, x in enumerate(example_inputs):
            d = dims.get(i) or {}
            if not d or not isinstance(x, torch.Tensor):
                xs.append(x)
                continue
            shape = list(x.shape)
            ax = sorted(d)
            if len(ax) >= 2:
                shape[ax[0]], shape[ax[1]] = b, s
            else:
                shape[ax[0]] = b * s
            if x.is_floating_point():
                xf = x.detach().float()
                std = float(xf.std()) if xf.numel() > 1 else 1.0
                y = torch.randn(shape, generator=g) * (std if np.isfinite(std) and std > 0 else 1.0) + float(xf.mean())
                xs.append(y.to(x.dtype))
            elif x.dtype == torch.bool:
                xs.append(torch.rand(shape, generator=g) < 0.5)
            else:
                lo, hi = int(x.min()), int(x.max())
                xs.append(torch.randint(lo, hi + 1, shape, generator=g, dtype=x.dtype))
        out.append(tuple(xs))
    return out


def _symbolics():
    """ONNX symbolics the TorchScript exporter lacks or gets wrong for ops transformers' code runs, registered for
    the duration of moec's own trace through torch.onnx's public registry (removed afterwards: the user's other
    exports are untouched):

    - ``aten::diff`` (none: masking_utils' ``find_packed_sequence_indices`` runs ``torch.diff(position_ids,
      prepend=...)`` in every CausalLM's mask): the Concat of prepend / self / append along ``dim``, then ``n``
      times ``y[1:] - y[:-1]`` along it;
    - ``aten::index_add`` (torch's writes a ScatterND that keeps one of several rows sent to the same index, and
      refuses duplicated constant indices: "does not support ... duplicated values in 'index'"; index_add_ adds
      them all -- NLLB-MoE's experts loop sends a token to class 0 E - 1 times): ScatterND with reduction "add"
      (opset 16+) of ``alpha * source`` at the indices, along ``dim`` moved first."""
    import torch
    from torch.onnx import symbolic_helper as sh

    def c(g, v):
        return g.op("Constant", value_t=torch.tensor([v], dtype=torch.int64))

    def diff(g, x, n, dim, prepend, append):
        n, dim = sh._maybe_get_const(n, "i"), sh._maybe_get_const(dim, "i")
        parts = [v for v in (prepend, x, append) if not sh._is_none(v)]
        y = g.op("Concat", *parts, axis_i=dim) if len(parts) > 1 else x
        for _ in range(int(n)):
            y = g.op("Sub", g.op("Slice", y, c(g, 1), c(g, 2 ** 62), c(g, dim)),
                     g.op("Slice", y, c(g, 0), c(g, -1), c(g, dim)))
        return y

    def index_add(g, x, dim, index, source, alpha=None):
        dim = sh._maybe_get_const(dim, "i")
        rank = sh._get_tensor_rank(x)
        if rank is None:
            return sh._unimplemented("index_add", "input of unknown rank")
        dim = dim % rank
        a = sh._maybe_get_const(alpha, "f") if alpha is not None and not sh._is_none(alpha) else 1
        if not (isinstance(a, (int, float)) and a == 1):
            source = g.op("Mul", source, g.op("CastLike", alpha, source))
        perm = [dim] + [i for i in range(rank) if i != dim]
        inv = [perm.index(i) for i in range(rank)]
        xt = g.op("Transpose", x, perm_i=perm) if dim else x
        st = g.op("Transpose", source, perm_i=perm) if dim else source
        idx = g.op("Unsqueeze", index, c(g, -1))
        y = g.op("ScatterND", xt, idx, st, reduction_s="add")
        return g.op("Transpose", y, perm_i=inv) if dim else y
    return {"aten::diff": diff, "aten::index_add": index_add}


@contextlib.contextmanager
def _registered_symbolics(opset: int):
    import torch
    syms = _symbolics()
    for name, fn in syms.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in syms:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def examples_like(example_inputs, dynamic_dims) -> List[tuple]:
    """The seeded examples the trace front end tries (TRACE_TOKENS), for inputs like ``example_inputs``."""
    ex = tuple(example_inputs)
    return _examples(ex, _token_dims(ex, dynamic_dims))


def _trace_to_onnx(module, example_inputs, dims, name):
    """The TorchScript ONNX export of ``module`` at ``example_inputs`` (input i's dims ``dims[i]`` dynamic),
    imported into a moec Module."""
    import onnx
    import torch
    from moec.frontend.onnx_import import import_model
    from moec.frontend.torch_import import _flat_output_module, without_kv_cache
    names = [f"input{i}" for i in range(len(example_inputs))]
    axes = {names[i]: {int(a): str(sym) for a, sym in d.items()} for i, d in dims.items()}
    with tempfile.TemporaryDirectory(prefix="moec-trace-") as td:
        path = os.path.join(td, "m.onnx")
        try:
            with without_kv_cache(module), _registered_symbolics(OPSET), warnings.catch_warnings(), \
                    contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(_flat_output_module(module, len(example_inputs)).eval(), tuple(example_inputs),
                                  path, input_names=names, dynamo=False, dynamic_axes=axes or None, opset_version=OPSET)
            proto = onnx.load(path)
        except Exception as e:  # noqa: BLE001 - the trace failing is the user's model's
            raise UnsupportedError(f"model '{name}': torch.jit.trace (TorchScript ONNX export) failed too: "
                                   f"{str(e).splitlines()[0][:300]}") from None
    m = import_model(proto)
    m.attrs["moec.source"] = name
    return m


def _recognised_in_full(m) -> int:
    """recognize-moe (after canonicalize) on ``m`` in place: the number of layers recognised when every top-k /
    arg-max root was recognised (or absorbed into a layer), else 0."""
    from moec.hf_experts import _recognised_layers
    from moec.passes.recognition_trace import recognition_of
    n = _recognised_layers(m)
    stops = [r for r in recognition_of(m) if not r.get("recognised") and r.get("step") != "absorbed"]
    return 0 if stops else n


def import_traced(module, example_inputs: Sequence, dynamic_dims: Optional[dict], name: str,
                  static: bool = False) -> Tuple["object", dict]:
    """The module traced as the module docstring says: (moec Module, what was done, for report.json)."""
    ex = tuple(example_inputs)
    dims = {} if static else _token_dims(ex, dynamic_dims)
    info = {"frontend": "torch.jit.trace (TorchScript ONNX export)", "dims": "static" if not dims else "dynamic"}
    if dims:
        for cand in _examples(ex, dims):
            try:
                m = _trace_to_onnx(module, cand, dims, name)
            except UnsupportedError:
                break
            n = _recognised_in_full(m)
            if n:
                info["traced_at"] = [list(x.shape) for x in cand if hasattr(x, "shape")]
                info["recognised_layers"] = n
                return m, info
    m = _trace_to_onnx(module, ex, dims, name)
    info["traced_at"] = [list(x.shape) for x in ex if hasattr(x, "shape")]
    info["recognised_layers"] = 0
    return m, info


__all__ = ["import_traced", "stops_on_data", "TRACE_TOKENS"]

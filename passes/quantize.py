"""quantize-weights: store the routed experts' weights narrower (bf16, int8, int4, fp8).

For every ``moe.experts`` whose weights are constants (the weight store), replace ``w_in``/``w_out``
by quantised stacks and set ``wq`` (see ``ir/ops/moe.py`` for the formats and their reference
semantics, dequantise-then-compute).  Half (bf16/f16) activations stay half where the target's
kernels take them for the mode (``quant_half_activations`` in its description: Triton's W8A16 /
W4A16 / fp8); elsewhere x, biases and routing weights are widened to f32 around the quantised op
(exact) and its output is cast back, which is the op's f32 reference computation anyway.

* ``bf16``: round to nearest even.  Kernels widen in registers and accumulate in f32.
* ``int8``: symmetric per output channel, ``s = max|w_row| / 127``, ``q = round(w / s)``.
* ``w8a8``: int8 weights as above plus dynamic per-token int8 activations (``aq=int8``): every GEMM
  input row (the token's hidden vector, the activation between the projections) is quantised
  symmetrically at run time, ``s = max|row| / 127``, and the products are exact int32 sums (VNNI
  ``vpdpbusd`` on CPUs that have it, a portable integer loop otherwise).
* ``w4a8`` (``--weights int4 --activations int8``): int4 weights as below plus dynamic int8 activations
  with one scale per row and int4 group (``aq=int8``, ``s = max|group| / 127``): the products are exact
  int32 sums per group (nibbles x int8 codes, VNNI ``vpdpbusd``, or AVX-512BW / AVX2 ``vpmaddubsw`` where
  the build host has them, a portable integer loop otherwise), scaled by the weight and activation scales.
* ``fp8``: float8 e4m3fn (3 mantissa bits, max 448, ir/fp8.py) per output channel,
  ``s = max|w_row| / 448``, ``q = e4m3(w / s)`` rounded to nearest even and saturated, stored as uint8
  bit patterns.  Weight-only: the GEMM inputs stay f32 (the Triton kernels decode the tiles in
  registers; the triton target only -- the driver rejects it elsewhere).
* ``fp8a8`` (``--weights fp8 --activations fp8``): fp8 weights as above plus dynamic per-token e4m3
  activations (``aq=fp8``): every GEMM input row is quantised at run time, ``s = max|row| / 448``,
  ``q = e4m3(row / s)``, and the dots are fp8 x fp8 with f32 accumulation (the Triton kernels; the
  triton target only).
* ``int8_bf16`` / ``int4_bf16`` (``--weights int8|int4 --activations bf16``, ``aq=bf16``): int8 / int4
  weights as for weight-only, the GEMM inputs rounded to bf16 (nearest even) per element at run time; the
  weights enter exactly (int8 codes and int4 q - z are bf16 values), products exact, sums in f32 per scale
  group, each group's partial sum times its scale (ir/ops/moe.py) -- the arithmetic of bf16 weights
  (vdpbf16ps on AVX512_BF16 CPUs), so prefill runs at bf16 speed with int8 / int4 storage (cpu).
* ``int4``: per group of ``group`` elements along K (0 = the whole row); symmetric
  (``s = max|w| / 7.5``-ish, see below, zero point 8) or with a zero point
  (``s = (max - min) / 15``, ``z = round(-min / s)``), two values per byte, low nibble first.

Scope (``--weights-scope``): ``all`` (the default) also quantises every dense linear layer -- each
``moec.matmul`` / ``moec.gemm`` whose weight operand is a constant 2-D f32 matrix from the weight store
(attention projections, the output layer, dense MLPs) becomes a ``moec.linear_q`` (ir/ops/quant.py)
with the same formats and semantics, on targets whose description lists the mode in ``quant_dense``
(elsewhere the dense layers are kept and the record says why).  The router's matmul is kept (it
decides which experts run), as are embeddings (gathers, not matmuls) and norms.  ``experts`` quantises
the routed experts only.

Layers whose weights are already quantised in the model (com.microsoft.QMoE imported as int8/int4)
keep them and the layer record says so.  Layers whose weights are not constants, or whose K does not suit the
format (int4 needs an even K that the group size divides) are left as they are; the pass records
per layer what it chose (or why not) in the module's MoE-layer metadata, so report.json shows it.
The router stays in the model's type (it decides which experts run: quantising it changes the
routing).  With scope ``all``, ``moe.shared_experts`` (always-on FFNs) becomes linear_q projections --
a gated w_in as its gate and up rows separately -- with its activation (SwiGLU, SiLU, ReLU) and the
optional sigmoid gate as elementwise ops, the same math op by op; the gate vector [D] stays f32.
"""
from __future__ import annotations

import json
from typing import Optional, Tuple

import numpy as np

from moec.ir import DType, Module, TensorType
from moec.ir.core import ResourceRef
from moec.ir.opdef import OPS, const_value
from moec.ir.fp8 import E4M3_MAX, encode_e4m3
from moec.ir.ops.moe import dequantize_weights, pack_int4, update_moe_layer
from moec.passes.base import Pass, register_pass
from moec.passes.moe_util import layer_of

MODES = ("f32", "bf16", "int8", "int4", "w8a8", "w4a8", "fp8", "fp8a8", "int8_bf16", "int4_bf16")
# modes that quantise (or round) the GEMM inputs too: mode -> (the weights' storage wq, the activations' aq)
ACT_MODES = {"w8a8": ("int8", "int8"), "w4a8": ("int4", "int8"), "fp8a8": ("fp8", "fp8"),
             "int8_bf16": ("int8", "bf16"), "int4_bf16": ("int4", "bf16")}
ACTIVATIONS = ("none", "int8", "fp8", "bf16")


def wq_aq(mode: str) -> Tuple[str, str]:
    """(wq, aq) of the ``moe.experts`` attributes that weight mode ``mode`` sets."""
    return ACT_MODES.get(mode, (mode, "none"))


def mode_for(weights: str, activations: str = "none") -> str:
    """The weight mode of ``--weights W --activations A`` (``moec.compile(weights=, activations=)``): A
    "none" keeps W; A quantises the GEMM inputs (int8 with int8 weights -> w8a8, int8 with int4 weights
    -> w4a8, fp8 with fp8 weights -> fp8a8, bf16 with int8 / int4 weights -> int8_bf16 / int4_bf16).  ValueError (a one-line message for the user) for any other pair."""
    if activations in ("none", None):
        return weights
    for m, (wq, aq) in ACT_MODES.items():
        if (weights, activations) in ((wq, aq), (m, aq)):
            return m
    pairs = ", ".join(f"--weights {wq} --activations {aq}" for wq, aq in ACT_MODES.values())
    raise ValueError(f"--activations {activations} with --weights {weights}: quantised activations come with "
                     f"weights of the same format, int8 with int4, or bf16 with int8 / int4 ({pairs})")


# what each activation mode does to the GEMM inputs, for the report and the compile summary (``group``: the
# int4 group size, for w4a8 / int4_bf16; None: not named)
def activations_text(mode: str, group: Optional[int] = None) -> Optional[str]:
    g = "each scale group" if group is None else f"group of {group or 'the whole row'}"
    return {"w8a8": "int8, dynamic per token (symmetric, max|row| / 127)",
            "w4a8": f"int8, dynamic per token and {g} (symmetric, max|group| / 127)",
            "fp8a8": "float8 e4m3fn, dynamic per token (max|row| / 448)",
            "int8_bf16": ("bf16 (each GEMM input rounded to nearest even; exact int8 weights, f32 sums, the "
                          "per-channel scale times the f32 sum)"),
            "int4_bf16": (f"bf16 (each GEMM input rounded to nearest even; exact int4 weights q - z, f32 sums per "
                          f"{g}, each group's scale times its f32 partial sum)")}.get(mode)
SCOPES = ("all", "experts")


def quantize_int8(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """[..., N, K] f32 -> (i8 q, f32 s [..., N]) symmetric per output channel."""
    w = np.asarray(w, np.float32)
    amax = np.max(np.abs(w), axis=-1)
    s = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / s[..., None]), -127, 127).astype(np.int8)
    return q, s


def quantize_fp8(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """[..., N, K] f32 -> (ui8 e4m3fn codes q, f32 s [..., N]): per output channel, the row's largest
    magnitude maps to 448 (e4m3's largest finite value); w / s is rounded to nearest even (saturating)."""
    w = np.asarray(w, np.float32)
    amax = np.max(np.abs(w), axis=-1)
    s = np.where(amax > 0, amax / np.float32(E4M3_MAX), 1.0).astype(np.float32)
    return encode_e4m3(w / s[..., None]), s


def quantize_int4(w: np.ndarray, group: int, zero_point: bool):
    """[..., N, K] f32 -> (packed ui8 [..., N, K/2], s [..., N, K/G], z or None)."""
    w = np.asarray(w, np.float32)
    K = w.shape[-1]
    G = group or K
    g = w.reshape(w.shape[:-1] + (K // G, G))
    if zero_point:
        lo = np.minimum(g.min(axis=-1), 0.0)
        hi = np.maximum(g.max(axis=-1), 0.0)
        s = np.where(hi > lo, (hi - lo) / 15.0, 1.0).astype(np.float32)
        z = np.clip(np.rint(-lo / s), 0, 15).astype(np.float32)
        q = np.clip(np.rint(g / s[..., None]) + z[..., None], 0, 15)
    else:
        # symmetric around the implicit zero point 8: codes -8..7; scale so that max|w| maps to 7
        # for positive and -8 for negative extremes, whichever needs the larger step
        amax = np.max(np.abs(g), axis=-1)
        s = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
        z = None
        q = np.clip(np.rint(g / s[..., None]), -8, 7) + 8
    q = q.reshape(w.shape).astype(np.uint8)
    return pack_int4(q), s, z


@register_pass
class QuantizeWeights(Pass):
    name = "quantize-weights"

    def __init__(self, mode: str = "f32", group: int = 64, zero_point: bool = False,
                 half_activations: Tuple[str, ...] = (), scope: str = "all", dense_modes: Tuple[str, ...] = ()):
        if mode not in MODES:
            raise ValueError(f"unknown weight mode '{mode}' (choose from {', '.join(MODES)})")
        if group < 0 or group % 2:
            raise ValueError(f"int4 group size must be an even number >= 0 (0: whole row), got {group}")
        self.mode, self.group, self.zero_point = mode, group, zero_point
        self.half_activations = tuple(half_activations)  # modes the target runs with f16/bf16 activations
        if scope not in SCOPES:
            raise ValueError(f"unknown weight scope '{scope}' (choose from {', '.join(SCOPES)})")
        self.scope = scope
        self.dense_modes = tuple(dense_modes)  # modes the target has dense (linear_q) kernels for

    def run(self, m: Module) -> bool:
        if self.mode == "f32":
            return False
        changed = False
        for f in m.functions:
            uses = f.uses()
            for ex in list(f.ops):
                if ex.name != "moe.experts":
                    continue
                layer = layer_of(f, ex.operands[2].owner, uses) if ex.operands[2].owner is not None else None
                if ex.attrs["wq"] != "none":  # quantised in the model itself (com.microsoft.QMoE)
                    if layer:
                        update_moe_layer(m, layer, weights_requested=self.mode,
                                         weights_note=f"kept the model's own {ex.attrs['wq']} weights "
                                                      f"(already quantised; not re-quantised to {self.mode})")
                    continue
                if self.mode == "bf16" and ex.operands[0].type.dtype == DType.BF16:
                    if layer:  # (what was asked for: nothing to do)
                        update_moe_layer(m, layer, weights={"mode": "bf16", "note": "the model's weights are bf16"})
                    continue
                why = self._why_not(m, ex)
                if why:
                    if layer:
                        update_moe_layer(m, layer, weights={"mode": ex.operands[4].type.dtype.mlir, "requested": self.mode,
                                                            "skipped": why})
                    continue
                widen = ex.operands[0].type.dtype != DType.F32 and self.mode not in self.half_activations
                new, consts, info = self._quantize(m, ex, widen)
                idx = f.ops.index(ex)
                f.ops[idx:idx + 1] = consts + [new]
                out = new.results[0]
                if widen:  # back to the model's type for the rest of the graph
                    back = OPS["moec.cast"].create([out], {"to": ex.results[0].type.dtype}, ex.loc)
                    f.ops.insert(f.ops.index(new) + 1, back)
                    out = back.results[0]
                    info["activations"] = (f"{ex.operands[0].type.dtype.mlir}, widened to f32 for this target's "
                                           f"{self.mode} kernels (the output rounded back)")
                f.replace_all_uses(ex.results[0], out)
                if layer:
                    update_moe_layer(m, layer, weights=info)
                _record(m, {"scope": "experts", "layer": layer, "mode": self.mode, "tensors": 2, "bytes_before": info["bytes_before"],
                            "bytes_after": info["bytes"]})
                changed = True
        if self.scope == "all":
            changed = self._quantize_dense(m) or changed
        return changed

    # -- dense linear layers -----------------------------------------------------------------------
    def _quantize_dense(self, m: Module) -> bool:
        changed = False
        kept: dict = {}
        for f in m.functions:
            shared: dict = {}  # (weight key, transposed) -> the quantised constants, for every user in f
            uses = f.uses()
            for o in list(f.ops):
                if o.name not in ("moec.matmul", "moec.gemm"):
                    continue
                plan = _dense_plan(m, o)
                if plan is None:
                    continue  # no constant weight: a product of two activations
                why = plan.get("why")
                if why is None and _feeds_router(o.results[0], uses):
                    why = "the router's matmul stays in the model's type (it decides which experts run)"
                if why is None and self.mode not in self.dense_modes:
                    why = (f"this target has no dense {self.mode} kernels" if self.dense_modes else
                           "this target has no dense quantised kernels")
                if why is None and wq_aq(self.mode)[0] == "int4":
                    K = plan["K"]
                    if K % 2 or (self.group and K % self.group):
                        why = f"int4 needs K ({K}) even and divisible by the group size ({self.group})"
                if why is not None:
                    kept[why] = kept.get(why, 0) + 1
                    continue
                if o.name == "moec.matmul":  # MatMul + Add of a bias [N]: the bias joins the layer
                    plan["fold_add"] = _bias_add(f, o, plan["N"], uses)
                    if plan["fold_add"] is not None:
                        plan["bias"] = plan["fold_add"][1]
                self._rewrite_dense(m, f, o, plan, shared)
                changed = True
        for f in m.functions:
            for o in list(f.ops):
                if o.name != "moe.shared_experts":
                    continue
                why = self._why_not_shared(m, o)
                if why is not None:
                    kept[why] = kept.get(why, 0) + 1
                    continue
                self._rewrite_shared(m, f, o)
                changed = True
        if kept or "moec.dense_kept" in m.attrs:
            m.attrs["moec.dense_kept"] = [json.dumps({"why": k, "layers": n}, sort_keys=True)
                                          for k, n in sorted(kept.items())]
        return changed

    def _rewrite_dense(self, m: Module, f, o, plan: dict, shared: dict) -> None:
        key = (plan["key"], plan["trans"])
        wmode = wq_aq(self.mode)[0]
        ent = shared.get(key)
        new_tensor = ent is None
        if new_tensor:
            w = np.asarray(m.weights[plan["key"]])
            before = int(w.nbytes)
            w = np.asarray(w, np.float32)
            w = w if plan["trans"] else w.T  # rows = output features [N, K]
            consts, info = self._quantised_consts(m, w, f"dense_{plan['key']}_{wmode}")
            ent = shared[key] = {"consts": consts, "before": before, "after": info["after"],
                                 "summary": {"rel_rms": info["rel_rms"]}}
        consts = ent["consts"]
        x = o.operands[0]
        pre = [c for c in consts if new_tensor]
        if x.type.dtype != DType.F32:
            c = OPS["moec.cast"].create([x], {"to": DType.F32}, o.loc)
            pre.append(c)
            x = c.results[0]
        bias = plan.get("bias")
        if bias is not None and bias.type.dtype != DType.F32:
            c = OPS["moec.cast"].create([bias], {"to": DType.F32}, o.loc)
            pre.append(c)
            bias = c.results[0]
        attrs = {"wq": wmode, "aq": wq_aq(self.mode)[1],
                 "wq_group": self.group if wmode == "int4" else 0,
                 "wq_zp": bool(wmode == "int4" and self.zero_point), "has_bias": bias is not None}
        ops = [x] + [c.results[0] for c in consts] + ([bias] if bias is not None else [])
        new = OPS["moec.linear_q"].create(ops, attrs, o.loc)
        out = new.results[0]
        post = []
        if o.results[0].type.dtype != DType.F32:
            back = OPS["moec.cast"].create([out], {"to": o.results[0].type.dtype}, o.loc)
            post.append(back)
            out = back.results[0]
        fold = plan.get("fold_add")
        replaced = fold[0].results[0] if fold else o.results[0]
        out.name = replaced.name
        if fold:  # at the add's place: x, the weight and the bias are all defined there
            f.ops.remove(o)
            idx = f.ops.index(fold[0])
        else:
            idx = f.ops.index(o)
        f.ops[idx:idx + 1] = pre + [new] + post
        f.replace_all_uses(replaced, out)
        N, K = plan["N"], plan["K"]
        _record(m, {"scope": "dense", "layer": o.results[0].name or o.loc or o.name, "mode": self.mode,
                    "tensors": 1 if new_tensor else 0, "shape": [N, K],
                    "bytes_before": ent["before"] if new_tensor else 0,
                    "bytes_after": ent["after"] if new_tensor else 0,
                    **({"rel_rms": ent["summary"]["rel_rms"]} if new_tensor else {"shares_weights": True})})

    def _why_not(self, m: Module, ex) -> Optional[str]:
        x = ex.operands[0].type
        if x.dtype not in (DType.F32, DType.BF16, DType.F16):
            return f"activations are {x.dtype.mlir}; weight quantisation takes f32, bf16 or f16 activations"
        for v in ex.operands[4:6]:
            if v.owner is None or v.owner.name != "moec.constant" or const_value(v, m.weights) is None:
                return "expert weights are computed at run time, not constants"
        if wq_aq(self.mode)[0] == "int4":
            for v in ex.operands[4:6]:
                K = v.type.shape[2]
                if K % 2 or (self.group and K % self.group):
                    return f"int4 needs K ({K}) even and divisible by the group size ({self.group})"
        return None

    def _quantize(self, m: Module, ex, widen: bool = False):
        """The quantised op (and the constants and casts it needs).  ``widen``: half activations on a
        target whose kernels for this mode take f32 ones -- x, biases and routing weights are widened
        to f32 (exact) and the op computes in f32, its reference semantics anyway."""
        b_in, b_out, rw = ex._extras()
        pre = []

        def f32(v):
            if v is None or not widen or v.type.dtype == DType.F32:
                return v
            c = OPS["moec.cast"].create([v], {"to": DType.F32}, ex.loc)
            pre.append(c)
            return c.results[0]
        pn_w = f32(ex.extras().pn_w)  # (the post-expert norm's per-expert weight: kept as it is, not quantised)
        x, b_in, b_out, rw = f32(ex.operands[0]), f32(b_in), f32(b_out), f32(rw)
        stored, quant, info = {}, {}, {"mode": self.mode}
        info["bytes_before"] = 0
        for nm, v in (("w_in", ex.operands[4]), ("w_out", ex.operands[5])):
            w0 = np.asarray(const_value(v, m.weights))
            info["bytes_before"] += int(w0.nbytes)
            w = np.asarray(w0, np.float32)
            wmode = wq_aq(self.mode)[0]
            info[nm] = quantization_summary(w, wmode, self.group, self.zero_point)
            if self.mode == "bf16":
                import ml_dtypes
                stored[nm] = w.astype(ml_dtypes.bfloat16)
            elif wmode == "int8":
                stored[nm], quant["s_" + nm] = quantize_int8(w)
            elif wmode == "fp8":
                stored[nm], quant["s_" + nm] = quantize_fp8(w)
            else:
                q, s, z = quantize_int4(w, self.group, self.zero_point)
                stored[nm], quant["s_" + nm] = q, s
                if z is not None:
                    quant["z_" + nm] = z
        if wmode == "int4":
            info.update(group=self.group or "row", zero_point=bool(self.zero_point))
        if wmode == "fp8":
            info["format"] = "float8 e4m3fn, per output channel scale max|row| / 448"
        if activations_text(self.mode, self.group):
            info["activations"] = activations_text(self.mode, self.group)
        wq = wq_aq(self.mode)[0]
        consts = [_const_op(m, stored[nm], f"experts_{nm}_{wq}") for nm in ("w_in", "w_out")]
        qconsts = [_const_op(m, quant[key], f"experts_{key}") for key in ("s_w_in", "s_w_out", "z_w_in", "z_w_out")
                   if key in quant]
        info["bytes"] = int(sum(c.results[0].type.numel() * c.results[0].type.dtype.itemsize
                                for c in consts + qconsts))
        attrs = dict(ex.attrs, wq=wq, aq=wq_aq(self.mode)[1], wq_group=self.group if wq == "int4" else 0,
                     wq_zp=bool(wq == "int4" and self.zero_point))
        ops = [x] + list(ex.operands[1:4]) + [consts[0].results[0], consts[1].results[0]] + \
            [v for v in (b_in, b_out, rw, pn_w) if v is not None] + [c.results[0] for c in qconsts]
        rtype = ex.results[0].type.with_dtype(DType.F32) if widen else ex.results[0].type
        new = OPS["moe.experts"].create(ops, attrs, ex.loc, [rtype])
        new.results[0].name = ex.results[0].name
        return new, pre + consts + qconsts, info


    # -- shared experts: always-on FFNs, as quantised linear layers and their activation ----------------
    def _why_not_shared(self, m: Module, o) -> Optional[str]:
        if self.mode not in self.dense_modes:
            return (f"shared experts: this target has no dense {self.mode} kernels" if self.dense_modes else
                    "shared experts: this target has no dense quantised kernels")
        x = o.operands[0].type
        if x.dtype != DType.F32:
            return f"shared experts with {x.dtype.mlir} activations (quantised as dense layers for f32 only)"
        for v in o.operands[1:3]:
            if v.owner is None or v.owner.name != "moec.constant" or const_value(v, m.weights) is None:
                return "shared-expert weights computed at run time"
        act = o.attrs["activation"]
        if act not in ("swiglu", "silu", "relu", "identity"):
            return f"shared experts with the {act} activation (not decomposed)"
        if wq_aq(self.mode)[0] == "int4":
            D, F = o.operands[1].type.shape[2], o.operands[2].type.shape[2]
            for K in (D, F):
                if K % 2 or (self.group and K % self.group):
                    return f"int4 needs K ({K}) even and divisible by the group size ({self.group})"
        return None

    def _rewrite_shared(self, m: Module, f, o) -> None:
        """y = g(x) * sum_s w_out[s] act(w_in[s] x) (ir/ops/moe.py) with each projection a linear_q (the
        gated one as its gate and up halves) and the activation / gate as elementwise ops."""
        a = o.attrs
        x = o.operands[0]
        w_in = np.asarray(const_value(o.operands[1], m.weights), np.float32)
        w_out = np.asarray(const_value(o.operands[2], m.weights), np.float32)
        F = w_out.shape[2]
        ops: list = []

        def emit(name, operands, attrs=None):
            op = OPS[name].create(operands, attrs or {}, o.loc)
            ops.append(op)
            return op.results[0]

        def scalar(v):
            c = OPS["moec.constant"].create([], {"value": np.asarray(v, np.float32)}, None,
                                            [TensorType(DType.F32, ())])
            ops.append(c)
            return c.results[0]

        def linear(v, w, hint):
            cs, info = self._quantised_consts(m, w, hint)
            ops.extend(cs)
            wmode = wq_aq(self.mode)[0]
            attrs = {"wq": wmode, "aq": wq_aq(self.mode)[1],
                     "wq_group": self.group if wmode == "int4" else 0, "wq_zp": bool(wmode == "int4" and self.zero_point)}
            _record(m, {"scope": "shared", "layer": hint, "mode": self.mode, "tensors": 1, "shape": list(w.shape),
                        "bytes_before": int(w.nbytes), "bytes_after": info["after"], "rel_rms": info["rel_rms"]})
            return emit("moec.linear_q", [v] + [c.results[0] for c in cs], attrs)

        y = None
        for si in range(w_in.shape[0]):
            hint = f"shared{si}_{o.results[0].name or 'ffn'}"
            if a["activation"] == "swiglu":
                rows_g, rows_u = ((slice(0, 2 * F, 2), slice(1, 2 * F, 2)) if a["gate_layout"] == "interleaved"
                                  else (slice(0, F), slice(F, 2 * F)))
                g = linear(x, np.ascontiguousarray(w_in[si][rows_g]), hint + "_gate")
                u = linear(x, np.ascontiguousarray(w_in[si][rows_u]), hint + "_up")
                if np.isfinite(a["limit"]):
                    g = emit("moec.min", [g, scalar(a["limit"])])
                    u = emit("moec.clip", [u, scalar(-a["limit"]), scalar(a["limit"])])
                ga = emit("moec.mul", [g, scalar(a["alpha"])]) if a["alpha"] != 1.0 else g
                h = emit("moec.mul", [g, emit("moec.sigmoid", [ga])])
                ub = emit("moec.add", [u, scalar(a["beta"])]) if a["beta"] != 0.0 else u
                h = emit("moec.mul", [h, ub])
            else:
                h = linear(x, w_in[si], hint + "_in")
                if a["activation"] == "silu":
                    h = emit("moec.mul", [h, emit("moec.sigmoid", [h])])
                elif a["activation"] == "relu":
                    h = emit("moec.max", [h, scalar(0.0)])
            ys = linear(h, w_out[si], hint + "_out")
            y = ys if y is None else emit("moec.add", [y, ys])
        if len(o.operands) > 3:  # the sigmoid gate [D] (Qwen2-MoE): kept in the model's type
            gl = emit("moec.matmul", [x, o.operands[3]])
            gl = emit("moec.unsqueeze", [gl], {"axes": (1,)})
            y = emit("moec.mul", [y, emit("moec.sigmoid", [gl])])
        y.name = o.results[0].name
        idx = f.ops.index(o)
        f.ops[idx:idx + 1] = ops
        f.replace_all_uses(o.results[0], y)

    def _quantised_consts(self, m: Module, w: np.ndarray, hint: str):
        """Constants holding [N, K] ``w`` in the pass's mode (codes, scales, zero points) and a summary."""
        wmode = wq_aq(self.mode)[0]
        w = np.ascontiguousarray(w, np.float32)
        if wmode == "bf16":
            import ml_dtypes
            arrs = [w.astype(ml_dtypes.bfloat16)]
        elif wmode == "int8":
            arrs = list(quantize_int8(w))
        else:
            q, sc, z = quantize_int4(w, self.group, self.zero_point)
            arrs = [q, sc] + ([z] if z is not None else [])
        consts = [_const_op(m, arr, hint if i == 0 else f"{hint}_{'sz'[i - 1]}") for i, arr in enumerate(arrs)]
        summ = quantization_summary(w, wmode, self.group, self.zero_point)
        return consts, {"after": int(sum(arr.nbytes for arr in arrs)), "rel_rms": summ["rel_rms"]}


def _dense_plan(m: Module, o) -> Optional[dict]:
    """How a matmul/gemm maps onto ``moec.linear_q``: the weight's store key, whether it is stored as
    [N, K] already (``trans``), N, K and the bias; ``why`` when it cannot (None: no constant weight)."""
    a, b = o.operands[:2]
    o_b = b.owner
    if o_b is None or o_b.name != "moec.constant" or not isinstance(o_b.attrs.get("value"), ResourceRef):
        return None
    if b.type.rank == 1:
        return {"why": "a vector weight [K] (a gate: one output) stays in the model's type"}
    if b.type.rank != 2 or not all(isinstance(d, int) for d in b.type.shape):
        return {"why": "the weight is not a 2-D matrix of static shape"}
    if b.type.dtype not in (DType.F32, DType.BF16, DType.F16) or a.type.dtype != b.type.dtype:
        return {"why": f"{b.type.dtype.mlir} weights (weight quantisation takes f32, bf16 or f16 layers)"}
    trans = False
    bias = None
    if o.name == "moec.matmul":
        if a.type.rank < 1:
            return {"why": "a scalar operand"}
        K, N = b.type.shape
    else:
        at = o.attrs
        if at["trans_a"] or at["alpha"] != 1.0:
            return {"why": "a Gemm with a transposed left operand or alpha != 1"}
        trans = bool(at["trans_b"])
        N, K = b.type.shape if trans else b.type.shape[::-1]
        if len(o.operands) > 2:
            c = o.operands[2]
            if at["beta"] != 1.0 or c.type.shape not in ((N,), (1, N)):
                return {"why": f"a Gemm whose addend is {c.type} (beta {at['beta']}), not a bias [N]"}
            bias = c
    return {"key": o_b.attrs["value"].key, "trans": trans, "N": int(N), "K": int(K), "bias": bias}


def _bias_add(f, o, N: int, uses):
    """(the add, the bias) when o's only use is ``moec.add(o, b)`` (either order) with b an f32/half [N] or
    [1, N] vector and the add's result keeps o's type (the bias adds along the last axis only)."""
    r = o.results[0]
    us = uses.get(id(r), [])
    if len(us) != 1 or us[0].name != "moec.add" or any(v is r for v in f.outputs):
        return None
    add = us[0]
    other = [v for v in add.operands if v is not r]
    if len(other) != 1 or other[0].type.shape not in ((N,), (1, N)) or other[0].type.dtype != r.type.dtype:
        return None
    if add.results[0].type.shape != r.type.shape:
        return None
    return add, other[0]


_THROUGH = ("moec.reshape", "moec.cast", "moec.squeeze", "moec.unsqueeze", "moec.flatten", "moec.add")


def _feeds_router(v, uses) -> bool:
    """Whether v reaches a ``moe.route``'s logits, through reshapes/casts/a bias add only."""
    seen, todo = set(), [v]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        for u in uses.get(id(x), []):
            if u.name == "moe.route" and u.operands[0] is x:
                return True
            if u.name in _THROUGH:
                todo.extend(u.results)
    return False


def _record(m: Module, rec: dict) -> None:
    """One JSON object per quantised moe.experts op in the module attribute ``moec.quantized_weights``
    (read by :func:`quantization_record`; it survives printing and parsing like ``moec.moe_layers``)."""
    import json
    m.attrs["moec.quantized_weights"] = list(m.attrs.get("moec.quantized_weights", [])) + \
        [json.dumps(rec, sort_keys=True)]


def quantization_record(m: Module, mode: str) -> dict:
    """What ``--weights mode`` did to the module: the layers and weight tensors quantised, their bytes
    before and after (the scales and zero points included), and a warning where nothing was."""
    import json
    recs = [json.loads(s) for s in m.attrs.get("moec.quantized_weights", [])]
    out = {"requested": mode, "quantized_layers": len(recs), "quantized_tensors": sum(r["tensors"] for r in recs),
           "bytes_before": sum(r["bytes_before"] for r in recs), "bytes_after": sum(r["bytes_after"] for r in recs)}
    by_scope = {}
    for r in recs:
        sc = by_scope.setdefault(r.get("scope", "experts"), {"layers": 0, "tensors": 0, "bytes_before": 0,
                                                              "bytes_after": 0})
        sc["layers"] += 1
        sc["tensors"] += r["tensors"]
        sc["bytes_before"] += r["bytes_before"]
        sc["bytes_after"] += r["bytes_after"]
    if recs:
        out["by_scope"] = by_scope
    if recs and activations_text(mode):
        out["activations"] = activations_text(mode)
    kept = [json.loads(s) for s in m.attrs.get("moec.dense_kept", [])]
    if kept:
        out["dense_kept"] = kept
    if mode != "f32" and not recs:
        n = sum(1 for f in m.functions for o in f.ops if o.name == "moe.experts")
        if n:
            why = (f"none of the {n} MoE expert op(s) took {mode} weights (see each layer's 'weights' in "
                   "moe_layers for why)")
        else:
            why = ("no MoE layer was recognised, so there were no expert weights to quantise (see "
                   "`moec inspect MODEL --explain` for why)")
        out["warning"] = f"--weights {mode}: nothing was quantised; every weight keeps the model's type: {why}"
    return out


def _const_op(m: Module, arr: np.ndarray, hint: str):
    key = m.weights.add(arr, hint)
    o = OPS["moec.constant"].create([], {"value": ResourceRef(key)}, None,
                                    [TensorType(DType.from_np(arr.dtype), arr.shape)])
    o.results[0].name = hint
    return o


def quantization_summary(w: np.ndarray, mode: str, group: int, zero_point: bool) -> dict:
    """Relative error of one weight stack under ``mode`` (for reports and tests)."""
    w = np.asarray(w, np.float32)
    if mode == "bf16":
        import ml_dtypes
        d = w.astype(ml_dtypes.bfloat16).astype(np.float32)
    elif mode == "int8":
        q, s = quantize_int8(w)
        d = dequantize_weights(q, "int8", 0, s)
    elif mode == "fp8":
        q, s = quantize_fp8(w)
        d = dequantize_weights(q, "fp8", 0, s)
    elif mode == "int4":
        q, s, z = quantize_int4(w, group, zero_point)
        d = dequantize_weights(q, "int4", group, s, z)
    else:
        d = w
    err = d - w
    return {"max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
            "rel_rms": float(np.sqrt(np.mean(err ** 2)) / max(np.sqrt(np.mean(w ** 2)), 1e-30))}


__all__ = ["QuantizeWeights", "wq_aq", "mode_for", "ACT_MODES", "ACTIVATIONS", "activations_text", "quantization_record", "quantize_int8", "quantize_int4", "quantize_fp8", "quantization_summary",
           "update_moe_layer"]

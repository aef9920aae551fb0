"""MoE ops: one MoE layer is ``moe.route -> moe.dispatch -> moe.experts -> moe.combine``
(plus ``moe.shared_experts`` beside them).  The exact math of each routing family is in
shared/design/moe-routing.md; the attributes below express every family listed there.

Why four ops and not one: each stage has its own schedule decisions (the route is tiny and
vector-bound; dispatch decides sort/pad vs. per-token GEMV vs. capacity; the experts are the
grouped GEMMs; combine is a weighted scatter), targets split them differently (CANN's own
operators mirror exactly this split), and passes rewrite them independently (folding the
routing weight into the experts' epilogue, turning shared experts into always-on experts).

Tensor conventions: T tokens, D hidden, E experts, k slots per token, F expert width.
Expert weights are stacked with rows as output features (torch Linear / onnxruntime MoE):
``w_in [E, I, D]`` (I = F, or 2F for gated activations) and ``w_out [E, D, F]``.
An id of -1 marks a slot dropped by capacity: it contributes nothing.
"""
from __future__ import annotations

import json
from typing import Any, Dict, NamedTuple, Optional, Sequence

import numpy as np

from moec.ir.core import Operation
from moec.ir.fp8 import E4M3_MAX, decode_e4m3, encode_e4m3
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import DType, TensorType

SCORING = ("softmax", "sigmoid", "none")
POST = ("none", "softmax", "sigmoid", "sparsemixer")
NORM = ("none", "sum", "l1")
GROUP_SCORE = ("max", "top2_sum")
TIE = ("low", "high")
ACTIVATIONS = ("swiglu", "gelu", "gelu_tanh", "relu", "silu", "identity", "relu2",  # relu2: relu(h)^2
               "geglu", "geglu_tanh", "softcap_swiglu")
# gated (w_in rows [G; U]): swiglu G * sigmoid(alpha G) * (U + beta), G <= limit, |U| <= limit;
# geglu / geglu_tanh: gelu(G) * U (erf / tanh approximation: Gemma4's experts);
# softcap_swiglu: cg tanh(G / cg) * sigmoid(G) * cu tanh(U / cu), cg = gate_softcap, cu = up_softcap
# (Inkling2's experts: the sigmoid sees the raw gate)
GATED = ("swiglu", "geglu", "geglu_tanh", "softcap_swiglu")
GATE_LAYOUT = ("concat", "interleaved")
DISPATCH = ("sort_pad", "token_gemv", "capacity")
WEIGHTS_AT = ("none", "input", "output")
WEIGHT_QUANT = ("none", "bf16", "int8", "int4", "fp8")
ACT_QUANT = ("none", "int8", "fp8", "bf16")


# -- quantised expert weights ------------------------------------------------------------------
# The reference semantics of a quantised op is dequantise-then-compute:
#   bf16: w = float(q)                                  q bf16 [E, N, K]; the GEMM inputs (the rows
#         of x and the activation) are rounded to bf16 too, the CPUs' and GPUs' bf16 dot products
#         (vdpbf16ps, tensor cores) take both operands in bf16; accumulation stays f32
#   int8: w = q * s[e, n]                               q i8 [E, N, K], s f32 [E, N] (per output channel)
#   fp8:  w = e4m3(q) * s[e, n]                         q ui8 [E, N, K]: float8 e4m3fn bit patterns (ir/fp8.py),
#         s f32 [E, N] (per output channel, amax / 448); the GEMM inputs stay as x (weight-only), or with
#         aq=fp8 (fp8 w8a8) are quantised per row to e4m3 too (quantize_rows_fp8): fp8 x fp8 products,
#         f32 accumulation
#   int4: w = (q - z[e, n, g]) * s[e, n, g]             q packed ui8 [E, N, K/2] (element 2i in the low
#         nibble of byte i, 2i+1 in the high nibble), s f32 [E, N, K/G], z f32 [E, N, K/G] or 8
#         when there is no zero-point operand (symmetric), g = k // G
# aq=bf16 with wq=int8 / int4 (``--weights int8|int4 --activations bf16``): the GEMM inputs (the rows of x
#         and the activation) are rounded to bf16 (nearest even) per element, as for bf16 weights; the
#         weights enter exactly: int8 codes q and int4 values q - z (|q - z| <= 15, z the quantiser's
#         integer zero point) are bf16 values, so every product bf16(x) * (q - z) is exact in f32, the
#         products are summed in f32 per group (int8: the whole row), and the scale multiplies that f32
#         partial sum: y[n] = sum_g s[n, g] * sum_{k in g} bf16(x[k]) * (q[n, k] - z[n, g]).  (A dequantised
#         q * s rounded to bf16 would not be exact; nothing is rounded on the weight side.)  In exact
#         arithmetic that is bf16(x) @ dequant(w).T, which the reference computes in f32: the two differ by
#         f32 rounding (summation order) only, as bf16 weights' vdpbf16ps sums do.
def unpack_int4(q: np.ndarray) -> np.ndarray:
    """Packed ui8 [..., K/2] -> uint8 nibbles [..., K] (low nibble first)."""
    q = np.asarray(q, np.uint8)
    out = np.empty(q.shape[:-1] + (q.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = q & 15
    out[..., 1::2] = q >> 4
    return out


def pack_int4(q: np.ndarray) -> np.ndarray:
    """uint8 nibbles [..., K] (K even) -> packed ui8 [..., K/2]."""
    q = np.asarray(q, np.uint8)
    return (q[..., 0::2] & 15) | ((q[..., 1::2] & 15) << 4)


def dequantize_weights(w: np.ndarray, mode: str, group: int = 0, s=None, z=None) -> np.ndarray:
    """The dequantised f32 weights of a quantised expert stack (see the table above)."""
    if mode == "none":
        return w
    if mode == "bf16":
        return np.asarray(w).astype(np.float32)
    if mode == "int8":
        return np.asarray(w).astype(np.float32) * np.asarray(s, np.float32)[..., None]
    if mode == "fp8":
        return decode_e4m3(w) * np.asarray(s, np.float32)[..., None]
    q = unpack_int4(w).astype(np.float32)
    K = q.shape[-1]
    G = group or K
    zz = np.float32(8.0) if z is None else np.repeat(np.asarray(z, np.float32), G, axis=-1)
    return (q - zz) * np.repeat(np.asarray(s, np.float32), G, axis=-1)


def quant_operand_count(attrs) -> int:
    if attrs.get("wq", "none") in ("int8", "int4", "fp8"):
        return 4 if attrs.get("wq_zp", False) else 2
    return 0


def enum_codes(choices) -> Dict[str, int]:
    """The integer code of each choice of a string attribute, as kernels take it: its index in the tuple
    this module defines (one place: the Triton runtime and the Ascend tiling read these maps)."""
    return {c: i for i, c in enumerate(choices)}


SCORING_CODES = enum_codes(SCORING)
POST_CODES = enum_codes(POST)
NORM_CODES = enum_codes(NORM)
ACTIVATION_CODES = enum_codes(ACTIVATIONS)
WEIGHTS_AT_CODES = enum_codes(WEIGHTS_AT)


class ExpertsExtras(NamedTuple):
    """``moe.experts``' optional operands by name (None where absent): biases, routing weights, and the
    quantised weights' scales and zero points."""
    b_in: Any = None
    b_out: Any = None
    rw: Any = None
    s_in: Any = None
    s_out: Any = None
    z_in: Any = None
    z_out: Any = None
    pn_w: Any = None  # the post-expert RMSNorm's per-expert weight [E, D] (has_post_norm_w)


def experts_extras(attrs, extra: Sequence, o: Optional[Operation] = None) -> ExpertsExtras:
    """Name the ``extra*`` operands of a ``moe.experts`` with attributes ``attrs`` (``extra``: operands 6..,
    as Values, buffer names or arrays alike), in the order ExpertsOp's docstring gives."""
    ex = list(extra)
    nq = quant_operand_count(attrs)
    if len(ex) < nq:
        raise operand_error(o, f"wq={attrs['wq']} needs {nq} scale/zero-point operands") if o is not None \
            else ValueError(f"moe.experts: wq={attrs['wq']} needs {nq} scale/zero-point operands")
    ex, q = (ex[:len(ex) - nq], ex[len(ex) - nq:]) if nq else (ex, [])
    has = (bool(attrs.get("has_b_in", False)), bool(attrs.get("has_b_out", False)),
           attrs.get("weights_at", "none") != "none", bool(attrs.get("has_post_norm_w", False)))
    if len(ex) != sum(has):
        why = (f"{len(ex) - sum(has)} unexpected extra operand(s)" if len(ex) > sum(has) else
               f"{sum(has)} bias/routing-weight/post-norm-weight operand(s) expected, got {len(ex)}")
        raise operand_error(o, why) if o is not None else ValueError(f"moe.experts: {why}")
    b_in, b_out, rw, pn_w = (ex.pop(0) if h else None for h in has)
    q += [None] * (4 - len(q))
    return ExpertsExtras(b_in, b_out, rw, *q, pn_w=pn_w)


def logical_weight_type(o, w: TensorType, x_dtype: DType, name: str) -> TensorType:
    """Check a (possibly quantised) weight operand's storage type; return its logical f-type."""
    mode = o.attrs.get("wq", "none")
    want = {"none": x_dtype, "bf16": DType.BF16, "int8": DType.I8, "int4": DType.U8, "fp8": DType.U8}[mode]
    if w.dtype != want:
        raise operand_error(o, f"{name} is {w.dtype.mlir}; with wq={mode} and x {x_dtype.mlir} it must be "
                               f"{want.mlir}")
    if mode == "int4" and w.rank == 3:
        K = w.shape[2]
        return TensorType(x_dtype, (w.shape[0], w.shape[1], 2 * K if isinstance(K, int) else None))
    return TensorType(x_dtype, w.shape)


QUANT_ATTRS = {
    "wq": Attr("str", "none", WEIGHT_QUANT, "weight storage: none (as x), bf16, int8 per channel, int4 grouped, "
                                          "fp8 (e4m3fn bit patterns, per channel)"),
    "wq_group": Attr("int", 0, doc="int4: elements per scale group along K (0: the whole row)"),
    "wq_zp": Attr("bool", False, doc="int4: explicit zero points (else symmetric, zero point 8)"),
    "aq": Attr("str", "none", ACT_QUANT, "GEMM inputs: none (as x), int8 (dynamic symmetric per row, with wq=int8 -- w8a8 -- or "
                                      "per row and wq_group elements, with wq=int4 -- w4a8), fp8 "
                                      "(dynamic per-row e4m3, max|row| / 448; needs wq=fp8) or bf16 (rounded "
                                      "to bf16 per element, exact int8 / int4 weights and f32 sums; needs "
                                      "wq=int8 or int4)"),
}


def _acc_dtype(x: np.ndarray):
    return np.float64 if x.dtype == np.float64 else np.float32


def _softmax(x: np.ndarray, axis=-1) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a NaN/+Inf or all -Inf row gives NaN, as in the kernels
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def topk_lowest_index(c: np.ndarray, k: int):
    """Top-k along the last axis, descending; ties broken by the lowest index."""
    order = np.argsort(-c, axis=-1, kind="stable")[..., :k]
    return order


def topk_tie(c: np.ndarray, k: int, tie: str = "low"):
    """Top-k along the last axis, descending; ties broken by the lowest (``low``) or the highest
    (``high``) index.  NaN values come last (in the same index order)."""
    if tie == "low":
        return topk_lowest_index(c, k)
    n = c.shape[-1]
    return (n - 1) - np.argsort(-c[..., ::-1], axis=-1, kind="stable")[..., :k]


def sparsemixer_weights(s: np.ndarray, ids: np.ndarray, eps: float) -> np.ndarray:
    """PhiMoE's sparsemixer weights (eval mode, any k): for slot j, with m = s[ids[j]], the softmax at
    ids[j] of s masked to -inf where the expert was chosen in an earlier slot or where
    (m - s[e]) / max(|s[e]|, m) > 2 eps (computed in s's type, as torch does)."""
    T, k = ids.shape
    w = np.zeros((T, k), s.dtype)
    taken = np.zeros(s.shape, bool)
    rows = np.arange(T)
    thr = np.asarray(2 * eps, s.dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for j in range(k):
            m = s[rows, ids[:, j]][:, None]
            a = np.abs(s)
            factor = np.where(a < m, m, a)  # clamp(|s|, min=m), NaN kept
            out = ((m - s) / factor > thr) | taken
            e = np.where(out, 0, np.exp(np.where(out, 0, s - m)))
            w[:, j] = np.exp(np.zeros(T, s.dtype)) / e.sum(-1)
            taken[rows, ids[:, j]] = True
    return w


@op("moe.route", operands=("logits", "bias?"), results=2, traits=("pure",), attrs={
    "k": Attr("int"),
    "scoring": Attr("str", "softmax", SCORING, "score function applied to all E logits before selection"),
    "n_group": Attr("int", 1, doc="groups for group-limited selection (1: none)"),
    "topk_group": Attr("int", 1, doc="groups kept"),
    "group_score": Attr("str", "max", GROUP_SCORE),
    "post": Attr("str", "none", POST, "function of the k selected values (softmax after top-k: GPT-OSS; "
                                      "sparsemixer: PhiMoE's per-slot masked softmax of all the scores)"),
    "jitter_eps": Attr("float", 0.0, doc="sparsemixer: eps; slot j's softmax keeps the scores within 2*eps "
                                         "(relative) of its selected score"),
    "norm": Attr("str", "none", NORM, "renormalisation of the k weights"),
    "norm_eps": Attr("float", 0.0),
    "norm_min": Attr("float", 0.0, doc="the renormalisation's denominator is at least this (clamp(sum, min))"),
    "group_fill": Attr("float", float("-inf"), doc="group-limited: the selection score given to experts of the "
                                                   "groups not kept (-inf: never chosen before a kept one)"),
    "scale": Attr("float", 1.0, doc="routed scaling factor"),
    "capacity": Attr("int", 0, doc="per-expert token capacity (Switch); 0: unlimited"),
    "tie": Attr("str", "low", TIE, "selection ties: lowest index first (ONNX TopK) or highest "
                                   "(onnxruntime's com.microsoft.MoE/QMoE kernels)"),
    "drop": Attr("bool", False, doc="drop every slot whose final weight is not > min_weight (NaN included)"),
    "min_weight": Attr("float", 0.0, doc="with drop: the largest weight that is still dropped"),
    # (no default: absent unless set, so routes without always-on experts print as before)
    "n_shared": Attr("int", None, doc="the last n_shared logit columns are always-on experts' (Inkling): never "
                                      "selected, each token's slots k..k+n_shared-1; post / norm see all k+n_shared"),
    "n_skip": Attr("int", None, doc="the last n_skip logit columns are skip classes (Zaya's skip expert): selected "
                                    "like the others, a slot that chooses one is dropped (id -1, weight 0)"),
})
class RouteOp(Operation):
    """Router logits [T, E] (+ optional selection bias [E]) -> (weights [T, k], ids [T, k] i64).

        s = scoring(logits)                      (computed in f32, or f64 for f64 input)
        c = s + bias                             (selection only: DeepSeek-V3's correction bias)
        group-limited (n_group > 1): score each of n_group contiguous groups of c by its max or the
            sum of its top-2, keep the topk_group best groups, set the others' c to group_fill (-inf,
            or AXK2's 0.0: then a masked expert can outrank kept ones whose c is negative)
        ids = top-k of c, descending, ties -> lowest index (tie=low) or highest index (tie=high);
            NaN values of c come last (the group selection always breaks ties by the lowest index)
        w = s[ids]; w = post(w)                  (post = softmax over the k values, or sigmoid)
        post sparsemixer (PhiMoE, eval mode): slot j's weight is the softmax, at ids[j], of the scores s
            with masked to -inf the experts chosen in earlier slots and every e with
            (m - s[e]) / max(|s[e]|, m) > 2 * jitter_eps, where m = s[ids[j]]
        norm sum: w /= max(sum(w) + eps, norm_min); l1: w /= max(sum(|w|) + eps, norm_min)
            (a NaN sum stays NaN)
        w *= scale
        drop: a slot whose weight is not > min_weight (so also a NaN weight) is dropped: id -1, weight 0.
            onnxruntime's MoE kernels skip such slots, so a router row with a NaN or +Inf logit (every
            softmax weight NaN), or all -Inf, outputs exactly 0, whatever the expert outputs would be.
        capacity C > 0 (k must be 1): in token order, a token that is the (C+1)-th or later to choose
            expert e is dropped: id -1, weight 0 (slots already dropped do not count).  Logits [B, S, E]
            (capacity only): B sequences of S tokens, each counting its own C per expert (Switch Transformers
            counts per sequence); the results are those of the tokens [B*S, E] in row-major order.
        n_shared S > 0 (always-on experts scored by the router, Inkling's shared experts): of the E logit
            columns the first E' = E - S are routed experts and the last S always-on ones.  s is computed over
            all E columns; c = s[:, :E'] + bias (bias [E']); ids = top-k of c as above; then every token's
            slots are its k chosen experts followed by the S always-on experts E'..E-1:
            w = [s[ids], s[:, E':]] ([T, k + S]) and ids [T, k + S]; post, norm, scale and drop act on all
            k + S slots.  (Inkling: softmax over logsigmoid(l) of the chosen and the shared logits is
            sigmoid(l_j) / sum sigmoid(l): scoring sigmoid, norm sum.)  Not with groups or capacity.
        n_skip N > 0 (skip classes, Zaya's skip expert): of the E logit columns the last N are classes that
            compute nothing.  They are scored, biased and selected like the others (bias [E]); post, norm and
            scale act on the k chosen slots as above; then a slot whose id is >= E - N is dropped: id -1,
            weight 0 (so the token's output has fewer than k terms, or none).  The ids are experts 0..E-N-1 or
            -1: moe.dispatch / moe.experts have E - N experts.  Not with n_shared, groups, capacity or post
            sparsemixer.
    """

    def n_shared(self) -> int:
        return int(self.attrs.get("n_shared") or 0)

    def n_skip(self) -> int:
        return int(self.attrs.get("n_skip") or 0)

    def infer_types(self):
        t = self.operands[0].type
        if t.rank == 3:  # [B, S, E]: B sequences of S tokens (per-sequence capacity), as the tokens [B*S, E]
            if not self.attrs["capacity"]:
                raise operand_error(self, "logits [B, S, E] (capacity counted per sequence) need capacity > 0")
            B, Sq = t.shape[:2]
            t = TensorType(t.dtype, (B * Sq if isinstance(B, int) and isinstance(Sq, int) else None, t.shape[2]))
        if t.rank != 2:
            raise operand_error(self, f"logits must be [T, E] (or [B, S, E] with capacity), got rank {t.rank}")
        if not t.dtype.is_float:
            raise operand_error(self, "logits must be floating point")
        k = self.attrs["k"]
        S = self.n_shared()
        E = t.shape[1] - S if isinstance(t.shape[1], int) else None
        if S < 0:
            raise operand_error(self, f"n_shared={S} must be >= 0")
        if k < 1 or (isinstance(E, int) and k > E):
            raise operand_error(self, f"k={k} must be in [1, E={E}]" + (f" (E = {t.shape[1]} logit columns - "
                                                                        f"n_shared {S})" if S else ""))
        if S and (self.attrs["n_group"] != 1 or self.attrs["capacity"] or self.attrs["post"] == "sparsemixer"):
            raise operand_error(self, "n_shared (always-on experts) is not defined with groups, capacity or "
                                      "post sparsemixer")
        N = self.n_skip()
        if N < 0 or (N and isinstance(E, int) and N >= E):
            raise operand_error(self, f"n_skip={N} must be >= 0 and leave at least one expert of the {E} logit "
                                      f"columns")
        if N and (S or self.attrs["n_group"] != 1 or self.attrs["capacity"] or self.attrs["post"] == "sparsemixer"):
            raise operand_error(self, "n_skip (skip classes) is not defined with n_shared, groups, capacity or "
                                      "post sparsemixer")
        ng, tg = self.attrs["n_group"], self.attrs["topk_group"]
        if ng < 1 or tg < 1 or tg > ng or (isinstance(E, int) and E % ng):
            raise operand_error(self, f"bad grouping n_group={ng}, topk_group={tg} for E={E}")
        if self.attrs["capacity"] and k != 1:
            raise operand_error(self, "capacity routing needs k=1")
        if len(self.operands) > 1:
            b = self.operands[1].type
            if b.rank != 1 or not b.dtype.is_float:
                raise operand_error(self, f"bias must be a float vector [E], got {b}")
        T = t.shape[0]
        return [TensorType(t.dtype, (T, k + S)), TensorType(DType.I64, (T, k + S))]

    def reference(self, logits, bias=None):
        a = self.attrs
        acc = _acc_dtype(logits)
        seq = logits.shape[1] if logits.ndim == 3 else 0  # (tokens per capacity group: a sequence)
        x = logits.astype(acc).reshape(-1, logits.shape[-1])
        T, E = x.shape
        k = a["k"]
        S = self.n_shared()
        if a["scoring"] == "softmax":
            s = _softmax(x)
        elif a["scoring"] == "sigmoid":
            s = _sigmoid(x)
        else:
            s = x
        s_on, s = s[:, E - S:], s[:, :E - S]  # (the always-on experts' scores: never selected)
        E -= S
        c = s + bias.astype(acc) if bias is not None else s.copy()
        if a["n_group"] > 1:
            G = a["n_group"]
            cg = c.reshape(T, G, E // G)
            if a["group_score"] == "max":
                gs = cg.max(-1)
            else:
                top2 = -np.sort(-cg, axis=-1)[..., :2]
                gs = top2.sum(-1)
            keep = topk_lowest_index(gs, a["topk_group"])
            gmask = np.zeros((T, G), bool)
            np.put_along_axis(gmask, keep, True, axis=-1)
            c = np.where(np.repeat(gmask, E // G, axis=1), c, np.asarray(a["group_fill"], c.dtype))
        ids = topk_tie(c, k, a["tie"])
        w = np.take_along_axis(s, ids, axis=-1)
        if S:
            w = np.concatenate([w, s_on], axis=-1)
            ids = np.concatenate([ids, np.broadcast_to(np.arange(E, E + S), (T, S))], axis=-1)
        if a["post"] == "softmax":
            w = _softmax(w)
        elif a["post"] == "sigmoid":
            w = _sigmoid(w)
        elif a["post"] == "sparsemixer":
            w = sparsemixer_weights(s, ids, a["jitter_eps"])
        if a["norm"] != "none":
            den = (w if a["norm"] == "sum" else np.abs(w)).sum(-1, keepdims=True) + a["norm_eps"]
            w = w / np.where(den < a["norm_min"], np.asarray(a["norm_min"], den.dtype), den)
        w = w * a["scale"]
        ids = ids.astype(np.int64)
        N = self.n_skip()
        if N:  # a slot that chose a skip class contributes nothing
            skip = ids >= E - N
            ids = np.where(skip, -1, ids)
            w = np.where(skip, 0, w).astype(w.dtype)
        if a["drop"]:
            with np.errstate(invalid="ignore"):
                keep = w > a["min_weight"]
            ids = np.where(keep, ids, -1)
            w = np.where(keep, w, 0).astype(w.dtype)
        if a["capacity"] > 0:
            counts = np.zeros(E, np.int64)
            for t in range(T):
                if seq and t % seq == 0:  # (a new sequence: its own count per expert)
                    counts[:] = 0
                e = ids[t, 0]
                if e < 0:
                    continue
                counts[e] += 1
                if counts[e] > a["capacity"]:
                    ids[t, 0] = -1
                    w[t, 0] = 0
        return [w.astype(logits.dtype), ids]


def dispatch_plan(ids: np.ndarray, E: int, block: int):
    """The sort-and-pad plan: (order [N], offsets [E+1]).

    order lists flat slot indices (t*k + j) grouped by expert, in increasing slot order within an
    expert (a stable sort); each expert's segment is padded with -1 to a multiple of ``block``;
    offsets[e] is where expert e's segment starts, offsets[E] = N.  (Vectorised, and N is checked
    against the interpreter's size limit before anything of that size is allocated: a crafted
    ``block`` or ``num_experts`` must not allocate or loop without bound.)
    """
    from moec.ir.ops.base import alloc_guard
    flat = ids.reshape(-1).astype(np.int64)
    slots = np.nonzero(flat >= 0)[0]
    keys = flat[slots]
    alloc_guard(None, (E + 1,), 8)
    counts = np.bincount(keys, minlength=E)[:E] if keys.size else np.zeros(E, np.int64)
    nz = np.nonzero(counts)[0]
    n = sum(int(c) + (-int(c)) % block for c in counts[nz])  # exact, in Python ints
    alloc_guard(None, (n,), 8)
    seg = np.zeros(E, np.int64)
    seg[nz] = counts[nz] + (-counts[nz]) % block
    offsets = np.zeros(E + 1, np.int64)
    np.cumsum(seg, out=offsets[1:])
    perm = np.argsort(keys, kind="stable")
    srt = keys[perm]
    first = np.cumsum(counts) - counts  # where each expert's slots start in the sorted list
    order = np.full(n, -1, np.int64)
    order[offsets[srt] + (np.arange(srt.size) - first[srt])] = slots[perm]
    return order, offsets


@op("moe.dispatch", operands=("ids",), results=2, traits=("pure",), attrs={
    "num_experts": Attr("int"),
    "block": Attr("int", 1, doc="rows per block: expert segments are padded to a multiple of it"),
    "strategy": Attr("str", "sort_pad", DISPATCH, "how tokens reach experts (a schedule decision)"),
    "gemv_max_slots": Attr("int", 0, doc="at run time, T*k <= this takes the token_gemv path (0: never)"),
    "col_block": Attr("int", 0, doc="expert-width columns per work item (expert x row block x column block); 0: all"),
    "cores": Attr("int", 0, doc="workers the work items are balanced over (0: unset)"),
})
class DispatchOp(Operation):
    """ids [T, k] -> the dispatch plan (order [N] i64, offsets [E+1] i64), see ``dispatch_plan``.

    ``strategy`` records how the target moves tokens: ``sort_pad`` gathers the rows of each
    expert into block-aligned segments (vLLM's moe_align_block_size); ``token_gemv`` (few
    tokens) runs each token through its k experts directly and needs no gathered copy;
    ``capacity`` keeps at most C tokens per expert (Switch).  The plan's value is the same for
    every strategy — the strategy changes the code, not the answer.
    """

    def infer_types(self):
        t = self.operands[0].type
        if t.rank != 2 or t.dtype not in (DType.I64, DType.I32):
            raise operand_error(self, f"ids must be an integer [T, k] tensor, got {t}")
        if self.attrs["num_experts"] < 1 or self.attrs["block"] < 1:
            raise operand_error(self, "num_experts and block must be >= 1")
        return [TensorType(DType.I64, (None,)), TensorType(DType.I64, (self.attrs["num_experts"] + 1,))]

    def reference(self, ids):
        E = self.attrs["num_experts"]
        if np.any((ids < -1) | (ids >= E)):
            raise ValueError(f"expert id out of range [-1, {E})")
        return list(dispatch_plan(ids.astype(np.int64), E, self.attrs["block"]))


def apply_activation(h: np.ndarray, attrs, F: int) -> np.ndarray:
    act = attrs["activation"]
    if act in GATED:
        if attrs["gate_layout"] == "interleaved":
            g, u = h[..., 0::2], h[..., 1::2]
        else:
            g, u = h[..., :F], h[..., F:]
        if act in ("geglu", "geglu_tanh"):
            return apply_activation(g, {"activation": act.replace("geglu", "gelu")}, F) * u
        if act == "softcap_swiglu":
            cg, cu = attrs["gate_softcap"], attrs["up_softcap"]
            return cg * np.tanh(g / cg) * _sigmoid(g) * (cu * np.tanh(u / cu))
        lim = attrs["limit"]
        if np.isfinite(lim):
            g = np.minimum(g, lim)
            u = np.clip(u, -lim, lim)
        return g * _sigmoid(attrs["alpha"] * g) * (u + attrs["beta"])
    if act == "relu":
        return np.maximum(h, 0)
    if act == "relu2":  # squared ReLU (transformers' "relu2"): NaN passes, as in relu
        r = np.where(h < 0, np.zeros((), h.dtype), h)
        return r * r
    if act == "silu":
        return h * _sigmoid(h)
    if act == "gelu":
        from math import erf
        verf = np.vectorize(erf, otypes=[np.float64])
        return (0.5 * h * (1.0 + verf(h / np.sqrt(2.0)))).astype(h.dtype)
    if act == "gelu_tanh":
        return 0.5 * h * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (h + 0.044715 * h ** 3)))
    return h


def round_bf16(a: np.ndarray) -> np.ndarray:
    """Round to the nearest bfloat16 (ties to even), returned in the input's float type."""
    import ml_dtypes
    return np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.asarray(a).dtype)


def quantize_rows_int8(a: np.ndarray, group: int = 0):
    """Dynamic per-row symmetric int8: s = max|row| / 127 (1 for an all-zero row), q = rint(row / s)
    clipped to +-127, computed in f32 exactly as the kernels do.  Returns (q int8, s f32 [rows]).
    ``group`` G > 0 (w4a8: int4 weights' scale group): one scale per G consecutive elements of a row
    instead, s f32 [rows, K/G] (G must divide K)."""
    a = np.asarray(a, np.float32)
    if group:
        K = a.shape[-1]
        q, s = quantize_rows_int8(a.reshape(a.shape[:-1] + (K // group, group)))
        return q.reshape(a.shape), s
    amax = np.max(np.abs(a), axis=-1) if a.shape[-1] else np.zeros(a.shape[:-1], np.float32)
    # a NaN or an infinity in the row (group) makes its scale NaN, so every value the kernels multiply with it
    # is NaN (its codes are 0; an infinite scale gave the same NaNs here, 0 * inf, but lets a kernel's clipped
    # code reach +-inf); an all-zero row gets scale 1
    s = np.where(np.isfinite(amax), np.where(amax > 0, amax / np.float32(127), np.float32(1)), np.float32(np.nan))
    s = s.astype(np.float32)
    with np.errstate(invalid="ignore"):
        r = np.rint(a / s[..., None])
    q = np.clip(np.where(np.isnan(r), 0, r), -127, 127).astype(np.int8)
    return q, s


def fake_quant_rows_int8(a: np.ndarray, group: int = 0) -> np.ndarray:
    """The values the w8a8 / w4a8 kernels multiply: q * s per row or per group of ``group`` elements of
    a row (see ``quantize_rows_int8``)."""
    q, s = quantize_rows_int8(a, group)
    if group:
        K = q.shape[-1]
        s = np.repeat(s, group, axis=-1)[..., :K] if K else s
        return (q.astype(np.float32) * s).astype(np.asarray(a).dtype)
    return (q.astype(np.float32) * s[..., None]).astype(np.asarray(a).dtype)


def quantize_rows_fp8(a: np.ndarray):
    """Dynamic per-row float8 e4m3fn (fp8 w8a8 activations): s = max|row| / 448 (1 where that is 0),
    codes = e4m3(row / s) rounded to nearest even (ir/fp8.py), the scale and the division in f32 exactly
    as the Triton kernel (quant_fp8_rows_kernel) computes them.  Returns (codes uint8, s f32 [rows])."""
    a = np.asarray(a, np.float32)
    amax = np.max(np.abs(a), axis=-1) if a.shape[-1] else np.zeros(a.shape[:-1], np.float32)
    s = (amax / np.float32(E4M3_MAX)).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    return encode_e4m3((a / s[..., None]).astype(np.float32)), s


def fake_quant_rows_fp8(a: np.ndarray) -> np.ndarray:
    """The values the fp8 w8a8 kernels multiply: e4m3(q) * s per row (see ``quantize_rows_fp8``)."""
    q, s = quantize_rows_fp8(a)
    return (decode_e4m3(q) * s[..., None]).astype(np.asarray(a).dtype)


def ffn(x: np.ndarray, w_in: np.ndarray, w_out: np.ndarray, b_in, b_out, attrs, bf16_acts: bool = False,
        int8_acts: bool = False, fp8_acts: bool = False, act_group: int = 0) -> np.ndarray:
    """One expert on rows x [n, D]: w_out @ act(w_in @ x + b_in) + b_out, accumulated in f32/f64.
    ``bf16_acts``: the GEMM inputs (x and the activation) are rounded to bf16 first; ``int8_acts`` /
    ``fp8_acts``: they are quantised per row to int8 / e4m3 (``fake_quant_rows_int8`` / ``_fp8``);
    int8 with ``act_group`` G > 0 (w4a8): a scale per G elements of a row, the weights' int4 group."""
    acc = _acc_dtype(x)
    if bf16_acts:
        x = round_bf16(x.astype(acc))
    if int8_acts:
        x = fake_quant_rows_int8(x.astype(acc), act_group)
    if fp8_acts:
        x = fake_quant_rows_fp8(x.astype(acc))
    h = x.astype(acc) @ w_in.astype(acc).T
    if b_in is not None:
        h = h + b_in.astype(acc)
    F = w_out.shape[-1]
    a = apply_activation(h, attrs, F)
    if bf16_acts:
        a = round_bf16(a)
    if int8_acts:
        a = fake_quant_rows_int8(a, act_group)
    if fp8_acts:
        a = fake_quant_rows_fp8(a)
    y = a @ w_out.astype(acc).T
    if b_out is not None:
        y = y + b_out.astype(acc)
    return y


def post_norm(v: np.ndarray, eps: float, w: Optional[np.ndarray] = None) -> np.ndarray:
    """moe.experts' post-expert RMSNorm of rows v [n, D]: v / sqrt(mean(v^2) + eps), times the weight w [D] (its
    expert's row of post_norm_w) when given, in v's type.  An all-zero row stays 0 for eps > 0 and is NaN for
    eps = 0 (0 / 0), as torch's F.rms_norm gives."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + np.asarray(eps, v.dtype))
        return out if w is None else out * np.asarray(w).astype(v.dtype)


FFN_ATTRS = {
    "activation": Attr("str", "swiglu", ACTIVATIONS),
    "gate_layout": Attr("str", "concat", GATE_LAYOUT, "gated: w_in rows [gate; up] or interleaved"),
    "alpha": Attr("float", 1.0, doc="gated: G * sigmoid(alpha * G) * (U + beta)"),
    "beta": Attr("float", 0.0),
    "limit": Attr("float", float("inf"), doc="gated: clamp G <= limit, -limit <= U <= limit"),
    # (no default: absent unless set, so ops of the other activations print as before)
    "gate_softcap": Attr("float", None, doc="softcap_swiglu: the gate factor's soft cap cg (cg tanh(G / cg))"),
    "up_softcap": Attr("float", None, doc="softcap_swiglu: U's soft cap cu (cu tanh(U / cu))"),
}


def check_ffn_weights(o: Operation, w_in: TensorType, w_out: TensorType, D, E=None):
    if w_in.rank != 3 or w_out.rank != 3:
        raise operand_error(o, f"w_in/w_out must be [E, I, D] / [E, D, F], got {w_in} / {w_out}")
    I, F = w_in.shape[1], w_out.shape[2]
    gated = o.attrs["activation"] in GATED
    if o.attrs["activation"] == "softcap_swiglu":
        for key in ("gate_softcap", "up_softcap"):
            c = o.attrs.get(key)
            if c is None or not (0 < c < float("inf")):
                raise operand_error(o, f"activation softcap_swiglu needs a finite positive {key}, got {c}")
    if isinstance(I, int) and isinstance(F, int) and I != (2 * F if gated else F):
        raise operand_error(o, f"w_in has {I} rows; activation {o.attrs['activation']} with F={F} needs "
                               f"{2 * F if gated else F}")
    for d in (w_in.shape[2], w_out.shape[1]):
        if isinstance(d, int) and isinstance(D, int) and d != D:
            raise operand_error(o, f"expert weights have hidden size {d}, x has {D}")
    if E is not None:
        for d in (w_in.shape[0], w_out.shape[0]):
            if isinstance(d, int) and d != E:
                raise operand_error(o, f"expert weights stack {d} experts, expected {E}")


@op("moe.experts", operands=("x", "ids", "order", "offsets", "w_in", "w_out", "extra*"), traits=("pure",),
    attrs={**FFN_ATTRS,
           "has_b_in": Attr("bool", False),
           "has_b_out": Attr("bool", False),
           "weights_at": Attr("str", "none", WEIGHTS_AT,
                              "routing weight applied to the expert input (Llama-4) or output (folded)"),
           **QUANT_ATTRS,
           # (no default: absent unless set, so experts without it print as before)
           "post_norm_eps": Attr("float", None, doc="each slot's expert output RMS-normalised before the routing "
                                                    "weight: v / sqrt(mean(v^2) + eps) (Muse Spark)"),
           "has_post_norm_w": Attr("bool", False, doc="the post-expert RMSNorm's output times its expert's own "
                                                      "weight row post_norm_w[e] [D] (Ergo)"),
           })
class ExpertsOp(Operation):
    """Grouped expert FFN over the dispatch plan -> y [T, k, D].

    y[t, j] = FFN_{ids[t, j]}(x[t]) for each slot (zero for id -1), where
    FFN_e(v) = w_out[e] @ act(w_in[e] @ v + b_in[e]) + b_out[e].
    ``extra`` holds, in this order, b_in [E, I] if has_b_in, b_out [E, D] if has_b_out, the
    routing weights [T, k] if weights_at != none: then the slot's weight scales the expert's
    input (``input``) or output (``output``, the combine's multiply folded into the epilogue);
    then for int8/int4/fp8 weights (``wq``) the scales of w_in and w_out and, with ``wq_zp``, their
    zero points.  Quantised weights mean dequantise-then-compute (``dequantize_weights``).
    The plan (order, offsets) must be ``dispatch_plan(ids)``; it tells the code how to group rows.
    ``post_norm_eps`` (when set): each slot's FFN output v (after b_out) becomes v / sqrt(mean(v^2) + eps)
    over D, before the routing weight scales it at the output (Muse Spark's post-expert RMSNorm, whose input
    scale -- one [D] vector for every expert -- the recognizer folds into w_out's rows).  With
    ``has_post_norm_w`` the normalised row is then multiplied by its expert's own weight post_norm_w[e] [D]
    (Ergo's ErgoExpertNorm: learned per expert, after the normalisation, so not foldable into w_out): the
    extra operand post_norm_w [E, D] (x's type or f32) comes after the routing weights, before the quantised
    weights' scales.  eps = 0 is allowed (an export that drops the eps): an all-zero row is then NaN, as in torch.
    """

    def extras(self) -> ExpertsExtras:
        """The optional operands by name (b_in, b_out, rw, s_in, s_out, z_in, z_out; None where absent)."""
        return experts_extras(self.attrs, self.operands[6:], self)

    def _extras(self):
        e = self.extras()
        return e.b_in, e.b_out, e.rw

    def quant_operands(self):
        """(s_in, s_out, z_in, z_out) Values (None where absent)."""
        e = self.extras()
        return e.s_in, e.s_out, e.z_in, e.z_out

    def with_extras(self, b_in=None, b_out=None, rw=None):
        """Operand list with the given bias / routing-weight extras and this op's post-norm weight and quant
        operands."""
        q = [v for v in self.quant_operands() if v is not None]
        return list(self.operands[:6]) + [v for v in (b_in, b_out, rw, self.extras().pn_w) if v is not None] + q

    def infer_types(self):
        x, ids, order, offsets, w_in, w_out = (v.type for v in self.operands[:6])
        if x.rank != 2 or not x.dtype.is_float:
            raise operand_error(self, f"x must be a float [T, D] tensor, got {x}")
        if ids.rank != 2 or ids.dtype != DType.I64:
            raise operand_error(self, f"ids must be i64 [T, k], got {ids}")
        if order.rank != 1 or offsets.rank != 1:
            raise operand_error(self, "order/offsets must be vectors (from moe.dispatch)")
        E = w_in.shape[0]
        mode = self.attrs["wq"]
        lw_in = logical_weight_type(self, w_in, x.dtype, "w_in")
        lw_out = logical_weight_type(self, w_out, x.dtype, "w_out")
        check_ffn_weights(self, lw_in, lw_out, x.shape[1], E if isinstance(E, int) else None)
        b_in, b_out, w = self._extras()
        if mode in ("int8", "int4", "fp8"):
            s_in, s_out, z_in, z_out = self.quant_operands()
            if mode == "int4" and self.attrs["wq_group"] < 0:
                raise operand_error(self, "wq_group must be >= 0")
            for sv, lw, nm in ((s_in, lw_in, "w_in"), (s_out, lw_out, "w_out")):
                K, G = lw.shape[2], self.attrs["wq_group"]
                want = lw.shape[:2] if mode in ("int8", "fp8") else \
                    lw.shape[:2] + ((K // G if G and isinstance(K, int) else (1 if not G else None)),)
                if sv.type.dtype != DType.F32 or len(sv.type.shape) != len(want) or any(
                        isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(sv.type.shape, want)):
                    raise operand_error(self, f"scales of {nm} must be f32 {list(want)}, got {sv.type}")
                if mode == "int4" and G and isinstance(K, int) and K % G:
                    raise operand_error(self, f"{nm}: K={K} is not a multiple of the group size {G}")
            if self.attrs["wq_zp"]:
                if mode != "int4":
                    raise operand_error(self, "zero points are only defined for int4 weights")
                for zv, sv in ((z_in, s_in), (z_out, s_out)):
                    if zv.type != sv.type:
                        raise operand_error(self, f"zero points must match their scales {sv.type}, got {zv.type}")
        if w is not None and w.type.rank != 2:
            raise operand_error(self, "routing weights must be [T, k]")
        eps = self.attrs.get("post_norm_eps")
        if eps is not None and not (eps >= 0 and np.isfinite(eps)):
            raise operand_error(self, f"post_norm_eps must be finite and >= 0, got {eps}")
        pn_w = self.extras().pn_w
        if pn_w is not None:
            if eps is None:
                raise operand_error(self, "has_post_norm_w needs post_norm_eps (the weight scales the normalised row)")
            t = pn_w.type
            if t.rank != 2 or not t.dtype.is_float or t.dtype not in (x.dtype, DType.F32) or any(
                    isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(t.shape, (E, x.shape[1]))):
                raise operand_error(self, f"post_norm_w must be [E, D] = [{E}, {x.shape[1]}] of x's type or f32, "
                                          f"got {t}")
        if self.attrs["aq"] == "int8" and (mode not in ("int8", "int4") or x.dtype not in (DType.F32, DType.BF16, DType.F16)):
            # (half x: the rows are widened to f32 before they are quantised, as the reference does)
            raise operand_error(self, f"aq=int8 (w8a8 / w4a8) needs wq=int8 or int4 and f32/bf16/f16 x, got wq={mode}, "
                                      f"x {x.dtype.mlir}")
        if self.attrs["aq"] == "fp8" and (mode != "fp8" or x.dtype not in (DType.F32, DType.BF16, DType.F16)):
            raise operand_error(self, f"aq=fp8 (fp8 w8a8) needs wq=fp8 and f32/bf16/f16 x, got wq={mode}, x {x.dtype.mlir}")
        if self.attrs["aq"] == "bf16" and mode not in ("int8", "int4"):
            raise operand_error(self, f"aq=bf16 (bf16 activations) needs wq=int8 or int4, got wq={mode}")
        return [TensorType(x.dtype, (x.shape[0], ids.shape[1], x.shape[1]))]

    def reference(self, x, ids, order, offsets, w_in, w_out, *extra):
        ex = list(extra)
        nq = quant_operand_count(self.attrs)
        if nq:
            q, ex = ex[len(ex) - nq:], ex[:len(ex) - nq]
            q += [None] * (4 - len(q))
        else:
            q = [None] * 4
        mode, G = self.attrs["wq"], self.attrs["wq_group"]
        w_in = dequantize_weights(w_in, mode, G, q[0], q[2])
        w_out = dequantize_weights(w_out, mode, G, q[1], q[3])
        b_in = ex.pop(0) if self.attrs["has_b_in"] else None
        b_out = ex.pop(0) if self.attrs["has_b_out"] else None
        rw = ex.pop(0) if self.attrs["weights_at"] != "none" else None
        pn_w = ex.pop(0) if self.attrs.get("has_post_norm_w") else None
        T, k = ids.shape
        E = w_in.shape[0]
        exp_order, exp_off = dispatch_plan(ids, E, 1)
        acc = _acc_dtype(x)
        y = np.zeros((T, k, x.shape[1]), acc)
        for e in range(E):
            slots = exp_order[exp_off[e]:exp_off[e + 1]]
            if len(slots) == 0:
                continue
            t, j = slots // k, slots % k
            rows = x[t].astype(acc)
            if rw is not None and self.attrs["weights_at"] == "input":
                rows = rows * rw[t, j].astype(acc)[:, None]
            out = ffn(rows, w_in[e], w_out[e], None if b_in is None else b_in[e],
                      None if b_out is None else b_out[e], self.attrs,
                      bf16_acts=mode == "bf16" or self.attrs["aq"] == "bf16",
                      int8_acts=self.attrs["aq"] == "int8", fp8_acts=self.attrs["aq"] == "fp8",
                      act_group=G if mode == "int4" else 0)
            if self.attrs.get("post_norm_eps") is not None:
                out = post_norm(out, self.attrs["post_norm_eps"], None if pn_w is None else pn_w[e])
            if rw is not None and self.attrs["weights_at"] == "output":
                out = out * rw[t, j].astype(acc)[:, None]
            y[t, j] = out
        return [y.astype(x.dtype)]


@op("moe.shared_experts", operands=("x", "w_in", "w_out", "gate?"), traits=("pure",), attrs={**FFN_ATTRS})
class SharedExpertsOp(Operation):
    """Always-on experts: y[t] = g(x[t]) * sum_s FFN_s(x[t]) with w_in [S, I, D], w_out [S, D, F];
    g = sigmoid(gate . x[t]) when the gate [D] (Qwen2-MoE) is given, else 1 (DeepSeek)."""

    def infer_types(self):
        x, w_in, w_out = (v.type for v in self.operands[:3])
        if x.rank != 2:
            raise operand_error(self, f"x must be [T, D], got {x}")
        check_ffn_weights(self, w_in, w_out, x.shape[1])
        if len(self.operands) > 3 and self.operands[3].type.rank != 1:
            raise operand_error(self, "the shared-expert gate must be a [D] vector")
        return [x]

    def reference(self, x, w_in, w_out, gate=None):
        acc = _acc_dtype(x)
        y = np.zeros(x.shape, acc)
        for s in range(w_in.shape[0]):
            y += ffn(x, w_in[s], w_out[s], None, None, self.attrs)
        if gate is not None:
            y *= _sigmoid(x.astype(acc) @ gate.astype(acc))[:, None]
        return [y.astype(x.dtype)]


@op("moe.combine", operands=("y", "weights", "extra*"), traits=("pure",), attrs={
    "weighted": Attr("bool", True, doc="multiply each slot by its weight (false when folded into experts)"),
    "has_shared": Attr("bool", False, doc="an extra [T, D] term (shared experts) is added"),
    "passthrough": Attr("bool", False, doc="dropped tokens (all slots id -1) output x (Switch)"),
    "layer": Attr("str", "", doc="layer name, for reports"),
})
class CombineOp(Operation):
    """out[t] = sum_j w[t, j] * y[t, j] (+ shared[t]).  ``extra`` holds, in order, shared [T, D]
    if has_shared, and (x [T, D], ids [T, k]) if passthrough: tokens whose every slot was dropped
    output x[t] unchanged (Switch's residual pass-through)."""

    def infer_types(self):
        y, w = self.operands[0].type, self.operands[1].type
        if y.rank != 3 or w.rank != 2:
            raise operand_error(self, f"y must be [T, k, D] and weights [T, k], got {y} and {w}")
        n = int(self.attrs["has_shared"]) + 2 * int(self.attrs["passthrough"])
        if len(self.operands) - 2 != n:
            raise operand_error(self, f"expected {n} extra operand(s), got {len(self.operands) - 2}")
        return [TensorType(y.dtype, (y.shape[0], y.shape[2]))]

    def reference(self, y, w, *extra):
        acc = _acc_dtype(y)
        ex = list(extra)
        if self.attrs["weighted"]:
            out = np.einsum("tkd,tk->td", y.astype(acc), w.astype(acc))
        else:
            out = y.astype(acc).sum(1)
        if self.attrs["has_shared"]:
            out = out + ex.pop(0).astype(acc)
        if self.attrs["passthrough"]:
            x, ids = ex
            dropped = np.all(ids < 0, axis=1)
            out[dropped] = x[dropped].astype(acc)
        return [out.astype(y.dtype)]


def record_moe_layer(module, info: dict) -> str:
    """Record a recognised MoE layer in the module attribute ``moec.moe_layers`` (one JSON object
    per layer: family, routing attributes, E, k, D, F, activation, shared experts, dispatch decision,
    replaced nodes).  Returns the layer's name (``moe0``, ``moe1``, ...)."""
    layers = list(module.attrs.get("moec.moe_layers", []))
    name = info.get("layer") or f"moe{len(layers)}"
    info = {"layer": name, **{k: v for k, v in info.items() if k != "layer"}}
    layers.append(json.dumps(info, sort_keys=True))
    module.attrs["moec.moe_layers"] = layers
    return name


def update_moe_layer(module, name: str, **fields) -> None:
    """Add or change fields of a recorded layer (e.g. the dispatch decision)."""
    layers = list(module.attrs.get("moec.moe_layers", []))
    for i, s in enumerate(layers):
        d = json.loads(s)
        if d.get("layer") == name:
            d.update(fields)
            layers[i] = json.dumps(d, sort_keys=True)
    module.attrs["moec.moe_layers"] = layers

"""recognize-moe: find MoE layers in imported graphs and rewrite each into moe.* ops.

Rewrites, for every ``moec.topk`` whose input is computed from router logits
``matmul/gemm(x, W_r)`` (optionally through softmax / sigmoid / + correction bias):

    the whole layer (router, per-expert masks and gathers, the experts' projections and
    activations, the weighted combine)  ->  moe.route, moe.dispatch, moe.experts, moe.combine

How a layer is found (it does not depend on how the exporter spelled the loop):

1. *Layer output*: the first value downstream of the top-k, in program order, that every
   other downstream op of the top-k either feeds or follows (the point where all expert paths
   have merged), with x's shape.
2. *Experts*: inside the layer, each "down" projection (a matmul with a constant weight) whose
   input is an elementwise function of one or two "up" projections of a common input, and
   that input is a row selection of x.  The activation is identified by evaluating the
   elementwise subgraph on probe values (SwiGLU, GPT-OSS's clamped SwiGLU, SiLU, GELU (erf or
   tanh), ReLU, identity); the expert index by evaluating which tokens reach the expert's
   input when the top-k is fed chosen ids.  Stacked projections (all experts' weights in one
   [E, ...] constant) whose weights are gathered per row -- transformers' batched_mm, and its
   grouped_mm, which sorts the (token, slot) pairs by expert, runs a grouped matmul over the row
   groups and un-permutes -- must give each token's rows exactly its chosen experts on such ids
   (_stacked_dispatch); the permutation, the group ends and the inverse permutation are inside the
   layer, which the proof (4.) compares as a whole.
3. *Routing*: the scoring comes from the ops between the logits and the top-k; the rest
   (renormalisation sum/L1, softmax or sigmoid after top-k, scaling) is chosen among the
   candidates the graph's constants allow.
4. *Proof*: the candidate replacement and the original layer are both evaluated with the
   reference semantics on probe inputs (random tokens, identical tokens, one token; with identity
   experts also tokens whose router logits pair every expert FFN with every identity id); the
   rewrite happens only if one candidate matches everywhere.  A look-alike that differs (no
   renormalisation where the family has one, another tie-break, a missing bias, mixed
   activations) matches no candidate and is left as ordinary ops, which still compile.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set

import numpy as np

from moec.ir import DType, Function, Module, Operation, TensorType, Value
from moec.ir.core import ResourceRef
from moec.ir.opdef import OPS
from moec.ir.ops.moe import record_moe_layer
from moec.passes import recognition_trace as _trace
from moec.passes.base import Pass, register_pass
from moec.passes.moe_util import LAYOUT_OPS, ShapeOnly, eval_op, evaluate, same_tokens, widen

PROJ_OPS = ("moec.matmul", "moec.gemm")
SELECT_OPS = ("moec.slice", "moec.split", "moec.gather")
PROBE_T = 6
_MAX_PAIRINGS = 128  # identity-expert layers: (expert FFN, identity id) pairings probed (_pairing_probes)
# elementwise ops that, with a constant other operand, are affine maps of their input
_AFFINE = ("moec.mul", "moec.add", "moec.sub", "moec.div", "moec.cast")
# ops that take rows of their first operand (or re-view them): the experts' token rows are selected through them
_ROW_OPS = ("moec.gather", "moec.gather_nd", "moec.reshape", "moec.flatten", "moec.expand", "moec.unsqueeze",
            "moec.squeeze", "moec.tile", "moec.slice")


def _consts_only(v: Value, memo: Dict[int, bool]) -> bool:
    """True when v depends on no function argument (it is a constant expression).  Walked with an
    explicit stack, operands in order, stopping at the first that is not constant: a chain longer than
    Python's recursion limit (the unrolled chunk recurrence of a linear-attention layer) is fine."""
    stack = [v]
    while stack:
        u = stack[-1]
        if id(u) in memo:
            stack.pop()
            continue
        o = u.owner
        if o is None:
            memo[id(u)] = False
            stack.pop()
            continue
        nxt = None
        for x in o.operands:
            known = memo.get(id(x))
            if known is None:
                nxt = x
                break
            if not known:
                break
        if nxt is not None:
            stack.append(nxt)
            continue
        memo[id(u)] = all(memo[id(x)] for x in o.operands)
        stack.pop()
    return memo[id(v)]


def _group_index(o: Operation) -> Optional[Value]:
    """The per-row expert ids of a stacked projection whose weights are gathered by row: the index of
    the row gather feeding the matmul (either side), else None."""
    for w in o.operands[:2]:
        if _row_gather(w):
            return w.owner.operands[1]
    return None


def _row_gather(v: Value) -> bool:
    """v selects whole rows of its first operand by index: gather(W, ids, axis=0), or
    gather_nd(W, ids[..., None]) (one index per row, no batch dims), the same rows W[ids]."""
    o = v.owner
    if o is None:
        return False
    if o.name == "moec.gather":
        return o.attrs["axis"] == 0
    return o.name == "moec.gather_nd" and o.attrs["batch_dims"] == 0 and o.operands[1].type.rank >= 1 and \
        o.operands[1].type.shape[-1] == 1


@dataclass
class Projection:
    op: Operation
    input: Value          # the activation operand
    weight: np.ndarray    # [out, in] (torch Linear layout)
    bias: Optional[np.ndarray]
    output: Value         # after the bias add, if any
    order: int = 0        # first output column taken (orders parts of one fused projection)
    stacked: bool = False  # weight is [E, out, in]: all experts at once (batched or gathered form)
    bias_index: Optional[Value] = None  # gathered-weight form: the index the per-row bias is gathered by
    # how weight/bias were taken from _Layer.projection(op)'s: ("cols", idx) a column selection (_part_of),
    # ("expert", e) one expert of a stacked projection; _Layer.real re-derives them from the real constants
    path: tuple = ()


@dataclass
class Expert:
    index: int
    ups: List[Projection]   # gate (and up) projections
    down: Projection
    activation: str
    gate_first: bool


class _Root:
    """The selection a layer starts from: a top-k (values and ids), or an arg-max (ids only, k=1:
    Switch's torch.max routing, whose weight is a separate max of the scores), or a chain of k
    arg-maxes concatenated into ids [T, k] (``ids``: see RecognizeMoE._argmax_chain)."""

    def __init__(self, op: Operation, k: int, ids: Optional[Value] = None):
        self.op, self.k = op, k
        if op.name == "moec.topk":
            self.values, self.ids = op.results
        else:
            self.values, self.ids = None, (ids if ids is not None else op.results[0])
        self.results = list(op.results)
        self.ids_1d = self.ids.type.rank == 1

    @property
    def input(self) -> Value:
        return self.op.operands[0]

    def feeds(self, ids: np.ndarray, w: np.ndarray) -> Dict[int, np.ndarray]:
        f = {id(self.ids): (ids[:, 0] if self.ids_1d else ids).astype(self.ids.type.dtype.np)}
        if self.values is not None:
            f[id(self.values)] = w.astype(self.values.type.dtype.np)
        return f


# The numeric proofs compare the rewrite with the original subgraph on probe inputs.  A layer whose
# tensors are f16/bf16 rounds every intermediate of the original graph (2^-11 / 2^-8 relative per op)
# where the rewritten ops keep f32 inside, so a correct match differs by a few roundings of the type;
# a wrong one (other experts, weights, activation) differs by O(1).  (rtol, atol) per type and check:
# "layer" the whole rewritten layer, "ffn" one expert's FFN / its activation.
# Half-precision layers are proved on their f32 analogue (moe_util.evaluate(widened=True)), so one
# tolerance serves every type: a half-precision one (bf16 needs ~1e-1) could not tell a renormalised
# routing from an unnormalised one whose top-k weights already sum to ~0.95.
_PROOF_TOL_F32 = {"layer": (1e-4, 1e-5), "ffn": (1e-3, 1e-4)}


# -- probe weights ---------------------------------------------------------------------------------
# The proofs evaluate the layer on probe tokens through the module's constants.  What the graph computes does
# not depend on its weights' values, but whether a proof can tell candidates apart does: weights a model was
# never given (transformers' experts and router parameters stay torch.empty until a model's weight init runs:
# NaN, ~1e35, zeros, 1e-40 garbage, or rows of an earlier tensor) make the evaluations non-finite, saturate the
# router or zero the experts, so that nothing is proved or any candidate is.  So the proofs read every
# projection's weight (a matmul / gemm operand taken from a weight through views, selections and casts), and any
# other weight holding NaN or values beyond a trained model's, as pseudo-random finite values of the same shape
# and type (deterministic: seeded by the key), the same for the original graph and the candidate rewrite; the
# rewrite keeps the real weights (_Layer.real takes the experts' from the module's own constants).
_HUGE = 1e15  # |w| above this in a weight tensor: not a trained or initialised value
# ops a projection's weight operand is read through from its constant (views, selections, casts)
_WEIGHT_PATH = ("moec.transpose", "moec.reshape", "moec.flatten", "moec.squeeze", "moec.unsqueeze", "moec.cast",
                "moec.gather", "moec.gather_nd", "moec.slice", "moec.split", "moec.expand", "moec.concat")


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" or a.dtype.name == "bfloat16"


def _unfit(a: np.ndarray) -> bool:
    """A float weight tensor of 2+ elements holding NaN or finite values beyond any trained weight's
    (uninitialised memory).  Masks of 0 / +-inf, +-the type's max (torch's "no bound") and zeros that are
    added or scattered into are values a graph computes with on purpose and stay."""
    a = np.asarray(a)
    if a.size < 2 or not _is_float(a):
        return False
    w = a.astype(np.float32) if a.dtype.kind != "f" or a.dtype.itemsize < 4 else a
    if np.isnan(w).any():
        return True
    with np.errstate(all="ignore"):
        mag = np.abs(w)
    top = float(np.finfo(w.dtype).max)
    return bool(((mag > _HUGE) & (mag < top)).any())


def _probed(a: np.ndarray, projection_weight: bool) -> bool:
    """Whether the proofs read weight ``a`` as probe values (see above)."""
    a = np.asarray(a)
    return (projection_weight and a.size >= 2 and _is_float(a)) or _unfit(a)


def _projection_weight_keys(f: Function) -> Set[str]:
    """The weight keys read as a projection's (matmul / gemm) operand, through _WEIGHT_PATH ops."""
    out: Set[str] = set()
    seen: Set[int] = set()
    for o in f.ops:
        if o.name not in PROJ_OPS:
            continue
        stack = [v for v in o.operands[:2] if v is not None]
        while stack:
            v = stack.pop()
            w = v.owner
            if w is None or id(v) in seen:
                continue
            seen.add(id(v))
            if w.name == "moec.constant":
                if isinstance(w.attrs["value"], ResourceRef):
                    out.add(w.attrs["value"].key)
            elif w.name in _WEIGHT_PATH:
                stack.append(w.operands[0])
                if w.name == "moec.concat":
                    stack.extend(w.operands[1:])
    return out


def _probe_array(key: str, a: np.ndarray) -> np.ndarray:
    import zlib
    rng = np.random.default_rng(zlib.crc32(key.encode()) ^ a.size)
    # unit-variance outputs for unit inputs: scaled by the contraction length, which is the last dim of a weight
    # read transposed ([out, in]: Linear, Gemm transB) and the one before it of a weight read as it is ([in, out]:
    # a folded transpose, stacked experts [E, in, out]); the array does not say which, so the larger of the two:
    # outputs then have variance <= 1 either way.  (Scaling by the last dim alone gave a folded router weight
    # [1024, 4] values of 1/2, logits of std 16: a saturated softmax on every probe, on which a renormalised top-2
    # and an unnormalised one agree, and Mixtral was recognised without its renormalisation.)
    scale = 1.0 / np.sqrt(max(1, *a.shape[-2:]))
    return (rng.standard_normal(a.shape, dtype=np.float32) * np.float32(scale)).astype(a.dtype)


class _ProbeWeights:
    """m.weights as the proofs see it (see above).  ``proj``: the projection weight keys of the function."""

    def __init__(self, store, proj: Set[str]):
        self.store, self.proj = store, proj
        self.cache: Dict[str, tuple] = {}  # key -> (the array, its probe values or None)

    def __getitem__(self, key):
        a = self.store[key]
        seen = self.cache.get(key)
        if seen is None or seen[0] is not a:  # (checked once per array: a key may be set anew)
            seen = self.cache[key] = (a, _probe_array(key, a) if _probed(a, key in self.proj) else None)
        return a if seen[1] is None else seen[1]

    def __contains__(self, key):
        return key in self.store

    def __iter__(self):
        return iter(self.store)


class _ProbeModule:
    """The module as the proofs evaluate it (moe_util.evaluate reads constants through ``.weights``)."""

    def __init__(self, m: Module, proj: Set[str]):
        self.m, self.weights = m, _ProbeWeights(m.weights, proj)

    def __getattr__(self, name):
        return getattr(self.m, name)

    @property
    def substituted(self) -> List[str]:
        return [k for k, (_, v) in self.weights.cache.items() if v is not None]


class _Layer:
    def __init__(self, m: Module, f: Function, topk: Operation, proj_keys: Optional[Set[str]] = None):
        self.m, self.f, self.topk = m, f, topk
        # what every evaluation reads the constants from: the module with probe weights (see _probe_array)
        self.em = _ProbeModule(m, proj_keys if proj_keys is not None else _projection_weight_keys(f))
        self.tol = _PROOF_TOL_F32
        self.widened = False  # a half-precision layer: probe its f32 analogue (set once x is known)
        self.pos = {id(o): i for i, o in enumerate(f.ops)}
        self.users: Dict[int, List[Operation]] = f.uses()
        self.cmemo: Dict[int, bool] = {}
        self.xs: List[Value] = []  # every [T, D] view of the layer input x (moe_util.same_tokens)
        self.xviews: List[Value] = []  # its views of other ranks ([B, S, D] inputs)
        self.unit, self.static_rows = 1, None
        # the router's input when the experts read other tokens (Gemma4: the router its own RMSNorm of the
        # residual, the experts another): fed with probe rows of its own (router_rows), see xfeed
        self.router_in: Optional[Value] = None

    def set_x(self, x: Value) -> None:
        views = same_tokens(self.f, x, self.users)
        self.xs = [v for v in views if v.type.rank == 2]
        # a [B, S, D] view fed a [T, D] probe: T must fit its static dims (the last dynamic dim takes the
        # rest, the others are 1); a fully static view fixes T.  Token counts computed from its shape then
        # stay consistent with the probe.
        self.xviews = []
        for v in views:
            lead = v.type.shape[:-1]
            if v.type.rank == 2:
                continue
            self.xviews.append(v)
            n = int(np.prod([d for d in lead if isinstance(d, int)], dtype=object))
            if all(isinstance(d, int) for d in lead):
                self.static_rows = n
            else:
                self.unit = max(self.unit, n)

    def rows(self, n: int) -> int:
        """The probe token count to use for a wanted count n (see set_x)."""
        if self.static_rows is not None:
            return self.static_rows
        return -(-n // self.unit) * self.unit

    def exact(self, X):
        """X rounded to the narrowest type among x's views (a bf16 input widened for the router), so
        that every view is fed exactly the same values."""
        X = np.asarray(X)
        for v in self.xs + self.xviews:
            if v.type.dtype in (DType.F16, DType.BF16) and X.dtype != v.type.dtype.np:
                X = X.astype(v.type.dtype.np).astype(X.dtype)
        return X

    def router_rows(self, X) -> np.ndarray:
        """The router's probe rows for probe tokens X: a fixed linear map of each row (identical tokens stay
        identical), independent of what the experts read."""
        dr = self.router_in.type.shape[-1]
        P = np.random.default_rng(13).standard_normal((X.shape[-1], dr)) / np.sqrt(X.shape[-1])
        R = (np.asarray(X, np.float64) @ P).astype(self.router_in.type.dtype.np)
        return R

    def xfeed(self, X) -> Dict[int, np.ndarray]:
        """Feeds giving the probe tokens X to x and to every other view of the same token rows (and the
        router's own rows to its input, where it reads other tokens than the experts).  A probe of n sequences
        (seq_probes) feeds a view with two or more dynamic leading dims as [n, rows / n, ...] (else one sequence).
        A probe registered in probe_feeds (X, {id(value): array}) also sets those values inside the layer (the
        router logits of RecognizeMoE._pairing_probes), for the original layer and for a rewrite reading them."""
        seqs = self.__dict__.setdefault("seq_probes", {}).get(id(X), 1)
        held = self.__dict__.setdefault("probe_feeds", {}).get(id(X))  # (values a probe sets inside the layer)
        X0, X = X, self.exact(X)
        feeds = {id(v): X.astype(v.type.dtype.np) for v in self.xs}
        if held is not None and held[0] is X0:
            feeds.update(held[1])
        if self.router_in is not None:
            feeds[id(self.router_in)] = self.router_rows(X)
        for v in self.xviews:
            lead = v.type.shape[:-1]
            dyn = [i for i, d in enumerate(lead) if not isinstance(d, int)]
            shape = [d if isinstance(d, int) else (-1 if i == dyn[-1] else 1) for i, d in enumerate(lead)]
            if seqs > 1 and len(dyn) > 1:
                shape[dyn[0]] = seqs
            shape.append(X.shape[-1])
            try:
                feeds[id(v)] = X.reshape(shape).astype(v.type.dtype.np)
            except ValueError:
                continue  # not fed: a graph that needs it does not evaluate, so nothing matches
        # the function's other arguments by their shapes only (moe_util.ShapeOnly): a dim named like a dim
        # of a view of x takes its fed size, another dynamic dim 1 (as in the views' feeds)
        size = {}
        for v in self.xs + self.xviews:
            if id(v) in feeds:
                for d, n in zip(v.type.shape, feeds[id(v)].shape):
                    if isinstance(d, str):
                        size.setdefault(d, n)
        # (a view whose token dims lost their names in reshapes, [1, ?, D], and an argument laid out like its token
        # dims, a whole model's input_ids [1, S]: the argument's named dims take the view's fed sizes)
        for a in self.f.args:
            lead = a.type.shape
            if id(a) in feeds or all(not isinstance(d, str) or d in size for d in lead):
                continue
            for v in self.xviews:
                vl = v.type.shape[:-1]
                if id(v) in feeds and len(vl) == len(lead) and all(
                        (isinstance(d, int) and e == d) or (not isinstance(d, int) and not isinstance(e, int))
                        for d, e in zip(lead, vl)):
                    for d, n in zip(lead, feeds[id(v)].shape):
                        if isinstance(d, str):
                            size.setdefault(d, n)
                    break
        for a in self.f.args:
            if id(a) not in feeds:
                feeds[id(a)] = ShapeOnly([d if isinstance(d, int) else size.get(d, 1) for d in a.type.shape],
                                         a.type.dtype.np)
        return feeds

    def is_x(self, v: Value) -> bool:
        return any(v is u for u in self.xs)

    # -- graph helpers -----------------------------------------------------------------
    def const_array(self, v: Value) -> Optional[np.ndarray]:
        if not _consts_only(v, self.cmemo):
            return None
        return np.asarray(evaluate(self.em, self.f, [v], {})[0])

    def real_const(self, v: Value) -> Optional[np.ndarray]:
        """const_array(v) from the module's real constants."""
        em, self.em = self.em, self.m
        try:
            return self.const_array(v)
        finally:
            self.em = em

    def real(self, p: Projection) -> Projection:
        """p with its weight and bias taken from the module's real constants (p as found holds what the proofs
        read: probe values, see _probe_array)."""
        memo = self.__dict__.setdefault("_real", {})
        if id(p.op) not in memo:
            em, self.em = self.em, self.m
            try:
                memo[id(p.op)] = self.projection(p.op)
            finally:
                self.em = em
        q = memo[id(p.op)]
        if q is None:
            raise _NoMatch
        w, b = q.weight, q.bias
        path = list(p.path)
        if w.ndim - 2 >= sum(kind != "cols" for kind, _ in path):
            # the experts first (leading axes, views), then the columns (axis -2: a copy when indexed by an array):
            # the same values, and the copy is one expert's, not the whole stack's once per expert
            path.sort(key=lambda s: s[0] == "cols")
        for kind, arg in path:
            if kind == "cols":
                w, b = w[..., arg, :], None if b is None else b[..., arg]
            else:
                w, b = w[arg], None if b is None else b[arg]
        if w.shape != p.weight.shape or (b is None) != (p.bias is None):
            raise _NoMatch
        return Projection(p.op, p.input, w, b, p.output, p.order, p.stacked, p.bias_index, p.path)

    def forward(self, roots: Sequence[Value]) -> Set[int]:
        seen: Set[int] = set()
        stack = list(roots)
        while stack:
            v = stack.pop()
            for u in self.users.get(id(v), []):
                if id(u) not in seen:
                    seen.add(id(u))
                    stack.extend(u.results)
        return seen

    def ancestors(self, v: Value, within: Set[int]) -> Set[int]:
        seen: Set[int] = set()
        stack = [v]
        while stack:
            x = stack.pop()
            o = x.owner
            if o is None or id(o) in seen or id(o) not in within:
                continue
            seen.add(id(o))
            stack.extend(o.operands)
        return seen

    def projection(self, o: Operation) -> Optional[Projection]:
        p = self._projection(o)
        return self._unit_views(p) if p is not None and p.stacked else p

    def _row_view(self, v: Value, rank: int) -> Optional[Value]:
        """The rank-2 [N, D] value that v = x[:, None, :] or x[:, :, None] re-views (an unsqueeze at
        axis 1 or 2, or a reshape to [N, 1, D] / [N, D, 1]), or None."""
        o = v.owner
        if o is None or o.name not in ("moec.unsqueeze", "moec.reshape") or v.type.rank != rank:
            return None
        a = o.operands[0]
        if a.type.rank != 2:
            return None
        if o.name == "moec.unsqueeze":
            axes = list(o.attrs.get("axes") or ())
            if len(o.operands) > 1 and o.operands[1] is not None:
                c = self.const_array(o.operands[1])
                axes = [] if c is None else [int(i) for i in np.asarray(c).reshape(-1)]
            return a if len(axes) == 1 and axes[0] in (1, 2, -1, -2) else None
        sh = v.type.shape
        ok = (sh[1] == 1 and sh[2] == a.type.shape[1]) or (sh[2] == 1 and sh[1] == a.type.shape[1])
        return a if ok and isinstance(a.type.shape[1], int) else None

    def _unit_views(self, p: Projection) -> Projection:
        """A batched matmul of one row per token: bmm(x[:, None, :], W_g) or bmm(W_g, x[..., None])
        squeezed back is the linear map x W_g^T of rank-2 x; see through the unit dims."""
        us = self.users.get(id(p.output), [])
        if p.input.type.rank != 3 or len(us) != 1 or us[0].name not in ("moec.squeeze", "moec.reshape"):
            return p
        r = us[0].results[0]
        if r.type.rank != 2 or r.type.shape[-1] not in (p.weight.shape[-2], None):
            return p
        a = self._row_view(p.input, 3)
        if a is None:
            return p
        bias, bias_index = None, None
        r = self._row_masked(r)
        us = self.users.get(id(r), [])
        if len(us) == 1 and us[0].name == "moec.add":  # + B[i]: each row's expert's bias
            # (i: the weights' gather index, or another value holding the rows' experts -- grouped_mm gathers its
            # bias by the sorted ids, its weights by the group found from the group ends; _stacked_dispatch
            # checks on probe ids that they agree)
            other = us[0].operands[1] if us[0].operands[0] is r else us[0].operands[0]
            b = self.const_array(other.owner.operands[0]) if _row_gather(other) else None
            if b is not None and b.shape == p.weight.shape[:2] and _group_index(p.op) is not None and \
                    self.const_array(other.owner.operands[1]) is None:
                bias, r, bias_index = b, us[0].results[0], other.owner.operands[1]
        return Projection(p.op, a, p.weight, bias, self._row_masked(r), p.order, True, bias_index)

    def _row_masked(self, r: Value) -> Value:
        """select(keep[:, None], r, 0) when that is r's one use: a grouped matmul's rows past the last
        group end set to 0 (torch's _grouped_mm / transformers' fallback over rows sorted by expert).
        Rows of pairs routed to an expert are inside a group, so on the layer's rows the mask keeps
        every row; the layer's proof (original against rewrite on probe tokens) checks that."""
        us = self.users.get(id(r), [])
        if len(us) != 1 or us[0].name != "moec.select" or us[0].operands[1] is not r:
            return r
        cond, zero = us[0].operands[0], us[0].operands[2]
        z = self.const_array(zero)
        if z is None or z.size != 1 or float(z.reshape(-1)[0]) != 0.0 or cond.type.rank != 2 or \
                cond.type.shape[1] != 1 or us[0].results[0].type.shape != r.type.shape:
            return r
        return us[0].results[0]

    def _projection(self, o: Operation) -> Optional[Projection]:
        if o.name not in PROJ_OPS:
            return None
        a, b = o.operands[0], o.operands[1]
        if o.name == "moec.matmul":
            if _row_gather(a) and not _consts_only(b, self.cmemo) and b.type.rank == 3 and b.type.shape[-1] == 1:
                # weights on the left: bmm(gather(W[E, out, in], ids), x[..., None]) = (x W_e^T)[..., None]
                w = self.const_array(a.owner.operands[0])
                if w is None or w.ndim != 3 or self.const_array(a.owner.operands[1]) is not None:
                    return None
                return Projection(o, b, np.asarray(w), None, o.results[0], stacked=True)
            if _consts_only(a, self.cmemo):
                return None
            w = self.const_array(b)
            if w is None and _row_gather(b):
                # gathered-weight form: matmul(x, gather(W[E, in, out], ids)) -- every expert's weights
                w = self.const_array(b.owner.operands[0])
                if w is None or w.ndim != 3 or self.const_array(b.owner.operands[1]) is not None:
                    return None
                return Projection(o, a, np.asarray(w).transpose(0, 2, 1), None, o.results[0], stacked=True)
            if w is not None and w.ndim == 3 and a.type.rank >= 3:
                # batched form: matmul(x[E, T, in], W[E, in, out]) -- expert e is batch entry e
                return Projection(o, a, np.asarray(w).transpose(0, 2, 1), None, o.results[0], stacked=True)
            if w is None or w.ndim != 2:
                return None
            weight, bias = w.T, None
        else:
            if o.attrs["trans_a"] or o.attrs["alpha"] != 1.0:
                return None
            w = self.const_array(b)
            if w is None or _consts_only(a, self.cmemo):
                return None
            weight = w if o.attrs["trans_b"] else w.T
            bias = None
            if len(o.operands) > 2:
                c = self.const_array(o.operands[2])
                if c is None or o.attrs["beta"] != 1.0:
                    return None
                bias = np.broadcast_to(c.reshape(-1) if c.size == weight.shape[0] else c, (weight.shape[0],)).copy()
        out = o.results[0]
        us = self.users.get(id(out), [])
        if len(us) == 1 and us[0].name == "moec.add" and bias is None:
            other = us[0].operands[1] if us[0].operands[0] is out else us[0].operands[0]
            c = self.const_array(other)
            if c is not None and c.size == weight.shape[0]:
                bias, out = c.reshape(-1).copy(), us[0].results[0]
        return Projection(o, a, np.asarray(weight), bias, out)


# -- activations ------------------------------------------------------------------------

def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[np.float64])(x)


ACTS_1 = {
    "relu": lambda g: np.maximum(g, 0),
    "relu2": lambda g: np.maximum(g, 0) ** 2,
    "silu": lambda g: g * _sig(g),
    "gelu": lambda g: 0.5 * g * (1 + _erf(g / np.sqrt(2))),
    "gelu_tanh": lambda g: 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3))),
    "identity": lambda g: g,
}


def _swiglu(g, u, alpha=1.0, beta=0.0, limit=np.inf):
    g = np.minimum(g, limit)
    u = np.clip(u, -limit, limit)
    return g * _sig(alpha * g) * (u + beta)


GATED = {
    "swiglu": dict(alpha=1.0, beta=0.0, limit=float("inf")),
    "gpt_oss": dict(alpha=1.702, beta=1.0, limit=7.0),
    # gelu(G) * U (Gemma4's experts: the tanh approximation)
    "geglu": dict(activation="geglu"),
    "geglu_tanh": dict(activation="geglu_tanh"),
    # cg tanh(G/cg) sigmoid(G) cu tanh(U/cu) (Inkling2's experts); the caps are read off the graph
    "softcap_swiglu": dict(activation="softcap_swiglu"),
}


def _gated(g, u, activation="swiglu", gate_softcap=None, up_softcap=None, **swiglu):
    """A gated activation of moe.experts (ir/ops/moe.py) by its recognizer parameters."""
    if activation in ("geglu", "geglu_tanh"):
        return ACTS_1[activation.replace("geglu", "gelu")](g) * u
    if activation == "softcap_swiglu":
        if gate_softcap is None or up_softcap is None:
            return np.full(np.shape(g), np.nan)
        return gate_softcap * np.tanh(g / gate_softcap) * _sig(g) * (up_softcap * np.tanh(u / up_softcap))
    return _swiglu(g, u, **swiglu)


def gated_params(act: str) -> dict:
    """GATED[act]; ``name@dtype`` is the same activation with its constants rounded to a half type,
    as exporters that store python scalars in the tensor's type write it (bf16 alpha 1.703125);
    ``name[@dtype]:limit=L`` clamps at L instead (GLM-5-Next's and HY-V4's SwiGLU clamp at 10);
    ``softcap_swiglu[@dtype]:softcap=cg,cu`` gives the soft caps (Inkling2's 4 and 25)."""
    act, _, caps = act.partition(":softcap=")
    act, _, lim = act.partition(":limit=")
    name, _, dt = act.partition("@")
    p = dict(GATED[name], **({"limit": float(lim)} if lim else {}))
    if caps:  # ``softcap_swiglu:softcap=cg,cu``
        p["gate_softcap"], p["up_softcap"] = (float(c) for c in caps.split(","))
    if not dt:
        return p
    npdt = DType.parse(dt).np
    return {k: float(np.asarray(v, npdt)) if isinstance(v, float) and np.isfinite(v) else v for k, v in p.items()}


# -- the pass ----------------------------------------------------------------------------------

def _same_shape_operand(a: Value, b: Value, memo: Dict[int, bool], m: Module, f: Function) -> bool:
    """a and b compute the same shape: one value, equal constants, or one op of the same kind and attributes
    on operands that are so (the ``view(input_shape)`` each branch of a layer writes for itself)."""
    if a is b:
        return True
    ca = np.asarray(evaluate(m, f, [a], {})[0]) if _consts_only(a, memo) else None
    cb = np.asarray(evaluate(m, f, [b], {})[0]) if _consts_only(b, memo) else None
    if ca is not None or cb is not None:
        return ca is not None and cb is not None and ca.shape == cb.shape and np.array_equal(ca, cb)
    oa, ob = a.owner, b.owner
    if oa is None or ob is None or oa.name != ob.name or oa.attrs != ob.attrs or len(oa.operands) != len(ob.operands) \
            or oa.results.index(a) != ob.results.index(b) or oa.name not in ("moec.concat", "moec.gather", "moec.shape",
                                                                               "moec.slice", "moec.unsqueeze"):
        return False
    return all(_same_shape_operand(u, w, memo, m, f) for u, w in zip(oa.operands, ob.operands))


def _sink_views(m: Module, f: Function, topk: Operation) -> None:
    """add / sub / mul (r1, r2) of two reshapes of [N, D] values of one type to the same shape (each branch of a
    layer viewed back as [B, S, D] before they are summed: Inkling's routed and shared experts) is the reshape of
    (r1's input op r2's input): an elementwise op commutes with a view of both operands.  Rewritten so, the layer's
    branches merge in a [tokens, hidden] value (where the layer output is looked for)."""
    users = f.uses()
    fwd: Set[int] = set()
    stack = list(topk.results)
    while stack:
        for u in users.get(id(stack.pop()), []):
            if id(u) not in fwd:
                fwd.add(id(u))
                stack.extend(u.results)
    memo: Dict[int, bool] = {}
    for o in [o for o in f.ops if id(o) in fwd and o.name in ("moec.add", "moec.sub", "moec.mul")]:
        ra, rb = (v.owner for v in o.operands[:2])
        if ra is None or rb is None or ra.name != "moec.reshape" or rb.name != "moec.reshape" or ra is rb:
            continue
        a, b = ra.operands[0], rb.operands[0]
        if a.type != b.type or a.type.rank != 2 or ra.results[0].type.shape != o.results[0].type.shape or \
                rb.results[0].type.shape != o.results[0].type.shape or ra.attrs != rb.attrs or \
                not _same_shape_operand(ra.operands[1], rb.operands[1], memo, m, f):
            continue
        new = OPS[o.name].create([a, b], dict(o.attrs), o.loc)
        view = OPS["moec.reshape"].create([new.results[0], ra.operands[1]], dict(ra.attrs), o.loc,
                                          [o.results[0].type])
        at = f.ops.index(o)
        f.ops[at:at + 1] = [new, view]
        f.replace_all_uses(o.results[0], view.results[0])


_ROWWISE_SOFTMAX = ("moec.softmax", "moec.log_softmax")


def _row_constant(v: Value, r: int) -> bool:
    """v is the same for every row of a rank-r [..., n] operand it broadcasts against: rank <= 1, or every dim
    but the last a static 1 (a [E] bias, a [1, 1, E] mask)."""
    t = v.type
    return t.rank <= 1 or (t.rank <= r and all(d == 1 for d in t.shape[:-1]))


def _flatten_selection(f: Function, sel: Operation) -> bool:
    """A top-k / arg-max along the last axis of a rank >= 3 tensor [..., E] ([batch, seq, E]) selects in each row
    on its own: it is the same selection over the rows [N, E], N the product of the leading dims (tokens = batch x
    seq).  So are the row-wise ops computing its scores: a softmax along the last axis, an elementwise op whose
    other operands are the same for every row, a matmul by a 2-D matrix (the router's projection).  When the
    scores are such ops of a [..., d] view of rank-2 rows [N, d] (transformers' ``logits.view(B, S, E)``), or of a
    rank >= 3 input through a projection (``Linear`` on [B, S, D]), rewrite those ops and the selection over the
    rows (rank 2, where the recogniser roots), the selection's results viewed back as [..., k]; every rank >= 3
    value of the chain that something else reads becomes a view of its rows (so nothing is computed twice).
    Returns whether ``sel`` was rewritten (it is then gone from ``f``)."""
    v = sel.operands[0]
    r = v.type.rank
    last = v.type.shape[-1] if r else None
    if r < 3 or not isinstance(last, int) or sel.attrs["axis"] % r != r - 1:
        return False
    if sel.name == "moec.topk":
        k = sel.results[0].type.shape[-1]
        if not isinstance(k, int):
            return False
    # the chain, from the selection's input down to its leaf (a view of rank-2 rows, or a projection's input)
    chain: List[Operation] = []
    u, leaf, rows = v, None, None
    for _ in range(32):
        o = u.owner
        if o is not None and o.name in LAYOUT_OPS and o.operands[0].type.rank == 2 and \
                o.operands[0].type.shape[-1] == u.type.shape[-1] and isinstance(u.type.shape[-1], int) and \
                o.operands[0].type.dtype == u.type.dtype:
            leaf, rows = u, o.operands[0]  # [..., d] view of [N, d] rows: the rows themselves
            break
        if o is None or len(o.results) != 1:
            return False
        if o.name in _ROWWISE_SOFTMAX and o.attrs["axis"] % r == r - 1:
            nxt = o.operands[0]
        elif o.name == "moec.matmul" and o.operands[0].type.rank == r and o.operands[1].type.rank == 2:
            nxt = o.operands[0]
            if nxt.type.rank == r and isinstance(nxt.type.shape[-1], int):  # the projection's input: its rows
                chain.append(o)
                # (a router in f32 on half hidden states, Switch's hidden_states.to(router_dtype): the rows are the
                # hidden states', the cast in the chain, so that the rows are what the experts read)
                while nxt.owner is not None and nxt.owner.name == "moec.cast" and nxt.owner.operands[0].type.rank == r:
                    chain.append(nxt.owner)
                    nxt = nxt.owner.operands[0]
                o2 = nxt.owner
                if o2 is not None and o2.name in LAYOUT_OPS and o2.operands[0].type.rank == 2 and \
                        o2.operands[0].type.shape[-1] == nxt.type.shape[-1] and \
                        o2.operands[0].type.dtype == nxt.type.dtype:
                    leaf, rows = nxt, o2.operands[0]
                else:
                    leaf, rows = nxt, None  # viewed as [N, d] by a new reshape
                break
            return False
        elif o._spec is not None and "elementwise" in o._spec.traits and o.results[0].type.rank == r:
            full = [a for a in o.operands if a is not None and not _row_constant(a, r)]
            if len(full) != 1 or full[0].type.rank != r:
                return False
            nxt = full[0]
        else:
            return False
        chain.append(o)
        u = nxt
    if leaf is None:
        return False
    chain.reverse()  # program order: the leaf's users first

    def typ(t: TensorType, n) -> TensorType:
        return TensorType(t.dtype, (None, n) if n is not None else (None,))

    def const(a) -> Operation:
        return OPS["moec.constant"].create([], {"value": np.asarray(a, np.int64)}, sel.loc)
    before: Dict[int, List[Operation]] = {}  # id(op) -> new ops right after it (0: at the start)
    twin: Dict[int, Value] = {}
    at_leaf: List[Operation] = []
    lead = OPS["moec.shape"].create([leaf], {"start": 0, "end": r - 1}, sel.loc)
    at_leaf.append(lead)
    if rows is None:
        shp = const([-1, leaf.type.shape[-1]])
        view = OPS["moec.reshape"].create([leaf, shp.results[0]], {}, sel.loc, [typ(leaf.type, leaf.type.shape[-1])])
        at_leaf += [shp, view]
        rows = view.results[0]
    twin[id(leaf)] = rows
    before.setdefault(id(leaf.owner) if leaf.owner is not None else 0, []).extend(at_leaf)
    in_chain = {id(o) for o in chain} | {id(sel)}
    users = f.uses()

    def view_back(val: Value, flat: Value, n, loc) -> List[Operation]:
        tail = const([n])
        cat = OPS["moec.concat"].create([lead.results[0], tail.results[0]], {"axis": 0}, loc)
        back = OPS["moec.reshape"].create([flat, cat.results[0]], {}, loc, [val.type])
        return [tail, cat, back]
    replace: List[tuple] = []
    for o in chain:
        new_ops: List[Operation] = []
        ins = []
        for a in o.operands:
            if a is not None and id(a) in twin:
                ins.append(twin[id(a)])
            elif a is not None and a.type.rank >= 2 and o.name != "moec.matmul":  # [1, .., 1, n]: as [1, n]
                s = const([1, -1 if not isinstance(a.type.shape[-1], int) else a.type.shape[-1]])
                rv = OPS["moec.reshape"].create([a, s.results[0]], {}, o.loc, [TensorType(a.type.dtype,
                                                                                         (1, a.type.shape[-1]))])
                new_ops += [s, rv]
                ins.append(rv.results[0])
            else:
                ins.append(a)
        res = o.results[0]
        o2 = OPS[o.name].create(ins, dict(o.attrs), o.loc, [typ(res.type, res.type.shape[-1])])
        if o.name in _ROWWISE_SOFTMAX:
            o2.attrs["axis"] = -1
        new_ops.append(o2)
        twin[id(res)] = o2.results[0]
        if any(id(w) not in in_chain for w in users.get(id(res), [])) or any(res is out for out in f.outputs):
            back = view_back(res, o2.results[0], res.type.shape[-1], o.loc)
            new_ops += back
            replace.append((res, back[-1].results[0], {id(o) for o in chain}))
        before.setdefault(id(o), []).extend(new_ops)
    flat_in = twin[id(v)]
    if sel.name == "moec.topk":
        s2 = OPS["moec.topk"].create([flat_in, sel.operands[1]], dict(sel.attrs, axis=-1), sel.loc,
                                     [typ(sel.results[0].type, k), TensorType(DType.I64, (None, k))])
        ns = [k, k]
    else:
        keep = sel.attrs["keepdims"]
        s2 = OPS["moec.argmax"].create([flat_in], dict(sel.attrs, axis=-1), sel.loc,
                                       [TensorType(DType.I64, (None, 1) if keep else (None,))])
        ns = [1 if keep else None]
    sel_ops = [s2]
    for old, new, n in zip(sel.results, s2.results, ns):
        if not users.get(id(old)) and not any(old is y for y in f.outputs):
            continue  # (nothing reads it: no view back, which would be a dead op downstream of the selection)
        if n is None:  # [B, S] from [N]: the lead dims alone
            back = OPS["moec.reshape"].create([new, lead.results[0]], {}, sel.loc, [old.type])
            sel_ops.append(back)
        else:
            b = view_back(old, new, n, sel.loc)
            sel_ops += b
            back = b[-1]
        replace.append((old, back.results[0], set()))
    before.setdefault(id(sel), []).extend(sel_ops)
    ops = list(before.get(0, []))
    for o in f.ops:
        ops.append(o)
        ops.extend(before.get(id(o), []))
    f.ops = ops
    for old, new, skip in replace:  # (the rewritten chain's own reads of old are dropped with it below)
        for o in f.ops:
            if id(o) not in skip and o is not new.owner:
                o.operands = [new if a is old else a for a in o.operands]
        f.outputs = [new if a is old else a for a in f.outputs]
    f.ops = [p for p in f.ops if p is not sel]
    for o in reversed(chain):  # the rank >= 3 chain, now read by nothing
        us = f.uses()
        if all(not us.get(id(x)) for x in o.results) and not any(x is y for x in o.results for y in f.outputs):
            f.ops = [p for p in f.ops if p is not o]
    return True


def _ops_between(down, ups):
    """The ops on the paths from the up projections' outputs to the down projection's input (the activation's
    ops; other projections and anything before the up projections left out), at most 256 values visited."""
    stop = {id(p.output) for p in ups}
    stack, seen = [down.input], set()
    while stack and len(seen) < 256:
        v = stack.pop()
        if id(v) in seen or id(v) in stop or v.owner is None:
            continue
        seen.add(id(v))
        o = v.owner
        if o.name in PROJ_OPS:
            continue
        yield o
        stack.extend(a for a in o.operands if a is not None)


@register_pass
@dataclass
class RecognizeMoE(Pass):
    name = "recognize-moe"
    rtol: float = 1e-4
    atol: float = 1e-5

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            proj_keys = _projection_weight_keys(f)  # (the weights the proofs read as probe values)
            for o in [o for o in f.ops if o.name in ("moec.topk", "moec.argmax") and o.operands[0].type.rank >= 3]:
                changed |= _flatten_selection(f, o)  # (a selection over [batch, seq, E]: over its token rows)
            roots = [o for o in f.ops if o.name == "moec.topk" or (o.name == "moec.argmax"
                                                                    and not o.attrs["select_last_index"])]
            for topk in roots:
                if topk not in f.ops:
                    continue
                self._reached = None  # (what the numeric proof was given: for the recognition trace)
                try:
                    hit = self._try_layer(m, f, topk, proj_keys)
                except _NoMatch as e:
                    _trace.stopped(m, f, topk, e, None)  # the step it stopped at, read off the raise
                    continue
                if hit:
                    _trace.recognised(m, f, topk)
                else:
                    _trace.stopped(m, f, topk, None, self._reached)
                changed |= hit
            _trace.absorbed(m, f, roots)
        return changed

    # ------------------------------------------------------------------------------------------
    def _try_layer(self, m: Module, f: Function, topk: Operation, proj_keys: Optional[Set[str]] = None) -> bool:
        _sink_views(m, f, topk)
        L = _Layer(m, f, topk, proj_keys)
        self._zero = 0  # identity experts (ids past the expert FFNs), see below
        self._repeat_near = None  # a candidate that differs only on tokens a non-reducing scatter writes twice
        self._skip = 0  # skip classes (ids past the expert FFNs that compute nothing), see _skip_classes
        self._n_shared = 0  # always-on experts scored by the router (see _router)
        if topk.name == "moec.argmax":
            if topk.attrs["axis"] not in (-1, 1) or topk.operands[0].type.rank != 2:
                raise _NoMatch
            k, ids = 1, None
            picks = self._argmax_chain(L, topk)
            if picks is not None:
                k, ids = picks
        else:
            k_arr = L.const_array(topk.operands[1])
            if k_arr is None or topk.attrs["axis"] not in (-1, 1) or not topk.attrs["largest"]:
                raise _NoMatch
            k, ids = int(np.asarray(k_arr).reshape(-1)[0]), None
        root = _Root(topk, k, ids)
        self._group_selection(L, topk)
        router = self._router(L, topk.operands[0])
        x, logits, w_r, scoring, bias_v, chain = router
        L.widened = any(v.type.dtype in (DType.F16, DType.BF16) for v in L.xs + L.xviews)
        T, D = x.type.shape
        E = w_r.shape[0] - self._n_shared  # (the always-on experts' scores are not selected among)
        # 1. layer output: where all expert paths have merged
        fwd = L.forward(topk.results)
        xe = self._expert_tokens(L, fwd)
        if xe is not None:  # the experts read other tokens than the router: they are the layer's x
            L.router_in = x
            L.set_x(xe)
            L.widened = any(v.type.dtype in (DType.F16, DType.BF16) for v in L.xs + L.xviews)
            x = xe
            T, D = x.type.shape
        all_ops = {id(o) for o in L.f.ops}
        # the first merge point holding expert FFNs: where the routing weight scales the experts' input
        # (Llama-4: sigmoid(score) * x), the paths already merge there, before the experts
        merges = self._layer_outputs(L, fwd, x)
        # (what computes the router's own input when it is not x -- Zaya's router MLP over state carried from the
        # previous layer -- is before the layer, as x's ancestors are: the proofs feed that input)
        before = L.ancestors(x, all_ops) | (L.ancestors(L.router_in, all_ops) if L.router_in is not None else set())
        for n_merge, y in enumerate(merges):
            region = L.ancestors(y, fwd) | {id(o) for o in chain} | {id(topk)}
            # 2. experts (in a dense formulation they do not depend on the top-k: search everything
            # between x and the layer output)
            between = (L.ancestors(y, all_ops) - before) | region
            experts = self._experts(L, between, x, root, E, k, y)
            if experts or n_merge == len(merges) - 1:
                break
        region = region | {id(p.op) for e in experts for p in e.ups + [e.down]}
        # fewer expert FFNs (ids 0..n-1) than router outputs: the other ids may be identity experts
        # (LongCat-Flash's zero-computation experts: the token itself times its weight); the proof decides
        self._zero = E - len(experts) if 0 < len(experts) < E and \
            [e.index for e in experts] == list(range(len(experts))) else 0
        if len(experts) + self._zero != E:
            raise _NoMatch
        if self._zero and self._skip_classes(L, root, x, y, len(experts), E, k):
            self._skip, self._zero = self._zero, 0
        acts = {e.activation for e in experts}
        if len(acts) != 1:
            raise _NoMatch  # experts differ: not one MoE op
        if self._n_shared:  # the always-on experts the router scores: moe.experts' ids E..E+S-1
            if self._zero:
                raise _NoMatch
            on = self._always_on(L, between, experts, E, self._n_shared)
            region = region | {id(p.op) for e in on for p in e.ups + [e.down]}
            experts, E = experts + on, E + self._n_shared
        # 3+4. routing candidates, proved numerically.  The merge point may still lack terms that
        # do not depend on the routing (an exporter's "out = zeros + scatter(...)"), so the few
        # single-consumer ops after it with x's shape are tried as the layer output too.
        chain_vals = self._output_chain(L, y, x)
        # the longest candidate first, so that a shared expert added after the routed sum is
        # absorbed into the layer (moe.shared_experts) rather than left beside it
        for i in range(len(chain_vals) - 1, -1, -1):
            y_cand = chain_vals[i]
            region_c = set(region) | {id(v.owner) for v in chain_vals[:i + 1]}
            shared = self._shared_of(L, y_cand, chain_vals[i - 1], x, fwd) if i > 0 else None
            if shared is not None:
                region_c |= shared["ops"]
            try:
                if self._rewrite(L, x, logits, bias_v, root, y_cand, experts, scoring, k, E, region_c,
                                 None if self._n_shared else shared):
                    return True
            except _NoMatch:
                continue  # e.g. a residual add after the layer needs values from outside it
        if self._zero and self._repeat_near is not None:
            raise _NoMatch(_repeated_scatter(E, E - self._zero, self._repeat_near))
        if self._zero or self._skip:
            raise _NoMatch(_fewer_experts(E, E - self._zero - self._skip, bool(self._skip)))
        return False

    @staticmethod
    def _skip_classes(L: "_Layer", root: "_Root", x: Value, y: Value, n: int, E: int, k: int) -> bool:
        """Whether the router's ids n..E-1, past the layer's n expert FFNs, are skip classes (moe.route n_skip,
        Zaya's skip expert): with every slot of every probe token fed one of them through the selection, the layer
        outputs exactly 0.  (Identity experts -- LongCat-Flash's zero-computation experts -- output the token
        times its weight instead; a layer whose router never selects those ids on probe tokens, such as Zaya's
        with its skip class biased by -1, cannot be told apart by the layer's proof, so this asks the graph.)"""
        rng = np.random.default_rng(17)
        T = L.rows(PROBE_T)
        dt = x.type.dtype.np
        X = L.exact(rng.standard_normal((T, x.type.shape[1])).astype(dt))
        W = np.full((T, k), 1.0 / k, dt)
        for c in range(n, E):
            ids = np.stack([np.full(T, n + (c - n + j) % (E - n)) for j in range(k)], axis=1).astype(np.int64)
            try:
                out = np.asarray(evaluate(L.em, L.f, [y], {**L.xfeed(X), **root.feeds(ids, W)},
                                          widened=L.widened)[0], np.float64)
            except Exception:
                return False
            if out.size == 0 or not np.all(out == 0):
                return False
        return True

    @staticmethod
    def _expert_tokens(L: "_Layer", fwd: Set[int]) -> Optional[Value]:
        """The [T, D] tokens the experts read when they are not the router's (None when they are, or when that
        cannot be told): for every projection downstream of the top-k, its input walked back through row
        selections and views (the rows gathered per expert or per (token, slot) pair, repeat_interleave) to the
        last [N, D] value before them that does not depend on the top-k.  One such value, not a view of the
        router's input: Gemma4's experts read pre_feedforward_layernorm_2(residual), its router its own RMSNorm
        of the residual.  Which tokens reach which expert is then proved as for any layer, on probe tokens fed
        there (the router fed rows of its own, see _Layer.router_rows)."""
        srcs: List[Value] = []
        for o in L.f.ops:
            if id(o) not in fwd or o.name not in PROJ_OPS:
                continue
            p = L.projection(o)
            if p is None:
                continue
            v, last = p.input, None
            while True:
                if v.type.rank == 2 and isinstance(v.type.shape[1], int) and (v.owner is None or id(v.owner) not in fwd):
                    last = v
                w = v.owner
                if w is None or w.name not in _ROW_OPS or (w.name in ("moec.gather", "moec.gather_nd") and
                                                           _consts_only(w.operands[0], L.cmemo)):
                    break
                v = w.operands[0]
            if last is not None and not any(last is u for u in srcs):
                srcs.append(last)
        if not srcs or any(L.is_x(v) for v in srcs):
            return None
        views = same_tokens(L.f, srcs[0], L.users)
        if not all(any(v is u for u in views) for v in srcs):
            return None
        return srcs[0]

    @staticmethod
    def _group_selection(L: "_Layer", topk: Operation) -> None:
        """Stop, saying so, at a top-k that only chooses the groups of a group-limited selection: it
        feeds the mask (a Where's condition) in front of another top-k."""
        if topk.name != "moec.topk" or topk.operands[0].type.rank == 2 and \
                topk.operands[0].owner is not None and topk.operands[0].owner.name in PROJ_OPS:
            return
        # (only through ops that are not projections or selections: a group mask is computed from the group
        # top-k by scatters, views and logic; a later layer is reached through matmuls)
        fwd: Set[int] = set()
        stack = list(topk.results)
        while stack:
            for u in L.users.get(id(stack.pop()), []):
                if id(u) not in fwd:
                    fwd.add(id(u))
                    if u.name not in PROJ_OPS + ("moec.topk", "moec.argmax"):
                        stack.extend(u.results)
        for o in L.f.ops:
            if o.name == "moec.topk" and o is not topk and id(o) in fwd:
                sel = o.operands[0].owner
                while sel is not None and sel.name == "moec.cast":
                    sel = sel.operands[0].owner
                if sel is not None and sel.name == "moec.select" and sel.operands[0].owner is not None and \
                        id(sel.operands[0].owner) in fwd:
                    raise _NoMatch(f"it selects the groups of a group-limited selection (its result feeds the mask "
                                   f"before the top-k {_trace.short(o)}, whose own record says whether that layer "
                                   f"was recognised)")

    @staticmethod
    def _argmax_chain(L: "_Layer", first: Operation):
        """Arg-maxes in sequence, each over the scores with the earlier picks set to -inf (a scatter of
        -inf at the pick), whose picks are concatenated along the last axis: that is the top-k of the
        scores, ties to the lowest index (PhiMoE's sparsemixer selects its two experts so).  Returns
        (k, the concatenated ids [T, k]) or None."""
        def fill(v):  # the one value a tensor holds everywhere (a constant, folded or expanded; constant_of_shape)
            while v.owner is not None and v.owner.name in ("moec.expand", "moec.reshape", "moec.unsqueeze"):
                v = v.owner.operands[0]
            c = L.const_array(v)
            if c is None and v.owner is not None and v.owner.name == "moec.constant_of_shape":
                c = np.asarray(v.owner.attrs["value"])
            if c is None or c.size == 0:
                return None
            c = np.asarray(c).reshape(-1)
            return float(c[0]) if (c == c[0]).all() else None

        def argmax_of(v, like):
            return [u for u in L.users.get(id(v), []) if u.name == "moec.argmax" and u.operands[0] is v and
                    u.attrs["axis"] == like.attrs["axis"] and u.attrs["keepdims"] == like.attrs["keepdims"] and
                    not u.attrs["select_last_index"]]
        scores, picks, op = first.operands[0], [first.results[0]], first
        while True:
            nxt = None
            for u in L.users.get(id(picks[-1]), []):
                if u.name == "moec.scatter_elements" and u.operands[0] is scores and u.operands[1] is picks[-1] \
                        and u.attrs["axis"] in (-1, 1) and u.attrs["reduction"] == "none" and \
                        fill(u.operands[2]) == float("-inf") and argmax_of(u.results[0], first):
                    nxt = u
                    break
            if nxt is None or not op.attrs["keepdims"]:
                break
            scores, op = nxt.results[0], argmax_of(nxt.results[0], first)[0]
            picks.append(op.results[0])
        if len(picks) < 2:
            return None
        for u in L.users.get(id(picks[0]), []):
            if u.name == "moec.concat" and u.attrs["axis"] in (-1, 1) and len(u.operands) == len(picks) and \
                    all(a is b for a, b in zip(u.operands, picks)):
                return len(picks), u.results[0]
        return None

    def _shared_of(self, L: "_Layer", y_cand: Value, prev: Value, x: Value, fwd: Set[int]) -> Optional[dict]:
        """y_cand = prev + S where S is a shared expert FFN of x, optionally times sigmoid(x . g)."""
        o = y_cand.owner
        if o.name != "moec.add" or prev not in o.operands:
            return None
        S = o.operands[1] if o.operands[0] is prev else o.operands[0]
        if S.owner is None or id(S.owner) in fwd:
            return None
        gate = None
        ffn_out = S
        so = S.owner
        if so.name == "moec.mul":
            for a, b in ((so.operands[0], so.operands[1]), (so.operands[1], so.operands[0])):
                if a.owner is not None and a.owner.name == "moec.sigmoid":
                    gp = L.projection(a.owner.operands[0].owner) if a.owner.operands[0].owner else None
                    if gp is not None and L.is_x(gp.input) and gp.weight.shape[0] == 1 and gp.bias is None:
                        gate, ffn_out = gp, b
                        break
        down = L.projection(ffn_out.owner) if ffn_out.owner is not None else None
        if down is None or down.output is not ffn_out:
            return None
        all_ops = {id(op) for op in L.f.ops}
        projs = [p for p in (L.projection(op) for op in L.f.ops) if p is not None and L.is_x(p.input)]
        by_out = {id(p.output): p for p in projs}
        ups = self._ups_of(L, down.input, by_out, all_ops)
        if not ups or any(not L.is_x(p.input) for p in ups):
            return None
        try:
            act, gate_first = self._activation(L, down, ups)
        except _NoMatch:
            return None
        ups = ups if gate_first else ups[::-1]
        sh = {"ups": ups, "down": down, "gate_proj": gate, "act": act, "gated": len(ups) == 2,
              "ops": {id(p.op) for p in ups} | {id(down.op), id(so)}}
        sh.update(self._shared_arrays(L, sh, x.type.dtype.np))
        return sh

    @staticmethod
    def _shared_arrays(L: "_Layer", sh: dict, dt, real: bool = False) -> dict:
        """moe.shared_experts' w_in [1, 2F or F, D], w_out [1, D, F] and gate [D] from the shared expert's
        projections (``real``: from the module's real constants, see _Layer.real)."""
        get = L.real if real else (lambda p: p)
        ups, down, gp = [get(p) for p in sh["ups"]], get(sh["down"]), sh["gate_proj"]
        gate = None if gp is None else get(gp).weight.reshape(-1)
        return {"w_in": np.concatenate([p.weight for p in ups], axis=0)[None].astype(dt),
                "w_out": down.weight[None].astype(dt), "gate": None if gate is None else gate.astype(dt)}

    @staticmethod
    def _output_chain(L: "_Layer", y: Value, x: Value, depth: int = 4) -> List[Value]:
        """y and the values of x's shape that follow it through single-consumer ops; the walk passes
        through other shapes (a [T*k, D] product viewed as [T, k, D] and summed over the slot axis)
        and the proof decides which candidate is the layer."""
        out = [y]
        v = y
        for _ in range(depth):
            us = L.users.get(id(v), [])
            if len(us) != 1 or len(us[0].results) != 1:
                break
            r = us[0].results[0]
            if r.type.rank == 2 and r.type.shape[1] in (x.type.shape[1], None):  # (the proof checks shapes)
                out.append(r)
            elif out[-1] is not v and us[0].name != "moec.cast":
                break  # at most one step off x's shape in a row (a cast keeps the shape: bf16 summed in f32)
            v = r
        return out

    def _router(self, L: _Layer, c: Value):
        """Walk from the top-k input back to the router projection."""
        chain: List[Operation] = []
        scoring, bias_v = "none", None
        v = c
        o = v.owner
        self._group = None
        self._n_shared = 0  # the scores' last columns left out of the selection: always-on experts (Inkling)

        def widening(o):  # scores computed in half and widened for top-k (f16 exports of dtype=float)
            return o is not None and o.name == "moec.cast" and o.operands[0].type.dtype.is_float and \
                o.attrs["to"].is_float
        def unview(v):  # a view of the [T, E] scores as [T, E] (LongCat's scores.view(-1, E)): the same values
            while v.owner is not None and v.owner.name in ("moec.reshape", "moec.flatten") and \
                    v.type.rank == 2 and v.owner.operands[0].type.rank == 2 and \
                    v.type.shape[1] == v.owner.operands[0].type.shape[1] and isinstance(v.type.shape[1], int):
                chain.append(v.owner)
                v = v.owner.operands[0]
            return v, v.owner
        def leading(v):
            """(u, S) when v holds the first W - S columns of a [T, W] value u (S > 0: a slice, split or gather
            of u's columns, found by evaluating it on column ids): the selection reads only those; the other S
            columns are always-on experts' scores the route keeps beside the top-k (moe.route's n_shared,
            Inkling's shared experts).  Else None."""
            o = v.owner
            if o is None or o.name not in SELECT_OPS or not o.operands or v.type.rank != 2:
                return None
            u = o.operands[0]
            W = u.type.shape[1] if u.type.rank == 2 else None
            if not isinstance(W, int) or any(a is not u and L.const_array(a) is None for a in o.operands[1:]
                                             if a is not None):
                return None
            try:
                cols = np.asarray(evaluate(L.em, L.f, [v], {id(u): np.arange(W, dtype=np.float64)[None].astype(
                    u.type.dtype.np)}, widened=L.widened)[0]).reshape(-1)
            except Exception:
                return None
            n = cols.size
            if 0 < n < W and np.array_equal(cols, np.arange(n)):
                return u, W - n
            return None
        self._group_fill = float("-inf")
        if widening(o):
            chain.append(o)
            v, o = o.operands[0], o.operands[0].owner
        v, o = unview(v)
        if o is not None and o.name == "moec.select":  # group-limited: masked_fill(c, -inf), or another value
            cond, a, b = o.operands
            for keep, fill in ((b, a), (a, b)):
                fv = L.const_array(fill)
                if fv is not None and fv.size == 1 and L.const_array(keep) is None and \
                        (np.isneginf(fv.reshape(-1)[0]) or np.isfinite(fv.reshape(-1)[0])):
                    chain.append(o)
                    self._group = cond  # resolved into (n_group, topk_group, score) below
                    self._group_fill = float(fv.reshape(-1)[0])  # (AXK2 fills with 0.0)
                    v, o = keep, keep.owner
                    break
            else:
                raise _NoMatch
            if widening(o):
                chain.append(o)
                v, o = o.operands[0], o.operands[0].owner
            v, o = unview(v)
        if o is not None and o.name == "moec.add":
            # a selection bias on the scores: DeepSeek-V3's sigmoid + e_score_correction_bias, ERNIE-4.5's
            # and LongCat's softmax + bias (the weights are the scores without it: moe.route's bias)
            a, b = o.operands
            for s, other in ((a, b), (b, a)):
                if L.const_array(other) is None:
                    continue
                n_chain = len(chain)
                s, so = unview(s)
                if widening(so) and so.operands[0].owner is not None and \
                        so.operands[0].owner.name in ("moec.sigmoid", "moec.softmax"):
                    chain.append(so)  # half scores widened for the bias add (Zaya's probs.to(float32) + bias)
                    s, so = so.operands[0], so.operands[0].owner
                lead = leading(s) if so is not None else None
                if lead is not None and lead[0].owner is not None and lead[0].owner.name in ("moec.sigmoid",
                                                                                            "moec.softmax"):
                    chain.append(so)  # scores of E' routed + S always-on experts, the selection among the E'
                    s, so = lead[0], lead[0].owner
                    self._n_shared = lead[1]
                if so is not None and so.name in ("moec.sigmoid", "moec.softmax"):
                    bias_v = other
                    chain.insert(n_chain, o)
                    v, o = s, so
                    break
                if self._scores_of(L, s) is not None:  # scores of another elementwise form (DeepSeek-V4's
                    bias_v = other                     # sqrt(softplus(l))), or the logits themselves (Kolibri1)
                    chain.insert(n_chain, o)
                    v, o = s, so
                    break
                del chain[n_chain:]
            else:
                raise _NoMatch
        lead = leading(v) if bias_v is None else None
        if lead is not None and lead[0].owner is not None and lead[0].owner.name in ("moec.sigmoid", "moec.softmax"):
            chain.append(o)
            v, o = lead[0], lead[0].owner
            self._n_shared = lead[1]
        if o is not None and o.name in ("moec.softmax", "moec.sigmoid"):
            if o.name == "moec.softmax" and o.attrs["axis"] not in (-1, 1):
                raise _NoMatch
            scoring = "softmax" if o.name == "moec.softmax" else "sigmoid"
            chain.append(o)
            v = o.operands[0]
            o = v.owner
        elif bias_v is not None and self._scores_of(L, v) is None:
            raise _NoMatch
        if o is not None and o.name == "moec.cast":
            chain.append(o)
            v = o.operands[0]
            o = v.owner
        if o is not None and o.name == "moec.add":  # router bias: projection(x) + b
            chain.append(o)
            o = next((a.owner for a in o.operands if a.owner is not None and a.owner.name in PROJ_OPS), None)
        proj = L.projection(o) if o is not None else None
        if proj is None or proj.output is not v:
            # the scores (or the scoring op's input) an elementwise function of the router projection other than
            # a bias (Muse Spark's sigmoid(l * multiplier), DeepSeek-V4's sqrt(softplus(l))): that value is the
            # route's logits, the scoring applied to it as found
            found = self._scores_of(L, v)
            if found is None:
                raise _NoMatch
            proj, ops = found
            if scoring != "none" and any(op.name not in _AFFINE for op in ops):
                # (a softmax / sigmoid reads logits: an affine map of the projection, as every family writes it;
                # one of a nonlinear function of them, zoo's near_tanh_logits, is left as a router form not known)
                raise _NoMatch
            chain.extend(ops)
            x = proj.input
            if x.type.rank != 2 or not isinstance(x.type.shape[1], int) or \
                    (isinstance(v.type.shape[1], int) and v.type.shape[1] != proj.weight.shape[0]):
                raise _NoMatch
            L.set_x(x)
            if self._group is not None:
                self._group = self._group_params(L, self._group, x)
            chain.append(proj.op)
            return x, v, proj.weight, scoring, bias_v, chain
        x = proj.input
        if x.type.rank != 2 or not isinstance(x.type.shape[1], int):
            raise _NoMatch
        L.set_x(x)
        if self._group is not None:
            self._group = self._group_params(L, self._group, x)
        chain.append(o)
        return x, proj.output, proj.weight, scoring, bias_v, chain

    @staticmethod
    def _scores_of(L: _Layer, v: Value, limit: int = 32):
        """(the router projection, the ops between) when v is computed from one projection's output by
        elementwise ops alone, with constants as their only other inputs (casts, scales, a router bias,
        softplus written as where(l > 20, l, log1p(exp(l))), sqrt, ...), else None.  v's values then are a
        per-expert function of the logits: moe.route takes v itself as its logits (scoring none, or the scoring
        op found after v)."""
        ops, leaves, seen, stack = [], [], set(), [v]
        while stack:
            u = stack.pop()
            if id(u) in seen:
                continue
            seen.add(id(u))
            o = u.owner
            if o is None:
                return None
            p = L.projection(o)
            if p is not None:
                if p.output is not u or u.type.rank != 2 or u.type.shape != v.type.shape:
                    return None
                if not any(p.op is q.op for q in leaves):
                    leaves.append(p)
                continue
            if L.const_array(u) is not None:
                continue
            if o._spec is None or "elementwise" not in o._spec.traits or len(o.results) != 1 or \
                    o.results[0].type.shape != v.type.shape or len(ops) >= limit:
                return None
            ops.append(o)
            stack.extend(a for a in o.operands if a is not None)
        return (leaves[0], ops) if len(leaves) == 1 else None

    @staticmethod
    def _group_params(L: _Layer, cond: Value, x: Value):
        """(n_group, topk_group, group_score) read off the group-selection ops feeding the mask."""
        anc = set()
        stack = [cond]
        topks = []
        while stack:
            v = stack.pop()
            o = v.owner
            if v is x or o is None or id(o) in anc:  # (not past the router's input: an earlier layer's top-ks)
                continue
            anc.add(id(o))
            if o.name == "moec.topk":
                topks.append(o)
            if o.name != "moec.shape":  # (a shape reads no values: a size taken off an earlier layer's tensor)
                stack.extend(o.operands)
        group_topk = [t for t in topks if t.operands[0].type.rank == 2]
        if len(group_topk) != 1:
            raise _NoMatch
        gt = group_topk[0]
        G = gt.operands[0].type.shape[1]
        if not isinstance(G, int):  # dynamic in the IR: read it off a probe evaluation
            try:
                probe = np.zeros((L.rows(2), x.type.shape[1]), x.type.dtype.np)
                G = int(np.asarray(evaluate(L.em, L.f, [gt.operands[0]], L.xfeed(probe), widened=L.widened)[0]).shape[1])
            except Exception:
                raise _NoMatch from None
        k = L.const_array(gt.operands[1])
        if not isinstance(G, int) or k is None:
            raise _NoMatch
        top2 = any(t.operands[0].type.rank == 3 and int(np.asarray(L.const_array(t.operands[1]) if
                   L.const_array(t.operands[1]) is not None else [0]).reshape(-1)[0]) == 2 for t in topks)
        return G, int(np.asarray(k).reshape(-1)[0]), "top2_sum" if top2 else "max"

    def _layer_outputs(self, L: _Layer, fwd: Set[int], x: Value) -> List[Value]:
        """The merge points (see _layer_output), first the first; at most a few."""
        out = [self._layer_output(L, fwd, x)]
        while len(out) < 4:
            try:
                out.append(self._layer_output(L, fwd, x, after=out[-1]))
            except _NoMatch:
                break
        return out

    def _layer_output(self, L: _Layer, fwd: Set[int], x: Value, after: Optional[Value] = None) -> Value:
        ops = sorted((o for o in L.f.ops if id(o) in fwd), key=lambda o: L.pos[id(o)])
        if after is not None:
            ops = [o for o in ops if L.pos[id(o)] > L.pos[id(after.owner)]]
        for o in ops:
            for r in o.results:
                # (a half layer may sum its expert outputs in f32 and return that: dynamo's ONNX export)
                wider = x.type.dtype in (DType.F16, DType.BF16) and r.type.dtype in (DType.F32, DType.F64)
                # (a router reading a widened copy of half tokens, DeepSeek-V3's hidden.type(float32): x is that
                # copy, the layer merges in the tokens' own type)
                src = x.owner.operands[0] if x.owner is not None and x.owner.name == "moec.cast" else None
                wider = wider or (src is not None and r.type.dtype == src.type.dtype)
                if r.type.rank != 2 or r.type.shape[1] != x.type.shape[1] or not (r.type.dtype == x.type.dtype
                                                                                    or wider):
                    continue
                anc = L.ancestors(r, fwd)
                desc = L.forward([r])
                if all(i in anc or i in desc or i == id(o) for i in fwd):
                    return r
        raise _NoMatch

    def _experts(self, L: _Layer, region: Set[int], x: Value, topk: Operation, E: int, k: int,
                 y: Optional[Value] = None) -> List[Expert]:
        projs = [p for p in (L.projection(o) for o in L.f.ops if id(o) in region) if p is not None]
        by_out = {id(p.output): p for p in projs}
        downs = []
        for p in projs:
            # an up projection's input is a row selection of x; a down projection's input is
            # computed from up projections' outputs
            ups = self._ups_of(L, p.input, by_out, region)
            if ups:
                downs.append((p, ups))
        experts = []
        # token t picks experts t, t+1, ..., t+k-1 (mod E): every expert gets a distinct token set.  Among the
        # first n ids only when the layer has n < E expert FFNs (router classes past them are identity experts or
        # skip classes, which a graph may send to a real expert with weight 0: _try_layer's proof decides them)
        n_ids = len(downs) if k <= len(downs) < E and not any(d.stacked for d, _ in downs) else E
        n_tok = L.rows(max(2 * E, 2 * PROBE_T))
        ids_probe = np.stack([(np.arange(n_tok) + j) % n_ids for j in range(k)], axis=1).astype(np.int64)
        T2 = ids_probe.shape[0]
        D = x.type.shape[1]
        rng = np.random.default_rng(7)
        X = L.exact(rng.standard_normal((T2, D)).astype(x.type.dtype.np))
        W = np.full((T2, k), 1.0 / k, dtype=x.type.dtype.np)
        stacked = [(d, u) for d, u in downs if d.stacked and all(p.stacked for p in u)]
        if stacked:
            if len(stacked) != 1 or len(downs) != 1:
                raise _NoMatch
            down, ups = stacked[0]
            n = down.weight.shape[0]  # (fewer than E: see _try_layer's identity experts)
            if n > E or any(p.weight.shape[0] != n for p in ups):
                raise _NoMatch
            E = n
            self._stacked_dispatch(L, topk, down, ups, E, ids_probe, X, W)
            act, gate_first = self._activation(L, down, ups)
            ups = ups if gate_first else ups[::-1]

            def part(p, e):
                return Projection(p.op, p.input, p.weight[e], None if p.bias is None else p.bias[e], p.output,
                                  path=p.path + (("expert", e),))
            return [Expert(e, [part(p, e) for p in ups], part(down, e), act, gate_first) for e in range(E)]
        dense = []
        for down, ups in downs:
            act, gate_first = self._activation(L, down, ups)
            ups = ups if gate_first else ups[::-1]
            xin = ups[0].input
            if L.is_x(xin):  # dense formulation: every expert sees every token
                dense.append((down, ups, act, gate_first))
                continue
            # which tokens reach this expert when the top-k says ids_probe?
            try:
                rows = evaluate(L.em, L.f, [xin], {**L.xfeed(X), **topk.feeds(ids_probe, W)}, widened=L.widened)[0]
            except Exception:
                raise _NoMatch from None
            e = self._expert_index(X, np.asarray(rows), ids_probe, E)
            experts.append(Expert(e, ups, down, act, gate_first))
        if dense:
            if experts or y is None:
                raise _NoMatch
            experts = self._index_by_output(L, x, y, topk, k, E, dense)
        experts.sort(key=lambda e: e.index)
        if [e.index for e in experts] != list(range(len(experts))):
            raise _NoMatch
        return experts

    def _always_on(self, L: _Layer, region: Set[int], routed: List[Expert], E: int, S: int) -> List[Expert]:
        """The S always-on expert FFNs of a router that scores them beside the routed ones (moe.route's n_shared):
        down projections of the layer, not the routed experts', whose input is an elementwise function of one or
        two up projections times other factors (the route's weight for the expert, Inkling's gammas), with the
        routed experts' activation (found with the factors fed 1).  S FFNs: S unstacked ones in program order or
        one stack of S; their ids E..E+S-1 follow that order, and the layer's proof decides."""
        taken = {id(p.op) for e in routed for p in e.ups + [e.down]}
        taken |= L.ancestors(L.topk.operands[0], {id(o) for o in L.f.ops})  # (the router's own projection)
        projs = [p for p in (L.projection(o) for o in L.f.ops if id(o) in region and id(o) not in taken)
                 if p is not None]
        by_out = {id(p.output): p for p in projs}
        found = []
        for p in projs:
            factors: List[Value] = []
            ups = self._ups_of(L, p.input, by_out, region, factors)
            if ups and factors:
                found.append((p, ups, factors))
        F = routed[0].down.weight.shape[-1]
        why = f"the router scores {S} always-on expert(s) beside the top-k (n_shared), but "
        n = sum(d.weight.shape[0] if d.stacked else 1 for d, _, _ in found)
        if n != S:
            raise _NoMatch(why + f"{n} FFN(s) scaled by a routing factor were found, not {S}")
        out = []
        for down, ups, factors in found:
            if down.weight.shape[-1] != F or any(u.weight.shape[-2] != F for u in ups):
                raise _NoMatch(why + f"their width differs from the routed experts' F={F} (one moe.experts stack)")
            act, gate_first = self._activation(L, down, ups, {id(v): np.ones((1,) * max(v.type.rank, 1),
                                                                            v.type.dtype.np) for v in factors})
            if act != routed[0].activation:
                raise _NoMatch(why + f"their activation {act} is not the routed experts' {routed[0].activation}")
            ups = ups if gate_first else ups[::-1]
            if down.stacked:
                for e in range(down.weight.shape[0]):
                    def part(p, e=e):
                        return Projection(p.op, p.input, p.weight[e], None if p.bias is None else p.bias[e], p.output,
                                          path=p.path + (("expert", e),))
                    out.append(Expert(E + len(out), [part(q) for q in ups], part(down), act, gate_first))
            else:
                out.append(Expert(E + len(out), ups, down, act, gate_first))
        return out

    @staticmethod
    def _ffn_numpy(ups, down, act, X):
        hs = [X.astype(np.float64) @ p.weight.T.astype(np.float64) + (0 if p.bias is None else p.bias) for p in ups]
        if len(hs) == 2:
            h = _gated(hs[0], hs[1], **gated_params(act))
        else:
            h = ACTS_1[act](hs[0])
        return h @ down.weight.T.astype(np.float64) + (0 if down.bias is None else down.bias)

    def _index_by_output(self, L, x, y, topk, k, E, dense) -> List[Expert]:
        """Dense formulation: route every token to expert e (weight 1 on the first slot, 0 on the
        others) and see which expert FFN the layer output equals."""
        rng = np.random.default_rng(5)
        n = L.rows(4)
        X = L.exact(rng.standard_normal((n, x.type.shape[1])).astype(x.type.dtype.np))
        ffns = [self._ffn_numpy(u, d, a, X) for d, u, a, _ in dense]
        W = np.zeros((n, k), x.type.dtype.np)
        W[:, 0] = 1
        out = []
        taken = set()
        for e in range(E):
            ids = np.tile(np.array([(e + j) % E for j in range(k)], np.int64), (n, 1))
            try:
                ye = np.asarray(evaluate(L.em, L.f, [y], {**L.xfeed(X), **topk.feeds(ids, W)}, widened=L.widened)[0], np.float64)
            except Exception:
                raise _NoMatch from None
            rt, at = L.tol["ffn"]
            hit = [i for i, fx in enumerate(ffns) if i not in taken and np.allclose(ye, fx, rtol=rt, atol=at)]
            if len(hit) != 1:
                raise _NoMatch
            taken.add(hit[0])
            d, u, a, g = dense[hit[0]]
            out.append(Expert(e, u, d, a, g))
        return out

    @staticmethod
    def _row_tokens(X, rows) -> List[int]:
        """The token of X each row of ``rows`` holds, up to a factor (the routing weight may scale an
        expert's input), or _NoMatch when a row is no single token's."""
        if rows.ndim != 2 or rows.shape[1] != X.shape[1]:
            raise _NoMatch
        out = []
        Xd = X.astype(np.float64)
        nrm = np.einsum("td,td->t", Xd, Xd)
        for r in np.asarray(rows, np.float64):
            c = Xd @ r / nrm
            res = np.linalg.norm(r[None, :] - c[:, None] * Xd, axis=1)
            hit = np.nonzero((res <= 1e-4 * (np.linalg.norm(r) + 1e-12)) & (np.abs(c) > 1e-6))[0]
            if len(hit) != 1:
                raise _NoMatch
            out.append(int(hit[0]))
        return out

    def _stacked_dispatch(self, L, root: "_Root", down: Projection, ups: List[Projection], E: int,
                          ids_probe: np.ndarray, X: np.ndarray, W: np.ndarray) -> None:
        """A stacked projection whose weights are gathered per row (W[g[r]] for row r: transformers'
        batched_mm, and its grouped_mm, whose rows are the (token, slot) pairs sorted by expert with g
        the group of each row, found from the group ends) dispatches exactly when, with the top-k fed
        ids in which every expert gets its own token set, each token's rows are picked by exactly that
        token's experts, once each, and the down projection groups every row as the up projection
        does.  How the rows are ordered (a permutation of the pairs) and how g is computed (the ids
        gathered, or counts, cumulative ends and comparisons of sorted ids) is the graph's business;
        this is what it must compute.  The batched form (expert e is batch entry e) has no per-row
        group and is left to the layer's proof."""
        gids = [_group_index(p.op) for p in ups + [down]]
        gids += [p.bias_index for p in ups + [down] if p.bias_index is not None]  # (a bias gathered per row)
        if any(g is None for g in gids) or int(ids_probe.max()) >= E or ups[0].input.type.rank != 2:
            # (fewer expert FFNs than router ids: identity experts, see _try_layer; or no per-row form: a token
            # broadcast against its k experts' weights, [T, 1, 1, D] x W[ids] [T, k, D, F]: the proof decides)
            return
        try:
            vals = evaluate(L.em, L.f, [ups[0].input] + gids, {**L.xfeed(X), **root.feeds(ids_probe, W)},
                            widened=L.widened)
        except Exception:
            raise _NoMatch from None
        rows, g = np.asarray(vals[0]), [np.asarray(a).reshape(-1) for a in vals[1:]]
        if any(a.shape != g[0].shape or not np.array_equal(a, g[0]) for a in g[1:]):
            raise _NoMatch("the expert projections group the rows differently (the up and down projections' "
                           "per-row experts, or their biases', differ on probe ids)")
        if rows.ndim != 2 or rows.shape[0] != g[0].shape[0]:
            raise _NoMatch
        tokens = self._row_tokens(X, rows)
        for t in range(ids_probe.shape[0]):
            got = sorted(int(e) for e, tt in zip(g[0], tokens) if tt == t)
            if got != sorted(int(e) for e in ids_probe[t]):
                raise _NoMatch(f"the stacked expert projections do not apply each token's chosen experts to it "
                               f"(with probe ids, token {t} chose experts {sorted(int(e) for e in ids_probe[t])} "
                               f"but its rows were multiplied by experts {got})")

    def _expert_index(self, X, rows, ids, E) -> int:
        tokens = set(self._row_tokens(X, rows))
        wants = [{t for t in range(ids.shape[0]) if e in ids[t]} for e in range(E)]
        exact = [e for e in range(E) if wants[e] == tokens]
        if len(exact) == 1:
            return exact[0]
        # a capacity limit may drop some of an expert's tokens: with one expert per token the
        # sets are disjoint, so any non-empty subset still names the expert
        if ids.shape[1] == 1 and tokens:
            sub = [e for e in range(E) if tokens <= wants[e]]
            if len(sub) == 1:
                return sub[0]
        raise _NoMatch

    def _ups_of(self, L, v: Value, by_out, region, factors: Optional[List[Value]] = None) -> List[Projection]:
        """Up projections feeding v through elementwise ops only (1 or 2 of them, same input).  ``factors`` (a
        list): a multiplication's operand that is computed from no projection of the layer's (an always-on
        expert's routing weight) is allowed and appended to it."""
        found: List[Projection] = []
        stack, seen = [v], set()
        if factors is not None:
            from_proj = L.forward([p.output for p in by_out.values()])
        while stack:
            w = stack.pop()
            o = w.owner
            if factors is not None and o is not None and o.name == "moec.mul" and id(w) not in seen:
                for a in o.operands:  # (a factor: not downstream of any projection, not a constant)
                    if a.owner is not None and id(a.owner) not in from_proj and id(a) not in by_out and \
                            L.const_array(a) is None:
                        factors.append(a)
                        seen.add(id(a))
            if id(w) in seen:
                continue
            seen.add(id(w))
            if id(w) in by_out:
                found.append(by_out[id(w)])
                continue
            o = w.owner
            src = o.operands[0] if o is not None and o.name in SELECT_OPS else None
            while src is not None and id(src) not in by_out and src.owner is not None and \
                    src.owner.name in ("moec.squeeze", "moec.unsqueeze", "moec.reshape"):
                src = src.owner.operands[0]  # views of the projection's output (_part_of evaluates through them)
            if src is not None and id(src) in by_out:
                part = self._part_of(L, by_out[id(src)], w)
                if part is None:
                    return []
                found.append(part)
                continue
            if o is None or id(o) not in region:
                if o is not None and L.const_array(w) is not None:
                    continue
                return []
            if o.name == "moec.constant" or L.const_array(w) is not None:
                continue
            if o._spec is None or "elementwise" not in o._spec.traits:
                return []
            stack.extend(o.operands)
        uniq = {id(p.output): p for p in found}
        found = sorted(uniq.values(), key=lambda p: (L.pos[id(p.op)], p.order))
        if len(found) not in (1, 2) or len({id(p.input) for p in found}) != 1:
            return []
        return found

    @staticmethod
    def _part_of(L, proj: Projection, v: Value) -> Optional[Projection]:
        """A slice/split/gather of a projection's output columns (fused gate/up weights) as a
        projection of its own: which columns it takes is found by evaluating it on column ids."""
        n = proj.weight.shape[-2]  # out: [out, in], or [E, out, in] for a stacked projection
        # one row of column ids, of the output's rank (a split's axis may be written positive: axis=2 of
        # a batched [E, T, 2F] output)
        rank = max(2, proj.output.type.rank)
        probe = np.arange(n, dtype=np.float64).reshape((1,) * (rank - 1) + (n,)).astype(proj.output.type.dtype.np)
        try:
            cols = np.asarray(evaluate(L.em, L.f, [v], {id(proj.output): probe}, widened=L.widened)[0])
        except Exception:
            return None
        if cols.ndim < 2 or any(d != 1 for d in cols.shape[:-1]):
            return None
        cols = cols.reshape(1, -1)
        idx = cols[0].astype(np.int64)
        if not np.array_equal(idx.astype(cols.dtype), cols[0]) or idx.min() < 0 or idx.max() >= n:
            return None
        return Projection(proj.op, proj.input, proj.weight[..., idx, :],
                          None if proj.bias is None else proj.bias[..., idx], v, order=int(idx[0]), stacked=proj.stacked,
                          bias_index=proj.bias_index, path=proj.path + (("cols", idx),))

    def _activation(self, L, down: Projection, ups: List[Projection], extra: Optional[Dict[int, np.ndarray]] = None):
        rng = np.random.default_rng(3)
        F = ups[0].weight.shape[0]
        dt = down.input.type.dtype.np
        G = rng.standard_normal((3, F)) * 4
        U = rng.standard_normal((3, F)) * 4
        lims = self._clamp_limits(L, down, ups) if len(ups) == 2 else []
        if lims:  # a row across every clamp the graph may apply, so a clamp is seen or its absence is
            G = np.vstack([G, np.linspace(-2 * max(lims), 2 * max(lims), F)])
            U = np.vstack([U, np.linspace(2 * max(lims), -2 * max(lims), F)])
        G, U = G.astype(dt), U.astype(dt)  # (the values fed, so exact in the reference too)
        feeds = {id(ups[0].output): G}
        if len(ups) == 2:
            feeds[id(ups[1].output)] = U
        feeds.update(extra or {})
        try:
            h = np.asarray(evaluate(L.em, L.f, [down.input], feeds, widened=L.widened)[0], np.float64)
        except Exception:
            raise _NoMatch from None
        if extra and h.size == G.size:  # (unit factors broadcast to their rank)
            h = h.reshape(G.shape)
        if h.shape != G.shape:
            raise _NoMatch
        tol = dict(rtol=L.tol["ffn"][0], atol=L.tol["ffn"][1])
        if len(ups) == 1:
            for name, fn in ACTS_1.items():
                if np.allclose(h, fn(G.astype(np.float64)), **tol):
                    return name, True
            raise _NoMatch
        names = list(GATED)
        if down.input.type.dtype in (DType.F16, DType.BF16):
            names += [f"{n}@{down.input.type.dtype.mlir}" for n in GATED]
        names += [f"{n}:limit={lim!r}" for n in names for lim in lims
                  if gated_params(n).get("activation", "swiglu") == "swiglu" and lim != gated_params(n)["limit"]]
        caps = self._softcaps(L, down, ups)
        names = [n2 for n in names for n2 in ([f"{n}:softcap={cg!r},{cu!r}" for cg, cu in itertools.product(caps, caps)]
                                              if gated_params(n).get("activation") == "softcap_swiglu" else [n])]
        for gate_first in (True, False):
            g, u = (G, U) if gate_first else (U, G)
            for name in names:
                if np.allclose(h, _gated(g.astype(np.float64), u.astype(np.float64), **gated_params(name)), **tol):
                    return name, gate_first
        raise _NoMatch

    @staticmethod
    def _clamp_limits(L, down: Projection, ups: List[Projection]) -> List[float]:
        """The positive scalar bounds of the clips / mins / maxes between the up projections and the down
        projection's input: the clamps a gated activation may apply (its candidate limits)."""
        out: List[float] = []
        dt = np.dtype(down.input.type.dtype.np)
        top = float(np.finfo(dt).max) if dt.kind == "f" else 1e30
        for o in _ops_between(down, ups):
            if o.name in ("moec.clip", "moec.min", "moec.max"):
                for a in o.operands[1:] if o.name == "moec.clip" else o.operands:
                    c = L.const_array(a) if a is not None else None
                    if c is not None and c.size == 1:
                        val = abs(float(np.asarray(c, np.float64).reshape(-1)[0]))
                        # (+-FLT_MAX, or the half type's max: torch's "no bound" clamps nothing; the probe row
                        # spans +-2 limits, which must stay finite in the activations' type)
                        if 0 < val < min(1e30, top / 2) and val not in out:
                            out.append(val)
        return out

    @staticmethod
    def _softcaps(L, down: Projection, ups: List[Projection]) -> List[float]:
        """The positive scalars that divide or multiply a tanh's input or output between the up
        projections and the down projection's input: the candidate caps of c tanh(v / c)."""
        out: List[float] = []
        for o in _ops_between(down, ups):
            if o.name == "moec.tanh":
                near = [o.operands[0].owner] + [u for u in L.users.get(id(o.results[0]), [])]
                for n in near:
                    if n is None or n.name not in ("moec.div", "moec.mul"):
                        continue
                    for a in n.operands:
                        c = L.const_array(a)
                        if c is not None and c.size == 1:
                            val = abs(float(np.asarray(c, np.float64).reshape(-1)[0]))
                            val = 1.0 / val if n.name == "moec.mul" and n is o.operands[0].owner and val else val
                            if 0 < val < 1e30 and val not in out:
                                out.append(val)
        return out[:8]

    # ------------------------------------------------------------------------------------------
    def _rewrite(self, L, x, logits, bias_v, topk, y, experts: List[Expert], scoring, k, E, region,
                 shared=None) -> bool:
        self._reached = {"y": y, "experts": experts, "scoring": scoring, "k": k, "E": E}  # (trace)
        m = L.m
        act = experts[0].activation
        gated = len(experts[0].ups) == 2
        ffn = {"activation": "swiglu" if gated else act, "gate_layout": "concat"}
        if gated:
            p = gated_params(act)
            ffn.update(p)  # (the op's activation and its attributes: alpha/beta/limit or the soft caps)
        dt = x.type.dtype.np
        w_in, w_out, b_in, b_out = self._expert_arrays(experts, dt)
        scales = self._scale_candidates(L, region)
        candidates = []
        posts = ("none", "softmax", "sigmoid") if scoring == "none" else ("none",)
        # for positive weights an L1 norm equals the plain sum: the graph's own ops decide the label
        # (after the selection: an abs in the router's own scores, DeepSeek-V4's softplus, is no L1 norm)
        after = L.forward(topk.results)
        # (an abs that a sum over the slots reads: |w|; one inside a stable logsigmoid, Inkling's, is no L1 norm)
        l1 = any(o.name == "moec.reduce_l1" or (o.name == "moec.abs" and any(
            u.name == "moec.reduce_sum" for u in L.users.get(id(o.results[0]), [])))
            for o in L.f.ops if id(o) in region and id(o) in after)
        norms = ("none", "l1", "sum") if l1 else ("none", "sum", "l1")
        capacities = [0] + (self._capacity_candidates(L, region) if k == 1 else [])
        floors = self._norm_min_candidates(L, region)
        mixers = self._mixer_candidates(L, region) if scoring == "none" else []
        posts = posts + tuple(f"sparsemixer@{eps!r}" for eps in mixers)
        for post, norm, scale, cap, floor in itertools.product(posts, norms, scales, capacities, floors):
            # (a renormalisation after a softmax changes nothing; after a sigmoid it does: Kolibri1)
            if post not in ("none", "sigmoid") and norm != "none" or (floor and norm == "none"):
                continue
            post, _, eps = post.partition("@")
            cand = {"k": k, "scoring": scoring, "post": post, "norm": norm, "scale": scale,
                    "norm_eps": 1e-20 if (norm != "none" and scoring == "sigmoid") else 0.0, "capacity": cap}
            if eps:
                cand["jitter_eps"] = float(eps)
            if floor:
                cand["norm_min"] = floor
            if self._n_shared:
                cand["n_shared"] = self._n_shared
            if self._skip:
                cand["n_skip"] = self._skip
            if self._group is not None:
                cand.update(n_group=self._group[0], topk_group=self._group[1], group_score=self._group[2])
                if self._group_fill != float("-inf"):
                    cand["group_fill"] = self._group_fill
            candidates.append(cand)
        # a capacity (Switch) counted over all the tokens or per sequence (B sequences of S tokens: a [B, S, D] view
        # of x with both dims dynamic gives moe.route logits [B, S, E]); the tokens over it pass x through (4.x) or
        # output 0 (5.x) -- each a candidate; probes then include two sequences of identical tokens longer than
        # the largest candidate capacity, the only probe on which these differ
        self._seqview = next((v for v in L.xviews if v.type.rank == 3), None)
        candidates = [dict(c, _seq=sq, _passthrough=pt) if c["capacity"] else c for c in candidates
                      for sq in ((False, True) if c["capacity"] and self._seqview is not None else (False,))
                      for pt in ((True, False) if c["capacity"] else (True,))]
        probes = self._probes(x, L)
        if len(capacities) > 1 and L.static_rows is None:
            n = L.rows(max(capacities) + 2)
            ident = np.repeat(np.random.default_rng(17).standard_normal((1, int(x.type.shape[1]))), 2 * n, axis=0)
            probes.append(L.exact(ident.astype(x.type.dtype.np)))
            L.__dict__.setdefault("seq_probes", {})[id(probes[-1])] = 2  # (two sequences: see _Layer.xfeed)
        if self._zero:  # identity experts: tokens whose one selection holds an expert FFN and an identity id
            probes += self._pairing_probes(L, x, logits, E - self._zero, E, k)
        want = self._eval_original(L, x, y, probes)
        # tokens a scatter without reduction writes more than once (see _repeated_rows): where a candidate differs
        # from the layer on those tokens only, the reason says so
        repeated = self._repeated_rows(L, region, probes) if self._zero else None
        if shared is not None:
            sp = gated_params(shared["act"]) if shared["gated"] else {}
            sa = sp.get("activation", "swiglu") if shared["gated"] else shared["act"]
            if sa != ffn["activation"] or any(sp[k] != ffn.get(k) for k in sp):
                return False  # the shared op uses the routed experts' activation attributes
        # a constant per-expert factor on the routing weights (Gemma4's per_expert_scale[ids]) scales expert e's
        # output by s[e]: folded into its down projection (w_out[e], b_out[e] times s[e]), tried after none
        # a post-expert RMSNorm between each expert's down projection and its routing weight (Muse Spark): moe.experts'
        # post_norm_eps, a constant [D] input scale of the norm folded into every expert's w_out / b_out rows; none first
        # and a weight after that norm (Ergo's ErgoExpertNorm: weight[ids] [E, D], or one [D] row for every expert):
        # moe.experts' post_norm_w, tried after the norm without it
        self._post = self._pnw = None
        posts = self._post_norm_candidates(L, region, int(w_out.shape[1]), after)
        pnws = self._post_norm_weight_candidates(L, region, topk, E - self._zero - self._skip, int(w_out.shape[1])) \
            if posts else []
        for pn, scale_v, pnw in [(None, v, None) for v in [None] + self._expert_scale_candidates(L, region, topk, E)] \
                + [(c, None, None) for c in posts] + [(c, None, g) for c in posts for g in pnws]:
            s_e = None if scale_v is None else L.const_array(scale_v).reshape(-1).astype(np.float64)
            # (a half layer is proved on its f32 analogue: the folded product unrounded there, rounded to the
            # layer's type in the rewrite that is kept, see _real_weights)
            w_out_s, b_out_s = self._scaled(w_out, b_out, s_e, np.float32 if L.widened and s_e is not None else dt)
            self._post, self._pnw = pn, pnw
            ffn_p = ffn if pn is None else dict(ffn, post_norm_eps=pn[1])
            if pn is not None and pn[0] is not None:
                w_out_s, b_out_s = self._input_scaled(w_out_s, b_out_s, pn[0], np.float32 if L.widened else dt)
            weights = self._weight_ops(m, w_in, w_out_s, b_in, b_out_s, shared,
                                       None if pnw is None else self._pnw_array(L.const_array(pnw),
                                                                                E - self._zero - self._skip))
            for name in ("w_out", "b_out"):
                if weights[name] is not None and weights[name].results[0].type.dtype != DType.from_np(np.dtype(dt)):
                    weights[name].results[0].type = TensorType(DType.from_np(np.dtype(dt)),
                                                               weights[name].results[0].type.shape)
            # the routing weight scales the combine (usual) or the expert's input (Llama-4)
            # (every candidate at the output first: the input placement is only tried when none matched)
            for at, attrs in itertools.product(("none", "input") if scale_v is None and pn is None else ("none",),
                                               candidates):
                new_ops, y_new = self._build(x, logits, bias_v, attrs, E, weights, ffn_p, y, at)
                if self._matches(L, new_ops, x, y_new, probes, want):
                    self._real_weights(L, weights, experts, shared, dt, scale_v)
                    self._commit(L, new_ops, y, y_new, dict(attrs, weights_at=at), experts, E, ffn_p, region, topk,
                                 bias_v, shared, expert_scale=scale_v is not None)
                    return True
                if repeated is not None and self._repeat_near is None:
                    bad: list = []
                    self._matches(L, new_ops, x, y_new, probes, want, bad)
                    if any(bad) and all(b is not None and b <= r[0] for b, r in zip(bad, repeated)):
                        i = next(i for i, b in enumerate(bad) if b)
                        t = min(bad[i])
                        ids = np.asarray(evaluate(L.em, L.f, [topk.ids], L.xfeed(probes[i]), widened=L.widened)[0])
                        self._repeat_near = {"ops": repeated[i][1], "ids": ids.reshape(ids.shape[0], -1)[t].tolist(),
                                             "unsorted": topk.op.name == "moec.topk" and not topk.op.attrs["sorted"]}
            for o in weights.values():  # no candidate matched: drop the stacked copies
                if o is not None:
                    m.weights.remove_unused({k for k in m.weights if k != o.attrs["value"].key})
        return False

    @staticmethod
    def _input_scaled(w_out, b_out, g, dt):
        """(w_out, b_out) with output row d of every expert times g[d] (a post-norm's input scale, folded)."""
        w = (w_out.astype(np.float64) * g[None, :, None]).astype(dt)
        b = None if b_out is None else (b_out.astype(np.float64) * g[None, :]).astype(dt)
        return w, b

    @staticmethod
    def _pnw_array(a: np.ndarray, E: int) -> np.ndarray:
        """moe.experts' post_norm_w [E, D] (f32: holds f32, bf16 and f16 values exactly) from a candidate constant:
        the [E', D] table gathered by the ids (its first E rows: the FFN experts) or one [D] row for every expert."""
        a = np.asarray(a)
        w = a[:E] if a.ndim == 2 and a.shape[0] >= E else np.broadcast_to(a.reshape(1, -1), (E, a.size))
        return np.ascontiguousarray(w, np.float32)

    @staticmethod
    def _post_norm_weight_candidates(L, region, root: "_Root", E: int, D: int) -> List[Value]:
        """Constants that may weight a post-expert RMSNorm's output per expert (moe.experts' post_norm_w): a [E', D]
        table (E' >= E) the region gathers along axis 0 by a value computed from the selected ids (Ergo's
        ErgoExpertNorm.weight[expert_ids]), or a [D] vector a product after a mean of squares takes (one row for
        every expert).  Structure only picks them: the layer's proof decides."""
        ids_fwd = L.forward([root.ids])
        after_norm = L.forward([o.results[0] for o in L.f.ops if id(o) in region and o.name == "moec.reduce_mean"
                                and id(o) in ids_fwd])
        out: List[Value] = []
        for o in L.f.ops:
            if id(o) not in region:
                continue
            # (axis-0 gather; the dynamo export's GatherND of index rows [n, 1], batch_dims 0, is the same)
            if (o.name == "moec.gather" and o.attrs["axis"] == 0) or (
                    o.name == "moec.gather_nd" and o.attrs.get("batch_dims", 0) == 0 and o.operands[1].type.rank >= 1
                    and o.operands[1].type.shape[-1] == 1):
                c, idx = o.operands
                if idx is not root.ids and (idx.owner is None or id(idx.owner) not in ids_fwd):
                    continue
                t = c.type
                if t.rank == 2 and isinstance(t.shape[0], int) and t.shape[0] >= E and t.shape[1] == D and \
                        L.const_array(idx) is None and L.const_array(c) is not None:
                    out.append(c)
            elif o.name == "moec.mul" and id(o) in after_norm:
                for a in o.operands:
                    t = a.type
                    if t.rank >= 1 and t.shape[-1] == D and t.numel() == D and L.const_array(a) is not None:
                        out.append(a)
        seen: List[Value] = []
        for v in out:
            if all(v is not w for w in seen):
                seen.append(v)
        return seen[:3]

    @staticmethod
    def _post_norm_candidates(L, region, D: int, after=None) -> list:
        """(g or None, eps) of an RMSNorm the region applies to rows of D values: eps a scalar constant added to a
        mean over the last axis of the square of some v; g a constant [D] vector v is a product with (the norm's
        input scale), else None.  The layer's proof decides whether the experts' outputs pass through it."""
        out = []
        for o in L.f.ops:
            # (``after``: the ops downstream of the selection -- a norm of the experts' outputs is; the decoder's
            # own norms that a whole model's region also holds are not, and would crowd out the candidates)
            if id(o) not in region or o.name != "moec.reduce_mean" or o.results[0].type.rank < 1 or (
                    after is not None and id(o) not in after):
                continue
            sq = o.operands[0].owner
            if sq is None or not ((sq.name == "moec.pow" and (lambda c: c is not None and c.size == 1 and
                                   float(c.reshape(-1)[0]) == 2.0)(L.const_array(sq.operands[1]))) or
                                  (sq.name == "moec.mul" and sq.operands[0] is sq.operands[1])):
                continue
            eps = None
            for u in L.users.get(id(o.results[0]), []):
                if u.name == "moec.add":
                    c = L.const_array(u.operands[1] if u.operands[0] is o.results[0] else u.operands[0])
                    if c is not None and c.size == 1 and np.isfinite(c).all() and float(c.reshape(-1)[0]) >= 0:
                        eps = float(np.asarray(c, np.float64).reshape(-1)[0])
            if eps is None and any(u.name in ("moec.sqrt", "moec.rsqrt") for u in L.users.get(id(o.results[0]), [])):
                eps = 0.0  # (no eps: the dynamo export of Muse Spark's norm drops its 1e-8)
            if eps is None:
                continue
            v, g = sq.operands[0], None
            while v.owner is not None and v.owner.name == "moec.cast":  # (a half layer: the norm in f32)
                v = v.owner.operands[0]
            if v.owner is not None and v.owner.name == "moec.mul":
                for a in v.owner.operands:
                    c = L.const_array(a)
                    if c is not None and c.size == D and c.ndim >= 1 and c.shape[-1] == D:
                        g = np.asarray(c, np.float64).reshape(-1)
            cand = (g, eps)
            if not any(e == eps and ((h is None and g is None) or (h is not None and g is not None and
                                                                  np.array_equal(h, g))) for h, e in out):
                out.append(cand)
        return out[:2]

    @staticmethod
    def _scaled(w_out, b_out, s_e, dt):
        """(w_out, b_out) with expert e's rows times s_e[e] (None: unchanged)."""
        if s_e is None:
            return w_out, b_out
        w = (w_out.astype(np.float64) * s_e[:, None, None]).astype(dt)
        b = None if b_out is None else (b_out.astype(np.float64) * s_e[:, None]).astype(dt)
        return w, b

    @staticmethod
    def _expert_scale_candidates(L, region, root: "_Root", E: int) -> List[Value]:
        """Constant [E] vectors the region gathers by the selected ids (a factor per chosen expert)."""
        ids_fwd = L.forward([root.ids])
        out = []
        for o in L.f.ops:
            if id(o) not in region or o.name != "moec.gather" or o.attrs["axis"] not in (0, -1):
                continue
            c, idx = o.operands
            if idx.owner is not None and id(idx.owner) not in ids_fwd and idx is not root.ids:
                continue
            a = L.const_array(c)
            if a is not None and a.size == E and a.ndim == 1 and L.const_array(idx) is None:
                out.append(c)
        return out[:2]

    @staticmethod
    def _expert_arrays(experts: List[Expert], dt):
        """(w_in [E, 2F or F, D], w_out [E, D, F], b_in, b_out) of moe.experts from the experts' projections."""
        w_in = np.stack([np.concatenate([p.weight for p in e.ups], axis=0) for e in experts]).astype(dt)
        w_out = np.stack([e.down.weight for e in experts]).astype(dt)
        has_b_in = any(p.bias is not None for e in experts for p in e.ups)
        has_b_out = any(e.down.bias is not None for e in experts)
        b_in = np.stack([np.concatenate([p.bias if p.bias is not None else np.zeros(p.weight.shape[0])
                                         for p in e.ups]) for e in experts]).astype(dt) if has_b_in else None
        b_out = np.stack([e.down.bias if e.down.bias is not None else np.zeros(w_out.shape[1])
                          for e in experts]).astype(dt) if has_b_out else None
        return w_in, w_out, b_in, b_out

    def _real_weights(self, L, weights, experts: List[Expert], shared, dt, scale_v=None) -> None:
        """The proved rewrite's weight constants hold what the proofs evaluated: where a weight of the module
        was read as probe values (see _probe_array), put the real values (the same projections, parts
        and experts taken from the module's own constants) in their place."""
        if not L.em.substituted and scale_v is None and (self._post is None or self._post[0] is None or
                                                          not L.widened) and (self._pnw is None or not L.widened):
            return
        # (a per-expert scale is not a projection weight: its real values unless it held garbage, see _unfit)
        real = [Expert(e.index, [L.real(p) for p in e.ups], L.real(e.down), e.activation, e.gate_first)
                for e in experts]
        w_in, w_out, b_in, b_out = self._expert_arrays(real, dt)
        s_e = None if scale_v is None else L.real_const(scale_v).reshape(-1).astype(np.float64)
        w_out, b_out = self._scaled(w_out, b_out, s_e, dt)
        if self._post is not None and self._post[0] is not None:  # (the post-norm's input scale: a real constant)
            w_out, b_out = self._input_scaled(w_out, b_out, self._post[0], dt)
        arrays = {"w_in": w_in, "w_out": w_out, "b_in": b_in, "b_out": b_out}
        if self._pnw is not None:  # (the post-norm's weight: the module's real constant)
            arrays["post_norm_w"] = self._pnw_array(L.real_const(self._pnw), weights["post_norm_w"].results[0].type.shape[0])
        if shared is not None:
            arrays.update({f"shared_{k}": v for k, v in self._shared_arrays(L, shared, dt, real=True).items()})
        for name, o in weights.items():
            if o is not None and arrays.get(name) is not None:
                key = o.attrs["value"].key
                assert arrays[name].shape == L.m.weights[key].shape and \
                    DType.from_np(arrays[name].dtype) == o.results[0].type.dtype
                L.m.weights.set(key, arrays[name])

    @staticmethod
    def _weight_ops(m, w_in, w_out, b_in, b_out, shared=None, post_norm_w=None):
        const = OPS["moec.constant"]
        out = {}
        sh = shared or {}
        for name, arr in (("w_in", w_in), ("w_out", w_out), ("b_in", b_in), ("b_out", b_out),
                          ("shared_w_in", sh.get("w_in")), ("shared_w_out", sh.get("w_out")),
                          ("shared_gate", sh.get("gate")), ("post_norm_w", post_norm_w)):
            if arr is None:
                out[name] = None
                continue
            key = m.weights.add(arr, f"experts_{name}")
            o = const.create([], {"value": ResourceRef(key)}, None, [TensorType(DType.from_np(arr.dtype), arr.shape)])
            o.results[0].name = f"experts_{name}"
            out[name] = o
        return out

    @staticmethod
    def _capacity_candidates(L, region) -> List[int]:
        """Integer constants the region compares against (a token count limit per expert)."""
        out = []
        for o in L.f.ops:
            if id(o) in region and o.name in ("moec.less_equal", "moec.less", "moec.greater", "moec.greater_equal"):
                for v in o.operands:
                    c = L.const_array(v)
                    if c is not None and c.size == 1:
                        val = float(c.reshape(-1)[0])
                        for cap in (int(val), int(val) - 1, int(val) + 1):
                            if val == int(val) and cap >= 1 and cap not in out:
                                out.append(cap)
        return out

    @staticmethod
    def _mixer_candidates(L, region) -> List[float]:
        """PhiMoE's sparsemixer threshold: eps where the region compares a relative gap (a quotient) with
        the constant 2 eps (``(max - s) / clamp(|s|, min=max) > 2 eps``)."""
        out = []
        for o in L.f.ops:
            if id(o) not in region or o.name != "moec.greater":
                continue
            a, b = o.operands
            c = L.const_array(b)
            while a.owner is not None and a.owner.name == "moec.cast":  # (a bf16 quotient compared in f32)
                a = a.owner.operands[0]
            if a.owner is None or a.owner.name != "moec.div" or c is None or c.size != 1:
                continue
            eps = float(c.reshape(-1)[0]) / 2
            if np.isfinite(eps) and eps >= 0 and eps not in out:
                out.append(eps)
        return out

    @staticmethod
    def _norm_min_candidates(L, region) -> List[float]:
        """The floor of a renormalisation written w / clamp(sum(w), min) (ERNIE-4.5): the constant lower
        bound of a clip (or max) of a sum over the slot axis whose result divides, first; then 0 (none).
        The probes cannot tell a floor below every sum from none: the graph's math decides, as for L1."""
        out = []
        for o in L.f.ops:
            if id(o) not in region or o.name not in ("moec.clip", "moec.max") or not o.operands:
                continue
            src = o.operands[0].owner
            if src is None or src.name not in ("moec.reduce_sum", "moec.reduce_l1") or \
                    not any(u.name == "moec.div" and u.operands[1] is o.results[0]
                            for u in L.users.get(id(o.results[0]), [])):
                continue
            lo = o.operands[1] if len(o.operands) > 1 else None
            c = L.const_array(lo) if lo is not None else None
            if c is not None and c.size == 1 and np.isfinite(c.reshape(-1)[0]) and float(c.reshape(-1)[0]) > 0:
                out.append(float(c.reshape(-1)[0]))
        return out[:1] + [0.0]

    def _scale_candidates(self, L, region) -> List[float]:
        """1, plus scalar constants multiplied into the region (routed scaling factors)."""
        out = [1.0]
        for o in L.f.ops:
            if id(o) in region and o.name == "moec.mul":
                for v in o.operands:
                    c = L.const_array(v)
                    if c is not None and c.size == 1 and float(c.reshape(-1)[0]) not in out:
                        out.append(float(c.reshape(-1)[0]))
        # two scalings in a row (Inkling's route_scale * global_scale): their products, after the single ones
        singles = out[1:5]
        for n in (2, 3):
            for cs in itertools.combinations(singles, n):
                v = float(np.prod(np.asarray(cs, np.float32)))  # (in the weights' f32, as the graph multiplies)
                if v not in out:
                    out.append(v)
        return out

    @staticmethod
    def _probes(x: Value, L: Optional["_Layer"] = None) -> List[np.ndarray]:
        D = x.type.shape[1]
        rng = np.random.default_rng(11)
        dt = x.type.dtype.np
        rows = L.rows if L is not None else (lambda n: n)
        ident = np.repeat(rng.standard_normal((1, D)), rows(4), axis=0)
        exact = L.exact if L is not None else (lambda a: a)
        return [exact(rng.standard_normal((rows(PROBE_T), D)).astype(dt)), exact(ident.astype(dt)),
                exact(rng.standard_normal((rows(1), D)).astype(dt))]

    @staticmethod
    def _pairing_probes(L: "_Layer", x: Value, logits: Value, n: int, E: int, k: int) -> List[np.ndarray]:
        """Probe tokens whose router logits are set (fed at the logits value: the same to the layer and to a
        rewrite, whose moe.route reads them; see _Layer.xfeed) so that each token's selection holds an expert FFN
        e and an identity id c, c ranked before e and e before c, for every such pair (at most _MAX_PAIRINGS,
        spread over them).  A graph may send an identity expert's slot through an expert FFN with weight 0
        (LongCat-Flash's dummy ids): a token then reaches that FFN through two slots, and random probe tokens
        choose such a pairing only by chance.  Logits 3 apart by rank: the selection follows them unless a
        selection bias reorders scores that close (it is proved on whatever it selects)."""
        if k < 2 or logits.type.rank != 2 or logits.type.shape[1] != E or n >= E:
            return []
        pairs = [(e, c) for c in range(n, E) for e in range(n)]
        if 2 * len(pairs) > _MAX_PAIRINGS:  # (a seeded sample of them)
            pairs = [pairs[i] for i in sorted(np.random.default_rng(23).choice(len(pairs), _MAX_PAIRINGS // 2,
                                                                               replace=False))]
        pairs = [ab for e, c in pairs for ab in ((e, c), (c, e))]
        rows = np.empty((len(pairs), E))
        for r, (a, b) in enumerate(pairs):
            rows[r, [a, b] + [i for i in range(E) if i not in (a, b)]] = -3.0 * np.arange(E)
        rng = np.random.default_rng(19)
        step = L.static_rows or len(rows)  # (a static layer: probes of exactly its token count)
        out = []
        for s in range(0, len(rows), step):
            T = L.rows(len(rows[s:s + step]))
            lg = np.resize(rows[s:s + step], (T, E)).astype(logits.type.dtype.np)  # (repeated to T rows)
            X = L.exact(rng.standard_normal((T, int(x.type.shape[1]))).astype(x.type.dtype.np))
            L.__dict__.setdefault("probe_feeds", {})[id(X)] = (X, {id(logits): lg})
            out.append(X)
        return out

    @staticmethod
    def _repeated_rows(L: "_Layer", region: Set[int], probes: List[np.ndarray]) -> Optional[list]:
        """Per probe, (the token rows that a scatter without reduction inside the layer writes more than once, those
        scatters): the first coordinate of its repeated targets, where the scattered tensor has one row per probe
        token.  ONNX leaves such writes undefined (onnxruntime and moec's reference apply them in order: the last
        wins), so a layer that gets there does not sum what it scatters to one token.  None when the layer has no
        such scatter."""
        scat = [o for o in L.f.ops if id(o) in region and o.name in ("moec.scatter_elements", "moec.scatter_nd")
                and o.attrs["reduction"] == "none"]
        if not scat:
            return None
        out = []
        for X in probes:
            rows: Set[int] = set()
            hit = []
            try:
                vals = evaluate(L.em, L.f, [v for o in scat for v in o.operands[:2]], L.xfeed(X), widened=L.widened)
            except Exception:
                out.append((rows, hit))
                continue
            for j, o in enumerate(scat):
                data, idx = np.asarray(vals[2 * j]), np.asarray(vals[2 * j + 1]).astype(np.int64)
                if data.ndim == 0 or data.shape[0] != X.shape[0] or idx.size == 0:
                    continue
                if o.name == "moec.scatter_elements":
                    a = o.attrs["axis"] % data.ndim
                    tgt = list(np.indices(idx.shape).reshape(idx.ndim, -1))
                    tgt[a] = idx.reshape(-1) % data.shape[a]
                    tgt = np.stack(tgt, axis=1)
                else:
                    tgt = idx.reshape(-1, idx.shape[-1]) % np.asarray(data.shape[:idx.shape[-1]])
                keys, counts = np.unique(tgt, axis=0, return_counts=True)
                rep = {int(r) for r in keys[counts > 1][:, 0]}
                if rep:
                    rows |= rep
                    hit.append(o)
            out.append((rows, hit))
        return out

    def _eval_original(self, L, x, y, probes):
        outs = []
        for X in probes:
            try:
                outs.append(np.asarray(evaluate(L.em, L.f, [y], L.xfeed(X), widened=L.widened)[0], np.float64))
            except Exception:
                raise _NoMatch from None
        return outs

    def _build(self, x, logits, bias_v, attrs, E, weights, ffn, y, weights_at="none"):
        ops = [o for o in weights.values() if o is not None]
        if bias_v is not None and bias_v.type.rank != 1:  # a [1, E] bias (LongCat's bias.unsqueeze(0)): as [E]
            shape = OPS["moec.constant"].create([], {"value": np.asarray([-1], np.int64)}, "moe.route")
            flat = OPS["moec.reshape"].create([bias_v, shape.results[0]], {}, "moe.route")
            ops += [shape, flat]
            bias_v = flat.results[0]
        if attrs.get("_seq"):  # capacity per sequence: the logits [N, E] viewed as [B, S, E] of x's [B, S, D] view
            lead = OPS["moec.shape"].create([self._seqview], {"start": 0, "end": 2}, "moe.route")
            tail = OPS["moec.constant"].create([], {"value": np.asarray([E], np.int64)}, "moe.route")
            cat = OPS["moec.concat"].create([lead.results[0], tail.results[0]], {"axis": 0}, "moe.route")
            seq = OPS["moec.reshape"].create([logits, cat.results[0]], {}, "moe.route")
            ops += [lead, tail, cat, seq]
            logits = seq.results[0]
        route_in = [logits] + ([bias_v] if bias_v is not None else [])
        route = OPS["moe.route"].create(route_in, {a: v for a, v in attrs.items() if not a.startswith("_")},
                                        "moe.route")
        ops.append(route)
        w, ids = route.results
        n_ffn = E - self._zero - self._skip
        ident = None
        if self._zero:  # ids >= n_ffn: identity experts, out of the dispatch; x times their weights' sum
            def op1(name, ins, attrs=None):
                o = OPS[name].create(ins, attrs or {}, "moe.identity_experts")
                ops.append(o)
                return o.results[0]

            def const(a):
                return op1("moec.constant", [], {"value": np.asarray(a)})
            hit = op1("moec.greater_equal", [ids, const(np.int64(n_ffn))])
            ids = op1("moec.select", [hit, const(np.int64(-1)), ids])
            wid = op1("moec.reduce_sum", [op1("moec.select", [hit, w, const(np.zeros((), w.type.dtype.np))])],
                      {"axes": (-1,), "keepdims": True})
            ident = op1("moec.mul", [x, op1("moec.cast", [wid], {"to": x.type.dtype})])
        disp = OPS["moe.dispatch"].create([ids], {"num_experts": n_ffn}, "moe.dispatch")
        ops.append(disp)
        extra = [weights[k].results[0] for k in ("b_in", "b_out") if weights[k] is not None]
        if weights_at != "none":
            extra.append(w)
        pnw = weights.get("post_norm_w")
        if pnw is not None:
            extra.append(pnw.results[0])
        ex = OPS["moe.experts"].create([x, ids, disp.results[0], disp.results[1], weights["w_in"].results[0],
                                        weights["w_out"].results[0]] + extra,
                                       {**ffn, "has_b_in": weights["b_in"] is not None,
                                        "has_b_out": weights["b_out"] is not None, "weights_at": weights_at,
                                        **({"has_post_norm_w": True} if pnw is not None else {})},
                                       "moe.experts")
        ops.append(ex)
        comb_in, comb_attrs = [ex.results[0], w], {"weighted": weights_at == "none"}
        passthrough = attrs.get("capacity", 0) > 0 and attrs.get("_passthrough", True)

        def to_y(v):  # the layer returns a wider type than it computes in: combine in that type
            if v.type.dtype == y.type.dtype:
                return v
            c = OPS["moec.cast"].create([v], {"to": y.type.dtype}, "moe.widen")
            ops.append(c)
            return c.results[0]
        comb_in[0] = to_y(comb_in[0])
        if weights.get("shared_w_in") is not None:
            sh_in = [x, weights["shared_w_in"].results[0], weights["shared_w_out"].results[0]]
            if weights.get("shared_gate") is not None:
                sh_in.append(weights["shared_gate"].results[0])
            sh = OPS["moe.shared_experts"].create(sh_in, {k: v for k, v in ffn.items() if k != "post_norm_eps"},
                                                  "moe.shared_experts")
            ops.append(sh)
            comb_in.append(to_y(sh.results[0]))
            comb_attrs["has_shared"] = True
        if passthrough:  # tokens over capacity output x unchanged (Switch)
            comb_in += [to_y(x), ids]
            comb_attrs["passthrough"] = True
        y_t = y.type if y.type.shape[1] is not None else TensorType(y.type.dtype, (y.type.shape[0], x.type.shape[1]))
        comb = OPS["moe.combine"].create(comb_in, comb_attrs, "moe.combine", [y_t])
        ops.append(comb)
        if ident is not None:
            add = OPS["moec.add"].create([comb.results[0], to_y(ident)], {}, "moe.identity_experts")
            ops.append(add)
            return ops, add.results[0]
        return ops, comb.results[0]

    def _matches(self, L, new_ops, x, y_new, probes, want, bad: Optional[list] = None) -> bool:
        """Whether the new ops give the layer's output on every probe.  ``bad`` (a list): every probe is compared
        and gets, per probe, the set of output rows (tokens) that differ (None where the rewrite did not run or
        gave another shape)."""
        m = L.em
        ok = True
        for X, W in zip(probes, want):
            env = {id(x): widen(X) if L.widened else X}
            try:
                # the values the new ops read from the layer's graph, probed; then the new ops on the IR walker
                from moec.ir.walk import walk
                made = {id(r) for o in new_ops for r in o.results}
                read = [v for o in new_ops for v in o.operands if id(v) not in made and id(v) not in env]
                env.update(zip(map(id, read), evaluate(m, L.f, read, L.xfeed(X), widened=L.widened)))
                walk(new_ops, env, lambda o, ins: eval_op(m, o, ins, widened=L.widened))
            except Exception:
                if bad is None:
                    return False
                ok = False
                bad.append(None)
                continue
            got = np.asarray(env[id(y_new)], np.float64)
            scale = max(1.0, float(np.max(np.abs(W))) if W.size else 1.0)
            rt, at = self.rtol, self.atol
            if got.shape != W.shape or not np.allclose(got, W, rtol=rt, atol=at * scale):
                if bad is None:
                    return False
                ok = False
                if got.shape != W.shape or got.ndim == 0:
                    bad.append(None)
                    continue
            if bad is not None and got.shape == W.shape and got.ndim:
                close = np.isclose(got, W, rtol=rt, atol=at * scale).reshape(got.shape[0], -1).all(axis=1)
                bad.append({int(r) for r in np.nonzero(~close)[0]})
        return ok

    def _commit(self, L, new_ops, y, y_new, attrs, experts, E, ffn, region, topk, bias_v, shared=None,
                expert_scale=False):
        f, m = L.f, L.m
        # insert the new ops right before the first op that uses the layer output
        users = [o for o in f.ops if any(v is y for v in o.operands)]
        at = min((f.ops.index(o) for o in users), default=len(f.ops))
        replaced = [o.loc or o.name for o in f.ops if id(o) in region]
        f.ops[at:at] = new_ops
        f.replace_all_uses(y, y_new)
        fam = "longcat-flash" if self._zero else "gemma4" if expert_scale else family_of(attrs, bias_v is not None, ffn)
        name = record_moe_layer(m, {
            "family": fam, "source": "recognized", **({"identity_experts": self._zero} if self._zero else {}),
            **({"skip_classes": f"{self._skip} (router classes {E - self._skip}..{E - 1}: a slot that chooses one "
                                f"contributes nothing)"} if self._skip else {}),
            **({"expert_scale": "folded into each expert's down projection"} if expert_scale else {}),
            **({"post_expert_norm": {"eps": ffn["post_norm_eps"], "input_scale": "folded into each expert's down "
                                     "projection" if self._post[0] is not None else None,
                                     **({"weight": "per expert [E, D] after the norm (moe.experts post_norm_w)"}
                                        if self._pnw is not None else {})}}
               if ffn.get("post_norm_eps") is not None else {}),
            **({"router_input": "its own tokens (not the experts')"} if L.router_in is not None else {}),
            "routing": {k: attrs[k] for k in sorted(attrs) if k != "weights_at" and not k.startswith("_")},
            **({"capacity_counted": "per sequence" if attrs.get("_seq") else "over all tokens",
                "over_capacity_tokens": "pass x through" if attrs.get("_passthrough", True) else "output 0"}
               if attrs.get("capacity") else {}),
            "routing_weight_scales": "expert input" if attrs.get("weights_at") == "input" else "expert output",
            **({"always_on_experts": f"{self._n_shared} (moe.experts ids {E - self._n_shared}..{E - 1}, weighted by the "
                                     f"route's last {self._n_shared} slot(s))"} if self._n_shared else {}),
            "correction_bias": bias_v is not None, "E": E - self._zero - self._n_shared - self._skip, "k": attrs["k"],
            "D": int(y_new.type.shape[1]),
            "F": int(experts[0].down.weight.shape[1]), "activation": ffn["activation"] if ffn["activation"] != "swiglu"
            else ("swiglu" if ffn.get("limit", np.inf) == float("inf") else
                  "clamped_swiglu" if (ffn.get("alpha"), ffn.get("beta")) == (1.0, 0.0) else "gpt_oss_swiglu"),
            "shared_experts": self._n_shared if self._n_shared else 0 if shared is None else 1,
            "shared_expert_gate": bool(shared is not None and shared["gate"] is not None),
            "shared_F": None if shared is None else int(shared["w_out"].shape[2]), "replaced_nodes": replaced[:64] + (["..."] if len(replaced) > 64 else []),
            "replaced_node_count": len(replaced)})
        next(o for o in new_ops if o.name == "moe.combine").attrs["layer"] = name


def family_of(attrs: dict, has_bias: bool, ffn: dict) -> str:
    """The moe-routing.md family a set of route attributes corresponds to."""
    s, post, norm, k = attrs["scoring"], attrs["post"], attrs["norm"], attrs["k"]
    if attrs.get("n_shared"):  # always-on experts weighted by the route beside the top-k
        return "inkling" if s == "sigmoid" and norm == "sum" else "custom"
    if attrs.get("n_skip"):  # skip classes: chosen like experts, computing nothing
        return "zaya" if s == "softmax" and has_bias and post == "none" and norm == "none" else "custom"
    if post == "sparsemixer":
        return "phimoe"
    if ffn.get("limit", float("inf")) != float("inf") and ffn.get("alpha", 1.0) != 1.0 and post == "softmax":
        return "gpt-oss"
    if s == "none" and has_bias:  # selection by router values + a bias, where moe.route reads the graph's own
        # scores (DeepSeek-V4's sqrt(softplus(l)): weights those scores) or raw logits (Kolibri1: weights sigmoid(l))
        return "kolibri1" if post == "sigmoid" else "deepseek-v4" if post == "none" else "custom"
    if s == "none" and post == "softmax":
        return "granite-moe"
    if s == "none" and post == "sigmoid":  # (Llama-4 ships k=1; its code takes any k)
        return "llama-4"
    if s == "sigmoid" and has_bias:
        return "deepseek-v3"
    if s == "softmax" and has_bias:  # softmax scores, selection by scores + bias, weights without it
        return "ernie-4.5"
    if s == "softmax" and norm == "l1":
        return "dbrx"
    if s == "softmax" and norm == "sum":
        return "mixtral" if k == 2 else "qwen3-moe/olmoe"
    if s == "softmax" and norm == "none":
        return "switch" if k == 1 and attrs.get("capacity") else ("deepseek-v2" if attrs["scale"] != 1.0
                                                                   else "qwen2-moe")
    return "custom"


class _NoMatch(Exception):
    pass


def _fewer_experts(E: int, n: int, skip: bool = False) -> str:
    return (f"the router scores E={E} experts but the layer has expert FFNs for ids 0..{n - 1} only, and taking "
            + (f"the ids >= {n} as skip classes (Zaya's skip expert: a slot that chooses one contributes nothing; "
               f"the layer outputs 0 when every slot chooses one)" if skip else
               f"the ids >= {n} as identity experts (LongCat-Flash's zero-computation experts: the token itself "
               f"times its weight)")
            + " with any routing candidate does not reproduce the layer's output on probe tokens")


def _repeated_scatter(E: int, n: int, near: dict) -> str:
    ops = ", ".join(_trace.short(o) for o in near["ops"][:3])
    return (f"the export computes another function than the module: taking the router's ids >= {n} (E={E}, expert "
            f"FFNs for ids 0..{n - 1}) as identity experts reproduces the layer on probe tokens except on tokens "
            f"that the scatter {ops} (no reduction) writes twice (e.g. a token choosing ids {near['ids']}: it "
            f"reaches one expert FFN through two slots, an identity id sent through that FFN with weight 0 as "
            f"LongCat-Flash's code does); the layer keeps one of the two rows where the module's index_add_ sums "
            f"them (ONNX leaves repeated indices of a scatter without reduction undefined; onnxruntime and moec "
            f"apply them in order" + (", and which row comes last follows the top-k's slot order, which this "
                                      "top-k leaves unspecified (sorted=0): onnxruntime's and moec's differ"
                                      if near.get("unsorted") else "")
            + "; torch.onnx's TorchScript exporter writes index_add_ so and warns that duplicated indices make the "
              "model incorrect). Export the experts as batched_mm, or compile the module with moec.compile")

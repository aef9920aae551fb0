"""recognize-decoder: attention and RMSNorm of a decoder layer, found by their math and proved on probes.

Runs only for a target whose kernels implement the fused op (``TargetDesc.fused_decoder_ops``; the
others keep the decomposed graph).  Rewrites:

  * **RMSNorm**: ``scale * (x * rsqrt(mean(x^2, last axis) + eps))`` with x^2 written ``pow(x, 2)`` or
    ``x * x``, the inverse root ``reciprocal(sqrt(.))`` or ``1 / sqrt(.)`` (or ``x / sqrt(.)``), ``scale``
    a constant vector over the last axis (either operand order)  ->  ``moec.rms_norm(x, scale)``.
  * **Rotary embedding**: ``x * cos + rot(x) * sin`` (products and sum in either order) where ``rot(x)``,
    evaluated on random x, is transformers' rotate_half ``concat(-x[..., D/2:], x[..., :D/2])``  ->
    ``moec.rotary(x, cos, sin)``, or the interleaved rotation of pairs ``(x[2i], x[2i+1]) -> (-x[2i+1],
    x[2i])`` (GPT-J's rotate_every_two, however the export writes the strided slices, stack and flatten)
    ->  ``moec.rotary(x, cos, sin) {interleaved}``; any other rotation (halves swapped) is left alone.
  * **Attention of a decode step over a cache read in place** (compiler/decode.py's KVStep): the sum
    ``P_c V_c + P_n V_n`` of two matmuls whose probabilities share one softmax, split in two
    (``P_x = exp(Z_x - mx) / (sum exp(Z_c - mx) + sum exp(Z_n - mx))``, ``mx`` the max of both parts),
    the scores ``Z_c`` of the queries against a cache K stored in rows [B, Hkv, M, D] (``q @ K^T``, K^T a
    view's transpose of the last two dims, as V's rows) and ``Z_n`` against the new keys (``q @ k^T``),
    each masked and scaled (which part is the cache: the one whose scores the position argument reaches;
    both assignments are tried, the proof decides)  ->
    ``moec.kv_step_attention(q, K, V_c, k, V_n, pos)`` (ir/ops/kv.py), viewed back as the sum.  A
    half-precision cache (KVStep's ``kv_cache="f16"``: K and V f16 arguments widened by ``moec.cast`` to f32
    before the matmuls) becomes the op's f16 cache operands, the casts then dead (no widened copy of the
    cache per step); the proof runs on the widened values, which is what the op reads.  The
    structure only names the candidates (queries, caches, new keys/values, the position argument, the
    scale); the math is proved on probes: random q, caches, new keys/values at several positions (the
    masks: the cache's rows < pos, causal new keys, a sliding window read off the probabilities), and
    scores large enough that a softmax without its max subtraction overflows.
  * **Scaled dot-product attention**: ``softmax(scale * Q K^T + mask, last axis) V`` where the scores'
    matmul reads Q and K^T through the views a decomposed SDPA writes (reshape, expand, unsqueeze for
    repeat_kv / GQA, multiplications or divisions by scalar constants: the scale, split between Q and K
    or applied to the scores; K^T a transpose of the last two dims), an optional additive mask, the
    softmax result (optionally zeroed where a row is fully masked) through views into the matmul with
    V, the output viewed back as [B, Hq, S, Dv]  ->  ``moec.attention(q, k, v, mask)``.  The mask stays
    an operand (whatever it is); ``causal`` is set when the mask is computed from the arguments' shapes
    alone and, at two probe sizes, hides exactly the future keys (the kernel then skips their blocks).

The proof (as recognize-moe's): the module's arguments get probe values (integers in [0, 4), floats
N(0, 1), symbolic dims sized per symbol); the original graph computes q, k, v, the mask and the output;
the fused op must reproduce the output on those values and on random q, k, v of the same shapes
(relative error 1e-4).  A look-alike (another scale, the softmax over another axis, a scale after the
softmax, K not transposed) fails the structural match or the proof and is left alone.  Rows where every
key is masked: the op gives 0 (as torch's decomposed SDPA, which zeroes them); a graph without that
zeroing gives NaN there, and the rewrite is then a refinement.
"""
from __future__ import annotations

import itertools

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from moec.ir import Function, Module, Operation, Value
from moec.ir.opdef import OPS, const_value
from moec.ir.types import DType
from moec.passes.base import Pass, register_pass
from moec.passes.moe_util import ShapeOnly, evaluate, users

if TYPE_CHECKING:
    from moec.targets.base import TargetDesc

_VIEW_OPS = ("moec.reshape", "moec.expand", "moec.unsqueeze", "moec.squeeze")
_RTOL = 1e-4


def _const(m: Module, v: Value) -> Optional[np.ndarray]:
    c = const_value(v, m.weights)
    return None if c is None else np.asarray(c)


def _scalar(m: Module, v: Value) -> Optional[float]:
    c = _const(m, v)
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 and c.dtype.kind == "f" else None


def _other(o: Operation, v: Value) -> Optional[Value]:
    a, b = o.operands[:2]
    return b if a is v else a if b is v else None


def _close(got, want) -> bool:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return False
    ok = ~np.isnan(want)
    scale = max(1.0, float(np.abs(want[ok]).max())) if ok.any() else 1.0
    return bool(np.all(np.abs(got[ok] - want[ok]) <= _RTOL * scale))


def _zeros(m: Module, v: Value) -> bool:
    """v is all zeros: a zero constant, or constant_of_shape of a zero."""
    c = _const(m, v)
    if c is None and v.owner is not None and v.owner.name == "moec.constant_of_shape":
        c = np.asarray(v.owner.attrs["value"])
    return c is not None and c.size > 0 and not np.any(c)


def _built_from(v: Value, x: Value, depth: int = 8) -> bool:
    """x is among the values v is computed from, at most ``depth`` ops up."""
    todo, seen = [(v, 0)], set()
    while todo:
        u, d = todo.pop()
        if u is x:
            return True
        o = u.owner
        if o is None or d >= depth or id(o) in seen:
            continue
        seen.add(id(o))
        todo.extend((w, d + 1) for w in o.operands)
    return False


def _probe_feeds(f: Function, sizes: Dict, shape_only: bool = False, seed: int = 0) -> Dict[int, object]:
    """Probe values for the function's arguments: each symbolic dim sized by its symbol (``sizes``)."""
    r = np.random.default_rng(seed)
    feeds = {}
    for a in f.args:
        t = a.type
        shape = [d if isinstance(d, int) else sizes.get(d, 3) for d in t.shape]
        dt = t.dtype.np
        if shape_only:
            feeds[id(a)] = ShapeOnly(shape, dt)
        elif np.dtype(dt).kind == "f":
            feeds[id(a)] = r.standard_normal(shape).astype(dt)
        elif np.dtype(dt).kind == "b":
            feeds[id(a)] = np.ones(shape, dt)
        else:
            feeds[id(a)] = r.integers(0, 4, shape).astype(dt)
    return feeds


@register_pass
@dataclass
class RecognizeDecoder(Pass):
    name = "recognize-decoder"
    target: Optional["TargetDesc"] = None
    ops: Tuple[str, ...] = field(default=None)  # (tests: the fused ops to form; default: the target's)

    def __post_init__(self):
        if self.ops is None:
            self.ops = tuple(getattr(self.target, "fused_decoder_ops", ()) or ()) if self.target is not None else \
                ("moec.attention", "moec.rms_norm", "moec.rotary", "moec.kv_step_attention")

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            if "moec.rms_norm" in self.ops:
                changed |= self._rms_norms(m, f)
            if "moec.rotary" in self.ops:
                changed |= self._rotaries(m, f)
            if "moec.attention" in self.ops:
                changed |= self._attentions(m, f)
            if "moec.kv_step_attention" in self.ops:
                changed |= self._kv_steps(m, f)
        return changed

    # ---- RMSNorm ---------------------------------------------------------------------------------
    def _rms_norms(self, m: Module, f: Function) -> bool:
        changed = False
        for o in list(f.ops):
            if o not in f.ops or o.name != "moec.mul":
                continue
            hit = self._match_rms(m, o)
            if hit is None:
                continue
            x, scale, eps = hit
            new = OPS["moec.rms_norm"].create([x, scale], {"axis": -1, "epsilon": eps}, o.loc,
                                              result_types=[o.result.type])
            if not self._prove_rms(m, f, x, o.result, new):
                continue
            f.ops.insert(f.ops.index(o), new)
            f.replace_all_uses(o.result, new.result)
            f.ops.remove(o)
            changed = True
        return changed

    @staticmethod
    def _match_rms(m: Module, o: Operation):
        """(x, scale, eps) when o = scale * normalised(x), else None."""
        for s, n in (o.operands, o.operands[::-1]):
            sc = _const(m, s)
            if sc is None or sc.dtype.kind != "f" or sc.ndim != 1 or n.owner is None:
                continue
            x = RecognizeDecoder._normalised(m, n.owner)
            if x is None or x[0].type.rank < 1 or x[0].type.shape[-1] != sc.shape[0]:
                continue
            return x[0], s, x[1]
        return None

    @staticmethod
    def _normalised(m: Module, o: Operation):
        """(x, eps) when o = x * rsqrt(mean(x^2) + eps) or x / sqrt(mean(x^2) + eps)."""
        if o.name == "moec.mul":
            pairs = [(o.operands[0], o.operands[1]), (o.operands[1], o.operands[0])]
            for x, inv in pairs:
                io = inv.owner
                if io is None:
                    continue
                if io.name == "moec.reciprocal" and io.operands[0].owner is not None:
                    root = io.operands[0]
                elif io.name == "moec.div" and _scalar(m, io.operands[0]) == 1.0:
                    root = io.operands[1]
                else:
                    continue
                eps = RecognizeDecoder._mean_square_root(m, root, x)
                if eps is not None:
                    return x, eps
        elif o.name == "moec.div":
            eps = RecognizeDecoder._mean_square_root(m, o.operands[1], o.operands[0])
            if eps is not None:
                return o.operands[0], eps
        return None

    @staticmethod
    def _mean_square_root(m: Module, root: Value, x: Value) -> Optional[float]:
        """eps when root = sqrt(reduce_mean(x^2, last axis, keepdims) + eps)."""
        so = root.owner
        if so is None or so.name != "moec.sqrt" or so.operands[0].owner is None:
            return None
        ao = so.operands[0].owner
        if ao.name != "moec.add":
            return None
        for ms, e in (ao.operands, ao.operands[::-1]):
            eps = _scalar(m, e)
            mo = ms.owner
            if eps is None or mo is None or mo.name != "moec.reduce_mean" or not mo.attrs.get("keepdims", True):
                continue
            r = x.type.rank
            axes = [int(a) % r for a in (mo.attrs.get("axes") or ())]
            if axes != [r - 1] or len(mo.operands) > 1:
                continue
            sq = mo.operands[0].owner
            if sq is None:
                continue
            if sq.name == "moec.pow" and sq.operands[0] is x and _scalar(m, sq.operands[1]) == 2.0:
                return eps
            if sq.name == "moec.mul" and sq.operands[0] is x and sq.operands[1] is x:
                return eps
        return None

    @staticmethod
    def _prove_rms(m: Module, f: Function, x: Value, y: Value, new: Operation) -> bool:
        shape = [d if isinstance(d, int) else 3 for d in x.type.shape]
        if x.type.dtype.np != np.float32:
            return False
        X = np.random.default_rng(7).standard_normal(shape).astype(np.float32) * 3
        try:
            want = evaluate(m, f, [y], {id(x): X})[0]
        except KeyError:
            return False
        got = new.reference(X, _const(m, new.operands[1]))[0]
        return _close(got, want)

    # ---- rotary embedding ------------------------------------------------------------------------
    def _rotaries(self, m: Module, f: Function) -> bool:
        changed = False
        for o in list(f.ops):
            if o not in f.ops or o.name != "moec.add" or o.result.type.dtype.np != np.float32:
                continue
            for x, c, rot, sn in self._rotary_candidates(o):
                interleaved = self._rotation_kind(m, f, x, rot)
                if interleaved is None:
                    continue
                try:
                    new = OPS["moec.rotary"].create([x, c, sn], {"interleaved": interleaved}, o.loc,
                                                    result_types=[o.result.type])
                    new.verify()
                except Exception:  # noqa: BLE001 - shapes the op does not take
                    continue
                if not self._prove_rotary(m, f, new, o.result):
                    continue
                f.ops.insert(f.ops.index(o), new)
                f.replace_all_uses(o.result, new.result)
                changed = True
                break
        return changed

    @staticmethod
    def _rotary_candidates(o: Operation):
        """(x, cos, rot, sin) for o = x * cos + rot * sin (either order of every product and of the sum)
        where rot is computed from x (x among the values it is built from, a few ops up).  What rot is,
        is decided by evaluating it (_rotation_kind), not by how the export spelled it."""
        a, b = (v.owner for v in o.operands)
        if a is None or b is None or a.name != "moec.mul" or b.name != "moec.mul":
            return
        for p1, p2 in ((a, b), (b, a)):
            for x, c in (p1.operands, p1.operands[::-1]):
                for rot, sn in (p2.operands, p2.operands[::-1]):
                    if rot is not x and rot.owner is not None and _built_from(rot, x):
                        yield x, c, rot, sn

    @staticmethod
    def _rotation_kind(m: Module, f: Function, x: Value, rot: Value) -> Optional[bool]:
        """False when rot(x) = rotate_half(x) = concat(-x[..., D/2:], x[..., :D/2]), True when it is the
        interleaved rotation (x[2i], x[2i+1]) -> (-x[2i+1], x[2i]) (GPT-J's rotate_every_two: a stack of
        -x[..., 1::2] and x[..., ::2] flattened), on random x (a function of x alone: exact), else None.
        For D = 2 the two coincide: rotate_half is reported."""
        D = x.type.shape[-1] if x.type.rank else None
        if not isinstance(D, int) or D % 2 or D < 2 or x.type.dtype.np != np.float32:
            return None
        X = np.random.default_rng(11).standard_normal([d if isinstance(d, int) else 3 for d in x.type.shape])
        X = X.astype(np.float32)
        try:
            R = np.asarray(evaluate(m, f, [rot], {id(x): X})[0])
        except Exception:  # noqa: BLE001 - rot reads more than x (or does not run on the probe): not a rotation
            return None
        if R.shape != X.shape:
            return None
        if np.array_equal(R, np.concatenate([-X[..., D // 2:], X[..., :D // 2]], axis=-1)):
            return False
        if np.array_equal(R, np.stack([-X[..., 1::2], X[..., 0::2]], axis=-1).reshape(X.shape)):
            return True
        return None

    @staticmethod
    def _prove_rotary(m: Module, f: Function, new: Operation, y: Value) -> bool:
        """The original sum and the op agree on random x, cos and sin (the slices' bounds included: a
        split other than the halves, or the halves swapped, differs)."""
        x, c, sn = new.operands
        r = np.random.default_rng(5)
        # one size for every unknown dim of x, broadcast dims of cos/sin kept at their 1s
        X = r.standard_normal([d if isinstance(d, int) else 3 for d in x.type.shape]).astype(np.float32)
        shp = lambda t: [d if isinstance(d, int) else 3 for d in t.shape]  # noqa: E731
        C = r.standard_normal(shp(c.type)).astype(np.float32)
        S = r.standard_normal(shp(sn.type)).astype(np.float32)
        try:
            want = evaluate(m, f, [y], {id(x): X, id(c): C, id(sn): S})[0]
            got = new.reference(X, C, S)[0]
        except Exception:  # noqa: BLE001 - the probe does not run: no proof
            return False
        return _close(got, want)

    # ---- attention -------------------------------------------------------------------------------
    def _attentions(self, m: Module, f: Function) -> bool:
        changed = False
        for sm in list(f.ops):
            if sm not in f.ops or sm.name != "moec.softmax":
                continue
            z = sm.operands[0]
            if z.type.rank != 4 or int(sm.attrs["axis"]) % 4 != 3:
                continue
            hit = self._match_attention(m, f, sm)
            if hit is None:
                continue
            changed |= self._rewrite(m, f, *hit)
        return changed

    def _scores(self, m: Module, v: Value):
        """(the scores' matmul, scale factor) when v = views/scalar scalings of a matmul."""
        s = 1.0
        while v.owner is not None:
            o = v.owner
            if o.name == "moec.matmul":
                return o, s
            if o.name in ("moec.reshape", "moec.expand"):
                v = o.operands[0]
            elif o.name in ("moec.mul", "moec.div"):
                c = _scalar(m, o.operands[1])
                if c is None and o.name == "moec.mul":
                    c, v2 = _scalar(m, o.operands[0]), o.operands[1]
                else:
                    v2 = o.operands[0]
                if c is None or c == 0.0:
                    return None
                s *= c if o.name == "moec.mul" else 1.0 / c
                v = v2
            else:
                return None
        return None

    def _root(self, m: Module, v: Value):
        """(root, scale factor, transposes of the last two dims) walking back through views, swaps of the
        last two dims and scalar scalings until a value made by anything else (rank 4: else None)."""
        s, tr = 1.0, 0
        while v.owner is not None:
            o = v.owner
            if o.name in _VIEW_OPS:
                v = o.operands[0]
                continue
            perm = tuple(o.attrs["perm"]) if o.name == "moec.transpose" else ()
            r = len(perm)
            if r >= 2 and perm == tuple(range(r - 2)) + (r - 1, r - 2):  # k^T (of [B, H, T, D] or [B*H, T, D])
                tr += 1
                v = o.operands[0]
                continue
            if o.name in ("moec.mul", "moec.div"):
                c = _scalar(m, o.operands[1])
                x = o.operands[0]
                if c is None and o.name == "moec.mul":
                    c, x = _scalar(m, o.operands[0]), o.operands[1]
                if c is not None and c != 0.0:
                    s *= c if o.name == "moec.mul" else 1.0 / c
                    v = x
                    continue
            break
        return (v, s, tr) if v.type.rank == 4 else None

    def _probs_matmul(self, m: Module, f: Function, sm: Operation, uses):
        """The matmul whose left operand is the softmax result through views (and the zeroing of fully
        masked rows: a select of the probabilities and a zero constant), and that operand's chain."""
        frontier = [sm.result]
        seen = set()
        while frontier:
            v = frontier.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            for u in uses.get(id(v), []):
                if u.name == "moec.matmul" and u.operands[0] is v:
                    return u
                if u.name in ("moec.reshape", "moec.expand") and u.operands[0] is v:
                    frontier.append(u.result)
                elif u.name == "moec.select" and u.operands[2] is v and _zeros(m, u.operands[1]):
                    frontier.append(u.result)  # (rows zeroed where every key is masked, as the op does)
        return None

    def _match_attention(self, m: Module, f: Function, sm: Operation):
        z = sm.operands[0]
        mask = None
        zo = z.owner
        sc = self._scores(m, z)
        if sc is None and zo is not None and zo.name == "moec.add":
            for a, b in (zo.operands, zo.operands[::-1]):
                sc = self._scores(m, a)
                if sc is not None and b.type.rank <= 4 and b.type.dtype == z.type.dtype:
                    mask = b
                    break
                sc = None
        if sc is None:
            return None
        mm1, s0 = sc
        qr, kr = (self._root(m, v) for v in mm1.operands)
        if qr is None or kr is None or qr[2] != 0 or kr[2] != 1:
            return None
        uses = users(f)
        mm2 = self._probs_matmul(m, f, sm, uses)
        if mm2 is None:
            return None
        vr = self._root(m, mm2.operands[1])
        if vr is None or vr[2] != 0:
            return None
        out = mm2.result  # the output viewed back as rank 4
        while out.type.rank != 4:
            us = uses.get(id(out), [])
            if len(us) != 1 or us[0].name != "moec.reshape" or out in f.outputs:
                return None
            out = us[0].result
        scale = s0 * qr[1] * kr[1] * vr[1]
        if vr[1] != 1.0:
            return None  # (a scaled V: not attention's math as declared)
        return qr[0], kr[0], vr[0], mask, float(scale), out, mm2

    def _rewrite(self, m, f, q, k, v, mask, scale, out, mm2) -> bool:
        dt = out.type.dtype
        if dt.np != np.float32:
            return False
        operands = [q, k, v] + ([mask] if mask is not None else [])
        try:
            new = OPS["moec.attention"].create(operands, {"scale": scale, "causal": False}, mm2.loc,
                                               result_types=[out.type])
            new.verify()
        except Exception:  # noqa: BLE001 - shapes that do not fit the op: not this rewrite
            return False
        targets = [q, k, v] + ([mask] if mask is not None else []) + [out]
        syms = []
        for a in f.args:
            for d in a.type.shape:
                if isinstance(d, str) and d not in syms:
                    syms.append(d)
        # probe sizes: moec's usual ones, then the first three symbols permuted over 2, 3, 5 (a graph whose
        # sizes are tied by the model -- a mask as long as past + new tokens -- runs only where they agree)
        vals = None
        for cand in [(2, 5, 4, 3)] + [p + (3,) for p in itertools.permutations((2, 3, 5))]:
            sizes = {d: cand[i % 4] for i, d in enumerate(syms)}
            args = _probe_feeds(f, sizes)
            try:
                vals = evaluate(m, f, targets, args)
                break
            except Exception:  # noqa: BLE001 - the probe does not run (data-dependent sizes): no proof here
                continue
        if vals is None:
            return False
        Q, K, V = vals[:3]
        M = vals[3] if mask is not None else None
        want = vals[-1]
        if not self._same(new, [Q, K, V] + ([M] if M is not None else []), want):
            return False
        r = np.random.default_rng(11)  # random q, k, v of the same shapes, the same mask
        Q2, K2, V2 = (r.standard_normal(np.shape(a)).astype(np.float32) for a in (Q, K, V))
        feeds = {**args, id(q): Q2, id(k): K2, id(v): V2}  # (the views read the arguments' sizes)
        if mask is not None:
            feeds[id(mask)] = M
        try:
            want2 = evaluate(m, f, [out], feeds)[0]
        except Exception:  # noqa: BLE001
            return False
        if not self._same(new, [Q2, K2, V2] + ([M] if M is not None else []), want2):
            return False
        new.attrs["causal"] = self._causal_mask(m, f, mask, sizes)
        at = f.ops.index(mm2)
        f.ops.insert(at, new)
        f.replace_all_uses(out, new.result)
        return True

    # ---- attention of a decode step over a cache read in place ----------------------------------------
    def _kv_steps(self, m: Module, f: Function) -> bool:
        changed = False
        for o in list(f.ops):
            if o not in f.ops or o.name != "moec.add" or o.result.type.dtype.np != np.float32:
                continue
            for hit in self._match_kv_step(m, f, o):
                if self._rewrite_kv_step(m, f, o, *hit):
                    changed = True
                    break
        return changed

    @staticmethod
    def _viewed(v: Value) -> Optional[Operation]:
        """The op v is made by, looking through views (reshape, expand, unsqueeze, squeeze)."""
        while v.owner is not None and v.owner.name in _VIEW_OPS:
            v = v.owner.operands[0]
        return v.owner

    def _masked_scores(self, m: Module, z: Value):
        """(scores matmul, scale) for z = views/scalings of a matmul, optionally masked by a select whose
        other branch is a scalar constant at or below -1e30 (the mask itself is left to the proof)."""
        zo = z.owner
        if zo is not None and zo.name == "moec.select":
            for val, fill in ((zo.operands[1], zo.operands[2]), (zo.operands[2], zo.operands[1])):
                c = _scalar(m, fill)
                if c is not None and c <= -1e30:
                    return self._scores(m, val)
            return None
        return self._scores(m, z)

    def _match_kv_step(self, m: Module, f: Function, o: Operation) -> list:
        """The candidate (cache part, new part, position arguments, scale)s of the sum o (none: [])."""
        parts = []
        for x in o.operands:
            mm = self._viewed(x)
            if mm is None or mm.name != "moec.matmul":
                return []
            div = self._viewed(mm.operands[0])
            vr = self._root(m, mm.operands[1])
            if div is None or div.name != "moec.div" or vr is None or vr[1] != 1.0 or vr[2] != 0:
                return []
            ex = div.operands[0].owner
            if ex is None or ex.name != "moec.exp":
                return []
            z = ex.operands[0]
            if z.owner is not None and z.owner.name == "moec.sub":
                z = z.owner.operands[0]  # (exp(z - max): whether the max is the right one is the proof's)
            sc = self._masked_scores(m, z)
            if sc is None:
                return []
            mm_s, s0 = sc
            qr, kr = (self._root(m, w) for w in mm_s.operands)
            if qr is None or kr is None or qr[2] != 0 or kr[2] not in (0, 1):
                return []
            parts.append(dict(div=div, v=vr[0], q=qr[0], k=kr[0], tr=kr[2], z=z, scale=s0 * qr[1] * kr[1]))
        a, b = parts
        if (a["tr"], b["tr"]) != (1, 1) or a["q"] is not b["q"] or a["div"].operands[1] is not b["div"].operands[1]:
            return []  # (keys as rows, both parts; one softmax: the two parts share their denominator)
        if abs(a["scale"] - b["scale"]) > 1e-6 * abs(a["scale"]):
            return []
        ints = (DType.I64, DType.I32)
        hits = []
        for c, n in ((a, b), (b, a)):  # (the cache's part: its scores are masked by the position)
            pos = [x for x in f.args if x.type.dtype in ints and x.type.rank <= 1
                   and all(d == 1 for d in x.type.shape) and _built_from(c["z"], x, 12)]
            if pos:
                hits.append((c, n, pos, float(c["scale"])))
        return hits

    def _rewrite_kv_step(self, m: Module, f: Function, o: Operation, c, n, pos_args, scale) -> bool:
        out_t = o.result.type
        ins = [c["q"], c["k"], c["v"], n["k"], n["v"]]
        syms = []
        for a in f.args:
            for d in a.type.shape:
                if isinstance(d, str) and d not in syms:
                    syms.append(d)
        # the sum's shape at two token counts: the one dim that follows them becomes the view's -1 (the
        # others are constants, whatever the types say: an export may lose a static head count)
        try:
            sh = [np.shape(evaluate(m, f, [o.result], _probe_feeds(f, {d: S for d in syms}))[0]) for S in (3, 2)]
        except Exception:  # noqa: BLE001 - the probe does not run: no proof
            return False
        moving = [i for i, (x, y) in enumerate(zip(*sh)) if x != y]
        if len(sh[0]) != out_t.rank or len(sh[0]) != len(sh[1]) or len(moving) > 1 \
                or any(isinstance(d, int) and d != x for d, x in zip(out_t.shape, sh[0])):
            return False
        view_shape = [-1 if i in moving else int(x) for i, x in enumerate(sh[0])]
        r = np.random.default_rng(13)
        for pos in pos_args:
            shapes = None
            for S in (3, 2):
                feeds = _probe_feeds(f, {d: S for d in syms})
                try:
                    shapes = [np.shape(a) for a in evaluate(m, f, ins, feeds)]
                except Exception:  # noqa: BLE001 - the probe does not run: no proof at this size
                    continue
                break
            if shapes is None or any(len(s) != 4 for s in shapes):
                continue
            M, S = shapes[1][2], shapes[0][2]

            def trial(p, q_scale, window, seed):
                rr = np.random.default_rng(seed)
                xs = [rr.standard_normal(s).astype(np.float32) for s in shapes]
                xs[0] *= q_scale
                P = np.full(pos.type.shape, p, pos.type.dtype.np)
                fd = {**feeds, **{id(v): x for v, x in zip(ins, xs)}, id(pos): P}
                want, probs = evaluate(m, f, [o.result, c["div"].result], fd)
                new = OPS["moec.kv_step_attention"].create(ins + [pos], {"scale": scale, "window": window}, o.loc)
                got = new.reference(*xs, P)[0]
                if int(np.prod(got.shape)) != int(np.prod(np.shape(want))):
                    return False, probs
                return _close(got.reshape(np.shape(want)), want), probs

            positions = sorted({max(M - S, 0), max(M - S, 0) // 2, 0, 1 if M > S else 0})
            window = 0
            try:
                ok, probs = trial(positions[-1], 1.0, 0, 1)
                if not ok and positions[-1] > 1:  # a sliding window: the keys row 0 sees, counted
                    _, probs = trial(positions[-1], 0.01, 0, 2)
                    pr = np.asarray(probs)
                    seen = int(np.count_nonzero(pr.reshape(-1, pr.shape[-2], pr.shape[-1])[0, 0]))
                    if 0 < seen < positions[-1]:
                        window = seen + 1
                        ok = trial(positions[-1], 1.0, window, 1)[0]
                ok = ok and all(trial(p, 1.0, window, 3 + i)[0] for i, p in enumerate(positions))
                ok = ok and trial(positions[-1], 1000.0, window, 9)[0]  # (overflows without the max subtraction)
            except Exception:  # noqa: BLE001 - the probe does not run or the op refuses the shapes
                ok = False
            if not ok:
                continue
            kw, vw = (self._widened_half(x) for x in ins[1:3])
            if kw is not None and vw is not None:  # (an f16 cache read widened: the op reads the f16 rows)
                ins = [ins[0], kw, vw, *ins[3:]]
            new = OPS["moec.kv_step_attention"].create(ins + [pos], {"scale": scale, "window": window}, o.loc)
            try:
                new.verify()
            except Exception:  # noqa: BLE001
                return False
            cst = OPS["moec.constant"].create([], {"value": np.asarray(view_shape, np.int64)}, o.loc)
            view = OPS["moec.reshape"].create([new.result, cst.result], {"allowzero": False}, o.loc,
                                              result_types=[out_t])
            at = f.ops.index(o)
            f.ops[at:at] = [new, cst, view]
            f.replace_all_uses(o.result, view.result)
            return True
        return False

    @staticmethod
    def _widened_half(v: Value) -> Optional[Value]:
        """x when v = moec.cast(x) of an f16 x to f32 (a half-precision cache read widened), else None."""
        o = v.owner
        if o is not None and o.name == "moec.cast" and o.operands[0].type.dtype == DType.F16 \
                and v.type.dtype == DType.F32:
            return o.operands[0]
        return None

    @staticmethod
    def _same(new: Operation, ins, want) -> bool:
        try:
            got = new.reference(*ins)[0]
        except ValueError:  # shapes the op refuses (e.g. heads that are not a multiple): not attention
            return False
        return _close(got, want)

    @staticmethod
    def _causal_mask(m, f, mask, sizes) -> bool:
        """True when the mask depends on the arguments' shapes only and, at two probe sizes, hides exactly
        the keys after each query row (aligned to the last keys)."""
        if mask is None:
            return False
        for alt in (sizes, {s: n + 3 for s, n in sizes.items()}):
            try:
                M = np.asarray(evaluate(m, f, [mask], _probe_feeds(f, alt, shape_only=True))[0])
            except Exception:  # noqa: BLE001 - the mask reads argument data (a padding mask): not causal
                return False
            if M.ndim < 2:
                return False
            S, T = M.shape[-2:]
            i = np.arange(S)[:, None]
            j = np.arange(T)[None, :]
            future = np.broadcast_to(j > i + (T - S), M.shape)
            hidden = M <= -1e30
            if not np.array_equal(hidden, future) or np.any(M[~hidden] != 0):
                return False
        return True

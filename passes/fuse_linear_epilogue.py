"""fuse-linear-epilogue: a matmul by a constant weight and the addition after it become one op.

Rewrites (for a target whose kernels implement ``moec.linear``, ``TargetDesc.fused_decoder_ops``):

  * ``add(matmul(x, W), c)`` (either operand order) where ``W`` is a constant 2-D matrix with static
    dims, the matmul's result is read only by the add, ``c`` has the matmul result's dtype, and the
    add does not broadcast the product up (the sum has the product's shape)  ->  ``moec.linear(x, W,
    c)`` when ``c`` is a bias (its leading dims all 1, its last N or 1) or a residual (the product's
    shape, or its last dim 1).  The kernel adds ``c`` as each output tile is stored (the GEMM's
    epilogue) instead of a second pass over the result; the sum is rounded as the two ops round it.
  * ``relu / gelu / gelu_tanh(y)`` and ``y * sigmoid(y)`` (SiLU, either operand order) where ``y`` is such
    a ``moec.linear`` (or a matmul by a constant matrix) read only by the activation  ->  the linear
    with ``activation`` set, applied in the same store.

Runs after quantize-weights: a layer quantised there is a ``moec.linear_q`` (which folds its bias
itself) and is not seen here, so only f32 layers are fused.  Other broadcasts of ``c`` (across the
middle dims, e.g. ``[B, 1, N]`` onto ``[B, S, N]``) are left alone: the kernel's addend is indexed by
(row, column) of the flattened product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from moec.ir import DType, Function, Module, Operation, Value
from moec.ir.opdef import OPS
from moec.passes.base import Pass, register_pass
from moec.passes.moe_util import single_user

if TYPE_CHECKING:
    from moec.targets.base import TargetDesc


def _fusable_addend(c: Value, prod: Value) -> bool:
    out, ct = tuple(prod.type.shape), c.type
    if ct.dtype != prod.type.dtype or ct.rank > len(out) or not out:
        return False
    N = out[-1]
    if ct.rank and ct.shape[-1] not in (1, N):
        return False
    lead = tuple(ct.shape[:-1])
    return all(d == 1 for d in lead) or (ct.rank == len(out) and lead == out[:-1])


def _const_matrix(w: Value) -> bool:
    o = w.owner
    return o is not None and o.name == "moec.constant" and w.type.rank == 2 and \
        all(isinstance(d, int) for d in w.type.shape)


@register_pass
@dataclass
class FuseLinearEpilogue(Pass):
    name = "fuse-linear-epilogue"
    target: Optional["TargetDesc"] = None
    enabled: Optional[bool] = None  # (tests: force on/off; default: the target lists moec.linear)

    def _on(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return self.target is not None and "moec.linear" in (getattr(self.target, "fused_decoder_ops", ()) or ())

    def run(self, m: Module) -> bool:
        if not self._on():
            return False
        changed = False
        for f in m.functions:
            changed |= self._fuse(f)
        return changed

    def _fuse(self, f: Function) -> bool:
        return self._fuse_adds(f) | self._fuse_activations(f)

    @staticmethod
    def _linear_of(f: Function, y: Value, reader: Operation, uses, readers: int = 1) -> Optional[Operation]:
        """y's producer as a moec.linear without activation (a matmul by a constant matrix becomes one)
        when y has exactly ``readers`` users including ``reader`` and is no output, else None."""
        o = y.owner
        u = uses.get(id(y), [])
        if o is None or len(u) != readers or reader not in u or any(v is y for v in f.outputs):
            return None
        if o.name == "moec.linear" and o.attrs["activation"] == "none":
            return o
        if o.name == "moec.matmul":
            x, w = o.operands
            if x.type.dtype == DType.F32 and w.type.dtype == DType.F32 and x.type.rank >= 1 and _const_matrix(w):
                return o
        return None

    def _fuse_activations(self, f: Function) -> bool:
        changed = False
        uses = f.uses()
        for o in list(f.ops):
            if o not in f.ops:
                continue
            act, y, gone = None, None, []
            if o.name in ("moec.relu", "moec.gelu", "moec.gelu_tanh"):
                act, y = o.name.split(".", 1)[1], o.operands[0]
                lin = self._linear_of(f, y, o, uses)
            elif o.name == "moec.mul":
                lin = None
                for a, b in (o.operands, o.operands[::-1]):
                    so = b.owner
                    if so is None or so.name != "moec.sigmoid" or so.operands[0] is not a or a is b:
                        continue
                    if [u for u in uses.get(id(b), [])] != [o] or any(v is b for v in f.outputs):
                        continue
                    lin = self._linear_of(f, a, o, uses, readers=2)
                    if lin is not None and so in uses.get(id(a), []):
                        act, y, gone = "silu", a, [so]
                        break
                    lin = None
            else:
                continue
            if lin is None or act is None:
                continue
            new: Operation = OPS["moec.linear"].create(list(lin.operands), {"activation": act}, o.loc)
            if new.result.type != o.result.type:
                continue
            f.ops[f.ops.index(o)] = new
            f.replace_all_uses(o.result, new.result)
            for dead in gone + [lin]:
                f.ops.remove(dead)
            uses = f.uses()
            changed = True
        return changed

    def _fuse_adds(self, f: Function) -> bool:
        changed = False
        uses = f.uses()
        for o in list(f.ops):
            if o.name != "moec.add" or o not in f.ops:
                continue
            for i in (0, 1):
                prod, c = o.operands[i], o.operands[1 - i]
                mm = prod.owner
                if mm is None or mm.name != "moec.matmul" or prod is c:
                    continue
                x, w = mm.operands
                if x.type.dtype not in (DType.F32,) or w.type.dtype != x.type.dtype or x.type.rank < 1 or \
                        not _const_matrix(w):
                    continue
                if single_user(f, prod, uses) is not o or tuple(o.result.type.shape) != tuple(prod.type.shape):
                    continue
                if not _fusable_addend(c, prod):
                    continue
                lin: Operation = OPS["moec.linear"].create([x, w, c], {}, o.loc)
                if lin.result.type != o.result.type:
                    continue  # (cannot happen by the rule; never rewrite to a different type)
                f.ops[f.ops.index(o)] = lin
                f.replace_all_uses(o.result, lin.result)
                f.ops.remove(mm)
                uses = f.uses()
                changed = True
                break
        return changed

"""expert-parallel: one rank's program of an MoE model spread over ``world`` ranks (SPMD).

Rewrites (on a copy, for one rank; ``rank_module``):
  * every recognised layer ``combine(experts(x, ids, dispatch(ids), W...), w)`` ->
    ``moe.ep_pack`` -> ``moe.exchange_counts`` -> ``moe.all_to_all`` (rows, local slot ids, routing
    weights) -> ``moe.dispatch`` + ``moe.experts`` over this rank's experts only (the expert-stacked
    constants w_in, w_out, biases, scales, zero points sliced to the rank's slots) -> ``moe.combine``
    (the weighted partial sum of each received row) -> ``moe.all_to_all`` back -> ``moe.ep_unpack``
    (sum per token, + shared experts, Switch pass-through) -- semantics in ir/ops/ep.py;
  * a route with capacity C (Switch) -> route without capacity, ``moe.expert_counts``,
    ``moe.all_gather``, ``moe.ep_capacity`` (the single-process drops over all ranks' tokens in rank
    order).
Everything else (router, attention, norms, shared experts) is left as is: replicated, each rank running
it on its own tokens (data parallel).

``split_stages`` then cuts a rank program at its EP ops into compute segments (plain modules any target
builds) and the EP ops between them (run by the run time with torch.distributed, compiler/ep.py).

Placement: which logical expert each of a rank's ``slots`` physical slots holds (the same slot count on
every rank; an expert may be held by several ranks: redundant replicas of hot experts).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from moec.ir import Function, Module, ResourceRef, Value, WeightStore, parse_module, print_module
from moec.ir.opdef import OPS, const_value
from moec.passes.base import Pass, register_pass

HOST_OPS = ("moe.ep_pack", "moe.ep_unpack", "moe.exchange_counts", "moe.all_to_all", "moe.all_gather",
            "moe.expert_counts", "moe.ep_capacity")


class EPError(ValueError):
    """An EP request that cannot be met (bad placement, a layer the pass cannot split)."""


@dataclass
class Placement:
    """ranks[r] = the logical experts held by rank r's slots (-1: an empty slot)."""
    num_experts: int
    ranks: List[List[int]]

    @property
    def world(self) -> int:
        return len(self.ranks)

    @property
    def slots(self) -> int:
        return len(self.ranks[0])

    @property
    def flat(self) -> List[int]:
        return [e for r in self.ranks for e in r]

    @staticmethod
    def contiguous(num_experts: int, world: int) -> "Placement":
        """Experts in contiguous blocks, ceil(E / world) slots per rank (the last ones empty if E % world)."""
        s = -(-num_experts // world)
        return Placement(num_experts, [[e if e < num_experts else -1 for e in range(r * s, r * s + s)]
                                       for r in range(world)])

    def check(self) -> "Placement":
        if self.world < 1 or not self.ranks[0]:
            raise EPError("a placement needs at least one rank with at least one slot")
        if any(len(r) != self.slots for r in self.ranks):
            raise EPError(f"every rank must hold the same number of expert slots, got {[len(r) for r in self.ranks]}")
        bad = [e for e in self.flat if not isinstance(e, int) or isinstance(e, bool) or e < -1 or
               e >= self.num_experts]
        if bad:
            raise EPError(f"placement holds expert id {bad[0]!r}, outside [0, {self.num_experts}) (-1: empty slot)")
        for r, row in enumerate(self.ranks):
            dup = {e for e in row if e >= 0 and row.count(e) > 1}
            if dup:
                raise EPError(f"rank {r} holds expert {min(dup)} twice")
        missing = sorted(set(range(self.num_experts)) - set(self.flat))
        if missing:
            raise EPError(f"no rank holds expert(s) {missing[:8]}")
        return self

    def to_json(self) -> dict:
        return {"num_experts": self.num_experts, "ranks": self.ranks}

    @staticmethod
    def from_json(d, num_experts: Optional[int] = None, world: Optional[int] = None) -> "Placement":
        """{"ranks": [[experts of rank 0], ...], "num_experts": E (optional)}."""
        if not isinstance(d, dict) or not isinstance(d.get("ranks"), list) or \
                not all(isinstance(r, list) for r in d["ranks"]):
            raise EPError('a placement is a JSON object {"ranks": [[experts of rank 0], [experts of rank 1], ...]}')
        E = d.get("num_experts", num_experts)
        if E is None:
            E = 1 + max((e for r in d["ranks"] for e in r if isinstance(e, int)), default=-1)
        if not isinstance(E, int) or isinstance(E, bool) or E < 1:
            raise EPError(f"num_experts must be a positive integer, got {E!r}")
        if num_experts is not None and E != num_experts:
            raise EPError(f"the placement is for {E} experts, the layer has {num_experts}")
        p = Placement(int(E), [list(r) for r in d["ranks"]])
        if world is not None and p.world != world:
            raise EPError(f"the placement has {p.world} ranks, --ep asks for {world}")
        return p.check()


@dataclass
class EPPlan:
    """How a module is spread: the world size and a placement per layer (default: contiguous)."""
    world: int
    placements: Dict[str, Placement] = field(default_factory=dict)   # layer name or "*" -> placement

    def for_layer(self, layer: str, num_experts: int) -> Placement:
        p = self.placements.get(layer) or self.placements.get("*")
        if p is None:
            return Placement.contiguous(num_experts, self.world)
        if p.num_experts != num_experts:
            raise EPError(f"layer {layer}: the placement is for {p.num_experts} experts, the layer has {num_experts}")
        if p.world != self.world:
            raise EPError(f"layer {layer}: the placement has {p.world} ranks, the plan {self.world}")
        return p


def copy_module(m: Module) -> Module:
    """An independent copy (through the text form; the weight arrays are shared, never written)."""
    ws = WeightStore()
    for k, a in m.weights.items():
        ws._arrays[k] = a
    return parse_module(print_module(m), ws)


def _const(m: Module, f_ops: List, arr: np.ndarray, hint: str) -> Value:
    from moec.ir import DType, TensorType
    key = m.weights.add(arr, hint)
    c = OPS["moec.constant"].create([], {"value": ResourceRef(key)},
                                    result_types=[TensorType(DType.from_np(arr.dtype), arr.shape)])
    c.results[0].name = key
    f_ops.append(c)
    return c.results[0]


def layers_of(m: Module) -> List[Tuple[str, int]]:
    """(layer name, experts E) of every recognised layer that the pass can split."""
    out = []
    for c in m.main.ops:
        if c.name == "moe.combine":
            ex = c.operands[0].owner
            if ex is not None and ex.name == "moe.experts":
                out.append((c.attrs.get("layer") or f"moe{len(out)}", int(ex.operands[4].type.shape[0])))
    return out


def _split_capacity(m: Module, f: Function, route, rank: int, world: int) -> None:
    """route{capacity=C} -> route{capacity=0}, expert_counts, all_gather, ep_capacity (in place)."""
    C = route.attrs["capacity"]
    E = route.operands[0].type.shape[1]
    r0 = OPS["moe.route"].create(route.operands, dict(route.attrs, capacity=0), route.loc)
    cnt = OPS["moe.expert_counts"].create([r0.results[1]], {"num_experts": E}, route.loc)
    allc = OPS["moe.all_gather"].create([cnt.result], {"world": world}, route.loc)
    cap = OPS["moe.ep_capacity"].create([r0.results[0], r0.results[1], allc.result], {"capacity": C, "rank": rank},
                                        route.loc)
    i = f.ops.index(route)
    f.ops[i:i + 1] = [r0, cnt, allc, cap]
    for old, new in zip(route.results, cap.results):
        new.name = old.name
        f.replace_all_uses(old, new)


def _split_layer(m: Module, f: Function, c, placement: Placement, rank: int) -> None:
    ex = c.operands[0].owner
    disp = ex.operands[2].owner
    x, ids = ex.operands[0], ex.operands[1]
    w = c.operands[1]
    b_in, b_out, rw = ex._extras()
    if rw is not None and rw is not w:
        raise EPError(f"layer {c.attrs.get('layer')}: the experts' routing weights are not the combine's")
    if ids.type.dtype.mlir != "i64":
        raise EPError(f"layer {c.attrs.get('layer')}: expert ids must be i64")
    W, S, E = placement.world, placement.slots, placement.num_experts
    geo = {"world": W, "rank": rank, "slots": S, "placement": placement.flat, "num_experts": E}
    new: List = []
    pack = OPS["moe.ep_pack"].create([x, ids, w], geo, c.loc)
    new.append(pack)
    sx, sids, sw, scounts, stok = pack.results
    xc = OPS["moe.exchange_counts"].create([scounts], {"world": W}, c.loc)
    new.append(xc)
    rcounts = xc.result
    a2a = OPS["moe.all_to_all"].create([scounts, rcounts, sx, sids, sw], {"world": W}, c.loc)
    new.append(a2a)
    rx, rids, rwts = a2a.results
    mine = placement.ranks[rank]

    def local(v: Optional[Value], what: str) -> Optional[Value]:
        if v is None:
            return None
        a = const_value(v, m.weights)
        a = None if a is None else np.asarray(a)
        if a is None:
            raise EPError(f"layer {c.attrs.get('layer')}: the experts' {what} is not a constant (EP slices "
                          "constant expert stacks)")
        sl = np.stack([a[e] if e >= 0 else np.zeros_like(a[0]) for e in mine])
        return _const(m, new, sl, f"{v.name or what}.rank{rank}")

    s_in, s_out, z_in, z_out = ex.quant_operands()
    operands = [rx, rids, None, None, local(ex.operands[4], "w_in"), local(ex.operands[5], "w_out")]
    d2 = OPS["moe.dispatch"].create([rids], dict(disp.attrs, num_experts=S), disp.loc)
    new.append(d2)
    operands[2:4] = d2.results
    extras = [local(b_in, "b_in"), local(b_out, "b_out"), rwts if rw is not None else None,
              local(ex.extras().pn_w, "post_norm_w")]
    quant = [local(v, "scales") for v in (s_in, s_out, z_in, z_out) if v is not None]
    ex2 = OPS["moe.experts"].create(operands + [v for v in extras if v is not None] + quant, dict(ex.attrs), ex.loc)
    new.append(ex2)
    part = OPS["moe.combine"].create([ex2.result, rwts], {"weighted": c.attrs["weighted"], "layer": c.attrs["layer"]},
                                     c.loc)
    new.append(part)
    back = OPS["moe.all_to_all"].create([rcounts, scounts, part.result], {"world": W}, c.loc)
    new.append(back)
    cex = list(c.operands[2:])
    unpack = OPS["moe.ep_unpack"].create([back.results[0], stok, x] + cex,
                                         {"has_shared": c.attrs["has_shared"], "passthrough": c.attrs["passthrough"]},
                                         c.loc)
    new.append(unpack)
    i = f.ops.index(c)
    f.ops[i:i + 1] = new
    if c.attrs["has_shared"]:
        # the shared experts need no exchanged row: computed while the rows travel (the run time's
        # exchange is asynchronous; split_stages puts them in a stage of their own after the exchange starts)
        sh = cex[0].owner
        uses = f.uses()
        if sh is not None and sh.name == "moe.shared_experts" and \
                [u for u in uses.get(id(sh.result), [])] == [unpack] and sh.result not in f.outputs:
            f.ops.remove(sh)
            f.ops.insert(f.ops.index(a2a) + 1, sh)
    unpack.result.name = c.result.name
    f.replace_all_uses(c.result, unpack.result)
    for o in (ex, disp):  # now unused (unless something else reads them: then they stay, replicated)
        uses = f.uses()
        if all(id(r) not in uses for r in o.results) and not any(r in f.outputs for r in o.results):
            f.ops.remove(o)


def rank_module(m: Module, plan: EPPlan, rank: int) -> Module:
    """Rank ``rank``'s program of ``m`` under ``plan`` (``m`` is left unchanged)."""
    if not 0 <= rank < plan.world:
        raise EPError(f"rank {rank} is outside [0, {plan.world})")
    r = copy_module(m)
    f = r.main
    for o in list(f.ops):
        if o.name == "moe.route" and o.attrs["capacity"] > 0:
            _split_capacity(r, f, o, rank, plan.world)
    names = dict(layers_of(r))
    n = 0
    for c in list(f.ops):
        if c.name != "moe.combine":
            continue
        ex = c.operands[0].owner
        if ex is None or ex.name != "moe.experts":
            continue
        layer = c.attrs.get("layer") or f"moe{n}"
        n += 1
        _split_layer(r, f, c, plan.for_layer(layer, names.get(layer, int(ex.operands[4].type.shape[0]))), rank)
    from moec.passes.dce import DeadCodeElimination
    DeadCodeElimination().run(r)     # (the full expert stacks and the old dispatch are dead now)
    used = {o.attrs["value"].key for o in f.ops if o.name == "moec.constant"
            and isinstance(o.attrs["value"], ResourceRef)}
    r.weights.remove_unused(used)
    r.attrs["moec.ep"] = json.dumps({"world": plan.world, "rank": rank}, sort_keys=True)
    return r


@register_pass
@dataclass
class ExpertParallel(Pass):
    """The pass form of ``rank_module`` (for the registry, golden tests and tools): rewrites ``m`` in place
    into rank ``rank``'s program of ``world`` ranks (``plan``'s placements, contiguous by default).  A
    module that is already a rank program (``moec.ep`` set) is left as it is."""
    name = "expert-parallel"
    world: int = 2
    rank: int = 0
    plan: Optional[EPPlan] = None

    def run(self, m: Module) -> bool:
        if "moec.ep" in m.attrs:
            return False
        plan = self.plan or EPPlan(self.world)
        r = rank_module(m, plan, self.rank)
        m.functions, m.weights, m.attrs = r.functions, r.weights, r.attrs
        return True


# -- cutting a rank program at its EP ops ---------------------------------------------------------------
@dataclass
class Stage:
    kind: str                       # "compute" (a module) or "host" (one EP op)
    inputs: List[str]               # value keys read
    outputs: List[str]              # value keys written
    module: Optional[Module] = None
    op: Optional[object] = None


def split_stages(m: Module) -> Tuple[List[Stage], List[str], List[str]]:
    """Cut ``m.main`` at its EP ops: (stages in order, input keys, output keys).  A compute stage is a
    module whose arguments / results are the values crossing the cut (constants are cloned into each
    stage using them, never passed); a host stage is one EP op."""
    f = m.main
    keys: Dict[int, str] = {}

    def key(v: Value) -> str:
        if id(v) not in keys:
            keys[id(v)] = f"v{len(keys)}"
        return keys[id(v)]

    in_keys = [key(a) for a in f.args]
    groups: List[Tuple[str, List]] = []
    for o in f.ops:
        if o.name in HOST_OPS:
            groups.append(("host", [o]))
        elif groups and groups[-1][0] == "compute":
            groups[-1][1].append(o)
        else:
            groups.append(("compute", [o]))
    groups = _overlap(groups)
    defined_in: Dict[int, int] = {}
    for gi, (_, ops) in enumerate(groups):
        for o in ops:
            for r in o.results:
                defined_in[id(r)] = gi
    later_use: Dict[int, int] = {}   # value -> the last group using it
    for gi, (kind, ops) in enumerate(groups):
        for o in ops:
            for v in o.operands:
                if kind == "host" and v.owner is not None and v.owner.name == "moec.constant":
                    raise EPError(f"op {o.describe()} reads a constant directly; not supported under EP")
                later_use[id(v)] = max(later_use.get(id(v), -1), gi)
    outs = {id(v) for v in f.outputs}
    stages: List[Stage] = []
    for gi, (kind, ops) in enumerate(groups):
        if kind == "host":
            o = ops[0]
            stages.append(Stage("host", [key(v) for v in o.operands], [key(r) for r in o.results], op=o))
            continue
        sub = Module(attrs={k: v for k, v in m.attrs.items() if k != "moec.ep"})   # (no rank: equal stages
        #                                                                  of two ranks are one stage)
        sf = Function("main", [])
        sub.functions.append(sf)
        local: Dict[int, Value] = {}
        ins: List[str] = []
        for o in ops:
            new_operands = []
            for v in o.operands:
                if id(v) not in local:
                    if v.owner is not None and v.owner.name == "moec.constant":
                        _clone_const(m, sub, sf, v.owner, local)
                    else:
                        a = Value(v.type, key(v))
                        sf.args.append(a)
                        sf.arg_names.append(key(v))
                        ins.append(key(v))
                        local[id(v)] = a
                new_operands.append(local[id(v)])
            if o.name == "moec.constant":   # cloned where it is used (in this stage or a later one)
                continue
            o2 = copy.copy(o)
            o2.attrs = dict(o.attrs)
            o2.operands = new_operands
            o2.results = [Value(r.type, r.name, o2, i) for i, r in enumerate(o.results)]
            for r, r2 in zip(o.results, o2.results):
                local[id(r)] = r2
            sf.ops.append(o2)
        out_keys = []
        for o in ops:
            for r in o.results:
                if later_use.get(id(r), -1) > gi or id(r) in outs:
                    if o.name == "moec.constant" and id(r) not in outs:
                        continue
                    sf.outputs.append(local[id(r)])
                    sf.output_names.append(key(r))
                    out_keys.append(key(r))
        if not out_keys:
            continue
        sf.arg_names = list(sf.arg_names)
        stages.append(Stage("compute", ins, out_keys, module=sub))
    return stages, in_keys, [key(v) for v in f.outputs]


def _overlap(groups: List[Tuple[str, List]]) -> List[Tuple[str, List]]:
    """A compute group right after an exchange (``moe.all_to_all``, asynchronous at run time) splits into the
    ops that need none of its results (run while the rows travel) and the rest (run after the wait)."""
    out: List[Tuple[str, List]] = []
    for gi, (kind, ops) in enumerate(groups):
        if kind != "compute" or gi == 0 or groups[gi - 1][0] != "host" or \
                groups[gi - 1][1][0].name != "moe.all_to_all":
            out.append((kind, ops))
            continue
        waiting = {id(r) for r in groups[gi - 1][1][0].results}
        free, wait = [], []
        for o in ops:
            if any(id(v) in waiting for v in o.operands):
                waiting.update(id(r) for r in o.results)
                wait.append(o)
            else:
                free.append(o)
        out.extend(g for g in (("compute", free), ("compute", wait)) if g[1])
    return out


def _clone_const(m: Module, sub: Module, sf: Function, o, local: Dict[int, Value]) -> None:
    if id(o.results[0]) in local:
        return
    val = o.attrs["value"]
    if isinstance(val, ResourceRef):
        sub.weights.set(val.key, m.weights[val.key])
    o2 = copy.copy(o)
    o2.attrs = dict(o.attrs)
    o2.operands = []
    o2.results = [Value(o.results[0].type, o.results[0].name, o2, 0)]
    local[id(o.results[0])] = o2.results[0]
    sf.ops.append(o2)

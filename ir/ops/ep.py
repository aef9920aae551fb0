"""Expert-parallel (EP) ops: one MoE layer spread over ``world`` ranks (SPMD: every rank runs the same
program on its own tokens, its own experts).  passes/expert_parallel.py writes them; the layer

    route -> dispatch -> experts -> combine

becomes, on rank ``r`` (placement: which logical expert each of a rank's ``slots`` physical expert slots
holds, the same count on every rank, an expert may have replicas on several ranks):

    send_x, send_ids, send_w, send_counts, send_tok = moe.ep_pack(x, ids, w)
    recv_counts = moe.exchange_counts(send_counts)                    (collective)
    rx, rids, rw = moe.all_to_all(send_counts, recv_counts, send_x, send_ids, send_w)  (collective)
    order, offsets = moe.dispatch(rids) {num_experts = slots}
    y = moe.experts(rx, rids, order, offsets, local w_in, local w_out, ...)  -> [R, k, D]
    part = moe.combine(y, rw)                                          (the weighted partial sum)
    back = moe.all_to_all(recv_counts, send_counts, part)              (collective: rows return home)
    out = moe.ep_unpack(back, send_tok, x, [shared], [x, ids])

Capacity routing (Switch) keeps the single-process semantics over the concatenation of every rank's
tokens in rank order: the route runs without capacity, ``moe.expert_counts`` + ``moe.all_gather`` give
every rank the per-expert counts of all ranks, and ``moe.ep_capacity`` drops exactly the slots the
global token order would drop.

Collective ops have the trait ``collective``: their semantics needs every rank's operands at once,
``reference_collective(per_rank_operands) -> per_rank_results`` (numpy), which the SPMD interpreter
(moec.ir.spmd) calls; ``reference`` alone refuses.  The run time does the same exchange with
torch.distributed (compiler/ep.py).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from moec.ir.core import IRError, Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import DType, TensorType

PLACEMENT_ATTRS = {
    "world": Attr("int", doc="ranks"),
    "rank": Attr("int", doc="this rank"),
    "slots": Attr("int", doc="physical expert slots per rank"),
    "placement": Attr("ints", doc="world*slots entries: the logical expert held by rank s // slots, slot "
                                  "s % slots (-1: an empty slot)"),
    "num_experts": Attr("int", doc="logical experts E"),
}


def check_placement(o: Operation) -> None:
    a = o.attrs
    W, S, E = a["world"], a["slots"], a["num_experts"]
    p = a["placement"]
    if W < 1 or S < 1 or E < 1 or not 0 <= a["rank"] < W:
        raise operand_error(o, f"bad EP geometry world={W} rank={a['rank']} slots={S} experts={E}")
    if len(p) != W * S or any(e < -1 or e >= E for e in p):
        raise operand_error(o, f"placement must hold world*slots={W * S} expert ids in [-1, {E})")
    if set(range(E)) - set(p):
        raise operand_error(o, f"placement holds no copy of expert(s) {sorted(set(range(E)) - set(p))[:8]}")


def replica_table(placement: Sequence[int], num_experts: int, rank: Optional[int] = None,
                  slots: int = 0) -> List[List[int]]:
    """For each logical expert, the global physical slots (rank * slots + slot) holding it, ascending; with
    ``rank`` (and ``slots``), the copies a token of that rank may use: only its own rank's copy where it holds
    one (a local copy moves no bytes, as EPLB deployments prefer), else every copy."""
    reps: List[List[int]] = [[] for _ in range(num_experts)]
    for g, e in enumerate(placement):
        if e >= 0:
            reps[e].append(g)
    if rank is not None:
        reps = [[g for g in r if g // slots == rank] or r for r in reps]
    return reps


def choose_replica(ids: np.ndarray, rank: int, slots: int, placement: Sequence[int], num_experts: int) -> np.ndarray:
    """The global physical slot serving each routed slot (-1 for id -1): the copy on the token's own rank if
    there is one, else copy number (t + rank) % n_copies of the expert (t: the token's index on its rank), so
    every rank spreads a remote replicated expert's tokens evenly over its copies."""
    reps = replica_table(placement, num_experts, rank, slots)
    n = max(len(r) for r in reps)
    table = np.array([r + [r[0]] * (n - len(r)) for r in reps], np.int64)      # [E, n]
    nrep = np.array([len(r) for r in reps], np.int64)
    T = ids.shape[0]
    e = np.where(ids >= 0, ids, 0)
    pick = (np.arange(T, dtype=np.int64)[:, None] + rank) % nrep[e]
    g = np.take_along_axis(table[e.reshape(-1)], pick.reshape(-1, 1), axis=1).reshape(ids.shape)
    return np.where(ids >= 0, g, -1)


@op("moe.ep_pack", operands=("x", "ids", "weights"), results=5, traits=("pure",), attrs=dict(PLACEMENT_ATTRS))
class EpPackOp(Operation):
    """x [T, D], ids [T, k] (logical experts, -1 dropped), weights [T, k] -> the rows this rank sends:

        send_x [S, D], send_ids [S, k] i64, send_w [S, k], send_counts [world] i64, send_tok [S] i64

    Each routed slot is served by one physical slot (``choose_replica``).  Token t sends one row to each
    destination rank d serving at least one of its slots (not one per slot); the row holds x[t], and for
    slot j the local slot index on d (else -1) and the routing weight (else 0).  Rows are ordered by
    destination rank, then token; send_counts[d] rows go to d; send_tok is each row's token (it stays
    home, for ``moe.ep_unpack``).  A token whose slots are all dropped sends nothing."""

    def infer_types(self):
        check_placement(self)
        x, ids, w = (v.type for v in self.operands)
        if x.rank != 2 or ids.rank != 2 or w.rank != 2 or ids.dtype != DType.I64 or not x.dtype.is_float:
            raise operand_error(self, f"expects x [T, D] float, ids [T, k] i64, weights [T, k]; got {x}, {ids}, {w}")
        S = None
        return [TensorType(x.dtype, (S, x.shape[1])), TensorType(DType.I64, (S, ids.shape[1])),
                TensorType(w.dtype, (S, ids.shape[1])), TensorType(DType.I64, (self.attrs["world"],)),
                TensorType(DType.I64, (S,))]

    def reference(self, x, ids, w):
        a = self.attrs
        W, S = a["world"], a["slots"]
        if np.any((ids < -1) | (ids >= a["num_experts"])):
            raise ValueError(f"expert id out of range [-1, {a['num_experts']})")
        g = choose_replica(ids, a["rank"], S, a["placement"], a["num_experts"])
        dest = np.where(g >= 0, g // S, -1)
        T, k = ids.shape
        hit = np.zeros((W, T), bool)
        for j in range(k):
            ok = dest[:, j] >= 0
            hit[dest[ok, j], np.nonzero(ok)[0]] = True
        d, tok = np.nonzero(hit)                    # destination-major, token order
        sel = dest[tok] == d[:, None]               # [S, k]
        send_ids = np.where(sel, g[tok] % S, -1).astype(np.int64)
        send_w = np.where(sel, w[tok], np.zeros((), w.dtype)).astype(w.dtype)
        counts = np.bincount(d, minlength=W).astype(np.int64)
        return [x[tok], send_ids, send_w, counts, tok.astype(np.int64)]


@op("moe.ep_unpack", operands=("back", "send_tok", "x", "extra*"), traits=("pure",), attrs={
    "has_shared": Attr("bool", False, doc="an extra [T, D] term (shared experts) is added"),
    "passthrough": Attr("bool", False, doc="tokens whose every slot was dropped output x (Switch)"),
})
class EpUnpackOp(Operation):
    """back [S, D] (the partial results of this rank's sent rows, in ``moe.ep_pack``'s order), send_tok [S],
    x [T, D] -> out [T, D]: out[t] = the sum of the rows sent for t (in row order, accumulated in f32/f64)
    (+ shared[t]); with passthrough (extra: x, ids) a token whose every slot is -1 outputs x[t]."""

    def infer_types(self):
        b, st, x = (v.type for v in self.operands[:3])
        if b.rank != 2 or st.rank != 1 or x.rank != 2 or st.dtype != DType.I64:
            raise operand_error(self, f"expects back [S, D], send_tok [S] i64, x [T, D]; got {b}, {st}, {x}")
        n = int(self.attrs["has_shared"]) + 2 * int(self.attrs["passthrough"])
        if len(self.operands) - 3 != n:
            raise operand_error(self, f"expected {n} extra operand(s), got {len(self.operands) - 3}")
        return [TensorType(b.dtype, (x.shape[0], b.shape[1]))]

    def reference(self, back, send_tok, x, *extra):
        acc = np.float64 if back.dtype == np.float64 else np.float32
        out = np.zeros((x.shape[0], back.shape[1]), acc)
        if send_tok.size and (send_tok.min() < 0 or send_tok.max() >= x.shape[0]):
            raise ValueError("send_tok out of range")
        np.add.at(out, send_tok, back.astype(acc))
        ex = list(extra)
        if self.attrs["has_shared"]:
            out = out + ex.pop(0).astype(acc)
        if self.attrs["passthrough"]:
            xx, ids = ex
            dropped = np.all(ids < 0, axis=1)
            out[dropped] = xx[dropped].astype(acc)
        return [out.astype(back.dtype)]


@op("moe.expert_counts", operands=("ids",), traits=("pure",), attrs={"num_experts": Attr("int")})
class ExpertCountsOp(Operation):
    """ids [T, k] -> counts [E] i64: how many slots chose each expert (-1 not counted)."""

    def infer_types(self):
        if self.operands[0].type.rank != 2:
            raise operand_error(self, "ids must be [T, k]")
        return [TensorType(DType.I64, (self.attrs["num_experts"],))]

    def reference(self, ids):
        v = ids[ids >= 0].astype(np.int64)
        return [np.bincount(v, minlength=self.attrs["num_experts"])[:self.attrs["num_experts"]].astype(np.int64)]


@op("moe.ep_capacity", operands=("weights", "ids", "all_counts"), results=2, traits=("pure",),
    attrs={"capacity": Attr("int"), "rank": Attr("int")})
class EpCapacityOp(Operation):
    """Switch's capacity over all ranks' tokens in rank order: weights [T, 1], ids [T, 1] (routed without
    capacity), all_counts [world, E] (every rank's ``moe.expert_counts``) -> (weights, ids) where the slot of
    a token that is the (C+1)-th or later to choose its expert, counting the tokens of ranks < rank first,
    is dropped (id -1, weight 0) -- exactly ``moe.route``'s capacity rule on the concatenated batch."""

    def infer_types(self):
        w, ids, c = (v.type for v in self.operands)
        if ids.rank != 2 or c.rank != 2:
            raise operand_error(self, "expects weights/ids [T, k] and all_counts [world, E]")
        if self.attrs["capacity"] < 1:
            raise operand_error(self, "capacity must be >= 1")
        return [w, ids]

    def reference(self, w, ids, all_counts):
        r = self.attrs["rank"]
        seen = all_counts[:r].sum(0).astype(np.int64).copy()
        ids, w = ids.copy(), w.copy()
        for t in range(ids.shape[0]):
            for j in range(ids.shape[1]):
                e = ids[t, j]
                if e < 0:
                    continue
                seen[e] += 1
                if seen[e] > self.attrs["capacity"]:
                    ids[t, j] = -1
                    w[t, j] = 0
        return [w, ids]


class CollectiveOp(Operation):
    """A communication op: its semantics needs every rank's operands (``reference_collective``)."""

    def reference(self, *args):
        raise IRError(f"op {self.describe()} is a collective: run the ranks together (moec.ir.spmd.run_ranks)")

    def reference_collective(self, per_rank: List[List[np.ndarray]]) -> List[List[np.ndarray]]:
        raise NotImplementedError(self.name)


@op("moe.exchange_counts", operands=("send_counts",), traits=("collective",), attrs={"world": Attr("int")})
class ExchangeCountsOp(CollectiveOp):
    """send_counts [world] i64 -> recv_counts [world]: recv_counts[s] on rank r = send_counts[r] on rank s
    (the small all-to-all that tells every rank the split sizes of the row exchange)."""

    def infer_types(self):
        t = self.operands[0].type
        if t.rank != 1 or t.dtype != DType.I64:
            raise operand_error(self, f"send_counts must be i64 [world], got {t}")
        return [TensorType(DType.I64, (self.attrs["world"],))]

    def reference_collective(self, per_rank):
        c = np.stack([a[0] for a in per_rank])     # [src, dst]
        return [[c[:, r].astype(np.int64).copy()] for r in range(len(per_rank))]


@op("moe.all_to_all", operands=("send_counts", "recv_counts", "data*"), results=None, traits=("collective",),
    attrs={"world": Attr("int")})
class AllToAllOp(CollectiveOp):
    """Uneven all-to-all of row blocks: for each data tensor [S, ...] (rows grouped by destination,
    send_counts[d] rows to rank d), the result [R, ...] holds the rows received from rank 0, 1, ... in
    order, recv_counts[s] from rank s (split sizes known at run time only)."""

    def infer_types(self):
        for v in self.operands[:2]:
            if v.type.rank != 1 or v.type.dtype != DType.I64:
                raise operand_error(self, f"counts must be i64 [world], got {v.type}")
        if len(self.operands) < 3:
            raise operand_error(self, "nothing to exchange")
        return [TensorType(v.type.dtype, (None,) + tuple(v.type.shape[1:])) for v in self.operands[2:]]

    def reference_collective(self, per_rank):
        W = len(per_rank)
        sc = [np.asarray(a[0], np.int64) for a in per_rank]
        rc = [np.asarray(a[1], np.int64) for a in per_rank]
        for r in range(W):
            for s in range(W):
                if rc[r][s] != sc[s][r]:
                    raise ValueError(f"rank {r} expects {rc[r][s]} rows from rank {s}, which sends {sc[s][r]}")
            for d in per_rank[r][2:]:
                if d.shape[0] != sc[r].sum():
                    raise ValueError(f"rank {r}: {d.shape[0]} rows but send_counts sum to {sc[r].sum()}")
        offs = [np.concatenate([[0], np.cumsum(c)]) for c in sc]
        out = []
        for r in range(W):
            out.append([np.concatenate([per_rank[s][2 + i][offs[s][r]:offs[s][r + 1]] for s in range(W)])
                        for i in range(len(per_rank[r]) - 2)])
        return out


@op("moe.all_gather", operands=("x",), traits=("collective",), attrs={"world": Attr("int")})
class AllGatherOp(CollectiveOp):
    """x (same shape on every rank) -> [world, ...]: every rank's x, in rank order."""

    def infer_types(self):
        t = self.operands[0].type
        return [TensorType(t.dtype, (self.attrs["world"],) + tuple(t.shape))]

    def reference_collective(self, per_rank):
        g = np.stack([a[0] for a in per_rank])
        return [[g.copy()] for _ in per_rank]

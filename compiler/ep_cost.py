"""Expert-parallel cost model: `moec plan --ep N --cluster SPEC`.

Predicts, per MoE layer and rank, the bytes an expert-parallel layer moves (dispatch, combine), the expert
FLOPs and weight bytes it reads, turns each into time with the link and chip figures of a cluster, and takes
the maximum over ranks (load imbalance) as the layer's time.

The byte counts are exact for a given routing (``exchange_bytes``): the same wire format the run time uses
(``Wire``), so the count for a routing the gloo runs actually see can be compared with what they moved.
The routing itself is drawn (seeded) from uniform, Zipf-skewed or DeepSeek-V3 node-limited distributions;
the times are roofline lower bounds (bytes / bandwidth, FLOPs / peak) plus a per-step latency, never a
measurement. Every figure and its source is in ``CHIPS``/``LINKS``; ``published()`` lists the measured
figures the model is compared with.

This module imports numpy only (no torch): it runs anywhere.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from moec.errors import UserInputError
from moec.ir.ops.ep import choose_replica
from moec.passes.expert_parallel import EPError, Placement
from moec.passes.ep_placement import balanced_placement


# ----------------------------------------------------------------------------------------------------------- hardware

@dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float          # dense peak, FLOP/s
    low_flops: float           # fp8 (NVIDIA) / int8 (Ascend) dense peak, FLOP/s
    hbm_bytes_s: float
    source: str


@dataclass(frozen=True)
class Link:
    name: str
    bytes_s: float             # per device, per direction
    latency_s: float           # per exchange step (counts, then rows), an assumption
    source: str


@dataclass(frozen=True)
class Cluster:
    name: str
    chip: Chip
    per_node: int              # devices joined by the intra-node link
    intra: Link
    inter: Link
    low_name: str              # the low-precision format the chip's low_flops figure is for
    notes: str = ""


CHIPS = {
    "h100": Chip("H100 SXM", 989e12, 1979e12, 3.35e12,
                 "NVIDIA H100 SXM datasheet: bf16 dense 989 TFLOP/s, fp8 dense 1979 TFLOP/s, HBM3 3.35 TB/s "
                 "(also ../shared/design/expert-parallel.md)"),
    "h800": Chip("H800 SXM", 989e12, 1979e12, 3.35e12,
                 "same compute and HBM as H100 SXM; NVLink reduced (DeepEP: ~160 GB/s measured max)"),
    "910b2": Chip("Ascend 910B2", 354e12, 708e12, 1.6e12,
                  "../shared/design/ascendc-target.md: fp16/bf16 cube peak about 354 TFLOPS, HBM about 1.6 TB/s, "
                  "INT8 about 2x FP16"),
}

LINKS = {
    "nvlink4": Link("NVLink 4 (NVSwitch)", 450e9, 3e-6,
                    "H100 SXM: 900 GB/s bidirectional = 450 GB/s per direction (datasheet); latency assumed"),
    "nvlink-h800": Link("NVLink (H800)", 160e9, 3e-6,
                        "DeepEP README: H800 NVLink ~160 GB/s max (measured); latency assumed"),
    "ib400": Link("InfiniBand CX7 400 Gb/s per GPU", 50e9, 8e-6,
                  "400 Gb/s = 50 GB/s per direction per GPU (DeepEP README: ~50 GB/s max); latency assumed"),
    "hccs": Link("HCCS (910B, 8 NPUs full mesh)", 196e9, 4e-6,
                 "assumption: 7 HCCS links x 56 GB/s = 392 GB/s per NPU, taken as 196 GB/s per direction "
                 "(vendor figure as commonly quoted, not verified here); DeepEP-Ascend measured 146 GB/s at EP8"),
    "roce200": Link("RoCE 200 GbE per NPU", 25e9, 10e-6,
                    "assumption: one 200 GbE RoCE port per NPU (Atlas 800T A2) = 25 GB/s per direction"),
}

CLUSTERS = {
    "h100": Cluster("H100 nodes of 8, NVLink inside, CX7 InfiniBand across", CHIPS["h100"], 8,
                    LINKS["nvlink4"], LINKS["ib400"], "fp8"),
    "h800": Cluster("H800 nodes of 8 (DeepSeek-V3's), NVLink inside, CX7 InfiniBand across", CHIPS["h800"], 8,
                    LINKS["nvlink-h800"], LINKS["ib400"], "fp8"),
    "h800-rdma": Cluster("H800, every peer over RDMA (DeepEP low-latency mode)", CHIPS["h800"], 1,
                         LINKS["ib400"], LINKS["ib400"], "fp8"),
    "910b": Cluster("Ascend 910B2 nodes of 8, HCCS inside, RoCE across", CHIPS["910b2"], 8,
                    LINKS["hccs"], LINKS["roce200"], "int8"),
}


# ------------------------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Layer:
    """One MoE layer: D hidden, E routed experts of intermediate F, top-k, shared experts of intermediate Fs."""
    D: int
    E: int
    k: int
    F: int
    shared: int = 0
    Fs: int = 0
    groups: int = 1            # expert groups (DeepSeek-V3: 8), for node-limited routing
    topk_groups: int = 0       # groups a token may use (DeepSeek-V3: 4); 0 = no limit

    def expert_flops(self) -> int:
        return 6 * self.D * self.F           # gate, up, down matmuls per (token, expert) pair

    def shared_flops(self) -> int:
        return 6 * self.D * self.Fs * self.shared


DEEPSEEK_V3 = Layer(D=7168, E=256, k=8, F=2048, shared=1, Fs=2048, groups=8, topk_groups=4)
MIXTRAL_LIKE = Layer(D=1024, E=8, k=2, F=2816)


@dataclass(frozen=True)
class Wire:
    """What one token row costs on the wire.

    dispatch: the row (D values of ``row_bytes`` each, + ``scale_bytes`` of quantisation scales and
    ``row_meta_bytes`` of ids/weights per row), then ``meta_bytes`` per (token, expert on that rank); combine:
    one partial row (``combine_bytes`` per value) per (token, destination rank). Counts (R int64 per rank) are
    not included.
    """
    row_bytes: float = 1.0         # fp8/int8 dispatch
    scale_bytes: int = 0
    meta_bytes: int = 8            # int32 id + f32 weight per (token, expert on that rank)
    combine_bytes: float = 2.0     # bf16 combine
    row_meta_bytes: int = 0

    @staticmethod
    def moec(x_itemsize: int, k: int, w_itemsize: int = 4) -> "Wire":
        """moec's own exchange (compiler/ep.py, ``moe.ep_pack``): the row in the activations' type, then all k
        slots' ids (i64) and routing weights on every row; partial rows back in the activations' type."""
        return Wire(float(x_itemsize), 0, 0, float(x_itemsize), k * (8 + w_itemsize))

    @staticmethod
    def for_dtype(name: str, D: int) -> "Wire":
        if name == "fp8":              # per-128-value f32 scales, as DeepEP's fp8 dispatch
            return Wire(1.0, 4 * ((D + 127) // 128), 8, 2.0)
        if name == "int8":             # one f32 scale per row, as DeepEP-Ascend's int8 dispatch
            return Wire(1.0, 4, 8, 2.0)
        if name == "bf16":
            return Wire(2.0, 0, 8, 2.0)
        if name == "f32":
            return Wire(4.0, 0, 8, 4.0)
        raise UserInputError(f"unknown wire dtype '{name}' (fp8, int8, bf16, f32)")


def exchange_bytes(ids_per_rank: Sequence[np.ndarray], placement: Placement, D: int, wire: Wire
                   ) -> Dict[str, np.ndarray]:
    """Exact bytes of one EP layer for the given routing.

    ids_per_rank[r]: [T_r, k] expert ids of rank r's tokens; ``placement`` moec's (passes/expert_parallel.py),
    a replicated expert's copy chosen as the run time chooses it (``choose_replica``). Returns R x R matrices (source, destination):
    ``dispatch`` and ``combine`` bytes (a rank's own rows are counted on the diagonal: they are not sent),
    ``pairs`` the (token, expert) pairs each rank computes for each source, ``rows`` the token rows, and
    ``expert_pairs`` [R, E] the pairs each rank computes for each expert."""
    R, S = placement.world, placement.slots
    E = placement.num_experts
    flat = placement.flat
    disp = np.zeros((R, R), dtype=np.float64)
    comb = np.zeros((R, R), dtype=np.float64)
    pairs = np.zeros((R, R), dtype=np.int64)
    rows = np.zeros((R, R), dtype=np.int64)
    per_expert = np.zeros((R, E), dtype=np.int64)
    for src, ids in enumerate(ids_per_rank):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            continue
        T, k = ids.shape
        g = choose_replica(ids, src, S, flat, E)               # the run time's own replica choice (-1: dropped)
        ok = g >= 0
        dst = g[ok] // S
        np.add.at(per_expert, (dst, ids[ok]), 1)
        n_pairs = np.bincount(dst, minlength=R)
        key = np.unique((np.arange(T, dtype=np.int64)[:, None] * R + g // S)[ok])     # distinct (token, rank)
        n_rows = np.bincount(key % R, minlength=R)
        rows[src] = n_rows
        pairs[:, src] = n_pairs
        disp[src] = n_rows * (D * wire.row_bytes + wire.scale_bytes + wire.row_meta_bytes) + n_pairs * wire.meta_bytes
        comb[:, src] = n_rows * D * wire.combine_bytes
    return {"dispatch": disp, "combine": comb, "pairs": pairs, "rows": rows, "expert_pairs": per_expert}


# ----------------------------------------------------------------------------------------------------------- routing

def draw_routing(layer: Layer, R: int, tokens_per_rank: int, skew: float = 0.0, seed: int = 0,
                 node_limited_ranks: int = 0) -> List[np.ndarray]:
    """Seeded top-k expert ids for every rank's tokens. skew = Zipf exponent of expert popularity (0: uniform).
    With ``layer.topk_groups`` the token first picks that many expert groups (by popularity), then its k experts
    among them (DeepSeek-V3's group-limited routing)."""
    rng = np.random.default_rng(seed)
    E, k = layer.E, layer.k
    pop = 1.0 / np.arange(1, E + 1) ** skew if skew > 0 else np.ones(E)
    pop = pop[rng.permutation(E)]
    pop = pop / pop.sum()
    out = []
    for _ in range(R):
        T = tokens_per_rank
        # Gumbel top-k = sampling k distinct experts without replacement, with probabilities pop
        g = np.log(pop)[None, :] - np.log(-np.log(rng.random((T, E))))
        if layer.topk_groups and layer.groups > 1:
            gs = E // layer.groups
            gscore = np.partition(g.reshape(T, layer.groups, gs), gs - 2, axis=2)[:, :, -2:].sum(axis=2)
            keep = np.argpartition(-gscore, layer.topk_groups - 1, axis=1)[:, :layer.topk_groups]
            mask = np.full((T, layer.groups), -np.inf)
            np.put_along_axis(mask, keep, 0.0, axis=1)
            g = g + np.repeat(mask, gs, axis=1)
        out.append(np.argpartition(-g, k - 1, axis=1)[:, :k].astype(np.int64))
    return out


def load_histogram(ids_per_rank: Sequence[np.ndarray], E: int) -> np.ndarray:
    return np.bincount(np.concatenate([np.asarray(i).reshape(-1) for i in ids_per_rank]), minlength=E)


# --------------------------------------------------------------------------------------------------------- the model

@dataclass
class Prediction:
    ranks: int
    tokens_per_rank: int
    dispatch_bytes_max: float          # bytes out of the busiest rank, network only (own rows excluded)
    combine_bytes_max: float
    dispatch_s: float
    combine_s: float
    expert_s: float
    shared_s: float
    layer_s: float                     # dispatch + max(experts, shared overlap) + combine
    pairs_max: int
    pairs_mean: float
    compute_bound: str

    def row(self) -> dict:
        return dataclasses.asdict(self)


def _link_time(out_b: np.ndarray, in_b: np.ndarray, cl: Cluster) -> float:
    """Time of one all-to-all: for every rank, its intra- and inter-node bytes (sent or received, whichever is
    larger) over the two links, which run at the same time; the layer waits for the slowest rank."""
    R = out_b.shape[0]
    node = np.arange(R) // max(cl.per_node, 1)
    same = node[:, None] == node[None, :]
    off = ~np.eye(R, dtype=bool)
    worst = 0.0
    for r in range(R):
        intra = max(out_b[r, same[r] & off[r]].sum(), in_b[same[:, r] & off[:, r], r].sum())
        inter = max(out_b[r, ~same[r]].sum(), in_b[~same[:, r], r].sum())
        t = max(intra / cl.intra.bytes_s, inter / cl.inter.bytes_s)
        worst = max(worst, t)
    multi = R > cl.per_node
    lat = 2 * (cl.inter.latency_s if multi else cl.intra.latency_s)    # counts, then rows
    return worst + lat


def predict(layer: Layer, cl: Cluster, R: int, tokens_per_rank: int, ids: Sequence[np.ndarray],
            placement: Placement, wire: Wire, weight_bytes: float = 1.0) -> Prediction:
    """The layer's predicted time on R ranks of cluster ``cl`` for the routing ``ids``."""
    x = exchange_bytes(ids, placement, layer.D, wire)
    disp, comb = x["dispatch"], x["combine"]
    net = ~np.eye(R, dtype=bool)
    t_disp = _link_time(disp * net, disp * net, cl)
    t_comb = _link_time(comb * net, comb * net, cl)
    pairs = x["pairs"].sum(axis=1)
    peak = cl.chip.low_flops if weight_bytes <= 1.0 else cl.chip.bf16_flops
    t_exp, bound = 0.0, "compute"
    for r in range(R):
        flops = pairs[r] * layer.expert_flops()
        used = int((x["expert_pairs"][r] > 0).sum())     # each local expert with tokens is read once
        wbytes = used * 3 * layer.D * layer.F * weight_bytes
        t_f, t_m = flops / peak, wbytes / cl.chip.hbm_bytes_s
        if max(t_f, t_m) > t_exp:
            t_exp, bound = max(t_f, t_m), ("compute" if t_f >= t_m else "memory")
    sh_f = tokens_per_rank * layer.shared_flops()
    sh_m = 3 * layer.D * layer.Fs * layer.shared * weight_bytes
    t_sh = max(sh_f / peak, sh_m / cl.chip.hbm_bytes_s) if layer.shared else 0.0
    layer_s = t_disp + max(t_exp, t_sh) + t_comb
    return Prediction(R, tokens_per_rank, float((disp * net).sum(axis=1).max()),
                      float((comb * net).sum(axis=1).max()), t_disp, t_comb, t_exp, t_sh, layer_s,
                      int(pairs.max()), float(pairs.mean()), bound)


def uniform_distinct_ranks(E: int, R: int, k: int) -> float:
    """Expected number of distinct ranks a token's k distinct experts (uniform, contiguous placement) land on."""
    per = E // R
    miss = math.comb(E - per, k) / math.comb(E, k)
    return R * (1.0 - miss)


# ---------------------------------------------------------------------------------------------------- published data

def published() -> List[dict]:
    """Measured figures the model is compared with (../shared/design/expert-parallel.md, from DeepEP's README
    and sgl-kernel-npu's DeepEP-Ascend). tokens: per rank; time in seconds; bandwidth in bytes/s."""
    return [
        {"what": "DeepEP low-latency dispatch, H800, pure RDMA, 128 tokens, fp8", "cluster": "h800-rdma",
         "ranks": 8, "tokens": 128, "phase": "dispatch", "time_s": 77e-6},
        {"what": "DeepEP low-latency dispatch", "cluster": "h800-rdma", "ranks": 32, "tokens": 128,
         "phase": "dispatch", "time_s": 155e-6},
        {"what": "DeepEP low-latency dispatch", "cluster": "h800-rdma", "ranks": 256, "tokens": 128,
         "phase": "dispatch", "time_s": 194e-6},
        {"what": "DeepEP low-latency combine (bf16)", "cluster": "h800-rdma", "ranks": 8, "tokens": 128,
         "phase": "combine", "time_s": 114e-6},
        {"what": "DeepEP low-latency combine (bf16)", "cluster": "h800-rdma", "ranks": 32, "tokens": 128,
         "phase": "combine", "time_s": 273e-6},
        {"what": "DeepEP low-latency combine (bf16)", "cluster": "h800-rdma", "ranks": 256, "tokens": 128,
         "phase": "combine", "time_s": 360e-6},
        {"what": "DeepEP normal internode dispatch, 4096 tokens, fp8 (bottleneck RDMA bandwidth)",
         "cluster": "h800", "ranks": 32, "tokens": 4096, "phase": "dispatch", "bandwidth": 58e9},
        {"what": "DeepEP normal internode combine, 4096 tokens, bf16", "cluster": "h800", "ranks": 32,
         "tokens": 4096, "phase": "combine", "bandwidth": 57e9},
        {"what": "DeepEP normal internode dispatch", "cluster": "h800", "ranks": 64, "tokens": 4096,
         "phase": "dispatch", "bandwidth": 51e9},
    ]


def compare_published(seed: int = 0, ranks_cap: Optional[int] = None) -> List[dict]:
    """The model's prediction next to each published figure (same routing family: DeepSeek-V3's layer)."""
    out = []
    for p in published():
        R = p["ranks"]
        if ranks_cap and R > ranks_cap:
            continue
        cl = CLUSTERS[p["cluster"]]
        ids = draw_routing(DEEPSEEK_V3, R, p["tokens"], seed=seed)
        pl = Placement.contiguous(DEEPSEEK_V3.E, R).check()
        wire = Wire.for_dtype("fp8", DEEPSEEK_V3.D)
        pr = predict(DEEPSEEK_V3, cl, R, p["tokens"], ids, pl, wire)
        t = pr.dispatch_s if p["phase"] == "dispatch" else pr.combine_s
        row = {"what": p["what"], "ranks": R, "tokens": p["tokens"], "predicted_s": t}
        if "time_s" in p:
            row.update(published_s=p["time_s"], ratio=t / p["time_s"])
        else:   # bottleneck bandwidth: the inter-node link's bytes over time -> compare the implied times
            b = pr.dispatch_bytes_max if p["phase"] == "dispatch" else pr.combine_bytes_max
            row.update(published_bandwidth=p["bandwidth"], implied_s=b / p["bandwidth"],
                       ratio=t / (b / p["bandwidth"]))
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------------------- table

def plan_table(cluster: str, ranks: Sequence[int], layer: Layer = DEEPSEEK_V3, skew: float = 0.0,
               seed: int = 0, balance: bool = True) -> List[dict]:
    """Decode (128 tokens per rank) and prefill (4096) for each rank count; with ``balance`` the placement
    pass's balanced placement (from the drawn routing's histogram) beside the contiguous one."""
    if cluster not in CLUSTERS:
        raise UserInputError(f"unknown cluster '{cluster}'; known: {', '.join(sorted(CLUSTERS))}")
    cl = CLUSTERS[cluster]
    wire = Wire.for_dtype(cl.low_name, layer.D)
    rows = []
    for R in ranks:
        if R < 1:
            raise UserInputError(f"--ep {R}: at least one rank")
        for phase, T in (("decode", 128), ("prefill", 4096)):
            ids = draw_routing(layer, R, T, skew=skew, seed=seed)
            plans = [("contiguous", Placement.contiguous(layer.E, R).check())]
            if balance:     # moec's placement pass with one redundant slot per rank (DeepSeek-V3's prefill: 256 +
                # 32 on 32 ranks), or, past one rank per expert, one slot each, the rest replicas (decode: EP320)
                slots = -(-layer.E // R) + 1 if R <= layer.E else 1
                plans.append(("balanced", balanced_placement(load_histogram(ids, layer.E), R, slots)))
            for name, pl in plans:
                pr = predict(layer, cl, R, T, ids, pl, wire)
                rows.append({"cluster": cluster, "phase": phase, "placement": name, **pr.row()})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    hdr = ("| phase | ranks | placement | dispatch MB (max rank) | dispatch us | experts us | shared us | "
           "combine us | layer us | pairs max/mean | bound |")
    lines = [hdr, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['ranks']} | {r['placement']} | {r['dispatch_bytes_max'] / 1e6:.2f} | "
                     f"{r['dispatch_s'] * 1e6:.0f} | {r['expert_s'] * 1e6:.0f} | {r['shared_s'] * 1e6:.0f} | "
                     f"{r['combine_s'] * 1e6:.0f} | {r['layer_s'] * 1e6:.0f} | "
                     f"{r['pairs_max'] / max(r['pairs_mean'], 1e-9):.2f} | {r['compute_bound']} |")
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="predict an expert-parallel MoE layer's time on a cluster (cost model)",
                       description="Cost model of one expert-parallel MoE layer (default DeepSeek-V3's: D=7168, "
                       "256 experts, k=8, F=2048, 1 shared expert, group-limited routing) at decode (128 tokens "
                       "per rank) and prefill (4096): dispatch/combine bytes and time over the cluster's links, "
                       "expert FLOPs and weight bytes over the chip's peak and HBM, the slowest rank deciding. "
                       "Lower bounds from the figures printed with --sources, not measurements.")
    p.add_argument("--ep", type=str, default="32,64,256", metavar="N,N,..", help="rank counts")
    p.add_argument("--cluster", default="h100", choices=sorted(CLUSTERS), help="cluster description")
    p.add_argument("--skew", type=float, default=0.0, help="Zipf exponent of expert popularity (0 = uniform)")
    p.add_argument("--layer", default="deepseek-v3", choices=["deepseek-v3", "mixtral"], help="layer shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true", help="also print the model next to published figures")
    p.add_argument("--sources", action="store_true", help="print the chip and link figures and their sources")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--no-balance", action="store_true", help="only the contiguous placement (skip the placement "
                   "pass's balanced rows)")


def cmd_plan(a) -> int:
    try:
        ranks = [int(x) for x in a.ep.split(",") if x.strip()]
    except ValueError:
        raise UserInputError(f"--ep: expected comma-separated integers, got '{a.ep}'") from None
    if not ranks or any(r < 1 or r > 4096 for r in ranks):
        raise UserInputError("--ep: rank counts must be between 1 and 4096")
    if a.skew < 0 or a.skew > 4:
        raise UserInputError("--skew: a Zipf exponent between 0 and 4")
    layer = DEEPSEEK_V3 if a.layer == "deepseek-v3" else MIXTRAL_LIKE
    try:
        rows = plan_table(a.cluster, ranks, layer, a.skew, a.seed, not a.no_balance)
    except EPError as e:
        raise UserInputError(str(e)) from None
    res = {"cluster": a.cluster, "rows": rows}
    if a.compare:
        res["published"] = compare_published(a.seed)
    if a.sources:
        cl = CLUSTERS[a.cluster]
        res["sources"] = {"chip": dataclasses.asdict(cl.chip), "intra": dataclasses.asdict(cl.intra),
                          "inter": dataclasses.asdict(cl.inter)}
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{CLUSTERS[a.cluster].name}; layer {layer}; skew {a.skew}")
    print(format_table(rows))
    if a.compare:
        print("\n| published figure | ranks | tokens | model / published |\n|---|---|---|---|")
        for r in res["published"]:
            print(f"| {r['what']} | {r['ranks']} | {r['tokens']} | {r['ratio']:.2f} |")
    if a.sources:
        for k, v in res["sources"].items():
            print(f"{k}: {v['name']}: {v['source']}")
    return 0

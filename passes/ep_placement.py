"""ep-placement: balance expert load over ranks from a routing histogram, with redundant replicas of the
hottest experts (the greedy scheme of DeepSeek's EPLB, global policy; written from its description).

    load[e]        expert-slot count of expert e (moec profile-routing, or given as JSON)
    replicate      world * slots - E extra copies: each goes to the expert whose per-copy load
                   load[e] / copies[e] is the largest at that moment
    pack           copies by decreasing per-copy load, each onto the least loaded rank that has a free slot
                   and no copy of that expert yet
    predicted      rank load = sum of its copies' per-copy loads (a replicated expert's tokens split evenly)

``dispatch_load`` gives the load the run time will actually see for given routing ids: each slot served
by the copy ``choose_replica`` picks (the token's own rank's copy where it holds one, else copies taken in
turn), so predicted and measured can be compared.  With tokens spread evenly over ranks the local-first
choice still splits an expert's load evenly over its n copies (1/world of it is each holder's own tokens,
the other (world - n)/world spread over the n copies: load/n per copy), which ``predicted_load`` assumes.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from moec.ir.ops.ep import choose_replica
from moec.passes.expert_parallel import EPError, Placement


def balanced_placement(load: Sequence[float], world: int, slots: int = 0) -> Placement:
    """The balanced placement of experts with histogram ``load`` over ``world`` ranks of ``slots`` slots
    (default: ceil(E / world), i.e. replicas only to fill the last rank's empty slots)."""
    load = np.asarray(load, np.float64)
    E = load.size
    slots = slots or -(-E // world)
    if slots * world < E:
        raise EPError(f"{world} ranks x {slots} slots cannot hold {E} experts")
    if slots > E:
        raise EPError(f"{slots} slots per rank is more than the {E} experts (a rank holds each expert once)")
    copies = np.ones(E, np.int64)
    for _ in range(world * slots - E):
        per = load / copies
        per[copies >= world] = -1          # at most one copy per rank
        e = int(np.argmax(per))
        if per[e] < 0:
            break
        copies[e] += 1
    items = sorted(((load[e] / copies[e], e) for e in range(E) for _ in range(copies[e])), key=lambda t: (-t[0], t[1]))
    ranks: List[List[int]] = [[] for _ in range(world)]
    rank_load = np.zeros(world)
    for w, e in items:
        ok = [r for r in range(world) if len(ranks[r]) < slots and e not in ranks[r]]
        if not ok:
            raise EPError("internal: no rank can take another copy")
        r = min(ok, key=lambda r: (rank_load[r], r))
        ranks[r].append(e)
        rank_load[r] += w
    for row in ranks:
        row.extend([-1] * (slots - len(row)))
    return Placement(E, ranks).check()


def predicted_load(p: Placement, load: Sequence[float]) -> np.ndarray:
    """Per-rank load if every replicated expert's slots split evenly over its copies."""
    load = np.asarray(load, np.float64)
    copies = np.bincount([e for e in p.flat if e >= 0], minlength=p.num_experts)
    return np.array([sum(load[e] / copies[e] for e in row if e >= 0) for row in p.ranks])


def dispatch_load(p: Placement, ids_per_rank: Sequence[np.ndarray]) -> np.ndarray:
    """Expert slots each rank computes when rank r's tokens route to ``ids_per_rank[r]`` (the run time's
    replica choice)."""
    out = np.zeros(p.world, np.int64)
    for r, ids in enumerate(ids_per_rank):
        g = choose_replica(np.asarray(ids, np.int64), r, p.slots, p.flat, p.num_experts)
        g = g[g >= 0]
        out += np.bincount(g // p.slots, minlength=p.world)[:p.world]
    return out


def imbalance(loads: np.ndarray) -> Dict[str, float]:
    """max / mean load over ranks (1.0: perfect)."""
    loads = np.asarray(loads, np.float64)
    mean = float(loads.mean()) if loads.size else 0.0
    return {"max": float(loads.max()) if loads.size else 0.0, "mean": mean,
            "max_over_mean": float(loads.max() / mean) if mean > 0 else 1.0}

"""Expert parallelism: build an EP artifact and run one rank of it on torch.distributed.

Artifact (``compile_ep``, one directory any rank loads)::

    OUT/ep.json             world size, placements, inputs/outputs, each rank's program: compute stages
                            (built modules) and EP ops between them (passes/expert_parallel.py), and the
                            weight bytes each rank loads
    OUT/model.mlir          the single-device module the rank programs were cut from (+ weights; tools
                            only: no rank loads it)
    OUT/stages/<hash>/      a compute stage, a plain artifact of the target, stored once and named by its
                            content: the replicated stages (router, attention, norms, shared experts) are
                            the same on every rank and shared by their programs; an expert stage holds one
                            rank's expert slots only, so a rank loads the replicated weights + its experts

Run time (``EPRank``): the rank's stages run with the target's compiled code; the EP ops run here, on
torch tensors: the data movement (pack rows by destination, sum the returned rows per token) with
torch ops on the tensors' own device, the exchange with torch.distributed collectives
(``all_to_all_single`` with run-time split sizes; gloo for CPU tensors, the same calls on CUDA / NPU
tensors with NCCL / HCCL; no transport of moec's own).  A CPU stage takes its arguments as numpy views
of the CPU tensors (no copy).  Every collective is bounded by the process group's timeout, so a rank
that dies or hangs fails the others with a clear error instead of a hang.

Tokens are data parallel: rank r holds a contiguous slice of the batch along the dimension
``batch_split`` found on the IR (the batch of [batch, seq, ...] inputs, the tokens of [tokens, hidden];
never one that attention or a normalisation mixes along), ``token_slices`` says which.
"""
from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec._version import __version__
from moec.errors import RuntimeFailure, UserInputError
from moec.ir import Module, save_module
from moec.passes.expert_parallel import EPError, EPPlan, Placement, layers_of, rank_module, split_stages

EP_JSON = "ep.json"
EP_FORMAT = 2          # ep.json's layout (2: stages/<hash>, the batch split, return overlap marks)
DEFAULT_TIMEOUT_S = 60.0


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    return v


def read_placement_file(path: str, world: int) -> Dict[str, Placement]:
    """--placement FILE.json: {"ranks": [[...], ...]} for every layer, or {"layers": {name: {...}}}."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise UserInputError(f"--placement '{path}': cannot read it as JSON ({type(e).__name__}: {e})") from None
    try:
        if isinstance(d, dict) and isinstance(d.get("layers"), dict):
            return {k: Placement.from_json(v, world=world) for k, v in d["layers"].items()}
        return {"*": Placement.from_json(d, world=world)}
    except EPError as e:
        raise UserInputError(f"--placement '{path}': {e}") from None


def _probe_inputs(m: Module, sym: str, n: int, seed: int) -> List[np.ndarray]:
    """Seeded inputs with ``n`` along the symbol ``sym`` (other symbols 3): floats normal, integers 0/1
    (indices any table of two or more rows accepts), booleans random."""
    rng = np.random.default_rng(seed)
    out = []
    for a in m.main.args:
        shape = [n if d == sym else 3 if isinstance(d, str) or d is None else d for d in a.type.shape]
        dt = a.type.dtype
        if dt.is_float:
            out.append(rng.standard_normal(shape).astype(dt.np))
        elif dt.np == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(np.bool_))
        else:
            out.append(rng.integers(0, 2, shape).astype(dt.np))
    return out


def batch_split(m: Module, world: int) -> dict:
    """Which dimension of the inputs spreads the batch over ranks (data parallel), decided on the IR: for each
    symbolic input dimension in turn (the first input's leading one first: the batch of [batch, seq, ...]
    or the tokens of [tokens, hidden]), the ranks' programs run by the N-rank reference on the inputs cut
    along it must give the single-device reference's result on the whole (seeded random inputs, two draws).
    A dimension that ops mix along -- the sequence of attention, a normalisation over tokens -- fails; so does
    one the outputs lack.  Returns {"symbol", "in_dims", "out_dims"} (the dimension per input / output, -1 where
    an input lacks it: passed whole to every rank); UserInputError when none splits."""
    from moec.ir import run as interpret
    from moec.ir.spmd import run_ranks
    f = m.main
    cands: List[str] = []
    for a in f.args:
        cands += [d for d in a.type.shape if isinstance(d, str) and d not in cands]
    plan = EPPlan(world)
    mods = None
    tried = []
    for sym in cands:
        in_dims = [list(a.type.shape).index(sym) if sym in a.type.shape else -1 for a in f.args]
        mods = mods or [rank_module(m, plan, r) for r in range(world)]
        out_dims: List[Optional[int]] = [list(v.type.shape).index(sym) if sym in v.type.shape else None
                                         for v in f.outputs]
        ok = True
        for seed, n in ((1, 2 * world + 1), (0, 2 * world)):   # (uneven first: rank 0's part is the longer)
            xs = _probe_inputs(m, sym, n, seed)
            want = list(interpret(m, xs).values())
            sl = token_slices(n, world)
            parts = run_ranks(mods, [[x if d < 0 else np.take(x, range(s.start, s.stop), axis=d)
                                      for x, d in zip(xs, in_dims)] for s in sl])
            for i, w in enumerate(want):
                if out_dims[i] is None:    # (a dimension the types lost, '?': the one the ranks' parts differ in)
                    diff = [d for d in range(w.ndim) if len({p[i].shape[d] for p in parts}) > 1]
                    out_dims[i] = diff[0] if len(diff) == 1 else -1
                d = out_dims[i]
                if d < 0:
                    ok = False
                    break
                got = np.concatenate([p[i] for p in parts], axis=d)
                if got.shape != w.shape or not np.allclose(got.astype(np.float64), w.astype(np.float64),
                                                           rtol=1e-4, atol=1e-5, equal_nan=True):
                    ok = False
            if not ok:
                break
        if ok:     # a rank with no part of the batch (fewer than world): fine for [tokens, hidden] models;
            #        a model that reshapes by its batch cannot run an empty one (reshape [0, S, D] to [0, -1, ..])
            xs = _probe_inputs(m, sym, world - 1, 2)
            try:
                run_ranks(mods, [[x if d < 0 else np.take(x, range(s.start, s.stop), axis=d)
                                  for x, d in zip(xs, in_dims)] for s in token_slices(world - 1, world)])
                empty_ok = True
            except Exception:  # noqa: BLE001 - any failure of the reference on an empty part: refuse it at run time
                empty_ok = False
            return {"symbol": sym, "in_dims": in_dims, "out_dims": out_dims, "empty_rank_ok": empty_ok}
        tried.append(f"'{sym}' (" + ("an output lacks it" if -1 in out_dims else
                                     "the model mixes values along it: cutting it changes the result") + ")")
    raise UserInputError("--ep: no input dimension splits the batch over ranks (data parallel): "
                         + ("; ".join(tried) if tried else "the inputs have no symbolic dimension")
                         + "; export the model with a dynamic batch dimension")


def compile_ep(m: Module, outdir: str, world: int, target: str = "cpu", arch: str = "native",
               placements: Optional[Dict[str, Placement]] = None, force: bool = False, name: str = "model") -> dict:
    """Write the EP artifact of ``m`` (after the pipeline) for ``world`` ranks into ``outdir``; return ep.json."""
    from moec.artifact_dir import Staging, write_manifest
    from moec.driver import build_module
    if world < 1:
        raise UserInputError(f"--ep {world}: the number of ranks must be >= 1")
    layers = layers_of(m)
    if not layers:
        raise UserInputError(f"--ep {world}: no MoE layer was recognised in '{name}'; nothing to spread")
    plan = EPPlan(world, dict(placements or {}))
    try:
        for layer, E in layers:
            plan.for_layer(layer, E)
    except EPError as e:
        raise UserInputError(f"--placement: {e}") from None
    split = batch_split(m, world)
    f = m.main
    info = {
        "kind": "ep-artifact", "moec_version": __version__, "model": name, "target": target, "world": world,
        "token_symbol": split["symbol"], "split": split,
        "inputs": [{"name": n, "type": str(a.type)} for n, a in zip(f.arg_names, f.args)],
        "outputs": [{"name": n, "type": str(v.type)} for n, v in zip(f.output_names, f.outputs)],
        "layers": [{"layer": L, "experts": E, "placement": plan.for_layer(L, E).to_json()} for L, E in layers],
        "ranks": [],
    }
    stage_bytes: Dict[str, int] = {}       # stage folder -> the weight bytes it holds
    with Staging(outdir, force) as st:
        save_module(m, os.path.join(st.path, "model.mlir"))
        os.makedirs(os.path.join(st.path, "stages"), exist_ok=True)
        for r in range(world):
            rm = rank_module(m, plan, r)
            stages, ins, outs = split_stages(rm)
            prog = []
            for i, s in enumerate(stages):
                if s.kind == "compute":
                    d = f"stages/{stage_digest(s.module)}"
                    if d not in stage_bytes:        # (a stage another rank has too: stored and built once)
                        build_module(s.module, os.path.join(st.path, d), target=target, arch=arch, threads=1)
                        stage_bytes[d] = sum(int(np.asarray(a).nbytes) for _, a in s.module.weights.items())
                    prog.append({"kind": "compute", "dir": d, "in": s.inputs, "out": s.outputs})
                else:
                    prog.append({"kind": "host", "op": s.op.name, "in": s.inputs, "out": s.outputs,
                                 "attrs": {k: _jsonable(v) for k, v in s.op.attrs.items()}})
            info["ranks"].append({"in": ins, "out": outs, "program": prog})
            _mark_return_overlap(prog, {s.outputs[0]: s for s in stages if s.kind == "compute" and s.outputs})
        dirs = [{s["dir"] for s in p["program"] if s["kind"] == "compute"} for p in info["ranks"]]
        common = set.intersection(*dirs) if dirs else set()
        for p, ds in zip(info["ranks"], dirs):
            p["weight_bytes"] = sum(stage_bytes[d] for d in ds)
        info["weights"] = {"stored_bytes": sum(stage_bytes.values()),
                           "replicated_bytes": sum(stage_bytes[d] for d in common),
                           "per_rank_bytes": [p["weight_bytes"] for p in info["ranks"]]}
        with open(os.path.join(st.path, EP_JSON), "w") as fh:
            json.dump(info, fh, indent=1)
        write_manifest(st.path, {"moec_version": __version__, "model": name, "target": target, "kind": "artifact",
                                 "ep": world, "inputs": info["inputs"], "outputs": info["outputs"],
                                 "roles": {"ep": EP_JSON, "ir": "model.mlir"}})
        st.publish()
    return info


ROW_WISE_OPS = {"moec.constant", "moe.dispatch", "moe.experts", "moe.combine"}   # (row i of the result: row i's)


def _mark_return_overlap(prog: List[dict], stage_of: Dict[str, object]) -> None:
    """Mark each return exchange whose rows come from an expert stage that works row by row on the rows the
    dispatch exchange delivered (dispatch, experts, combine: the pass's local layer): the run time then runs
    that stage on the rows from other ranks first, starts their return, and computes its own rows (which
    travel nowhere) while they move ("overlap": "own_rows_last")."""
    made_by = {}
    for i, s in enumerate(prog):
        for k in s["out"]:
            made_by[k] = i
    for i in range(1, len(prog)):
        s, c = prog[i], prog[i - 1]
        if s["kind"] != "host" or s["op"] != "moe.all_to_all" or len(s["in"]) != 3 or c["kind"] != "compute":
            continue
        if c["out"] != [s["in"][2]] or c["out"][0] not in stage_of or \
                any(c["out"][0] in t["in"] for t in prog if t is not s):
            continue
        src = {made_by.get(k) for k in c["in"]}
        if len(src) != 1 or None in src:
            continue
        d = prog[src.pop()]
        if d["kind"] != "host" or d["op"] != "moe.all_to_all" or d["in"][1] != s["in"][0] or \
                d["in"][0] != s["in"][1]:
            continue
        if {o.name for o in stage_of[c["out"][0]].module.main.ops} <= ROW_WISE_OPS:
            s["overlap"] = "own_rows_last"


def stage_digest(m: Module) -> str:
    """A compute stage's name: the hash of its IR text and weights (equal stages of two ranks: one folder)."""
    import hashlib
    from moec.ir import print_module
    return hashlib.sha256(print_module(m).encode() + m.weights.digest().encode()).hexdigest()[:16]


def stage_weight_bytes(outdir: str, dirs) -> int:
    """The weight bytes the stages in ``dirs`` hold, read from their own weight indexes (what a rank loads; a weight
    stored as its kernels' panels counts its own size, not the panels' zero padding)."""
    from moec.ir import DType
    total = 0
    for d in sorted(set(dirs)):
        with open(os.path.join(outdir, d, "model.weights.json")) as f:
            for e in json.load(f).values():
                n = int(e["nbytes"])
                if e.get("layout") is not None:
                    n = min(n, int(np.prod(e["shape"], dtype=np.int64)) * DType.parse(e["dtype"]).np.itemsize)
                total += n
    return total


def read_ep(outdir: str) -> dict:
    p = os.path.join(outdir, EP_JSON)
    try:
        with open(p) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise UserInputError(f"'{outdir}' is not an EP artifact ({EP_JSON}: {type(e).__name__}); compile one "
                             "with `moec compile MODEL --ep N -o DIR`") from None
    if not isinstance(info, dict) or info.get("kind") != "ep-artifact" or not isinstance(info.get("ranks"), list):
        raise UserInputError(f"'{outdir}': {EP_JSON} does not describe an EP artifact; recompile it")
    _check_programs(outdir, info)
    return info


def _check_programs(outdir: str, info: dict) -> None:
    """The programs only name stage folders stages/<hash> and EP ops (their attributes a dict): the run time
    loads and calls nothing else, whatever the file says."""
    import re
    from moec.passes.expert_parallel import HOST_OPS

    def bad(why):
        raise UserInputError(f"'{outdir}': {EP_JSON} is damaged ({why}); recompile the artifact")
    if not isinstance(info.get("world"), int) or info["world"] < 1 or len(info["ranks"]) != info["world"]:
        bad("world size and rank programs disagree")
    sp = info.get("split")
    if not isinstance(sp, dict) or not isinstance(info.get("inputs"), list) or not isinstance(info.get("outputs"), list):
        bad("no batch split")
    for k, n in (("in_dims", len(info["inputs"])), ("out_dims", len(info["outputs"]))):
        v = sp.get(k)
        if not isinstance(v, list) or len(v) != n or not all(type(d) is int and -1 <= d < 64 for d in v):
            bad(f"split {k}")
    for r, prog in enumerate(info["ranks"]):
        if not isinstance(prog, dict) or not all(isinstance(prog.get(k), list) for k in ("in", "out", "program")):
            bad(f"rank {r}'s program")
        for s in prog["program"]:
            if not isinstance(s, dict) or not isinstance(s.get("in"), list) or not isinstance(s.get("out"), list):
                bad(f"rank {r}: a step")
            if s.get("kind") == "compute":
                if not isinstance(s.get("dir"), str) or not re.fullmatch(r"stages/[0-9a-f]{16}", s["dir"]):
                    bad(f"rank {r}: stage folder {str(s.get('dir'))[:80]!r}")
            elif s.get("kind") == "host":
                if s.get("op") not in HOST_OPS or not isinstance(s.get("attrs"), dict):
                    bad(f"rank {r}: EP op {str(s.get('op'))[:80]!r}")
            else:
                bad(f"rank {r}: step kind {str(s.get('kind'))[:40]!r}")
        for i, s in enumerate(prog["program"]):
            if "overlap" in s:   # (the stage before it: the expert stage whose rows it returns)
                c = prog["program"][i - 1] if i else {}
                if s["overlap"] != "own_rows_last" or s.get("op") != "moe.all_to_all" or len(s["in"]) != 3 or \
                        c.get("kind") != "compute" or c.get("out") != [s["in"][2]]:
                    bad(f"rank {r}: overlap of step {i}")


def token_slices(n_tokens: int, world: int) -> List[slice]:
    """Rank r's tokens: contiguous, the first n % world ranks one more (numpy's array_split)."""
    q, rem = divmod(n_tokens, world)
    out, a = [], 0
    for r in range(world):
        b = a + q + (1 if r < rem else 0)
        out.append(slice(a, b))
        a = b
    return out


def check_split(info: dict, arrays: Sequence[np.ndarray]) -> int:
    """The batch size along the split dimension; UserInputError (one line) when it cannot give every rank a
    part and the model cannot run an empty one."""
    sp, W = info["split"], info["world"]
    n = next((a.shape[d] for a, d in zip(arrays, sp["in_dims"]) if d >= 0), 0)
    if n < W and not sp.get("empty_rank_ok", True):
        i = next(i for i, d in enumerate(sp["in_dims"]) if d >= 0)
        raise UserInputError(f"the batch does not split over {W} ranks: input '{info['inputs'][i]['name']}' has "
                             f"{n} along dimension {sp['in_dims'][i]} ('{sp['symbol']}'), the model needs at least one "
                             f"per rank (it cannot run an empty batch); give {W} or more, or fewer ranks")
    return n


def split_inputs(info: dict, arrays: Sequence[np.ndarray], rank: int) -> List[np.ndarray]:
    """Rank ``rank``'s part of the full inputs: each cut along its split dimension (``batch_split``), the
    inputs without one whole."""
    n = check_split(info, arrays)
    dims = info["split"]["in_dims"]
    sl = token_slices(n, info["world"])[rank]
    return [a if d < 0 else a[(slice(None),) * d + (sl,)] for a, d in zip(arrays, dims)]


def join_outputs(info: dict, per_rank: Sequence[Sequence[np.ndarray]]) -> List[np.ndarray]:
    """The full outputs from every rank's, in rank order along each output's split dimension."""
    return [np.concatenate([p[i] for p in per_rank], axis=d) for i, d in enumerate(info["split"]["out_dims"])]


# -- the EP ops on torch tensors (semantics: ir/ops/ep.py, the numpy reference) -------------------------------
def _torch():
    import torch
    return torch


def _pack(attrs, x, ids, w):
    torch = _torch()
    W, S, r, E = attrs["world"], attrs["slots"], attrs["rank"], attrs["num_experts"]
    dev = ids.device
    from moec.ir.ops.ep import replica_table
    reps = replica_table(attrs["placement"], E, r, S)      # (a local copy first: choose_replica's rule)
    n = max(len(p) for p in reps)
    table = torch.tensor([p + [p[0]] * (n - len(p)) for p in reps], dtype=torch.int64, device=dev)
    nrep = torch.tensor([len(p) for p in reps], dtype=torch.int64, device=dev)
    T, k = ids.shape
    valid = ids >= 0
    e = torch.where(valid, ids, torch.zeros_like(ids))
    pick = (torch.arange(T, device=dev).unsqueeze(1) + r) % nrep[e]
    g = torch.where(valid, table[e, pick], torch.full_like(e, -1))
    dest = torch.where(valid, torch.div(g, S, rounding_mode="floor"), torch.full_like(g, -1))
    hit = torch.zeros((W, T), dtype=torch.bool, device=dev)
    for j in range(k):
        ok = valid[:, j]
        hit[dest[ok, j], torch.nonzero(ok).flatten()] = True
    d, tok = torch.nonzero(hit, as_tuple=True)           # destination-major, token order
    sel = dest[tok] == d.unsqueeze(1)
    send_ids = torch.where(sel, g[tok] % S, torch.full_like(g[tok], -1))
    send_w = torch.where(sel, w[tok], torch.zeros_like(w[tok]))
    counts = torch.bincount(d, minlength=W).to(torch.int64)
    return [x[tok], send_ids, send_w, counts, tok.to(torch.int64)]


def _unpack(attrs, back, send_tok, x, *extra):
    torch = _torch()
    acc = torch.float64 if back.dtype == torch.float64 else torch.float32
    out = torch.zeros((x.shape[0], back.shape[1]), dtype=acc, device=back.device)
    out.index_add_(0, send_tok, back.to(acc))
    ex = list(extra)
    if attrs["has_shared"]:
        out = out + ex.pop(0).to(acc)
    if attrs["passthrough"]:
        xx, ids = ex
        dropped = torch.all(ids < 0, dim=1)
        out[dropped] = xx[dropped].to(acc)
    return [out.to(back.dtype)]


def _expert_counts(attrs, ids):
    torch = _torch()
    return [torch.bincount(ids[ids >= 0], minlength=attrs["num_experts"])[:attrs["num_experts"]].to(torch.int64)]


def _capacity(attrs, w, ids, all_counts):
    torch = _torch()
    C, r = attrs["capacity"], attrs["rank"]
    E = all_counts.shape[1]
    seen = all_counts[:r].sum(0)
    flat = ids.reshape(-1)                                 # slots in token order
    valid = flat >= 0
    oh = torch.nn.functional.one_hot(torch.where(valid, flat, torch.zeros_like(flat)), E) * valid.unsqueeze(1)
    pos = (oh.cumsum(0) * oh).sum(1)                       # 1-based position among this rank's choosers
    drop = valid & (seen[torch.where(valid, flat, torch.zeros_like(flat))] + pos > C)
    drop = drop.reshape(ids.shape)
    return [torch.where(drop, torch.zeros_like(w), w), torch.where(drop, torch.full_like(ids, -1), ids)]


class Exchange:
    """The collectives of one rank, on torch.distributed (counts the bytes and the time they take)."""

    def __init__(self, world: int, group=None):
        import torch.distributed as dist
        self.dist, self.group, self.world = dist, group, world
        self.rank = dist.get_rank(group) if group is not None else dist.get_rank()
        self.bytes_sent = 0
        self.seconds = 0.0
        self.calls = 0

    def _run(self, what: str, fn):
        t0 = time.perf_counter()
        try:
            fn()
        except RuntimeError as e:
            raise RuntimeFailure(f"rank {self.dist.get_rank()}: the {what} failed (a peer rank died, hung past the "
                                 f"timeout, or left): {str(e).splitlines()[0][:300]}") from None
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def exchange_counts(self, attrs, send_counts):
        out = send_counts.new_empty(send_counts.shape)
        self._run("count exchange (all_to_all)",
                  lambda: self.dist.all_to_all_single(out, send_counts.contiguous(), group=self.group))
        return [out]

    def all_to_all(self, attrs, send_counts, recv_counts, *data):
        """Starts the exchange and returns (outputs, Inflight): the outputs hold the rows once it is waited for
        (the caller computes what does not need them meanwhile)."""
        return self.start([int(v) for v in send_counts.tolist()], [int(v) for v in recv_counts.tolist()], data)

    def start(self, sc: List[int], rc: List[int], data):
        """``all_to_all`` with the split sizes as lists (sc[d] rows of each tensor to rank d)."""
        torch = _torch()
        outs, works, keep = [], [], []
        for t in data:
            row = int(np.prod(t.shape[1:], dtype=np.int64)) * t.element_size()
            # rows as bytes: one code path for every dtype (gloo has no bf16 reduction, an all_to_all
            # moves bytes anyway); a view, never a copy of contiguous data
            n = int(np.prod(t.shape[1:], dtype=np.int64))
            src = (t.contiguous().reshape(t.shape[0], n).view(torch.uint8).reshape(t.shape[0], row) if t.numel()
                   else torch.empty((t.shape[0], row), dtype=torch.uint8, device=t.device))
            dst = torch.empty((sum(rc), row), dtype=torch.uint8, device=t.device)
            box = []
            self._run("row exchange (all_to_all)",
                      lambda: box.append(self.dist.all_to_all_single(dst, src, output_split_sizes=rc,
                                                                     input_split_sizes=sc, group=self.group,
                                                                     async_op=True)))
            works.extend(box)
            keep += [src, dst]
            self.bytes_sent += (sum(sc) - sc[self.rank]) * row        # (rows kept on this rank move nothing)
            shape = (sum(rc),) + tuple(t.shape[1:])
            outs.append(dst.view(t.dtype).reshape(shape) if dst.numel() else t.new_empty(shape))
        return outs, Inflight(self, works, keep)

    def all_gather(self, attrs, x):
        parts = [x.new_empty(x.shape) for _ in range(self.world)]
        self._run("all_gather", lambda: self.dist.all_gather(parts, x.contiguous(), group=self.group))
        return [_torch().stack(parts)]


class Inflight:
    """An exchange under way: ``wait()`` (idempotent) before its outputs are read."""

    def __init__(self, ex: Exchange, works, keep):
        self.ex, self.works, self.keep = ex, works, keep

    def wait(self) -> None:
        works, self.works = self.works, []
        for w in works:
            self.ex._run("row exchange (all_to_all)", w.wait)
        self.keep = []


_DATA_OPS = {"moe.ep_pack": _pack, "moe.ep_unpack": _unpack, "moe.expert_counts": _expert_counts,
             "moe.ep_capacity": _capacity}


COLLECTIVES = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}   # torch device type -> torch.distributed backend


def collective_backend(device: str) -> str:
    """The torch.distributed backend that moves tensors of ``device`` ("cpu", "cuda:0", "npu:1")."""
    kind = device.split(":")[0]
    if kind not in COLLECTIVES:
        raise UserInputError(f"expert parallelism: no torch.distributed backend is known for {kind} tensors")
    return COLLECTIVES[kind]


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK; RANK without it)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def rank_device(target: str, local: Optional[int] = None) -> str:
    """Where ``target``'s tensors live on this process (its backend says: targets/*_backend.py ep_device)."""
    from moec.targets import backend
    return backend(target).ep_device(local_rank() if local is None else local)


class EPRank:
    """One rank of an EP artifact, inside an initialised process group: call it on this rank's tokens.

    The rank's tensors live on the target's device (``rank_device``: CPU tensors for the C target, Triton's
    interpreter and the Ascend emulator; the GPU for Triton on CUDA; the NPU where torch_npu works); its
    stages run through the backend's ``ep_call`` on them and the exchanges move them as they are."""

    def __init__(self, outdir: str, rank: Optional[int] = None, world: Optional[int] = None, threads: int = 1,
                 group=None, device: Optional[str] = None):
        import torch.distributed as dist
        from moec.targets import backend
        self.info = read_ep(outdir)
        if rank is None:
            rank = dist.get_rank(group) if group is not None else dist.get_rank()
        if world is None:
            world = dist.get_world_size(group) if group is not None else dist.get_world_size()
        if world != self.info["world"]:
            raise UserInputError(f"'{outdir}' was compiled for {self.info['world']} ranks; this process group has "
                                 f"{world} (compile with --ep {world})")
        self.rank, self.world = rank, world
        self.prog = self.info["ranks"][rank]
        be = self.backend = backend(self.info["target"])
        self.device = device or be.ep_device(local_rank())
        self.stages = {s["dir"]: be.load(os.path.join(outdir, s["dir"]), threads=threads)
                       for s in self.prog["program"] if s["kind"] == "compute"}
        self.weight_bytes = stage_weight_bytes(outdir, self.stages)   # replicated weights + this rank's experts
        self.exchange = Exchange(world, group)
        self.compute_seconds = 0.0
        self.input_names = [x["name"] for x in self.info["inputs"]]
        self.output_names = [x["name"] for x in self.info["outputs"]]

    def __call__(self, *inputs) -> list:
        """This rank's inputs (torch tensors or numpy arrays) -> its outputs (torch tensors)."""
        torch = _torch()
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.prog["in"]):
            raise UserInputError(f"expected {len(self.prog['in'])} inputs, got {len(inputs)}")
        self.slots_received = []     # per layer: expert slots this rank computed (its measured load)
        env = {k: (x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))).to(self.device)
               for k, x in zip(self.prog["in"], inputs)}
        inflight: Dict[str, Inflight] = {}
        recv_ids: List[str] = []
        prog = self.prog["program"]
        for i, s in enumerate(prog):
            if s["kind"] == "compute" and i + 1 < len(prog) and prog[i + 1].get("overlap") == "own_rows_last":
                continue     # (run with its return exchange, below)
            if s.get("overlap") == "own_rows_last":       # (its rows: the skipped expert stage's result)
                c = prog[i - 1]
                for k in c["in"] + s["in"][:2]:
                    if k in inflight:
                        inflight.pop(k).wait()
                outs = [self._own_rows_last(c["dir"], [env[k] for k in c["in"]], env[s["in"][0]], env[s["in"][1]])]
                for k, v in zip(s["out"], outs):
                    env[k] = v
                continue
            for k in s["in"]:
                if k in inflight:          # (values of an exchange still under way: wait for it now)
                    inflight.pop(k).wait()
            args = [env[k] for k in s["in"]]
            if s["kind"] == "compute":
                t0 = time.perf_counter()
                outs = self.backend.ep_call(self.stages[s["dir"]], args)
                self.compute_seconds += time.perf_counter() - t0
            elif s["op"] in _DATA_OPS:
                t0 = time.perf_counter()
                outs = _DATA_OPS[s["op"]](s["attrs"], *args)
                self.compute_seconds += time.perf_counter() - t0
            elif s["op"] == "moe.all_to_all":
                outs, fl = self.exchange.all_to_all(s["attrs"], *args)
                inflight.update((k, fl) for k in s["out"])
                if len(outs) == 3:   # the dispatch (rows, local ids, weights): counted once arrived (below)
                    recv_ids.append(s["out"][1])
            else:
                outs = getattr(self.exchange, s["op"].split(".")[1])(s["attrs"], *args)
            for k, v in zip(s["out"], outs):
                env[k] = v
        for fl in list(inflight.values()):
            fl.wait()
        self.slots_received = [int((env[k] >= 0).sum()) for k in recv_ids]   # this rank's expert load per layer
        return [env[k] for k in self.prog["out"]]

    def _own_rows_last(self, stage_dir: str, rows: list, back_send, back_recv):
        """An expert stage and its return exchange, overlapped: the stage on the rows other ranks sent, their
        return started (asynchronous), the stage on this rank's own rows while they travel (own rows never
        travel), then the returned rows with the own block in its place (source-rank order, as the exchange)."""
        torch = _torch()
        r = self.rank
        sc = [int(v) for v in back_send.tolist()]      # rows received from each rank = partial rows to send back
        rc = [int(v) for v in back_recv.tolist()]      # rows this rank sent to each = partial rows coming back
        a, b = sum(sc[:r]), sum(sc[:r + 1])
        stage = self.stages[stage_dir]
        t0 = time.perf_counter()
        part = self.backend.ep_call(stage, [torch.cat([t[:a], t[b:]]) for t in rows])[0]
        self.compute_seconds += time.perf_counter() - t0
        sc[r] = rc[r] = 0
        (got,), fl = self.exchange.start(sc, rc, [part])
        t0 = time.perf_counter()
        own = self.backend.ep_call(stage, [t[a:b] for t in rows])[0]
        self.compute_seconds += time.perf_counter() - t0
        fl.wait()
        at = sum(rc[:r])
        return torch.cat([got[:at], own, got[at:]])


def init_process_group(rank: int, world: int, addr: str, port: int, timeout_s: float = DEFAULT_TIMEOUT_S,
                       backend: str = "gloo") -> None:
    """``backend``: ``collective_backend(rank_device(target))`` for an artifact of ``target``."""
    import torch.distributed as dist
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))


def compile_module_ep(m: Module, world: int, target: str = "cpu", placements=None, group=None,
                      outdir: Optional[str] = None) -> "EPRank":
    """moec.compile(..., expert_parallel=N): rank 0 of the (initialised) process group builds the artifact
    (after the pipeline ran on ``m``) into ``outdir`` (default a folder of the moec cache keyed by the module),
    the others wait for it; every rank returns its callable."""
    import torch.distributed as dist
    if not dist.is_initialized():
        raise UserInputError("moec.compile(expert_parallel=N) runs inside an initialised torch.distributed process "
                             "group (torch.distributed.init_process_group, or torchrun)")
    ws = dist.get_world_size(group) if group is not None else dist.get_world_size()
    if ws != world:
        raise UserInputError(f"expert_parallel={world} but the process group has {ws} ranks")
    rank = dist.get_rank(group) if group is not None else dist.get_rank()
    box = [None]
    if rank == 0:
        try:
            if not layers_of(m):
                raise UserInputError("no MoE layer was recognised; nothing to spread over ranks")
            if outdir is None:
                import hashlib
                import tempfile
                from moec.ir import print_module
                h = hashlib.sha256(print_module(m).encode() + m.weights.digest().encode() +
                                   repr((world, target, placements, __version__, EP_FORMAT)).encode()).hexdigest()[:24]
                outdir = os.path.join(tempfile.gettempdir(), f"moec-ep-{os.getuid()}", h)
            try:
                read_ep(outdir)            # (built before, and in this run time's format)
            except UserInputError:
                compile_ep(m, outdir, world, target=target, placements=placements, force=True)
            box = [outdir]
        except Exception as e:
            box = [f"error: {type(e).__name__}: {e}"]
    dist.broadcast_object_list(box, src=0, group=group)
    if box[0] is None or box[0].startswith("error: "):
        raise RuntimeFailure(f"rank {rank}: rank 0 could not build the EP artifact: {box[0]}")
    return EPRank(box[0], rank, world, group=group)


def run_lockstep(outdir: str, arrays: Sequence[np.ndarray], threads: int = 1) -> List[np.ndarray]:
    """Every rank of the artifact in this process, in lockstep: the compiled stages of each rank, the EP ops
    with their numpy reference semantics (ir/ops/ep.py), collectives handed every rank's operands.  Checks
    the compiled code of every rank at compile time without processes; returns the full outputs."""
    from moec.ir.opdef import OPS
    from moec.targets import backend
    info = read_ep(outdir)
    W = info["world"]
    be = backend(info["target"])

    def op_of(s):
        o = OPS[s["op"]].__new__(OPS[s["op"]])
        o.attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in s["attrs"].items()}
        o.operands, o.results, o.loc = [], [], None
        return o

    def steps(r):
        prog = info["ranks"][r]
        env = dict(zip(prog["in"], split_inputs(info, arrays, r)))
        for s in prog["program"]:
            args = [env[k] for k in s["in"]]
            if s["kind"] == "compute":
                outs = be.load(os.path.join(outdir, s["dir"]), threads=threads)([np.ascontiguousarray(a) for a in args])
            else:
                o = op_of(s)
                outs = (yield o, args) if hasattr(o, "reference_collective") else o.reference(*args)
            env.update(zip(s["out"], outs))
        return [env[k] for k in prog["out"]]

    gens = [steps(r) for r in range(W)]
    pending, results = [None] * W, [None] * W

    def advance(r, value):
        try:
            pending[r] = gens[r].send(value)
        except StopIteration as e:
            pending[r], results[r] = None, e.value

    for r in range(W):
        advance(r, None)
    while any(p is not None for p in pending):
        if any(p is None for p in pending):
            raise RuntimeFailure("EP artifact: the ranks' programs reach different numbers of collectives")
        outs = pending[0][0].reference_collective([p[1] for p in pending])
        for r in range(W):
            advance(r, outs[r])
    return join_outputs(info, results)


def compile_api(model, example_inputs, world: int, target: str = "cpu", weights: str = "f32",
                verify: bool = True, dynamic_dims=None, experts_implementation="auto", group=None,
                placements=None) -> "EPRank":
    """``moec.compile(model, example_inputs, expert_parallel=N)``: inside an initialised process group of N
    ranks, rank 0 imports the module (torch.export) or ONNX model, runs the pipeline and builds the EP artifact;
    every rank returns its callable (this rank's tokens in, this rank's outputs out).  ``verify``: every rank
    runs the example inputs as its own tokens (all ranks exchanging) and compares with the module's eager output."""
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        raise UserInputError("moec.compile(expert_parallel=N) runs inside an initialised torch.distributed process "
                             "group (torch.distributed.init_process_group, or torchrun)")
    is_module = hasattr(model, "forward") and hasattr(model, "state_dict")
    ex = tuple(x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)) for x in example_inputs or ())
    rank = dist.get_rank(group) if group is not None else dist.get_rank()
    m = Module()
    if rank == 0:
        from moec.passes.pipeline import run_pipeline
        from moec.targets import target_for
        if is_module:
            from moec.hf_experts import import_module
            m = import_module(model, ex, dynamic_dims, experts_implementation)
        else:
            from moec.driver import load_model_proto
            from moec.frontend.onnx_import import import_model
            m = import_model(*load_model_proto(model))
        run_pipeline(m, target_for(target), weights=weights)
    ep = compile_module_ep(m, world, target=target, placements=placements, group=group)
    if verify and is_module and ex:
        got = ep(*ex)
        with torch.no_grad():
            want = model(*ex)
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        from moec.tolerances import tolerance_for
        tol = tolerance_for("bf16" if weights == "bf16" else "f32")
        for g, w in zip(got, want):
            if not torch.allclose(g.to(torch.float64), w.detach().to(torch.float64), rtol=tol.rtol, atol=tol.atol):
                from moec.errors import VerificationError
                raise VerificationError(f"rank {rank}: the expert-parallel build differs from the module by "
                                        f"{(g.double() - w.double()).abs().max().item():.3g} on the example inputs")
    return ep

"""The command-line side of expert parallelism (compiler/ep.py): ``moec compile --ep N [--placement F]``,
``moec run OUT --nproc N``, ``moec bench --ep N``, ``moec profile-routing``.  cli.py calls in here."""
from __future__ import annotations

import json
import os
import time
from typing import List

import numpy as np

from moec.errors import UserInputError, VerificationError, show_name


def add_arguments(compile_p, run_p, bench_p, sub) -> None:
    compile_p.add_argument("--ep", type=int, default=0, metavar="N",
                           help="expert parallelism over N ranks: one artifact any rank loads (run it with "
                                "`moec run OUT --nproc N` or torchrun -m moec.launch)")
    compile_p.add_argument("--placement", metavar="FILE.json", default=None,
                           help='--ep: experts per rank {"ranks": [[0, 1], [2, 3], ...]} (replicas allowed; '
                                "default contiguous), e.g. from `moec profile-routing --ep N --placement-out`")
    run_p.add_argument("--nproc", type=int, default=0, metavar="N",
                       help="an --ep artifact: start N local processes (gloo) and run the tokens split over them")
    run_p.add_argument("--timeout", type=float, default=60.0,
                       help="--nproc: seconds a rank waits for a peer in a collective before failing")
    bench_p.add_argument("--ep", type=int, default=0, metavar="N",
                         help="cpu: time N processes x 1 thread (expert parallel) against 1 process x N threads "
                              "on the Mixtral-like layer (or MODEL)")
    p = sub.add_parser("profile-routing", help="count the tokens each expert receives on given inputs; "
                       "optionally write a balanced placement for --ep")
    p.add_argument("model", help="path to an .onnx file")
    p.add_argument("--inputs", action="append", default=[], metavar="FILE.npz",
                   help="input sets (numpy.savez, arrays named as the model's inputs); default: seeded random "
                        "inputs of 256 tokens")
    p.add_argument("--ep", type=int, default=0, metavar="N", help="balance over N ranks")
    p.add_argument("--slots", type=int, default=0, help="expert slots per rank (default: E / N, +1 with --replicas)")
    p.add_argument("--histogram-out", metavar="FILE.json", help="write the per-layer expert histogram")
    p.add_argument("--placement-out", metavar="FILE.json", help="write the balanced placement (for --placement)")


def _module(model: str, target: str, arch: str, weights: str = "f32", group: int = 64, zero_point: bool = False):
    from moec.driver import load_model_proto
    from moec.frontend.onnx_import import import_model
    from moec.passes.pipeline import run_pipeline
    from moec.targets import target_for
    proto, name = load_model_proto(model)
    m = import_model(proto, name)
    run_pipeline(m, target_for(target, arch), weights=weights, group=group, zero_point=zero_point)
    return proto, name, m


def _random_inputs(m, T: int, seed: int) -> List[np.ndarray]:
    """Seeded inputs, every symbolic dimension T: floats normal, integers (token ids, masks) 0 or 1."""
    rng = np.random.default_rng(seed)
    out = []
    for a, n in zip(m.main.args, m.main.arg_names):
        shape = [T if isinstance(d, str) or d is None else d for d in a.type.shape]
        if a.type.dtype.is_float:
            out.append(rng.standard_normal(shape).astype(a.type.dtype.np))
        elif np.issubdtype(a.type.dtype.np, np.integer):
            out.append(rng.integers(0, 2, shape).astype(a.type.dtype.np))
        else:
            raise UserInputError(f"--ep verification draws float and integer inputs; input '{show_name(n)}' is "
                                 f"{a.type.dtype.mlir} (compile with --no-verify)")
    return out


def cmd_compile(a) -> int:
    from moec.ep import compile_ep, read_placement_file, run_lockstep
    from moec.tolerances import tolerance_for
    t0 = time.perf_counter()
    if a.ep < 0:
        raise UserInputError(f"--ep {a.ep}: the number of ranks must be positive")
    placements = read_placement_file(a.placement, a.ep) if a.placement else None   # (before the long work)
    proto, name, m = _module(a.model, a.target, a.arch, a.weights, a.group_size, a.zero_point)
    info = compile_ep(m, a.output, a.ep, target=a.target, arch=a.arch, placements=placements, force=a.force,
                      name=name)
    print(f"moec: compiled '{show_name(name)}' for {a.ep} expert-parallel ranks ({a.target}) into "
          f"{show_name(a.output, 4096)} in {time.perf_counter() - t0:.2f}s")
    for L in info["layers"]:
        print(f"  layer {L['layer']}: {L['experts']} experts over {a.ep} ranks, "
              f"{len(L['placement']['ranks'][0])} slots each")
    w = info["weights"]
    print(f"  weights per rank: {', '.join(f'{b / 1e6:.3g} MB' for b in w['per_rank_bytes'])} (replicated "
          f"{w['replicated_bytes'] / 1e6:.3g} MB + the rank's experts); stored once: {w['stored_bytes'] / 1e6:.3g} MB")
    if a.no_verify:
        print("  not verified (--no-verify)")
        return 0
    # every rank's compiled stages in one process (the EP ops by their reference semantics) against
    # onnxruntime on the model (f32 weights) or the quantised module's reference (dequantised weights)
    if a.weights == "f32":
        import onnxruntime as ort
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        oracle, want_of = "onnxruntime", lambda xs: sess.run(None, dict(zip(m.main.arg_names, xs)))
    else:
        from moec.ir import run as interpret
        oracle, want_of = "moec's interpreter (dequantised weights)", lambda xs: list(interpret(m, xs).values())
    worst = 0.0
    for i, T in enumerate(sorted(set(list(a.sizes) + [0, 2 * a.ep + 1]))):
        xs = _random_inputs(m, T, a.seed + i)
        got, want = run_lockstep(a.output, xs), want_of(xs)
        for g, w in zip(got, want):
            tol = tolerance_for("bf16" if a.weights == "bf16" else str(m.main.outputs[0].type.dtype.mlir))
            err = np.abs(g.astype(np.float64) - w.astype(np.float64))
            if not np.all(err <= tol.atol + tol.rtol * np.abs(w)):
                raise VerificationError(f"--ep {a.ep}: at {T} tokens the ranks' result differs from {oracle} by "
                                        f"{err.max():.3g} (tolerance atol {tol.atol}, rtol {tol.rtol})")
            worst = max(worst, float(err.max()) if err.size else 0.0)
    print(f"  verified: all {a.ep} ranks' compiled stages (exchange by reference semantics) against {oracle}, "
          f"max abs error {worst:.3g}")
    return 0


def cmd_run(a) -> int:
    from moec.launch import run_local
    run_local(a.artifact, a.input, a.nproc, a.output_dir, threads=max(1, a.threads // a.nproc),
              timeout_s=a.timeout)
    from moec.artifact_dir import safe_file_names
    from moec.ep import read_ep
    names = [o["name"] for o in read_ep(a.artifact)["outputs"]]
    for n, f in zip(names, safe_file_names(names, ".npy")):
        print(f"{show_name(n)} -> {show_name(os.path.join(a.output_dir, f), 4096)}")
    return 0


def _route_ids(m, arrays_list) -> dict:
    """{layer: [ids [T, k] per input set]} of every recognised layer, by the reference semantics."""
    from moec.passes.expert_parallel import layers_of
    from moec.passes.moe_util import evaluate
    f = m.main
    routes = [o for o in f.ops if o.name == "moe.route"]
    names = [L for L, _ in layers_of(m)]
    if len(routes) != len(names):
        raise UserInputError(f"profile-routing: {len(routes)} routers for {len(names)} recognised layers")
    out = {L: [] for L in names}
    for xs in arrays_list:
        vals = evaluate(m, f, [r.results[1] for r in routes], {id(a): x for a, x in zip(f.args, xs)})
        for L, v in zip(names, vals):
            out[L].append(np.asarray(v))
    return out


def profile(m, arrays_list, world: int, slots: int = 0) -> dict:
    """Per layer: the expert histogram and, for ``world`` ranks, the contiguous and the balanced placement with
    their predicted and measured (the run time's dispatch of these tokens) max/mean load per rank."""
    from moec.ep import token_slices
    from moec.passes.ep_placement import balanced_placement, dispatch_load, imbalance, predicted_load
    from moec.passes.expert_parallel import Placement, layers_of
    E_of = dict(layers_of(m))
    rep = {}
    for L, ids_list in _route_ids(m, arrays_list).items():
        E = E_of[L]
        hist = np.zeros(E, np.int64)
        for ids in ids_list:
            hist += np.bincount(ids[ids >= 0].astype(np.int64), minlength=E)[:E]
        entry = {"experts": E, "histogram": hist.tolist()}
        if world:
            for kind, p in (("contiguous", Placement.contiguous(E, world)),
                            ("balanced", balanced_placement(hist, world, slots))):
                meas = sum(dispatch_load(p, [ids[s] for s in token_slices(ids.shape[0], world)]) for ids in ids_list)
                entry[kind] = {"placement": p.to_json(), "predicted": imbalance(predicted_load(p, hist)),
                               "measured": imbalance(meas), "measured_per_rank": np.asarray(meas).tolist()}
        rep[L] = entry
    return rep


def _input_sets(m, files: List[str]) -> List[List[np.ndarray]]:
    if not files:
        return [_random_inputs(m, 256, 0)]
    sets = []
    for path in files:
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserInputError(f"--inputs '{path}': cannot read it as .npz ({type(e).__name__})") from None
        with z:
            missing = [n for n in m.main.arg_names if n not in z.files]
            if missing:
                raise UserInputError(f"--inputs '{path}': no array named {', '.join(missing)} (the model's inputs)")
            sets.append([z[n] for n in m.main.arg_names])
    return sets


def cmd_profile_routing(a) -> int:
    _, name, m = _module(a.model, "cpu", "native")
    rep = profile(m, _input_sets(m, a.inputs), a.ep, a.slots)
    for L, e in rep.items():
        h = np.asarray(e["histogram"])
        print(f"layer {L}: {e['experts']} experts, {int(h.sum())} expert slots, hottest expert {int(h.argmax())} "
              f"({int(h.max())}), coldest {int(h.min())}")
        for kind in ("contiguous", "balanced"):
            if kind in e:
                p, q = e[kind]["predicted"], e[kind]["measured"]
                print(f"  {kind:10s} max/mean load per rank: predicted {p['max_over_mean']:.3f}, measured "
                      f"{q['max_over_mean']:.3f} (slots per rank {e[kind]['measured_per_rank']})")
    if a.histogram_out:
        with open(a.histogram_out, "w") as f:
            json.dump({"model": name, "layers": rep}, f, indent=1)
    if a.placement_out:
        if not a.ep:
            raise UserInputError("--placement-out needs --ep N")
        with open(a.placement_out, "w") as f:
            json.dump({"layers": {L: e["balanced"]["placement"] for L, e in rep.items()}}, f, indent=1)
        print(f"placement for --ep {a.ep} -> {show_name(a.placement_out, 4096)}")
    return 0


def _mixtral_like(path: str) -> str:
    """The standard Mixtral-like layer (benchmarks/build_layers.py: D=1024, F=2816, E=8, k=2)."""
    import sys
    import onnx
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
    if not os.path.isdir(here):
        raise UserInputError("moec bench --ep without MODEL builds the Mixtral-like layer from the source tree's "
                             "examples/; give MODEL")
    sys.path.insert(0, here)
    from build_mixtral_like import build
    onnx.save(build(hidden=1024, ffn=2816, experts=8, top_k=2), path)
    return path


def cmd_bench(a) -> int:
    """``moec bench --ep N``: N processes x 1 thread (EP over gloo) against 1 process x N threads."""
    from moec.driver import build_module
    from moec.ep import compile_ep
    from moec.launch import LocalPool
    W = a.ep
    out = a.output or "moec_bench_ep"
    os.makedirs(out, exist_ok=True)
    model = a.model or _mixtral_like(os.path.join(out, "mixtral_like_d1024.onnx"))
    _, name, m = _module(model, "cpu", "native", a.weights, a.group_size)
    single = build_module(m, os.path.join(out, "single"), threads=W)
    d = os.path.join(out, f"ep{W}")
    compile_ep(m, d, W, force=True, name=name)
    pool = LocalPool(W, timeout_s=120, threads=1)
    rows = []
    try:
        for T in (a.tokens or [1, 64, 256]):
            xs = _random_inputs(m, T, 1)
            single(xs)
            ts = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                want = single(xs)
                ts.append(time.perf_counter() - t0)
            got, _ = pool.run(d, xs, m.main.arg_names, repeat=a.repeats + 1)
            runs = pool.last_runs[1:]                       # (the first run warms up)
            layer = [max(s["seconds"] for s in run) for run in runs]
            share = [max(s["exchange_seconds"] for s in run) / max(s["seconds"] for s in run) for run in runs]
            err = float(np.max(np.abs(got[0] - want[0]))) if got[0].size else 0.0
            rows.append({"tokens": T, "single_s": float(np.median(ts)), "ep_s": float(np.median(layer)),
                         "exchange_share": float(np.median(share)),
                         "bytes_moved": int(sum(s["bytes_sent"] for s in runs[0])),
                         "expert_slots_per_rank": [s["expert_slots"] for s in runs[0]], "max_abs_diff": err})
    finally:
        pool.close()
    rep = {"model": name, "ranks": W, "single": f"1 process x {W} threads", "ep": f"{W} processes x 1 thread (gloo)",
           "repeats": a.repeats, "rows": rows}
    with open(os.path.join(out, "bench_ep.json"), "w") as f:
        json.dump(rep, f, indent=1)
    print(f"moec bench --ep {W}: {show_name(name)}; EP = {rep['ep']}, baseline = {rep['single']}; medians of "
          f"{a.repeats}")
    print(f"{'tokens':>7} {'1-proc ms':>10} {'EP ms':>9} {'EP/1-proc':>9} {'exchange':>9} {'bytes moved':>12}")
    for r in rows:
        print(f"{r['tokens']:>7} {r['single_s'] * 1e3:>10.3f} {r['ep_s'] * 1e3:>9.3f} "
              f"{r['ep_s'] / r['single_s']:>9.2f} {r['exchange_share'] * 100:>8.1f}% {r['bytes_moved']:>12}")
    return 0

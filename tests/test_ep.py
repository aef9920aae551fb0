"""Expert parallelism (issue 19): the EP pass and its N-rank reference (in one process), and the real
multi-process run on gloo against the single-process build and the N-rank reference.

The multi-process tests share long-lived rank processes (``LocalPool``: one gloo process group per world
size for the whole module) so each case pays its compute, not a Python + torch start."""
import json
import os

import numpy as np
import pytest

from moec.ir import run as interpret
from moec.ir.spmd import run_ranks
from moec.passes.expert_parallel import EPError, EPPlan, Placement, layers_of, rank_module, split_stages
from zoo import ZOO, zoo_inputs

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is needed", allow_module_level=True)

FAMILIES = {}
for _e in ZOO:
    FAMILIES.setdefault(_e.family, _e)
BY_NAME = {e.name: e for e in ZOO}
_IR = {}


def ir_of(name, weights="f32", target="cpu"):
    """The zoo model after moec's pipeline for ``target`` (cached per test session)."""
    if (name, weights, target) not in _IR:
        from moec.frontend.onnx_import import import_model
        from moec.passes.pipeline import run_pipeline
        from moec.targets import target_for
        m = import_model(BY_NAME[name].build(), name)
        _IR[name, weights, target] = run_pipeline(m, target_for(target), weights=weights)
    return _IR[name, weights, target]


def spmd(m, plan, xs):
    """The N-rank reference: rank programs in lockstep, tokens split contiguously, outputs concatenated."""
    from moec.ep import token_slices
    mods = [rank_module(m, plan, r) for r in range(plan.world)]
    sl = token_slices(xs[0].shape[0], plan.world)
    outs = run_ranks(mods, [[x[s] for x in xs] for s in sl])
    return np.concatenate([o[0] for o in outs])


def close(got, want, tol=(1e-4, 2e-5)):
    np.testing.assert_allclose(got, want, rtol=tol[0], atol=tol[1])


def inputs(name, T, kind="random"):
    """The model's inputs in argument order (every one has the token dimension first)."""
    m = ir_of(name)
    if T == 0:
        return [np.zeros((0,) + tuple(a.type.shape[1:]), a.type.dtype.np) for a in m.main.args]
    d = zoo_inputs(BY_NAME[name], T, kind)
    D = m.main.args[0].type.shape[1]
    if d["x"].shape[1] != D:   # (zoo inputs are 64 wide; the 2-layer graph is 32)
        rng = np.random.default_rng(1)
        T = 1 if kind == "single" else T
        x = rng.standard_normal((1 if kind == "identical" else T, D)).astype(np.float32)
        d = {"x": np.repeat(x, T, axis=0) if kind == "identical" else x}
    return [d[n] for n in m.main.arg_names]


def ref(m, xs):
    return list(interpret(m, xs).values())[0]


# -- the pass and the N-rank reference (no processes) ---------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_spmd_reference_equals_single_device(family):
    name = FAMILIES[family].name
    m = ir_of(name)
    assert layers_of(m), f"{name}: no MoE layer to spread"
    for world in (2, 4):
        plan = EPPlan(world)
        for T, kind in ((9, "random"), (6, "identical"), (1, "single"), (0, "random")):
            xs = inputs(name, T, kind)
            close(spmd(m, plan, xs), ref(m, xs))


def test_capacity_is_exact_across_ranks():
    """Switch: the drops of the single-device batch, whatever rank holds the tokens (identical tokens all
    choose one expert, so capacity binds and the later tokens, on other ranks, are the ones dropped)."""
    name = FAMILIES["switch"].name
    m = ir_of(name)
    route = next(o for o in m.main.ops if o.name == "moe.route")
    assert route.attrs["capacity"] > 0
    x = inputs(name, 16, "identical")
    want = ref(m, x)
    for world in (2, 4):
        got = spmd(m, EPPlan(world), x)
        np.testing.assert_array_equal(got, want)   # pass-through rows are x itself: exact


def test_replicas_and_any_placement():
    name = FAMILIES["mixtral"].name
    m = ir_of(name)
    x = inputs(name, 11)
    want = ref(m, x)
    # experts 0 and 5 replicated, the others scattered; rank 2 holds an empty slot
    p = Placement(8, [[0, 5, 3], [5, 1, 7], [0, 2, -1], [4, 6, 0]]).check()
    close(spmd(m, EPPlan(4, {"*": p}), x), want)


def test_placement_errors_are_clear():
    with pytest.raises(EPError, match="no rank holds expert"):
        Placement(8, [[0, 1, 2, 3], [4, 5, 6, -1]]).check()
    with pytest.raises(EPError, match="twice"):
        Placement(7, [[0, 1, 2, 3], [4, 5, 6, 6]]).check()
    with pytest.raises(EPError, match="same number"):
        Placement(4, [[0, 1, 2], [3]]).check()
    with pytest.raises(EPError, match="outside"):
        Placement.from_json({"ranks": [[0, 1], [2, 9]]}, num_experts=4)


def test_pass_output_shape():
    """The rank program: one pack, count exchange, two row exchanges, unpack; local experts only."""
    m = ir_of(FAMILIES["mixtral"].name)
    r = rank_module(m, EPPlan(2), 1)
    names = [o.name for o in r.main.ops]
    for op in ("moe.ep_pack", "moe.exchange_counts", "moe.ep_unpack"):
        assert names.count(op) == 1
    assert names.count("moe.all_to_all") == 2 and names.count("moe.dispatch") == 1
    ex = next(o for o in r.main.ops if o.name == "moe.experts")
    assert ex.operands[4].type.shape[0] == 4            # 8 experts over 2 ranks
    w_full = next(o for o in m.main.ops if o.name == "moe.experts").operands[4]
    full = m.weights[w_full.owner.attrs["value"].key]
    np.testing.assert_array_equal(r.weights[ex.operands[4].owner.attrs["value"].key], full[4:8])
    stages, ins, outs = split_stages(r)
    assert [s.kind for s in stages] == ["compute", "host", "host", "host", "compute", "host", "host"]
    assert all(o.name not in ("moe.ep_pack", "moe.all_to_all") for s in stages if s.kind == "compute"
               for o in s.module.main.ops)


# -- the real run: gloo processes ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pools():
    from moec.launch import LocalPool
    made = {}

    def get(n):
        if n not in made or any(p.poll() is not None for p in made[n].procs):
            made[n] = LocalPool(n, timeout_s=30)
        return made[n]
    yield get
    for p in made.values():  # every rank of every pool told to leave first: their exits (~1-2 s each) overlap
        for pr in p.procs:
            if pr.poll() is None:
                try:
                    pr.stdin.close()
                except OSError:
                    pass
    for p in made.values():
        p.close()


_ART = {}


def artifact(tmp_path_factory, name, world, weights="f32", placement=None, target="cpu"):
    from moec.ep import compile_ep
    key = (name, world, weights, json.dumps({k: v.to_json() for k, v in (placement or {}).items()}), target)
    if key not in _ART:
        d = str(tmp_path_factory.mktemp("ep") / "a")
        compile_ep(ir_of(name, weights, target), d, world, placements=placement, name=name, target=target)
        _ART[key] = d
    return _ART[key]


def single(tmp_path_factory, name, weights="f32", target="cpu"):
    """The single-process build of the same module (2 threads on the C target)."""
    from moec.driver import build_module
    key = ("single", name, weights, target)
    if key not in _ART:
        _ART[key] = build_module(ir_of(name, weights, target), str(tmp_path_factory.mktemp("one") / "a"),
                                 threads=2, target=target)
    return _ART[key]


def check_ep(pools, tmp_path_factory, name, world, cases, weights="f32", tol=(1e-4, 2e-5), placement=None,
             target="cpu"):
    d = artifact(tmp_path_factory, name, world, weights, placement, target)
    one = single(tmp_path_factory, name, weights, target)
    m = ir_of(name, weights, target)
    plan = EPPlan(world, placement or {})
    for T, kind in cases:
        xs = inputs(name, T, kind)
        got, stats = pools(world).run(d, xs, m.main.arg_names)
        close(got[0], one(xs)[0], tol)                   # == the single-process build
        close(got[0], spmd(m, plan, xs), tol)            # == the N-rank reference
    return stats


DEFAULT_FAMILIES = ["mixtral", "switch", "deepseek-v3", "qwen2-moe"]


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_two_processes_equal_single_process(family, pools, tmp_path_factory, moec_module_cache):
    check_ep(pools, tmp_path_factory, FAMILIES[family].name, 2, ((9, "random"), (1, "single")))


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_on_gloo(family, world, pools, tmp_path_factory, moec_module_cache):
    check_ep(pools, tmp_path_factory, FAMILIES[family].name, world,
             ((13, "random"), (8, "identical"), (1, "single"), (0, "random")))


# EP on the other targets: each rank runs the target's compiled stages (Triton's kernels under the interpreter,
# the AscendC kernels on the emulator) on its tensors; here the tensors are CPU tensors and the exchange gloo.
@pytest.mark.parametrize("target,family", [
    pytest.param("ascend", "mixtral"),
    pytest.param("triton", "mixtral", marks=pytest.mark.slow),
    pytest.param("ascend", "deepseek-v3", marks=pytest.mark.slow),
    pytest.param("triton", "qwen2-moe", marks=pytest.mark.slow),
    pytest.param("ascend", "switch", marks=pytest.mark.slow),
])
def test_other_targets_on_two_processes(target, family, pools, tmp_path_factory, moec_module_cache):
    """A zoo family on 2 gloo ranks, built for ``target``: equals the single build of the same target and the
    N-rank reference; the artifact's stages are the target's (Triton launchers / AscendC plans)."""
    name = FAMILIES[family].name
    check_ep(pools, tmp_path_factory, name, 2, ((9, "random"), (1, "single"), (0, "random")), target=target)
    d = artifact(tmp_path_factory, name, 2, target=target)
    role = {"triton": "model_triton.py", "ascend": "ascend"}[target]
    info = json.load(open(os.path.join(d, "ep.json")))
    assert info["target"] == target
    assert all(os.path.exists(os.path.join(d, s["dir"], role)) for r in info["ranks"] for s in r["program"]
               if s["kind"] == "compute")


def test_four_processes_edge_cases(pools, tmp_path_factory, moec_module_cache):
    """4 ranks: every token to the same experts (hot-expert skew: two ranks receive no tokens), one token
    (three ranks hold no token at all), no token anywhere."""
    name = FAMILIES["mixtral"].name
    stats = check_ep(pools, tmp_path_factory, name, 4, ((12, "identical"),))
    slots = [s["expert_slots"][0] for s in stats]
    assert sum(slots) == 24 and slots.count(0) >= 2, slots      # every token's 2 slots on <= 2 ranks
    stats = check_ep(pools, tmp_path_factory, name, 4, ((1, "single"), (0, "random"), (13, "random")))
    assert sum(s["tokens"] for s in stats) == 13


@pytest.mark.parametrize("weights,tol", [("int8", (1e-4, 2e-5)), ("bf16", (2e-2, 2e-3))])
def test_quantised_expert_weights(weights, tol, pools, tmp_path_factory, moec_module_cache):
    check_ep(pools, tmp_path_factory, FAMILIES["mixtral"].name, 2, ((9, "random"),), weights=weights, tol=tol)


def expert_stacks(m):
    """{weight key: E} of every expert-stacked constant (w_in, w_out, biases, scales, zero points)."""
    out = {}
    for o in m.main.ops:
        if o.name == "moe.experts":
            E = o.operands[4].type.shape[0]
            b_in, b_out, _ = o._extras()
            for v in [o.operands[4], o.operands[5], b_in, b_out] + list(o.quant_operands()):
                if v is not None and v.owner is not None and v.owner.name == "moec.constant":
                    out[v.owner.attrs["value"].key] = E
    return out


def test_two_layer_model(pools, tmp_path_factory, moec_module_cache):
    """2 MoE layers on 2 ranks; each rank loads the replicated weights and its own experts only (the loaded
    stages' weight bytes equal that share, counted on the single-device module), and the artifact stores the
    replicated stages once."""
    name = "onnx_two_layers_residual"
    m = ir_of(name)
    assert len(layers_of(m)) == 2
    stats = check_ep(pools, tmp_path_factory, name, 2, ((7, "random"),))
    stacks = expert_stacks(m)
    nbytes = {k: np.asarray(a).nbytes for k, a in m.weights.items()}
    replicated = sum(b for k, b in nbytes.items() if k not in stacks)
    experts = sum(nbytes[k] for k in stacks)
    assert replicated > 0 and experts > 0 and all(E % 2 == 0 for E in stacks.values())
    for s in stats:                                       # contiguous: E / 2 slots per rank
        assert s["weight_bytes"] == replicated + experts // 2
    info = json.load(open(os.path.join(artifact(tmp_path_factory, name, 2), "ep.json")))
    assert info["weights"]["per_rank_bytes"] == [replicated + experts // 2] * 2
    assert info["weights"]["stored_bytes"] == replicated + experts        # (not 2 x replicated)
    assert info["weights"]["replicated_bytes"] == replicated


def route_ids(m, x):
    from moec.passes.moe_util import evaluate
    route = next(o for o in m.main.ops if o.name == "moe.route")
    return evaluate(m, m.main, [route.results[1]], {id(m.main.args[0]): x})[0]


def test_replicated_placement_prefers_a_local_copy(pools, tmp_path_factory, moec_module_cache):
    """Experts 0 and 1 on both ranks: a token whose experts its own rank holds stays home, so a rank sends one
    row per token with an expert it does not hold (counted here from the ids and the placement alone), and the
    bytes moved are the cost model's exactly."""
    from moec.ep import token_slices
    from moec.ep_cost import Wire, exchange_bytes
    name = FAMILIES["mixtral"].name
    pl = Placement(8, [[0, 1, 2, 3, 4], [5, 6, 7, 0, 1]]).check()
    stats = check_ep(pools, tmp_path_factory, name, 2, ((10, "random"),), placement={"*": pl})
    m = ir_of(name)
    x = inputs(name, 10)[0]
    ids = route_ids(m, x)
    k, D = ids.shape[1], x.shape[1]
    per_rank = [ids[s] for s in token_slices(10, 2)]
    b = exchange_bytes(per_rank, pl, D, Wire.moec(x.dtype.itemsize, k, 4))
    for r, idr in enumerate(per_rank):
        rows = sum(1 for t in idr if any(e not in pl.ranks[r] for e in t))
        assert stats[r]["bytes_sent"] == rows * (D * 4 + k * 12) + b["combine"][1 - r, r]
        assert b["combine"][1 - r, r] == b["rows"][1 - r, r] * D * 4
        assert stats[r]["bytes_sent"] == b["dispatch"][r, 1 - r] + b["combine"][r, 1 - r]


def test_bytes_moved_equal_the_cost_model(pools, tmp_path_factory, moec_module_cache):
    """The bytes the gloo run moves are exactly the cost model's (compiler/ep_cost.py) for the same routing,
    with moec's wire format: f32 rows, then per row k ids (i64) and k weights (f32); f32 partial rows back."""
    from moec.ep import token_slices
    from moec.ep_cost import Wire, exchange_bytes
    from moec.passes.moe_util import evaluate
    name = FAMILIES["mixtral"].name
    m = ir_of(name)
    x = inputs(name, 9)[0]
    stats = check_ep(pools, tmp_path_factory, name, 2, ((9, "random"),))
    route = next(o for o in m.main.ops if o.name == "moe.route")
    ids = evaluate(m, m.main, [route.results[1]], {id(m.main.args[0]): x})[0]
    k, D = ids.shape[1], x.shape[1]
    b = exchange_bytes([ids[s] for s in token_slices(9, 2)], Placement.contiguous(8, 2).check(), D,
                       Wire.moec(x.dtype.itemsize, k, 4))
    for r in range(2):
        sent = sum(b["dispatch"][r, d] + b["combine"][r, d] for d in range(2) if d != r)
        assert sent > 0 and stats[r]["bytes_sent"] == sent


def test_a_dead_rank_fails_the_others_fast(tmp_path_factory, moec_module_cache):
    from moec.errors import RuntimeFailure
    from moec.launch import LocalPool
    import time
    name = FAMILIES["mixtral"].name
    d = artifact(tmp_path_factory, name, 2)
    pool = LocalPool(2, timeout_s=20)
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"rank 0: .*(peer rank died|failed)"):
        pool.run(d, inputs(name, 5), ["x"], fault="1:die")
    assert time.monotonic() - t0 < 20
    pool.close()


_API_RANK = r"""
import os, sys, numpy as np, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
import moec
from moec.zoo import make_module, modules
from datetime import timedelta
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=2, timeout=timedelta(seconds=60))
mod = make_module(modules.Mixtral)
f = moec.compile(mod, (torch.randn(5, 64),), expert_parallel=2)
x = torch.randn(3 + 4 * dist.get_rank(), 64, generator=torch.Generator().manual_seed(dist.get_rank()))
y = f(x)[0]
with torch.no_grad():
    want = mod(x)
assert torch.allclose(y, want, rtol=1e-4, atol=2e-5), (y - want).abs().max()
print("rank", dist.get_rank(), "ok", tuple(y.shape))
dist.destroy_process_group()
"""


def _spawn(cmds, env_of, timeout=600):
    import subprocess
    import sys
    procs = [subprocess.Popen(c, env=env_of(r), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r, c in enumerate(cmds)]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-2000:]
    return outs


@pytest.mark.slow
def test_python_api_inside_a_process_group(tmp_path):
    """moec.compile(module, example_inputs, expert_parallel=2) on both ranks of a gloo group: rank 0 builds,
    each rank runs its own tokens (3 and 7 of them) and gets the module's result."""
    import sys
    from moec.launch import free_port
    port = free_port()
    script = tmp_path / "rank.py"
    script.write_text(_API_RANK.format(tests=os.path.dirname(os.path.abspath(__file__))))
    outs = _spawn([[sys.executable, str(script)]] * 2,
                  lambda r: dict(os.environ, RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
    assert "rank 0 ok (3, 64)" in outs[0] and "rank 1 ok (7, 64)" in outs[1]


@pytest.mark.slow
def test_cli_compile_run_and_torchrun(tmp_path, moec_cache):
    """moec compile --ep 2 (verified in lockstep), moec run --nproc 2, and torchrun -m moec.launch on the same
    artifact: all equal onnxruntime."""
    import subprocess
    import sys
    import onnxruntime as ort
    e = FAMILIES["mixtral"]
    model = tmp_path / "m.onnx"
    import onnx
    onnx.save(e.build(), str(model))
    x = inputs(e.name, 11)[0]
    np.save(tmp_path / "x.npy", x)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    art = tmp_path / "art"
    r = subprocess.run([sys.executable, "-m", "moec", "compile", str(model), "--ep", "2", "-o", str(art)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "verified" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "moec", "run", str(art), "--nproc", "2", "--input",
                        f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o1")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    close(np.load(tmp_path / "o1" / "y.npy"), want)
    from moec.launch import free_port
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                        "--master-port", str(free_port()), "-m", "moec.launch", str(art), "--input",
                        f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o2")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    close(np.load(tmp_path / "o2" / "y.npy"), want)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from moec.cli import main
    bad = tmp_path / "p.json"
    bad.write_text('{"ranks": [[0, 1], [2]]}')
    e = FAMILIES["mixtral"]
    import onnx
    onnx.save(e.build(), str(tmp_path / "m.onnx"))
    assert main(["compile", str(tmp_path / "m.onnx"), "--ep", "2", "--placement", str(bad), "-o",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same number of expert slots" in err[0]
    assert main(["run", str(tmp_path), "--nproc", "2"]) == 2
    assert "not an EP artifact" in capsys.readouterr().err


@pytest.mark.slow
def test_a_hanging_rank_fails_the_others_within_the_timeout(tmp_path, moec_cache):
    from moec.errors import RuntimeFailure
    from moec.launch import run_local
    import time
    name = FAMILIES["mixtral"].name
    from moec.ep import compile_ep
    d = str(tmp_path / "a")
    compile_ep(ir_of(name), d, 2)
    np.save(tmp_path / "x.npy", inputs(name, 5)[0])
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"rank 0 exit 2: moec.launch rank 0: error: .*[Tt]imed out.*rank 1 .*killed"):
        run_local(d, [f"x={tmp_path / 'x.npy'}"], 2, str(tmp_path / "o"), timeout_s=5, fault="1:hang")
    assert time.monotonic() - t0 < 90


# -- load balance -------------------------------------------------------------------------------------------------
def test_balanced_placement_replicates_the_hot_expert():
    from moec.passes.ep_placement import balanced_placement, imbalance, predicted_load
    load = [100, 10, 10, 10, 10, 10, 10, 10]
    contiguous = imbalance(predicted_load(Placement.contiguous(8, 2), load))["max_over_mean"]
    p = balanced_placement(load, 2, slots=5)
    assert sorted(e for r in p.ranks for e in r).count(0) == 2          # the hot expert on both ranks
    assert all(len(set(r)) == len(r) for r in p.ranks)
    assert contiguous > 1.5 and imbalance(predicted_load(p, load))["max_over_mean"] < 1.05
    # without spare slots: a pure re-packing (no replica), still better than contiguous blocks
    q = balanced_placement([8, 7, 6, 5, 4, 3, 2, 1], 2)
    assert imbalance(predicted_load(q, [8, 7, 6, 5, 4, 3, 2, 1]))["max_over_mean"] == 1.0
    with pytest.raises(EPError):
        balanced_placement(load, 2, slots=3)


def test_measured_load_of_a_run_is_the_predicted_dispatch(pools, tmp_path_factory, moec_module_cache):
    """profile-routing's placement for a skewed batch (most tokens identical, on both ranks): the load each rank computes in the
    real run (expert slots received) equals the dispatch the profile simulated, and beats contiguous blocks."""
    from moec.ep_cli import profile
    name = FAMILIES["mixtral"].name
    m = ir_of(name)
    hot, rnd = inputs(name, 12, "identical")[0], inputs(name, 6)[0]
    x = np.concatenate([hot[:6], rnd[:3], hot[6:], rnd[3:]])   # (each rank's half as skewed: a local copy serves it)
    rep = profile(m, [[x]], 2, slots=5)["moe0"]
    p = Placement.from_json(rep["balanced"]["placement"])
    assert rep["balanced"]["predicted"]["max_over_mean"] < 1.05
    assert rep["balanced"]["measured"]["max_over_mean"] < 1.15
    d = artifact(tmp_path_factory, name, 2, placement={"*": p})
    got, stats = pools(2).run(d, [x], ["x"])
    close(got[0], ref(m, [x]))
    assert [s["expert_slots"][0] for s in stats] == rep["balanced"]["measured_per_rank"]


def test_hostile_ep_json_is_refused(tmp_path):
    """ep.json names the stage folders and EP ops the run time loads and calls: anything else is refused."""
    from moec.ep import read_ep
    from moec.errors import UserInputError
    good = {"kind": "ep-artifact", "world": 1, "target": "cpu", "token_symbol": "T", "inputs": [], "outputs": [],
            "split": {"symbol": "T", "in_dims": [], "out_dims": []},
            "ranks": [{"in": [], "out": [], "program": [{"kind": "compute", "dir": "stages/0123456789abcdef", "in": [], "out": []}]}]}
    for bad_step in ({"kind": "compute", "dir": "../../etc", "in": [], "out": []},
                     {"kind": "compute", "dir": "stages/../../0123456789a", "in": [], "out": []},
                     {"kind": "host", "op": "_run", "attrs": {}, "in": [], "out": []},
                     {"kind": "host", "op": "moe.all_to_all", "attrs": [], "in": [], "out": []},
                     {"kind": "shell", "in": [], "out": []}):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        info = json.loads(json.dumps(good))
        info["ranks"][0]["program"] = [bad_step]
        (d / "ep.json").write_text(json.dumps(info))
        with pytest.raises(UserInputError, match="ep.json"):
            read_ep(str(d))
    d = tmp_path / "ok"
    d.mkdir()
    (d / "ep.json").write_text(json.dumps(good))
    assert read_ep(str(d))["world"] == 1


def test_placement_json_fuzz(tmp_path):
    """Random placement files: read or refused with one UserInputError, nothing else."""
    from moec.ep import read_placement_file
    from moec.errors import UserInputError
    rng = np.random.default_rng(0)
    junk = [None, 1, "x", [], {}, {"ranks": 3}, {"ranks": [[0, "a"]]}, {"ranks": [[0.5]]}, {"ranks": [[True]]},
            {"layers": {"moe0": {"ranks": [[-2]]}}}, {"ranks": [[0, 1], [1, 0]], "num_experts": "2"}]
    for i in range(60):
        if i < len(junk):
            d = junk[i]
        else:
            W, S = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            d = {"ranks": rng.integers(-2, 6, size=(W, S)).tolist()}
        f = tmp_path / f"p{i}.json"
        f.write_text(json.dumps(d))
        try:
            p = read_placement_file(str(f), None)
            for pl in p.values():
                pl.check()
        except UserInputError:
            pass


def test_return_exchange_overlaps_the_own_rows(tmp_path_factory, moec_module_cache):
    """Every layer's return exchange is marked to overlap: the rank computes the rows other ranks sent, starts
    their return, and computes its own rows (which travel nowhere) meanwhile; a damaged mark is refused."""
    from moec.ep import read_ep
    from moec.errors import UserInputError
    d = artifact(tmp_path_factory, "onnx_two_layers_residual", 2)
    info = read_ep(d)
    for p in info["ranks"]:
        marked = [i for i, s in enumerate(p["program"]) if s.get("overlap") == "own_rows_last"]
        assert len(marked) == 2                                      # one per layer
        for i in marked:
            assert p["program"][i - 1]["kind"] == "compute" and p["program"][i]["op"] == "moe.all_to_all"
    bad = json.loads(json.dumps(info))
    i = next(i for i, s in enumerate(bad["ranks"][0]["program"]) if s.get("overlap"))
    bad["ranks"][0]["program"][i - 1], bad["ranks"][0]["program"][i - 2] = \
        bad["ranks"][0]["program"][i - 2], bad["ranks"][0]["program"][i - 1]
    d2 = tmp_path_factory.mktemp("bad")
    (d2 / "ep.json").write_text(json.dumps(bad))
    with pytest.raises(UserInputError, match="overlap"):
        read_ep(str(d2))


def test_shared_experts_overlap_the_dispatch_exchange():
    """The shared experts need no exchanged row: their stage comes after the (asynchronous) dispatch starts and
    before the stage that waits for its rows."""
    m = ir_of(FAMILIES["deepseek-v3"].name)
    stages, _, _ = split_stages(rank_module(m, EPPlan(2), 0))
    kinds = [s.op.name if s.kind == "host" else
             tuple(o.name for o in s.module.main.ops if o.name != "moec.constant") for s in stages]
    i = kinds.index("moe.all_to_all")
    assert kinds[i + 1] == ("moe.shared_experts",)
    assert kinds[i + 2] == ("moe.dispatch", "moe.experts", "moe.combine")
    assert not set(stages[i + 1].inputs) & set(stages[i].outputs)


_HF_RANK = r"""
import os, sys, torch, torch.distributed as dist
from datetime import timedelta
sys.path.insert(0, {tests!r})
import moec
from test_hf_models import moe_block, first_output
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=2, timeout=timedelta(seconds=120))
blk = moe_block({arch!r}, "batched_mm")
f = moec.compile(blk, (torch.randn(2, 5, 32),), expert_parallel=2, dynamic_dims={{0: {{0: "B", 1: "S"}}}})
r = dist.get_rank()
x = torch.randn(1 + r, 3 + 4 * r, 32, generator=torch.Generator().manual_seed(r))
y = f(x)[0]
with torch.no_grad():
    want = first_output(blk(x))
err = float((y - want).abs().max())
assert err < 1e-4, err
print("rank", r, "ok", tuple(y.shape), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_real_transformers_block_on_two_ranks(arch, tmp_path):
    """A real transformers 5.x MoE block (tiny random config, batched_mm experts; Qwen2-MoE with its gated
    shared expert, DeepSeek-V3 with group-limited sigmoid routing) through moec.compile(expert_parallel=2) in a
    2-rank gloo group, [batch, seq, hidden] inputs of different sizes per rank: each rank's output equals the
    block's own eager output for its tokens."""
    pytest.importorskip("transformers")
    import sys
    from moec.launch import free_port
    port = free_port()
    script = tmp_path / "rank.py"
    script.write_text(_HF_RANK.format(tests=os.path.dirname(os.path.abspath(__file__)), arch=arch))
    outs = _spawn([[sys.executable, str(script)]] * 2,
                  lambda r: dict(os.environ, RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
    assert "rank 0 ok (1, 3, 32)" in outs[0] and "rank 1 ok (2, 7, 32)" in outs[1]


# -- which dimension spreads the batch (decided on the IR) ---------------------------------------------------
_LM = {}


def lm_ir(static_batch=False):
    """A real transformers 2-layer Mixtral CausalLM (attention + 2 MoE layers) from input_ids [B, S] through
    torch.export and moec's pipeline (tests/test_hf_compile.py's tiny model); ``static_batch``: B fixed at 1."""
    if static_batch not in _LM:
        pytest.importorskip("transformers")
        from moec.frontend.torch_import import import_torch
        from moec.passes.pipeline import run_pipeline
        from moec.targets import target_for
        from test_hf_compile import causal_lm
        model = causal_lm("mixtral", "batched_mm")
        ids = torch.randint(3, 128, (1 if static_batch else 2, 5), generator=torch.Generator().manual_seed(0))
        m = import_torch(model, (ids,), dynamic_dims={0: {1: "S"} if static_batch else {0: "B", 1: "S"}})
        _LM[static_batch] = (model, run_pipeline(m, target_for("cpu")))
    return _LM[static_batch]


def test_a_dimension_ops_mix_along_is_not_split():
    """[tokens, hidden] with a softmax over the tokens before the MoE layer: cutting the tokens over ranks would
    change the result, and no other dimension splits: refused with one line (decided on the IR)."""
    from moec.ep import batch_split
    from moec.errors import UserInputError
    from moec.ir.opdef import OPS
    from moec.passes.expert_parallel import copy_module
    m = copy_module(ir_of(FAMILIES["mixtral"].name))
    f = m.main
    x = f.args[0]
    sm = OPS["moec.softmax"].create([x], {"axis": 0})
    f.ops.insert(0, sm)
    f.replace_all_uses(x, sm.result)
    sm.operands[0] = x
    with pytest.raises(UserInputError, match=r"^--ep: no input dimension splits the batch over ranks \(data "
                                             r"parallel\): '.*' \(the model mixes values along it"):
        batch_split(m, 2)
    f.ops.remove(sm)
    f.replace_all_uses(sm.result, x)
    assert batch_split(m, 2)["in_dims"] == [0]


@pytest.mark.slow
def test_batch_split_is_decided_on_the_ir():
    """input_ids [B, S] into attention and 2 MoE layers: the batch splits over ranks (the sequence would not:
    attention mixes along it, test below); the model reshapes by its batch, so it cannot run an empty part,
    and a batch smaller than the ranks is refused with one line."""
    from moec.ep import batch_split, check_split
    from moec.errors import UserInputError
    _, m = lm_ir()
    assert len(layers_of(m)) == 2
    sp = batch_split(m, 2)
    assert sp["symbol"] == "B" and sp["in_dims"] == [0] and sp["out_dims"] == [0] and not sp["empty_rank_ok"]
    info = {"world": 2, "split": sp, "inputs": [{"name": "a0"}]}
    assert check_split(info, [np.ones((3, 4), np.int64)]) == 3
    with pytest.raises(UserInputError, match="the batch does not split over 2 ranks: input 'a0' has 1 along "
                                             "dimension 0 .'B'."):
        check_split(info, [np.ones((1, 4), np.int64)])
    sp = batch_split(ir_of(FAMILIES["mixtral"].name), 2)    # [tokens, hidden]: an empty rank is fine
    assert sp["in_dims"] == [0] and sp["empty_rank_ok"]


@pytest.mark.slow
def test_attention_model_splits_by_batch_on_two_processes(pools, tmp_path_factory, moec_module_cache):
    """The 2-layer CausalLM on 2 gloo ranks split by the batch: ranks get whole sequences, and the logits equal
    the model's own; one sequence for two ranks is refused before any process starts."""
    from moec.ep import compile_ep
    model, m = lm_ir()
    d = str(tmp_path_factory.mktemp("lm") / "a")
    compile_ep(m, d, 2, name="mixtral_lm")
    for shape in ((3, 6), (2, 1)):
        ids = torch.randint(3, 128, shape, generator=torch.Generator().manual_seed(shape[0]))
        got, stats = pools(2).run(d, [ids.numpy()], m.main.arg_names)
        with torch.no_grad():
            want = model(ids, use_cache=False).logits.numpy()
        close(got[0], want)
        assert [s["tokens"] for s in stats] == [-(-shape[0] // 2), shape[0] // 2]
    # one sequence for two ranks: refused with one line before any process starts
    from moec.errors import UserInputError
    from moec.launch import run_local
    np.save(tmp_path_factory.mktemp("x") / "ids.npy", np.ones((1, 4), np.int64))
    with pytest.raises(UserInputError, match="the batch does not split over 2 ranks: input 'a0' has 1 along "
                                             "dimension 0"):
        run_local(d, [f"a0={tmp_path_factory.getbasetemp()}/x0/ids.npy"], 2, str(tmp_path_factory.mktemp("o")))


@pytest.mark.slow
def test_a_model_whose_batch_does_not_split_is_refused(tmp_path, capsys):
    """The same model exported with the batch fixed at 1: its only symbolic dimension is the sequence, which
    attention mixes along; --ep refuses with one line instead of running the ranks' halves of sequences."""
    from moec.ep import compile_ep
    from moec.errors import UserInputError
    _, m = lm_ir(static_batch=True)
    with pytest.raises(UserInputError, match=r"no input dimension splits the batch.*'S' \(the model mixes"):
        compile_ep(m, str(tmp_path / "a"), 2)

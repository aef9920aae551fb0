"""Triton target: every zoo model and the example, compiled with --target triton, run for real:
on a GPU when there is one, else under Triton's interpreter (TRITON_INTERPRET=1, torch CPU), and
verified against onnxruntime; quantised weights against the dequantised reference."""
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from moec.driver import CompileOptions, compile_onnx  # noqa: E402
from zoo import ZOO, zoo_params  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "mixtral_like.onnx")


# by default the half of the zoo that test_ascend.py does not run (zoo.zoo_params: one export of each family,
# half of the hand-built graphs); tests/test_zoo.py proves every entry recognised on cpu.  -m slow: the rest.
@pytest.mark.parametrize("name", list(zoo_params("triton")))
def test_zoo_on_triton(name, tmp_path):
    e = next(z for z in ZOO if z.name == name)
    r = compile_onnx(e.build(), str(tmp_path / "out"), CompileOptions(target="triton", symbol_sizes=(5, 1)))
    rep = r.report
    assert rep["verified"] and rep["oracle"] == "onnxruntime", rep.get("failure")
    src = open(tmp_path / "out" / "model_triton.py").read()
    assert ("rt.moe_experts(" in src or "rt.moe_experts_combine(" in src) and "rt.moe_route(" in src
    assert "HOST_OPS_STATIC = 0" in src, "every op of a zoo model has a Triton kernel"


# fp8 under -m slow: tests/test_fp8.py's test_example_fp8_report compiles the same (example, triton, fp8,
# symbol sizes (20, 1)) by default and checks its verification and weights
@pytest.mark.parametrize("mode,group,zp", [("bf16", 0, False), ("int8", 0, False),
                                           pytest.param("int4", 32, False, marks=pytest.mark.slow),
                                           ("int4", 32, True), pytest.param("fp8", 0, False, marks=pytest.mark.slow)])
def test_quantised_weights_on_triton(mode, group, zp, tmp_path):
    r = compile_onnx(EXAMPLE, str(tmp_path / "out"),
                     CompileOptions(target="triton", weights=mode, group_size=group, zero_point=zp,
                                    symbol_sizes=(20, 1)))
    assert r.report["verified"], r.report.get("failure")
    assert r.report["moe_layers"][0]["weights"]["mode"] == mode


def test_kernels_really_run(tmp_path):
    """The generated launcher calls the Triton kernels (not a numpy fallback): a wrong routing
    weight in the kernel's epilogue would change the output, and it matches onnxruntime."""
    from moec.codegen.triton import runtime as rt
    import torch
    dev = rt.DEVICE
    x = torch.randn(7, 64, device=dev)
    logits = torch.randn(7, 8, device=dev)
    w, ids = rt.moe_route(logits, None, k=2, scoring="softmax", n_group=1, topk_group=1, group_score="max",
                          post="none", norm="none", norm_eps=0.0, scale=1.0, capacity=0)
    p = torch.softmax(logits, -1)
    top = torch.topk(p, 2, dim=-1)
    np.testing.assert_allclose(w.cpu().numpy(), top.values.cpu().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ids.cpu().numpy(), top.indices.cpu().numpy())
    w_in = torch.randn(8, 64, 64, device=dev) * 0.1
    w_out = torch.randn(8, 64, 32, device=dev) * 0.1
    y = rt.moe_experts(x, ids, w_in, w_out, rw=w, weights_at="output")
    want = torch.zeros(7, 2, 64, device=dev)
    for t in range(7):
        for j in range(2):
            e = ids[t, j]
            h = w_in[e] @ x[t]
            a = torch.nn.functional.silu(h[:32]) * h[32:]
            want[t, j] = (w_out[e] @ a) * w[t, j]
    np.testing.assert_allclose(y.cpu().numpy(), want.cpu().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dt", ["bfloat16", "float16"])
def test_16_bit_activations_through_the_kernels(dt):
    """bf16/f16 tensors through the grouped GEMMs and the matmul kernel match torch (f32 accumulation);
    under the interpreter the tiles are widened to f32 first (its bf16 dot is wrong)."""
    import torch
    from moec.codegen.triton import runtime as rt
    tdt = getattr(torch, dt)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 72, generator=g).to(tdt).to(rt.DEVICE)
    b = torch.randn(72, 40, generator=g).to(tdt).to(rt.DEVICE)
    ref = a.float() @ b.float()
    got = rt.matmul(a, b).float()
    assert torch.allclose(got, ref, rtol=1e-2, atol=1e-2), (got - ref).abs().max()
    E, D, F, k = 4, 64, 48, 2
    x = torch.randn(21, D, generator=g).to(tdt).to(rt.DEVICE)
    w_in = (torch.randn(E, 2 * F, D, generator=g) / 8).to(tdt).to(rt.DEVICE)
    w_out = (torch.randn(E, D, F, generator=g) / 8).to(tdt).to(rt.DEVICE)
    ids = torch.randint(0, E, (21, k), generator=g).to(rt.DEVICE)
    y = rt.moe_experts(x, ids, w_in, w_out).float()
    xf, wi, wo = x.float(), w_in.float(), w_out.float()
    for t in range(21):
        for j in range(k):
            e = int(ids[t, j])
            h = wi[e] @ xf[t]
            act = torch.nn.functional.silu(h[:F]) * h[F:]
            ref = wo[e] @ act.to(tdt).float()
            assert torch.allclose(y[t, j], ref, rtol=3e-2, atol=3e-2), (t, j, (y[t, j] - ref).abs().max())


def _reference_plan(ids, E, bm):
    flat = ids.reshape(-1).tolist()
    order, bexp = [], []
    for e in range(E):
        sl = [i for i, v in enumerate(flat) if v == e]
        if sl:
            nb = -(-len(sl) // bm)
            order += sl + [-1] * (nb * bm - len(sl))
            bexp += [e] * nb
    return order, bexp


# (tokens, k, experts, BLOCK_M, one-program align kernel?): few slots take the kernel, the rest the
# torch formulation (runtime.align_kernel_shape)
@pytest.mark.parametrize("T,k,E,bm,kernel", [(1, 2, 8, 16, True), (1, 8, 256, 16, True), (16, 8, 256, 16, True),
                                             (20, 2, 8, 16, True), (10, 4, 33, 16, True), (3, 6, 60, 16, True),
                                             (37, 6, 64, 32, False), (64, 4, 33, 16, False),
                                             (300, 2, 8, 16, False), (64, 8, 256, 64, False)])
def test_align_plan_matches_reference(T, k, E, bm, kernel):
    """Expert-sorted, per-expert padded slot list and block experts, stable in token order; dropped
    slots (-1) get no position; the grid never exceeds min(cdiv(n, BM) + E, n) blocks."""
    import torch
    from moec.codegen.triton import runtime as rt
    rng = np.random.default_rng(T * 1000 + E)
    ids = torch.tensor(np.stack([rng.choice(E, k, replace=False) for _ in range(T)]), dtype=torch.int64)
    if T > 3:
        ids[1, 0] = -1
        ids[2, :] = -1
    assert (rt.align_kernel_shape(T * k, E) is not None) == kernel
    s, b, n = rt.align_plan(ids.to(rt.DEVICE), E, bm)
    want_s, want_b = _reference_plan(ids, E, bm)
    s, b = s.cpu().tolist(), b.cpu().tolist()
    assert s[:len(want_s)] == want_s and set(s[len(want_s):]) <= {-1}
    assert b[:len(want_b)] == want_b and set(b[len(want_b):]) <= {-1}
    assert len(b) == min(-(-n // bm) + E, n) and len(s) == len(b) * bm


def test_moe_path_has_no_host_synchronisation():
    """route -> plan -> grouped GEMMs -> combine issue no op that waits for the device (.item(),
    nonzero, bincount, ...): on a GPU the whole layer is enqueued asynchronously (and can be captured
    in a CUDA graph).  Checked op by op with a dispatch mode, for the kernel and the torch plan."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from moec.codegen.triton import runtime as rt
    syncing = ("_local_scalar_dense", "nonzero", "bincount", "unique", "masked_select", "item",
               "repeat_interleave", "histc")
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    dev = rt.DEVICE
    # 6 slots: align kernel; 130 slots: torch plan (align_kernel_shape: one program up to 128 slots at E=8)
    for T, E in ((3, 8), (65, 8)):
        x = torch.randn(T, 32, device=dev)
        logits = torch.randn(T, E, device=dev)
        w_in = torch.randn(E, 64, 32, device=dev)
        w_out = torch.randn(E, 32, 32, device=dev)
        with Record():
            w, ids = rt.moe_route(logits, None, k=2, scoring="softmax", n_group=1, topk_group=1,
                                  group_score="max", post="none", norm="sum", norm_eps=0.0, scale=1.0, capacity=0)
            y = rt.moe_experts(x, ids, w_in, w_out, rw=w, weights_at="output")
            rt.moe_combine(y, w, weighted=False)
    assert any("scatter_add" in f for f in seen), "the torch plan ran under the recorder"
    bad = sorted({f for f in seen if any(s in f for s in syncing)})
    assert not bad, f"host-synchronising ops in the MoE path: {bad}"


class _Counting:
    def __init__(self, kern, counter, name):
        self.kern, self.counter, self.name = kern, counter, name

    def __getitem__(self, grid):
        self.counter[self.name] = self.counter.get(self.name, 0) + 1
        return self.kern[grid]


# int8 by default (the epilogue's per-output-channel scale after the sum, WQ 2); under -m slow: fp8 (int8's
# epilogue, WQ 4 in kernels.py; its in-tile e4m3 decode runs by default in tests/test_fp8.py), f32 (split-K ==
# one pass by default in test_split_k_matches_unsplit_with_bias_and_input_weights) and int4 (its split-K tiles,
# split 3, by default in test_int4_tiles_every_group_layout)
@pytest.mark.parametrize("mode", [pytest.param("f32", marks=pytest.mark.slow), "int8",
                                  pytest.param("int4", marks=pytest.mark.slow),
                                  pytest.param("fp8", marks=pytest.mark.slow)])
def test_split_k_small_token_path(mode, tmp_path, monkeypatch):
    """The split-K path (few rows per expert: each grouped GEMM splits its reduction over program
    axis 2, and an epilogue kernel sums the partials in a fixed order, then scales, bias, routing
    weight, activation) verifies against onnxruntime end to end in every weight mode."""
    from moec.codegen.triton import kernels as K, runtime as rt, tuning
    cfg = dict(BLOCK_M=16, BLOCK_N1=32, BLOCK_K1=32, BLOCK_N2=32, BLOCK_K2=32, num_warps=4, num_stages=1,
               SPLIT_K1=3, SPLIT_K2=4)
    monkeypatch.setattr(tuning, "config_for", lambda kind, p: dict(cfg))
    launched = {}
    for name in ("moe_act_kernel", "moe_down_epilogue_kernel"):
        monkeypatch.setattr(K, name, _Counting(getattr(K, name), launched, name))
    r = compile_onnx(EXAMPLE, str(tmp_path / "out"),
                     CompileOptions(target="triton", weights=mode, group_size=32 if mode == "int4" else 0,
                                    symbol_sizes=(3, 1)))
    assert r.report["verified"], r.report.get("failure")
    assert launched.get("moe_act_kernel", 0) >= 2 and launched.get("moe_down_epilogue_kernel", 0) >= 2, launched
    assert rt.split_for(cfg, 1, 64) == (2, 32) and rt.split_for(cfg, 2, 1000) == (4, 256)


def test_split_k_matches_unsplit_with_bias_and_input_weights():
    """Split-K == one pass, for biases, routing weight on the input, a non-gated activation and ragged K."""
    import torch
    from moec.codegen.triton import runtime as rt
    g = torch.Generator().manual_seed(1)
    T, D, F, E, k = 5, 96, 80, 4, 2
    dev = rt.DEVICE
    x = torch.randn(T, D, generator=g).to(dev)
    ids = torch.tensor([[0, 1], [2, 3], [1, 0], [3, -1], [2, 1]], device=dev)
    rw = torch.rand(T, k, generator=g).to(dev)
    w_in = (torch.randn(E, 2 * F, D, generator=g) * 0.1).to(dev)
    w_out = (torch.randn(E, D, F, generator=g) * 0.1).to(dev)
    b_in = (torch.randn(E, 2 * F, generator=g) * 0.1).to(dev)
    b_out = (torch.randn(E, D, generator=g) * 0.1).to(dev)
    base = dict(BLOCK_M=16, BLOCK_N1=32, BLOCK_K1=32, BLOCK_N2=32, BLOCK_K2=32, num_warps=4, num_stages=1)
    for kw in (dict(b_in=b_in, b_out=b_out, rw=rw, weights_at="output"), dict(rw=rw, weights_at="input"),
               dict(activation="gelu")):
        wi = w_in if kw.get("activation", "swiglu") == "swiglu" else w_in[:, :F].contiguous()
        ref = rt.moe_experts(x, ids, wi, w_out, cfg=base, **kw)
        for s1, s2 in ((2, 1), (1, 3), (8, 8)):
            got = rt.moe_experts(x, ids, wi, w_out, cfg=dict(base, SPLIT_K1=s1, SPLIT_K2=s2), **kw)
            assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), (list(kw), s1, s2, (got - ref).abs().max())
        assert float(ref[3, 1].abs().max()) == 0.0, "a dropped slot stays zero"


def _pack_int4(q):
    """[..., K] codes 0..15 -> [..., K/2] bytes, k even in the low nibble (moec's int4 layout)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).to(__import__("torch").uint8)


def _int4_layouts():
    """Every (tile, group) layout with and without zero points; by default one layout of each kind -- tiles
    inside one group (32, 64), several groups per tile (64, 16), neither (64, 48) -- the zero point alternating
    (both kinds run); the other layouts ((32, 32), (32, 96): inside one group again) and the other zero point
    with -m slow."""
    for i, (bk, group) in enumerate([(32, 64), (64, 16), (32, 32), (64, 48), (32, 96)]):
        for zp in (False, True):
            yield pytest.param(bk, group, zp, id=f"{zp}-{bk}-{group}",
                               marks=[] if zp == bool(i % 2) and i in (0, 1, 3) else [pytest.mark.slow])


@pytest.mark.parametrize("bk,group,zp", list(_int4_layouts()))
def test_int4_tiles_every_group_layout(bk, group, zp):
    """int4 weights dequantised in registers, for tiles inside one group (group % BK == 0), tiles of
    several groups (BK % group == 0) and groups that do neither (a scale per element); split-K too."""
    import torch
    from moec.codegen.triton import runtime as rt
    g = torch.Generator().manual_seed(bk + group)
    E, D, F, T, k = 3, 192, 192, 4, 2
    dev = rt.DEVICE
    qi = torch.randint(0, 16, (E, 2 * F, D), generator=g)
    qo = torch.randint(0, 16, (E, D, F), generator=g)
    si = torch.rand(E, 2 * F, D // group, generator=g) * 0.02 + 0.01
    so = torch.rand(E, D, F // group, generator=g) * 0.02 + 0.01
    zi = torch.randint(0, 16, si.shape, generator=g).float() if zp else torch.full(si.shape, 8.0)
    zo = torch.randint(0, 16, so.shape, generator=g).float() if zp else torch.full(so.shape, 8.0)
    wi = (qi.float() - zi.repeat_interleave(group, -1)) * si.repeat_interleave(group, -1)
    wo = (qo.float() - zo.repeat_interleave(group, -1)) * so.repeat_interleave(group, -1)
    x = torch.randn(T, D, generator=g)
    ids = torch.tensor([[0, 1], [2, 0], [1, 2], [0, 2]])
    q = (si.to(dev), so.to(dev), zi.to(dev) if zp else None, zo.to(dev) if zp else None)
    want = torch.zeros(T, k, D)
    for t in range(T):
        for j in range(k):
            h = wi[ids[t, j]] @ x[t]
            want[t, j] = wo[ids[t, j]] @ (torch.nn.functional.silu(h[:F]) * h[F:])
    for split in (1, 3):
        cfg = dict(BLOCK_M=16, BLOCK_N1=32, BLOCK_K1=bk, BLOCK_N2=32, BLOCK_K2=bk, num_warps=4, num_stages=1,
                   SPLIT_K1=split, SPLIT_K2=split)
        y = rt.moe_experts(x.to(dev), ids.to(dev), _pack_int4(qi).to(dev), _pack_int4(qo).to(dev), wq="int4",
                           wq_group=group, q=q, cfg=cfg).cpu()
        assert torch.allclose(y, want, rtol=1e-4, atol=1e-4), (split, (y - want).abs().max())


def test_tuning_h200_uses_h100_defaults_and_generic_split(monkeypatch, tmp_path):
    """An H200 (same die as the H100) gets the H100's measured tiles; a GPU with no entry gets the
    generic rule, which splits K when a grouped GEMM would launch fewer than 2 programs per SM."""
    from moec.codegen.triton import tuning
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "MEMO_SECONDS", -1.0)  # every call looks up afresh
    p = dict(T=1, D=4096, F=14336, E=8, k=2, dtype="torch.bfloat16", wq="none")
    monkeypatch.setattr(tuning, "gpu_name", lambda: "NVIDIA_H100_80GB_HBM3")
    h100 = tuning.config_for("moe", p)
    monkeypatch.setattr(tuning, "gpu_name", lambda: "NVIDIA_H200")
    assert tuning.config_for("moe", p) == h100
    monkeypatch.setattr(tuning, "gpu_name", lambda: "Some_Other_GPU")
    monkeypatch.setattr(tuning, "sm_count", lambda: 132)
    small = dict(T=1, D=2048, F=4096, E=64, k=2, dtype="torch.bfloat16", wq="none")
    c = tuning.config_for("moe", small)  # 2 blocks x 4096/32 (2048/16) tiles = 256 programs < 2 x 132
    assert c["SPLIT_K1"] > 1 and c["SPLIT_K2"] > 1
    short_k = dict(small, F=1024)  # gemm2's reduction (F) has only 4 tiles of 256: not split
    assert tuning.config_for("moe", short_k).get("SPLIT_K2", 1) == 1
    big = dict(T=4096, D=2048, F=1024, E=64, k=2, dtype="torch.bfloat16", wq="none")
    assert "SPLIT_K1" not in tuning.config_for("moe", big)
    assert tuning.auto_split(c, small, 0) == c  # no GPU: nothing to size against


class _FakeCudaEvent:
    """torch.cuda.Event as the CPU can answer it (host clock): a faked device query."""

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self):
        import time
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


def test_gpu_bench_device_queries_ask_torch_cuda(monkeypatch):
    """The bench's CUDA queries (free memory for the dense peer, the name, events, syncs), with only what
    torch.cuda reports faked: free_bytes once called itself (RecursionError in every bench step on a GPU)."""
    import torch
    from moec import bench_triton as bt
    syncs = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(1))
    monkeypatch.setattr(torch.cuda, "Event", _FakeCudaEvent)
    assert bt._Host.free_bytes() == 3 << 30
    assert bt._Host.available() and bt._Host.name() == "Fake GPU" and bt._Host.device == "cuda"
    ran = []
    t = bt._time(lambda: ran.append(1), bt._Host, reps=3, warmup=2)
    assert len(ran) == 5 and len(syncs) == 4 and 0 <= t < 1
    from moec.codegen.triton import profile
    timer = profile.StageTimer(bt._Host)
    timer.start()
    for label in ("routing", "gemm1", "combine", "gemm1"):
        timer.mark(label)
    bt._Host.sync()
    assert set(timer.stages_ms()) == {"routing", "gemm1", "combine"}


def _check_bench_report(rep, out, layers, tokens):
    from moec.codegen.triton import profile
    assert os.path.exists(os.path.join(out, "bench_triton.json")) and os.path.exists(os.path.join(out, "bench_triton.txt"))
    for name in layers:
        rows = rep["layers"][name]["rows"]
        assert [r["tokens"] for r in rows] == tokens
        for r in rows:
            assert r["rel_err_vs_eager"] < 2e-2, (name, r)
            assert set(r["speedup"]) == {"eager", "dense bmm"}
            # every stage timed by the runtime's own marks (the code a GPU run uses)
            assert set(r["ms_stages"]) == set(profile.STAGES), r["ms_stages"]
            assert all(v >= 0 for v in r["ms_stages"].values())


def test_gpu_bench_flow_runs_on_the_interpreter(tmp_path, monkeypatch):
    """`moec bench --target triton` end to end on the smoke layers (CPU, Triton's interpreter; nothing of the
    bench replaced): routing with groups and bias, fused and unfused combine, the eager and dense peers
    (the dense peer asks the host's free memory), per-stage times, the report and its table -- so that a GPU
    session does not find a broken bench.  (benchmarks/run_gpu.sh --smoke runs the same in CI.)"""
    from moec import bench_triton as bt
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "out")
    rep = bt.run_triton_bench(list(bt.SMOKE_LAYERS), [1], out, reps=1, peers=("eager", "dense"), autotune="none",
                              smoke=True, warmup=0)
    _check_bench_report(rep, out, bt.SMOKE_LAYERS, [1])
    assert rep["smoke"] and rep["device"] == "cpu"
    assert [r["combine_fused"] for n in bt.SMOKE_LAYERS for r in rep["layers"][n]["rows"]] == [True, False]
    assert "smoke_deepseek" in bt.format_table(rep) and "gemm2" in open(os.path.join(out, "bench_triton.txt")).read()
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        bt.run_triton_bench(["smoke_mixtral"], [1], out)  # a timing run is refused on the interpreter


@pytest.mark.slow
def test_gpu_bench_flow_with_decode_autotuning_on_the_interpreter(tmp_path, monkeypatch):
    """The same with the bench's decode autotuning (split-K candidates included) at 1 and 9 tokens."""
    from moec import bench_triton as bt
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "out")
    rep = bt.run_triton_bench(list(bt.SMOKE_LAYERS), [1, 9], out, reps=1, peers=("eager", "dense"),
                              autotune="decode", smoke=True, warmup=0)
    _check_bench_report(rep, out, bt.SMOKE_LAYERS, [1, 9])
    assert rep["layers"]["smoke_mixtral"]["rows"][0]["tile_source"] == "autotuned"  # T*k = 2 <= 2E
    assert rep["layers"]["smoke_mixtral"]["rows"][1]["tile_source"] == "interpreter default"  # 18 > 8


def test_tuning_memo_sees_a_new_autotune_result(monkeypatch, tmp_path):
    """config_for is memoised (it runs on every launch); an autotune in this process replaces the
    answer at once, and the on-disk cache holds it for the next process."""
    import json
    from moec.codegen.triton import tuning
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "gpu_name", lambda: "Fake_GPU")
    monkeypatch.setattr(tuning, "sm_count", lambda: 0)
    p = dict(T=4, D=256, F=512, E=4, k=2, dtype="torch.bfloat16", wq="none")
    first = tuning.config_for("moe", p)
    assert tuning.config_for("moe", p) is first  # memoised
    pick = dict(first, BLOCK_N1=first["BLOCK_N1"] * 2, SPLIT_K2=2)
    ran = []
    assert tuning.autotune("moe", p, lambda c: ran.append(c), candidates=[pick], reps=1) == pick
    assert ran and tuning.config_for("moe", p) == pick
    saved = json.load(open(tmp_path / "triton_tuning.json"))
    assert pick in saved.values()


@pytest.mark.parametrize("k,weighted,shared,deterministic", [(2, False, False, True), (2, True, True, True),
                                                              (1, False, True, True), (4, True, True, False),
                                                              (4, False, False, True)])
def test_combine_fused_into_the_down_projection(k, weighted, shared, deterministic, monkeypatch):
    """moe.experts + moe.combine: fused (atomic f32 sums in the down projection's epilogue) for k <= 2,
    or for any k when MOEC_TRITON_DETERMINISTIC=0; else two kernels.  Same result either way, dropped
    slots included; the fused path launches no combine kernel and writes no [T*k, D] buffer."""
    import torch
    from moec.codegen.triton import kernels as K, runtime as rt
    monkeypatch.setenv("MOEC_TRITON_DETERMINISTIC", "1" if deterministic else "0")
    launched = {}
    monkeypatch.setattr(K, "combine_kernel", _Counting(K.combine_kernel, launched, "combine"))
    g = torch.Generator().manual_seed(k)
    T, D, F, E = 6, 48, 40, 5
    dev = rt.DEVICE
    x = torch.randn(T, D, generator=g).to(dev)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(dev)
    ids[2, 0] = -1  # a dropped slot adds nothing
    w = torch.rand(T, k, generator=g).to(dev)
    w_in = (torch.randn(E, 2 * F, D, generator=g) * 0.1).to(dev)
    w_out = (torch.randn(E, D, F, generator=g) * 0.1).to(dev)
    sh = torch.randn(T, D, generator=g).to(dev) if shared else None
    ffn = dict(b_out=(torch.randn(E, D, generator=g) * 0.1).to(dev))
    if not weighted:
        ffn.update(rw=w, weights_at="output")
    got = rt.moe_experts_combine(x, ids, w_in, w_out, shared=sh, w=w, weighted=weighted, **ffn)
    y = torch.zeros(T, k, D)
    for t in range(T):
        for j in range(k):
            e = int(ids[t, j])
            if e >= 0:
                h = w_in[e].cpu() @ x[t].cpu()
                y[t, j] = (w_out[e].cpu() @ (torch.nn.functional.silu(h[:F]) * h[F:]) + ffn["b_out"][e].cpu())
                y[t, j] *= w[t, j].cpu()
    want = y.sum(1) + (sh.cpu() if shared else 0)
    assert torch.allclose(got.cpu(), want, rtol=1e-5, atol=1e-5), (got.cpu() - want).abs().max()
    assert got.dtype == x.dtype and got.shape == (T, D)
    assert launched.get("combine", 0) == (0 if rt.fuse_combine(k) else 1)
    assert rt.fuse_combine(k) == (k <= 2 or not deterministic)


@pytest.mark.parametrize("name", ["deepseekv3_torchscript", "qwen2moe_dynamo"])
def test_zoo_with_atomic_combine_for_any_k(name, tmp_path, monkeypatch):
    """Zoo families with k > 2 (and shared experts) verify with the combine fused by atomics too."""
    e = next(z for z in ZOO if z.name == name)
    monkeypatch.setenv("MOEC_TRITON_DETERMINISTIC", "0")
    r = compile_onnx(e.build(), str(tmp_path / "out"), CompileOptions(target="triton", symbol_sizes=(5, 1)))
    assert r.report["verified"], r.report.get("failure")
    assert "rt.moe_experts_combine(" in open(tmp_path / "out" / "model_triton.py").read()


def test_default_results_are_bitwise_reproducible_on_the_gpu():
    """On a GPU (atomics really race there): with the default MOEC_TRITON_DETERMINISTIC, ten runs of a
    k = 2 layer (combine fused) and of a k = 8 layer (combine as its own kernel) give identical bits.
    Under the interpreter programs run one after another, so this would prove nothing: GPU only."""
    import torch
    from moec.codegen.triton import runtime as rt
    if rt.DEVICE != "cuda":
        pytest.skip("needs a CUDA GPU (the interpreter runs programs in order)")
    assert rt.deterministic()
    g = torch.Generator(device="cuda").manual_seed(0)
    T, D, F, E = 512, 1024, 512, 16
    x = torch.randn(T, D, device="cuda", generator=g, dtype=torch.bfloat16)
    w_in = torch.randn(E, 2 * F, D, device="cuda", generator=g, dtype=torch.bfloat16) / 32
    w_out = torch.randn(E, D, F, device="cuda", generator=g, dtype=torch.bfloat16) / 32
    for k in (2, 8):
        ids = torch.stack([torch.randperm(E, device="cuda", generator=g)[:k] for _ in range(T)])
        w = torch.rand(T, k, device="cuda", generator=g)
        runs = [rt.moe_experts_combine(x, ids, w_in, w_out, w=w, weighted=True) for _ in range(10)]
        assert all(torch.equal(r, runs[0]) for r in runs), f"k={k}: results differ between runs"


@pytest.mark.parametrize("weights,bound", [("int4", 0.25), ("int8", 3e-2)])
def test_gpu_bench_quantised_weights_on_the_interpreter(weights, bound, tmp_path, monkeypatch):
    """The bench's W4A16 / W8A16 rows (bf16 activations, quantised expert weights): the codes it makes
    with torch decode to the weights within the format's error, and TB/s counts the bytes stored
    (int4: half a byte per weight plus one f32 scale per group of 128)."""
    from moec import bench_triton as bt
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(bt.LAYERS, "tiny", dict(bt.LAYERS["mixtral"], D=256, F=128, E=4))
    rep = bt.run_triton_bench(["tiny"], [3], str(tmp_path / "out"), reps=1, peers=("eager",), autotune="none",
                              weights=weights, smoke=True, warmup=0)
    (row,) = rep["layers"]["tiny"]["rows"]
    assert rep["weights"] == weights and row["rel_err_vs_eager"] < bound, row
    per_weight = {"int4": 0.5 + 4 / 128, "int8": 1 + 4 / 256}[weights]  # (int8: a scale per row of K=256 / 128)
    touched = min(4, 3 * 2)
    want = touched * 3 * 128 * 256 * per_weight / 1e12 / (row["ms"]["moec"] / 1e3)
    assert abs(row["moec_tbps_weights"] - want) / want < 0.02, (row["moec_tbps_weights"], want)

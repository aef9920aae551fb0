"""The grouped GEMMs' kernel variants (issue 21) run for real under Triton's interpreter on the CPU: swap-AB
(weights as the MMA's 64-row operand), the persistent kernel with a tile queue, TMA descriptors (3-D weights,
2-D sorted activations), the even-K specialisation, and fp8 w8a8 (per-token dynamic activation scales).
Each gives the plain kernels' result; w8a8 matches its emulation and stays within the error bound derived
from e4m3's rounding.  What the GPU would run (wgmma, TMA instructions, fp8 dots, spills) is checked by
tests/test_triton_aot.py; runtime.variants' rules here."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

BASE = dict(BLOCK_M=16, BLOCK_N1=32, BLOCK_K1=32, BLOCK_N2=32, BLOCK_K2=32, num_warps=4, num_stages=1)
U = 2.0 ** -4  # e4m3's unit roundoff (3 mantissa bits, round to nearest)


class _Spy:
    """Calls through to a kernel, recording each launch's grid and constexpr flags."""

    def __init__(self, fn, log):
        self.fn, self.log = fn, log

    def __getitem__(self, grid):
        def launch(*a, **kw):
            self.log.append((grid, {k: kw.get(k) for k in ("SWAP_AB", "PERSISTENT", "TMA", "EVEN_K", "A8")}))
            return self.fn[grid](*a, **kw)
        return launch


def _layer(T, E, D, F, k, seed, gated=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    ids[1, 0] = -1  # a dropped slot
    w_in = torch.randn(E, (2 if gated else 1) * F, D, generator=g) * 0.1
    w_out = torch.randn(E, D, F, generator=g) * 0.1
    rw = torch.rand(T, k, generator=g)
    return x, ids, w_in, w_out, rw


def _spied(monkeypatch):
    from moec.codegen.triton import kernels as K
    log = {"gemm1": [], "gemm2": []}
    monkeypatch.setattr(K, "moe_gemm1_kernel", _Spy(K.moe_gemm1_kernel, log["gemm1"]))
    monkeypatch.setattr(K, "moe_gemm2_kernel", _Spy(K.moe_gemm2_kernel, log["gemm2"]))
    return log


VARIANTS = {
    "swap_ab": dict(SWAP_AB1=1, SWAP_AB2=1),
    "persistent": dict(PERSISTENT1=1, PERSISTENT2=2),
    "tma": dict(TMA=1),
    "all+split_k": dict(TMA=1, SWAP_AB1=1, SWAP_AB2=1, PERSISTENT1=1, PERSISTENT2=1, SPLIT_K1=2, SPLIT_K2=3),
}
SLOW_VARIANTS = {"all+split_k"}  # (each variant on its own runs by default)


# D = 72 (not a multiple of BLOCK_K: the masked path) and F = 40 (column tiles past F: TMA's zero padding and
# the gate tile reading up rows that the store masks); bias and routing weight on the input, or on the output
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_VARIANTS else [])
                                  for n in VARIANTS])
def test_kernel_variants_give_the_plain_kernels_result(name, monkeypatch):
    from moec.codegen.triton import runtime as rt
    x, ids, w_in, w_out, rw = _layer(T=9, E=4, D=72, F=40, k=2, seed=5)
    g = torch.Generator().manual_seed(9)
    b_in, b_out = torch.randn(4, 80, generator=g) * 0.1, torch.randn(4, 72, generator=g) * 0.1
    kw = dict(b_in=b_in, b_out=b_out, rw=rw, weights_at="input" if name == "tma" else "output")
    ref = rt.moe_experts(x, ids, w_in, w_out, cfg=dict(BASE, TMA=0), **kw)
    log = _spied(monkeypatch)
    got = rt.moe_experts(x, ids, w_in, w_out, cfg=dict(BASE, **VARIANTS[name]), **kw)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    assert float(got[1, 0].abs().max()) == 0.0, "a dropped slot stays zero"
    v = VARIANTS[name]
    for which in (1, 2):
        (grid, flags), = log[f"gemm{which}"]
        assert flags["SWAP_AB"] == bool(v.get(f"SWAP_AB{which}")) and bool(flags["TMA"]) == bool(v.get("TMA"))
        assert flags["PERSISTENT"] == bool(v.get(f"PERSISTENT{which}")) and flags["EVEN_K"] is False  # (72, 40)
        if flags["PERSISTENT"]:  # the interpreter's persistent grid: 2 programs take every tile from the queue
            assert grid == (2, 1, 1)


@pytest.mark.parametrize("wq", ["int8", "fp8"])
def test_quantised_weights_through_tma_and_swap_ab(wq):
    """int8 / fp8 codes loaded through the TMA descriptor (uint8 / int8 tiles), channel scales after the dot,
    with even K (D, F multiples of BLOCK_K: no reduction masks) and swap-AB: the plain kernels' result."""
    from moec.bench_triton import quantize_layer
    from moec.codegen.triton import runtime as rt
    x, ids, w_in, w_out, rw = _layer(T=7, E=3, D=64, F=32, k=2, seed=2)
    qi, qo, mode, q = quantize_layer(w_in, w_out, wq)
    ref = rt.moe_experts(x, ids, qi, qo, rw=rw, weights_at="output", wq=mode, q=q, cfg=BASE)
    got = rt.moe_experts(x, ids, qi, qo, rw=rw, weights_at="output", wq=mode, q=q,
                         cfg=dict(BASE, TMA=1, SWAP_AB1=1, SWAP_AB2=1))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_e4m3_codes_round_to_nearest_even_like_torch():
    """quant_fp8_rows' codes (kernels._e4m3_bits, bit arithmetic) equal torch's float8_e4m3fn rounding on every
    e4m3 value, every midpoint between neighbours (ties to even), the subnormals and random values of every
    binade; the row scale is max|x| / 448 (here 1), NaN stays NaN, an all-zero row gets scale 1 and codes 0."""
    from moec.codegen.triton import runtime as rt
    g = torch.Generator().manual_seed(0)
    every = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    every = every[torch.isfinite(every)]
    pos = torch.unique(every.abs())
    mids = (pos[1:] + pos[:-1]) / 2
    rnd = torch.exp(torch.empty(2000).uniform_(-14, 6.1, generator=g)).clamp(max=448)
    vals = torch.cat([every, mids, -mids, rnd, -rnd, torch.tensor([448.0, 0.0, -0.0])])
    x = torch.stack([vals, torch.zeros_like(vals)])
    q, s = rt.quant_fp8_rows(x)
    assert s.tolist() == [1.0, 1.0]
    assert torch.equal(q[0], vals.to(torch.float8_e4m3fn).view(torch.uint8))
    assert int(q[1].max()) == 0
    qn, _ = rt.quant_fp8_rows(torch.tensor([[1.0, float("nan"), -3.0]]))
    assert torch.isnan(qn.view(torch.float8_e4m3fn).float()[0, 1])


def _dequant(codes, scale):
    return codes.view(torch.float8_e4m3fn).double() * scale.double()[..., None]


def test_w8a8_matches_its_emulation_and_the_derived_error_bound():
    """fp8 weights and fp8 activations (moe_experts(act_quant='fp8')): x and the activation A are quantised
    per row (scale max|row| / 448), the GEMMs multiply the codes and scale the f32 accumulator by the row and
    channel scales.  (1) Against the same quantisation emulated in float64: equal up to f32 accumulation.
    (2) Against fp8 weights with unquantised activations (w8a16), with a ReLU expert (1-Lipschitz), the
    error is within the bound e4m3's rounding gives: |x^ - x| <= u|x| + 2^-10 s_x (u = 2^-4, the subnormal
    step 2^-9 s halved), so |h^ - h| <= |W1|(u|x| + 2^-10 s_x), and with A's own rounding
    |y^ - y| <= |W2| (|h^ - h| + u|a^| + 2^-10 s_a)."""
    from moec.bench_triton import quantize_layer
    from moec.codegen.triton import runtime as rt
    T, E, D, F, k = 6, 3, 64, 32, 2
    x, ids, w_in, w_out, rw = _layer(T, E, D, F, k, seed=11, gated=False)
    x = x * torch.linspace(0.01, 3.0, D)  # a spread of magnitudes within a row (small values lose most)
    qi, qo, _, q = quantize_layer(w_in, w_out, "fp8")
    W1, W2 = _dequant(qi, q[0]), _dequant(qo, q[1])
    kw = dict(rw=rw, weights_at="output", wq="fp8", q=q, activation="relu", cfg=BASE)
    y8 = rt.moe_experts(x, ids, qi, qo, act_quant="fp8", **kw).double()
    y16 = rt.moe_experts(x, ids, qi, qo, **kw).double()
    xd = x.double()

    def qrow(v):
        s = v.abs().amax(-1) / 448
        s = torch.where(s > 0, s, torch.ones_like(s))
        return (v / s[..., None]).float().to(torch.float8_e4m3fn).double() * s[..., None], s
    xq, sx = qrow(xd)
    for t in range(T):
        for j in range(k):
            e = int(ids[t, j])
            if e < 0:
                assert float(y8[t, j].abs().max()) == 0.0
                continue
            h_hat = W1[e] @ xq[t]
            a_hat = torch.relu(h_hat)
            aq, sa = qrow(a_hat)
            emu = (W2[e] @ aq) * rw[t, j]
            assert torch.allclose(y8[t, j], emu, rtol=1e-4, atol=1e-5 * float(emu.abs().max())), (t, j)
            dh = W1[e].abs() @ (U * xd[t].abs() + 2 ** -10 * sx[t])
            bound = (W2[e].abs() @ (dh + U * a_hat.abs() + 2 ** -10 * sa)) * rw[t, j]
            err = (y8[t, j] - y16[t, j]).abs()
            assert bool((err <= bound * (1 + 1e-3) + 1e-5).all()), (t, j, float((err - bound).max()))
            assert float(err.max()) > 0, "the activations really were quantised"


def test_w8a8_needs_fp8_weights():
    from moec.codegen.triton import runtime as rt
    x, ids, w_in, w_out, _ = _layer(T=2, E=2, D=32, F=16, k=1, seed=0)
    with pytest.raises(ValueError, match="fp8 activations need fp8 weights"):
        rt.moe_experts(x, ids, w_in, w_out, act_quant="fp8", cfg=BASE)


def test_variant_rules_and_config_files():
    """runtime.variants: swap-AB by default where BLOCK_M < 64 <= BLOCK_N on a GPU, TMA by default on sm_90+,
    neither under the interpreter (cap 0) unless the configuration says; persistent only when asked.  The
    tile-search file carries SWAP_AB / PERSISTENT per projection (absent: the rule), out-of-range ones are
    rejected with the entry."""
    from moec.codegen.triton import runtime as rt, tuning
    c = dict(BASE, BLOCK_N1=64, BLOCK_N2=32)
    assert rt.variants(c, 1, cap=90) == {"SWAP_AB": True, "PERSISTENT": 0, "TMA": True}
    assert rt.variants(c, 2, cap=90) == {"SWAP_AB": False, "PERSISTENT": 0, "TMA": True}
    assert rt.variants(c, 1, cap=80) == {"SWAP_AB": True, "PERSISTENT": 0, "TMA": False}
    assert rt.variants(c, 1, cap=0) == {"SWAP_AB": False, "PERSISTENT": 0, "TMA": False}
    told = dict(c, SWAP_AB1=0, PERSISTENT2=2, TMA=0)
    assert rt.variants(told, 1, cap=90)["SWAP_AB"] is False and rt.variants(told, 2, cap=90)["PERSISTENT"] == 2
    assert rt.variants(told, 2, cap=90)["TMA"] is False
    assert tuning.valid_config(told) and tuning.from_entry(tuning.to_entry(told)) == tuning.from_entry(
        tuning.to_entry(dict(told)))
    e = tuning.to_entry(told)
    assert e["up"]["SWAP_AB"] == 0 and e["down"]["PERSISTENT"] == 2 and "SWAP_AB" not in e["down"]
    back = tuning.from_entry(e)
    assert back["SWAP_AB1"] == 0 and back["PERSISTENT2"] == 2 and "SWAP_AB2" not in back
    for bad in (dict(SWAP_AB=2), dict(PERSISTENT=9), dict(PERSISTENT=True)):
        assert tuning.from_entry(dict(e, up=dict(e["up"], **bad))) is None, bad
    # w8a8 has its own tile files (the runtime's key "fp8a8"), apart from fp8 weights with bf16 activations
    assert tuning.dtype_tag("torch.bfloat16", "fp8a8") == "fp8_w8a8"
    assert tuning.dtype_tag("torch.bfloat16", "fp8") == "fp8_w8a16"
    from moec.codegen.triton import tune_moe
    from moec.errors import UserInputError
    with pytest.raises(UserInputError, match="--activations fp8 goes with --weights fp8"):
        tune_moe.main(["--E", "4", "--N", "32", "--K", "64", "--topk", "2", "--activations", "fp8", "--dry-run"])


@pytest.mark.parametrize("M,K,N,dt", [(1, 300, 8, "float32"), pytest.param(3, 1024, 40, "float32", marks=pytest.mark.slow),
                                      (1, 512, 8, "bfloat16")])
def test_few_row_matmul_is_a_split_k_gemv(M, K, N, dt, monkeypatch):
    """A router at decode (M <= 16 rows, long reduction): the matmul runs as the split-K GEMV (slices of K on
    their own programs, summed in slice order by splitk_reduce_kernel, the Gemm epilogue there), not as one
    tile walking all of K; the result is the plain kernel's up to f32 summation order, bias epilogue too."""
    from moec.codegen.triton import kernels as K_, runtime as rt
    g = torch.Generator().manual_seed(M * K)
    tdt = getattr(torch, dt)
    a, b = torch.randn(M, K, generator=g).to(tdt), torch.randn(K, N, generator=g).to(tdt)
    bias = torch.randn(N, generator=g)
    log = []
    monkeypatch.setattr(K_, "gemv_splitk_kernel", _Spy(K_.gemv_splitk_kernel, log))
    S, chunk, BN, BK = rt.gemv_plan(M, N, K)
    assert S >= 2 and chunk % BK == 0 and (S - 1) * chunk < K <= S * chunk
    got = rt.matmul(a, b)
    gotb = rt.matmul(a.float(), b.float(), bias=bias, alpha=0.5, beta=2.0)
    assert len(log) == 2 and log[0][0] == (triton_cdiv(N, BN), S)
    ref = a.double() @ b.double()
    tol = 1e-5 * float(ref.abs().max()) if dt == "float32" else 2 ** -8 * float(ref.abs().max())
    assert got.dtype == tdt and float((got.double() - ref).abs().max()) <= tol
    assert float((gotb.double() - (0.5 * ref + 2.0 * bias.double())).abs().max()) <= 1e-5 * float(ref.abs().max())
    assert rt.gemv_plan(17, N, K) is None and rt.gemv_plan(M, N, 64) is None, "many rows or a short K: plain"


def triton_cdiv(a, b):
    return -(-a // b)


def test_compile_with_cuda_graphs_leaves_the_interpreter_path_as_it_is(tmp_path, monkeypatch):
    """moec.compile(..., cuda_graphs=True): on a GPU the launcher is replayed as one CUDA graph per input
    signature; under the interpreter nothing changes -- the report says why -- and the results are those of a
    build without it.  Asking for it on another target is a UserInputError."""
    import moec
    from moec.errors import UserInputError
    from moec.codegen.triton import runtime as rt
    if rt.DEVICE == "cuda":
        pytest.skip("the interpreter's path (on a GPU: test_cuda_graph_replays_the_moe_layer)")
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "mixtral_like.onnx")
    graphed = moec.compile(example, target="triton", verify=False, cuda_graphs=True)
    assert graphed.stats.report["cuda_graphs"].startswith("off: CUDA graphs need a CUDA GPU")
    assert getattr(graphed.artifact, "_graphs", None) is None
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_array_equal(graphed(x), graphed.artifact([x])[0])  # (the launcher as without the option)
    with pytest.raises(UserInputError, match="cuda_graphs=True is for target='triton'"):
        moec.compile(example, target="cpu", cuda_graphs=True)


def test_cuda_graph_replays_the_moe_layer():
    """On a GPU: the whole layer (router GEMV, route, align, both grouped GEMMs, combine) captured once per
    input signature and replayed gives the eager launches' result, for two token counts (two graphs)."""
    from moec.codegen.triton import runtime as rt
    from moec.codegen.triton.graphs import GraphRunner, unavailable
    why = unavailable(rt.DEVICE)
    if why:
        pytest.skip(why)
    g = torch.Generator(device="cuda").manual_seed(0)
    E, D, F, k = 8, 256, 128, 2
    w_r = torch.randn(D, E, device="cuda", generator=g)
    w_in = torch.randn(E, 2 * F, D, device="cuda", generator=g, dtype=torch.bfloat16) / 16
    w_out = torch.randn(E, D, F, device="cuda", generator=g, dtype=torch.bfloat16) / 16

    def layer(xs):
        x, = xs
        w, ids = rt.moe_route(rt.matmul(x.float(), w_r), None, k=k, scoring="softmax", n_group=1, topk_group=1,
                              group_score="max", post="none", norm="sum", norm_eps=0.0, scale=1.0, capacity=0)
        return [rt.moe_experts_combine(x, ids, w_in, w_out, w=w, weighted=True)]
    run = GraphRunner(layer)
    for T in (1, 4, 1):
        x = torch.randn(T, D, device="cuda", generator=g, dtype=torch.bfloat16)
        assert torch.equal(run([x])[0], layer([x])[0])
    assert len(run.graphs) == 2 and run.replays == 3


@pytest.mark.slow
def test_gpu_bench_w8a8_with_variants_on_the_interpreter(tmp_path, monkeypatch):
    """The bench's w8a8 row (--weights fp8 --activations fp8) with --variants and --cuda-graphs: each row also
    timed with swap-AB, persistent and TMA flipped (same result), the CUDA-graph column says why it is empty
    here; the error against the bf16 eager peer stays within 4u (four e4m3-rounded operands, first order)."""
    from moec import bench_triton as bt
    from moec.errors import UserInputError
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    rep = bt.run_triton_bench(["smoke_mixtral"], [2], str(tmp_path / "out"), reps=1, peers=("eager",),
                              autotune="none", weights="fp8", activations="fp8", smoke=True, warmup=0, variants=True,
                              cuda_graphs=True)
    (row,) = rep["layers"]["smoke_mixtral"]["rows"]
    assert rep["activations"] == "fp8" and row["rel_err_vs_eager"] < 4 * U, row["rel_err_vs_eager"]
    assert set(row["ms_variants"]) == {"swap_ab on", "persistent on", "tma on"}
    assert all(v["rel_diff"] < 1e-5 and v["ms"] > 0 for v in row["ms_variants"].values()), row["ms_variants"]
    assert "need a CUDA GPU" in row["cuda_graph_skipped"] and "variants:" in bt.format_table(rep)
    with pytest.raises(UserInputError, match="fp8 activations go with fp8 weights"):
        bt.run_triton_bench(["smoke_mixtral"], [1], str(tmp_path / "o2"), weights="bf16", activations="fp8", smoke=True)

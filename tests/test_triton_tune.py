"""The grouped GEMMs' tile order (GROUP_SIZE_M), separate up/down configurations, and the tile search
(python -m moec.codegen.triton.tune_moe) with its vLLM-like per-(GPU, E, N, K, dtype) files: run for real
under Triton's interpreter on the CPU (the search's times are the interpreter's: only the path is checked)."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")


def _layer(T, E, D, F, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
    w_in = torch.randn(E, 2 * F, D, generator=g) * 0.1
    w_out = torch.randn(E, D, F, generator=g) * 0.1
    rw = torch.rand(T, k, generator=g)
    return x, ids, w_in, w_out, rw


def _reference(x, ids, w_in, w_out, rw):
    T, k = ids.shape
    F = w_out.shape[2]
    y = torch.zeros(T, k, w_out.shape[1])
    for t in range(T):
        for j in range(k):
            h = w_in[ids[t, j]] @ x[t]
            y[t, j] = (w_out[ids[t, j]] @ (torch.nn.functional.silu(h[:F]) * h[F:])) * rw[t, j]
    return y


def test_tile_order_gives_the_same_result():
    """Both grouped GEMMs walk their 1-D grid in GROUP_SIZE_M order (kernels._tile_ids): every (expert
    block, column tile) is computed exactly once whatever the group size -- 1, one that does not divide
    the block count, larger than it -- and each projection may use its own (GROUP_SIZE_M1 / 2, and its own
    warps / stages): the results are bitwise those of one order, and match the reference."""
    from moec.codegen.triton import runtime as rt
    x, ids, w_in, w_out, rw = _layer(T=21, E=3, D=48, F=40, k=2, seed=3)
    ids[4, 1] = -1  # a dropped slot
    dev = rt.DEVICE
    base = dict(BLOCK_M=16, BLOCK_N1=16, BLOCK_K1=32, BLOCK_N2=16, BLOCK_K2=32, num_warps=4, num_stages=1)
    args = (x.to(dev), ids.to(dev), w_in.to(dev), w_out.to(dev))
    ys = {}
    for g1, g2 in ((1, 1), (3, 5), (64, 2)):  # (grid: 6 expert blocks x 3 column tiles each)
        cfg = dict(base, GROUP_SIZE_M1=g1, GROUP_SIZE_M2=g2, num_warps2=8, num_stages2=2)
        assert rt.launch_params(cfg, 1) == (g1, 4, 1) and rt.launch_params(cfg, 2) == (g2, 8, 2)
        ys[(g1, g2)] = rt.moe_experts(*args, rw=rw.to(dev), weights_at="output", cfg=cfg).cpu()
    first = ys[(1, 1)]
    for key, y in ys.items():
        assert torch.equal(y, first), key
    want = _reference(x, ids.clamp(min=0), w_in, w_out, rw)
    want[4, 1] = 0.0
    np.testing.assert_allclose(first.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    # split-K with the tile order (its epilogue kernels keep a 2-D grid)
    y = rt.moe_experts(*args, rw=rw.to(dev), weights_at="output",
                       cfg=dict(base, GROUP_SIZE_M1=3, GROUP_SIZE_M2=3, SPLIT_K1=2, SPLIT_K2=2)).cpu()
    assert torch.allclose(y, first, rtol=1e-5, atol=1e-6)


def test_zipf_routing_is_skewed_and_uniform_is_not():
    from moec.codegen.triton.tune_moe import draw_routing
    for dist in ("uniform", "zipf"):
        ids, w = draw_routing(4096, 16, 2, dist, 1.2, seed=1)
        assert ids.shape == (4096, 2) and bool((ids[:, 0] != ids[:, 1]).all())  # k distinct experts per token
        assert torch.allclose(w.sum(1), torch.ones(4096)) and bool((w > 0).all())
        share = torch.bincount(ids.reshape(-1), minlength=16).float() / ids.numel()
        if dist == "uniform":
            assert float(share.max()) < 0.08  # 1/16 = 0.0625
        else:
            assert float(share.max()) > 0.2 and float(share.min()) < 0.03, share
    with pytest.raises(ValueError):
        draw_routing(4, 8, 2, "normal", 1.2, 0)


def test_tile_search_files_are_untrusted_and_nearest_m_serves(tmp_path, monkeypatch):
    """A file of the documented format: the entry with the nearest token count serves a call; invalid
    entries and metadata are ignored; to_entry / from_entry keep up and down apart."""
    from moec.codegen.triton import tuning
    monkeypatch.setenv("MOEC_TRITON_CONFIGS", str(tmp_path))
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    cfg = dict(BLOCK_M=32, BLOCK_N1=64, BLOCK_K1=128, BLOCK_N2=32, BLOCK_K2=256, num_warps=4, num_stages=3,
               num_warps2=8, num_stages2=4, GROUP_SIZE_M1=8, GROUP_SIZE_M2=1, SPLIT_K1=1, SPLIT_K2=2)
    e = tuning.to_entry(cfg)
    assert e["up"] == {"BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8, "SPLIT_K": 1, "num_warps": 4,
                       "num_stages": 3}
    assert e["down"]["num_warps"] == 8 and e["down"]["SPLIT_K"] == 2 and tuning.from_entry(e) == cfg
    name = tuning.config_file_name(8, 96, 64, "Fake_GPU", tuning.dtype_tag("torch.bfloat16", "none"))
    assert name == "E=8,N=96,K=64,device_name=Fake_GPU,dtype=bf16.json"
    assert tuning.dtype_tag("torch.bfloat16", "int8") == "int8_w8a16"
    bad = dict(e, BLOCK_SIZE_M=3)
    with open(tmp_path / name, "w") as f:
        json.dump({"16": e, "64": bad, "128": {"up": 1}, "triton_version": "x", "moec": {"top_k": 2}}, f)
    p = dict(T=100, E=8, F=96, D=64, k=2, dtype="torch.bfloat16", wq="none")
    assert tuning.file_entries(str(tmp_path / name)) == {16: cfg}
    c, src = tuning._resolve("moe", p, "Fake_GPU")
    assert c == cfg and src.startswith("tile-search file") and "M=16" in src
    assert tuning._resolve("moe", dict(p, E=4), "Fake_GPU")[1] == "generic rule"
    # the shipped H100 files serve an H100 and, as its sibling, an H200; a searched file adds token counts
    # to them and replaces the same ones, the nearest of either serving
    h = dict(T=4096, E=8, F=14336, D=4096, k=2, dtype="torch.bfloat16", wq="none")
    assert tuning._resolve("moe", h, "NVIDIA_H200")[1].startswith("shipped tile-search file")
    h100 = tuning.config_file_name(8, 14336, 4096, "NVIDIA_H100_80GB_HBM3", "bf16")
    tuning.save_entries(str(tmp_path / h100), {1: cfg, 4096: dict(cfg, BLOCK_M=64)})
    assert tuning._resolve("moe", h, "NVIDIA_H200") == (dict(cfg, BLOCK_M=64), f"tile-search file {h100} M=4096")
    assert tuning._resolve("moe", dict(h, T=1), "NVIDIA_H100_80GB_HBM3")[0] == cfg
    assert tuning._resolve("moe", dict(h, T=100), "NVIDIA_H100_80GB_HBM3")[1].endswith("M=128")  # shipped


def test_tile_search_smoke_writes_the_documented_file(tmp_path, monkeypatch, capsys):
    """The one command (tune_moe) runs its whole search on the interpreter at a tiny shape: both routings,
    per-stage times, up and down chosen apart, and writes the file the runtime's lookup then serves."""
    from moec.codegen.triton import tune_moe, tuning
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "configs"
    assert tune_moe.main(["--E", "4", "--N", "32", "--K", "64", "--topk", "2", "--tokens", "1", "--smoke",
                          "-o", str(out)]) == 0
    name = "E=4,N=32,K=64,device_name=interpreter,dtype=bf16.json"
    data = json.load(open(out / name))
    assert set(data) == {"1", "triton_version", "moec"} and data["moec"]["routing"] == ["uniform", "zipf"]
    assert set(data["1"]) == {"BLOCK_SIZE_M", "up", "down"}
    assert set(data["1"]["up"]) == {"BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "SPLIT_K", "num_warps", "num_stages",
                                    "SWAP_AB", "PERSISTENT"}
    runs = json.load(open(out / name.replace(".json", ".search.json")))["runs"]
    assert len(runs) == 2 and all(set(r["ms"]) == {"uniform", "zipf"} for r in runs)
    assert all({"gemm1", "gemm2", "align"} <= set(r["ms"]["zipf"]) for r in runs)
    monkeypatch.setenv("MOEC_TRITON_CONFIGS", str(out))
    p = dict(T=1, E=4, F=32, D=64, k=2, dtype="torch.bfloat16", wq="none")
    assert tuning._resolve("moe", p, "interpreter")[0] == tuning.from_entry(data["1"])


def test_tile_search_dry_run_and_bad_input(capsys):
    """--dry-run prints the plan of the full search for a real layer without running anything; bad input
    is a UserInputError (exit 2 from the command line)."""
    from moec.codegen.triton import tune_moe
    from moec.errors import UserInputError
    assert tune_moe.main(["--layer", "mixtral", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "M=4096" in out and "prefill" in out and "layer runs in all" in out
    p = tune_moe.plan(8, 14336, 4096, 2, [1, 4096], "full", smem_limit=227 * 1024)
    assert p[0]["regime"] == "decode" and p[1]["regime"] == "prefill"
    assert all(b["up"] <= b["down"] for b in p[1]["per_block_m"])  # gemm1 holds gate and up tiles: fewer fit
    for argv in (["--layer", "nope"], ["--E", "4"], ["--layer", "mixtral", "--tokens", "1,x"],
                 ["--layer", "mixtral", "--tokens", "0"]):
        with pytest.raises(UserInputError):
            tune_moe.main(argv + ["--dry-run"])


def test_issue21_report_judges_targets_from_the_bench_rows():
    """benchmarks/issue21_report.py (the GPU script's one JSON + table): each target met / missed / not
    measured from the bench's own fields; DeepSeek's roofline bound is max(bytes / copy bw, FLOPs / matmul)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "issue21_report", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "issue21_report.py"))
    rep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rep)

    def row(T, tflops, fmp, tbps, fcb, ms, eager):
        return {"tokens": T, "moec_tflops": tflops, "frac_matmul_peak": fmp, "moec_tbps_weights": tbps,
                "frac_copy_bw": fcb, "ms": {"moec": ms}, "speedup": {"eager": eager}}
    bf16 = {"gpu": "G", "smoke": False, "probes": {"bf16_matmul_tflops": 700.0, "copy_tbps": 3.0},
            "layers": {"mixtral": {"rows": [row(1, 0.1, 0.0, 2.4, 0.8, 0.1, 2.0), row(16, 1.0, 0.0, 1.5, 0.5, 0.3, 2.0),
                                            row(4096, 500.0, 0.71, 1.0, 0.3, 3.0, 1.4)]},
                       "deepseek": {"rows": [row(4096, 300.0, 0.43, 2.5, 0.83, 10.0, 6.0)]}}}
    got = {t["target"].split(":")[0]: t for t in rep.targets(bf16, None)}
    assert [got[k]["status"] for k in ("mixtral 4096 tokens", "mixtral 1024 tokens", "mixtral 1 token",
                                       "mixtral 16-128 tokens", "deepseek 4096 tokens", "fp8 w8a8 4096 tokens")] == \
        ["met", "not measured", "met", "missed", "missed", "not measured"]
    ds = got["deepseek 4096 tokens"]["got"]  # 25 GB at 3 TB/s = 8.33 ms > 3 PFLOP at 700 TFLOP/s = 4.29 ms
    assert abs(ds["bound_bytes_ms"] - 25 / 3) < 1e-9 and abs(ds["frac_of_bound"] - 0.25 / 0.3) < 1e-9
    assert all(t["status"] == "not measured" for t in rep.targets(dict(bf16, smoke=True), None))
    # fp8: judged only from a w8a8 report (fp8 weights AND activations), against the bf16 run's moec time
    w8a8 = {"weights": "fp8", "activations": "fp8", "layers": {"mixtral": {"rows": [dict(row(4096, 0, 0, 0, 0, 1.8, 2),
                                                                                        rel_err_vs_eager=0.05)]}}}
    fp8 = {t["target"].split(":")[0]: t for t in rep.targets(bf16, w8a8)}["fp8 w8a8 4096 tokens"]
    assert fp8["status"] == "met" and abs(fp8["got"]["x_bf16"] - 3.0 / 1.8) < 1e-12
    slow = {t["target"].split(":")[0]: t for t in rep.targets(bf16, dict(w8a8, activations="bf16"))}
    assert slow["fp8 w8a8 4096 tokens"]["status"] == "not measured"

"""bf16 pair panels packed at compile time (issue 17): the weights of moec.linear_q and moe.experts in mode bf16
are stored in the weights file as the panels tile_bf16 reads (ir/weight_layouts.py, codegen/c/gemm_pack.py)
and read in place: no run-time copy, no first-call packing.

- The compile-time panels give the same bits as the run-time packer of the C runtime (pack_b_bf16, which packs
  a weight that is not in the weights file per work item, as the old run-time cache packed every weight): the
  same layer with its weights inline vs from the weights file, on edge sizes.
- Stored once, as the panels, when every user reads them (in the weight's place when their size is the
  weight's, else as its entry at the end of the file, the plain bytes dropped); appended beside the plain
  weight when another op reads it too; the artifact's module still loads the plain weights.
- A layout version this moec does not read is refused when the artifact is loaded (one clear error; the JIT
  cache rebuilds such an entry), never run on misread weights."""
import json
import os

import ml_dtypes
import numpy as np
import pytest

from helpers import experts_module

from moec.driver import build_module
from moec.ir import load_module, run
from moec.ir.core import ResourceRef
from moec.ir.weight_layouts import PAIR_LAYOUT_VERSION, pack_bf16_pairs, pair_shape, unpack_bf16_pairs
from moec.passes.quantize import QuantizeWeights


def _inline(m, keys=None):
    """The module with its weight-file constants (``keys``, default every one) as inline constants: the C target
    binds them from the unit, not the weights file, so nothing packs them at compile time."""
    n = 0
    for o in m.main.ops:
        v = o.attrs.get("value") if o.name == "moec.constant" else None
        if isinstance(v, ResourceRef) and (keys is None or v.key in keys):
            o.attrs["value"] = np.array(m.weights[v.key])
            n += 1
    assert n
    return m


def _index(d):
    with open(os.path.join(d, "model.weights.json")) as f:
        return json.load(f)


def _stored_once(d):
    """The weights file holds its index's entries and nothing else (no appended panels, no dropped bytes)."""
    index = _index(d)
    used = sum(-(-e["nbytes"] // 64) * 64 for e in index.values())
    assert os.path.getsize(os.path.join(d, "model.weights.bin")) <= used


def _dense(K, N, seed):
    from test_dense_quant import _module, _weights
    m = _module(K, N, _weights(K, N, seed))
    QuantizeWeights("bf16", 0, False, scope="all", dense_modes=("bf16",)).run(m)
    assert sum(o.name == "moec.linear_q" for o in m.main.ops) == 2
    return m


def test_pair_layout_round_trip_and_shape():
    """The layout itself: panel b, pair p, column j holds (w[32b + j, 2p], w[32b + j, 2p + 1]), zero past N and K;
    its inverse gives the weight back; the size is the weight's exactly when N % 32 == 0 and K is even."""
    w = np.arange(3 * 37 * 45).reshape(3, 37, 45).astype(np.float32).astype(ml_dtypes.bfloat16)
    p = pack_bf16_pairs(w)
    assert p.shape == pair_shape(w.shape) == (3, 2, 23, 32, 2) and p.dtype == w.dtype
    for e, n, k in ((0, 0, 0), (2, 36, 44), (1, 33, 7), (1, 5, 44)):
        assert p[e, n // 32, k // 2, n % 32, k % 2] == w[e, n, k]
    assert not p[:, 1, :, 5:].astype(np.float32).any() and not p[:, :, 22, :, 1].astype(np.float32).any()
    np.testing.assert_array_equal(unpack_bf16_pairs(p.reshape(-1), w.shape), w)
    assert pack_bf16_pairs(np.zeros((64, 10), np.uint16)).size == 640
    # as the runtime reads it: one little-endian uint32 per (p, j), w[2p] in the low half
    u = pack_bf16_pairs(w[0]).view(np.uint16).reshape(-1).view(np.uint32)
    bits = w[0].view(np.uint16).astype(np.uint32)
    assert u[0] == bits[0, 0] | bits[0, 1] << 16 and u[1] == bits[1, 0] | bits[1, 1] << 16


# K odd, K = 1, N = 1, N not a multiple of 32, both multiples (in place)
DENSE = [(37, 45), (1, 33), (64, 1), (64, 96)]


@pytest.mark.parametrize("arch", ["native", "generic"])
def test_dense_panels_packed_at_compile_time_equal_the_runtime_packer(arch, tmp_path):
    """x @ W and x @ Wt^T + b (moec.linear_q, bf16) from the weights file (compile-time panels, their only copy;
    padded past N and K where those are not multiples of the panel) and with the weights inline (the runtime packs each work item's panel): the same bits at 1, 2, 4,
    8 rows (the unrolled tiles), 3 and 19 (partial and several tiles)."""
    for i, (K, N) in enumerate(DENSE):
        m = _dense(K, N, seed=i)
        packed = build_module(m, str(tmp_path / f"p{i}"), arch=arch, threads=2)
        lay = {k: e.get("layout") for k, e in _index(tmp_path / f"p{i}").items() if e["dtype"] == "bf16"}
        assert len(lay) == 2 and all(v is not None for v in lay.values()), (K, N, lay)
        _stored_once(tmp_path / f"p{i}")
        with open(tmp_path / f"p{i}" / "model.c") as f:
            src = f.read()
        assert src.count(".pk_in = &pk") == 2 and "MOEC_PAIR_LAYOUT_VERSION" in src
        plain = build_module(_inline(m), str(tmp_path / f"i{i}"), arch=arch, threads=2)
        with open(tmp_path / f"i{i}" / "model.c") as f:
            assert ".pk_in = NULL" in f.read()
        for M in (1, 2, 3, 4, 8, 19):
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            got, want = packed([x]), plain([x])
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w, err_msg=f"{arch} K={K} N={N} M={M}")
            ref = run(m, [x])
            for g, w in zip(got, ref.values()):
                assert np.abs(g - w).max() <= 1e-5 * np.sqrt(K) * max(1.0, np.abs(w).max()), (K, N, M)


@pytest.mark.parametrize("D,F", [(64, 96), (45, 38)])
def test_expert_panels_packed_at_compile_time_equal_the_runtime_packer(D, F, tmp_path):
    """moe.experts with bf16 weights: w_in [E, 2F, D] and w_out [E, D, F] as compile-time panels (in place for
    D = 64, F = 96; padded, at the end of the file, for D odd and F not a multiple of 32) give the same bits as the weights inline (packed
    per work item at run time), at 1 and 2 tokens (one or two rows per expert: decode) and 5 and 40."""
    rng = np.random.default_rng(7)
    E, k = 4, 2
    wi = rng.standard_normal((E, 2 * F, D)).astype(np.float32).astype(ml_dtypes.bfloat16)
    wo = rng.standard_normal((E, D, F)).astype(np.float32).astype(ml_dtypes.bfloat16)
    m = experts_module("bf16", wi, wo, [], "T", D, E, k)
    packed = build_module(m, str(tmp_path / "p"), threads=2)
    lay = [e.get("layout") for e in _index(tmp_path / "p").values() if e["dtype"] == "bf16"]
    assert len(lay) == 2 and all(v is not None for v in lay)
    _stored_once(tmp_path / "p")
    plain = build_module(_inline(m), str(tmp_path / "i"), threads=2)
    for T in (1, 2, 5, 40):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        got, want = packed([x, logits])[0], plain([x, logits])[0]
        np.testing.assert_array_equal(got, want, err_msg=f"T={T}")
        ref = run(m, [x, logits])["y"]
        assert np.abs(got - ref).max() <= 4e-6 * np.abs(ref).max() * np.sqrt(max(D, F)), T


def _shared_module(K, N):
    """y1 = x @ W, y2 = x @ W + b (two users of one weight), z = x @ V, and V's bf16 copy also an output of the
    quantised module (another reader of the plain weight)."""
    from moec.ir import WeightStore, parse_module
    from test_dense_quant import _tt
    rng = np.random.default_rng(11)
    ws = WeightStore()
    ws.set("w", rng.standard_normal((K, N)).astype(np.float32))
    ws.set("v", rng.standard_normal((K, N)).astype(np.float32))
    ws.set("b", rng.standard_normal((N,)).astype(np.float32))
    x, w, y = _tt(("M", K)), _tt((K, N)), _tt(("M", N))
    ops = [f'%w = "moec.constant"() {{value = dense_resource<w> : {w}}} : () -> {w}',
           f'%v = "moec.constant"() {{value = dense_resource<v> : {w}}} : () -> {w}',
           f'%b = "moec.constant"() {{value = dense_resource<b> : {_tt((N,))}}} : () -> {_tt((N,))}',
           f'%y1 = "moec.matmul"(%x, %w) : ({x}, {w}) -> {y}',
           f'%y0 = "moec.matmul"(%x, %w) : ({x}, {w}) -> {y}',
           f'%y2 = "moec.add"(%y0, %b) : ({y}, {_tt((N,))}) -> {y}',
           f'%z = "moec.matmul"(%x, %v) : ({x}, {w}) -> {y}']
    text = "\n".join(["module {", f'  func.func @main(%x: {x}) -> ({y}, {y}, {y}) attributes {{moec.inputs = ["x"], '
                      'moec.outputs = ["y1", "y2", "z"]} {', *("    " + o for o in ops),
                      f"    func.return %y1, %y2, %z : {y}, {y}, {y}", "  }", "}"])
    m = parse_module(text, ws)
    QuantizeWeights("bf16", 0, False, scope="all", dense_modes=("bf16",)).run(m)
    lq = [o for o in m.main.ops if o.name == "moec.linear_q"]
    assert len(lq) == 3 and lq[0].operands[1] is lq[1].operands[1] or \
        lq[0].operands[1].owner.attrs["value"].key == lq[1].operands[1].owner.attrs["value"].key
    vq = lq[2].operands[1]
    m.main.outputs.append(vq)
    m.main.output_names.append("v_bf16")
    return m, ws, vq.owner.attrs["value"].key


def test_weight_shared_by_two_consumers_and_a_plain_reader(tmp_path):
    """A bf16 weight two linear layers read is packed once, in place (one panel tensor bound, both layers on it);
    a weight another op also reads (here: returned as it is) keeps its plain bytes, its panels appended: that op
    gets the plain weight, the layer the panels; the artifact's module loads both weights plain."""
    K, N = 64, 64
    m, ws, vkey = _shared_module(K, N)
    d = tmp_path / "s"
    art = build_module(m, str(d), threads=2)
    index = _index(d)
    bf = {k: e for k, e in index.items() if e["dtype"] == "bf16"}
    assert len(bf) == 2
    assert bf[vkey].get("layout") is None
    (wkey,) = [k for k in bf if k != vkey]
    assert bf[wkey]["layout"] == {"kind": "bf16_pairs", "nr": 32, "version": PAIR_LAYOUT_VERSION}
    with open(d / "model.c") as f:
        src = f.read()
    assert src.count("moec_bind_weight(&pk") == 2  # w's panels (in place) once, v's appended panels
    appended = os.path.getsize(d / "model.weights.bin") - max(e["offset"] + e["nbytes"] for e in index.values())
    assert 0 < appended <= K * N * 2 + 64  # v's panels only (w's took w's place)
    x = np.random.default_rng(1).standard_normal((5, K)).astype(np.float32)
    y1, y2, z, vb = art([x])
    want = run(m, [x])
    for g, (name, w) in zip((y1, y2, z, vb), want.items()):
        if name == "v_bf16":
            assert g.dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(g, w)
        else:
            assert np.abs(g - w).max() <= 1e-5 * np.sqrt(K) * max(1.0, np.abs(w).max()), name
    np.testing.assert_array_equal(y1 + ws["b"], y2)
    m2 = load_module(str(d / "model.mlir"))
    for k in bf:
        np.testing.assert_array_equal(np.asarray(m2.weights[k]), np.asarray(m.weights[k]))


def test_mismatched_layout_version_is_refused_when_loaded(tmp_path):
    """An artifact whose weights file holds pair panels of another layout version (or an unknown layout) is refused
    by the loader with one clear line (cache_store.Damaged: the JIT cache discards and rebuilds such an entry;
    `moec run` exits 2), and its module does not load either: never run on weights it would misread."""
    from moec.ir.parser import IRParseError
    from moec.targets.cache_store import Damaged
    from moec.targets.cpu_backend import CpuArtifact
    d = tmp_path / "a"
    build_module(_dense(64, 96, seed=0), str(d), threads=1)
    index = _index(d)
    assert sum("layout" in e for e in index.values()) == 2
    CpuArtifact(str(d))  # (loads as built)
    for bad in ({"version": PAIR_LAYOUT_VERSION + 1}, {"nr": 16}, {"kind": "bf16_pairs_v9"}):
        idx = json.loads(json.dumps(index))
        for e in idx.values():
            if "layout" in e:
                e["layout"].update(bad)
        with open(d / "model.weights.json", "w") as f:
            json.dump(idx, f)
        with pytest.raises(Damaged, match="recompile") as ei:
            CpuArtifact(str(d))
        assert "\n" not in str(ei.value)
        with pytest.raises(IRParseError):
            load_module(str(d / "model.mlir"))
    from moec.cli import main
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    assert main(["run", str(d), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "r")]) == 2


@pytest.mark.parametrize("arch,D,F", [("native", 64, 96), ("native", 45, 38), ("generic", 45, 38),
                                        pytest.param("avx2", 64, 96, marks=pytest.mark.slow)])
def test_f32_expert_panels_packed_at_compile_time(arch, D, F, tmp_path):
    """f32 moe.experts: w_in / w_out stored as the f32 kernels' k-panels (in place when I and D are multiples of 32,
    else padded at the end of the file; one copy either way): prefill (every expert above two rows) gives the same bits as the weights inline (packed per
    work item at run time, as the run-time cache packed them before); decode (one or two rows per expert) reads
    the same panels (tile_dec: another order of the f32 sums than the row GEMV it replaces) and matches numpy
    in float64; the module reloads the plain weights."""
    rng = np.random.default_rng(5)
    E, k = 4, 2
    wi = rng.standard_normal((E, 2 * F, D)).astype(np.float32)
    wo = rng.standard_normal((E, D, F)).astype(np.float32)
    m = experts_module("none", wi, wo, [], "T", D, E, k)
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    d = tmp_path / "p"
    packed = build_module(m, str(d), arch=arch, threads=2)
    index = _index(d)
    lay = {k2: e.get("layout") for k2, e in index.items() if list(e["shape"]) in ([E, 2 * F, D], [E, D, F])}
    assert len(lay) == 2
    assert all(v == {"kind": "f32_k_panels", "nr": 32, "version": 1} for v in lay.values()), lay
    _stored_once(d)
    with open(d / "model.c") as f:
        assert "moec_wq wq" in f.read()
    plain = build_module(_inline(m), str(tmp_path / "i"), arch=arch, threads=2)
    for T in (1, 2, 40):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        got, want = packed([x, logits])[0], plain([x, logits])[0]
        ref = run(m, [x, logits])["y"]
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max() * np.sqrt(max(D, F)), T
        if T == 40:
            np.testing.assert_array_equal(got, want)
    m2 = load_module(str(d / "model.mlir"))
    for k2 in lay:
        np.testing.assert_array_equal(np.asarray(m2.weights[k2]), np.asarray(m.weights[k2]))


@pytest.mark.parametrize("weights", ["bf16", pytest.param("f32", marks=pytest.mark.slow)])
def test_panels_read_in_place_are_sanitizer_clean(weights, tmp_path):
    """A Mixtral-like model (D = 16, I = 48: every panel padded past N) with bf16 (every linear layer) or f32
    weights under AddressSanitizer + UBSan: the kernels read only inside the compile-time panels, at 1, 5 and
    7 identical tokens (experts with no, one, two and several rows); the same results as the plain build."""
    import sys
    from moec.driver import CompileOptions, compile_onnx
    from moec.targets.cpu_backend import CpuArtifact
    from moec.targets.cpu_harness import build_harness, run_harness
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from build_mixtral_like import build
    model = build(hidden=16, ffn=24, experts=4, top_k=2)
    out = str(tmp_path / "a")
    compile_onnx(model, out, CompileOptions(verify=False, weights=weights))
    assert {e["layout"]["kind"] for e in _index(out).values() if "layout" in e} >= \
        ({"bf16_pairs"} if weights == "bf16" else {"f32_k_panels"})
    _stored_once(out)
    exe = build_harness(out, sanitize=True)
    art = CpuArtifact(out, threads=2)
    rng = np.random.default_rng(2)
    for T in (1, 5, 7):
        x = rng.standard_normal((T, 16)).astype(np.float32)
        if T == 7:
            x[:] = x[0]
        got, want = run_harness(exe, out, [x], 1)[0], art([x])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["bf16", "f32"])
def test_weights_after_a_moved_one_are_found(mode, tmp_path):
    """Weights whose panels are padded move to the end of the file and the file is compacted: the panels stored
    in place after such a weight (keys sort after it) shift too, and the kernels must read them where they now
    are.  x @ Wa (N = 40: padded panels, moved) then x @ Wb, x @ Wc (N = 64: in place), f32 (the GEMM's panels) and
    bf16 (pair panels), against the op semantics."""
    from moec.ir import WeightStore, parse_module
    from test_dense_quant import _tt
    K = 64
    rng = np.random.default_rng(13)
    ws = WeightStore()
    shapes = {"a": (K, 40), "b": (K, 64), "c": (K, 64)}
    for k2, sh in shapes.items():
        ws.set(k2, rng.standard_normal(sh).astype(np.float32))
    x = _tt(("M", K))
    ops = [f'%{k2} = "moec.constant"() {{value = dense_resource<{k2}> : {_tt(sh)}}} : () -> {_tt(sh)}'
           for k2, sh in shapes.items()]
    ops += [f'%y{k2} = "moec.matmul"(%x, %{k2}) : ({x}, {_tt(sh)}) -> {_tt(("M", sh[1]))}' for k2, sh in shapes.items()]
    outs = ", ".join(_tt(("M", sh[1])) for sh in shapes.values())
    text = "\n".join(["module {", f'  func.func @main(%x: {x}) -> ({outs}) attributes {{moec.inputs = ["x"], '
                      'moec.outputs = ["ya", "yb", "yc"]} {', *("    " + o for o in ops),
                      f"    func.return %ya, %yb, %yc : {outs}", "  }", "}"])
    m = parse_module(text, ws)
    if mode == "bf16":
        QuantizeWeights("bf16", 0, False, scope="all", dense_modes=("bf16",)).run(m)
    d = tmp_path / mode
    art = build_module(m, str(d), threads=2)
    index = {k2: e for k2, e in _index(d).items() if e["dtype"] == mode}  # (the f32 originals stay unused)
    assert all("layout" in e for e in index.values()) and len(index) == 3, index
    first = min(index, key=lambda k2: index[k2]["offset"])
    assert index[first]["shape"][0 if mode == "bf16" else 1] == 64  # (the in-place ones now come first)
    _stored_once(d)
    for M in (1, 2, 9):
        xv = rng.standard_normal((M, K)).astype(np.float32)
        for g, w in zip(art([xv]), run(m, [xv]).values()):
            assert np.abs(g - w).max() <= 1e-5 * np.sqrt(K) * max(1.0, np.abs(w).max()), (mode, M)


def test_w8a8_int8_panels_packed_at_compile_time(tmp_path):
    """w8a8 (int8 weights, dynamic int8 activations): moec.linear_q's and moe.experts' int8 weights stored as the int8
    panels tile_i8 reads (codes in vpdpbusd order plus each column's code sum: larger than the weight, so the
    panels become its entry at the end of the file, the plain codes dropped); the same bits as the weights inline
    (packed per work item at run time), at 1, 2, 5 and 19 rows / 1, 2 and 40 tokens; the module reloads the codes."""
    from test_dense_quant import _module, _weights
    for i, (K, N) in enumerate([(37, 45), (64, 96)]):
        m = _module(K, N, _weights(K, N, i))
        QuantizeWeights("w8a8", 0, False, scope="all", dense_modes=("w8a8",)).run(m)
        d = tmp_path / f"d{i}"
        packed = build_module(m, str(d), threads=2)
        i8 = {k2: e for k2, e in _index(d).items() if e["dtype"] == "i8"}
        assert len(i8) == 2 and all(e["layout"]["kind"] == "i8_panels" for e in i8.values()), i8
        _stored_once(d)
        plain = build_module(_inline(m, set(i8)), str(tmp_path / f"i{i}"), threads=2)
        for M in (1, 2, 5, 19):
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            for g, w in zip(packed([x]), plain([x])):
                np.testing.assert_array_equal(g, w, err_msg=f"K={K} N={N} M={M}")
        m2 = load_module(str(d / "model.mlir"))
        for k2 in i8:
            np.testing.assert_array_equal(np.asarray(m2.weights[k2]), np.asarray(m.weights[k2]))
    rng = np.random.default_rng(8)
    E, D, F = 4, 45, 38
    wi = rng.integers(-127, 128, (E, 2 * F, D)).astype(np.int8)
    wo = rng.integers(-127, 128, (E, D, F)).astype(np.int8)
    si = (rng.random((E, 2 * F)) * 0.01 + 0.001).astype(np.float32)
    so = (rng.random((E, D)) * 0.01 + 0.001).astype(np.float32)
    m = experts_module("int8", wi, wo, [si, so], "T", D, E, 2, aq="int8")
    packed = build_module(m, str(tmp_path / "x"), threads=2)
    assert sum(e.get("layout", {}).get("kind") == "i8_panels" for e in _index(tmp_path / "x").values()) == 2
    _stored_once(tmp_path / "x")
    keys = {o.attrs["value"].key for o in m.main.ops if o.name == "moec.constant" and o.results[0].type.dtype.mlir == "i8"}
    plain = build_module(_inline(m, keys), str(tmp_path / "xi"), threads=2)
    for T in (1, 2, 40):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        np.testing.assert_array_equal(packed([x, logits])[0], plain([x, logits])[0], err_msg=f"T={T}")

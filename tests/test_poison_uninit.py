"""The poison mode of the C runtime's uninitialised outputs (moec_alloc_uninit, codegen/c/runtime/rt_core.c).

Kernels that write every element of their output allocate it without zeroing; a kernel that forgets one would
return whatever the allocator recycled, usually a lucky 0.  Test builds (-DMOEC_POISON_UNINIT: the sanitize builds,
and the suite's ordinary builds through MOEC_POISON_UNINIT=1, set in conftest.py) fill those blocks with 0xFF bytes,
so a forgotten element reads as NaN / -1 and fails the comparison.  These tests check the switch (on in tests, off in
a user's build, part of the cache key), the fill itself through the runtime archive a test build links (a fake
kernel that leaves elements unwritten), and the edge paths of the kernels switched to moec_alloc_uninit (empty
reductions, empty operands, broadcasts) against onnxruntime under poison.
"""
import os
import subprocess

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets import cpu
from moec.targets.description import cpu_target
from moec.targets.registry import CpuArtifact


def test_poison_is_on_in_test_builds_off_in_user_builds_and_keyed(monkeypatch):
    t = cpu_target("native")
    assert os.environ.get("MOEC_POISON_UNINIT") == "1"  # (conftest.py)
    on, on_key = cpu.cflags_for(t), cpu.runtime_key(t)
    assert cpu.POISON_FLAG in on
    for off in (None, "", "0"):
        if off is None:
            monkeypatch.delenv("MOEC_POISON_UNINIT")
        else:
            monkeypatch.setenv("MOEC_POISON_UNINIT", off)
        assert cpu.POISON_FLAG not in cpu.cflags_for(t)  # a user's build: no fill, same flags as before
        assert cpu.runtime_key(t) != on_key              # never shares a cached archive with a poisoned one
        assert cpu.POISON_FLAG in cpu.cflags_for(t, sanitize=True)  # the ASan / UBSan builds always poison


FAKE_KERNEL = r"""
#include "moec_rt.h"
#include <stdio.h>
#include <string.h>

/* a kernel that "forgets" its last element, beside one that writes every element */
static int forgetful(moec_ctx *ctx, moec_tensor *y, int dtype, int64_t n) {
  if (moec_alloc_uninit(ctx, y, dtype, 1, &n)) return -1;
  for (int64_t i = 0; i + 1 < n; i++) moec_set_f64(y, i, (double)(i + 1));
  return 0;
}

int main(void) {
  moec_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.nthreads = 1;
  moec_tensor f = {0}, d = {0}, z = {0}, p = {0};
  for (int round = 0; round < 2; round++) { /* (the second round gets the first's recycled blocks) */
    if (forgetful(&ctx, &f, MOEC_F32, 5) || forgetful(&ctx, &d, MOEC_I64, 3)) return 1;
    int64_t n = 5;
    if (moec_alloc(&ctx, &z, MOEC_F32, 1, &n) || moec_alloc_uninit(&ctx, &p, MOEC_I4, 1, &n)) return 1;
    uint32_t fb;
    memcpy(&fb, (const char *)f.data + 16, 4);
    int pad_zero = 1;
#if !defined(__SANITIZE_ADDRESS__) /* (under ASan the block is the data's exact size) */
    const unsigned char *pad = (const unsigned char *)f.data + 20; /* (f's block is 64 bytes: 20 of data) */
    for (int i = 0; i < 44; i++) pad_zero &= pad[i] == 0;
#endif
    printf("f32 %g %g %08x isnan=%d pad_zero=%d\n", moec_get_f64(&f, 0), moec_get_f64(&f, 3), fb,
           moec_get_f64(&f, 4) != moec_get_f64(&f, 4), pad_zero);
    printf("i64 %lld %lld\n", (long long)moec_get_i64(&d, 1), (long long)moec_get_i64(&d, 2));
    printf("zeroed %g packed %02x%02x%02x\n", moec_get_f64(&z, 4), ((unsigned char *)p.data)[0],
           ((unsigned char *)p.data)[1], ((unsigned char *)p.data)[2]);
    moec_release(&f); moec_release(&d); moec_release(&z); moec_release(&p);
  }
  return 0;
}
"""


def _run_fake_kernel(tmp_path, sanitize=False):
    """The fake kernel linked with the runtime archive a (test) build of this host uses, its flags unchanged."""
    t = cpu_target("native")
    rt = cpu.build_runtime(t, sanitize)
    src, exe = tmp_path / "fake.c", tmp_path / ("fake_asan" if sanitize else "fake")
    src.write_text(FAKE_KERNEL)
    subprocess.run([cpu.cc(), *cpu.cflags_for(t, sanitize), "-I", cpu.RUNTIME_DIR, str(src), rt, "-o", str(exe),
                    "-lm"], check=True, capture_output=True, text=True)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


@pytest.mark.parametrize("sanitize", [False, True], ids=["test-build", "sanitize-build"])
def test_an_unwritten_element_reads_as_nan_or_minus_one(sanitize, tmp_path):
    lines = _run_fake_kernel(tmp_path, sanitize)
    assert len(lines) == 6
    for r in range(2):
        f32, i64, other = lines[3 * r:3 * r + 3]
        # the written elements are the kernel's; the forgotten one is all-ones bits: a NaN, not a lucky 0
        assert f32.split()[1:3] == ["1", "4"] and f32.split()[3] == "ffffffff" and "isnan=1" in f32, f32
        assert "pad_zero=1" in f32, f32  # the padding past the data stays zero (none under ASan)
        assert i64 == "i64 2 -1", i64
        # moec_alloc still zeroes; packed i4 outputs are zeroed even by moec_alloc_uninit (set nibble by nibble)
        assert other == "zeroed 0 packed 000000", other


# -- the kernels switched to moec_alloc_uninit, on their edge paths, under poison -------------------------------

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def _edge_models():
    """(name, model, inputs): dynamic shapes, so the empty / K == 0 / broadcast paths run in the kernels."""
    ms = []
    ms.append(("matmul_k0_bias", make_model(
        [helper.make_node("MatMul", ["a", "b"], ["m"]), helper.make_node("Add", ["m", "c"], ["y"]),
         helper.make_node("Gemm", ["a", "b", "c"], ["g"], alpha=2.0, beta=0.5)],
        [("a", np.float32, ["M", "K"]), ("b", np.float32, ["K", "N"]), ("c", np.float32, ["N"])],
        [("y", np.float32, None), ("g", np.float32, None)]),
        {"a": np.zeros((3, 0), np.float32), "b": np.zeros((0, 5), np.float32),
         "c": np.arange(5, dtype=np.float32)}))
    ms.append(("batched_matmul_broadcast", make_model(
        [helper.make_node("MatMul", ["a", "b"], ["y"]), helper.make_node("Einsum", ["a", "b"], ["e"],
                                                                         equation="bmk,kn->bmn")],
        [("a", np.float32, ["B", "M", "K"]), ("b", np.float32, ["K", "N"])],
        [("y", np.float32, None), ("e", np.float32, None)]),
        {"a": np.random.default_rng(0).standard_normal((2, 3, 7)).astype(np.float32),
         "b": np.random.default_rng(1).standard_normal((7, 37)).astype(np.float32)}))
    ms.append(("concat_split_empty_parts", make_model(
        [helper.make_node("Concat", ["a", "e", "b"], ["c"], axis=1),
         helper.make_node("Split", ["c", "sz"], ["s0", "s1", "s2"], axis=1),
         helper.make_node("CumSum", ["c", "ax"], ["cs"]),
         helper.make_node("ReduceSum", ["c", "ax"], ["rs"], keepdims=1),
         helper.make_node("Softmax", ["c"], ["sm"], axis=1)],
        [("a", np.float32, [2, "A"]), ("e", np.float32, [2, "E"]), ("b", np.float32, [2, "B"]),
         ("sz", np.int64, [3]), ("ax", np.int64, [1])],
        [("s0", np.float32, None), ("s1", np.float32, None), ("s2", np.float32, None), ("cs", np.float32, None),
         ("rs", np.float32, None), ("sm", np.float32, None)]),
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "e": np.zeros((2, 0), np.float32),
         "b": -np.arange(4, dtype=np.float32).reshape(2, 2), "sz": np.array([0, 4, 1], np.int64),
         "ax": np.array([1], np.int64)}))
    ms.append(("index_ops", make_model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1),
         helper.make_node("ArgMax", ["x"], ["am"], axis=0, keepdims=0),
         helper.make_node("Gather", ["x", "gi"], ["g"], axis=1),
         helper.make_node("Expand", ["x", "shp"], ["ex"]),
         helper.make_node("Tile", ["x", "rep"], ["tl"]),
         helper.make_node("Cast", ["x"], ["ci"], to=I64)],
        [("x", np.float32, ["R", "C"]), ("k", np.int64, [1]), ("gi", np.int64, ["G"]), ("shp", np.int64, [3]),
         ("rep", np.int64, [2])],
        [("v", np.float32, None), ("i", np.int64, None), ("am", np.int64, None), ("g", np.float32, None),
         ("ex", np.float32, None), ("tl", np.float32, None), ("ci", np.int64, None)]),
        {"x": np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], np.float32), "k": np.array([3], np.int64),
         "gi": np.array([4, -1, 0], np.int64), "shp": np.array([2, 2, 5], np.int64),
         "rep": np.array([2, 3], np.int64)}))
    ms.append(("gather_nd_empty_index_tuples", _gather_nd_empty(), _GATHER_ND_FEEDS))
    return ms


# GatherND with empty index tuples (indices' last dim 0): each tuple selects the whole block after the batch dims
# (a kernel that counted index tuples as numel / q wrote nothing there and returned zeros)
_GATHER_ND_FEEDS = {"d": np.arange(12, dtype=np.float32).reshape(2, 3, 2) + 1, "i0": np.zeros((4, 0), np.int64),
                    "i1": np.zeros((2, 5, 0), np.int64)}


def _gather_nd_empty():
    return make_model([helper.make_node("GatherND", ["d", "i0"], ["g0"]),
                       helper.make_node("GatherND", ["d", "i1"], ["g1"], batch_dims=1)],
                      [("d", np.float32, [2, 3, 2]), ("i0", np.int64, [4, 0]), ("i1", np.int64, [2, 5, 0])],
                      [("g0", np.float32, None), ("g1", np.float32, None)])


def test_gather_nd_empty_index_tuples_verify_on_the_reference_target(tmp_path):
    """The op's numpy reference semantics agree with onnxruntime there too (the reference target's verify)."""
    from moec.cli import main
    path = str(tmp_path / "g.onnx")
    import onnx
    onnx.save(_gather_nd_empty(), path)
    out = tmp_path / "out"
    assert main(["compile", path, "--target", "reference", "-o", str(out)]) == 0
    import json
    assert json.load(open(out / "report.json"))["verified"]


@pytest.mark.parametrize("name,model,feeds", _edge_models(), ids=[m[0] for m in _edge_models()])
def test_switched_kernels_write_every_element_on_edge_paths(name, model, feeds, tmp_path):
    out = str(tmp_path / name)
    compile_onnx(model, out, CompileOptions(verify=False, force=True))
    so = ort.SessionOptions()
    so.log_severity_level = 4
    want = ort.InferenceSession(model.SerializeToString(), so).run(None, feeds)
    got = CpuArtifact(out)([feeds[i.name] for i in model.graph.input])
    assert len(got) == len(want)
    for g, w, o in zip(got, want, model.graph.output):
        assert g.shape == w.shape, (o.name, g.shape, w.shape)
        assert not (np.issubdtype(g.dtype, np.floating) and np.isnan(g).any()), (o.name, g)  # (no poison left)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=o.name)


def _experts_module(k, route):
    """x -> route (``route``: attributes that drop slots, id -1) -> dispatch -> moe.experts, whose [T, k, D] output is
    the function's: the dropped slots' rows are observed directly (a combine would weight them by 0 or pass x)."""
    from moec.ir import WeightStore, parse_module, verify_module
    D, F, E = 16, 24, 8
    rng = np.random.default_rng(0)
    ws = WeightStore()
    ws.set("wr", (rng.standard_normal((D, E)) / 3).astype(np.float32))
    ws.set("w_in", (rng.standard_normal((E, 2 * F, D)) / 4).astype(np.float32))
    ws.set("w_out", (rng.standard_normal((E, D, F)) / 5).astype(np.float32))
    X, L = 'tensor<?x16xf32, "T">', 'tensor<?x8xf32, "T">'
    W, ID, Y = f'tensor<?x{k}xf32, "T">', f'tensor<?x{k}xi64, "T">', f'tensor<?x{k}x16xf32, "T">'
    text = "\n".join([
        'module {',
        f'  func.func @main(%x: {X}) -> ({Y}) attributes {{moec.inputs = ["x"], moec.outputs = ["y"]}} {{',
        '    %wr = "moec.constant"() {value = dense_resource<wr> : tensor<16x8xf32>} : () -> tensor<16x8xf32>',
        '    %w_in = "moec.constant"() {value = dense_resource<w_in> : tensor<8x48x16xf32>} : () -> tensor<8x48x16xf32>',
        '    %w_out = "moec.constant"() {value = dense_resource<w_out> : tensor<8x16x24xf32>} : () -> tensor<8x16x24xf32>',
        f'    %logits = "moec.matmul"(%x, %wr) : ({X}, tensor<16x8xf32>) -> {L}',
        f'    %r:2 = "moe.route"(%logits) {{k = {k} : i64, {route}}} : ({L}) -> ({W}, {ID})',
        f'    %p:2 = "moe.dispatch"(%r#1) {{num_experts = 8 : i64, block = 1 : i64}} : ({ID}) -> (tensor<?xi64>, tensor<9xi64>)',
        f'    %y = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out) {{activation = "swiglu", gate_layout = "concat"}} : '
        f'({X}, {ID}, tensor<?xi64>, tensor<9xi64>, tensor<8x48x16xf32>, tensor<8x16x24xf32>) -> {Y}',
        f'    func.return %y : {Y}', '  }', '}']) + "\n"
    m = parse_module(text, ws)
    verify_module(m)
    return m


@pytest.mark.parametrize("k,route", [(1, "capacity = 2 : i64"), (2, "drop = true, min_weight = 0.2 : f64")],
                         ids=["capacity", "min_weight"])
def test_dropped_expert_slots_are_zero_not_poison(k, route, tmp_path):
    """The f32 experts kernel allocates its output without zeroing and zeroes only the rows of slots it does not
    compute: a dropped slot's row must be exactly 0 (the reference's), never the poison."""
    from moec.driver import build_module
    from moec.ir import run
    m = _experts_module(k, route)
    art = build_module(m, str(tmp_path / "out"))
    for T in (12, 1, 40):  # (40 tokens: above the GEMV row count, the prefill tiles)
        x = np.random.default_rng(T).standard_normal((T, 16)).astype(np.float32)
        want = run(m, {"x": x})["y"]
        got = art([x])[0]
        dropped = np.all(want == 0, axis=-1)  # (the reference's dropped slots: rows of zeros)
        assert T < 8 or dropped.any(), "the route should drop some slots"
        assert not np.isnan(got).any()
        np.testing.assert_array_equal(got[dropped], 0)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"k={k} T={T}")

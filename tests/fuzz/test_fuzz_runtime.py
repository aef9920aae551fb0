"""Run-time fuzzing of the C runtime (issue 15): small compiled models whose shapes and indices are
run-time values (Reshape, Slice, Gather, Range, Expand, Tile, ConstantOfShape, TopK,
ScatterElements, NonZero, symbolic and data-dependent shapes) are fed random and extreme values
(negative, huge, INT64 extremes) and compared with onnxruntime.  Every case must either match
onnxruntime exactly or, where onnxruntime refuses too, be refused by moec with a RuntimeFailure;
the one allowed difference is moec's documented size limit (2^40 elements counting a 0 as 1), where
onnxruntime accepts a zero-size tensor with an absurd dimension.  Never a crash, a traceback or
garbage.

Quick subset by default; `MOEC_FUZZ_LONG=1 python -m pytest -q -m slow tests/fuzz` runs >= 1,000
cases in-process and a few hundred more under ASan + UBSan (the sanitized harness executable)."""
import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.errors import MoecError, RuntimeFailure
from moec.targets.registry import CpuArtifact

LONG = bool(os.environ.get("MOEC_FUZZ_LONG"))
I64, F32 = np.int64, np.float32
MIN, MAX = int(np.iinfo(I64).min), int(np.iinfo(I64).max)
EXTREMES = [MIN, MIN + 1, -2**62, -2**40, -2**31 - 1, -2**31, -7, -3, -2, -1, 0, 1, 2, 3, 4, 5, 7, 8, 2**31 - 1, 2**31,
            2**40, 2**40 + 1, 2**62, 2**62 + 1, MAX - 1, MAX]


def _int(rng, lo=-3, hi=9):
    """Mostly small values (so many cases are valid), often an extreme one, sometimes any int64."""
    r = rng.random()
    if r < 0.6:
        return int(rng.integers(lo, hi))
    if r < 0.9:
        return int(rng.choice(EXTREMES))
    return int(rng.integers(MIN, MAX, dtype=I64, endpoint=True))


def _ints(rng, n, **kw):
    return np.array([_int(rng, **kw) for _ in range(n)], I64)


def _floats(rng, shape):
    x = rng.standard_normal(shape).astype(F32)
    if x.size and rng.random() < 0.3:  # ties
        x.flat[rng.integers(0, x.size, x.size // 2 + 1)] = x.flat[0]
    return x


def _T(rng):
    return int(rng.choice([0, 1, 2, 3, 5, 8]))


# -- the model families: (model, input generator) ---------------------------------------------------

def _families():
    fam = {}
    fam["reshape_gather"] = (
        make_model([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Gather", ["r", "i"], ["y"], axis=0)],
                   [("x", F32, ["n", 4]), ("s", I64, [2]), ("i", I64, ["k"])], [("y", F32, ["k", "m"])]),
        lambda rng, T: [_floats(rng, (T, 4)), _ints(rng, 2), _ints(rng, int(rng.integers(0, 4)))])
    fam["reshape_slice"] = (
        make_model([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Slice", ["r", "st", "en", "ax", "sp"], ["y"])],
                   [("x", F32, ["n", 4]), ("s", I64, [2]), ("st", I64, [2]), ("en", I64, [2]), ("ax", I64, [2]), ("sp", I64, [2])],
                   [("y", F32, ["a", "b"])]),
        lambda rng, T: [_floats(rng, (T, 4)), _ints(rng, 2), _ints(rng, 2), _ints(rng, 2),
                        np.array(rng.permutation([0, 1]) - 2 * int(rng.integers(0, 2)), I64) if rng.random() < 0.9
                        else _ints(rng, 2), _ints(rng, 2)])
    fam["slice_1d"] = (
        make_model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
                   [("x", F32, ["n"]), ("st", I64, [1]), ("en", I64, [1]), ("ax", I64, [1]), ("sp", I64, [1])],
                   [("y", F32, ["m"])]),
        lambda rng, T: [_floats(rng, (T,)), _ints(rng, 1), _ints(rng, 1), np.array([int(rng.choice([0, -1]))], I64),
                        _ints(rng, 1)])
    fam["range_i64"] = (
        make_model([helper.make_node("Range", ["s", "l", "d"], ["y"])], [("s", I64, []), ("l", I64, []), ("d", I64, [])],
                   [("y", I64, ["n"])]),
        lambda rng, T: [np.array(_int(rng, -20, 20), I64), np.array(_int(rng, -20, 20), I64),
                        np.array(_int(rng) if rng.random() < 0.5 else
                                 int(rng.choice([MIN, MAX, 2**61, -2**61, 2**62, -2**62])), I64)])
    fam["range_f32"] = (
        make_model([helper.make_node("Range", ["s", "l", "d"], ["y"])], [("s", F32, []), ("l", F32, []), ("d", F32, [])],
                   [("y", F32, ["n"])]),
        lambda rng, T: [np.array(v, F32) for v in (
            rng.choice([rng.uniform(-50, 50), 0.0, np.inf, -np.inf, np.nan, 3e38]),
            rng.choice([rng.uniform(-50, 50), 0.0, np.inf, np.nan, -3e38]),
            rng.choice([rng.uniform(-3, 3), 0.0, 0.1, -0.25, 1e-30, np.inf, np.nan]))])
    fam["expand"] = (
        make_model([helper.make_node("Expand", ["x", "s"], ["y"])], [("x", F32, ["n", 1]), ("s", I64, [3])],
                   [("y", F32, ["a", "b", "c"])]),
        lambda rng, T: [_floats(rng, (T, 1)), _ints(rng, 3, lo=-1, hi=6)])
    fam["tile"] = (
        make_model([helper.make_node("Tile", ["x", "r"], ["y"])], [("x", F32, ["n", 3]), ("r", I64, [2])],
                   [("y", F32, ["a", "b"])]),
        lambda rng, T: [_floats(rng, (T, 3)), _ints(rng, 2, lo=-1, hi=5)])
    fam["constant_of_shape"] = (
        make_model([helper.make_node("ConstantOfShape", ["s"], ["y"], value=helper.make_tensor("v", 1, [1], [2.5]))],
                   [("s", I64, [3])], [("y", F32, ["a", "b", "c"])]),
        lambda rng, T: [_ints(rng, 3, lo=-1, hi=6)])
    fam["topk"] = (
        make_model([helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1)], [("x", F32, ["n", 6]), ("k", I64, [1])],
                   [("v", F32, ["n", "k"]), ("i", I64, ["n", "k"])]),
        lambda rng, T: [_floats(rng, (T, 6)), _ints(rng, 1, lo=-1, hi=8)])
    fam["scatter_gather_elements"] = (
        make_model([helper.make_node("ScatterElements", ["d", "i", "u"], ["s"], axis=1),
                    helper.make_node("GatherElements", ["s", "i"], ["g"], axis=1)],
                   [("d", F32, ["n", 5]), ("i", I64, ["n", 3]), ("u", F32, ["n", 3])],
                   [("s", F32, ["n", 5]), ("g", F32, ["n", 3])]),
        lambda rng, T: [_floats(rng, (T, 5)), np.array([[_int(rng, -5, 5) for _ in range(3)] for _ in range(T)], I64).reshape(T, 3),
                        _floats(rng, (T, 3))])
    fam["nonzero_gathernd"] = (
        make_model([helper.make_node("Greater", ["x", "t"], ["m"]), helper.make_node("NonZero", ["m"], ["nz"]),
                    helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
                    helper.make_node("GatherND", ["x", "idx"], ["y"]),
                    helper.make_node("Shape", ["y"], ["ys"]),
                    helper.make_node("ConstantOfShape", ["ys"], ["z"], value=helper.make_tensor("v", 7, [1], [1]))],
                   [("x", F32, ["n", 4]), ("t", F32, [])], [("y", F32, ["k"]), ("z", I64, ["k"])]),
        lambda rng, T: [_floats(rng, (T, 4)), np.array(rng.choice([-10.0, 0.0, 0.5, 10.0, np.nan]), F32)])
    fam["shape_arith_reshape"] = (  # a symbolic reshape target computed from the input's own shape
        make_model([helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Mul", ["sh", "f"], ["sh2"]),
                    helper.make_node("Div", ["sh2", "f"], ["sh3"]), helper.make_node("Add", ["sh3", "o"], ["sh4"]),
                    helper.make_node("Reshape", ["x", "sh4"], ["y"])],
                   [("x", F32, ["n", 6]), ("f", I64, [2]), ("o", I64, [2])], [("y", F32, ["a", "b"])]),
        lambda rng, T: [_floats(rng, (T, 6)), _ints(rng, 2, lo=1, hi=4), _ints(rng, 2, lo=-1, hi=2)])
    fam["onehot"] = (
        make_model([helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=-1)],
                   [("i", I64, ["n", 2]), ("d", I64, []), ("v", F32, [2])], [("y", F32, ["n", 2, "k"])]),
        lambda rng, T: [np.array([[_int(rng, -6, 6) for _ in range(2)] for _ in range(T)], I64).reshape(T, 2),
                        np.array(_int(rng, 0, 6), I64), np.array([0.5, 2.0], F32)])
    fam["cumsum_i64"] = (
        make_model([helper.make_node("CumSum", ["x", "a"], ["y"], exclusive=0, reverse=1)],
                   [("x", I64, ["n", 3]), ("a", I64, [])], [("y", I64, ["n", 3])]),
        lambda rng, T: [np.array([[_int(rng, -9, 9) for _ in range(3)] for _ in range(T)], I64).reshape(T, 3),
                        np.array(_int(rng, -3, 3), I64)])
    fam["split_concat"] = (
        make_model([helper.make_node("Split", ["x", "s"], ["a", "b"], axis=1),
                    helper.make_node("Concat", ["b", "a", "b"], ["y"], axis=1)],
                   [("x", F32, ["n", 6]), ("s", I64, [2])], [("y", F32, ["n", "m"])]),
        lambda rng, T: [_floats(rng, (T, 6)), (lambda a: np.array([a, 6 - a], I64))(int(rng.integers(0, 7)))
                        if rng.random() < 0.6 else _ints(rng, 2, lo=-1, hi=7)])
    fam["unsqueeze_squeeze"] = (
        make_model([helper.make_node("Unsqueeze", ["x", "a"], ["u"]), helper.make_node("Squeeze", ["u", "b"], ["y"])],
                   [("x", F32, ["n", 3]), ("a", I64, [2]), ("b", I64, [1])], [("y", F32, ["p", "q", "r"])]),
        lambda rng, T: [_floats(rng, (T, 3)), _ints(rng, 2, lo=-4, hi=4), _ints(rng, 1, lo=-4, hi=4)])
    fam["reduce_sum_i64"] = (
        make_model([helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=0)],
                   [("x", I64, ["n", 3]), ("a", I64, [1])], [("y", I64, ["m"])]),
        lambda rng, T: [np.array([[_int(rng, -9, 9) for _ in range(3)] for _ in range(T)], I64).reshape(T, 3),
                        _ints(rng, 1, lo=-2, hi=2)])
    fam["gather_axis1_trilu"] = (
        make_model([helper.make_node("Gather", ["x", "i"], ["g"], axis=1), helper.make_node("Trilu", ["g", "k"], ["y"], upper=0)],
                   [("x", F32, ["n", 5]), ("i", I64, [4]), ("k", I64, [])], [("y", F32, ["n", 4])]),
        lambda rng, T: [_floats(rng, (T, 5)), _ints(rng, 4, lo=-5, hi=5), np.array(_int(rng, -3, 3), I64)])
    fam["gathernd_scatternd"] = (
        make_model([helper.make_node("GatherND", ["x", "i"], ["g"]),
                    helper.make_node("ScatterND", ["x", "i", "g"], ["y"], reduction="add")],
                   [("x", F32, ["n", 4]), ("i", I64, ["k", 2])], [("g", F32, ["k"]), ("y", F32, ["n", 4])]),
        lambda rng, T: [_floats(rng, (T, 4)),
                        np.array([[_int(rng, -T - 1, T + 1), _int(rng, -5, 5)] for _ in range(int(rng.integers(0, 4)))],
                                 I64).reshape(-1, 2)])
    return fam


FAMILIES = _families()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_rt")
    out = {}
    for name, (model, gen) in FAMILIES.items():
        art_dir = str(d / name)
        compile_onnx(model, art_dir, CompileOptions(verify=False, force=True))
        so = ort.SessionOptions()
        so.log_severity_level = 4
        out[name] = (model, gen, art_dir, CpuArtifact(art_dir), ort.InferenceSession(model.SerializeToString(), so))
    return out


def _same(g, w):
    if g.shape != w.shape or g.dtype != w.dtype:
        return False
    return bool(np.array_equal(g, w, equal_nan=np.issubdtype(g.dtype, np.floating)))


def _exact_int_sum(x, axis):
    with np.errstate(over="ignore"):
        return np.sum(x, axis=axis, dtype=np.int64)  # (wraps like moec's unsigned accumulation)


def known_divergence(name, xs, ort_err, got=None):
    """The narrow, documented cases where onnxruntime's answer is not the reference:
    - its own output-size caps (e.g. Tile: "would require more than 4294967296 bytes"), counted with a
      0 dim ignored, where moec returns the (empty or small) correct result;
    - TopK reads k as a 32-bit value: k = 2^62 + 1 runs as k = 1 there; moec refuses k > dim;
    - CumSum on an empty input does not check its axis there; moec refuses a bad axis always;
    - int64 ReduceSum goes through double there (bits above 2^53 lost); moec's sum is exact (numpy's);
    - int64 Range whose limit - start overflows int64 is a SafeInt exception there; moec's is exact."""
    if ort_err and "exceeds the supported maximum" in ort_err:
        return "ort_size_cap"
    if name == "topk" and not -2**31 <= int(xs[1][0]) < 2**32:
        return "ort_topk_k_truncated"
    if name == "cumsum_i64" and xs[0].size == 0 and ort_err is None and got is None:
        return "ort_cumsum_empty_axis_unchecked"
    if name == "range_i64" and got is not None and ort_err and "Integer overflow" in ort_err:
        st, lim, d = (int(v) for v in xs)  # onnxruntime's SafeInt trips on limit - start; the exact range:
        n = max(0, -((st - lim) // d))
        with np.errstate(over="ignore"):
            exact = np.int64(st) + np.arange(n, dtype=np.int64) * np.int64(d)  # (exact mod 2^64, all in range)
        if np.array_equal(got[0], exact):
            return "ort_range_safeint"
    if name == "reduce_sum_i64" and got is not None and np.abs(xs[0].astype(np.float64)).max(initial=0) > 2**53:
        a = int(xs[1][0])
        if -2 <= a < 2 and np.array_equal(got[0], _exact_int_sum(xs[0], a)):
            return "ort_int64_sum_through_double"
    return None


class _MemoryCap:
    """Address-space cap (current size + 3 GiB) while a case runs in this process: a hostile size
    below the runtime's 2^40-element limit must fail as "out of memory" (in moec and in onnxruntime)
    instead of being zero-filled into the machine's RAM until the OOM killer ends the test run."""

    def __enter__(self):
        import resource
        with open("/proc/self/status") as f:
            vm = int(f.read().split("VmSize:")[1].split()[0]) * 1024
        self.old = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm + (3 << 30)
        if self.old[1] != resource.RLIM_INFINITY:
            cap = min(cap, self.old[1])
        resource.setrlimit(resource.RLIMIT_AS, (cap, self.old[1]))

    def __exit__(self, *exc):
        import resource
        resource.setrlimit(resource.RLIMIT_AS, self.old)


def classify(run, sess, model, xs, counts, bad, name="", cap_moec=True):
    """Run one case through moec (``run``) and onnxruntime; count the outcome."""
    names = [i.name for i in model.graph.input]
    ort_err = None
    try:
        with _MemoryCap():
            want = sess.run(None, dict(zip(names, xs)))
    except Exception as e:
        want, ort_err = None, str(e)
    if want is None and "bad_alloc" in (ort_err or ""):  # onnxruntime out of memory under the cap:
        try:  # retried without it where moec's answer is small (else it stays a refusal)
            got_small = run(xs) if not cap_moec else None
        except Exception:
            got_small = None
        if cap_moec:
            try:
                with _MemoryCap():
                    got_small = run(xs)
            except Exception:
                got_small = None
        if got_small is not None and sum(g.size for g in got_small) < 10**6:
            try:
                want, ort_err = sess.run(None, dict(zip(names, xs))), None
            except Exception as e:
                ort_err = str(e)
    try:
        if cap_moec:
            with _MemoryCap():
                got = run(xs)
        else:  # (the sanitized harness: a subprocess with ASan's own allocation limit)
            got = run(xs)
    except RuntimeFailure as e:
        if want is None:
            counts["both_refuse"] += 1
        elif "2^40" in str(e) and all(w.size == 0 for w in want):
            counts["size_limit"] += 1  # zero-size with an absurd dim: moec's documented limit
        elif known_divergence(name, xs, ort_err):
            counts["ort_divergence"] += 1
        else:
            counts["wrong"] += 1
            bad.append(("moec refused, onnxruntime did not", str(e)[:200], xs))
        return
    except MoecError as e:
        counts["exit3"] += 1
        bad.append(("MoecError other than RuntimeFailure", f"{type(e).__name__}: {e}"[:300], xs))
        return
    except Exception as e:
        counts["traceback"] += 1
        bad.append(("traceback", f"{type(e).__name__}: {e}"[:300], xs))
        return
    if want is None and known_divergence(name, xs, ort_err, got):
        counts["ort_divergence"] += 1
    elif want is None:
        counts["wrong"] += 1
        bad.append(("onnxruntime refused, moec did not", ort_err[-200:], [g.shape for g in got], xs))
    elif len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want)):
        counts["match"] += 1
    elif known_divergence(name, xs, None, got):
        counts["ort_divergence"] += 1
    else:
        counts["wrong"] += 1
        bad.append(("different result", [(g.shape, w.shape) for g, w in zip(got, want)], xs))


def _fuzz(compiled, n_per_family, seed, runner=None):
    counts = dict(match=0, both_refuse=0, size_limit=0, ort_divergence=0, wrong=0, traceback=0, exit3=0, crash=0)
    bad = []
    for fi, (name, (model, gen, art_dir, art, sess)) in enumerate(sorted(compiled.items())):
        rng = np.random.default_rng([seed, fi])
        run = runner(name, art_dir, model) if runner else art
        for _ in range(n_per_family):
            classify(run, sess, model, gen(rng, _T(rng)), counts, bad, name, cap_moec=runner is None)
    total = sum(counts.values())
    return counts, bad, total


def _report(counts, bad, total, label):
    print(f"\nrun-time fuzz ({label}): {total} cases over {len(FAMILIES)} models: {counts}")
    for b in bad[:8]:
        print("  ", b)
    assert counts["wrong"] == 0 and counts["traceback"] == 0 and counts["exit3"] == 0 and counts["crash"] == 0, \
        (counts, bad[:5])
    assert counts["match"] > total // 3  # the generator reaches the valid paths, not only the refusals


def test_fuzz_runtime_quick(compiled):
    counts, bad, total = _fuzz(compiled, 25, seed=0)
    _report(counts, bad, total, "quick")


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long mode: MOEC_FUZZ_LONG=1")
def test_fuzz_runtime_long(compiled):
    counts, bad, total = _fuzz(compiled, 120, seed=1)
    assert total >= 1000
    _report(counts, bad, total, "long")


@pytest.mark.slow
def test_fuzz_runtime_under_asan_ubsan(compiled):
    """The same cases through the sanitized harness (ASan + UBSan, -fno-sanitize-recover): any
    sanitizer report fails the test."""
    from moec.targets.cpu_harness import HarnessRunError, SanitizerError, build_harness, run_harness

    exes = {}

    def runner(name, art_dir, model):
        exes[name] = build_harness(art_dir, sanitize=True)
        n_out = len(model.graph.output)

        def run(xs):
            try:
                return run_harness(exes[name], art_dir, xs, n_out)
            except HarnessRunError as e:
                raise RuntimeFailure(str(e)) from None
            except SanitizerError as e:
                raise AssertionError(f"sanitizer report on {name}: {str(e)[-1500:]}") from None
        return run

    counts, bad, total = _fuzz(compiled, 40 if LONG else 12, seed=2, runner=runner)
    _report(counts, bad, total, "ASan+UBSan")

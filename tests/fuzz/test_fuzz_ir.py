"""Fuzzing moec's IR text form (issue 15, item 21): IR text is untrusted input.

Real IR texts (the example model after import and after the cpu pipeline, the golden pass tests'
inputs and outputs, zoo models) are mutated at the byte, token and line level (delete, duplicate,
swap, truncate, numbers replaced by extremes, names by hostile strings, unicode / NUL / invalid
UTF-8 inserted), and by hypothesis.  Each mutant goes through ``parse_module`` (which verifies),
``verify_module``, a print/parse round trip, the reference interpreter on small random inputs, and,
for a sample of the mutants that run, a C build whose outputs must equal the interpreter's.

Asserted: 0 exceptions other than IRError/MoecError (tracebacks), 0 multi-line parse messages,
0 round-trip differences, 0 internal build errors (exit 3), 0 wrong results (C vs interpreter).
Long mode (>= 10,000 mutants): MOEC_FUZZ_LONG=1 python -m pytest -q -m slow tests/fuzz
"""
from __future__ import annotations

import glob
import json
import os
import random
import re
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moec.errors import BuildError, MoecError
from moec.ir import IRError, IRParseError, parse_module, parse_type, print_module, run, save_module, verify_module
from moec.ir.io import load_module

LONG = bool(os.environ.get("MOEC_FUZZ_LONG"))
N_MUTANTS = 10000 if LONG else 300
N_HYPOTHESIS = 2000 if LONG else 60
N_BUILDS = 40 if LONG else 2
N_FILE = 200 if LONG else 20  # mutants also written to disk and read with load_module
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# -- mutations ---------------------------------------------------------------------------------------

TOKEN_RE = re.compile(r'"(?:\\.|[^"\\])*"|%[A-Za-z0-9_$.\-]+|@[A-Za-z_][A-Za-z0-9_$.]*|0x[0-9A-Fa-f]+'
                      r'|-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|[A-Za-z_][A-Za-z0-9_.]*|\s+|.', re.S)
EXTREME_NUMBERS = [
    "0", "-1", "1", "-0", "2", "3", "7", "2147483647", "2147483648", "4294967296", "9223372036854775807",
    "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "18446744073709551616",
    "99999999999999999999999999", "4611686018427387905", "1e308", "1e309", "-1e309", "0.0", "-0.0", "1.5",
    "1e-45", "5e-324", "0x7FF8000000000000", "0xFFF0000000000000", "0x7F800000", "0xFFFFFFFFFFFFFFFFFFFF",
    "0x0", "65536", "1" * 400,
]
HOSTILE_NAMES = [
    '"', "\\", '\\"', "\\n", "%", "%x", '%"', "@", '@x"); system("id', "{}", "$(touch /tmp/moec_pwned)", "*/",
    '"""', "\u00e9", "\u202e", "\U0001F600", "\x00", "\x1b[2J", "x" * 100000, "\\ZZ", "\\C3", "\\FF\\FE",
    "\\F0\\9F", "tensor<", 'tensor<?x?xf32, "a,b,c">', "dense<", 'dense<"0xZZ">', 'dense<"0x0102">',
    "dense_resource<nope>", "array<i64: 1e5>", "array<f32: 1>", "i1", "ui4", "bf16", "moec.add",
    "moec.constant", "moec.nonexistent", "loc(", "func.return", "module", "T-1", "T_1", "?", ",",
]
INSERTS = [
    b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", "\u202e".encode(), "\u00e9".encode(),
    "\U0001F600".encode(), b"\n", b"{", b"}", b"(", b")", b"[", b"]", b",", b":", b"<", b">", b'"', b"\\",
    b"?", b"x", b"#1", b":3", b"=", b"%", b"@", b"//", b"\r", b"\t", b"[" * 5000, b"]" * 5000,
    b"tensor<" + b"1x" * 100 + b"f32>", b"tensor<9223372036854775807x9223372036854775807xf32>",
]
DENSE_VALUES = ["0.0", "-0.0", "3.0", "-3.0", "1e30", "-1e30", "1e-40", "0x7FC00000", "0xFF800000", "0x7F800000",
                "0x00000001", "0", "1", "-1", "2", "100", "-9223372036854775808", "true"]
KINDS = ["dense_value", "dense_value", "dense_value", "byte_delete", "byte_dup", "byte_swap", "byte_insert", "truncate", "tok_delete", "tok_dup", "tok_swap",
         "tok_number", "tok_number", "tok_name", "line_delete", "line_dup", "line_swap", "multi"]


def mutate(text: str, rng: random.Random):
    """One random mutation of ``text``: (kind, mutant).  The mutant is ``bytes`` when it is not UTF-8."""
    kind = rng.choice(KINDS)
    if kind == "multi":
        for _ in range(rng.randint(2, 4)):
            _, text2 = mutate(text, rng)
            if isinstance(text2, bytes):
                return kind, text2
            text = text2
        return kind, text
    if kind == "dense_value":  # a number inside a dense<...> literal: the module usually still parses
        spans = [m.span(1) for m in re.finditer(r"dense<([^>\"]+)>", text)]
        if spans:
            lo, hi = rng.choice(spans)
            nums = [m for m in re.finditer(r"-?[0-9][0-9.eE+\-]*|0x[0-9A-Fa-f]+", text[lo:hi])]
            if nums:
                m = rng.choice(nums)
                return kind, text[:lo + m.start()] + rng.choice(DENSE_VALUES) + text[lo + m.end():]
        kind = "tok_number"
    if kind.startswith("byte") or kind == "truncate":
        b = text.encode("utf-8")
        n = len(b)
        i = rng.randrange(n + 1)
        j = min(n, i + rng.choice([1, 1, 2, 4, 16, 64]))
        if kind == "byte_delete":
            b = b[:i] + b[j:]
        elif kind == "byte_dup":
            b = b[:j] + b[i:j] + b[j:]
        elif kind == "byte_swap":
            k = rng.randrange(n + 1)
            l_ = min(n, k + (j - i))
            if k < i:
                i, j, k, l_ = k, l_, i, j
            if j <= k:
                b = b[:i] + b[k:l_] + b[j:k] + b[i:j] + b[l_:]
        elif kind == "byte_insert":
            b = b[:i] + rng.choice(INSERTS) + b[i:]
        else:
            b = b[:i]
        try:
            return kind, b.decode("utf-8")
        except UnicodeDecodeError:
            return kind, b
    if kind.startswith("tok"):
        toks = TOKEN_RE.findall(text)
        idx = [i for i, t in enumerate(toks) if not t.isspace()]
        if not idx:  # nothing left to mutate (a truncation came first)
            return kind, text + rng.choice(EXTREME_NUMBERS + HOSTILE_NAMES[:19])
        i = rng.choice(idx)
        if kind == "tok_delete":
            toks[i] = ""
        elif kind == "tok_dup":
            toks[i] = toks[i] + " " + toks[i]
        elif kind == "tok_swap":
            j = rng.choice(idx)
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "tok_number":
            nums = [k for k in idx if re.fullmatch(r"-?[0-9].*|0x.*", toks[k])] or idx
            toks[rng.choice(nums)] = rng.choice(EXTREME_NUMBERS)
        else:
            names = [k for k in idx if toks[k][0] in '%@"' or toks[k][0].isalpha()] or idx
            k = rng.choice(names)
            t, h = toks[k], rng.choice(HOSTILE_NAMES)
            if t[0] in "%@":
                toks[k] = t[0] + h
            elif t[0] == '"' and rng.random() < 0.5:
                toks[k] = '"' + h + '"'
            else:
                toks[k] = h
        return kind, "".join(toks)
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    if kind == "line_delete":
        del lines[i]
    elif kind == "line_dup":
        lines.insert(i, lines[i])
    else:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return kind, "\n".join(lines)


# -- the seed corpus ---------------------------------------------------------------------------------

ZOO_SEEDS = ("onnx_unrolled_mixtral", "ort_moe_silu", "onnx_gathered_bmm_mixtral", "onnx_dense_mixtral")


@pytest.fixture(scope="module")
def corpus():
    """[(name, text, weights, stage)]: real IR texts, each parsing and verifying as it is."""
    from moec.frontend.onnx_import import import_model, load_onnx
    from moec.passes.pipeline import run_pipeline
    from moec.targets import target_for
    from moec.passes.registry import make_pass
    from moec.zoo import ZOO

    out = []

    def add(name, m, stage):
        text = print_module(m)
        verify_module(parse_module(text, m.weights))
        out.append((name, text, m.weights, stage))

    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "*.mlir"))):
        src = open(path).read().partition("// ----- expected\n")[0]
        name = os.path.basename(path)
        m = parse_module(src, source=name)
        add(name, m, "import")
        try:
            make_pass(name.split("__")[0]).run(m)
        except Exception:  # a pass that needs target options: its input is enough
            continue
        add(name + ":after", m, "pipeline")
    ex = os.path.join(ROOT, "examples", "mixtral_like.onnx")
    proto = load_onnx(ex)
    add("example:import", import_model(proto, "example"), "import")
    add("example:pipeline", run_pipeline(import_model(proto, "example"), target=target_for("cpu")), "pipeline")
    by_name = {e.name: e for e in ZOO}
    for n in ZOO_SEEDS:
        proto = by_name[n].build()
        add(f"{n}:import", import_model(proto, n), "import")
        add(f"{n}:pipeline", run_pipeline(import_model(proto, n), target=target_for("cpu")), "pipeline")
    return out


# -- one mutant through everything -------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.counts = {k: 0 for k in ("mutants", "rejected", "parsed", "ran", "run_rejected", "built",
                                      "build_rejected", "compared")}
        self.failures = []  # (what, kind, detail) -- every entry fails the test

    def fail(self, what, kind, detail):
        self.failures.append((what, kind, detail))

    def report(self, title):
        print(f"\n[fuzz-ir] {title}: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())
              + f", failures={len(self.failures)} (tracebacks/crashes/exit-3/wrong results)")

    def check(self):
        msg = "\n".join(f"{w} [{k}]: {d[:1500]}" for w, k, d in self.failures[:8])
        assert not self.failures, f"{len(self.failures)} failures, first ones:\n{msg}"


def random_inputs(f, rng: np.random.Generator):
    sizes = {}
    out = []
    for a in f.args:
        shape = []
        for d in a.type.shape:
            if isinstance(d, int):
                shape.append(d)
            elif d is None:
                shape.append(2)
            else:
                shape.append(sizes.setdefault(d, int(rng.integers(1, 5))))
        if int(np.prod(shape, dtype=np.float64)) > 1 << 16:
            return None
        dt = a.type.dtype.np
        if a.type.dtype.is_float:
            x = rng.standard_normal(shape).astype(dt)
        elif a.type.dtype.mlir == "i1":
            x = rng.integers(0, 2, shape).astype(bool)
        else:
            x = rng.integers(0, 3, shape).astype(dt)
        out.append(x)
    return out


# an allocation that failed (under a ulimit) or would have swapped the machine: sizes must be checked first
_UNBOUNDED = re.compile(r"MemoryError|Unable to allocate|array is too big|too large to hold in memory")


def check_mutant(mutant, ws, kind: str, stats: Stats, rng: np.random.Generator, candidates=None, via_file=None):
    """Parse, verify, round-trip and run one mutant; record any failure in ``stats``."""
    stats.counts["mutants"] += 1
    try:
        if via_file is not None:
            mode = "wb" if isinstance(mutant, bytes) else "w"
            with open(via_file, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as fh:
                fh.write(mutant)
            m = load_module(via_file)
        else:
            m = parse_module(mutant, ws, source="mutant")
    except IRParseError as e:
        stats.counts["rejected"] += 1
        s = str(e)
        if "\n" in s or "\r" in s or not s.strip():
            stats.fail("parse message is not one non-empty line", kind, repr(s))
        if _UNBOUNDED.search(s):
            stats.fail("parsing tried an unbounded allocation", kind, s + "\n" + repr(mutant)[:3000])
        return
    except Exception:
        stats.fail("parse leaked a non-IRParseError exception", kind, traceback.format_exc() + repr(mutant)[:600])
        return
    stats.counts["parsed"] += 1
    try:
        verify_module(m)
        text = print_module(m)
        text2 = print_module(parse_module(text, m.weights))
        if text2 != text:
            stats.fail("print/parse/print is not the identity", kind, text[:600])
    except Exception:
        stats.fail("an accepted module failed verify/print/re-parse", kind, traceback.format_exc())
        return
    inputs = random_inputs(m.main, rng) if m.functions else None
    if inputs is None:
        return
    try:
        ref = run(m, inputs)
    except IRError as e:
        stats.counts["run_rejected"] += 1
        if _UNBOUNDED.search(str(e)):
            stats.fail("the interpreter tried an unbounded allocation", kind, str(e) + "\n" + text[:3000])
        return
    except Exception:
        stats.fail("the interpreter leaked a non-IRError exception", kind, traceback.format_exc())
        return
    stats.counts["ran"] += 1
    if candidates is not None:
        candidates.append((kind, text, m, inputs, ref))


def same(c: np.ndarray, r: np.ndarray) -> bool:
    if c.shape != r.shape or c.dtype != r.dtype:
        return False
    if not np.issubdtype(r.dtype, np.floating) and r.dtype.kind not in "fc":
        if r.dtype.kind == "V" or r.dtype.itemsize == 2 and r.dtype.kind != "i":  # bf16
            c, r = c.astype(np.float32), r.astype(np.float32)
        else:
            return np.array_equal(c, r)
    c64, r64 = c.astype(np.float64), r.astype(np.float64)
    if not np.array_equal(np.isnan(c64), np.isnan(r64)):
        return False
    fin = np.isfinite(r64)
    if not np.array_equal(c64[~fin & ~np.isnan(r64)], r64[~fin & ~np.isnan(r64)]):
        return False
    scale = max(1.0, float(np.max(np.abs(r64[fin]), initial=0.0)))
    return bool(np.all(np.abs(c64[fin] - r64[fin]) <= 1e-3 * np.abs(r64[fin]) + 1e-4 * scale))


def build_and_compare(cands, n: int, stats: Stats, tmp_path, base_texts):
    """Build a sample of the mutants that ran (those that differ from every seed) with the C target and
    compare the outputs with the interpreter's."""
    from moec.driver import build_module
    fresh = [c for c in cands if c[1] not in base_texts]
    rnd = random.Random(1234)
    rnd.shuffle(fresh)
    seen = set()
    for kind, text, m, inputs, ref in fresh:
        if stats.counts["built"] + stats.counts["build_rejected"] >= n:
            break
        if text in seen:
            continue
        seen.add(text)
        out = str(tmp_path / f"b{len(seen)}")
        try:
            art = build_module(m, out, target="cpu", arch="generic", force=True)
            got = art(inputs)
        except BuildError:
            stats.fail("a verified module gave an internal build error (exit 3)", kind,
                       traceback.format_exc() + text[:3000])
            continue
        except (MoecError, IRError):
            stats.counts["build_rejected"] += 1
            continue
        except Exception:
            stats.fail("the C build/run leaked a non-MoecError exception", kind, traceback.format_exc() + text[:3000])
            continue
        stats.counts["built"] += 1
        for (name, r), c in zip(ref.items(), got):
            stats.counts["compared"] += 1
            if not same(np.asarray(c), np.asarray(r)):
                stats.fail("C output differs from the interpreter", kind,
                           f"output {name}: C {np.asarray(c).ravel()[:8]} vs interpreter {np.asarray(r).ravel()[:8]}\n"
                           + text[:3000])


# -- the tests ---------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _bounded_interpreter(monkeypatch):
    # hostile shapes must be refused, not allocated: keep the interpreter's per-result limit small
    monkeypatch.setenv("MOEC_INTERP_MAX_BYTES", str(64 << 20))


def _mutation_run(corpus, tmp_path, n, n_builds, title):
    rng = random.Random(20261206)
    nrng = np.random.default_rng(7)
    stats = Stats()
    cands = []
    base_texts = {c[1] for c in corpus}
    # a module with weights saved to disk: some mutants are read with load_module, beside its weights
    # files, and some of those with a mutated weights index (.weights.json) instead of a mutated text
    seed = next(c for c in corpus if len(c[2]))
    disk = tmp_path / "disk"
    disk.mkdir()
    via = str(disk / "m.mlir")
    save_module(parse_module(seed[1], seed[2]), via)
    index = (disk / "m.weights.json").read_text()
    step = max(1, n // N_FILE)
    for i in range(n):
        name, text, ws, _ = corpus[rng.randrange(len(corpus))]
        if i % step == 0 and (i // step) % 2 == 1:  # the weights index damaged, the text intact
            kind, bad_index = mutate(index, rng)
            (disk / "m.weights.json").write_bytes(bad_index if isinstance(bad_index, bytes) else bad_index.encode())
            check_mutant(seed[1], None, f"weights.json/{kind}", stats, nrng, None, via)
            (disk / "m.weights.json").write_text(index)
            continue
        kind, mutant = mutate(text, rng)
        if i % step == 0:  # load_module reads the seed's weights beside the text
            name, text, ws, _ = seed
            kind, mutant = mutate(text, rng)
        check_mutant(mutant, ws, f"{name}/{kind}", stats, nrng, cands if len(cands) < 400 else None,
                     via if i % step == 0 else None)
    build_and_compare(cands, n_builds, stats, tmp_path, base_texts)
    stats.report(title)
    stats.check()
    assert stats.counts["rejected"] > 0 and stats.counts["ran"] > 0  # the mutants do reach every stage


def test_ir_mutants_quick(corpus, tmp_path):
    _mutation_run(corpus, tmp_path, 300, 2, "quick mutation run")


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long fuzz run: MOEC_FUZZ_LONG=1")
def test_ir_mutants_long(corpus, tmp_path):
    _mutation_run(corpus, tmp_path, N_MUTANTS, N_BUILDS, f"long mutation run ({N_MUTANTS} mutants)")


_EDIT = st.one_of(
    st.tuples(st.just("insert_text"), st.floats(0, 1), st.text(max_size=12)),
    st.tuples(st.just("insert_bytes"), st.floats(0, 1), st.binary(max_size=6)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 40)),
    st.tuples(st.just("replace"), st.floats(0, 1), st.sampled_from(EXTREME_NUMBERS + HOSTILE_NAMES[:19])),
)


def _hypothesis_test(n):
    @settings(max_examples=n, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large])
    @given(seed=st.integers(0, 10 ** 6), edits=st.lists(_EDIT, min_size=1, max_size=4))
    def t(corpus, hypothesis_totals, seed, edits):
        name, text, ws, _ = corpus[seed % len(corpus)]
        b = text.encode()
        for what, at, arg in edits:
            i = int(at * len(b))
            if what == "insert_text":
                b = b[:i] + arg.encode("utf-8", "surrogatepass") + b[i:]
            elif what == "insert_bytes":
                b = b[:i] + arg + b[i:]
            elif what == "delete":
                b = b[:i] + b[i + arg:]
            else:  # replace the token at i
                m = TOKEN_RE.match(b.decode("utf-8", "replace"), i) if i < len(b) else None
                n_ = len(m.group(0).encode()) if m else 0
                b = b[:i] + arg.encode("utf-8", "surrogatepass") + b[i + n_:]
        stats = Stats()
        check_mutant(b, ws, f"{name}/hypothesis", stats, np.random.default_rng(seed))
        for k, v in stats.counts.items():
            hypothesis_totals.counts[k] += v
        hypothesis_totals.failures += stats.failures
        stats.check()
    return t


@pytest.fixture(scope="module")
def hypothesis_totals():
    """The hypothesis tests' counts over all their examples, printed when the module's tests end."""
    s = Stats()
    yield s
    if s.counts["mutants"]:
        s.report("hypothesis mutants")


test_ir_hypothesis_quick = _hypothesis_test(N_HYPOTHESIS if not LONG else 60)
test_ir_hypothesis_long = pytest.mark.slow(pytest.mark.skipif(not LONG, reason="long fuzz run: MOEC_FUZZ_LONG=1")(
    _hypothesis_test(N_HYPOTHESIS)))


# -- the CLI path that reads IR type text -------------------------------------------------------------

@pytest.mark.parametrize("bad_type", [
    "tensor<99999999999999999999xf32>", "tensor<9223372036854775807x9223372036854775807xf32>",
    'tensor<?xf32, "\\ZZ">', 'tensor<?xf32, "\\C3">', "tensor<-1xf32>", "tensor<2xf99>", "tensor<" + "1x" * 100 + "f32>",
    'tensor<?x?xf32, "a">', "tensor<\u0663xf32>", "not a type", 17, None,
])
def test_cli_run_with_a_hostile_manifest_type_is_exit_2(tmp_path, capsys, bad_type):
    """`moec run` parses the input types of an artifact's manifest.json (untrusted: a damaged or
    crafted artifact): a bad type is one clear line and exit 2, never a traceback or exit 3."""
    from moec.cli import main
    art = tmp_path / "art"
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps({
        "moec_version": "0.1.0", "model": "m", "target": "cpu", "arch": "generic",
        "inputs": [{"name": "x", "type": bad_type}], "outputs": [{"name": "y", "type": "tensor<2xf32>"}],
        "files": []}))
    (art / "report.json").write_text(json.dumps({"verified": True}))
    np.save(tmp_path / "x.npy", np.zeros(2, np.float32))
    rc = main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_parse_type_rejects_every_malformed_type_with_irparseerror():
    for bad in ["tensor<>", "tensor<x>", "tensor<1xx2xf32>", "tensor<+1xf32>", "tensor< 1_0 xf32>",
                'tensor<?xf32, "">', 'tensor<1xf32, "T">', "tensor<?x?xf32, \"a,b,c\">", b"tensor<1xf32>"]:
        with pytest.raises(IRParseError):
            parse_type(bad)


def test_cli_compile_of_ir_text_is_exit_2(corpus, tmp_path, capsys):
    """`moec compile` takes ONNX only: IR text given to it (intact or mutated) is one line and exit 2."""
    from moec.cli import main
    rng = random.Random(5)
    for i in range(3):
        text = corpus[-1][1] if i == 0 else mutate(corpus[-1][1], rng)[1]
        p = tmp_path / f"m{i}.mlir"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        rc = main(["compile", str(p), "-o", str(tmp_path / f"out{i}")])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not (tmp_path / f"out{i}").exists()

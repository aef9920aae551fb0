"""Damaged caches are rebuilt, never loaded (issue 15 items 10 and 19).

Each test uses a private cache (MOEC_CACHE_DIR under tmp_path), most starting with a copy of the session's build
of the C runtime archive (and of the Ascend emulator library where that is damaged; see conftest.py), damages
entries for real (a library whose code is all breakpoints, so that loading it kills the process; truncation; flipped
bytes; garbage or wrongly typed JSON; a missing COMPLETE marker; an extra file; weights edited in place; build
folders of killed compiles) and checks that the next compile works, rebuilds, and gives the right outputs.  Whatever
could load a damaged library runs in a subprocess, so a crash is a failed test, not a dead pytest.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.targets import cache_store

HERE = os.path.dirname(os.path.abspath(__file__))


# -- damage --------------------------------------------------------------------------------------------------
def poison_text(path: str) -> None:
    """Fill the .text section of an ELF64 shared object with int3 (0xCC): dlopen runs its constructors from
    .text, so loading the file stops the process with SIGTRAP."""
    data = bytearray(open(path, "rb").read())
    assert data[:4] == b"\x7fELF" and data[4] == 2
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sec = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = sec[shstrndx][4]
    for name, _typ, _flags, _addr, off, size in sec:
        end = data.index(b"\0", strtab_off + name)
        if data[strtab_off + name:end] == b".text":
            data[off:off + size] = b"\xcc" * size
            break
    else:
        raise AssertionError("no .text")
    open(path, "wb").write(bytes(data))


def damage(path: str, how: str) -> None:
    data = open(path, "rb").read()
    if how == "poison":
        poison_text(path)
    elif how == "truncate":
        open(path, "wb").write(data[:len(data) // 2])
    elif how == "flip":
        mid = len(data) // 2
        open(path, "wb").write(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])
    elif how == "plus3":  # weights edited in place: every f32 + 3.0 (issue 15 item 19)
        w = np.frombuffer(data[:len(data) // 4 * 4], np.float32) + np.float32(3.0)
        open(path, "wb").write(w.tobytes() + data[len(data) // 4 * 4:])
    elif how == "garbage":
        open(path, "wb").write(b"{not json\x00\xff")
    else:
        raise ValueError(how)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_poisoned_library_really_crashes_when_loaded(tmp_path):
    """The damage used below is real: loading a poisoned library kills the process (so a test that loads one
    by mistake fails)."""
    src = tmp_path / "a.c"
    src.write_text("int f(void) { return 1; }\n__attribute__((constructor)) static void c(void) {}\n")
    so = str(tmp_path / "a.so")
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", so], check=True)
    poison_text(so)
    p = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({so!r}); print('loaded')"],
                       capture_output=True, text=True)
    assert p.returncode < 0 and "loaded" not in p.stdout


# -- the cache store itself ----------------------------------------------------------------------------------
def _entry(root, key="k" * 24, files=None):
    tmp = cache_store.new_tmp(str(root), key)
    for rel, data in (files or {"lib.so": b"\x7fELF...", "sub/w.bin": b"\0" * 100}).items():
        os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
        open(os.path.join(tmp, rel), "wb").write(data)
    cache_store.seal(tmp, key=key)
    final = os.path.join(str(root), key)
    assert cache_store.publish(tmp, final)
    return final


@pytest.mark.parametrize("how", ["truncate", "flip", "no_marker", "garbage_marker", "marker_types", "marker_path",
                                 "extra_file", "missing_file", "symlink", "other_key"])
def test_check_rejects_every_damage(tmp_path, how):
    d = _entry(tmp_path)
    cache_store.check(d, "k" * 24)
    m = os.path.join(d, cache_store.MARKER)
    if how in ("truncate", "flip"):
        damage(os.path.join(d, "lib.so"), how)
    elif how == "no_marker":
        os.remove(m)
    elif how == "garbage_marker":
        damage(m, "garbage")
    elif how == "marker_types":
        doc = json.load(open(m))
        doc["files"] = list(doc["files"])
        json.dump(doc, open(m, "w"))
    elif how == "marker_path":  # a listed path outside the entry
        doc = json.load(open(m))
        doc["files"]["../../etc/passwd"] = doc["files"].pop("lib.so")
        json.dump(doc, open(m, "w"))
    elif how == "extra_file":
        open(os.path.join(d, "sub", "x.pyc"), "wb").write(b"x")
    elif how == "missing_file":
        os.remove(os.path.join(d, "sub", "w.bin"))
    elif how == "symlink":
        os.remove(os.path.join(d, "lib.so"))
        os.symlink("/bin/sh", os.path.join(d, "lib.so"))
    with pytest.raises(cache_store.Damaged):
        cache_store.check(d, "j" * 24 if how == "other_key" else "k" * 24)


def test_publish_loser_uses_winner_and_damaged_entry_is_replaced(tmp_path):
    key = "a" * 24
    final = _entry(tmp_path, key)
    tmp = cache_store.new_tmp(str(tmp_path), key)
    open(os.path.join(tmp, "lib.so"), "wb").write(b"other")
    cache_store.seal(tmp, key=key)
    assert cache_store.publish(tmp, final) is False  # the loser accepts the (valid) winner
    assert not os.path.exists(tmp) and open(os.path.join(final, "lib.so"), "rb").read() == b"\x7fELF..."
    os.remove(os.path.join(final, cache_store.MARKER))  # an interrupted entry in the way: "Directory not empty"
    tmp = cache_store.new_tmp(str(tmp_path), key)
    open(os.path.join(tmp, "lib.so"), "wb").write(b"new")
    cache_store.seal(tmp, key=key)
    assert cache_store.publish(tmp, final) is True
    assert cache_store.check(final, key) and open(os.path.join(final, "lib.so"), "rb").read() == b"new"
    assert sorted(os.listdir(tmp_path)) == [key]  # the damaged one is gone, nothing left aside


def test_clean_stale_removes_dead_and_old_build_folders_only(tmp_path):
    host, dead = cache_store._host(), _dead_pid()
    names = {"dead": f"{'b' * 32}.{host}.{dead}.x1.tmp", "live": f"{'b' * 32}.{host}.{os.getpid()}.x2.tmp",
             "old_live": f"{'c' * 32}.{host}.{os.getpid()}.x3.tmp", "legacy_old": f"{'d' * 32}.qwerty.tmp",
             "legacy_new": f"{'e' * 32}.asdfgh.tmp", "entry": "f" * 32,
             "aside": f"{'f' * 32}.{host}.{dead}.ab.dead.tmp"}
    for n in names.values():
        os.makedirs(tmp_path / n / "a")
    day = time.time() - 2 * 24 * 3600
    os.utime(tmp_path / names["old_live"], (day, day))
    os.utime(tmp_path / names["legacy_old"], (time.time() - 7200,) * 2)
    assert cache_store.clean_stale(str(tmp_path)) == 4
    assert sorted(os.listdir(tmp_path)) == sorted([names["live"], names["legacy_new"], names["entry"]])


def test_triton_tuning_cache_is_validated(tmp_path, monkeypatch):
    """A damaged or hostile tuning cache (not a dict, wrong types, absurd tiles) is ignored entry by entry;
    the lookup falls back to the shipped defaults or the generic rule, and autotune rewrites it clean."""
    from moec.codegen.triton import tuning
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path))
    p = dict(E=8, D=64, F=128, k=2, T=4, dtype="f32", wq="none")
    good = tuning._lookup("moe_gemm", p, "SOME_GPU")
    path = tuning.cache_path()
    bad = {tuning._key("moe_gemm", p, "SOME_GPU"): {"BLOCK_M": "16", "num_warps": 4},
           tuning._key("moe_gemm", dict(p, T=64), "SOME_GPU"): dict(good, BLOCK_M=3),
           tuning._key("moe_gemm", dict(p, T=128), "SOME_GPU"): dict(good, BLOCK_K1=1 << 20),
           tuning._key("moe_gemm", dict(p, T=256), "SOME_GPU"): [1, 2]}
    for i, doc in enumerate((b"[1, 2, 3]", b"\xff\xfe garbage", json.dumps(bad).encode(), b'"str"', b"null")):
        with open(path, "wb") as f:
            f.write(doc)
        os.utime(path, ns=(10**18 + i * 10**9,) * 2)  # (a new mtime each time: _load re-reads)
        for T in (4, 64, 128, 256):
            c = tuning._lookup("moe_gemm", dict(p, T=T), "SOME_GPU")
            assert tuning.valid_config(c), (doc, c)
    assert tuning._lookup("moe_gemm", p, "SOME_GPU") == good
    cfg = tuning.autotune("moe_gemm", p, lambda c: None, candidates=[tuning.CANDIDATES[0]], reps=1)
    data = json.load(open(path))
    assert isinstance(data, dict) and all(tuning.valid_config(c) for c in data.values()) and cfg in data.values()


# -- the build cache (moec compile) --------------------------------------------------------------------------
def _model(seed=0, K=8, N=16):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(K, N)).astype(np.float32)
    b = rng.normal(size=(N,)).astype(np.float32)
    return make_model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
                      [("x", np.float32, ["T", K])], [("y", np.float32, ["T", N])], {"w": W, "b": b},
                      name=f"cache_model_{seed}")


def _run(script: str, cache, timeout=600):
    env = dict(os.environ, MOEC_CACHE_DIR=str(cache), PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def _compile_in_subprocess(model_path, out, cache, target="cpu"):
    script = f"""
        import json, onnx
        from moec.driver import CompileOptions, compile_onnx
        r = compile_onnx(onnx.load({str(model_path)!r}), {str(out)!r}, CompileOptions(target={target!r}, force=True))
        print(json.dumps({{"verified": r.report["verified"], "hit": r.report["build_cache_hit"]}}))
    """
    return json.loads(_run(script, cache).strip().splitlines()[-1])


def _only_entry(area):
    es = [e for e in os.listdir(area) if not e.endswith(".tmp")]
    assert len(es) == 1, es
    return os.path.join(area, es[0])


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory, cache_seed):
    """A build cache holding one model's library (built, then a hit), and the model file."""
    base = tmp_path_factory.mktemp("built")
    cache_seed.fill(base / "cache", areas=("",), zoo=False)  # (the runtime archive)
    mp = base / "m.onnx"
    mp.write_bytes(_model().SerializeToString())
    assert _compile_in_subprocess(mp, base / "a", base / "cache") == {"verified": True, "hit": False}
    assert _compile_in_subprocess(mp, base / "b", base / "cache") == {"verified": True, "hit": True}
    return base


# End to end, by default: the crash (poison), a marker-level and a hash-level damage of each area; the other
# kinds with -m slow (test_check_rejects_every_damage has every kind, fast).
def _kinds(default, kinds):
    return [k if k in default else pytest.param(k, marks=pytest.mark.slow) for k in kinds]


@pytest.mark.parametrize("how", _kinds({"poison", "no_marker"},
                                       ["poison", "truncate", "flip", "no_marker", "garbage_marker", "extra_file"]))
def test_damaged_model_library_in_build_cache_is_rebuilt(built_cache, tmp_path, how):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache / "cache", cache, symlinks=True)
    mp = built_cache / "m.onnx"
    entry = _only_entry(cache / "models")
    if how in ("poison", "truncate", "flip"):
        damage(os.path.join(entry, "model.so"), how)
    elif how == "no_marker":
        os.remove(os.path.join(entry, cache_store.MARKER))
    elif how == "garbage_marker":
        damage(os.path.join(entry, cache_store.MARKER), "garbage")
    else:
        open(os.path.join(entry, "model.so.bak"), "wb").write(b"x")
    assert _compile_in_subprocess(mp, tmp_path / "c", cache) == {"verified": True, "hit": False}
    assert cache_store.check(_only_entry(cache / "models"))["files"]["model.so"]  # rebuilt whole


@pytest.mark.parametrize("how", ["truncate", pytest.param("flip", marks=pytest.mark.slow)])
def test_damaged_runtime_archive_is_rebuilt(tmp_path, how, cache_seed):
    cache = tmp_path / "cache"
    with pytest.MonkeyPatch.context() as mpc:  # a copy of the session's build of the host's archive, damaged below
        from moec.targets import cpu
        from moec.targets.description import cpu_target
        mpc.setenv("MOEC_CACHE_DIR", cache_seed.root)
        built = os.path.dirname(cpu.build_runtime(cpu_target("native")))  # (a hit: made when the session began)
    shutil.copytree(built, cache / os.path.basename(built))
    for seed in (0, 1):
        (tmp_path / f"m{seed}.onnx").write_bytes(_model(seed).SerializeToString())
    assert _compile_in_subprocess(tmp_path / "m0.onnx", tmp_path / "a", cache)["verified"]
    rt = [e for e in os.listdir(cache) if e.startswith("rt-") and not e.endswith(".tmp")]
    assert len(rt) == 1
    size = os.path.getsize(cache / rt[0] / "rt.a")
    damage(str(cache / rt[0] / "rt.a"), how)
    r = _compile_in_subprocess(tmp_path / "m1.onnx", tmp_path / "b", cache)  # a new model: links the archive
    assert r == {"verified": True, "hit": False}
    cache_store.check(str(cache / rt[0]))
    assert os.path.getsize(cache / rt[0] / "rt.a") == size


def test_damaged_ascend_emulator_build_is_rebuilt(tmp_path, cache_seed):
    cache = tmp_path / "cache"
    mp = tmp_path / "m.onnx"
    mp.write_bytes(_model().SerializeToString())
    # a copy of the session's emulator build where there is one (moec's, sha256-checked; damaged below), else the
    # first compile builds it
    cache_seed.fill(cache, areas=("", "ascend"), zoo=False)
    assert _compile_in_subprocess(mp, tmp_path / "a", cache, "ascend")["verified"]
    cache_seed.harvest(cache)
    used = cache_store.sha256_file(str(tmp_path / "a" / "ascend" / "libmoec_ascend_emu.so"))
    entry, = [str(e) for e in (cache / "ascend").iterdir() if not e.name.endswith(".tmp")
              and cache_store.check(str(e))["files"].get("libmoec_ascend_emu.so") == used]
    poison_text(os.path.join(entry, "libmoec_ascend_emu.so"))
    assert _compile_in_subprocess(mp, tmp_path / "b", cache, "ascend") == {"verified": True, "hit": False}
    cache_store.check(entry)


# -- the JIT cache (moec.compile) ----------------------------------------------------------------------------
JIT_SCRIPT = """
    import json, sys
    import numpy as np, onnx, onnxruntime as ort
    import moec, moec.jit_api
    moec.jit_api._SOURCE_HASH = "fixed"  # (keys stable while moec's sources are being edited around the test)
    cm = moec.compile({path!r})
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    want = ort.InferenceSession({path!r}, providers=["CPUExecutionProvider"]).run(None, {{"x": x}})[0]
    err = float(np.abs(cm(x) - want).max())
    print(json.dumps({{"hit": cm.stats.cache_hit, "verified": cm.stats.verified, "err": err,
                       "dir": cm.stats.outdir}}))
"""


def _jit(path, cache):
    return json.loads(_run(JIT_SCRIPT.format(path=str(path)), cache).strip().splitlines()[-1])


JIT_DAMAGES = ["poison_so", "truncate_so", "flip_so", "weights_plus3", "garbage_report", "garbage_manifest",
               "no_marker", "garbage_marker", "marker_types", "extra_file", "report_types_resealed",
               "manifest_types_resealed", "not_a_dir"]


@pytest.fixture(scope="module")
def jit_cache(tmp_path_factory, cache_seed):
    """A JIT cache holding one ONNX model's entry (built, then a hit), the model file and the entry's name."""
    base = tmp_path_factory.mktemp("jit")
    cache_seed.fill(base / "cache", areas=("",), zoo=False)  # (the runtime archive)
    mp = base / "m.onnx"
    mp.write_bytes(_model().SerializeToString())
    a = _jit(mp, base / "cache")
    assert not a["hit"] and a["verified"] and a["err"] < 1e-4
    b = _jit(mp, base / "cache")
    assert b["hit"] and b["dir"] == a["dir"] and b["err"] < 1e-4
    return base, os.path.basename(a["dir"])


@pytest.mark.parametrize("how", _kinds({"poison_so", "weights_plus3", "garbage_marker", "report_types_resealed",
                                          "manifest_types_resealed", "not_a_dir"}, JIT_DAMAGES))
def test_damaged_jit_entry_is_rebuilt(jit_cache, tmp_path, how):
    """Every kind of damage to a JIT cache entry gives a rebuild (not a hit, not a crash, not a
    JSONDecodeError/FileNotFoundError/"Directory not empty") and right outputs; the rebuilt entry checks whole.
    weights_plus3 is issue 15 item 19: weights edited in place were a verified hit with outputs off by 3.0."""
    base, name = jit_cache
    cache = tmp_path / "cache"
    shutil.copytree(base / "cache", cache, symlinks=True)
    mp = base / "m.onnx"
    a = {"dir": str(cache / "jit" / name)}
    d = a["dir"]
    f = {"so": os.path.join(d, "model.so"), "w": os.path.join(d, "model.weights.bin"),
         "report": os.path.join(d, "report.json"), "manifest": os.path.join(d, "manifest.json"),
         "marker": os.path.join(d, cache_store.MARKER)}
    if how.endswith("_so"):
        damage(f["so"], how[:-3])
    elif how == "weights_plus3":
        assert os.path.getsize(f["w"]) >= 512  # (the MatMul's weights are there, not inline)
        damage(f["w"], "plus3")
    elif how.startswith("garbage_"):
        damage(f[how[8:]], "garbage")
    elif how == "no_marker":
        os.remove(f["marker"])
    elif how == "marker_types":
        doc = json.load(open(f["marker"]))
        doc["files"] = {k: 1 for k in doc["files"]}
        json.dump(doc, open(f["marker"], "w"))
    elif how == "extra_file":
        open(os.path.join(d, "model.so.orig"), "wb").write(b"x")
    elif how.endswith("_resealed"):  # consistent hashes, wrong types: the JSON itself is validated
        path = f["report"] if how.startswith("report") else f["manifest"]
        doc = json.load(open(path))
        if how.startswith("report"):
            doc["verified"] = "yes"
        else:
            doc["inputs"] = [{"name": 1, "type": None}]
        json.dump(doc, open(path, "w"))
        marker = json.load(open(f["marker"]))
        cache_store.seal(d, key=marker["key"], verified=marker["verified"])
    elif how == "not_a_dir":
        shutil.rmtree(d)
        open(d, "wb").write(b"junk")
    c = _jit(mp, cache)
    assert not c["hit"] and c["verified"] and c["err"] < 1e-4, c
    assert c["dir"] == a["dir"] and cache_store.check(c["dir"], name)


def test_jit_stale_build_folders_are_cleaned_and_occupied_entry_replaced(tmp_path, moec_cache):
    """A build folder of a killed compile is removed by the next compile (a live process's is kept); an
    entry left without COMPLETE (an interrupted publish) is replaced instead of failing."""
    import moec
    mp = tmp_path / "m.onnx"
    mp.write_bytes(_model().SerializeToString())
    cm = moec.compile(str(mp))
    root, key = os.path.dirname(cm.stats.outdir), cm.stats.key
    host = cache_store._host()
    dead = os.path.join(root, f"{key}.{host}.{_dead_pid()}.zz.tmp")
    live = os.path.join(root, f"{key}.{host}.{os.getpid()}.yy.tmp")
    for p in (dead, live):
        os.makedirs(os.path.join(p, "a"))
        open(os.path.join(p, "a", "model.so"), "wb").write(b"partial")
    shutil.rmtree(cm.stats.outdir)
    os.makedirs(cm.stats.outdir)
    open(os.path.join(cm.stats.outdir, "model.c"), "w").write("partial")  # occupied, no COMPLETE
    again = moec.compile(str(mp))
    assert not again.stats.cache_hit and again.stats.verified and again.stats.outdir == cm.stats.outdir
    x = np.ones((3, 8), np.float32)
    np.testing.assert_allclose(again(x), cm(x), rtol=1e-6)
    assert not os.path.exists(dead) and os.path.exists(live)
    cache_store.check(again.stats.outdir, key)


def test_module_weights_edited_in_cache_entry_are_detected(moec_cache):
    """Issue 15 item 19 through a torch module: the weights file of the JIT entry edited in place (+3.0) is a
    rebuild with the module's outputs, not a verified hit off by 3.0; parameters changed in place are a new key."""
    torch = pytest.importorskip("torch")
    import moec
    from zoo import make_inputs, make_module, modules
    mod = make_module(modules.Mixtral)  # (expert weights live in model.weights.bin)
    x = torch.from_numpy(make_inputs(6))
    a = moec.compile(mod, (x,))
    assert moec.compile(mod, (x,)).stats.cache_hit
    w = os.path.join(a.stats.outdir, "model.weights.bin")
    assert os.path.getsize(w) > 1000
    damage(w, "plus3")
    b = moec.compile(mod, (x,))
    assert not b.stats.cache_hit and b.stats.verified
    with torch.no_grad():
        np.testing.assert_allclose(b(x).numpy(), mod(x).numpy(), rtol=1e-4, atol=1e-5)
        mod.experts[3].up_proj.weight.add_(3.0)
    c = moec.compile(mod, (x,))
    assert not c.stats.cache_hit and c.stats.key != a.stats.key
    with torch.no_grad():
        np.testing.assert_allclose(c(x).numpy(), mod(x).numpy(), rtol=1e-4, atol=1e-4)


def test_library_is_hashed_as_loaded(tmp_path, cache_seed):
    """A library inside a sealed entry that does not match its hash is refused before dlopen (Damaged, exit 2
    as a RuntimeFailure), in a subprocess so that loading it by mistake would crash the test."""
    cache = tmp_path / "cache"
    cache_seed.fill(cache, areas=("",), zoo=False)  # (the runtime archive)
    mp = tmp_path / "m.onnx"
    mp.write_bytes(_model().SerializeToString())
    d = _jit(mp, cache)["dir"]
    poison_text(os.path.join(d, "model.so"))
    out = _run(f"""
        from moec.targets.registry import CpuArtifact
        from moec.targets.cache_store import Damaged
        from moec.errors import RuntimeFailure
        try:
            CpuArtifact({d!r})
        except Damaged as e:
            assert isinstance(e, RuntimeFailure)
            print("refused:", e)
    """, cache)
    assert "refused:" in out and "sha256" in out


def test_two_processes_build_the_same_entries_at_once(tmp_path):
    """Two compiles of one model race on an empty cache: both verify, each cache area ends with one whole
    entry (the loser accepted the winner's), and no build folder is left behind."""
    cache = tmp_path / "cache"
    mp = tmp_path / "m.onnx"
    mp.write_bytes(_model(3).SerializeToString())
    script = f"""
        import json, sys, onnx
        from moec.driver import CompileOptions, compile_onnx
        r = compile_onnx(onnx.load({str(mp)!r}), sys.argv[1], CompileOptions(force=True))
        print(json.dumps(r.report["verified"]))
    """
    env = dict(os.environ, MOEC_CACHE_DIR=str(cache))
    ps = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(tmp_path / f"o{i}")], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in ps:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and out.strip().endswith("true"), err[-2000:]
    for area in (cache, cache / "models"):
        names = [n for n in os.listdir(area) if n not in ("models", "jit")]
        assert not [n for n in names if n.endswith(".tmp")], names
        assert len(names) == 1 and cache_store.check(str(area / names[0]), names[0])


def test_ascend_emulator_library_is_hashed_as_loaded(tmp_path):
    """The Ascend loader, too, hashes the copy it loads against a sealed entry's index: a poisoned emulator
    library is refused (Damaged), and the same library outside a sealed entry loads as before."""
    src = tmp_path / "a.c"
    src.write_text("int moec_probe(void) { return 7; }\n")
    entry = tmp_path / "entry"
    (entry / "ascend").mkdir(parents=True)
    lib = entry / "ascend" / "libmoec_ascend_emu.so"
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    plain = tmp_path / "plain"
    shutil.copytree(entry, plain)
    cache_store.seal(str(entry), key="x")
    out = _run(f"""
        from moec.targets.ascend_backend import _load_private
        from moec.targets.cache_store import Damaged
        print("sealed", _load_private({str(entry)!r}, "ascend/libmoec_ascend_emu.so").moec_probe())
        print("plain", _load_private({str(plain)!r}, "ascend/libmoec_ascend_emu.so").moec_probe())
    """, tmp_path / "cache")
    assert "sealed 7" in out and "plain 7" in out
    poison_text(str(lib))
    out = _run(f"""
        from moec.targets.ascend_backend import _load_private
        from moec.targets.cache_store import Damaged
        try:
            _load_private({str(entry)!r}, "ascend/libmoec_ascend_emu.so")
        except Damaged as e:
            print("refused:", e)
    """, tmp_path / "cache")
    assert "refused:" in out and "sha256" in out


def test_runtime_files_compile_on_a_pool_and_every_failure_is_reported(tmp_path, monkeypatch):
    """cpu._compile_all (the runtime's build, two compilers at a time): every job runs, a file whose compiler
    prints more than a pipe holds does not stall the pool, and each failing file is named with its message."""
    from moec.targets import cpu
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    srcs = []
    for i, size in enumerate((10, 4000, 200, 70000)):
        p = tmp_path / f"s{i}.c"
        body = f"int f{i}(void) {{ return {i}; }}\n" + "/* pad */\n" * (size // 10)
        if i == 3:  # a long file with a flood of warnings (more than a pipe's 64 KiB of messages), still valid
            body += "".join(f"int w{j}(int x) {{ int u; return x; }}\n" for j in range(3000))
        p.write_text(body)
        srcs.append(str(p))
    jobs = [(["gcc", "-Wall", "-c", s, "-o", s[:-2] + ".o"], s) for s in srcs]
    cpu._compile_all(jobs)
    assert all(os.path.exists(s[:-2] + ".o") for s in srcs)
    bad1, bad2 = tmp_path / "bad1.c", tmp_path / "bad2.c"
    bad1.write_text("int g(void) { return nope1; }\n")
    bad2.write_text("int h(void) { return nope2; }\n")
    jobs += [(["gcc", "-c", str(b), "-o", str(b)[:-2] + ".o"], str(b)) for b in (bad1, bad2)]
    with pytest.raises(cpu.BuildError) as e:
        cpu._compile_all(jobs)
    msg = str(e.value)
    assert "bad1.c" in msg and "nope1" in msg and "bad2.c" in msg and "nope2" in msg

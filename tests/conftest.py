import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Triton reads TRITON_INTERPRET when it is first imported, and PyTorch's exporters may import it
# early: without a CUDA GPU, select the interpreter before anything else runs.
try:
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:
    pass

# The C runtime's test builds fill the outputs kernels allocate without zeroing (moec_alloc_uninit) with 0xFF
# bytes, so an element a kernel forgets to write reads as NaN / -1 and fails its comparison (targets/cpu.py's
# poison_uninit; a user's build never pays for it).  Set before anything builds: it is part of the build flags.
os.environ.setdefault("MOEC_POISON_UNINIT", "1")

# The bundled example model is generated (examples/*.onnx is not committed): build it once if a
# clean checkout runs the tests before the README's first command.
_EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "mixtral_like.onnx")
if not os.path.exists(_EXAMPLE):
    import subprocess

    subprocess.run([sys.executable, os.path.join(os.path.dirname(_EXAMPLE), "build_mixtral_like.py")], check=True)


# -- a private moec cache per test, seeded with the toolchain builds -------------------------------------------
# Tests that need a cache of their own (a JIT cache miss, a cache hit they count) get a fresh MOEC_CACHE_DIR.
# What such a cache would otherwise rebuild in every test is the same for all of them: the C runtime archive
# (rt-<key>), the Ascend emulator library (ascend/<key>) and the zoo's ONNX exports (zoo/<hash>/*.onnx), all
# keyed by a hash of their sources.  They are built once per session (the host's runtime archive when the
# first such test starts, the others by the first test that needs them: kept when it ends; the emulator library
# taken from the user's cache where an earlier test built it there), and copied into each fresh cache (moec
# checks every entry's sha256 on use, as it does for any cache).  Tests of the cache itself seed only what they
# do not test, or damage their own copy (tests/test_cache_integrity.py).
import shutil as _shutil

import pytest as _pytest

_SEED_AREAS = ("", "ascend")   # "" = the cache root, where the runtime archives live (rt-<key>)


def _seed_entries(root):
    for area in _SEED_AREAS:
        a = os.path.join(root, area)
        if not os.path.isdir(a):
            continue
        for n in sorted(os.listdir(a)):
            p = os.path.join(a, n)
            if n.endswith(".tmp") or os.path.islink(p) or not os.path.isdir(p):
                continue
            if area == "" and not n.startswith("rt-"):
                continue
            yield os.path.join(area, n)


def _zoo_files(root):
    z = os.path.join(root, "zoo")
    if not os.path.isdir(z):
        return
    for h in sorted(os.listdir(z)):
        d = os.path.join(z, h)
        if os.path.isdir(d) and not os.path.islink(d):
            for n in sorted(os.listdir(d)):
                if n.endswith(".onnx") and not n.startswith("_") and os.path.isfile(os.path.join(d, n)):
                    yield os.path.join("zoo", h, n)


class CacheSeed:
    """The session's store of toolchain builds (see above)."""

    def __init__(self, root, user=None):
        self.root = str(root)
        self.user = user  # the user's moec cache (the tests without a private one build there)

    def _adopt(self, area):
        """The store has no entry of ``area``: take the newest whole one of the user's cache, where the tests
        that run on it (test_ascend*.py, before the first private cache needs the emulator) built it this
        session on a clean machine.  One of older sources is copied for nothing, never used: moec looks its
        entries up by a hash of their sources and checks their sha256."""
        from moec.targets import cache_store
        if self.user is None or any(os.path.dirname(r) == area for r in _seed_entries(self.root)):
            return
        src = os.path.join(self.user, area)
        try:
            names = [n for n in os.listdir(src) if not n.endswith(".tmp") and os.path.isdir(os.path.join(src, n))]
        except OSError:
            return
        for n in sorted(names, key=lambda n: os.path.getmtime(os.path.join(src, n)), reverse=True):
            dst = os.path.join(self.root, area, n)
            tmp = dst + ".harvest.tmp"
            try:
                cache_store.check(os.path.join(src, n))
                _shutil.rmtree(tmp, ignore_errors=True)
                _shutil.copytree(os.path.join(src, n), tmp)
                cache_store.check(tmp)
                os.rename(tmp, dst)
                return
            except Exception:  # (damaged, or removed by a concurrent compile: try the next)
                _shutil.rmtree(tmp, ignore_errors=True)

    def fill(self, cache, areas=_SEED_AREAS, zoo=True):
        """Copy the stored entries of ``areas`` (and the zoo exports) into the cache folder ``cache``."""
        cache = str(cache)
        if "ascend" in areas:
            self._adopt("ascend")
        for rel in _seed_entries(self.root):
            if (rel.split(os.sep)[0] if os.sep in rel else "") in areas:
                dst = os.path.join(cache, rel)
                if not os.path.exists(dst):
                    _shutil.copytree(os.path.join(self.root, rel), dst)
        if zoo:
            for rel in _zoo_files(self.root):
                dst = os.path.join(cache, rel)
                if not os.path.exists(dst):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    _shutil.copyfile(os.path.join(self.root, rel), dst)
        return cache

    def harvest(self, cache):
        """Keep the whole (checked) entries a test built, for the next tests."""
        from moec.targets import cache_store
        cache = str(cache)
        for rel in _seed_entries(cache):
            dst = os.path.join(self.root, rel)
            if os.path.exists(dst):
                continue
            try:
                cache_store.check(os.path.join(cache, rel))
            except Exception:
                continue
            tmp = dst + ".harvest.tmp"
            _shutil.rmtree(tmp, ignore_errors=True)
            _shutil.copytree(os.path.join(cache, rel), tmp)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(tmp, dst)
        for rel in _zoo_files(cache):
            dst = os.path.join(self.root, rel)
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                _shutil.copyfile(os.path.join(cache, rel), dst + ".tmp")
                os.replace(dst + ".tmp", dst)


@_pytest.fixture(scope="session")
def cache_seed(tmp_path_factory):
    """The session's store; the host's C runtime archive is put into it at once (moec's own build: the user's
    cache's, which the tests without a private cache have built by then, or made there now, then copied)."""
    from moec.targets import cache_store, cpu
    from moec.targets.description import cpu_target
    seed = CacheSeed(tmp_path_factory.mktemp("moec-cache-seed"), user=cpu.cache_dir())
    dst = None
    try:
        entry = os.path.dirname(cpu.build_runtime(cpu_target("native")))  # (in the user's cache)
        dst = os.path.join(seed.root, os.path.basename(entry))
        _shutil.copytree(entry, dst)
        cache_store.check(dst)
    except Exception:  # (an unwritable user cache, a concurrent replacement: built into the store below)
        if dst:
            _shutil.rmtree(dst, ignore_errors=True)
    with _pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOEC_CACHE_DIR", seed.root)
        cpu.build_runtime(cpu_target("native"))
    return seed


@_pytest.fixture
def moec_cache(tmp_path, monkeypatch, cache_seed):
    """A fresh MOEC_CACHE_DIR (tmp_path/cache) holding the session's toolchain builds; returns its path."""
    import pathlib
    c = tmp_path / "cache"
    c.mkdir()
    cache_seed.fill(c)
    monkeypatch.setenv("MOEC_CACHE_DIR", str(c))
    yield pathlib.Path(c)
    cache_seed.harvest(c)


@_pytest.fixture(scope="module")
def moec_module_cache(tmp_path_factory, cache_seed):
    """One fresh MOEC_CACHE_DIR for a test module (seeded like moec_cache): its tests share the JIT cache, so
    a compile another test of the module already made is a (checked) cache hit."""
    c = tmp_path_factory.mktemp("moec-cache")
    cache_seed.fill(c)
    with _pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOEC_CACHE_DIR", str(c))
        yield c
    cache_seed.harvest(c)


@_pytest.fixture
def no_avx512_bf16(monkeypatch):
    """An AVX-512 build host without AVX512_BF16 (the cpuid flags faked, for one test): the bf16 kernels widen the
    pairs in 16-lane registers instead of vdpbf16ps."""
    from moec.targets import description
    flags = description._cpu_flags()
    if "avx512f" not in flags or "avx512bw" not in flags:
        _pytest.skip("this host has no AVX-512")
    monkeypatch.setattr(description, "_cpu_flags", lambda: tuple(f for f in flags if f != "avx512_bf16"))
    description.host_cpu.cache_clear()
    assert "-mavx512bf16" not in description.host_cpu().cflags
    yield
    monkeypatch.undo()
    description.host_cpu.cache_clear()

"""The CPU target: build generated C with the system compiler, load it with ctypes.

The runtime (``codegen/c/runtime/*.c``) is compiled once per (sources, flags,
compiler) into a static archive cached under the moec cache dir; a model is
its generated unit linked with that archive into a shared object.  Symbols
are hidden except the model API, so several models can live in one process.
"""
from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from typing import List, Sequence

import numpy as np

from moec.codegen.c.dtypes import C_DTYPE, CODE_TO_DTYPE
from moec.ir import DType
from moec.targets import cache_store
from moec.targets.description import TargetDesc

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codegen", "c", "runtime")
BASE_CFLAGS = ("-O2", "-std=gnu11", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing",
               "-fno-math-errno", "-pthread", "-Wall", "-Wno-unused-function", "-Wno-unused-variable",
               "-Wno-unused-label", "-Wno-unused-but-set-variable", "-Wno-maybe-uninitialized")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
                  "-g")


class BuildError(Exception):
    pass


def cache_dir() -> str:
    d = os.environ.get("MOEC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "moec")
    os.makedirs(d, exist_ok=True)
    return d


def cc() -> str:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc") or "cc"


def _cc_version() -> str:
    try:
        return subprocess.run([cc(), "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except Exception:
        return "unknown"


def runtime_sources() -> List[str]:
    return sorted(glob.glob(os.path.join(RUNTIME_DIR, "*.c")))


def runtime_headers() -> List[str]:
    return sorted(glob.glob(os.path.join(RUNTIME_DIR, "*.h")))


POISON_FLAG = "-DMOEC_POISON_UNINIT"


def poison_uninit(sanitize: bool = False) -> bool:
    """Whether the runtime fills moec_alloc_uninit's blocks with 0xFF bytes (an element a kernel leaves unwritten
    then reads as NaN / -1): always in the sanitize builds, and where MOEC_POISON_UNINIT is set to anything but
    "" / "0" (the test suite sets it: tests/conftest.py).  It changes no written value, only what an unwritten one
    reads as; the flag is part of the flags, hence of the runtime's and every model's cache key."""
    return sanitize or os.environ.get("MOEC_POISON_UNINIT", "") not in ("", "0")


def cflags_for(target: TargetDesc, sanitize: bool = False) -> List[str]:
    flags = list(BASE_CFLAGS) + list(target.cflags)
    if sanitize:
        flags = [f for f in flags if f != "-O2"] + ["-O1"] + list(SANITIZE_FLAGS)
    if poison_uninit(sanitize):
        flags.append(POISON_FLAG)
    return flags


def _run(cmd: Sequence[str], what: str) -> None:
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(cmd[:3])} ...):\n{p.stderr[-4000:]}")


_lock = threading.Lock()


def runtime_key(target: TargetDesc, sanitize: bool = False) -> str:
    """The runtime archive's cache key: its sources and headers, the flags (so the kernels chosen from the build
    host's features: vector width, VNNI, AMX ...) and the compiler; builds differing in any never share one."""
    h = hashlib.sha256()
    for p in runtime_sources() + runtime_headers():
        h.update(os.path.basename(p).encode())
        with open(p, "rb") as f:
            h.update(f.read())
    h.update(" ".join(cflags_for(target, sanitize)).encode())
    h.update(_cc_version().encode())
    return "rt-" + h.hexdigest()[:20]


def build_runtime(target: TargetDesc, sanitize: bool = False) -> str:
    """Compile the runtime into a cached static archive; return its path (inside a checked cache entry,
    ``rt-<key>/rt.a``: a damaged archive is discarded and rebuilt, see cache_store)."""
    flags = cflags_for(target, sanitize)
    key = runtime_key(target, sanitize)
    root = cache_dir()
    out = cache_store.cached_path(root, key, "rt.a")
    if out:
        return out
    with _lock:
        out = cache_store.cached_path(root, key, "rt.a")
        if out:
            return out
        cache_store.clean_stale(root)
        tmp = cache_store.new_tmp(root, key)
        try:
            objdir = os.path.join(tmp, "obj")
            os.mkdir(objdir)
            srcs = runtime_sources()
            objs = [os.path.join(objdir, os.path.basename(src)[:-2] + ".o") for src in srcs]
            _compile_all([([cc(), *flags, "-I", RUNTIME_DIR, "-c", src, "-o", obj], src) for src, obj in zip(srcs, objs)])
            _run(["ar", "rcs", os.path.join(tmp, "rt.a"), *objs], "archiving the runtime")
            shutil.rmtree(objdir)
            cache_store.seal(tmp, key=key)
            cache_store.publish(tmp, os.path.join(root, key))  # atomic; a loser uses the winner's (checked) entry
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(root, key, "rt.a")


def _compile_all(jobs):
    """Run the compiler commands ``jobs`` ([(argv, source)]) on as many threads as there are CPUs (at least 2),
    the largest source first, a new one started as soon as one ends: the runtime's build time is then about its
    largest file's (rt_moe_f32.c), not the sum of the slowest file of each batch of CPU-count files."""
    def one(job):
        argv, src = job
        p = subprocess.run(argv, capture_output=True, text=True)
        return None if p.returncode == 0 else f"{os.path.basename(src)}:\n{p.stderr[-3000:]}"

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
        errs = [e for e in ex.map(one, sorted(jobs, key=lambda j: -os.path.getsize(j[1]))) if e]
    if errs:
        raise BuildError("compiling the moec C runtime failed:\n" + "\n".join(errs))


def build_shared(c_path: str, so_path: str, target: TargetDesc, sanitize: bool = False) -> bool:
    """Build model.so; cached by a content hash of (source, runtime archive, flags, compiler), so an
    unchanged recompile is a copy.  Returns True when it came from the cache."""
    rt = build_runtime(target, sanitize)
    flags = cflags_for(target, sanitize)
    h = hashlib.sha256()
    with open(c_path, "rb") as f:
        h.update(f.read())
    h.update(os.path.basename(os.path.dirname(rt)).encode())  # (the archive's cache key)
    h.update(" ".join(flags).encode())
    h.update(_cc_version().encode())
    # the cached library is checked (sha256 of the bytes copied) before it replaces a build: a damaged one
    # is discarded and rebuilt instead of crashing whoever loads it
    area, key = os.path.join(cache_dir(), "models"), h.hexdigest()[:24]
    if cache_store.fetch_file(area, key, "model.so", so_path):
        return True
    _run([cc(), *flags, "-I", RUNTIME_DIR, "-shared", "-Wl,-Bsymbolic", c_path, rt, "-o", so_path, "-lm"],
         f"compiling {os.path.basename(c_path)}")
    cache_store.store_file(area, key, so_path, "model.so")
    return False


def build_executable(c_path: str, exe_path: str, target: TargetDesc, sanitize: bool = False) -> None:
    """A standalone harness (runtime/harness/main.c) linked with the model: used for ASan runs."""
    rt = build_runtime(target, sanitize)
    flags = cflags_for(target, sanitize)
    harness = os.path.join(RUNTIME_DIR, "harness", "moec_main.c")
    _run([cc(), *flags, "-I", RUNTIME_DIR, harness, c_path, rt, "-o", exe_path, "-lm"],
         f"linking harness for {os.path.basename(c_path)}")


# -- loading and running ------------------------------------------------------

class CTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("shape", ctypes.c_int64 * 8), ("numel", ctypes.c_int64),
                ("rank", ctypes.c_int32), ("dtype", ctypes.c_int32), ("owned", ctypes.c_int32),
                ("pad_", ctypes.c_int32)]


# a CTensor as one struct pack per rank: data, the rank's dims, zeros for the unused dims, numel, rank, dtype,
# owned (0), padding (checked against the ctypes layout here)
_TENSOR_SIZE = ctypes.sizeof(CTensor)
_TENSOR_PACK = [struct.Struct(f"@P{r}q{8 * (8 - r)}xq4i") for r in range(9)]
assert all(p.size == _TENSOR_SIZE for p in _TENSOR_PACK) and CTensor.numel.offset == 72 and CTensor.pad_.offset == 92


class RunError(Exception):
    pass


_NP_CODES: dict = {}


def _code_of(dt: np.dtype) -> int:
    """The runtime's dtype code of a numpy dtype (cached; unsupported dtypes raise as DType.from_np does)."""
    code = _NP_CODES.get(dt)
    if code is None:
        code = _NP_CODES[dt] = C_DTYPE[DType.from_np(dt)][1]
    return code


_C0 = ctypes.c_char * 0


def _address_slow(x: np.ndarray) -> int:
    try:
        return ctypes.addressof(_C0.from_buffer(x))
    except (TypeError, ValueError, BufferError):  # read-only or otherwise not exportable as writable
        return x.ctypes.data


def _data_field_offset():
    """Where an ndarray object keeps its data pointer, if reading it there is proved right here, else None.

    numpy's C ABI fixes the array object's first field after the object header to the data pointer (what
    PyArray_DATA reads in every compiled extension); CPython's id() is the object's address.  Both are checked on
    probe arrays (a view into the middle of a buffer, read-only, 0-d, a subclass) against ``x.ctypes.data``; any
    mismatch (another interpreter, a future layout) keeps the portable path."""
    off = object.__basicsize__
    try:
        base = np.arange(64, dtype=np.float32)
        ro = np.arange(3.0)
        ro.flags.writeable = False
        probes = [base, base[5:40], base.reshape(8, 8)[2:], ro, np.array(7, np.int64), np.zeros((2, 0)),
                  base.view(type("_Sub", (np.ndarray,), {}))]
        for p in probes:
            if ctypes.c_void_p.from_address(id(p) + off).value != p.ctypes.data:
                return None
    except Exception:  # noqa: BLE001 - any failure: the portable path
        return None
    return off


_DATA_OFF = _data_field_offset()
_VOIDP_AT = ctypes.c_void_p.from_address


def _address(x: np.ndarray) -> int:
    """The data address of a C-contiguous array (``x.ctypes.data`` costs microseconds per call, a buffer export
    about 0.5 us; the array's own data field about 0.2 us)."""
    if _DATA_OFF is not None:
        return _VOIDP_AT(id(x) + _DATA_OFF).value or 0
    return _address_slow(x)


# outputs at least this large are taken over from the runtime instead of copied (a smaller copy costs about what
# the object that owns the block does)
_TAKE_MIN_BYTES = 1 << 16


class _OutputBlock:
    """One output block taken over from the runtime: ``np.asarray(block)`` views it (numpy keeps the block as the
    array's base, so every view keeps it alive), and the block goes back to the runtime (moec_free_block) when
    the last reference is gone.  Holds the CompiledLibrary, so the library outlives its blocks."""

    __slots__ = ("__array_interface__", "_owner", "_ptr")

    def __init__(self, owner: "CompiledLibrary", ptr: int, shape: tuple, dtype: np.dtype):
        self._owner, self._ptr = owner, ptr
        self.__array_interface__ = {"version": 3, "shape": shape, "typestr": dtype.str, "data": (ptr, False)}

    def __del__(self):
        ptr, self._ptr = self._ptr, None
        if ptr:
            self._owner._free_block(ptr)


class CompiledLibrary:
    """A loaded model library.  Call with a list of numpy arrays; returns a list."""

    def __init__(self, so_path: str, weights_path: str, n_in: int, n_out: int, nthreads: int = 1):
        self.path = so_path
        # dlopen returns an already loaded library for the same path even when the file was
        # rebuilt, so load a private copy (unlinked right away; the mapping keeps it alive)
        # inside a sealed cache entry (the JIT cache) the copy must hash to what the entry lists: its bytes are
        # the ones checked, and a damaged library is never loaded (cache_store.Damaged: the JIT rebuilds)
        expect = cache_store.expected_sha256(os.path.dirname(os.path.abspath(so_path)),
                                             os.path.basename(so_path))
        fd, tmp = tempfile.mkstemp(prefix="moec-", suffix=".so")
        try:
            os.close(fd)
            got = cache_store.copy_hashed(so_path, tmp)
            if expect is not None and got != expect:
                raise cache_store.Damaged(f"'{so_path}' does not match the sha256 of its cache entry")
            self.lib = ctypes.CDLL(tmp)
        finally:
            os.unlink(tmp)
        self.n_in, self.n_out = n_in, n_out
        self.nthreads = nthreads
        self._tls = threading.local()
        self.lib.moec_init.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        # (void pointers: __call__ passes the addresses of this thread's argument arrays as ints, the cheapest
        # conversion ctypes has; ctypes arrays are accepted too)
        self.lib.moec_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                      ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        self._run = self.lib.moec_run
        self.lib.moec_free_outputs.argtypes = [ctypes.POINTER(CTensor), ctypes.c_int]
        # large outputs are handed to numpy without a copy where the library can take a block back (a library
        # built before moec_free_block existed copies them)
        self._free_block = getattr(self.lib, "moec_free_block", None)
        if self._free_block is not None:
            self._free_block.argtypes = [ctypes.c_void_p]
            self._free_block.restype = None
        err = ctypes.create_string_buffer(2048)
        if self.lib.moec_init((weights_path or "").encode(), err, 2048) != 0:
            raise RunError(f"loading {so_path}: {err.value.decode(errors='replace')}")

    def _buffers(self):
        """This thread's argument arrays and error buffer (reused: moec_run fills the outputs afresh), and their
        addresses."""
        b = getattr(self._tls, "bufs", None)
        if b is None:
            ins, outs, err = ((CTensor * max(1, self.n_in))(), (CTensor * max(1, self.n_out))(),
                              ctypes.create_string_buffer(2048))
            b = self._tls.bufs = (ins, outs, err, ctypes.addressof(ins), ctypes.addressof(outs), ctypes.addressof(err))
        return b

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        # (the per-call cost is part of every small model's latency: dtype codes and output dtypes are cached,
        # the argument arrays and the error buffer are one per thread, each input's descriptor is written by one
        # struct pack, the data address read from the array object, the library called with plain addresses)
        if len(inputs) != self.n_in:
            raise RunError(f"expected {self.n_in} inputs, got {len(inputs)}")
        keep = []
        ins, outs, err, pins, pouts, perr = self._buffers()
        for i, x in enumerate(inputs):
            if type(x) is not np.ndarray or not x.flags.c_contiguous:
                x = np.asarray(x, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
            nd = x.ndim
            if nd > 8:
                raise RunError(f"input #{i} has rank {nd}; at most 8 is supported")
            code = _code_of(x.dtype)
            keep.append(x)
            n = x.size
            if n:
                p = _address(x)
            else:  # zero-size: give a valid pointer
                z = np.zeros(1, np.uint8)
                keep.append(z)
                p = z.ctypes.data
            _TENSOR_PACK[nd].pack_into(ins, i * _TENSOR_SIZE, p, *x.shape, n, nd, code, 0, 0)
        rc = self._run(pins, self.n_in, pouts, self.n_out, self.nthreads, perr, 2048)
        if rc != 0:
            raise RunError(err.value.decode(errors="replace"))
        try:
            result = []
            for k in range(self.n_out):
                t = outs[k]
                npdt, bits, four = _out_kind(t.dtype)
                n = t.numel  # (the runtime checked it against the shape; a python int: no wrap)
                nbytes = (n * bits + 7) // 8
                if nbytes >= _TAKE_MIN_BYTES and t.owned and not four and self._free_block is not None:
                    # the runtime's block becomes the array's memory: no copy, and no page faults for a fresh
                    # numpy block (a [256, 32000] f32 output: 2-3% of a [256,1024]x[1024,32000] call); it goes
                    # back to the runtime when the last view of the array is gone
                    arr = np.asarray(_OutputBlock(self, t.data, tuple(t.shape[:t.rank]), npdt))
                    t.owned = 0  # (moec_free_outputs below leaves it alone)
                else:
                    # copied into numpy's memory before the C buffer is freed (memmove takes a size_t:
                    # string_at took a C int, and an output over 2 GiB was a SystemError)
                    arr = np.empty(nbytes if four else tuple(t.shape[:t.rank]), dtype=npdt)
                    if nbytes:
                        ctypes.memmove(_address(arr), t.data, nbytes)
                result.append(arr)
            return result
        except MemoryError:
            raise RunError("out of memory copying the outputs into numpy arrays") from None
        finally:
            self.lib.moec_free_outputs(outs, self.n_out)


_OUT_KINDS: dict = {}


def _out_kind(code: int):
    """(numpy dtype of the array, bits per element, packed 4-bit) of an output's runtime dtype code (cached)."""
    k = _OUT_KINDS.get(code)
    if k is None:
        dt = CODE_TO_DTYPE[code]
        four = dt in (DType.I4, DType.U4)
        k = _OUT_KINDS[code] = (np.dtype(np.uint8) if four else np.dtype(dt.np), dt.bits, four)
    return k

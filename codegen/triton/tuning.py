"""Tile configurations for the grouped MoE GEMMs: shipped defaults, searched files, and autotuning.

A configuration (the dict the runtime launches with) holds BLOCK_M (shared: one align plan) and, per
projection, the up projection's (gemm1: BLOCK_N1, BLOCK_K1, GROUP_SIZE_M1, SPLIT_K1, num_warps,
num_stages) and the down projection's (gemm2: BLOCK_N2, BLOCK_K2, GROUP_SIZE_M2, SPLIT_K2, num_warps2,
num_stages2; the last two default to the up projection's).  GROUP_SIZE_M is the tile order of the
1-D grid (kernels._tile_ids), DEFAULT_GROUP_M where a configuration does not say.

Lookup, per (layer shape, token count, dtype, weight mode, GPU name), in order:
  1. the cache written by :func:`autotune` (the bench's quick per-run tuning; ``triton_tuning.json``
     under the moec cache dir, keyed by token bucket);
  2. tile-search files (``python -m moec.codegen.triton.tune_moe``) in MOEC_TRITON_CONFIGS, else
     ``triton_configs/`` under the moec cache dir, together with the files shipped in ``configs/`` next
     to this module (measured on an H100): the entry of the nearest token count of either serves, a
     searched file's entry replacing a shipped one of the same token count;
  3. a generic rule.
Under the interpreter small tiles keep the CPU emulation fast.

Tile-search file format (docs: configs/README.md), like vLLM's fused_moe configs: one JSON file per
(GPU, E, N, K, dtype), named ``E={E},N={N},K={K},device_name={GPU},dtype={dtype}.json`` -- E experts,
N the intermediate size F, K the hidden size D, GPU torch's device name with spaces as '_', dtype
``bf16`` / ``fp16`` / ``fp32`` or, for quantised weights, ``{mode}_w{bits}a{bits}`` (``int8_w8a16``).
Its keys are token counts M (strings); the entry with the nearest M serves a call.  Each entry:
``{"BLOCK_SIZE_M": 64, "up": {...}, "down": {...}}`` where up/down each hold BLOCK_SIZE_N, BLOCK_SIZE_K,
GROUP_SIZE_M, SPLIT_K, num_warps, num_stages and optionally SWAP_AB (0/1) and PERSISTENT (programs per SM,
0: none); absent, the runtime's rule decides (runtime.variants).  Other top-level keys (``triton_version``, ``moec``:
how it was searched) are metadata.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
# (BLOCK_M, BLOCK_N1, BLOCK_K1, BLOCK_N2, BLOCK_K2, warps, stages[, SPLIT_K1, SPLIT_K2]).  Few rows per
# expert (decode) need narrow N tiles so that enough programs stream the weights in parallel, or a
# split reduction (SPLIT_K: program axis 2 takes a slice of K, an epilogue kernel sums the slices) when
# the layer has too few output tiles (the down projection has only D / BLOCK_N2 column tiles per expert
# block); many rows need big tiles for tensor cores.  Every entry compiles for sm_90 within its shared
# memory and without register spills (tests/test_triton_aot.py; (128, 256, 64, ...) needed 240 KiB).
_SMALL = [(16, 32, 128, 16, 256, 4, 4), (16, 32, 256, 32, 256, 4, 3), (16, 64, 128, 16, 256, 4, 4),
          (16, 16, 256, 16, 256, 4, 4), (32, 32, 128, 32, 128, 4, 4), (16, 64, 64, 64, 64, 4, 3),
          (16, 64, 128, 32, 256, 4, 4, 2, 4), (16, 32, 128, 16, 256, 4, 4, 1, 4), (16, 64, 256, 64, 256, 4, 3, 4, 8)]
_LARGE = [(64, 64, 64, 64, 64, 4, 3), (64, 128, 64, 128, 64, 4, 3), (128, 128, 64, 128, 64, 8, 3),
          (128, 128, 64, 128, 64, 8, 4), (128, 64, 64, 128, 64, 4, 3), (128, 128, 32, 128, 32, 8, 4),
          (64, 256, 64, 256, 64, 8, 3), (128, 64, 64, 128, 64, 8, 4)]


def _cfg(t):
    bm, bn1, bk1, bn2, bk2, w, s = t[:7]
    c = {"BLOCK_M": bm, "BLOCK_N1": bn1, "BLOCK_K1": bk1, "BLOCK_N2": bn2, "BLOCK_K2": bk2, "num_warps": w,
         "num_stages": s}
    if len(t) > 7:
        c["SPLIT_K1"], c["SPLIT_K2"] = t[7], t[8]
    return c


CANDIDATES: List[dict] = [_cfg(t) for t in _SMALL + _LARGE]
DEFAULT_GROUP_M = 8  # the tile order where a configuration does not give GROUP_SIZE_M1/2


def candidates_for(rows_per_expert: float) -> List[dict]:
    if rows_per_expert <= 16:
        return [_cfg(t) for t in _SMALL]
    if rows_per_expert <= 64:
        return [_cfg(t) for t in _SMALL[4:6] + _LARGE[:3]]
    return [_cfg(t) for t in _LARGE]


def token_bucket(T: int) -> int:
    b = 1
    while b < T:
        b *= 2
    return b


def gpu_name() -> str:
    return _gpu_name()


@functools.lru_cache(maxsize=1)
def _gpu_name() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name().replace(" ", "_")
    except Exception:  # noqa: BLE001 - no GPU, no name
        pass
    return "interpreter"


def _key(kind: str, p: dict, gpu: Optional[str] = None) -> str:
    return (f"{kind}|E{p['E']}|D{p['D']}|F{p['F']}|k{p['k']}|T{token_bucket(p['T'])}|{p['dtype']}|{p['wq']}|"
            f"{gpu or gpu_name()}")


def cache_path() -> str:
    from moec.targets.cpu import cache_dir
    return os.path.join(cache_dir(), "triton_tuning.json")


_LOADED: Dict[object, tuple] = {}


def _load(path: str) -> Dict[str, dict]:
    """The valid configurations of the JSON at path, recomputed only when the file is re-read (config_for
    runs per call; the cache file is untrusted: anything but {key: config} is ignored)."""
    raw = _load_raw(path)
    hit = _LOADED.get(("valid", path))
    if hit and hit[0] is raw:
        return hit[1]
    data = {k: c for k, c in raw.items() if valid_config(c)}
    _LOADED[("valid", path)] = (raw, data)
    return data


_CFG_INTS = {"BLOCK_M": (16, 256), "BLOCK_N1": (16, 256), "BLOCK_K1": (16, 256), "BLOCK_N2": (16, 256),
             "BLOCK_K2": (16, 256), "num_warps": (1, 16), "num_stages": (1, 8)}
_CFG_OPTIONAL = {"SPLIT_K1": (1, 64), "SPLIT_K2": (1, 64), "GROUP_SIZE_M1": (1, 64), "GROUP_SIZE_M2": (1, 64),
                 "num_warps2": (1, 16), "num_stages2": (1, 8), "SWAP_AB1": (0, 1), "SWAP_AB2": (0, 1),
                 "PERSISTENT1": (0, 8), "PERSISTENT2": (0, 8), "TMA": (0, 1)}
_POW2 = {"BLOCK_M", "BLOCK_N1", "BLOCK_K1", "BLOCK_N2", "BLOCK_K2", "num_warps", "num_warps2"}


def valid_config(c) -> bool:
    """A tile configuration as autotune writes it: the block sizes powers of two in [16, 256], warps a power of
    two <= 16, 1..8 stages, optionally split factors (SPLIT_K1, SPLIT_K2) and tile orders (GROUP_SIZE_M1/2) in
    1..64, the down projection's own num_warps2 / num_stages2, and the kernel variants (runtime.variants):
    SWAP_AB1/2 0 or 1, PERSISTENT1/2 0..8 programs per SM (0: one program per tile), TMA 0 or 1; nothing else.  (Entries of a damaged or
    edited tuning cache or file that fail this are ignored, never passed to a kernel launch.)"""
    if not isinstance(c, dict):
        return False
    keys = set(c)
    if not set(_CFG_INTS) <= keys <= set(_CFG_INTS) | set(_CFG_OPTIONAL):
        return False
    for k, v in c.items():
        if not isinstance(v, int) or isinstance(v, bool):
            return False
        lo, hi = _CFG_INTS.get(k) or _CFG_OPTIONAL[k]
        if not lo <= v <= hi or (k in _POW2 and v & (v - 1)):
            return False
    return True


# -- tile-search files (the format: module docstring, configs/README.md) -----------------------------------
CONFIG_DIR = os.path.join(HERE, "configs")
_WQ_BITS = {"bf16": 16, "int8": 8, "int4": 4, "fp8": 8, "fp8a8": 8}
_ACT = {"torch.bfloat16": ("bf16", 16), "torch.float16": ("fp16", 16), "torch.float32": ("fp32", 32)}


def user_config_dir() -> str:
    from moec.targets.cpu import cache_dir
    return os.environ.get("MOEC_TRITON_CONFIGS") or os.path.join(cache_dir(), "triton_configs")


def dtype_tag(dtype: str, wq: str) -> str:
    """``bf16`` for bf16 activations and weights; ``int8_w8a16`` for int8 weights with bf16 activations;
    ``fp8_w8a8`` for fp8 weights with fp8 activations (wq "fp8a8": the runtime's key for w8a8)."""
    if wq == "fp8a8":
        return "fp8_w8a8"
    act, bits = _ACT.get(dtype, (dtype.replace("torch.", ""), 0))
    return act if wq in ("none", "", None) else f"{wq}_w{_WQ_BITS.get(wq, 0)}a{bits}"


def config_file_name(E: int, N: int, K: int, device_name: str, dtag: str) -> str:
    return f"E={E},N={N},K={K},device_name={device_name},dtype={dtag}.json"


def to_entry(cfg: dict) -> dict:
    """The runtime's configuration as a file entry (up and down projections apart)."""
    def part(i):
        w = cfg.get("num_warps", 4) if i == 1 else cfg.get("num_warps2", cfg.get("num_warps", 4))
        st = cfg.get("num_stages", 2) if i == 1 else cfg.get("num_stages2", cfg.get("num_stages", 2))
        g1 = cfg.get("GROUP_SIZE_M1", DEFAULT_GROUP_M)
        out = {"BLOCK_SIZE_N": cfg[f"BLOCK_N{i}"], "BLOCK_SIZE_K": cfg[f"BLOCK_K{i}"],
               "GROUP_SIZE_M": g1 if i == 1 else cfg.get("GROUP_SIZE_M2", g1),
               "SPLIT_K": cfg.get(f"SPLIT_K{i}", 1), "num_warps": w, "num_stages": st}
        for k in ("SWAP_AB", "PERSISTENT"):  # (absent: the runtime's default rule)
            if f"{k}{i}" in cfg:
                out[k] = cfg[f"{k}{i}"]
        return out
    return {"BLOCK_SIZE_M": cfg["BLOCK_M"], "up": part(1), "down": part(2)}


def from_entry(entry) -> Optional[dict]:
    """A file entry as the runtime's configuration, or None when it is not a valid one (files are untrusted)."""
    try:
        up, down = entry["up"], entry["down"]
        c = {"BLOCK_M": entry["BLOCK_SIZE_M"], "BLOCK_N1": up["BLOCK_SIZE_N"], "BLOCK_K1": up["BLOCK_SIZE_K"],
             "BLOCK_N2": down["BLOCK_SIZE_N"], "BLOCK_K2": down["BLOCK_SIZE_K"], "num_warps": up["num_warps"],
             "num_stages": up["num_stages"], "num_warps2": down["num_warps"], "num_stages2": down["num_stages"],
             "GROUP_SIZE_M1": up["GROUP_SIZE_M"], "GROUP_SIZE_M2": down["GROUP_SIZE_M"],
             "SPLIT_K1": up.get("SPLIT_K", 1), "SPLIT_K2": down.get("SPLIT_K", 1)}
        for k in ("SWAP_AB", "PERSISTENT"):
            for i, part in ((1, up), (2, down)):
                if k in part:
                    c[f"{k}{i}"] = part[k]
    except (TypeError, KeyError, AttributeError):
        return None
    return c if valid_config(c) else None


def _load_raw(path: str) -> dict:
    """A JSON object file (at most 64 MiB), re-read only when its modification time changes; {} otherwise."""
    try:
        mt = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    hit = _LOADED.get(("raw", path))
    if hit and hit[0] == mt:
        return hit[1]
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(64 << 20).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    _LOADED[("raw", path)] = (mt, data)
    return data


def file_entries(path: str) -> Dict[int, dict]:
    """{token count: configuration} of one tile-search file (invalid entries and metadata left out)."""
    out = {}
    for k, v in _load_raw(path).items():
        if isinstance(k, str) and k.isdigit() and len(k) < 10:
            c = from_entry(v)
            if c is not None:
                out[int(k)] = c
    return out


def save_entries(path: str, entries: Dict[int, dict], meta: Optional[dict] = None) -> None:
    """Write (merge) {token count: configuration} into the tile-search file at path, atomically."""
    data = {k: v for k, v in _load_raw(path).items() if not (isinstance(k, str) and k.isdigit())}
    data.update({str(m): to_entry(c) for m, c in file_entries(path).items()})
    data.update({str(m): to_entry(c) for m, c in entries.items()})
    if meta:
        data.update(meta)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(dict(sorted(data.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit()
                                                             else 0, kv[0]))), f, indent=1)
    os.replace(tmp, path)


# GPUs whose shipped defaults also serve another GPU of the same architecture and SM count
# (the H200 is an H100 die with more and faster HBM: same tiles fit, same occupancy).
SAME_TILES = {"NVIDIA_H200": "NVIDIA_H100_80GB_HBM3", "NVIDIA_H100_SXM": "NVIDIA_H100_80GB_HBM3",
              "NVIDIA_H800": "NVIDIA_H100_80GB_HBM3", "NVIDIA_H20": "NVIDIA_H100_80GB_HBM3"}


def _sibling(name: str) -> Optional[str]:
    for prefix, sib in SAME_TILES.items():
        if name.startswith(prefix) and name != sib:
            return sib
    return None


def sm_count() -> int:
    try:
        import torch
        return int(torch.cuda.get_device_properties(0).multi_processor_count)
    except Exception:  # noqa: BLE001 - no GPU
        return 0


def auto_split(cfg: dict, p: dict, sms: int) -> dict:
    """Generic rule for GPUs without a measured entry: when a grouped GEMM would launch fewer programs
    than 2 per SM, split its reduction so that it does (at most 8 slices, each >= 4 K tiles).
    Programs counted as in the decode regime: min(T*k, E) expert blocks of one tile each."""
    if sms <= 0:
        return cfg
    blocks = max(1, min(p["T"] * p["k"], p["E"]))
    out = dict(cfg)
    for which, n_out, kd in ((1, p["F"], p["D"]), (2, p["D"], p["F"])):
        progs = blocks * -(-n_out // cfg[f"BLOCK_N{which}"])
        if progs >= 2 * sms:
            continue
        steps = -(-kd // cfg[f"BLOCK_K{which}"])
        out[f"SPLIT_K{which}"] = max(1, min(8, -(-2 * sms // progs), steps // 4))
    return out


_MEMO: Dict[tuple, dict] = {}
_MEMO_STAMP = [0.0]
MEMO_SECONDS = 1.0  # a tuning file written by another process is seen within this


def config_for(kind: str, p: dict) -> dict:
    """The tile configuration for one launch (do not modify the returned dict).  Called on every
    grouped-GEMM launch, so the answer is memoised: the lookup (file stats, key, fallbacks) cost
    17 us per call on the development CPU, a share of a decode step's whole budget on a GPU."""
    name = gpu_name()
    if name == "interpreter":
        return {"BLOCK_M": 16, "BLOCK_N1": 32, "BLOCK_K1": 32, "BLOCK_N2": 32, "BLOCK_K2": 32, "num_warps": 4,
                "num_stages": 1}
    mk = (kind, p["E"], p["D"], p["F"], p["k"], token_bucket(p["T"]), p["dtype"], p["wq"], name)
    now = time.monotonic()
    if now - _MEMO_STAMP[0] > MEMO_SECONDS:
        _MEMO.clear()
        _MEMO_STAMP[0] = now
    c = _MEMO.get(mk)
    if c is None:
        c = _MEMO[mk] = _lookup(kind, p, name)
    return c


def source_of(kind: str, p: dict) -> str:
    """Where config_for's answer for p comes from (the bench reports it)."""
    name = gpu_name()
    return "interpreter default" if name == "interpreter" else _resolve(kind, p, name)[1]


def _lookup(kind: str, p: dict, name: str) -> dict:
    return _resolve(kind, p, name)[0]


def _resolve(kind: str, p: dict, name: str) -> tuple:
    """(configuration, where it came from): the lookup order of the module docstring."""
    sib = _sibling(name)
    names = [name] + ([sib] if sib else [])
    data = _load(cache_path())
    for n in names:
        c = data.get(_key(kind, p, n))
        if c:
            return c, "autotune cache"
    # the files' token counts together (a searched file adds to and overrides the shipped one's), the
    # nearest token count serving (as vLLM); this GPU's own files before its sibling's
    for n in names:
        got: Dict[int, tuple] = {}
        for d, what in ((CONFIG_DIR, "shipped tile-search file"), (user_config_dir(), "tile-search file")):
            f = os.path.join(d, config_file_name(p["E"], p["F"], p["D"], n, dtype_tag(p["dtype"], p["wq"])))
            got.update({m: (c, f"{what} {os.path.basename(f)} M={m}") for m, c in file_entries(f).items()})
        if got:
            return got[min(got, key=lambda t: (abs(t - p["T"]), t))]
    rows = p["T"] * p["k"] / max(p["E"], 1)  # rows per expert
    c = candidates_for(rows)[0 if rows <= 64 else 2]
    return (auto_split(c, p, sm_count()) if rows <= 16 else c), "generic rule"


def _sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def autotune(kind: str, p: dict, run: Callable[[dict], None], candidates: Optional[List[dict]] = None,
             reps: int = 10) -> dict:
    """Time ``run(cfg)`` for each candidate on the GPU, cache and return the fastest."""
    import torch
    best, best_t = None, float("inf")
    results = []
    for c in candidates or candidates_for(p["T"] * p["k"] / max(p["E"], 1)):
        try:
            run(c)
            _sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                run(c)
            _sync()
            t = (time.perf_counter() - t0) / reps
        except Exception as e:  # noqa: BLE001 - a config that does not compile (shared memory) is skipped
            results.append({"cfg": c, "error": str(e).splitlines()[0][:120]})
            continue
        results.append({"cfg": c, "ms": t * 1e3})
        if t < best_t:
            best, best_t = c, t
    if best is None:
        raise RuntimeError(f"no tile configuration ran for {kind} {p}: {results}")
    path = cache_path()
    data = dict(_load(path))  # (only valid entries: a damaged file is rewritten without its bad ones)
    data[_key(kind, p)] = best
    tmp = f"{path}.{os.getpid()}.tmp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    _MEMO.clear()
    return best

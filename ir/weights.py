"""Weights held by reference.

A :class:`WeightStore` maps resource keys to numpy arrays.  On disk it is two
files beside the module text: ``<stem>.weights.bin`` (raw little-endian data,
each tensor 64-byte aligned) and ``<stem>.weights.json`` (key -> dtype, shape,
offset, nbytes).  Loading memory-maps the binary, so a large model is not
read into memory until used.  The generated C reads the same file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Dict, Iterator

import numpy as np

from moec.ir.types import DType
from moec.ir import weight_layouts

ALIGN = 64
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.$-]*")


class WeightStore:
    def __init__(self):
        self._arrays: Dict[str, np.ndarray] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._arrays[key]
        except KeyError:
            raise KeyError(f"weight '{key}' is not in the module's weight store") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def items(self):
        return self._arrays.items()

    def add(self, array: np.ndarray, hint: str = "w") -> str:
        """Store an array under a fresh key derived from ``hint``; return the key."""
        base = re.sub(r"[^A-Za-z0-9_.]", "_", hint) or "w"
        if not re.match(r"[A-Za-z_]", base):
            base = "w_" + base
        key, n = base, 1
        while key in self._arrays:
            key = f"{base}_{n}"
            n += 1
        self._arrays[key] = np.asarray(array, order="C")
        return key

    def set(self, key: str, array: np.ndarray) -> None:
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"bad weight key '{key}'")
        self._arrays[key] = np.asarray(array, order="C")

    def remove_unused(self, used) -> None:
        for k in list(self._arrays):
            if k not in used:
                del self._arrays[k]

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._arrays.values()))

    def digest(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self._arrays):
            a = self._arrays[k]
            h.update(k.encode())
            h.update(str(a.dtype).encode())
            h.update(str(a.shape).encode())
            h.update(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8)))  # (any dtype, bf16 too)
        return h.hexdigest()

    # -- files -------------------------------------------------------------
    def save(self, bin_path: str, index_path: str) -> Dict[str, dict]:
        index: Dict[str, dict] = {}
        off = 0
        with open(bin_path, "wb") as f:
            for k in sorted(self._arrays):
                a = np.asarray(self._arrays[k], order="C")
                pad = (-off) % ALIGN
                f.write(b"\0" * pad)
                off += pad
                data = a.tobytes()
                f.write(data)
                index[k] = {"dtype": DType.from_np(a.dtype).mlir, "shape": list(a.shape),
                            "offset": off, "nbytes": len(data)}
                off += len(data)
        with open(index_path, "w") as f:
            json.dump(index, f, indent=1, sort_keys=True)
        return index

    @staticmethod
    def load(bin_path: str, index_path: str) -> "WeightStore":
        with open(index_path) as f:
            index = json.load(f)
        ws = WeightStore()
        size = os.path.getsize(bin_path)
        mm = np.memmap(bin_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        for k, e in index.items():
            dt = DType.parse(e["dtype"]).np
            raw = mm[e["offset"]: e["offset"] + e["nbytes"]]
            lay = e.get("layout")
            if lay is not None:  # stored as the kernels read it; the module sees the plain array
                ws._arrays[k] = unpack_layout(raw.view(dt), lay, e["shape"])
            else:
                ws._arrays[k] = raw.view(dt).reshape(e["shape"])
        return ws


def unpack_layout(flat: np.ndarray, layout: dict, shape) -> np.ndarray:
    """A weight a backend stored in its kernels' layout, back as the plain array of ``shape``.
    ``gemm_panels`` (the C target's GEMM, codegen/c/gemm_pack.py): op(w) [K, N] as [N/nr][K][nr] panels,
    op = transpose when ``trans``."""
    if layout.get("kind") != "gemm_panels":  # (the expert and bf16 panels: ir/weight_layouts.py)
        return weight_layouts.unpack(flat, layout, shape)
    if layout.get("kind") != "gemm_panels" or len(shape) != 2:
        raise ValueError(f"unknown weight layout {layout!r}")
    nr, trans = int(layout["nr"]), bool(layout["trans"])
    K, N = (shape[1], shape[0]) if trans else tuple(shape)
    w = np.asarray(flat).reshape(-1, K, nr).transpose(1, 0, 2).reshape(K, -1)[:, :N]
    return np.ascontiguousarray(w.T if trans else w)

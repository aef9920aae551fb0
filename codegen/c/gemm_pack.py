"""Compile-time packing of dense weights for the C target's GEMM (runtime: rt_gemm_f32.c).

Every f32 ``moec.matmul`` / ``moec.gemm`` whose right operand is a 2-D weight from the weights file
gets that weight's panels: op(B) as [K, N], cut into column panels of NR (the last zero-padded) and
laid out [ceil(N/NR)][K][NR], so the micro-kernel streams one contiguous panel per NR output columns.
NR is twice the vector width the runtime is compiled for (``-DMOEC_VBYTES`` in the target's flags;
the runtime checks it at each call).

Only what the kernels read is stored.  A weight whose every user is a packed op (one orientation) and
whose N is a multiple of NR has panels exactly its own size: they are written over the weight's bytes
in the weights file, and its entry in model.weights.json says so (``layout``: the IR's weight store
unpacks it when the artifact's module is loaded, ir/weights.py); the generated code binds the
constant there too (its shape is all the packed kernels read of it).  Any other weight (another user
reads the plain matrix, or N needs a zero-padded last panel) keeps its bytes and gets its panels
appended after the IR's entries (not in model.weights.json: the IR module never sees them).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from moec.ir import DType, Module
from moec.ir.core import ResourceRef

ALIGN = 64


def panel_width(cflags) -> int:
    """NR for a target's compiler flags (the runtime's GNR: 2 * MOEC_VBYTES / 4)."""
    vbytes = 16
    for f in cflags or ():
        if f.startswith("-DMOEC_VBYTES="):
            vbytes = int(f.split("=", 1)[1])
    return 2 * vbytes // 4


def _weight_key(v) -> Optional[str]:
    o = v.owner
    if o is None or o.name != "moec.constant":
        return None
    val = o.attrs.get("value")
    return val.key if isinstance(val, ResourceRef) else None


def plan(module: Module) -> Dict[int, Tuple[str, bool]]:
    """id(op) -> (weight key, transposed) for every matmul/gemm the packed kernel can run."""
    out: Dict[int, Tuple[str, bool]] = {}
    for o in module.main.ops:
        if o.name not in ("moec.matmul", "moec.gemm", "moec.linear"):
            continue
        a, b = o.operands[:2]
        if a.type.dtype != DType.F32 or b.type.dtype != DType.F32 or b.type.rank != 2:
            continue
        if o.name in ("moec.matmul", "moec.linear") and a.type.rank < 1:
            continue
        if o.name == "moec.gemm" and a.type.rank != 2:
            continue
        if not all(isinstance(d, int) for d in b.type.shape):
            continue
        key = _weight_key(b)
        if key is None:
            continue
        out[id(o)] = (key, bool(o.name == "moec.gemm" and o.attrs["trans_b"]))
    return out


def pack_panels(w: np.ndarray, nr: int, trans: bool = False) -> np.ndarray:
    """op(w) ([K, N]) as [ceil(N/nr), K, nr] panels, zero-padded (the reference of the layout)."""
    w = np.asarray(w, dtype=np.float32)
    if trans:
        w = w.T
    K, N = w.shape
    P = (N + nr - 1) // nr
    padded = np.zeros((K, P * nr), np.float32)
    padded[:, :N] = w
    return np.ascontiguousarray(padded.reshape(K, P, nr).transpose(1, 0, 2))


def _in_place(module: Module, ops: Dict[int, Tuple[str, bool]]) -> Dict[str, bool]:
    """weight key -> orientation, for the weights only packed ops read (in every function)."""
    orient: Dict[str, set] = {}
    other = set()
    for f in module.functions:
        for o in f.ops:
            for i, v in enumerate(o.operands):
                key = _weight_key(v)
                if key is None:
                    continue
                kt = ops.get(id(o))
                if i == 1 and kt is not None and kt[0] == key:
                    orient.setdefault(key, set()).add(kt[1])
                else:
                    other.add(key)
        for v in f.outputs:
            key = _weight_key(v)
            if key is not None:
                other.add(key)
    return {k: next(iter(t)) for k, t in orient.items() if k not in other and len(t) == 1}


def append_packs(module: Module, bin_path: str, nr: int) -> Dict[int, dict]:
    """Pack the planned weights into ``bin_path``; id(op) -> {offset, nbytes, shape, nr} (one entry shared
    by every op packing the same weight the same way).  Panels the size of their weight replace it in
    place (model.weights.json beside ``bin_path`` records the layout); the others are appended."""
    ops = plan(module)
    if not ops:
        return {}
    index_path = bin_path[:-len(".bin")] + ".json" if bin_path.endswith(".bin") else None
    index = None
    if index_path and os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    in_place = _in_place(module, ops) if index is not None else {}
    by_key: Dict[Tuple[str, bool], dict] = {}
    out: Dict[int, dict] = {}
    with open(bin_path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        off = f.tell()
        for oid, kt in ops.items():
            e = by_key.get(kt)
            if e is None:
                p = pack_panels(module.weights[kt[0]], nr, kt[1])
                data = p.tobytes()
                ent = index.get(kt[0]) if index is not None else None
                if in_place.get(kt[0]) == kt[1] and ent is not None and ent["nbytes"] == len(data) \
                        and ent.get("dtype") == "f32":
                    f.seek(ent["offset"])
                    f.write(data)
                    ent["layout"] = {"kind": "gemm_panels", "nr": nr, "trans": kt[1]}
                    e = by_key[kt] = {"offset": ent["offset"], "nbytes": len(data), "shape": list(p.shape), "nr": nr,
                                      "in_place": True}
                else:
                    pad = (-off) % ALIGN
                    f.seek(off)
                    f.write(b"\0" * pad)
                    off += pad
                    f.write(data)
                    e = by_key[kt] = {"offset": off, "nbytes": len(data), "shape": list(p.shape), "nr": nr}
                    off += len(data)
            out[oid] = e
    if any(e.get("in_place") for e in by_key.values()):
        with open(index_path, "w") as f:
            json.dump(index, f, indent=1, sort_keys=True)
    return out

"""Fuzzing the --inputs FILE.npz reader (issue 15 item 23): mutated .npz files (byte flips, truncation,
inserted bytes, headers rewritten with hostile shapes and dtypes, members renamed or added, compressed
and stored archives) through moec.verify.load_inputs_npz against a model's inputs.  Every file must be
either accepted with arrays that match the model's inputs, or refused with one UserInputError line:
counted are tracebacks (any other exception), multi-line messages and accepted files that do not fit.

Quick subset by default; `MOEC_FUZZ_LONG=1 python -m pytest -q -m slow tests/fuzz` runs the long one."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.errors import UserInputError

LONG = bool(os.environ.get("MOEC_FUZZ_LONG"))


def _model_fn():
    from moec.frontend.onnx_import import import_model
    m = make_model([helper.make_node("Reshape", ["x", "s"], ["y"])], [("x", np.float32, ["T", 4]), ("s", np.int64, [2])],
                   [("y", np.float32, [None, None])], name="npz_fuzz")
    return import_model(m).main


def _valid(rng, compressed):
    T = int(rng.integers(0, 5))
    b = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(b, x=rng.standard_normal((T, 4)).astype(np.float32),
                                                        s=np.array([T, 4], np.int64))
    return b.getvalue()


def _rewrite_member(data: bytes, rng) -> bytes:
    """The archive with one member replaced by a .npy whose header claims a hostile shape/dtype."""
    zin = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in zin.infolist():
            body = zin.read(info)
            if rng.random() < 0.5:
                shape = tuple(int(rng.choice([0, 1, 2, 4, 2 ** 31, 2 ** 62, 10 ** 12])) for _ in range(rng.integers(0, 4)))
                descr = str(rng.choice(["<f4", "<i8", "|O", "<f2", "|b1", "<c16", "V8", ">f4", "<U3"]))
                hdr = io.BytesIO()
                try:
                    np.lib.format.write_array_header_1_0(hdr, {"descr": descr, "fortran_order": bool(rng.random() < 0.2),
                                                               "shape": shape})
                except Exception:  # (numpy refuses to write it: keep the original)
                    hdr = None
                if hdr is not None:
                    body = hdr.getvalue() + bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8))
            name = info.filename if rng.random() < 0.8 else str(rng.choice(["x.npy", "s.npy", "../x.npy", "z.npy",
                                                                            "x", "x.npy/", "\n.npy", "s.npy"]))
            try:
                z.writestr(name, body)
            except Exception:
                z.writestr(info.filename, body)
        if rng.random() < 0.1:
            z.writestr("extra.npy", b"\x93NUMPY")
    return out.getvalue()


def _mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    r = rng.random()
    if r < 0.3 and b:
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif r < 0.45:
        b = b[: int(rng.integers(0, len(b) + 1))]
    elif r < 0.55:
        at = int(rng.integers(0, len(b) + 1))
        b[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8))
    else:
        return _rewrite_member(data, rng)
    return bytes(b)


def _run(n, tmp_path, seed):
    from moec.verify import load_inputs_npz
    f = _model_fn()
    rng = np.random.default_rng(seed)
    counts = {"cases": 0, "accepted": 0, "refused": 0, "tracebacks": 0, "multi_line": 0, "wrong_accepted": 0}
    bad = []
    for i in range(n):
        data = _mutate(_valid(rng, rng.random() < 0.5), rng)
        p = tmp_path / f"c{i % 4}.npz"
        p.write_bytes(data)
        counts["cases"] += 1
        try:
            got = load_inputs_npz(str(p), f)
        except UserInputError as e:
            counts["refused"] += 1
            if "\n" in str(e).strip():
                counts["multi_line"] += 1
                bad.append(str(e))
            continue
        except Exception as e:  # noqa: BLE001 - what is counted
            counts["tracebacks"] += 1
            bad.append(f"{type(e).__name__}: {e}")
            continue
        counts["accepted"] += 1
        x, s = got["x"], got["s"]
        if not (list(got) == ["x", "s"] and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 4
                and s.dtype == np.int64 and s.shape == (2,)):
            counts["wrong_accepted"] += 1
            bad.append(f"accepted {[(k, v.dtype, v.shape) for k, v in got.items()]}")
    print(f"\nnpz inputs fuzz: {counts}")
    assert counts["tracebacks"] == 0 and counts["multi_line"] == 0 and counts["wrong_accepted"] == 0, bad[:5]
    assert counts["accepted"] and counts["refused"]


def test_fuzz_npz_inputs_quick(tmp_path):
    _run(300, tmp_path, seed=0)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long fuzz run: MOEC_FUZZ_LONG=1")
def test_fuzz_npz_inputs_long(tmp_path):
    _run(10000, tmp_path, seed=1)

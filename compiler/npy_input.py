"""Load a run-time input from a .npy file without trusting its header.

np.load allocates what the header claims before reading the data: a 128-byte file claiming 10^12
elements is a MemoryError (exit 3), or, where the allocation succeeds lazily, terabytes of address
space.  Here the header is parsed first and the array is read only when its shape is valid, within
moec's size limit (ir/limits.py), and exactly as large as the data that follows the header."""
from __future__ import annotations

import os

import numpy as np

from moec.errors import UserInputError
from moec.ir.limits import shape_problem


def load_npy_input(path: str, what: str) -> np.ndarray:
    """The array in the .npy file ``path``; UserInputError (one line) for anything else."""
    from numpy.lib import format as npf
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            version = npf.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npf.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = npf.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            data_at = f.tell()
    except (OSError, ValueError, EOFError) as e:
        raise UserInputError(f"{what}: cannot read '{path}' as a .npy file: {e}") from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise UserInputError(f"{what}: '{path}' holds a {dtype} array; only plain numeric arrays are inputs")
    bad = shape_problem(shape)
    if bad:
        raise UserInputError(f"{what}: '{path}' claims an array of {bad}")
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    if size - data_at != need:
        raise UserInputError(f"{what}: '{path}' is damaged: its header claims {list(shape)} x {dtype} "
                             f"({need} bytes of data) but the file holds {size - data_at}")
    try:
        arr = np.fromfile(path, dtype=dtype, count=count, offset=data_at)
    except (OSError, ValueError) as e:
        raise UserInputError(f"{what}: cannot read '{path}': {e}") from None
    arr = arr.reshape(shape, order="F" if fortran else "C")
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)


def save_npy(path: str, arr) -> None:
    """Write a .npy file by a rename of a complete temporary file beside it (a symlink at ``path`` is
    replaced, never written through)."""
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=".moec-out-", suffix=".npy.tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_input_names(names, given) -> None:
    """``given`` (input name -> file, from --input NAME=FILE.npy) names each of the model's inputs once."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UserInputError(f"unknown input(s) {', '.join(unknown)}; the model's inputs are: {', '.join(names)}")
    missing = [n for n in names if n not in given]
    if missing:
        raise UserInputError(f"missing input(s): {', '.join(missing)} (give each as --input NAME=FILE.npy)")

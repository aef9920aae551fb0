"""Loading and checking an ONNX model: the file, its external data, its structure.

The model file and its external data are untrusted.  moec reads external data itself
(:func:`_read_external`) rather than through onnx, whose containment of external data to the
model's folder changed across versions (symbolic links were followed out of the folder before
onnx 1.21, CVE-2026-27489): nothing outside the model's folder is read.  Every problem is a
:class:`UserInputError` (exit 2) with one line naming the model, the tensor and the reason.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from moec.errors import UserInputError, show_name


def _shown(s, limit: int = 120) -> str:
    """A name or path from the input, safe to print in one line (moec.errors.show_name)."""
    return show_name(s, limit)


# Bits per element of each ONNX element type whose data can be stored as raw bytes (external data).
_ELEM_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64,
              15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}


def _graph_tensors(g):
    """Every TensorProto a graph holds: initializers, sparse initializers, attribute tensors, subgraphs'."""
    for t in g.initializer:
        yield t
    for st in g.sparse_initializer:
        yield st.values
        yield st.indices
    for n in g.node:
        yield from _attr_tensors(n.attribute)


def _attr_tensors(attrs):
    for a in attrs:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        if a.HasField("sparse_tensor"):
            yield a.sparse_tensor.values
            yield a.sparse_tensor.indices
        for st in a.sparse_tensors:
            yield st.values
            yield st.indices
        if a.HasField("g"):
            yield from _graph_tensors(a.g)
        for sub in a.graphs:
            yield from _graph_tensors(sub)


def model_tensors(model):
    """Every TensorProto in the model (graph, subgraphs, functions)."""
    yield from _graph_tensors(model.graph)
    for fn in model.functions:
        for n in fn.node:
            yield from _attr_tensors(n.attribute)


def _is_external(t) -> bool:
    import onnx
    return t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL


def _external_nbytes(t, where: str) -> int:
    """Bytes the tensor's data takes (dims x element size), from the proto alone."""
    bits = _ELEM_BITS.get(t.data_type)
    if bits is None:
        raise UserInputError(f"{where}: element type {t.data_type} cannot be read from external data")
    n = 1
    for d in t.dims:
        if d < 0:
            raise UserInputError(f"{where}: the tensor has a negative dimension ({d})")
        n *= int(d)  # python ints: no overflow; a huge product fails the size check
    return (n * bits + 7) // 8


def _read_external(t, base_dir: str, label: str) -> None:
    """Read one external tensor's bytes into ``t.raw_data``, refusing anything outside the model's folder.

    The location must be a relative path without '..' whose resolved path (symbolic links followed) is
    inside the model's folder (symbolic links that stay inside are fine); the file is then opened component
    by component without following links (nothing can be swapped in between), must be a regular file with
    a single hard link (a hard link is indistinguishable from the file it links to, possibly outside the
    folder; onnx >= 1.21 refuses them too), and offset + length must lie within it, the length equal to
    the tensor's size (dims x element type)."""
    import stat
    import onnx
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    where = f"{label}: tensor '{_shown(t.name)}' with external data '{_shown(loc)}'"
    if t.data_type == onnx.TensorProto.STRING:
        raise UserInputError(f"{where}: string tensors cannot be stored as external data")
    if not loc or "\0" in loc:
        raise UserInputError(f"{where}: the external data location is empty or not a file name")
    if os.path.isabs(loc) or loc.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", loc):
        raise UserInputError(f"{where}: the location is an absolute path; external data must be a file "
                             "in the model's folder, named relative to it")
    if ".." in re.split(r"[/\\]", loc):
        raise UserInputError(f"{where}: the location leaves the model's folder ('..'); external data must "
                             "be a file in the model's folder")
    real_base = os.path.realpath(base_dir)
    real = os.path.realpath(os.path.join(base_dir, loc))
    if real == real_base or os.path.commonpath([real, real_base]) != real_base:
        raise UserInputError(f"{where}: the location resolves outside the model's folder (through a symbolic "
                             "link); copy the data file into the model's folder")
    try:
        offset = int(info.get("offset", "0") or "0")
        length = None if info.get("length", "") == "" else int(info["length"])
    except ValueError:
        raise UserInputError(f"{where}: offset/length are not integers") from None
    if offset < 0 or (length is not None and length < 0):
        raise UserInputError(f"{where}: negative offset or length")
    need = _external_nbytes(t, where)
    if length is not None and length != need:
        raise UserInputError(f"{where}: its length ({length} bytes) is not the tensor's size ({need} bytes "
                             "from its dims and element type)")
    parts = os.path.relpath(real, real_base).split(os.sep)
    dfd = fd = -1
    chunks = []
    try:
        dfd = os.open(real_base, os.O_RDONLY | os.O_DIRECTORY)
        for comp in parts[:-1]:
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a fifo, socket or device)"
            raise UserInputError(f"{where}: the location is {kind}")
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserInputError(f"{where}: the location is not a regular file")
        if st.st_nlink > 1:
            raise UserInputError(f"{where}: the data file has {st.st_nlink} hard links, so moec cannot tell that "
                                 "it belongs to the model's folder; copy it into the folder instead of linking")
        if offset > st.st_size or need > st.st_size - offset:
            raise UserInputError(f"{where}: the file has {st.st_size} bytes, too few for offset {offset} plus the "
                                 f"tensor's {need} bytes")
        got = 0
        while got < need:
            b = os.pread(fd, min(need - got, 1 << 30), offset + got)
            if not b:
                raise UserInputError(f"{where}: the file ended early (changed while reading?)")
            chunks.append(b)
            got += len(b)
    except OSError as e:
        raise UserInputError(f"{where}: cannot read it ({e.strerror or e}); external data must be a regular "
                             "file in the model's folder") from None
    finally:
        for x in (fd, dfd):
            if x >= 0:
                os.close(x)
    t.raw_data = b"".join(chunks)
    t.data_location = onnx.TensorProto.DEFAULT
    del t.external_data[:]


def load_onnx(path: str, info: Optional[dict] = None):
    """Load an ONNX file and its external data, or raise one clear UserInputError.

    moec reads the external data itself (:func:`_read_external`): nothing outside the model's folder is
    read, whatever the installed onnx does.  The model is then checked (:func:`check_model_proto`)."""
    import stat
    import onnx
    shown = _shown(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserInputError(f"model file '{shown}' does not exist") from None
    except OSError as e:
        raise UserInputError(f"model file '{shown}': cannot read it ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserInputError(f"'{shown}' is a directory, not an ONNX model file")
    if not stat.S_ISREG(st.st_mode):
        raise UserInputError(f"'{shown}' is not a regular file (a fifo, socket or device), not an ONNX model file")
    if st.st_size == 0:
        raise UserInputError(f"'{shown}' is not a valid ONNX model (the file is empty)")
    if st.st_size >= 2 ** 31:
        raise UserInputError(f"'{shown}' is {st.st_size} bytes; a protobuf ONNX file holds at most 2 GiB "
                             "(store the weights as external data: onnx.save(..., save_as_external_data=True))")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UserInputError(f"model file '{shown}': cannot read it ({e.strerror or e})") from None
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError (and others) on garbage
        raise UserInputError(f"'{shown}' is not a valid ONNX model (cannot decode protobuf: "
                             f"{_shown(str(e).splitlines()[0] if str(e) else type(e).__name__)}); "
                             "check that the file is complete and really an .onnx file") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise UserInputError(f"'{shown}' is not a valid ONNX model (it has no graph); "
                             "check that the file is complete and really an .onnx file")
    base_dir = os.path.dirname(os.path.abspath(path))
    label = f"model '{shown}'"
    _check_text(model, label)  # (external data locations are text too)
    external = False
    for t in model_tensors(model):
        if _is_external(t):
            _read_external(t, base_dir, label)
            external = True
    # the file's bytes are the model serialised: onnx's checker reads them rather than a second serialisation
    # (with external data the bytes lack the weights read since); dropped after it, not held with the model
    check_model_proto(model, label, serialized=None if external else data)
    if info is not None:  # (whether the file alone is the model, and which file: see verify_artifact's model_file)
        info.update(self_contained=not external, stat=(st.st_size, st.st_mtime_ns, st.st_ino))
    return model


def _repeated(fd) -> bool:
    r = getattr(fd, "is_repeated", None)
    return bool(r) if r is not None else fd.label == fd.LABEL_REPEATED


def _non_utf8_field(msg, path: str = ""):
    """The path of the first string field holding bytes that are not UTF-8 (protobuf then hands out
    ``bytes`` instead of ``str``, for names, op types, dim_params ...), or None."""
    for fd, val in msg.ListFields():
        if fd.type == fd.TYPE_MESSAGE:
            for i, item in enumerate(val if _repeated(fd) else [val]):
                found = _non_utf8_field(item, f"{path}{fd.name}[{i}]." if _repeated(fd) else f"{path}{fd.name}.")
                if found:
                    return found
        elif fd.type == fd.TYPE_STRING:
            if any(isinstance(x, bytes) for x in (val if _repeated(fd) else [val])):
                return path + fd.name
    return None


def _check_text(model, label: str) -> None:
    bad = _non_utf8_field(model)
    if bad:
        raise UserInputError(f"{label} is not a valid ONNX model: the text field {bad} holds bytes that are not "
                             "UTF-8")


def check_structure(model, label: str) -> None:
    """What onnx's checker checks (not in every supported onnx version) and moec relies on: one writer per
    tensor name, graph inputs and initializers named once, no data left in external files, text fields that
    are text."""
    _check_text(model, label)
    g = model.graph
    seen_in = set()
    for vi in g.input:
        if vi.name in seen_in:
            raise UserInputError(f"{label} is not a valid ONNX model: graph input '{_shown(vi.name)}' is listed "
                                 "more than once")
        seen_in.add(vi.name)
    inits = set()
    for t in g.initializer:
        if t.name in inits:
            raise UserInputError(f"{label} is not a valid ONNX model: initializer '{_shown(t.name)}' is defined "
                                 "more than once")
        inits.add(t.name)
    defined = seen_in | inits
    for n in g.node:
        for o in n.output:
            if o == "":
                continue
            if o in defined:
                raise UserInputError(f"{label} is not a valid ONNX model: tensor '{_shown(o)}' is written by node "
                                     f"'{_shown(n.name or n.op_type)}' but is already defined (a graph input, an "
                                     "initializer or another node's output); each tensor has one writer")
            defined.add(o)
    for t in model_tensors(model):
        if _is_external(t):
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            raise UserInputError(f"{label}: tensor '{_shown(t.name)}' keeps its data in an external file "
                                 f"('{_shown(loc)}') that was not loaded; give moec the model's path (it reads "
                                 "external data from the model's folder), or load the model with onnx.load(path)")


def check_model_proto(model, label: str, serialized: Optional[bytes] = None) -> None:
    """Reject an invalid model up front (exit 2 naming the reason): moec's own structural checks, then
    onnx's checker (graph SSA and topological order, op schemas: inputs, outputs, attribute names and kinds).
    Not ``full_check``: its strict shape inference also enforces the schemas' type constraints, which real
    exports moec supports break (torch's bf16 TopK: tests/test_half.py), and it refuses declared shapes
    that contradict the inferred ones, which onnxruntime merges leniently.  A model over protobuf's 2 GiB
    limit (weights loaded in memory) gets moec's checks only.  ``serialized``: ``model`` as bytes where the caller
    has them (the file read), so that the checker does not need another serialisation of the weights."""
    import onnx
    check_structure(model, label)
    unshaped = list(_unshaped_tensor_types(model.graph))
    try:
        if model.ByteSize() >= 2 ** 31 - 1:
            return
        # A tensor type without a shape (unknown rank) is valid ONNX (IR.md: the shape is optional) and
        # onnxruntime runs such models, but the checker insists on the field for graph inputs/outputs: it
        # checks them with an empty placeholder shape, which is removed again whatever happens.
        for tt in unshaped:
            tt.shape.SetInParent()
        if serialized is not None and unshaped:  # (the placeholder shapes are not in the bytes)
            serialized = None
        onnx.checker.check_model(model if serialized is None else serialized, full_check=False)
    except Exception as e:  # noqa: BLE001 - ValidationError, InferenceError, ValueError, ...: all the model's fault
        msg = " ".join(str(e).split()) or type(e).__name__
        raise UserInputError(f"{label} is not a valid ONNX model (onnx checker: {_shown(msg, 300)})") from None
    finally:
        for tt in unshaped:
            tt.ClearField("shape")


def _unshaped_tensor_types(g):
    """The tensor types without a shape field among a graph's inputs, outputs and value_info (and those of
    its subgraphs)."""
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            yield vi.type.tensor_type
    for n in g.node:
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _unshaped_tensor_types(sub)

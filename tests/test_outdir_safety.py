"""Nothing the user owns is deleted or overwritten by moec's output directories (issue 15, items 5-9,
18 and the CLI part of 20): --force replaces only a real moec artifact and only the files it lists,
never the input model; builds are staged and published atomically (an exception, Ctrl-C or SIGKILL
leaves the previous artifact or nothing); --dump-ir needs --force too; `moec run` writes one file per
output and says when an artifact was never verified; a bad -o / --dump-ir is exit 2 with one line."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import helper

from helpers import make_model
from moec.cli import main

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "mixtral_like.onnx")


def _tiny(tmp_path, name="tiny.onnx", k=8, outputs=("y",)):
    """MatMul + Relu; ``outputs``: names of Identity copies of the result (hostile names allowed)."""
    rng = np.random.default_rng(k)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["r"])]
    nodes += [helper.make_node("Mul", ["r", f"s{i}"], [o], name=f"copy{i}") for i, o in enumerate(outputs)]
    inits = {"W": rng.standard_normal((k, 4)).astype(np.float32)}
    inits.update({f"s{i}": np.float32(i + 1) for i in range(len(outputs))})
    m = make_model(nodes, [("x", np.float32, ["T", k])], [(o, np.float32, ["T", 4]) for o in outputs], inits)
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(p))
    return p


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "moec", *map(str, args)], capture_output=True, text=True, **kw)


def _snapshot(d):
    """{relative path: sha256} of every file under d (symlinks as their target text)."""
    out = {}
    for dp, dns, fns in os.walk(d):
        for n in fns + [x for x in dns if os.path.islink(os.path.join(dp, x))]:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, d)
            out[rel] = ("link:" + os.readlink(p)) if os.path.islink(p) else \
                hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _siblings(parent):
    return sorted(os.listdir(parent))


def _one_line(err):
    lines = [x for x in err.splitlines() if x.strip()]
    return len(lines) == 1 and "Traceback" not in err


# -- item 5: --force replaces only a real moec artifact, only its listed files ---------------------------

def test_manifest_lists_every_file_the_build_wrote(tmp_path):
    out = tmp_path / "art"
    assert main(["compile", EXAMPLE, "-o", str(out)]) == 0
    man = json.load(open(out / "manifest.json"))
    assert man["moec_artifact"] == 1 and isinstance(man["moec_version"], str)
    assert sorted(man["files"]) == sorted(_snapshot(out))
    assert {"manifest.json", "report.json", "model.mlir", "model.so", "model.weights.bin"} <= set(man["files"])
    text = "".join(open(out / f, errors="replace").read() for f in man["files"] if f.endswith((".json", ".mlir", ".c")))
    assert ".moec-tmp" not in text  # nothing names the staging folder it was built in


@pytest.mark.parametrize("target", ["triton", "ascend"])
def test_other_targets_list_every_file_and_load_after_the_rename(tmp_path, target):
    """Triton's launcher and the Ascend emulator library are built in the staging folder; after the
    rename the artifact is complete (manifest == files on disk) and loads from where it is."""
    from moec.targets.registry import get_backend
    out = tmp_path / "art"
    assert main(["compile", EXAMPLE, "--target", target, "-o", str(out), "--no-verify"]) == 0
    man = json.load(open(out / "manifest.json"))
    assert sorted(man["files"]) == sorted(_snapshot(out))
    text = "".join(open(out / f, errors="replace").read() for f in man["files"]
                   if f.endswith((".json", ".mlir", ".py", ".txt", ".md", ".cpp")))
    assert ".moec-tmp" not in text  # no path into the staging folder survives in the artifact
    art = get_backend(target).load(str(out))
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    assert art([x])[0].shape == (3, 64)
    # loading may leave Python byte code beside the launcher: still moec's, --force replaces it
    assert main(["compile", EXAMPLE, "--target", target, "-o", str(out), "--no-verify", "--force"]) == 0
    assert sorted(json.load(open(out / "manifest.json"))["files"]) == sorted(_snapshot(out))


def test_force_refuses_a_foreign_manifest(tmp_path, capsys):
    p = _tiny(tmp_path)
    ext = tmp_path / "extension"
    ext.mkdir()
    (ext / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "my extension"}))
    (ext / "background.js").write_text("chrome.runtime.onInstalled.addListener(() => {});")
    before = _snapshot(ext)
    assert main(["compile", str(p), "-o", str(ext), "--force", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert "not a moec artifact" in err and _one_line(err)
    assert _snapshot(ext) == before


def test_force_refuses_a_symlinked_manifest(tmp_path, capsys):
    """A moec manifest reached through a symlink does not make a folder moec's."""
    p = _tiny(tmp_path)
    real = tmp_path / "real"
    assert main(["compile", str(p), "-o", str(real), "--no-verify"]) == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("mine")
    os.symlink(real / "manifest.json", victim / "manifest.json")
    before = _snapshot(victim)
    assert main(["compile", str(p), "-o", str(victim), "--force", "--no-verify"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert _snapshot(victim) == before
    # and an output path that is itself a symlink to a folder is refused, not followed
    link = tmp_path / "link"
    os.symlink(victim, link)
    assert main(["compile", str(p), "-o", str(link), "--force", "--no-verify"]) == 2
    assert _snapshot(victim) == before and os.path.islink(link)


def test_force_refuses_an_artifact_holding_other_files(tmp_path, capsys):
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "more.txt").write_text("more")
    before = _snapshot(out)
    assert main(["compile", str(p), "-o", str(out), "--force", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "did not write" in err and _one_line(err)
    assert _snapshot(out) == before


def test_crafted_manifest_cannot_name_files_outside_or_through_symlinks(tmp_path):
    """A manifest with moec's marker fields that lists ../ paths, or a folder that is a symlink out of
    the artifact: nothing outside is ever deleted."""
    from moec.artifact_dir import not_replaceable, remove_artifact
    p = _tiny(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "manifest.json").write_text(json.dumps({"moec_artifact": 1, "moec_version": "0.1.0",
                                                    "files": ["manifest.json", "../outside/precious.txt"]}))
    assert "outside the directory" in not_replaceable(str(evil))
    assert main(["compile", str(p), "-o", str(evil), "--force", "--no-verify"]) == 2
    evil2 = tmp_path / "evil2"
    evil2.mkdir()
    os.symlink(outside, evil2 / "sub")
    (evil2 / "manifest.json").write_text(json.dumps({"moec_artifact": 1, "moec_version": "0.1.0",
                                                     "files": ["manifest.json", "sub/precious.txt"]}))
    assert "sub" in not_replaceable(str(evil2))
    assert main(["compile", str(p), "-o", str(evil2), "--force", "--no-verify"]) == 2
    with pytest.warns(UserWarning, match="did not write"):
        assert remove_artifact(str(evil2)) is False  # (even called directly: the symlinked folder is kept)
    assert (outside / "precious.txt").read_text() == "keep" and os.path.islink(evil2 / "sub")


def test_force_replaces_an_earlier_artifact_and_only_its_files(tmp_path):
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", EXAMPLE, "--target", "ascend", "-o", str(out), "--no-verify"]) == 0
    old = set(_snapshot(out))
    assert any(f.startswith("ascend/") for f in old)
    assert main(["compile", str(p), "-o", str(out), "--force", "--no-verify"]) == 0
    new = _snapshot(out)
    assert sorted(json.load(open(out / "manifest.json"))["files"]) == sorted(new)
    assert not any(f.startswith("ascend/") for f in new)  # the old artifact's files went, folders too
    assert _siblings(tmp_path) == ["art", "tiny.onnx"]  # no staging or old folder left beside it


def test_an_old_style_manifest_is_not_replaced(tmp_path, capsys):
    """Before file lists, a manifest's "files" was a dict of roles: not enough to know what is moec's."""
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"moec_version": "0.1.0", "files": {"source": "model.c"}}))
    (out / "model.c").write_text("int x;")
    before = _snapshot(out)
    assert main(["compile", str(p), "-o", str(out), "--force", "--no-verify"]) == 2
    assert "list of the files" in capsys.readouterr().err
    assert _snapshot(out) == before


# -- item 6: never over the input model ---------------------------------------------------------------

def test_output_holding_the_input_model_is_refused(tmp_path, capsys):
    art = tmp_path / "art"
    p = _tiny(art, "my_model.onnx")
    (art / "notes.txt").write_text("notes")
    before = _snapshot(art)
    assert main(["compile", str(p), "-o", str(art), "--force", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert "input model" in err and _one_line(err)
    assert _snapshot(art) == before
    # also when that folder is an earlier moec artifact the model was put into, or contains the model's folder
    art2 = tmp_path / "art2"
    assert main(["compile", str(p), "-o", str(art2), "--no-verify"]) == 0
    p2 = _tiny(art2, "model2.onnx")
    before = _snapshot(art2)
    assert main(["compile", str(p2), "-o", str(art2), "--force", "--no-verify"]) == 2
    assert "input model" in capsys.readouterr().err
    assert _snapshot(art2) == before
    p3 = _tiny(tmp_path / "top" / "models", "m.onnx")
    assert main(["compile", str(p3), "-o", str(tmp_path / "top"), "--force", "--no-verify"]) == 2
    assert (p3).exists()


# -- item 7: staged builds, atomic publish ------------------------------------------------------------

def test_bad_model_leaves_the_earlier_artifact_intact(tmp_path):
    p = _tiny(tmp_path)
    out = tmp_path / "good"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    before = _snapshot(out)
    # a valid ONNX file moec cannot import (an unsupported op): found only after the model is read
    bad = tmp_path / "bad.onnx"
    onnx.save(make_model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="l", hidden_size=2)],
                         [("x", np.float32, [1, 1, 2]), ("w", np.float32, [1, 8, 2]), ("r", np.float32, [1, 8, 2])],
                         [("y", np.float32, [1, 1, 1, 2])], opset=17), str(bad))
    r = _cli("compile", bad, "-o", out, "--force")
    assert r.returncode == 2 and "LSTM" in r.stderr and "Traceback" not in r.stderr
    assert _snapshot(out) == before
    assert _siblings(tmp_path) == ["bad.onnx", "good", "tiny.onnx"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_build_leaves_the_old_artifact_or_nothing(tmp_path, monkeypatch, exc):
    """The toolchain dies mid-build (faked: the backend's build raises): the previous artifact stays as
    it was, a fresh target is not created (nor the parent folders made for it), nothing is left beside."""
    from moec.targets.registry import CpuBackend
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    before = _snapshot(out)

    def boom(self, outdir, sanitize=False):
        raise exc("toolchain went away")
    monkeypatch.setattr(CpuBackend, "build", boom)
    p2 = _tiny(tmp_path, "other.onnx", k=12)
    rc = main(["compile", str(p2), "-o", str(out), "--force", "--no-verify"])
    assert rc == (130 if exc is KeyboardInterrupt else 3)
    assert _snapshot(out) == before
    rc = main(["compile", str(p2), "-o", str(tmp_path / "new" / "deeper" / "art"), "--no-verify",
               "--dump-ir", str(tmp_path / "dumps")])
    assert rc == (130 if exc is KeyboardInterrupt else 3)
    assert _siblings(tmp_path) == (["art", "other.onnx", "tiny.onnx"] if exc is KeyboardInterrupt else
                                   ["art", "dumps", "other.onnx", "tiny.onnx"])  # dumps kept after a failure


def test_a_target_filled_by_someone_else_during_the_build_is_not_touched(tmp_path, monkeypatch, capsys):
    """Another program writes into -o while moec builds (faked: it happens during the backend's build):
    the build is not published over it, with or without --force, and the compile says so (exit 2)."""
    from moec.targets.registry import CpuBackend
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    real = CpuBackend.build

    def build_while_someone_writes(self, outdir, sanitize=False):
        out.mkdir(exist_ok=True)
        (out / "theirs.txt").write_text("written meanwhile")
        return real(self, outdir, sanitize)
    monkeypatch.setattr(CpuBackend, "build", build_while_someone_writes)
    for force in ([], ["--force"]):
        if out.exists():
            (out / "theirs.txt").unlink()
            out.rmdir()  # (absent when the build starts; filled during it)
        assert main(["compile", str(p), "-o", str(out), "--no-verify", *force]) == 2
        err = capsys.readouterr().err
        assert _one_line(err) and str(out) in err
        assert _snapshot(out) == {"theirs.txt": hashlib.sha256(b"written meanwhile").hexdigest()}
    assert _siblings(tmp_path) == ["art", "tiny.onnx"]


def test_interrupted_verification_publishes_nothing(tmp_path, monkeypatch):
    """Ctrl-C while verification runs (faked: onnxruntime's run is interrupted): no artifact without a
    report.json appears (the old code left one that `moec run` used silently), an earlier one is intact."""
    import moec.verify as verify
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out)]) == 0
    before = _snapshot(out)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(verify, "run_onnxruntime", interrupted)
    assert main(["compile", str(p), "-o", str(out), "--force"]) == 130
    assert main(["compile", str(p), "-o", str(tmp_path / "fresh")]) == 130
    assert _snapshot(out) == before and _siblings(tmp_path) == ["art", "tiny.onnx"]


def test_build_module_is_staged_too(tmp_path, monkeypatch):
    from moec.driver import build_module
    from moec.errors import UserInputError
    from moec.frontend.onnx_import import import_model
    from moec.targets.registry import CpuBackend
    p = _tiny(tmp_path)
    m = import_model(onnx.load(str(p)), "tiny")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")
    with pytest.raises(UserInputError, match="not a moec artifact"):
        build_module(m, str(mine))  # (force=True by default: still only moec's own artifacts)
    assert _snapshot(mine) == {"manifest.json": hashlib.sha256(b"{}").hexdigest()}
    art = build_module(m, str(tmp_path / "b"))
    x = np.ones((2, 8), np.float32)
    y0 = art([x])[0]

    def boom(self, outdir, sanitize=False):
        raise KeyboardInterrupt
    monkeypatch.setattr(CpuBackend, "build", boom)
    before = _snapshot(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        build_module(m, str(tmp_path / "b"))
    assert _snapshot(tmp_path / "b") == before and _siblings(tmp_path) == ["b", "mine", "tiny.onnx"]
    monkeypatch.undo()
    from moec.targets.registry import CpuArtifact
    np.testing.assert_array_equal(CpuArtifact(str(tmp_path / "b"))([x])[0], y0)


def test_sigkill_mid_build_leaves_the_old_artifact_and_the_next_build_cleans_up(tmp_path):
    """A real SIGKILL while the C compiler runs (a slow compiler: a wrapper that waits before exec'ing
    the real one, for the model's link step only)."""
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    before = _snapshot(out)
    mark = tmp_path / "linking"
    real_cc = subprocess.run(["sh", "-c", "command -v gcc || command -v cc"], capture_output=True,
                             text=True).stdout.strip()
    wrapper = tmp_path / "slowcc.sh"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -shared "*) touch "{mark}"; sleep 120;; esac\n'
                       f'exec "{real_cc}" "$@"\n')
    wrapper.chmod(0o755)
    # a model whose C source is new (another width), so the build cache cannot answer for the compiler
    p2 = _tiny(tmp_path, "other.onnx", k=int(time.time() * 1000) % 997 + 16)
    proc = subprocess.Popen([sys.executable, "-m", "moec", "compile", str(p2), "-o", str(out), "--force"],
                            env={**os.environ, "CC": str(wrapper)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not mark.exists():
            assert proc.poll() is None and time.time() - t0 < 120, "the compile never reached the link step"
            time.sleep(0.05)
        staging = [n for n in _siblings(tmp_path) if ".moec-tmp-" in n]
        assert len(staging) == 1 and os.path.exists(tmp_path / staging[0] / "model.c")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _snapshot(out) == before  # the earlier artifact, untouched
    r = _cli("run", out, "-i", f"x={_npy(tmp_path, (2, 8))}", "-o", tmp_path / "res")
    assert r.returncode == 0, r.stderr
    # the next build into the same target removes the killed one's staging folder
    assert main(["compile", str(p2), "-o", str(out), "--force", "--no-verify"]) == 0
    assert not [n for n in _siblings(tmp_path) if ".moec-" in n]


def test_stale_folders_of_killed_builds_are_cleaned_only_of_moecs_files(tmp_path):
    """What a killed process leaves beside OUTDIR: a staging folder (marked) and an earlier artifact moved
    aside mid-replacement.  The next build into OUTDIR removes them, except for a file moec did not write;
    folders of live processes and unmarked look-alikes stay."""
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # (a pid whose process is gone)
    old = tmp_path / f".art.moec-old-{dead.pid}-0000"
    assert main(["compile", str(p), "-o", str(old), "--no-verify"]) == 0
    tmp = tmp_path / f".art.moec-tmp-{dead.pid}-0001"
    tmp.mkdir()
    (tmp / ".moec-staging").write_text(str(dead.pid))
    (tmp / "model.c").write_text("half written")
    live = tmp_path / f".art.moec-tmp-{os.getpid()}-0002"  # this process: alive
    live.mkdir()
    (live / ".moec-staging").write_text(str(os.getpid()))
    lookalike = tmp_path / f".art.moec-tmp-{dead.pid}-0003"  # no marker: not known to be moec's
    lookalike.mkdir()
    (lookalike / "mine.txt").write_text("mine")
    old2 = tmp_path / f".art.moec-old-{dead.pid}-0004"
    assert main(["compile", str(p), "-o", str(old2), "--no-verify"]) == 0
    (old2 / "notes.txt").write_text("notes")
    with pytest.warns(UserWarning, match="did not write"):
        assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    assert not old.exists() and not tmp.exists()
    assert live.exists() and (lookalike / "mine.txt").read_text() == "mine"
    assert os.listdir(old2) == ["notes.txt"]


def _npy(tmp_path, shape, name="x.npy"):
    path = tmp_path / name
    np.save(path, np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    return path


def _wrong_oracle(monkeypatch):
    """onnxruntime answers wrongly (faked): verification must fail."""
    import moec.verify as verify
    real = verify.run_onnxruntime
    monkeypatch.setattr(verify, "run_onnxruntime", lambda *a, **k: [np.asarray(w) + 1.0 for w in real(*a, **k)])


def test_failed_verification_is_published_only_where_nothing_was(tmp_path, monkeypatch, capsys):
    p = _tiny(tmp_path)
    good = tmp_path / "good"
    assert main(["compile", str(p), "-o", str(good)]) == 0
    before = _snapshot(good)
    _wrong_oracle(monkeypatch)
    # over an earlier artifact: never replaced by a failed build, even with --force
    assert main(["compile", str(p), "-o", str(good), "--force"]) == 1
    err = capsys.readouterr().err
    assert "left unchanged" in err and _one_line(err)
    assert _snapshot(good) == before and json.load(open(good / "report.json"))["verified"] is True
    # into a new folder: kept for inspection, marked verified: false
    fresh = tmp_path / "fresh"
    assert main(["compile", str(p), "-o", str(fresh)]) == 1
    assert "verified: false" in capsys.readouterr().err
    rep = json.load(open(fresh / "report.json"))
    assert rep["verified"] is False and rep["failure"]
    assert main(["run", str(fresh), "-i", f"x={_npy(tmp_path, (3, 8))}", "-o", str(tmp_path / "r")]) == 0
    assert "FAILED verification" in capsys.readouterr().err
    assert not [n for n in _siblings(tmp_path) if ".moec-" in n]


def test_jit_cache_entries_list_every_file(tmp_path, moec_cache):
    import moec
    p = _tiny(tmp_path)
    cm = moec.compile(str(p), verify=False)
    d = cm.stats.outdir
    man = json.load(open(os.path.join(d, "manifest.json")))
    assert sorted(man["files"]) == sorted(_snapshot(d)) and "COMPLETE" in man["files"]
    assert not [n for n in os.listdir(os.path.dirname(d)) if n.endswith(".tmp") or ".moec-" in n]


# -- item 8: --dump-ir ---------------------------------------------------------------------------------

def test_dump_ir_never_overwrites_without_force_and_only_earlier_dumps_with_it(tmp_path, capsys):
    p = _tiny(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "00-import.mlir").write_text("my own notes")
    assert main(["compile", str(p), "-o", str(tmp_path / "o1"), "--no-verify", "--dump-ir", str(mine)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["compile", str(p), "-o", str(tmp_path / "o1"), "--no-verify", "--force",
                 "--dump-ir", str(mine)]) == 2
    assert (mine / "00-import.mlir").read_text() == "my own notes"
    assert not (tmp_path / "o1").exists()
    dumps = tmp_path / "dumps"
    assert main(["compile", str(p), "-o", str(tmp_path / "o2"), "--no-verify", "--dump-ir", str(dumps)]) == 0
    first = _snapshot(dumps)
    assert "00-import.mlir" in first and json.load(open(dumps / "manifest.json"))["kind"] == "ir-dump"
    assert main(["compile", str(p), "-o", str(tmp_path / "o3"), "--no-verify", "--dump-ir", str(dumps)]) == 2
    assert _snapshot(dumps) == first
    assert main(["compile", str(p), "-o", str(tmp_path / "o4"), "--no-verify", "--force",
                 "--dump-ir", str(dumps)]) == 0
    r = _cli("run", dumps, "-i", f"x={_npy(tmp_path, (2, 8))}")
    assert r.returncode == 2 and "IR dumps" in r.stderr


# -- item 9: one file per output ----------------------------------------------------------------------

def test_run_writes_one_distinct_safe_file_per_output(tmp_path, capsys):
    names = ("y/1", "y_1", "../up", ".hidden", "Y", "y", "z" * 300, "ok.out")
    p = _tiny(tmp_path, outputs=names)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    res = tmp_path / "res"
    assert main(["run", str(out), "-i", f"x={_npy(tmp_path, (3, 8))}", "-o", str(res)]) == 0
    printed = capsys.readouterr().out
    files = sorted(os.listdir(res))
    assert len(files) == len(names)  # nothing lost, nothing written outside res
    assert _siblings(tmp_path) == ["art", "res", "tiny.onnx", "x.npy"]
    assert "y_1.npy" in files and "ok.out.npy" in files
    assert all(not f.startswith(".") and "/" not in f and len(f) <= 120 for f in files)
    x = np.load(tmp_path / "x.npy")
    W = onnx.numpy_helper.to_array(next(t for t in onnx.load(str(p)).graph.initializer if t.name == "W"))
    relu = np.maximum(x @ W, 0)
    # output i is (i + 1) * relu: every multiplier found exactly once, so no output overwrote another
    found = sorted(round(float(np.load(res / f).sum() / relu.sum())) for f in files)
    assert found == list(range(1, len(names) + 1))
    assert "y_1.npy" in printed and "y/1: " in printed


def test_two_outputs_that_would_share_a_file_are_refused():
    from moec.artifact_dir import safe_file_names
    from moec.errors import UserInputError
    assert len(set(safe_file_names(["y/1", "y_1", "y:1", "y 1"]))) == 4
    with pytest.raises(UserInputError, match="same file"):
        safe_file_names(["y", "y"])


def test_run_output_symlink_is_replaced_not_written_through(tmp_path):
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    res = tmp_path / "res"
    res.mkdir()
    target = tmp_path / "elsewhere.txt"
    os.symlink(target, res / "y.npy")  # dangling: "exists" would say no
    assert main(["run", str(out), "-i", f"x={_npy(tmp_path, (2, 8))}", "-o", str(res)]) == 2
    assert not target.exists()
    assert main(["run", str(out), "-i", f"x={_npy(tmp_path, (2, 8))}", "-o", str(res), "--force"]) == 0
    assert not target.exists() and not os.path.islink(res / "y.npy") and np.load(res / "y.npy").shape == (2, 4)


# -- item 18: `moec run` says when an artifact was never verified ------------------------------------------

def test_run_warns_about_unverified_artifacts(tmp_path):
    p = _tiny(tmp_path)
    x = _npy(tmp_path, (2, 8))
    ok = tmp_path / "ok"
    assert main(["compile", str(p), "-o", str(ok)]) == 0
    r = _cli("run", ok, "-i", f"x={x}", "-o", tmp_path / "r0")
    assert r.returncode == 0 and "warning" not in r.stderr
    nv = tmp_path / "nv"
    assert main(["compile", str(p), "-o", str(nv), "--no-verify"]) == 0
    r = _cli("run", nv, "-i", f"x={x}", "-o", tmp_path / "r1")
    assert r.returncode == 0 and "never verified" in r.stderr and "--no-verify" in r.stderr
    os.remove(ok / "report.json")  # (as an artifact from an interrupted verification would look)
    r = _cli("run", ok, "-i", f"x={x}", "-o", tmp_path / "r2")
    assert r.returncode == 0 and "never verified" in r.stderr and "no report.json" in r.stderr
    assert _one_line(r.stderr)


# -- item 20 (CLI part): bad -o / --dump-ir ----------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty", "proc", "under_a_file", "a_file", "dump_is_a_file", "dump_is_out",
                                  "root"])
def test_bad_output_paths_are_exit_2_with_one_line(tmp_path, case):
    p = _tiny(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("mine")
    args = {"empty": ["-o", ""], "proc": ["-o", "/proc/moec_out"], "under_a_file": ["-o", f / "sub"],
            "a_file": ["-o", f], "dump_is_a_file": ["-o", tmp_path / "o", "--dump-ir", f],
            "dump_is_out": ["-o", tmp_path / "o", "--dump-ir", tmp_path / "o"], "root": ["-o", "/", "--force"]}[case]
    r = _cli("compile", p, *args)
    assert r.returncode == 2, r.stderr
    assert _one_line(r.stderr) and "internal error" not in r.stderr, r.stderr
    assert f.read_text() == "mine" and _siblings(tmp_path) == ["file.txt", "tiny.onnx"]


def test_run_bad_output_dir_is_exit_2(tmp_path):
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    x = _npy(tmp_path, (2, 8))
    for o in ("", str(x), "/proc/moec_out"):
        r = _cli("run", out, "-i", f"x={x}", "-o", o)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr

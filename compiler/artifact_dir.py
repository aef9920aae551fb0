"""Creating, publishing and replacing the directories moec writes (artifacts, IR dumps).

Every directory moec produces for the user goes through this module (``moec compile`` and
``compile_onnx``, ``build_module``, ``moec bench`` and ``moec conformance`` through them, and the JIT
cache), so these rules hold everywhere:

* A build is written into a private *staging* directory beside the target (same parent, so the
  final ``rename`` is atomic) and published only when it is complete.  An exception, Ctrl-C or a
  SIGKILL part-way leaves the target as it was (the previous artifact, or nothing); a staging
  directory left by a killed process is removed by the next build into the same target.
* ``manifest.json`` carries moec's marker fields (``moec_artifact``, ``moec_version``) and
  ``files``: every file the build wrote, relative to the directory, itself and report.json included.
* An existing non-empty target is replaced only with ``force`` and only when it is a real moec
  artifact: a regular (not symlinked) manifest.json with the marker fields, and nothing in the
  directory that its ``files`` list does not name.  The old and new directories are swapped in one
  atomic step (``renameat2(RENAME_EXCHANGE)``; two renames where the system lacks it), then only the
  files listed in the old manifest are unlinked and its then-empty folders removed.  A file moec did
  not write is never deleted.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
import stat
import warnings
from typing import Dict, Iterable, List, Optional, Sequence

from moec._version import __version__
from moec.errors import UserInputError

MANIFEST = "manifest.json"
FORMAT = 1                       # the value of the "moec_artifact" marker field
_STAGING_MARK = ".moec-staging"  # inside a staging directory while it is being written (holds the pid)
_MAX_MANIFEST_BYTES = 16 << 20


# -- what a directory is ---------------------------------------------------------------------------

def _valid_rel(p) -> bool:
    if not isinstance(p, str) or not p or p.startswith("/") or "\\" in p or "\x00" in p:
        return False
    return all(part not in ("", ".", "..") for part in p.split("/"))


def read_manifest(d: str) -> dict:
    """The parsed manifest of the moec directory ``d``; ValueError saying why ``d`` is not one (no
    manifest, a symlinked or oversized one, bad JSON, missing marker fields, a bad file list)."""
    p = os.path.join(d, MANIFEST)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise ValueError("no manifest.json") from None
    except OSError as e:
        raise ValueError(f"cannot read manifest.json: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ValueError("its manifest.json is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("its manifest.json is not a regular file")
    if st.st_size > _MAX_MANIFEST_BYTES:
        raise ValueError("its manifest.json is too large to be moec's")
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            man = json.loads(f.read(_MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read manifest.json: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError("its manifest.json is not valid JSON") from None
    if not isinstance(man, dict) or not isinstance(man.get("moec_version"), str):
        raise ValueError("its manifest.json is not moec's (no moec_version)")
    if man.get("moec_artifact") != FORMAT or not isinstance(man.get("files"), list):
        raise ValueError("its manifest.json has no list of the files moec wrote (written by another program, "
                         "or by a moec older than 0.1.0's file lists)")
    if not all(_valid_rel(x) for x in man["files"]):
        raise ValueError("its manifest.json lists a file outside the directory")
    return man


def _entries(d: str) -> List[tuple]:
    """(relative path, lstat mode) of everything under ``d`` except plain directories; symlinks are
    reported, never followed."""
    out = []
    for dp, dns, fns in os.walk(d, followlinks=False):
        rel = os.path.relpath(dp, d)
        for n in list(dns) + fns:
            p = os.path.join(dp, n)
            mode = os.lstat(p).st_mode
            if stat.S_ISDIR(mode):
                continue  # (os.walk descends into it)
            out.append(((n if rel == "." else f"{rel}/{n}").replace(os.sep, "/"), mode))
    return out


def _derived(rel: str, listed: set) -> bool:
    """``rel`` is Python's byte code of a listed ``.py`` file (``__pycache__/NAME.TAG.pyc``, written by
    the interpreter when the Triton launcher is loaded): moec's too."""
    parts = rel.split("/")
    if len(parts) < 2 or parts[-2] != "__pycache__" or not parts[-1].endswith(".pyc"):
        return False
    src = "/".join(parts[:-2] + [parts[-1].split(".", 1)[0] + ".py"])
    return src in listed


def not_replaceable(d: str) -> Optional[str]:
    """None when ``d`` is a moec artifact that may be replaced (with --force); else why not."""
    try:
        man = read_manifest(d)
    except ValueError as e:
        return f"it is not a moec artifact ({e})"
    listed = set(man["files"])
    try:
        entries = _entries(d)
    except OSError as e:
        return f"it cannot be read ({e.strerror})"
    foreign = sorted(rel for rel, mode in entries
                     if not stat.S_ISREG(mode) or (rel not in listed and not _derived(rel, listed)))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return (f"it holds files moec did not write ({', '.join(foreign[:3])}{more}); move them out of it "
                "first")
    return None


def _is_empty_dir(d: str) -> bool:
    try:
        with os.scandir(d) as it:
            return next(it, None) is None
    except NotADirectoryError:
        return False


def verification_warning(d: str) -> Optional[str]:
    """None when the artifact in ``d`` was verified; else a sentence saying it never was (no
    report.json: its verification never finished; --no-verify; verification failed)."""
    p = os.path.join(d, "report.json")
    if not os.path.isfile(p):
        return f"the artifact in '{d}' was never verified (it has no report.json)"
    try:
        with open(p, "rb") as f:
            rep = json.loads(f.read(_MAX_MANIFEST_BYTES).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return f"the artifact in '{d}' has an unreadable report.json: it may never have been verified"
    if not isinstance(rep, dict):
        return f"the artifact in '{d}' has an unreadable report.json: it may never have been verified"
    if rep.get("verified") is True:
        return None
    how = rep.get("verification")
    if isinstance(how, str) and how.startswith("skipped"):
        return f"the artifact in '{d}' was never verified (compiled with --no-verify)"
    if rep.get("verified") is False and rep.get("failure"):
        return f"the artifact in '{d}' FAILED verification: {str(rep['failure'])[:300]}"
    return f"the artifact in '{d}' was never verified (report.json does not say verified)"


# -- checking a target ------------------------------------------------------------------------------

def _inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies below it (both resolved)."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_target(final: str, force: bool, protect: Sequence[str] = (), flag: str = "-o") -> str:
    """Raise UserInputError (one line) unless a new moec directory may be published at ``final``;
    return its absolute path.  ``protect``: paths (the input model) the target must not contain."""
    if final is None or not str(final).strip():
        raise UserInputError(f"{flag}: the output path is empty; name a directory")
    final = os.fspath(final)
    if "\x00" in final:
        raise UserInputError(f"{flag}: the output path contains a NUL character")
    ab = os.path.abspath(final)
    if os.path.dirname(ab) == ab:
        raise UserInputError(f"{flag} '{final}' is the file system root; name a directory below it")
    cwd = os.getcwd()
    if os.path.lexists(ab) and _inside(cwd, ab):
        raise UserInputError(f"{flag} '{final}' is (or contains) the current directory; moec publishes a "
                             "directory by renaming it into place, so name another one")
    if os.path.islink(ab):
        raise UserInputError(f"{flag} '{final}' is a symbolic link; give the directory it points to, or "
                             "another path")
    if os.path.lexists(ab):
        if not os.path.isdir(ab):
            raise UserInputError(f"{flag} '{final}' exists and is not a directory; choose another {flag}")
        for p in protect:
            if p and os.path.exists(p) and _inside(os.path.dirname(os.path.abspath(p)), ab):
                raise UserInputError(f"{flag} '{final}' holds the input model '{p}'; moec never writes over "
                                     f"its input: choose another {flag}")
        try:
            empty = _is_empty_dir(ab)
        except OSError as e:
            raise UserInputError(f"{flag} '{final}' cannot be read: {e.strerror}") from None
        if not empty:
            if not force:
                raise UserInputError(f"output directory '{final}' already exists and is not empty; pass --force "
                                     f"to replace an earlier moec artifact there, or choose another {flag}")
            why = not_replaceable(ab)
            if why:
                raise UserInputError(f"refusing to replace '{final}' even with --force: {why}")
    return ab


# -- staging and publishing ---------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _staging_prefix(final: str) -> str:
    return f".{os.path.basename(final)[:96]}.moec-"


def clean_stale(final: str) -> None:
    """Remove staging directories beside ``final`` left by a killed moec process (named after the
    target, marked inside, and their process gone).  A previous artifact moved aside by an interrupted
    replacement loses only the files its manifest lists."""
    parent = os.path.dirname(final)
    prefix = _staging_prefix(final)
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for n in names:
        p = os.path.join(parent, n)
        kind, _, rest = n[len(prefix):].partition("-")
        pid = rest.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)) or os.path.islink(p):
            continue
        if kind == "tmp" and os.path.isfile(os.path.join(p, _STAGING_MARK)):
            shutil.rmtree(p, ignore_errors=True)
        elif kind == "old":
            remove_artifact(p)


def _staging_dir(final: str, tag: str) -> str:
    parent = os.path.dirname(final)
    for _ in range(100):
        p = os.path.join(parent, f"{_staging_prefix(final)}{tag}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(p)  # (mode 0777 & ~umask, as any directory the user creates; mkdtemp would give 0700)
            return p
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free staging name", final)


_renameat2 = None


def _exchange(a: str, b: str) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system lacks it."""
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    if not _renameat2:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(e, os.strerror(e), b)


def remove_artifact(d: str) -> bool:
    """Delete what moec wrote in ``d`` (the files its manifest lists, regular files only, never
    through a symlink), then its folders if that left them empty.  True when ``d`` is gone; False
    (with a warning) when something else stays."""
    try:
        man = read_manifest(d)
        files = man["files"]
    except ValueError:
        files = []
    root = os.path.abspath(d)
    try:
        listed = set(files)
        files = files + [rel for rel, mode in _entries(root) if rel not in listed and _derived(rel, listed)]
    except OSError:
        pass
    for rel in files:
        p = root
        ok = True
        for part in rel.split("/")[:-1]:  # every folder on the way: a real directory, not a symlink
            p = os.path.join(p, part)
            try:
                if not stat.S_ISDIR(os.lstat(p).st_mode):
                    ok = False
                    break
            except OSError:
                ok = False
                break
        if not ok:
            continue
        p = os.path.join(p, rel.split("/")[-1])
        try:
            if stat.S_ISREG(os.lstat(p).st_mode):
                os.unlink(p)
        except OSError:
            pass
    for dp, dns, fns in os.walk(root, topdown=False, followlinks=False):
        try:
            os.rmdir(dp)  # only empty folders go
        except OSError:
            pass
    if os.path.lexists(root):
        warnings.warn(f"moec: kept '{root}': it holds files moec did not write", stacklevel=2)
        return False
    return True


def record_files(d: str) -> dict:
    """Rewrite ``d``/manifest.json with ``files`` = every file now in ``d`` (itself included) and the
    marker fields; create a minimal manifest when there is none.  Returns it."""
    p = os.path.join(d, MANIFEST)
    man: Dict[str, object] = {}
    if os.path.isfile(p) and not os.path.islink(p):
        with open(p) as f:
            man = json.load(f)
    man = {"moec_artifact": FORMAT, "moec_version": __version__, **{k: v for k, v in man.items()
                                                                    if k not in ("moec_artifact", "files")}}
    files = {rel for rel, _ in _entries(d) if rel != _STAGING_MARK} | {MANIFEST}
    man["files"] = sorted(files)
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        json.dump(man, f, indent=1)
    os.replace(tmp, p)
    return man


def write_manifest(d: str, fields: dict) -> dict:
    """Write ``d``/manifest.json from ``fields`` plus the marker fields and the list of files so far
    (publishing brings the list up to date)."""
    with open(os.path.join(d, MANIFEST), "w") as f:
        json.dump(fields, f, indent=1)
    return record_files(d)


class Staging:
    """A private directory beside ``final`` to build into; ``publish()`` puts it in place.

    Use as a context manager: leaving the block without publishing (an exception, Ctrl-C) removes the
    staging directory and any parent folders it had to create, so the target is as it was::

        with Staging(outdir, force=opts.force, protect=[model_path]) as st:
            ... write into st.path ...
            st.publish()
    """

    def __init__(self, final: str, force: bool = False, protect: Sequence[str] = (), kind: str = "artifact",
                 flag: str = "-o"):
        self.final = check_target(final, force, protect, flag)
        self.shown = os.fspath(final)
        self.force = force
        self.kind = kind
        self.flag = flag
        self.published = False
        self._made_parents: List[str] = []
        parent = os.path.dirname(self.final)
        try:
            missing = []
            p = parent
            while not os.path.lexists(p):
                missing.append(p)
                p = os.path.dirname(p)
            for q in reversed(missing):
                os.mkdir(q)
                self._made_parents.append(q)
            clean_stale(self.final)
            self.path = _staging_dir(self.final, "tmp")
            with open(os.path.join(self.path, _STAGING_MARK), "w") as f:
                f.write(str(os.getpid()))
        except OSError as e:
            self._remove_parents()
            raise UserInputError(f"{flag} '{self.shown}': cannot create a directory there: "
                                 f"{e.strerror or e}") from None

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        if not self.published:
            self.discard()

    def discard(self) -> None:
        if self.path and os.path.isdir(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
        self._remove_parents()

    def _remove_parents(self) -> None:
        for q in reversed(self._made_parents):
            try:
                os.rmdir(q)
            except OSError:
                break
        self._made_parents = []

    def occupied(self) -> bool:
        """The target now holds something (an earlier artifact, files)."""
        return os.path.lexists(self.final) and not (os.path.isdir(self.final) and not os.path.islink(self.final)
                                                     and _is_empty_dir(self.final))

    def publish(self, replace: Optional[bool] = None, required: bool = True) -> bool:
        """Bring the manifest's file list up to date and move the build into place atomically.
        ``replace`` (default: ``force``): whether an earlier moec artifact there may be replaced.
        When the target is occupied and ``replace`` is False: UserInputError, or with ``required``
        False, False (nothing moved; the caller decides).  Occupied by something moec may not
        replace: UserInputError."""
        replace = self.force if replace is None else replace
        os.remove(os.path.join(self.path, _STAGING_MARK))
        man = record_files(self.path)
        if self.kind != "artifact" and man.get("kind") != self.kind:
            man["kind"] = self.kind
            with open(os.path.join(self.path, MANIFEST), "w") as f:
                json.dump(man, f, indent=1)
        try:
            published = publish(self.path, self.final, replace, self.shown, self.flag)
        except BaseException:
            with open(os.path.join(self.path, _STAGING_MARK), "w") as f:  # (still ours: discard removes it)
                f.write(str(os.getpid()))
            raise
        if published:
            self.published = True
            self.path = None
            self._made_parents = []
        elif required:  # (it was absent or empty when the build started: someone wrote there meanwhile)
            raise UserInputError(f"{self.flag} '{self.shown}' was filled by something else while moec was "
                                 f"building; nothing was written there: pass --force to replace an earlier moec "
                                 f"artifact, or choose another {self.flag}")
        return published


def publish(staged: str, final: str, replace: bool = False, shown: Optional[str] = None,
            flag: str = "-o") -> bool:
    """Move the finished directory ``staged`` to ``final`` (same parent) in one atomic step.

    ``final`` absent or an empty directory: a rename.  ``final`` an earlier moec artifact and
    ``replace``: swapped with ``staged`` atomically, then the old one's listed files are removed.
    ``final`` occupied and not ``replace``: False, nothing moved.  Occupied by anything moec may not
    replace: UserInputError."""
    shown = shown or final
    for _ in range(3):
        if not os.path.lexists(final) or (os.path.isdir(final) and not os.path.islink(final)
                                          and _is_empty_dir(final)):
            try:
                os.rename(staged, final)  # (over an empty directory too)
                return True
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    continue  # something appeared there meanwhile: look again
                raise UserInputError(f"{flag} '{shown}': cannot publish the build there: {e.strerror}") from None
        if not replace:
            return False
        if os.path.islink(final) or not os.path.isdir(final):
            raise UserInputError(f"{flag} '{shown}' exists and is not a directory; choose another {flag}")
        why = not_replaceable(final)
        if why:
            raise UserInputError(f"refusing to replace '{shown}': {why}")
        old = _staging_dir(final, "old")
        os.rmdir(old)  # (only the free name is wanted)
        try:
            if _exchange(staged, final):
                os.rename(staged, old)  # (staged now holds the old artifact)
            else:
                os.rename(final, old)
                try:
                    os.rename(staged, final)
                except OSError:
                    os.rename(old, final)
                    raise
        except OSError as e:
            raise UserInputError(f"{flag} '{shown}': cannot replace the earlier artifact: {e.strerror}") from None
        remove_artifact(old)
        return True
    raise UserInputError(f"{flag} '{shown}' keeps changing while moec publishes into it; try again")


def safe_file_names(names: Iterable[str], suffix: str = "") -> List[str]:
    """One file name per name, injective and safe (no path separator, no ``..``, no leading dot, at
    most ~100 characters).  A name made of letters, digits, ``_``, ``-`` and inner dots is kept as it
    is; any other gets its other characters replaced by ``_`` and a hash of the exact name appended
    after ``~`` (a character kept names never contain), so ``y/1`` and ``y_1`` get different files.
    Names equal but for letter case (one file on a case-insensitive file system) are hashed too.
    Raises UserInputError when two names would still share a file (the same name twice)."""
    import hashlib
    import re
    names = [str(n) for n in names]

    def hashed(n: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", n).replace("..", "_").lstrip(".")[:64] or "output"
        return f"{base}~{hashlib.sha256(n.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"

    def kept(n: str) -> bool:
        return bool(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", n)) and ".." not in n
    folded: Dict[str, set] = {}
    for n in names:
        if kept(n):
            folded.setdefault(n.casefold(), set()).add(n)
    out = [(n if kept(n) and len(folded[n.casefold()]) == 1 else hashed(n)) + suffix for n in names]
    seen: Dict[str, str] = {}
    for n, f in zip(names, out):
        k = f.casefold()
        if k in seen:
            raise UserInputError(f"outputs {seen[k]!r} and {n!r} would be written to the same file '{f}'; "
                                 "moec will not lose one of them (rename an output in the model)")
        seen[k] = n
    return out

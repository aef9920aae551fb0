"""Cache entries that are checked before use: the build cache (runtime archive, model libraries, the
Ascend emulator build) and the JIT cache (whole artifacts).

Cache contents are untrusted: a disk error, a killed process or a person editing a file can leave an
entry whose ``.so`` crashes the process that loads it, or whose weights give wrong numbers behind a
"verified" report.  So every entry is a directory that is

* built in a private ``<key>.<host>.<pid>.<random>.tmp`` folder beside it, and sealed with a marker
  file (``COMPLETE``) listing the sha256 of *every* file in the folder (written last);
* published with one atomic ``rename``: a reader sees a whole entry or none; when two processes build
  the same key, the loser accepts the winner's entry (after checking it);
* checked before use (:func:`check`): the marker must be valid JSON of the expected types, the folder
  must hold exactly the files it lists (regular files, no links), and each file's hash must match.
  A damaged entry is moved aside and removed (:func:`discard`), and the caller rebuilds it; the only
  trace is one logged note.

A library from an entry is loaded only after its hash was checked, and the loaders hash the very bytes
they load (:func:`expected_sha256` gives the hash an entry lists for one of its files).  Build
folders left by killed processes (``*.tmp``) are removed by :func:`clean_stale` once their process is gone, or
after a day.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from typing import Dict, Optional

from moec.errors import RuntimeFailure

MARKER = "COMPLETE"
FORMAT = 1
MAX_MARKER_BYTES = 4 << 20      # a marker lists file hashes: far below this
STALE_SECONDS = 24 * 3600       # a *.tmp folder this old is removed whatever its process
LEGACY_STALE_SECONDS = 3600     # *.tmp folders without a parseable owner (older moec) after an hour
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TMP = re.compile(r"(?P<key>[^.]+)\.(?P<host>[A-Za-z0-9-]*)\.(?P<pid>[0-9]+)\.[^.]*(\.dead)?\.tmp\Z")

log = logging.getLogger("moec.cache")


class Damaged(RuntimeFailure):
    """A cache entry failed its check (the message says how): the caches discard and rebuild it; loading such
    an artifact any other way is a one-line error (exit 2)."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def copy_hashed(src: str, dst: str) -> str:
    """Copy src to dst and return the sha256 of the bytes written (one read of src)."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for chunk in iter(lambda: fi.read(1 << 20), b""):
            h.update(chunk)
            fo.write(chunk)
    return h.hexdigest()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _files(d: str) -> Dict[str, str]:
    """Relative path -> absolute path of every file under d except the marker; Damaged on anything that is
    not a plain file or folder (a symlink could point anywhere)."""
    out = {}
    for dp, dns, fns in os.walk(d):
        for n in dns + fns:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise Damaged(f"'{os.path.relpath(p, d)}' is not a regular file")
            rel = os.path.relpath(p, d).replace(os.sep, "/")
            if rel != MARKER:
                out[rel] = p
    return out


def seal(d: str, **extra) -> dict:
    """Write the marker of a finished build folder: the sha256 of every file in it, and ``extra``."""
    marker = {"format": FORMAT, **extra, "files": {rel: sha256_file(p) for rel, p in sorted(_files(d).items())}}
    tmp = os.path.join(d, f".{MARKER}.tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(d, MARKER))
    return marker


def read_marker(d: str, key: Optional[str] = None) -> dict:
    """The entry's marker, validated (types, file names); Damaged if it is missing or malformed."""
    p = os.path.join(d, MARKER)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise Damaged(f"no {MARKER} marker (an interrupted build)") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MARKER_BYTES:
        raise Damaged(f"{MARKER} is not a small regular file")
    try:
        with open(p, "rb") as f:
            marker = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise Damaged(f"{MARKER} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise Damaged(f"{MARKER} has an unknown format")
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        raise Damaged(f"{MARKER} lists no files")
    for rel, digest in files.items():
        parts = rel.split("/")
        if (not isinstance(digest, str) or not _HEX64.match(digest) or rel.startswith("/") or
                any(x in ("", ".", "..") for x in parts) or rel == MARKER or "\\" in rel or "\0" in rel):
            raise Damaged(f"{MARKER} has a malformed entry")
    if key is not None and marker.get("key") != key:
        raise Damaged(f"{MARKER} belongs to another key")
    return marker


def check(d: str, key: Optional[str] = None) -> dict:
    """Check a cache entry; return its marker or raise Damaged.  Every file is re-hashed."""
    if not os.path.isdir(d) or os.path.islink(d):
        raise Damaged("the entry is not a folder")
    marker = read_marker(d, key)
    try:
        have = _files(d)
    except OSError as e:
        raise Damaged(f"unreadable ({e.strerror})") from None
    want = marker["files"]
    if set(have) != set(want):
        extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
        raise Damaged(f"files differ from its index (missing {missing[:3]}, unexpected {extra[:3]})")
    for rel, p in have.items():
        try:
            digest = sha256_file(p)
        except OSError as e:
            raise Damaged(f"'{rel}' is unreadable ({e.strerror})") from None
        if digest != want[rel]:
            raise Damaged(f"'{rel}' does not match its sha256 (changed or damaged)")
    return marker


def discard(d: str, why: str = "") -> None:
    """Remove a (damaged) entry: first renamed aside (atomic: no reader sees half of it), then deleted."""
    if why:
        log.warning("moec cache: %s is damaged (%s); rebuilding it", d, why)
    if not os.path.lexists(d):
        return
    aside = f"{d}.{_host()}.{os.getpid()}.{os.urandom(4).hex()}.dead.tmp"
    try:
        os.rename(d, aside)
    except OSError:
        return  # another process removed or replaced it meanwhile
    if os.path.isdir(aside) and not os.path.islink(aside):
        shutil.rmtree(aside, ignore_errors=True)
    else:
        try:
            os.remove(aside)
        except OSError:
            pass


def new_tmp(root: str, key: str) -> str:
    """A private build folder beside the entry, named so that clean_stale can tell whether its owner lives."""
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{key}.{_host()}.{os.getpid()}.", suffix=".tmp", dir=root)


def publish(tmp: str, final: str) -> bool:
    """Move a sealed build folder into place with one rename.  False if another process published a
    (checked) entry first: then tmp is removed and the winner's entry is used.  A damaged entry in the way
    is discarded first."""
    err: Optional[OSError] = None
    for _ in range(4):
        try:
            os.rename(tmp, final)
            return True
        except OSError as e:  # final exists (not empty): someone else's entry, good or damaged
            err = e
        try:
            check(final)
        except Damaged as d:
            discard(final, str(d))
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    raise err  # (four damaged entries in a row while we tried: not a cache problem)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (EPERM: exists, another user's)
        return True
    return True


def clean_stale(root: str, now: Optional[float] = None) -> int:
    """Remove build folders (``*.tmp``) left in root by killed builds: those whose process (on this host)
    is gone, and any older than a day; returns how many were removed."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    host, n = _host(), 0
    for name in names:
        if not name.endswith(".tmp"):
            continue
        p = os.path.join(root, name)
        try:
            age = now - os.lstat(p).st_mtime
        except OSError:
            continue
        m = _TMP.match(name)
        if m:
            dead = m["host"] == host and not _alive(int(m["pid"]))
            stale = dead or age > STALE_SECONDS
        else:
            stale = age > LEGACY_STALE_SECONDS
        if not stale:
            continue
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.remove(p)
            except OSError:
                continue
        n += 1
    return n


def expected_sha256(entry: str, rel: str) -> Optional[str]:
    """The sha256 that the marker of ``entry`` lists for its file ``rel``, or None when ``entry`` is not a sealed
    cache entry (no marker: a user's artifact).  A marker that exists but is damaged, or does not list the
    file, raises Damaged."""
    if not os.path.lexists(os.path.join(entry, MARKER)):
        return None
    digest = read_marker(entry)["files"].get(rel)
    if digest is None:
        raise Damaged(f"'{rel}' is not listed in {os.path.join(entry, MARKER)}")
    return digest


# -- single-file entries (the build cache) --------------------------------------------------------------------
def fetch_file(area: str, key: str, name: str, dest: str) -> bool:
    """Copy the cached file ``name`` of entry ``area/key`` to dest if the entry is whole; the copy itself is
    hashed and compared, so what dest holds is what was checked.  False (entry discarded) otherwise."""
    entry = os.path.join(area, key)
    if not os.path.lexists(entry):
        return False
    try:
        want = check(entry, key)["files"].get(name)
        if want is None:
            raise Damaged(f"no '{name}' in the entry")
        if copy_hashed(os.path.join(entry, name), dest) != want:
            raise Damaged(f"'{name}' changed while it was copied")
        return True
    except (Damaged, OSError) as e:
        discard(entry, str(e))
        try:
            os.remove(dest)
        except OSError:
            pass
        return False


def cached_path(area: str, key: str, name: str) -> Optional[str]:
    """The checked path of ``name`` in entry ``area/key`` (for use in place), or None (entry discarded)."""
    entry = os.path.join(area, key)
    if not os.path.lexists(entry):
        return None
    try:
        if name not in check(entry, key)["files"]:
            raise Damaged(f"no '{name}' in the entry")
        return os.path.join(entry, name)
    except Damaged as e:
        discard(entry, str(e))
        return None


def store_file(area: str, key: str, src: str, name: str) -> str:
    """Publish a copy of src as ``area/key/name`` (sealed); return the path of the published file (the
    winner's, if another process published the same key first)."""
    clean_stale(area)
    tmp = new_tmp(area, key)
    try:
        shutil.copyfile(src, os.path.join(tmp, name))
        seal(tmp, key=key)
        publish(tmp, os.path.join(area, key))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(area, key, name)

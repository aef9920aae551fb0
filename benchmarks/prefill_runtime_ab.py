"""A/B of the C runtime on a compiled whole-model artifact: the same model.c and weights linked against the
runtime of another source tree (or a copy taken before a change), timed interleaved in one process, logits
compared bit for bit; optionally a perf profile (share of samples per function) of each side.

    # before a runtime change: freeze the current runtime's build of the artifact
    python benchmarks/prefill_runtime_ab.py freeze /tmp/L_work/big/prefill_w8a8/artifact /tmp/ab/A_w8a8
    # after it: the same model.c / weights on the runtime now in the tree, A/B at N=64 and 256
    python benchmarks/prefill_runtime_ab.py freeze /tmp/ab/A_w8a8 /tmp/ab/B_w8a8
    python benchmarks/prefill_runtime_ab.py time /tmp/ab/A_w8a8 /tmp/ab/B_w8a8 --tokens 64,256 --repeats 10
    python benchmarks/prefill_runtime_ab.py profile /tmp/ab/A_w8a8 /tmp/ab/B_w8a8 --tokens 256

``freeze SRC DST`` copies SRC's files to DST (the weights file hard-linked: a later ``moec compile --force`` of
SRC writes a new file, DST keeps its own) and builds DST/model.so from SRC's model.c with this tree's runtime.
On a shared, loaded host the interleaved ratio (B/A, medians and best calls) is the number to report, with the
load average printed before and after; the profile's GEMM-kernel share before/after gives the same ratio
another way (the GEMM time unchanged: t_B / t_A = share_A / share_B).
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np


def freeze(src: str, dst: str) -> None:
    from moec.targets.cpu import build_shared
    from moec.targets.description import cpu_target
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f == "model.so" or os.path.isdir(os.path.join(src, f)):
            continue
        d = os.path.join(dst, f)
        if os.path.exists(d):
            os.unlink(d)
        if f == "model.weights.bin":
            os.link(os.path.join(src, f), d)
        else:
            shutil.copy(os.path.join(src, f), d)
    arch = json.load(open(os.path.join(src, "manifest.json"))).get("arch", "")
    print(f"{dst}: model.so built from {src}/model.c (artifact arch {arch}; this host: native)")
    build_shared(os.path.join(dst, "model.c"), os.path.join(dst, "model.so"), cpu_target("native"))


def _ids(T: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(T).integers(0, vocab, (1, T)).astype(np.int64)


def time_ab(a_dir: str, b_dir: str, tokens, repeats: int, threads: int, vocab: int) -> None:
    from moec.targets.cpu_backend import CpuArtifact
    A, B = CpuArtifact(a_dir, threads=threads), CpuArtifact(b_dir, threads=threads)
    print(f"load average {os.getloadavg()[0]:.1f}")
    for T in tokens:
        x = _ids(T, vocab)
        ya, yb = A([x])[0], B([x])[0]
        same = np.array_equal(ya.view(np.uint32), yb.view(np.uint32))
        ta, tb = [], []
        for r in range(repeats):
            for art, ts in ((A, ta), (B, tb)) if r % 2 == 0 else ((B, tb), (A, ta)):
                t0 = time.perf_counter()
                art([x])
                ts.append(time.perf_counter() - t0)
        ma, mb = np.median(ta) * 1e3, np.median(tb) * 1e3
        print(f"N={T}: A {ma:.1f} ms (best {min(ta) * 1e3:.1f}), B {mb:.1f} ms (best {min(tb) * 1e3:.1f}); "
              f"B/A median {mb / ma:.3f}, best {min(tb) / min(ta):.3f}; logits bit-identical: {same}")
    print(f"load average {os.getloadavg()[0]:.1f}")


_LOOP = """
import os, subprocess, sys, time, signal, numpy as np
from moec.targets.cpu_backend import CpuArtifact
kept, unlink = [], os.unlink
os.unlink = kept.append  # (the loader's private copy of model.so kept until perf report has read it)
try:
    art = CpuArtifact(sys.argv[1], threads=int(sys.argv[2]))
finally:
    os.unlink = unlink
x = np.random.default_rng(0).integers(0, int(sys.argv[4]), (1, int(sys.argv[3]))).astype(np.int64)
art([x])
perf = subprocess.Popen(["perf", "record", "-F", "999", "-p", str(os.getpid()), "-o", sys.argv[6]],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
t0, n = time.time(), 0
while time.time() - t0 < float(sys.argv[5]):
    art([x]); n += 1
perf.send_signal(signal.SIGINT); perf.wait()
print(" ".join(kept))
"""


def profile(d: str, T: int, seconds: float, threads: int, vocab: int, limit: float) -> list:
    data = os.path.join("/tmp", f"ab_{os.getpid()}_{os.path.basename(os.path.normpath(d))}.data")
    r = subprocess.run([sys.executable, "-c", _LOOP, d, str(threads), str(T), str(vocab), str(seconds), data],
                       capture_output=True, text=True, check=True)
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
                          "--percent-limit", str(limit)], capture_output=True, text=True)
    for c in r.stdout.split():
        if os.path.basename(c).startswith("moec-") and os.path.exists(c):
            os.unlink(c)
    os.unlink(data)
    return [(float(m.group(1)), m.group(2)) for m in
            (re.match(r"\s*([\d.]+)%\s+\[.\]\s+(\S+)", ln) for ln in rep.stdout.splitlines()) if m]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["freeze", "time", "profile"])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tokens", default="64,256")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--percent-limit", type=float, default=0.5)
    a = ap.parse_args()
    tokens = [int(t) for t in a.tokens.split(",")]
    if a.what == "freeze":
        freeze(a.a, a.b)
    elif a.what == "time":
        time_ab(a.a, a.b, tokens, a.repeats, a.threads, a.vocab)
    else:
        if not shutil.which("perf"):
            print("perf is not installed", file=sys.stderr)
            return 2
        for side, d in (("A", a.a), ("B", a.b)):
            for T in tokens:
                rows = profile(d, T, a.seconds, a.threads, a.vocab, a.percent_limit)
                print(f"{side} N={T}: " + ", ".join(f"{s} {p:.1f}%" for p, s in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One artifact, one process: RSS after load / first call / steady, first vs second vs steady call ms.
usage: measure.py ART_DIR KIND(prefill|decode) TOKENS THREADS [REPEATS]"""
import json, os, re, sys, time
import numpy as np

def rss():
    s = open("/proc/self/status").read()
    g = lambda k: int(re.search(k + r":\s+(\d+)", s).group(1)) / 1024.0
    return g("VmRSS"), g("VmHWM")

art_dir, kind, T, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 10
from moec.targets.cpu_backend import CpuArtifact
r0 = rss()
t = time.perf_counter(); art = CpuArtifact(art_dir, threads=threads); load_ms = (time.perf_counter() - t) * 1e3
r1 = rss()
man = art.manifest
rng = np.random.default_rng(0)
ins = []
for i in man["inputs"]:
    m = re.match(r"tensor<(.*)x(\w+)(,.*)?>", i["type"]) or re.match(r"tensor<(\w+)>", i["type"])
    parts = i["type"][7:].split(",")[0].rstrip(">").split("x")
    dims, dt = parts[:-1], parts[-1]
    shape = [T if d == "?" else int(d) for d in dims]
    if i["name"] == "input_ids":
        ins.append(rng.integers(3, 1000, shape).astype(np.int64))
    elif i["name"] == "pos":
        ins.append(np.array([100], np.int64))
    else:
        ins.append(np.zeros(shape, np.float32) if dt == "f32" else np.zeros(shape, np.dtype(dt)))
r1b = rss()
times = []
for k in range(reps):
    t = time.perf_counter(); out = art(ins); times.append((time.perf_counter() - t) * 1e3)
    if k == 0: r2 = rss()
r3 = rss()
res = {"art": art_dir, "kind": kind, "T": T, "threads": threads, "load_ms": round(load_ms, 1),
       "first_ms": round(times[0], 2), "second_ms": round(times[1], 2), "steady_ms": round(float(np.median(times[2:])), 2),
       "rss_before_load": round(r0[0]), "rss_loaded": round(r1[0]), "rss_after_first": round(r2[0]),
       "rss_steady": round(r3[0]), "rss_peak": round(r3[1]), "weights_bin_mb": round(os.path.getsize(os.path.join(art_dir, "model.weights.bin")) / 2**20),
       "out0_sum": float(np.asarray(out[0], np.float64).sum())}
print(json.dumps(res))

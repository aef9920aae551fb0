"""The f32 micro-kernels of the C runtime per build (issue 17: fast on every host), against OpenBLAS.

    python benchmarks/bench_avx2_kernels.py [--kernels gemm,tile,dec,gemv] [--k 1024] [--n 2816]
                                           [--tokens 1,8,64,256] [--threads 1,2] [--rounds 5]
                                           [--archs avx2,avx512] [--json OUT]

Builds the runtime once per arch with moec's own flags for it (targets/description.py: ``avx2`` is
``-mavx2 -mfma -mf16c``, no AVX-512) plus a small harness that includes rt_gemm_f32.c and rt_moe_f32.c, so the
static kernels are called directly on [T, K] x [K, N]:

- ``gemm``: the dense GEMM (moec_sgemm_run) on panels packed as codegen/c/gemm_pack.py packs them (NR = 16 on
  AVX2, 32 on AVX-512), threaded as the runtime threads it;
- ``tile``: the experts' prefill micro-kernel (tile(), MR rows x 32 columns) over every 32-column k-panel;
- ``dec``: the experts' decode kernel on compile-time panels (tile_dec, 1 or 2 rows);
- ``gemv``: the experts' decode GEMV on unpacked weight rows (gemv_block, 1 or 2 rows).

Against numpy's OpenBLAS (``OPENBLAS_CORETYPE``, default Haswell: its AVX2 + FMA kernels; threads set with
threadpoolctl) computing x @ W, interleaved in rounds (each engine once per round), best of ``reps`` calls per
round, best over rounds.  One thread is timed in thread CPU time (CLOCK_THREAD_CPUTIME_ID, time.thread_time: a
shared host's other processes do not count), more threads in wall time.  Prints GFLOP/s and the ratio to OpenBLAS
(above 1: moec faster).  Every result is checked against float64 numpy.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # (read when numpy loads OpenBLAS: before the import)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

HARNESS = r"""
#include "rt_moe_f32.c"
#include "rt_gemm_f32.c"
#include <time.h>
int moec_init_weights(char *err, int errlen) { (void)err; (void)errlen; return 0; }
static int g_cpu;
void bk_cpu_clock(int on) { g_cpu = on; }
static double now(void) {
  struct timespec t;
  clock_gettime(g_cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
int bk_width(void) { return GNR; }
double bk_sgemm(int64_t M, int64_t N, int64_t K, const float *A, const float *Bp, float *C, int nt, int reps) {
  moec_ctx ctx; memset(&ctx, 0, sizeof ctx); ctx.nthreads = nt;
  moec_sgemm g; memset(&g, 0, sizeof g);
  g.M = M; g.N = N; g.K = K; g.A = A; g.sam = K; g.sak = 1; g.Bp = Bp; g.C = C; g.ldc = N; g.alpha = 1;
  moec_sgemm_run(&ctx, &g, 1, NULL, NULL, 0);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    moec_sgemm_run(&ctx, &g, 1, NULL, NULL, 0);
    double t = now() - t0;
    if (t < best) best = t;
  }
  return best;
}
typedef struct { const float *X, *Bp, *W; float *C; int64_t M, N, K; int kind; } mj;
static void moe_task(void *arg, int64_t p, int tid) {
  const mj *j = (const mj *)arg;
  int64_t c0 = p * NR, nb = j->N - c0 < NR ? j->N - c0 : NR;
  const float *Bp = j->Bp + p * j->K * NR;
  if (j->kind == 0) {
    for (int64_t r = 0; r < j->M; r += MR) {
      int m = j->M - r < MR ? (int)(j->M - r) : MR;
      tile(j->X + r * j->K, j->K, m, Bp, j->K, j->C + r * j->N + c0, j->N, nb);
    }
  } else if (j->kind == 1) {
    tile_dec(j->X, j->K, (int)j->M, Bp, j->K, j->C + c0, j->N, nb);
  } else {
    gemv_block(j->X, j->K, j->M, j->W + c0 * j->K, j->K, nb, j->C + c0, j->N);
  }
}
void bk_pack(const float *W, int64_t N, int64_t K, float *Bp) {
  for (int64_t p = 0; p * NR < N; p++) pack_b(W, K, p * NR, N - p * NR < NR ? N - p * NR : NR, Bp + p * K * NR);
}
double bk_moe(int kind, int64_t M, int64_t N, int64_t K, const float *X, const float *W, const float *Bp, float *C,
              int nt, int reps) {
  moec_ctx ctx; memset(&ctx, 0, sizeof ctx); ctx.nthreads = nt;
  mj j = {X, Bp, W, C, M, N, K, kind};
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    double t0 = now();
    moec_parallel_for_tid(&ctx, (N + NR - 1) / NR, moe_task, &j);
    double t = now() - t0;
    if (r && t < best) best = t;
  }
  return best;
}
"""

P = ctypes.c_void_p


def build(arch: str, d: str) -> ctypes.CDLL:
    from moec.targets import cpu
    from moec.targets.description import cpu_target
    flags = [f for f in cpu.cflags_for(cpu_target(arch)) if f != "-fvisibility=hidden"] + ["-w", "-Wno-psabi"]
    rt = cpu.RUNTIME_DIR
    od = os.path.join(d, arch)
    os.makedirs(od)
    with open(os.path.join(od, "harness.c"), "w") as f:
        f.write(HARNESS)
    srcs = [s for s in sorted(glob.glob(os.path.join(rt, "*.c")))
            if os.path.basename(s) not in ("rt_moe_f32.c", "rt_gemm_f32.c")] + [os.path.join(od, "harness.c")]

    def cc(src):
        obj = os.path.join(od, os.path.basename(src)[:-2] + ".o")
        subprocess.run([cpu.cc(), *flags, "-I", rt, "-c", src, "-o", obj], check=True)
        return obj
    with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        objs = list(ex.map(cc, srcs))
    so = os.path.join(od, "bk.so")
    subprocess.run([cpu.cc(), "-shared", "-pthread", "-o", so, *objs, "-lm"], check=True)
    L = ctypes.CDLL(so)
    L.bk_sgemm.restype = L.bk_moe.restype = ctypes.c_double
    L.bk_sgemm.argtypes = [ctypes.c_int64] * 3 + [P, P, P, ctypes.c_int, ctypes.c_int]
    L.bk_moe.argtypes = [ctypes.c_int] + [ctypes.c_int64] * 3 + [P, P, P, P, ctypes.c_int, ctypes.c_int]
    L.bk_pack.argtypes = [P, ctypes.c_int64, ctypes.c_int64, P]
    L.bk_cpu_clock.argtypes = [ctypes.c_int]
    return L


def ptr(a):
    return a.ctypes.data_as(P)


def panels(W, nr):
    """W [K, N] as gemm_pack's panels [ceil(N / nr)][K][nr]"""
    from moec.codegen.c import gemm_pack
    return np.ascontiguousarray(gemm_pack.pack_panels(W, nr))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="gemm,tile,dec,gemv")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=2816)
    ap.add_argument("--tokens", default="1,8,64,256")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--archs", default="avx2,avx512")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_info, threadpool_limits

    from moec.targets.description import host_cpu
    isa = host_cpu().isa
    archs = [a for a in args.archs.split(",") if a and (a != "avx512" or "avx512f" in isa)]
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"# OpenBLAS: {[(i.get('version'), i.get('architecture')) for i in blas]}; load {os.getloadavg()[0]:.2f}; "
          f"1 thread: thread CPU time, more: wall", flush=True)
    K, N = args.k, args.n
    rng = np.random.default_rng(0)
    W = rng.standard_normal((K, N)).astype(np.float32)
    Wt = np.ascontiguousarray(W.T)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        libs = {a: build(a, d) for a in archs}
        for kernel in args.kernels.split(","):
            kind = {"tile": 0, "dec": 1, "gemv": 2}.get(kernel)
            pk = {}
            for a, L in libs.items():
                if kernel == "gemm":
                    pk[a] = panels(W, L.bk_width())
                else:
                    pk[a] = np.zeros(-(-N // 32) * 32 * K, np.float32)
                    L.bk_pack(ptr(Wt), N, K, ptr(pk[a]))
            tokens = [int(t) for t in args.tokens.split(",")]
            if kernel in ("dec", "gemv"):
                tokens = [t for t in tokens if t <= 2] or [1, 2]
            for nt in (int(t) for t in args.threads.split(",")):
                for T in tokens:
                    x = rng.standard_normal((T, K)).astype(np.float32)
                    want = x.astype(np.float64) @ W.astype(np.float64)
                    reps = max(3, int(2e8 / (2 * T * N * K)))
                    best = {k: 1e30 for k in list(libs) + ["openblas"]}
                    for _ in range(args.rounds):
                        for a, L in libs.items():
                            C = np.zeros((T, N), np.float32)
                            L.bk_cpu_clock(int(nt == 1))
                            if kernel == "gemm":
                                t = L.bk_sgemm(T, N, K, ptr(x), ptr(pk[a]), ptr(C), nt, reps)
                            else:
                                t = L.bk_moe(kind, T, N, K, ptr(x), ptr(Wt), ptr(pk[a]), ptr(C), nt, reps)
                            err = float(np.abs(C - want).max() / np.abs(want).max())
                            assert err < 1e-5, (kernel, a, T, err)
                            best[a] = min(best[a], t)
                        with threadpool_limits(nt, user_api="blas"):
                            y = np.empty((T, N), np.float32)
                            clk = time.thread_time if nt == 1 else time.perf_counter
                            for _ in range(reps):
                                t0 = clk()
                                np.matmul(x, W, out=y)
                                best["openblas"] = min(best["openblas"], clk() - t0)
                    gf = {k: 2 * T * N * K / v / 1e9 for k, v in best.items()}
                    row = {"kernel": kernel, "T": T, "K": K, "N": N, "threads": nt,
                           **{f"gflops_{k}": round(v, 1) for k, v in gf.items()},
                           **{f"{a}_over_openblas": round(gf[a] / gf["openblas"], 2) for a in libs}}
                    rows.append(row)
                    print(f"{kernel:5s} T={T:4d} threads={nt}  " + "  ".join(f"{k} {v:6.1f}" for k, v in gf.items())
                          + "  GFLOP/s   " + "  ".join(f"{a}/openblas {gf[a] / gf['openblas']:.2f}" for a in libs),
                          flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": os.getloadavg(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

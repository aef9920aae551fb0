/* Decode GEMV micro-benchmark (issue 17, helper B): moec_k_linear_q at M = 1 (or 2) rows -- weight-only int8 /
 * int4 (gemv_w8 / gemv_w4) and w8a8 (tile_i8 on int8 panels) -- in GB/s of weight (+ scale) bytes, the weights
 * rotated over >= 256 MB in huge pages (moec_alloc_weights, as a loaded model's), so every call streams them
 * from DRAM (INCACHE=1: one copy, the compute-bound rate).  Compare with compiler/bench.py's read / copy probes
 * (python -c "from moec.bench import read_probe; print(read_probe(threads=1))").  Build against the runtime:
 *
 *   R=codegen/c/runtime
 *   gcc -O2 -std=gnu11 -fno-strict-aliasing -fno-math-errno -pthread $(python -c "from moec.targets.description \
 *     import host_cpu; print(' '.join(host_cpu().cflags))") -I$R benchmarks/bench_wq_gemv.c \
 *     $(ls $R/*.c | grep -v rt_model.c) -lm -o /tmp/bench_wq_gemv
 *   /tmp/bench_wq_gemv MODE N K G ZP THREADS [M] [REPS]   # MODE 8 (int8), 4 (int4), 88 (w8a8), 44 (w4a8), 16 (bf16:
 *                                                         # the compile-time pair panels, as a compiled model's); G: int4 group
 *   e.g. /tmp/bench_wq_gemv 8 2816 1024 0 0 1; /tmp/bench_wq_gemv 4 32000 1024 32 1 2
 *
 * Mean and best of REPS calls (the host is shared: compare numbers of one run). */
#include "moec_rt.h"
#include "rt_moe.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
void moec_release(moec_tensor *t);
void *moec_alloc_weights(size_t bytes);
/* CPUTIME=1: the process's CPU time instead of the wall clock (at THREADS=1 on a shared host: time on the core only,
 * preemption left out; the weights' stream still shares DRAM with the other processes) */
static int g_cpu;
static double now(void) {
  struct timespec t; clock_gettime(g_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static moec_tensor T(void *d, int dt, int r, int64_t a, int64_t b) {
  moec_tensor t; memset(&t, 0, sizeof t); t.data = d; t.dtype = dt; t.rank = r; t.shape[0] = a; t.shape[1] = b;
  t.numel = r == 1 ? a : a * b; return t;
}
int main(int argc, char **argv) {
  /* args: mode(8|4) N K G zp threads M reps */
  int mode = atoi(argv[1]); int aq = mode == 88 || mode == 44; if (mode == 88) mode = 8; if (mode == 44) mode = 4;
  const int bf = mode == 16; /* bf16 weights: 2 bytes each, read from the pair panels [1, ceil(N/32), ceil(K/2), 32, 2] */
  g_cpu = getenv("CPUTIME") != NULL; int64_t N = atoll(argv[2]), K = atoll(argv[3]), G = atoll(argv[4]);
  int zp = atoi(argv[5]), nt = atoi(argv[6]), M = argc > 7 ? atoi(argv[7]) : 1; int reps = argc > 8 ? atoi(argv[8]) : 200;
  const int64_t PP = (K + 1) / 2, NB = (N + 31) / 32;
  int64_t wb = bf ? NB * PP * 32 * 4 : mode == 8 ? N * K : N * K / 2, ng = mode == 8 ? 1 : K / (G ? G : K);
  int64_t sb = bf ? 0 : 4 * N * ng * (zp ? 2 : 1);
  int copies = (int)((256ll << 20) / (wb + sb)) + 1;  /* rotate over >= 256 MB */
  if (getenv("INCACHE")) copies = 1;
  if (reps < copies + 20) reps = copies + 20; /* (every copy once before timing: w8a8 packs its panels then) */
  unsigned char **W = malloc(sizeof(void *) * copies); int64_t wst = (wb + 63) & ~63ll; unsigned char *WB = moec_alloc_weights(wst * copies); float **S = malloc(sizeof(void *) * copies), **Z = malloc(sizeof(void *) * copies);
  srand(1);
  for (int c = 0; c < copies; c++) {
    W[c] = WB + c * wst; S[c] = malloc(4 * N * ng); Z[c] = malloc(4 * N * ng);
    for (int64_t i = 0; i < wb; i++) W[c][i] = rand();
    if (bf) /* (bf16 values with small exponents: every pair's halves 0x3c00..0x3fff | sign) */
      for (int64_t i = 0; i + 1 < wb; i += 2) W[c][i + 1] = (unsigned char)(0x3c | (W[c][i + 1] & 0x83));
    for (int64_t i = 0; i < N * ng; i++) { S[c][i] = 0.01f * (1 + rand() % 7); Z[c][i] = rand() % 16; }
  }
  /* w4a8: the compile-time panels (as ir/weight_layouts.py writes them: nibbles [1, nblk, ng, G4 / 4, 64], scales and
   * zero points [1, nblk, ng, 32]) per copy, so the timed calls stream them as a compiled model does */
  const int64_t nblk = (N + 31) / 32, G4 = (G + 3) / 4 * 4;
  unsigned char **PN = NULL; float **PS = NULL, **PZ = NULL;
  if (aq && mode == 4) {
    PN = malloc(sizeof(void *) * copies); PS = malloc(sizeof(void *) * copies); PZ = malloc(sizeof(void *) * copies);
    for (int c = 0; c < copies; c++) {
      PN[c] = moec_alloc_weights((size_t)(nblk * ng * G4 * 16)); PS[c] = malloc(4 * nblk * ng * 32); PZ[c] = malloc(4 * nblk * ng * 32);
      for (int64_t b = 0; b < nblk; b++)
        for (int64_t g = 0; g < ng; g++) {
          for (int j = 0; j < 32; j++) {
            int64_t n = b * 32 + j;
            PS[c][(b * ng + g) * 32 + j] = n < N ? S[c][n * ng + g] : 0.f;
            PZ[c][(b * ng + g) * 32 + j] = n < N ? Z[c][n * ng + g] : 0.f;
          }
          unsigned char *nib = PN[c] + (b * ng + g) * G4 * 16;
          for (int64_t pp = 0; pp < G4 / 4; pp++)
            for (int cc = 0; cc < 16; cc++)
              for (int i = 0; i < 4; i++) {
                int64_t k = 4 * pp + i, kk = g * G + k, n0 = b * 32 + cc, n1 = n0 + 16;
                unsigned lo = k < G && n0 < N ? (W[c][n0 * (K / 2) + kk / 2] >> (4 * (kk & 1))) & 15 : 0;
                unsigned hi = k < G && n1 < N ? (W[c][n1 * (K / 2) + kk / 2] >> (4 * (kk & 1))) & 15 : 0;
                nib[pp * 64 + 4 * cc + i] = (unsigned char)(lo | (hi << 4));
              }
        }
    }
  }
  float *x = malloc(4 * M * K); for (int64_t i = 0; i < M * K; i++) x[i] = (rand() % 2001 - 1000) * 1e-3f;
  moec_ctx ctx; memset(&ctx, 0, sizeof ctx); ctx.nthreads = nt;
  moec_tensor xt = T(x, MOEC_F32, 2, M, K);
  double best = 1e9, tot = 0; int cnt = 0; double *ts = malloc(sizeof(double) * (size_t)reps);
  for (int it = 0; it < reps; it++) {
    int c = it % copies;
    moec_tensor wt = T(W[c], bf ? MOEC_BF16 : mode == 8 ? MOEC_I8 : MOEC_U8, 2, N, mode == 4 ? K / 2 : K);
    moec_tensor st = T(S[c], MOEC_F32, 2, N, ng), zt = T(Z[c], MOEC_F32, 2, N, ng);
    moec_wq q; memset(&q, 0, sizeof q); q.mode = bf ? MOEC_WQ_BF16 : mode == 8 ? MOEC_WQ_INT8 : MOEC_WQ_INT4; q.group = G;
    moec_tensor pb;
    if (bf) { /* the pair panels are the weight's only copy read (wt's data: never read when pk_in matches) */
      memset(&pb, 0, sizeof pb); pb.data = W[c]; pb.dtype = MOEC_BF16; pb.rank = 5; pb.shape[0] = 1; pb.shape[1] = NB;
      pb.shape[2] = PP; pb.shape[3] = 32; pb.shape[4] = 2; pb.numel = NB * PP * 64;
      q.pk_in = &pb;
    }
    q.s_in = bf ? NULL : &st; q.aq = aq; q.z_in = zp ? &zt : NULL;
    moec_tensor pn, ps, pz;
    if (PN) {
      memset(&pn, 0, sizeof pn); pn.data = PN[c]; pn.dtype = MOEC_U8; pn.rank = 5; pn.shape[0] = 1; pn.shape[1] = nblk;
      pn.shape[2] = ng; pn.shape[3] = G4 / 4; pn.shape[4] = 64; pn.numel = nblk * ng * G4 * 16;
      memset(&ps, 0, sizeof ps); ps.data = PS[c]; ps.dtype = MOEC_F32; ps.rank = 4; ps.shape[0] = 1; ps.shape[1] = nblk;
      ps.shape[2] = ng; ps.shape[3] = 32; ps.numel = nblk * ng * 32;
      pz = ps; pz.data = PZ[c];
      q.pk_in = &pn; q.pks_in = &ps; q.pkz_in = zp ? &pz : NULL;
    }
    moec_tensor y; memset(&y, 0, sizeof y);
    double t0 = now();
    if (moec_k_linear_q(&ctx, &xt, &wt, NULL, &q, &y)) { printf("fail %s\n", ctx.err); return 1; }
    double dt = now() - t0;
    if (it == 0) fprintf(stderr, "first call %.1f us (M > 2 rows, weight-only: packs the run-time panel cache)\n", 1e6 * dt);
    if (it >= copies && it >= 10) { if (dt < best) best = dt; tot += dt; ts[cnt++] = dt; }
    if (it == reps - 1) { double s = 0; for (int64_t i = 0; i < M * N; i++) s += ((float *)y.data)[i]; fprintf(stderr, "chk %.6g\n", s); }
    moec_release(&y);
  }
  double bytes = wb + (double)sb;
  qsort(ts, (size_t)cnt, sizeof(double), cmpd);
  double med = ts[cnt / 2];
  printf("%s N=%lld K=%lld G=%lld zp=%d T=%d M=%d%s: mean %.1f us median %.1f us best %.1f us  %.1f GB/s (mean) %.1f GB/s (median) %.1f GB/s (best)\n",
         aq ? (mode == 8 ? "w8a8" : "w4a8") : bf ? "bf16" : mode == 8 ? "int8" : "int4", (long long)N, (long long)K, (long long)G, zp, nt, M,
         g_cpu ? " cpu time" : "", 1e6 * tot / cnt, 1e6 * med, 1e6 * best, bytes / (tot / cnt) * 1e-9, bytes / med * 1e-9,
         bytes / best * 1e-9);
  return 0;
}
/* (rt_model.c left out: every pointer counts as the weights file, so w8a8 panels are packed once and cached) */
int moec_in_weights(const void *p) { (void)p; return 1; }

/* Single-thread micro-benchmark of the narrow prefill / decode tiles of rt_moe_f32.c (issue 17, helper D's figures).
 * It includes the runtime file itself (its static kernels), so build it against the runtime's other sources:
 *
 *   R=codegen/c/runtime
 *   gcc -O2 -std=gnu11 -fno-strict-aliasing -fno-math-errno -pthread $(python -c "from moec.targets.description \
 *     import host_cpu; print(' '.join(host_cpu().cflags))") -I$R benchmarks/bench_narrow_tiles.c \
 *     $(ls $R/*.c | grep -v rt_moe_f32.c) -lm -o /tmp/bench_narrow_tiles
 *   /tmp/bench_narrow_tiles w4a8 K N M G zp    # tile_w4a8 vs tile_i8 (w8a8) GOP/s on in-cache panels
 *   /tmp/bench_narrow_tiles dec8 N rows         # int8 decode: gemv_w8 on rows vs tile_wq on k-major panels, GB/s
 *   /tmp/bench_narrow_tiles dec4 N rows         # int4 g32 decode: gemv_w4 on rows vs tile_wq on k-major panels
 *   /tmp/bench_narrow_tiles gemm M K N T G      # [M,K]x[K,N] on T threads (column panels split), GOP/s:
 *                                               # tile_i8 (w8a8), tile_w4a8 (group G), a pure vpdpbusd loop;
 *                                               # tile_i8 fetches the next panel's slices as the call sites do
 *                                               # (runtimes with MOEC_I8_NEXT_SLICE; I8_NOPF=1: without)
 *   /tmp/bench_narrow_tiles wq M K N int4           # weight-only int8 (int4: g32) prefill, 1 thread, GFLOP/s: the
 *                                               # phase-1 item loop (M > wq_deq_rows: dequantised panel + tile,
 *                                               # else tile_wq) without / with the next item's slices (tile_pf,
 *                                               # tile_wq_pf), and tile() on
 *                                               # f32 panels in cache (the f32 probe of the same run)
 *   (benchmarks/bench_i8_kernels.py runs the gemm mode beside torch._int_mm on the same shapes and threads.)
 *
 * Best of repeated passes (the host is shared: compare numbers of one run). */
#include "rt_moe_f32.c"
#include <stdio.h>
#include <string.h>
#include <time.h>
/* quant_row_g's per (row, group) starting values: w4z pairs where the runtime defines W4A8_HI_SHIFT, code sums in
 * runtimes before it (so this harness builds against either: benchmarks/bench_i8_kernels.py --runtime base=...) */
#ifdef W4A8_HI_SHIFT
typedef w4z xzt;
#else
typedef int32_t xzt;
#endif
int moec_init_weights(char *err, int errlen) { (void)err; (void)errlen; return 0; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int64_t arg(int argc, char **argv, int i, int64_t d) { return argc > i ? atoll(argv[i]) : d; }

static void w4a8(int argc, char **argv) {
  int64_t K = arg(argc, argv, 2, 1024), N = arg(argc, argv, 3, 1024), M = arg(argc, argv, 4, 64), G = arg(argc, argv, 5, 32);
  int zpf = (int)arg(argc, argv, 6, 0);
  int64_t ng = K / G, nblk = N / NR, ld = ng * g4_of(G);
  uint8_t *W4 = malloc(N * K / 2); int8_t *W8 = malloc(N * K);
  float *sw = malloc(sizeof(float) * N * ng), *zz = malloc(sizeof(float) * N * ng), *s8 = malloc(sizeof(float) * N);
  srand(1);
  for (int64_t i = 0; i < N * K / 2; i++) W4[i] = rand();
  for (int64_t i = 0; i < N * K; i++) W8[i] = (rand() % 255) - 127;
  for (int64_t i = 0; i < N * ng; i++) { sw[i] = 0.01f * (1 + rand() % 7); zz[i] = rand() % 16; }
  for (int64_t i = 0; i < N; i++) s8[i] = 0.01f;
  wview v = {MOEC_WQ_INT4, W4, sw, zpf ? zz : NULL, N, K, G};
  size_t pb = w4a8_panel_bytes(&v), pb8 = i8_panel_bytes(K);
  uint8_t *P4 = aligned_alloc(64, (pb * nblk + 63) / 64 * 64);
  int8_t *P8 = aligned_alloc(64, (pb8 * nblk + 63) / 64 * 64);
  w4p *PP = malloc(sizeof(w4p) * nblk);
  for (int64_t b = 0; b < nblk; b++) {
    PP[b] = pack_w4a8_panel(&v, 0, b * NR, NR, P4 + b * pb);
    pack_i8_panel(W8, K, b * NR, NR, P8 + b * pb8);
  }
  float *X = malloc(sizeof(float) * M * K), *XS = malloc(sizeof(float) * M * ng), *XUS = malloc(4 * M);
  for (int64_t i = 0; i < M * K; i++) X[i] = (rand() / (float)RAND_MAX) - 0.5f;
  int8_t *XQ = malloc(M * ld); xzt *XZ = malloc(sizeof(xzt) * M * ng); uint8_t *XU = malloc(M * KP4(K));
  for (int64_t r = 0; r < M; r++) {
    quant_row_g(X + r * K, K, G, XQ + r * ld, XS + r * ng, XZ + r * ng);
    quant_row_u8(X + r * K, K, XU + r * KP4(K), XUS + r);
  }
  float *C = malloc(sizeof(float) * M * N);
  double b4 = 1e9, b8 = 1e9;
  for (int it = 0; it < 30; it++) {
    double t0 = now();
    for (int64_t b = 0; b < nblk; b++)
      for (int64_t r = 0; r < M; r += W4A8_MR)
        tile_w4a8(&v, XQ + r * ld, ld, XS + r * ng, XZ + r * ng, M - r < W4A8_MR ? (int)(M - r) : W4A8_MR, &PP[b],
                  C + r * N + b * NR, N, NR);
    double t1 = now();
    for (int64_t b = 0; b < nblk; b++)
      for (int64_t r = 0; r < M; r += MR)
        tile_i8(XU + r * KP4(K), KP4(K), M - r < MR ? (int)(M - r) : MR, P8 + b * pb8, K, XUS + r, s8 + b * NR,
                C + r * N + b * NR, N, NR);
    double t2 = now();
    if (t1 - t0 < b4) b4 = t1 - t0;
    if (t2 - t1 < b8) b8 = t2 - t1;
  }
  double ops = 2.0 * M * N * K;
  printf("K=%ld N=%ld M=%ld G=%ld zp=%d, 1 thread: tile_w4a8 %.1f GOP/s, tile_i8 %.1f GOP/s\n", (long)K, (long)N, (long)M,
         (long)G, zpf, ops / b4 / 1e9, ops / b8 / 1e9);
}

static void dec(int argc, char **argv, int int4) {
  int64_t K = 1024, N = arg(argc, argv, 2, 65536), G = 32, ng = K / G, nblk = N / NR;
  int rows = (int)arg(argc, argv, 3, 1);
  size_t wb = int4 ? (size_t)(N * K / 2) : (size_t)(N * K), pbk = int4 ? (size_t)(K * NR / 2) : (size_t)(K * NR);
  uint8_t *W = aligned_alloc(64, wb), *P = aligned_alloc(64, wb);
  float *s = malloc(sizeof(float) * N * ng);
  for (size_t i = 0; i < wb; i++) W[i] = rand();
  for (int64_t i = 0; i < N * ng; i++) s[i] = 0.01f;
  wview v = {int4 ? MOEC_WQ_INT4 : MOEC_WQ_INT8, W, s, NULL, N, K, int4 ? G : K};
  int64_t tw = int4 ? ng * 2 * NR : NR;
  float *ST = aligned_alloc(64, sizeof(float) * (size_t)(nblk * tw));
  for (int64_t b = 0; b < nblk; b++) {
    (int4 ? pack_w4k_panel : pack_w8k_panel)(W, K, b * NR, NR, P + b * pbk);
    wq_scale_table(&v, 0, b * NR, NR, ST + b * tw);
  }
  static float X[2 * 1024], XR[2 * 1024 + 16], XS[2 * 64];
  float *Y = malloc(sizeof(float) * 2 * N);
  for (int i = 0; i < 2 * 1024; i++) X[i] = 0.001f * i;
  for (int r = 0; r < rows; r++) prep_x4(X + r * K, K, G, XR + r * K, XS + r * ng);
  double bg = 1e9, bt = 1e9;
  for (int it = 0; it < 15; it++) {
    double t0 = now();
    for (int64_t b = 0; b < nblk; b++) {
      if (int4) gemv_w4(&v, 0, b * NR, NR, X, K, rows, Y + b * NR, N, XR, XS);
      else gemv_w8(&v, 0, b * NR, NR, X, K, rows, Y + b * NR, N);
    }
    double t1 = now();
    for (int64_t b = 0; b < nblk; b++) {
#if MOEC_VBYTES >= 64
      if (rows == 1) tile_wq_r(&v, X, K, 1, P + b * pbk, ST + b * tw, Y + b * NR, N, NR, 1, 0, NULL, 0);
      else tile_wq_r(&v, X, K, 2, P + b * pbk, ST + b * tw, Y + b * NR, N, NR, 2, 0, NULL, 0);
#else
      tile_wq(&v, X, K, rows, P + b * pbk, ST + b * tw, Y + b * NR, N, NR);
#endif
    }
    double t2 = now();
    if (t1 - t0 < bg) bg = t1 - t0;
    if (t2 - t1 < bt) bt = t2 - t1;
  }
  printf("%s [%d,1024]x[%ld,1024], 1 thread, weight bytes: gemv on rows %.1f GB/s, tile_wq on k-major panels %.1f GB/s\n",
         int4 ? "int4 g32" : "int8", rows, (long)N, wb / bg / 1e9, wb / bt / 1e9);
}

/* ---- gemm: the w8a8 / w4a8 tiles over a whole [M,K]x[K,N] on T threads, and the VNNI ceiling ---------- */
typedef struct {
  int64_t M, K, N, G, b0, b1, ld;
  int kind; /* 0 tile_i8, 1 tile_w4a8, 2 the vpdpbusd loop */
  const wview *v; const w4p *PP; const int8_t *P8; size_t pb8;
  const uint8_t *XU; const float *XUS, *s8; const int8_t *XQ; const float *XS; const xzt *XZ;
  float *C; long sink;
} gjob;

static int g_nopf; /* I8_NOPF=1: tile_i8 without the next-panel slices */
static void *gemm_worker(void *arg) {
  gjob *j = (gjob *)arg;
  const int64_t M = j->M, K = j->K, N = j->N, ng = K / j->G;
  if (j->kind == 2) {
#if defined(__AVX512VNNI__)
    /* 12 independent vpdpbusd chains (latency 5, two a cycle where the core has two 512-bit ports):
     * the same count of vpdpbusd as the GEMM's M N K / 64 */
    __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x02020202), c0 = _mm512_setzero_si512(), c1 = c0,
            c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
    int64_t n = M * (j->b1 - j->b0) * NR * K / 64 / 12;
    for (int64_t i = 0; i < n; i++) /* (asm: the compiler may neither fold nor reorder the chains) */
      __asm__ volatile("vpdpbusd %[b], %[a], %[c0]\n\tvpdpbusd %[b], %[a], %[c1]\n\tvpdpbusd %[b], %[a], %[c2]\n\t"
                       "vpdpbusd %[b], %[a], %[c3]\n\tvpdpbusd %[b], %[a], %[c4]\n\tvpdpbusd %[b], %[a], %[c5]\n\t"
                       "vpdpbusd %[b], %[a], %[c6]\n\tvpdpbusd %[b], %[a], %[c7]\n\tvpdpbusd %[b], %[a], %[c8]\n\t"
                       "vpdpbusd %[b], %[a], %[c9]\n\tvpdpbusd %[b], %[a], %[c10]\n\tvpdpbusd %[b], %[a], %[c11]"
                       : [c0] "+v"(c0), [c1] "+v"(c1), [c2] "+v"(c2), [c3] "+v"(c3), [c4] "+v"(c4), [c5] "+v"(c5),
                         [c6] "+v"(c6), [c7] "+v"(c7), [c8] "+v"(c8), [c9] "+v"(c9), [c10] "+v"(c10), [c11] "+v"(c11)
                       : [a] "v"(a), [b] "v"(b));
    __m512i c[12] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};
    for (int i = 1; i < 12; i++) c[0] = _mm512_add_epi32(c[0], c[i]);
    j->sink = _mm512_reduce_add_epi32(c[0]);
#endif
    return NULL;
  }
  for (int64_t b = j->b0; b < j->b1; b++) {
    int64_t nb = N - b * NR < NR ? N - b * NR : NR;
    if (j->kind == 1)
      for (int64_t r = 0; r < M; r += W4A8_MR)
        tile_w4a8(j->v, j->XQ + r * j->ld, j->ld, j->XS + r * ng, j->XZ + r * ng, M - r < W4A8_MR ? (int)(M - r) : W4A8_MR,
                  &j->PP[b], j->C + r * N + b * NR, N, nb);
    else
      for (int64_t r = 0; r < M; r += MR) {
#ifdef MOEC_I8_NEXT_SLICE /* (runtimes that have it: the next panel fetched while this one runs, as the call sites) */
        int64_t pfs = 0;
        const char *pf = g_nopf ? NULL : i8_next_slice(b + 1 < j->b1 ? j->P8 + (b + 1) * j->pb8 : NULL, j->pb8, r / MR,
                                                       (M + MR - 1) / MR, KP4(K) / 4, &pfs);
        tile_i8_pf(j->XU + r * KP4(K), KP4(K), M - r < MR ? (int)(M - r) : MR, j->P8 + b * j->pb8, K, j->XUS + r,
                   j->s8 + b * NR, j->C + r * N + b * NR, N, nb, pf, pfs);
#else
        tile_i8(j->XU + r * KP4(K), KP4(K), M - r < MR ? (int)(M - r) : MR, j->P8 + b * j->pb8, K, j->XUS + r,
                j->s8 + b * NR, j->C + r * N + b * NR, N, nb);
#endif
      }
  }
  return NULL;
}

static void gemm(int argc, char **argv) {
  int64_t M = arg(argc, argv, 2, 64), K = arg(argc, argv, 3, 1024), N = arg(argc, argv, 4, 5632);
  int T = (int)arg(argc, argv, 5, 2);
  int64_t G = arg(argc, argv, 6, 32), ng = K / G, nblk = (N + NR - 1) / NR, ld = ng * g4_of(G);
  if (T < 1 || T > 64 || K % G || M < 1) { fprintf(stderr, "gemm M K N T G: 1 <= T <= 64, G divides K\n"); exit(2); }
  uint8_t *W4 = malloc(N * K / 2); int8_t *W8 = malloc(N * K);
  float *sw = malloc(sizeof(float) * N * ng), *s8 = malloc(sizeof(float) * nblk * NR);
  srand(1);
  for (int64_t i = 0; i < N * K / 2; i++) W4[i] = rand();
  for (int64_t i = 0; i < N * K; i++) W8[i] = (rand() % 255) - 127;
  for (int64_t i = 0; i < N * ng; i++) sw[i] = 0.01f * (1 + rand() % 7);
  for (int64_t i = 0; i < nblk * NR; i++) s8[i] = 0.01f;
  wview v = {MOEC_WQ_INT4, W4, sw, NULL, N, K, G};
  size_t pb = w4a8_panel_bytes(&v), pb8 = i8_panel_bytes(K);
  uint8_t *P4 = aligned_alloc(64, (pb * nblk + 63) / 64 * 64);
  int8_t *P8 = aligned_alloc(64, (pb8 * nblk + 63) / 64 * 64);
  w4p *PP = malloc(sizeof(w4p) * nblk);
  for (int64_t b = 0; b < nblk; b++) {
    int64_t nb = N - b * NR < NR ? N - b * NR : NR;
    PP[b] = pack_w4a8_panel(&v, 0, b * NR, nb, P4 + b * pb);
    pack_i8_panel(W8, K, b * NR, nb, P8 + b * pb8);
  }
  float *X = malloc(sizeof(float) * M * K), *XS = malloc(sizeof(float) * M * ng), *XUS = malloc(4 * M);
  for (int64_t i = 0; i < M * K; i++) X[i] = (rand() / (float)RAND_MAX) - 0.5f;
  int8_t *XQ = malloc(M * ld); xzt *XZ = malloc(sizeof(xzt) * M * ng); uint8_t *XU = malloc(M * KP4(K));
  for (int64_t r = 0; r < M; r++) {
    quant_row_g(X + r * K, K, G, XQ + r * ld, XS + r * ng, XZ + r * ng);
    quant_row_u8(X + r * K, K, XU + r * KP4(K), XUS + r);
  }
  float *C = malloc(sizeof(float) * M * N);
  double best[3] = {1e9, 1e9, 1e9};
  for (int it = 0; it < 20; it++)
    for (int kind = 0; kind < 3; kind++) {
      gjob jobs[64];
      pthread_t th[64];
      double t0 = now();
      for (int t = 0; t < T; t++) {
        jobs[t] = (gjob){M, K, N, G, nblk * t / T, nblk * (t + 1) / T, ld, kind, &v, PP, P8, pb8, XU, XUS, s8, XQ, XS, XZ, C, 0};
        pthread_create(&th[t], NULL, gemm_worker, &jobs[t]);
      }
      for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
      double dt = now() - t0;
      if (dt < best[kind]) best[kind] = dt;
    }
  double ops = 2.0 * M * N * K;
  printf("gemm M=%ld K=%ld N=%ld G=%ld T=%d GOP/s: tile_i8 %.1f tile_w4a8 %.1f vpdpbusd_peak %.1f\n", (long)M, (long)K,
         (long)N, (long)G, T, ops / best[0] / 1e9, ops / best[1] / 1e9, ops / best[2] / 1e9);
}

static void wq_items(int argc, char **argv) {
  int64_t M = arg(argc, argv, 2, 64), K = arg(argc, argv, 3, 1024), N = arg(argc, argv, 4, 5632);
  int int4 = (int)arg(argc, argv, 5, 0);
  int64_t G = 32, nblk = (N + NR - 1) / NR;
  if (M < 1 || K % G) { fprintf(stderr, "wq M K N int4: 32 divides K\n"); exit(2); }
  uint8_t *W = malloc(int4 ? N * K / 2 : N * K);
  float *sw = malloc(sizeof(float) * N * (K / G));
  srand(1);
  for (int64_t i = 0; i < (int4 ? N * K / 2 : N * K); i++) W[i] = int4 ? rand() : (rand() % 255) - 127;
  for (int64_t i = 0; i < N * (K / G); i++) sw[i] = 0.01f * (1 + rand() % 7);
  wview v = {int4 ? MOEC_WQ_INT4 : MOEC_WQ_INT8, W, sw, NULL, N, K, int4 ? G : 0};
  uint8_t *P = aligned_alloc(64, (nblk * wq_panel_bytes(&v) + 63) / 64 * 64); /* (cached_panels: weights only) */
  for (int64_t b = 0; b < nblk; b++)
    (int4 ? pack_w4k_panel : pack_w8k_panel)(W, K, b * NR, N - b * NR < NR ? N - b * NR : NR, P + b * wq_panel_bytes(&v));
  const float *tab = NULL; /* (scale tables per item, as with zero points) */
  float *X = malloc(sizeof(float) * M * K), *C = malloc(sizeof(float) * M * N);
  float *pack = aligned_alloc(64, (wq_pack_bytes(K) + 63) / 64 * 64), *stb = aligned_alloc(64, sizeof(float) * (2 * NR * (K / 2 + 1) + 16));
  float *F = aligned_alloc(64, sizeof(float) * K * NR);
  for (int64_t i = 0; i < M * K; i++) X[i] = (rand() / (float)RAND_MAX) - 0.5f;
  for (int64_t i = 0; i < K * NR; i++) F[i] = (rand() / (float)RAND_MAX) - 0.5f;
  double best[3] = {1e9, 1e9, 1e9};
  for (int it = 0; it < 15; it++)
    for (int kind = 0; kind < 3; kind++) {
      double t0 = now();
      for (int64_t b = 0; b < nblk; b++) {
        int64_t c0 = b * NR, nb = N - c0 < NR ? N - c0 : NR;
        if (kind == 2) { /* the f32 probe: tile() on one f32 panel in cache, the same rows and K */
          for (int64_t r = 0; r < M; r += MR) tile(X + r * K, K, M - r < MR ? (int)(M - r) : MR, F, K, C + r * N + c0, N, nb);
          continue;
        }
        const void *Bw = wq_panel(&v, P, 0, nblk, b, c0, nb, NULL);
        const float *st = wq_scales(&v, tab, 0, nblk, b, c0, nb, stb);
        if (M > wq_deq_rows(&v)) wq_dequant_panel(&v, Bw, st, pack);
        for (int64_t r = 0; r < M; r += MR) {
          int m = M - r < MR ? (int)(M - r) : MR;
          int64_t pfs = 0;
          const char *pf = kind == 1 && m > 4 ? wq_next_slice(&v, P, b + 1, nblk, r / MR, I8_PF_BLOCKS(M, MR), &pfs) : NULL;
          if (M > wq_deq_rows(&v)) tile_pf(X + r * K, K, m, pack, K, C + r * N + c0, N, nb, pf, pfs);
          else tile_wq_pf(&v, X + r * K, K, m, Bw, st, C + r * N + c0, N, nb, pf, pfs);
        }
      }
      double dt = now() - t0;
      if (dt < best[kind]) best[kind] = dt;
    }
  double fl = 2.0 * M * N * K;
  printf("wq %s M=%ld K=%ld N=%ld (panels %.1f MB) 1 thread GFLOP/s: no slices %.1f, next-item slices %.1f, f32 tile in cache %.1f\n",
         int4 ? "int4" : "int8", (long)M, (long)K, (long)N, nblk * wq_panel_bytes(&v) / 1e6, fl / best[0] / 1e9,
         fl / best[1] / 1e9, fl / best[2] / 1e9);
}

int main(int argc, char **argv) {
  const char *m = argc > 1 ? argv[1] : "w4a8";
  g_nopf = getenv("I8_NOPF") != NULL;
  if (!strcmp(m, "w4a8")) w4a8(argc, argv);
  else if (!strcmp(m, "dec8")) dec(argc, argv, 0);
  else if (!strcmp(m, "dec4")) dec(argc, argv, 1);
  else if (!strcmp(m, "gemm")) gemm(argc, argv);
  else if (!strcmp(m, "wq")) wq_items(argc, argv);
  else { fprintf(stderr, "modes: w4a8 K N M G zp | dec8 N rows | dec4 N rows | gemm M K N T G | wq M K N int4\n"); return 2; }
  return 0;
}

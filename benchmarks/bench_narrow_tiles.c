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
 *
 * Best of repeated passes (the host is shared: compare numbers of one run). */
#include "rt_moe_f32.c"
#include <stdio.h>
#include <string.h>
#include <time.h>
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
  int8_t *XQ = malloc(M * ld); int32_t *XZ = malloc(4 * M * ng); uint8_t *XU = malloc(M * KP4(K));
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
      if (rows == 1) tile_wq_r(&v, X, K, 1, P + b * pbk, ST + b * tw, Y + b * NR, N, NR, 1);
      else tile_wq_r(&v, X, K, 2, P + b * pbk, ST + b * tw, Y + b * NR, N, NR, 2);
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

int main(int argc, char **argv) {
  const char *m = argc > 1 ? argv[1] : "w4a8";
  if (!strcmp(m, "w4a8")) w4a8(argc, argv);
  else if (!strcmp(m, "dec8")) dec(argc, argv, 0);
  else if (!strcmp(m, "dec4")) dec(argc, argv, 1);
  else { fprintf(stderr, "modes: w4a8 K N M G zp | dec8 N rows | dec4 N rows\n"); return 2; }
  return 0;
}

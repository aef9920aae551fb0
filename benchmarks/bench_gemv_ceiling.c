/* The instruction-level ceiling of the one-row decode GEMVs' inner loops (issue 17, GV): each loop is only a kernel's
 * inner operations per 16 weights, on weights and x that stay in L1 (4 rows x 1024 int8 / int4 weights), repeated,
 * so the rate is what the core's vector ports allow, memory left out.  Compare with the kernels' in-cache rates
 * (bench_wq_gemv with INCACHE=1) and the read probe: a GEMV whose ceiling is below the memory rate is compute-bound.
 *
 *   gcc -O2 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma benchmarks/bench_gemv_ceiling.c -o /tmp/ceil && /tmp/ceil
 *
 * Loops (rows advance together with independent accumulators, as in gemv_w8 / gemv_w4_wide / tile_i8):
 *   int8 row:    vpmovsxbd (load) + vcvtdq2ps + vfmadd per 16 weights (gemv_w8's)
 *   int8 kpanel: the same three on a k-major panel (x[k] broadcast into the FMA), the layout a compile-time
 *                prefill panel would give decode
 *   int4 row:    vpsrld + vpermps (16-entry table) + vfmadd per 16 weights (gemv_w4_wide's)
 *   int4 kpanel: the same three on a k-major panel (16 columns x 8 k per 64 bytes, x[k] broadcast)
 *   int4 cvt:    vpsrld + vpandd + vcvtdq2ps + vfmadd (the conversion instead of the table)
 *   w8a8 row:    vpdpbusd per 64 weights (tile_i8's one-row loop)
 *   bf16 kernel: tile_bf16_mx's one-row loop without AVX512_BF16 on a pair panel (32 columns x 64 pairs): per pair
 *                two 64-byte loads, the even k's halves << 16 (vpslld) and the odd k's masked (vpandd), x[2p] and
 *                x[2p + 1] broadcast from memory, four FMAs into two accumulators (each a chain of two FMAs a pair)
 *   bf16 pairs:  the same ops into four independent accumulators (the ports' ceiling, no FMA chain)
 * CPU time (CLOCK_PROCESS_CPUTIME_ID), the median of 31 runs; GB/s of weight bytes (one row of x). */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define K 1024
static double now(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static int8_t W8[4][K] __attribute__((aligned(64)));
static uint8_t W4[4][K / 2] __attribute__((aligned(64)));
static float X[K] __attribute__((aligned(64)));
static uint8_t XQ[K] __attribute__((aligned(64)));
static uint32_t WB[4 * K / 2] __attribute__((aligned(64))); /* 4 x 1024 bf16 weights: 32 columns x 64 pairs */
static volatile float sink;
static volatile int32_t isink;

__attribute__((noinline)) static void int8_row(void) {
  __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int k = 0; k < K; k += 16) {
    const __m512 x = _mm512_load_ps(X + k);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
      a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(W8[i] + k)))), x, a[i]);
  }
  sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}
/* k-major: 64 columns per k step (4 x 16 lanes), the same 4 x 1024 weights */
__attribute__((noinline)) static void int8_kpanel(void) {
  __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const int8_t *w = &W8[0][0];
  for (int k = 0; k < K / 16; k++) {
    const __m512 x = _mm512_set1_ps(X[k]);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
      a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(w + 64 * k + 16 * i)))), x, a[i]);
  }
  sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}
__attribute__((noinline)) static void int4_row(void) {
  const __m512 tab = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  __m512 a[4], b[4];
  for (int i = 0; i < 4; i++) a[i] = b[i] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 128) {
    __m512i d[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) d[i] = _mm512_load_si512((const void *)(W4[i] + k / 2));
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
      const __m512 x = _mm512_load_ps(X + k + 16 * j);
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        const __m512 q = _mm512_permutexvar_ps(j ? _mm512_srli_epi32(d[i], 4 * j) : d[i], tab);
        if (j & 1) b[i] = _mm512_fmadd_ps(q, x, b[i]);
        else a[i] = _mm512_fmadd_ps(q, x, a[i]);
      }
    }
  }
  for (int i = 0; i < 4; i++) a[i] = _mm512_add_ps(a[i], b[i]);
  sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}
__attribute__((noinline)) static void int4_cvt(void) {
  const __m512i m = _mm512_set1_epi32(15);
  __m512 a[4], b[4];
  for (int i = 0; i < 4; i++) a[i] = b[i] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 128) {
    __m512i d[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) d[i] = _mm512_load_si512((const void *)(W4[i] + k / 2));
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
      const __m512 x = _mm512_load_ps(X + k + 16 * j);
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        const __m512 q = _mm512_cvtepi32_ps(_mm512_and_si512(j ? _mm512_srli_epi32(d[i], 4 * j) : d[i], m));
        if (j & 1) b[i] = _mm512_fmadd_ps(q, x, b[i]);
        else a[i] = _mm512_fmadd_ps(q, x, a[i]);
      }
    }
  }
  for (int i = 0; i < 4; i++) a[i] = _mm512_add_ps(a[i], b[i]);
  sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}
/* k-major int4: 64 bytes = 16 columns x 8 k (lane l's dword: column l's 8 nibbles), x[k] broadcast into the FMA;
 * the same 4 x 1024 weights (the table n - 8 is exact and shared by the lanes: a column's group scale would
 * multiply its partial sum once per group, left out here) */
__attribute__((noinline)) static void int4_kpanel(void) {
  const __m512 tab = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  __m512 a[4], b[4];
  for (int i = 0; i < 4; i++) a[i] = b[i] = _mm512_setzero_ps();
  const uint8_t *w = &W4[0][0];
  for (int k = 0; k < 4 * K / 2 / 64; k += 4) { /* 64-byte chunks: four column groups of 16 at the same 8 k */
    __m512i d[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) d[i] = _mm512_load_si512((const void *)(w + 64 * (k + i)));
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
      const __m512 x = _mm512_set1_ps(X[2 * k + j]);
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        const __m512 q = _mm512_permutexvar_ps(j ? _mm512_srli_epi32(d[i], 4 * j) : d[i], tab);
        if (j & 1) b[i] = _mm512_fmadd_ps(q, x, b[i]);
        else a[i] = _mm512_fmadd_ps(q, x, a[i]);
      }
    }
  }
  for (int i = 0; i < 4; i++) a[i] = _mm512_add_ps(a[i], b[i]);
  sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}
/* 4 x 1024 int8 weights as a k-major panel of 32 columns x 128 k: 128 bytes per 4 k */
__attribute__((noinline)) static void w8a8_row(void) {
  __m512i a[4];
  for (int i = 0; i < 4; i++) a[i] = _mm512_setzero_si512();
  const int8_t *b = &W8[0][0];
  for (int p = 0; p < 4 * K / 128; p += 2) {
    int32_t f0, f1;
    __builtin_memcpy(&f0, XQ + 4 * (p % 256), 4);
    __builtin_memcpy(&f1, XQ + 4 * (p % 256) + 4, 4);
    const __m512i x0 = _mm512_set1_epi32(f0), x1 = _mm512_set1_epi32(f1);
    a[0] = _mm512_dpbusd_epi32(a[0], x0, _mm512_load_si512((const void *)(b + 128 * p)));
    a[1] = _mm512_dpbusd_epi32(a[1], x0, _mm512_load_si512((const void *)(b + 128 * p + 64)));
    a[2] = _mm512_dpbusd_epi32(a[2], x1, _mm512_load_si512((const void *)(b + 128 * p + 128)));
    a[3] = _mm512_dpbusd_epi32(a[3], x1, _mm512_load_si512((const void *)(b + 128 * p + 192)));
  }
  isink = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3])));
}
__attribute__((noinline)) static void bf16_kernel(void) {
  const __m512i hm = _mm512_set1_epi32((int)0xffff0000u);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  for (int p = 0; p < 4 * K / 64; p++) {
    const __m512i u0 = _mm512_load_si512((const void *)(WB + 32 * p)), u1 = _mm512_load_si512((const void *)(WB + 32 * p + 16));
    const __m512 xe = _mm512_set1_ps(X[2 * p]), xo = _mm512_set1_ps(X[2 * p + 1]);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(u0, 16)), xe, a0);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(u0, hm)), xo, a0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(u1, 16)), xe, a1);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(u1, hm)), xo, a1);
  }
  sink = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
__attribute__((noinline)) static void bf16_pairs(void) {
  const __m512i hm = _mm512_set1_epi32((int)0xffff0000u);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  for (int p = 0; p < 4 * K / 64; p++) {
    const __m512i u0 = _mm512_load_si512((const void *)(WB + 32 * p)), u1 = _mm512_load_si512((const void *)(WB + 32 * p + 16));
    const __m512 xe = _mm512_set1_ps(X[2 * p]), xo = _mm512_set1_ps(X[2 * p + 1]);
    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(u0, 16)), xe, a0);
    b0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(u0, hm)), xo, b0);
    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(u1, 16)), xe, a1);
    b1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(u1, hm)), xo, b1);
  }
  sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(b0, b1)));
}
static void run(const char *name, void (*f)(void), double bytes) {
  double t[31];
  const int reps = 20000;
  for (int r = 0; r < 31; r++) {
    double t0 = now();
    for (int i = 0; i < reps; i++) f();
    t[r] = (now() - t0) / reps;
  }
  qsort(t, 31, sizeof(double), cmpd);
  printf("%-12s %7.1f ns per call (4 x %d weights)  %6.2f ns per 16 weights  %6.1f GB/s (median)  %6.1f GB/s (best)\n",
         name, 1e9 * t[15], K, 1e9 * t[15] / (4 * K / 16), bytes / t[15] * 1e-9, bytes / t[0] * 1e-9);
}
/* the memory side on the same terms: one core summing 256 MB (64-byte loads, four chains), CPU time */
static void read_stream(void) {
  const size_t n = (size_t)256 << 20;
  char *buf = aligned_alloc(64, n);
  for (size_t i = 0; i < n; i += 4096) buf[i] = (char)i;
  for (size_t i = 0; i < n; i++) buf[i] = (char)i;
  double t[7];
  for (int r = 0; r < 7; r++) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    double t0 = now();
    for (size_t i = 0; i < n; i += 256) {
      a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(buf + i)));
      a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(buf + i + 64)));
      a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(buf + i + 128)));
      a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(buf + i + 192)));
    }
    t[r] = now() - t0;
    isink = (int32_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  }
  qsort(t, 7, sizeof(double), cmpd);
  printf("%-12s one core reading 256 MB: %6.1f GB/s (median)  %6.1f GB/s (best)\n", "read", n / t[3] * 1e-9, n / t[0] * 1e-9);
  free(buf);
}
int main(void) {
  srand(1);
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < K; k++) W8[i][k] = (int8_t)rand();
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < K / 2; k++) W4[i][k] = (uint8_t)rand();
  for (int k = 0; k < K; k++) { X[k] = (rand() % 2001 - 1000) * 1e-3f; XQ[k] = (uint8_t)rand(); }
  for (int i = 0; i < 4 * K / 2; i++) WB[i] = 0x3c003c00u | ((uint32_t)rand() & 0x83ff83ffu);
  run("int8 row", int8_row, 4.0 * K);
  run("int8 kpanel", int8_kpanel, 4.0 * K);
  run("int4 row", int4_row, 2.0 * K);
  run("int4 kpanel", int4_kpanel, 2.0 * K);
  run("int4 cvt", int4_cvt, 2.0 * K);
  run("w8a8 row", w8a8_row, 4.0 * K);
  run("bf16 kernel", bf16_kernel, 8.0 * K);
  run("bf16 pairs", bf16_pairs, 8.0 * K);
  read_stream();
  return 0;
}

/* Drives rt_amx.c's kernels directly over edge shapes, every buffer malloc'ed to its exact size (so an access
 * outside one shows under ASan), against scalar C written here: bf16 (and bf16 with group scales) within the
 * f32-summation bound, w8a8 bit
 * for bit (exact int32 sums, the epilogue of tile_i8).  Built by tests/test_amx.py with -DMOEC_HAVE_AMX and
 * either -DMOEC_AMX_EMULATE (any host) or the real -mamx-* flags (an AMX host), -fsanitize=address,undefined.
 * Prints "ok <cases>" and exits 0, or the first mismatch and exits 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_amx.h"

#define PNR 32
static uint64_t rng = 88172645463325252ull;
static uint32_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)rng;
}
static uint16_t rand_bf16(void) { /* a normal bf16 of magnitude 2^-4 .. 2^3, either sign */
  uint32_t e = 123 + next() % 8, man = next() & 0x7f, s = next() & 1;
  return (uint16_t)((s << 15) | (e << 7) | man);
}
static double bf(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int check_bf16(int m, int64_t K, int64_t nb, int64_t ldc) {
  const int64_t P = (K + 1) / 2;
  uint32_t *A = malloc(sizeof(uint32_t) * (size_t)(m * P)), *B = malloc(sizeof(uint32_t) * (size_t)(P * PNR));
  float *C = malloc(sizeof(float) * (size_t)((m - 1) * ldc + nb));
  for (int64_t i = 0; i < m * P; i++) {
    uint32_t lo = rand_bf16(), hi = rand_bf16();
    if ((K & 1) && i % P == P - 1) hi = 0; /* an odd K's zero partner */
    A[i] = lo | hi << 16;
  }
  for (int64_t p = 0; p < P; p++)
    for (int j = 0; j < PNR; j++) {
      uint32_t lo = j < nb ? rand_bf16() : 0, hi = j < nb && 2 * p + 1 < K ? rand_bf16() : 0;
      B[p * PNR + j] = lo | hi << 16;
    }
  moec_amx_bf16(A, P, m, B, C, ldc, nb);
  int bad = 0;
  for (int r = 0; r < m && !bad; r++)
    for (int64_t j = 0; j < nb; j++) {
      double want = 0, mag = 0;
      for (int64_t p = 0; p < P; p++) {
        double t0 = bf(A[r * P + p] & 0xffff) * bf(B[p * PNR + j] & 0xffff), t1 = bf(A[r * P + p] >> 16) * bf(B[p * PNR + j] >> 16);
        want += t0 + t1;
        mag += fabs(t0) + fabs(t1);
      }
      if (!(fabs(C[r * ldc + j] - want) <= 2.0 * K * 6e-8 * mag + 1e-30)) {
        printf("bf16 m=%d K=%lld nb=%lld: C[%d][%lld] = %.9g, want %.9g\n", m, (long long)K, (long long)nb, r, (long long)j,
               C[r * ldc + j], want);
        bad = 1;
        break;
      }
    }
  free(A), free(B), free(C);
  return bad;
}

/* tile_bf16_gs's contract: per group of pg pairs the f32 sum times the group's column scales (gs + g * 64) */
static int check_bf16_gs(int m, int64_t K, int64_t nb, int64_t ldc, int64_t pg) {
  const int64_t P = (K + 1) / 2, ng = (P + pg - 1) / pg;
  uint32_t *A = malloc(sizeof(uint32_t) * (size_t)(m * P)), *B = malloc(sizeof(uint32_t) * (size_t)(P * PNR));
  float *gs = malloc(sizeof(float) * (size_t)(ng * 2 * PNR));
  float *C = malloc(sizeof(float) * (size_t)((m - 1) * ldc + nb));
  for (int64_t i = 0; i < m * P; i++) A[i] = rand_bf16() | (uint32_t)rand_bf16() << 16;
  for (int64_t i = 0; i < P * PNR; i++) B[i] = (i % PNR) < nb ? rand_bf16() | (uint32_t)rand_bf16() << 16 : 0;
  for (int64_t i = 0; i < ng * 2 * PNR; i++) gs[i] = (float)((int)(next() % 2001) - 1000) / 1024.f;
  moec_amx_bf16_gs(A, P, m, B, gs, pg, C, ldc, nb);
  int bad = 0;
  for (int r = 0; r < m && !bad; r++)
    for (int64_t j = 0; j < nb; j++) {
      double want = 0, mag = 0;
      for (int64_t g = 0; g < ng; g++) {
        double part = 0, pm = 0;
        for (int64_t p = g * pg; p < P && p < (g + 1) * pg; p++) {
          double t0 = bf(A[r * P + p] & 0xffff) * bf(B[p * PNR + j] & 0xffff), t1 = bf(A[r * P + p] >> 16) * bf(B[p * PNR + j] >> 16);
          part += t0 + t1;
          pm += fabs(t0) + fabs(t1);
        }
        want += part * gs[g * 2 * PNR + j];
        mag += pm * fabs(gs[g * 2 * PNR + j]);
      }
      if (!(fabs(C[r * ldc + j] - want) <= 2.0 * (K + ng) * 6e-8 * mag + 1e-30)) {
        printf("bf16_gs m=%d K=%lld nb=%lld pg=%lld: C[%d][%lld] = %.9g, want %.9g\n", m, (long long)K, (long long)nb,
               (long long)pg, r, (long long)j, C[r * ldc + j], want);
        bad = 1;
        break;
      }
    }
  free(A), free(B), free(gs), free(C);
  return bad;
}

static int check_i8(int m, int64_t K, int64_t nb, int64_t ldc) {
  const int64_t Kp = (K + 3) / 4 * 4, P = Kp / 4;
  uint8_t *A = malloc((size_t)(m * Kp));
  int8_t *B = malloc((size_t)(P * PNR * 4) + sizeof(int32_t) * PNR);
  float *xs = malloc(sizeof(float) * (size_t)m), *ws = malloc(sizeof(float) * PNR);
  float *C = malloc(sizeof(float) * (size_t)((m - 1) * ldc + nb));
  for (int r = 0; r < m; r++)
    for (int64_t k = 0; k < Kp; k++) A[r * Kp + k] = k < K ? (uint8_t)(1 + next() % 255) : 128; /* codes + 128 */
  int32_t cs[PNR] = {0};
  for (int64_t p = 0; p < P; p++)
    for (int j = 0; j < PNR; j++)
      for (int i = 0; i < 4; i++) {
        int8_t v = j < nb && 4 * p + i < K ? (int8_t)(next() % 255 - 127) : 0;
        B[(p * PNR + j) * 4 + i] = v;
        cs[j] += v;
      }
  memcpy(B + P * PNR * 4, cs, sizeof cs);
  for (int r = 0; r < m; r++) xs[r] = (float)(next() % 1000 + 1) / 65536.f;
  for (int j = 0; j < PNR; j++) ws[j] = (float)(next() % 1000 + 1) / 32768.f;
  moec_amx_i8(A, Kp, m, B, K, xs, ws, C, ldc, nb);
  int bad = 0;
  for (int r = 0; r < m && !bad; r++)
    for (int64_t j = 0; j < nb; j++) {
      int32_t s = 0;
      for (int64_t k = 0; k < Kp; k++) s += (int32_t)A[r * Kp + k] * B[((k / 4) * PNR + j) * 4 + k % 4];
      float want = (float)(s - 128 * cs[j]) * (xs[r] * ws[j]);
      if (memcmp(&want, &C[r * ldc + j], 4)) {
        printf("i8 m=%d K=%lld nb=%lld: C[%d][%lld] = %.9g, want %.9g\n", m, (long long)K, (long long)nb, r, (long long)j,
               C[r * ldc + j], want);
        bad = 1;
        break;
      }
    }
  free(A), free(B), free(xs), free(ws), free(C);
  return bad;
}

int main(void) {
  if (!moec_amx_on()) {
    printf("amx off: %s\n", moec_amx_status());
    return 3;
  }
  static const int ms[] = {1, 2, 3, 15, 16, 17, 31, 32, 33, 48, 70};
  static const int64_t Ks[] = {1, 2, 3, 4, 31, 32, 33, 63, 64, 65, 96, 97, 128, 255, 301};
  static const int64_t nbs[] = {1, 7, 15, 16, 17, 31, 32};
  int n = 0;
  for (size_t a = 0; a < sizeof ms / sizeof *ms; a++)
    for (size_t b = 0; b < sizeof Ks / sizeof *Ks; b++)
      for (size_t c = 0; c < sizeof nbs / sizeof *nbs; c++) {
        const int64_t nb = nbs[c], ldc = (a + b) % 2 ? nb : nb + 5; /* tight rows (the last element ends C) or not */
        if (check_bf16(ms[a], Ks[b], nb, ldc) || check_i8(ms[a], Ks[b], nb, ldc)) return 1;
        /* groups of 8 (a tail in every group), 16, 32 pairs and the whole row (int8's one group) */
        const int64_t pg = (a + c) % 4 == 0 ? 8 : (a + c) % 4 == 1 ? 16 : (a + c) % 4 == 2 ? 32 : (Ks[b] + 1) / 2;
        if (check_bf16_gs(ms[a], Ks[b], nb, ldc, pg)) return 1;
        n += 3;
      }
  printf("ok %d\n", n);
  return 0;
}

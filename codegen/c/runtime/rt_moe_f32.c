/* f32 grouped expert FFN: packed, register-blocked GEMM per expert over the dispatch plan.
 *
 *   phase 1  H_e = X_e @ W_in[e]^T      work items: (expert, NR-column block of I)
 *   phase 2  A_e = act(H_e)             (SwiGLU pairs gate column j with up column F+j)
 *   phase 3  Y_e = A_e @ W_out[e]^T     work items: (expert, NR-column block of D), rows scattered
 *                                       to their (token, slot) and scaled by the routing weight
 *
 * The micro-kernel keeps an MR x NR tile of C in vector registers (GCC vector extensions, width
 * MOEC_VBYTES from the target description: 64 on AVX-512, 32 on AVX2, 16 otherwise; the f32 tile is
 * FMR = 12 rows with intrinsics on AVX-512 (tile512), the AVX2 one intrinsics too) and streams
 * a column block of the weights packed k-major so each k step is NR/VL aligned loads, MR
 * broadcasts and MR*NR/VL FMAs.  Experts with very few rows take a dot-product GEMV path
 * (no packing; bandwidth bound). */
#include "rt_moe.h"
#include "moec_model.h"
#include "rt_amx.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#ifndef MOEC_VBYTES
#define MOEC_VBYTES 16
#endif
#define VL (MOEC_VBYTES / 4)
#define NR 32
#define NV (NR / VL)
#if VL >= 16
#define MR 8 /* 8 x 2 zmm accumulators */
#else
#define MR 4
#endif
#define GEMV_ROWS 2
#define TILE_PFD 16 /* tile_core's T0 prefetch distance in k steps (AVX-512) */
#if VL == 16 && defined(__AVX512F__)
#include <immintrin.h>
#define F32_AVX512 1
#define FMR 12 /* rows of the f32 tile (tile / tile_pf): 12 x 2 zmm accumulators (the dense GEMM's 12 x 32) */
#else
#define FMR MR
#endif

typedef float vf __attribute__((vector_size(MOEC_VBYTES), aligned(4)));

/* broadcast a scalar: one vbroadcastss (writing (vf){0} + v costs an extra scalar add, since 0 + v is
 * not v for v = -0, and a per-lane loop compiles to masked inserts) */
typedef int32_t vi_ __attribute__((vector_size(MOEC_VBYTES)));
static inline vf splat(float v) { return __builtin_shuffle((vf){v}, (vi_){0}); }

static inline float sigm_f(float v) { return 1.0f / (1.0f + expf(-v)); }

/* Bp[k*NR + j] = W[(n0 + j) * K + k] for j < nb, zero beyond */
static void pack_b(const float *W, int64_t K, int64_t n0, int64_t nb, float *Bp) {
  for (int64_t j = 0; j < NR; j++) {
    if (j < nb) {
      const float *w = W + (n0 + j) * K;
      for (int64_t k = 0; k < K; k++) Bp[k * NR + j] = w[k];
    } else {
      for (int64_t k = 0; k < K; k++) Bp[k * NR + j] = 0.f;
    }
  }
}

#if MOEC_VBYTES == 32 && defined(__AVX2__) && defined(__FMA__)
/* AVX2 + FMA builds (no AVX-512): tile / tile_dec / gemv_block below are written with intrinsics.  GCC 12
 * kept the generic-vector versions' 8-lane accumulators in memory on AVX2 (each 32-byte memcpy moved
 * through two xmm halves on the stack): 2-20 GFLOP/s a core, against 40-110 with these (an AVX-512 host
 * running the AVX2 build; benchmarks/bench_avx2_kernels.py).  Same panels (k-major, NR = 32 columns). */
#include <immintrin.h>
#define F32_AVX2 1
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
/* MX (<= MR = 4) rows x 32 columns as two 4 x 16 halves: 8 ymm accumulators, two B vectors and a broadcast
 * per k (the 4 x 32 tile's 16 accumulators do not fit AVX2's 16 registers); each half reads its 64 bytes of
 * every k row of the panel, K unrolled by 4.  Per accumulator the FMAs run in k order, as tile()'s. */
static inline __attribute__((always_inline)) void tile_avx2_mx(const int MX, const float *A, int64_t lda,
                                                               const float *Bp, int64_t K, float *C, int64_t ldc,
                                                               int64_t nb) {
  for (int h = 0; h < NR / 16 && h * 16 < nb; h++) {
    const float *bp = Bp + h * 16;
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MX; r++) c0[r] = c1[r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; u++) {
        const __m256 b0 = _mm256_loadu_ps(bp + (k + u) * NR), b1 = _mm256_loadu_ps(bp + (k + u) * NR + 8);
#pragma GCC unroll 4
        for (int r = 0; r < MX; r++) {
          const __m256 x = _mm256_broadcast_ss(A + r * lda + k + u);
          c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
          c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
        }
      }
    }
    for (; k < K; k++) {
      const __m256 b0 = _mm256_loadu_ps(bp + k * NR), b1 = _mm256_loadu_ps(bp + k * NR + 8);
#pragma GCC unroll 4
      for (int r = 0; r < MX; r++) {
        const __m256 x = _mm256_broadcast_ss(A + r * lda + k);
        c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
        c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
      }
    }
    const int64_t w = nb - h * 16 < 16 ? nb - h * 16 : 16;
#pragma GCC unroll 4
    for (int r = 0; r < MX; r++) {
      float *c = C + r * ldc + h * 16;
      if (w == 16) {
        _mm256_storeu_ps(c, c0[r]);
        _mm256_storeu_ps(c + 8, c1[r]);
      } else {
        float t[16];
        _mm256_storeu_ps(t, c0[r]);
        _mm256_storeu_ps(t + 8, c1[r]);
        for (int64_t j = 0; j < w; j++) c[j] = t[j];
      }
    }
  }
}
/* decode on the compile-time panels: MX = 1 or 2 rows x 32 columns (4 ymm per row); one row keeps even and
 * odd k apart (8 chains), two rows have 8 already.  The panel streams once (software prefetch 8 rows
 * ahead cost a third of the bandwidth at one row: the hardware's stream prefetch does it). */
static inline __attribute__((always_inline)) void tile_dec_avx2_mx(const int MX, const float *A, int64_t lda,
                                                                   const float *Bp, int64_t K, float *C,
                                                                   int64_t ldc, int64_t nb) {
  __m256 acc[2][4], acd[4];
#pragma GCC unroll 4
  for (int v = 0; v < 4; v++) acc[0][v] = acc[1][v] = acd[v] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    const float *b = Bp + k * NR;
#pragma GCC unroll 2
    for (int r = 0; r < MX; r++) {
      const __m256 x = _mm256_broadcast_ss(A + r * lda + k), y = _mm256_broadcast_ss(A + r * lda + k + 1);
#pragma GCC unroll 4
      for (int v = 0; v < 4; v++) {
        acc[r][v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 8 * v), acc[r][v]);
        if (MX == 1) acd[v] = _mm256_fmadd_ps(y, _mm256_loadu_ps(b + NR + 8 * v), acd[v]);
        else acc[r][v] = _mm256_fmadd_ps(y, _mm256_loadu_ps(b + NR + 8 * v), acc[r][v]);
      }
    }
  }
  for (; k < K; k++)
#pragma GCC unroll 2
    for (int r = 0; r < MX; r++) {
      const __m256 x = _mm256_broadcast_ss(A + r * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < 4; v++) acc[r][v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(Bp + k * NR + 8 * v), acc[r][v]);
    }
#pragma GCC unroll 2
  for (int r = 0; r < MX; r++) {
    float t[NR];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) _mm256_storeu_ps(t + 8 * v, MX == 1 ? _mm256_add_ps(acc[r][v], acd[v]) : acc[r][v]);
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = t[j];
  }
}
/* out[r * ldo + c] = dot(X[r], W[c]) for R (1 or 2) rows of X and CW (4 or 1) weight rows: every weight vector
 * loaded once for both rows; one row keeps two accumulators per weight row (8 chains with CW = 4). */
static inline __attribute__((always_inline)) void gemv_avx2_blk(const int R, const int CW, const float *X, int64_t ldx,
                                                                const float *W, int64_t K, float *out, int64_t ldo) {
  enum { U = 2 };
  __m256 acc[2][4][U];
#pragma GCC unroll 2
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < CW; c++) acc[r][c][0] = acc[r][c][1] = _mm256_setzero_ps();
  int64_t k = 0;
  if (R == 1)
    for (; k + 16 <= K; k += 16)
#pragma GCC unroll 2
      for (int u = 0; u < 2; u++) {
        const __m256 x = _mm256_loadu_ps(X + k + 8 * u);
#pragma GCC unroll 4
        for (int c = 0; c < CW; c++) acc[0][c][u] = _mm256_fmadd_ps(x, _mm256_loadu_ps(W + c * K + k + 8 * u), acc[0][c][u]);
      }
  for (; k + 8 <= K; k += 8) {
    __m256 x[2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) x[r] = _mm256_loadu_ps(X + r * ldx + k);
#pragma GCC unroll 4
    for (int c = 0; c < CW; c++) {
      const __m256 w = _mm256_loadu_ps(W + c * K + k);
#pragma GCC unroll 2
      for (int r = 0; r < R; r++) acc[r][c][0] = _mm256_fmadd_ps(x[r], w, acc[r][c][0]);
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < CW; c++) {
      float s = hsum8(_mm256_add_ps(acc[r][c][0], acc[r][c][1]));
      for (int64_t i = k; i < K; i++) s += X[r * ldx + i] * W[c * K + i];
      out[r * ldo + c] = s;
    }
}
#endif

#ifdef F32_AVX512
/* AVX-512: M (<= FMR = 12) rows x 32 columns with intrinsics (the dense GEMM's sg_tile_avx512, rt_gemm_f32.c),
 * a T0 prefetch of the panel TILE_PFD k steps ahead and, PF, tile_pf's prefetcht1; each accumulator's FMAs
 * in k order, as the generic tile below (the same bits at every height).  The f32 experts' prefill (phase 1,
 * and phase 3 on f32 panels) steps FMR rows; the weight-only kinds' dequantised panels keep MR = 8 rows
 * (their prefetch slices and narrow tiles are per MR rows).  Whole Mixtral-like model, f32 prefill, 2 threads
 * on Ice Lake-SP against the 8-row generic-vector tile: 0.87x the time at N = 256, 0.73x at N = 64 (the
 * 8-row intrinsics tile with the prefetch: 0.93x, 0.79x; the same logits). */
static inline __attribute__((always_inline)) void tile512(const int M, const float *A, int64_t lda, const float *Bp,
                                                          int64_t K, float *C, int64_t ldc, int64_t nb, const int PF,
                                                          const char *pf, int64_t pfs) {
  __m512 c0[FMR], c1[FMR];
  const float *a[FMR];
#pragma GCC unroll 16
  for (int r = 0; r < M; r++) {
    c0[r] = c1[r] = _mm512_setzero_ps();
    a[r] = A + r * lda;
  }
  if (PF && !pf) pf = (const char *)Bp, pfs = 0;
  for (int64_t k = 0; k < K; k++) {
    if (PF) {
      _mm_prefetch(pf, _MM_HINT_T1);
      pf += pfs;
    }
    const float *b = Bp + k * NR;
    _mm_prefetch((const char *)(b + TILE_PFD * NR), _MM_HINT_T0);
    _mm_prefetch((const char *)(b + TILE_PFD * NR + 16), _MM_HINT_T0);
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
    for (int r = 0; r < M; r++) {
      const __m512 x = _mm512_set1_ps(a[r][k]);
      c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < M; r++) {
    if (nb == NR) {
      _mm512_storeu_ps(C + r * ldc, c0[r]);
      _mm512_storeu_ps(C + r * ldc + 16, c1[r]);
    } else {
      float tmp[NR];
      _mm512_storeu_ps(tmp, c0[r]);
      _mm512_storeu_ps(tmp + 16, c1[r]);
      for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
    }
  }
}
#endif

/* C[r][0..nb) = sum_k A[r][k] * Bp[k][0..nb) for r < m (m <= FMR).  The loops over the tile are
 * fully unrolled so the MR x NV accumulators live in registers.  PF (tile_pf, the weight-only kinds' dequantised
 * panels): one prefetcht1 of pf per k step, pf advancing by pfs (a slice of the next item's narrow panel, see
 * wq_next_slice); PF 0 (tile) has no prefetch at all. */
static inline __attribute__((always_inline)) void tile_core(const float *A, int64_t lda, int m, const float *Bp,
                                                            int64_t K, float *C, int64_t ldc, int64_t nb, const int PF,
                                                            const char *pf, int64_t pfs) {
#ifdef F32_AVX2
  (void)PF, (void)pf, (void)pfs;
  switch (m) {
    case 1: tile_avx2_mx(1, A, lda, Bp, K, C, ldc, nb); return;
    case 2: tile_avx2_mx(2, A, lda, Bp, K, C, ldc, nb); return;
    case 3: tile_avx2_mx(3, A, lda, Bp, K, C, ldc, nb); return;
    default: tile_avx2_mx(MR, A, lda, Bp, K, C, ldc, nb); return;
  }
#endif
#ifdef F32_AVX512
  switch (m) { /* (every height instantiated: a short tile does no wasted rows) */
    case 1: tile512(1, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 2: tile512(2, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 3: tile512(3, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 4: tile512(4, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 5: tile512(5, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 6: tile512(6, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 7: tile512(7, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 8: tile512(8, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 9: tile512(9, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 10: tile512(10, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    case 11: tile512(11, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
    default: tile512(FMR, A, lda, Bp, K, C, ldc, nb, PF, pf, pfs); return;
  }
#endif
  vf acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) acc[r][v] = (vf){0};
  const float *a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) a[r] = A + (r < m ? r : 0) * lda;
  if (PF && !pf) pf = (const char *)Bp, pfs = 0; /* (nothing ahead: the line just read, a no-op) */
  for (int64_t k = 0; k < K; k++) {
    if (PF) {
      __builtin_prefetch(pf, 0, 2);
      pf += pfs;
    }
    vf b[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) __builtin_memcpy(&b[v], Bp + k * NR + v * VL, sizeof(vf));
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      vf xr = splat(a[r][k]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++) acc[r][v] += xr * b[v];
    }
  }
  for (int r = 0; r < m; r++) {
    float tmp[NR];
    for (int v = 0; v < NV; v++) __builtin_memcpy(tmp + v * VL, &acc[r][v], sizeof(vf));
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
  }
}
static void tile(const float *A, int64_t lda, int m, const float *Bp, int64_t K, float *C, int64_t ldc, int64_t nb) {
  tile_core(A, lda, m, Bp, K, C, ldc, nb, 0, NULL, 0);
}
static void tile_pf(const float *A, int64_t lda, int m, const float *Bp, int64_t K, float *C, int64_t ldc, int64_t nb,
                    const char *pf, int64_t pfs) {
  tile_core(A, lda, m, Bp, K, C, ldc, nb, 1, pf, pfs);
}

/* One or two rows (decode) on the same k-panels: the panel streams from memory once, and each row's accumulators
 * would be a chain of dependent FMAs, so even and odd k go to two accumulator sets (summed at the end) where the
 * registers hold them (NV <= 2: AVX-512; narrower vectors have NV independent chains per row already); rows
 * are unrolled (MX = 1 or 2, m <= MX).  (Another order of the sums than tile(), as the row GEMV it replaces on
 * compile-time panels was.) */
static inline __attribute__((always_inline)) void tile_dec_mx(const int MX, const float *A, int64_t lda, int m,
                                                              const float *Bp, int64_t K, float *C, int64_t ldc,
                                                              int64_t nb) {
  vf acc[2][NV], acd[2][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++)
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) acc[r][v] = acd[r][v] = (vf){0};
  const float *a[2] = {A, A + (m > 1 ? lda : 0)};
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    vf b[NV], c[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
      __builtin_memcpy(&b[v], Bp + k * NR + v * VL, sizeof(vf));
      __builtin_memcpy(&c[v], Bp + (k + 1) * NR + v * VL, sizeof(vf));
    }
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      const vf x = splat(a[r][k]), y = splat(a[r][k + 1]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++) {
        acc[r][v] += x * b[v];
        if (NV <= 2) acd[r][v] += y * c[v];
        else acc[r][v] += y * c[v];
      }
    }
  }
  for (; k < K; k++)
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      const vf x = splat(a[r][k]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++) {
        vf b;
        __builtin_memcpy(&b, Bp + k * NR + v * VL, sizeof(vf));
        acc[r][v] += x * b;
      }
    }
  for (int r = 0; r < m; r++) {
    float tmp[NR];
    for (int v = 0; v < NV; v++) {
      const vf t = acc[r][v] + acd[r][v];
      __builtin_memcpy(tmp + v * VL, &t, sizeof(vf));
    }
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
  }
}
static void tile_dec(const float *A, int64_t lda, int m, const float *Bp, int64_t K, float *C, int64_t ldc, int64_t nb) {
#ifdef F32_AVX2
  if (m == 1) tile_dec_avx2_mx(1, A, lda, Bp, K, C, ldc, nb);
  else tile_dec_avx2_mx(2, A, lda, Bp, K, C, ldc, nb);
  return;
#endif
  if (m == 1) tile_dec_mx(1, A, lda, m, Bp, K, C, ldc, nb);
  else tile_dec_mx(2, A, lda, m, Bp, K, C, ldc, nb);
}

/* Weights from the weights file never change: their packed panels are built once per library
 * and reused ([E][N/NR][panel]).  One cache for every panel format: an entry is keyed by the weight
 * pointer, the shape and the packer (f32 k-major panels, the narrow formats').  Anything else is packed
 * per call.  (bf16 pair panels are packed at compile time: compiled_pairs.) */
typedef void (*pack_fn)(const void *W, int64_t K, int64_t n0, int64_t nb, void *Bp);
typedef struct { const void *src; int64_t E, N, K; pack_fn pack; void *packed; } pk_entry;
static pk_entry g_pk[1024];
static int g_npk;
static pthread_mutex_t g_pk_mu = PTHREAD_MUTEX_INITIALIZER;

/* estride: bytes per expert in W; panel: bytes per packed NR-column block */
static const void *cached_panels(const void *W, size_t estride, int64_t E, int64_t N, int64_t K, size_t panel,
                                 pack_fn pack) {
  if (!moec_in_weights(W)) return NULL;
  const void *res = NULL;
  pthread_mutex_lock(&g_pk_mu);
  for (int i = 0; i < g_npk; i++)
    if (g_pk[i].src == W && g_pk[i].E == E && g_pk[i].N == N && g_pk[i].K == K && g_pk[i].pack == pack)
      res = g_pk[i].packed;
  if (!res && g_npk < 1024) {
    int64_t nblk = (N + NR - 1) / NR;
    char *pk = (char *)moec_alloc_weights((size_t)(E * nblk) * panel + 64); /* (huge pages: streamed per call) */
    if (pk) {
      for (int64_t e = 0; e < E; e++)
        for (int64_t b = 0; b < nblk; b++) {
          int64_t c0 = b * NR, nb = N - c0 < NR ? N - c0 : NR;
          pack((const char *)W + (size_t)e * estride, K, c0, nb, pk + (size_t)(e * nblk + b) * panel);
        }
      g_pk[g_npk++] = (pk_entry){W, E, N, K, pack, pk};
      res = pk;
    }
  }
  pthread_mutex_unlock(&g_pk_mu);
  return res;
}

static void pack_f32_panel(const void *W, int64_t K, int64_t n0, int64_t nb, void *Bp) {
  pack_b((const float *)W, K, n0, nb, (float *)Bp);
}

static const float *packed_panels(const float *W, int64_t E, int64_t N, int64_t K) {
  return (const float *)cached_panels(W, sizeof(float) * (size_t)(N * K), E, N, K, sizeof(float) * (size_t)(K * NR), pack_f32_panel);
}

static inline float dot(const float *a, const float *b, int64_t n) {
  vf acc = (vf){0};
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    vf x, y;
    __builtin_memcpy(&x, a + i, sizeof(vf));
    __builtin_memcpy(&y, b + i, sizeof(vf));
    acc += x * y;
  }
  float s = 0;
  for (int v = 0; v < VL; v++) s += acc[v];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* out[r * ldo + c] = dot(X[r], W[c]) for r < n (n <= GEMV_ROWS), c < nb: four weight rows at a time
 * (independent accumulators, each x vector reused four times); bandwidth bound by design. */
static void gemv_block(const float *X, int64_t ldx, int64_t n, const float *W, int64_t K, int64_t nb, float *out,
                       int64_t ldo) {
#ifdef F32_AVX2
  for (int64_t r = 0; r < n; r += 2) {
    const int two = n - r >= 2;
    int64_t c = 0;
    for (; c + 4 <= nb; c += 4) {
      if (two) gemv_avx2_blk(2, 4, X + r * ldx, ldx, W + c * K, K, out + r * ldo + c, ldo);
      else gemv_avx2_blk(1, 4, X + r * ldx, ldx, W + c * K, K, out + r * ldo + c, ldo);
    }
    for (; c < nb; c++) {
      if (two) gemv_avx2_blk(2, 1, X + r * ldx, ldx, W + c * K, K, out + r * ldo + c, ldo);
      else gemv_avx2_blk(1, 1, X + r * ldx, ldx, W + c * K, K, out + r * ldo + c, ldo);
    }
  }
  return;
#endif
  int64_t c = 0;
  for (; c + 4 <= nb; c += 4) {
    const float *w0 = W + c * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    for (int64_t r = 0; r < n; r++) {
      const float *x = X + r * ldx;
      vf a0 = (vf){0}, a1 = (vf){0}, a2 = (vf){0}, a3 = (vf){0};
      int64_t k = 0;
      for (; k + VL <= K; k += VL) {
        vf xv, v0, v1, v2, v3;
        __builtin_memcpy(&xv, x + k, sizeof(vf));
        __builtin_memcpy(&v0, w0 + k, sizeof(vf));
        __builtin_memcpy(&v1, w1 + k, sizeof(vf));
        __builtin_memcpy(&v2, w2 + k, sizeof(vf));
        __builtin_memcpy(&v3, w3 + k, sizeof(vf));
        a0 += xv * v0; a1 += xv * v1; a2 += xv * v2; a3 += xv * v3;
      }
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int v = 0; v < VL; v++) { s0 += a0[v]; s1 += a1[v]; s2 += a2[v]; s3 += a3[v]; }
      for (; k < K; k++) { s0 += x[k] * w0[k]; s1 += x[k] * w1[k]; s2 += x[k] * w2[k]; s3 += x[k] * w3[k]; }
      out[r * ldo + c] = s0; out[r * ldo + c + 1] = s1; out[r * ldo + c + 2] = s2; out[r * ldo + c + 3] = s3;
    }
  }
  for (; c < nb; c++)
    for (int64_t r = 0; r < n; r++) out[r * ldo + c] = dot(X + r * ldx, W + c * K, K);
}

/* ---- quantised weights: dequantisation inside the kernels, never a full-size f32 copy ---------
 * A weight stack [E, N, K] is viewed through a wview.  Prefill dequantises one NR-column panel per
 * work item into the worker's packing buffer (cache-sized) and runs the f32 micro-kernel; decode
 * streams the narrow rows directly (16 lanes at a time, widened in registers, scales applied per
 * row or per group after the FMAs). */
typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef int8_t v16i8 __attribute__((vector_size(16), aligned(1)));
typedef uint8_t v16u8 __attribute__((vector_size(16), aligned(1)));
typedef uint16_t v16u16 __attribute__((vector_size(32), aligned(2)));
typedef uint32_t v16u32 __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i32 __attribute__((vector_size(64), aligned(4)));
/* two-step widening: GCC vectorises u8/i8 -> i32 (vpmovzx/sx) and i32 -> f32 (vcvtdq2ps), but not
 * u8 -> f32 in one __builtin_convertvector */
#define U8_TO_F(q) __builtin_convertvector(__builtin_convertvector((q), v16i32), v16f)

typedef struct {
  int mode;          /* MOEC_WQ_* */
  const void *w;     /* [E, N, K] (int4: [E, N, K/2] bytes) */
  const float *s, *z;
  int64_t N, K, G;   /* G: int4 group (K when per row) */
} wview;

/* Bp[k*NR + j] = w[e][n0 + j][k] dequantised, zero beyond nb */
static void pack_b_w(const wview *v, int64_t e, int64_t n0, int64_t nb, float *Bp) {
  int64_t K = v->K;
  if (v->mode == MOEC_WQ_NONE) {
    pack_b((const float *)v->w + e * v->N * K, K, n0, nb, Bp);
    return;
  }
  for (int64_t j = 0; j < NR; j++) {
    if (j >= nb) {
      for (int64_t k = 0; k < K; k++) Bp[k * NR + j] = 0.f;
      continue;
    }
    int64_t r = e * v->N + n0 + j;
    if (v->mode == MOEC_WQ_INT8) {
      const int8_t *q = (const int8_t *)v->w + r * K;
      float sc = v->s[r];
      for (int64_t k = 0; k < K; k++) Bp[k * NR + j] = (float)q[k] * sc;
    } else {
      const uint8_t *q = (const uint8_t *)v->w + r * (K / 2);
      const float *sg = v->s + r * (K / v->G), *zg = v->z ? v->z + r * (K / v->G) : NULL;
      for (int64_t k = 0; k < K; k += 2) {
        int64_t g = k / v->G;
        float sc = sg[g], zp = zg ? zg[g] : 8.0f;
        Bp[k * NR + j] = ((float)(q[k / 2] & 15) - zp) * sc;
        Bp[(k + 1) * NR + j] = ((float)(q[k / 2] >> 4) - zp) * sc;
      }
    }
  }
}

static inline v16f ld16f(const float *p) { v16f v; __builtin_memcpy(&v, p, 64); return v; }
#if MOEC_VBYTES < 64 && defined(__AVX2__)
#include <immintrin.h>
/* (AVX2: GCC lowered the 16-lane shuffle to sixteen scalar stores and a reload, in every FMA step) */
static inline v16f splat16(float v) {
  __m256 a = _mm256_set1_ps(v);
  v16f r;
  __builtin_memcpy(&r, &a, 32);
  __builtin_memcpy((char *)&r + 32, &a, 32);
  return r;
}
#else
static inline v16f splat16(float v) { return __builtin_shuffle((v16f){v}, (v16i32){0}); }
#endif

/* ---- vectorised activation epilogue (phase 2) -------------------------------------------------
 * expf one lane at a time cost ~10% of a prefill call: the sigmoid on MV_L lanes is rt_vmath.h's (its
 * vector exp, e / (1 + e) below 0 so nothing overflows; errors against float64 measured in
 * tests/test_dense_gemm.py).  NaN propagates. */
#ifdef F32_AVX2
#define MV_BYTES 32 /* AVX2: the vector math on 8 lanes (swiglu_row / silu_row below); on 16 its splats and
                     * selects went through memory: swiglu_row was 10% of an AVX2 build's Mixtral-like layer */
#else
#define MV_BYTES 64
#endif
#include "rt_vmath.h"
static inline void st16f(float *p, v16f v) { __builtin_memcpy(p, &v, 64); }

/* a[f] = g * sigmoid(alpha g) * (u + beta) over one row (concat: g = h[f], u = h[F + f];
 * interleaved: g = h[2f], u = h[2f + 1]), clamped like the scalar form; the tail is scalar */
static void swiglu_row(const float *h, float *a, int64_t F, int interleaved, int clamp, float lim, float al,
                       float be) {
  int64_t f = 0;
  for (; f + MV_L <= F; f += MV_L) { /* MV_L lanes: 8 in AVX2 builds, else 16 */
    mvf g, u;
    if (interleaved) {
      float tg[MV_L], tu[MV_L];
      for (int i = 0; i < MV_L; i++) { tg[i] = h[2 * (f + i)]; tu[i] = h[2 * (f + i) + 1]; }
      g = mv_ld(tg);
      u = mv_ld(tu);
    } else {
      g = mv_ld(h + f);
      u = mv_ld(h + F + f);
    }
    if (clamp) {
      const mvf l = mv_splat(lim), nl = mv_splat(-lim);
      g = mv_sel(g > l, l, g);
      u = mv_sel(u > l, l, u);
      u = mv_sel(u < nl, nl, u);
    }
    mv_st(a + f, g * mv_sigmoid(mv_splat(al) * g) * (u + mv_splat(be)));
  }
  for (; f < F; f++) {
    float g = interleaved ? h[2 * f] : h[f], u = interleaved ? h[2 * f + 1] : h[F + f];
    if (clamp) { g = g > lim ? lim : g; u = u > lim ? lim : (u < -lim ? -lim : u); }
    a[f] = g * sigm_f(al * g) * (u + be);
  }
}
static void silu_row(const float *h, float *a, int64_t F) {
  int64_t f = 0;
  for (; f + MV_L <= F; f += MV_L) { mvf v = mv_ld(h + f); mv_st(a + f, v * mv_sigmoid(v)); }
  for (; f < F; f++) a[f] = h[f] * sigm_f(h[f]);
}
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
/* AVX-512: explicit widening loads (GCC's generic vectors scalarise some of these conversions) */
static inline float hsum16(v16f v) { return _mm512_reduce_add_ps((__m512)v); }
static inline v16f ld16_i8(const int8_t *p) {
  return (v16f)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline void ld16_u4(const uint8_t *p, v16f *lo, v16f *hi) {
  __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
  *lo = (v16f)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, m)));
  *hi = (v16f)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), m)));
}
#elif defined(__AVX2__)
#include <immintrin.h>
/* AVX2: the same widening loads as two 8-lane halves (GCC scalarised the generic 16-lane u8/i8 -> f32
 * conversions below: int4 / int8 weight-only prefill ran ~40x slower than on AVX-512) */
static inline v16f two8(__m256 a, __m256 b) {
  v16f v;
  __builtin_memcpy(&v, &a, 32);
  __builtin_memcpy((char *)&v + 32, &b, 32);
  return v;
}
static inline float hsum16(v16f v) {
  float s = 0;
  for (int i = 0; i < 16; i++) s += v[i];
  return s;
}
static inline v16f ld16_i8(const int8_t *p) {
  __m128i b = _mm_loadu_si128((const __m128i *)p);
  return two8(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))));
}
static inline void ld16_u4(const uint8_t *p, v16f *lo, v16f *hi) {
  __m128i b = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
  __m128i l = _mm_and_si128(b, m), h = _mm_and_si128(_mm_srli_epi16(b, 4), m);
  *lo = two8(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(l)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(l, 8))));
  *hi = two8(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(h, 8))));
}
#else
static inline float hsum16(v16f v) {
  float s = 0;
  for (int i = 0; i < 16; i++) s += v[i];
  return s;
}
static inline v16f ld16_i8(const int8_t *p) {
  v16i8 q;
  __builtin_memcpy(&q, p, 16);
  return __builtin_convertvector(__builtin_convertvector(q, v16i32), v16f);
}
static inline void ld16_u4(const uint8_t *p, v16f *lo, v16f *hi) {
  v16u8 q;
  __builtin_memcpy(&q, p, 16);
  *lo = U8_TO_F(q & 15);
  *hi = U8_TO_F(q >> 4);
}
#endif

/* bf16 mode: the GEMM inputs are bf16 (round to nearest even), like the hardware dot products */
static inline float round_bf16f(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  else if (u & 0x007fffffu) u |= 0x00400000u; /* NaN: quiet, so the bf16 half (the top 16 bits) stays a NaN */
  __builtin_memcpy(&f, &u, 4);
  return f;
}
static void round_bf16_row(float *a, int64_t n) {
  int64_t i = 0;
#if MOEC_VBYTES >= 64
  /* round_bf16f on 16 lanes (the scalar loop branches per value) */
  const v16u32 exp = (v16u32){0} + 0x7f800000u, man = (v16u32){0} + 0x007fffffu;
  for (; i + 16 <= n; i += 16) {
    v16u32 u;
    __builtin_memcpy(&u, a + i, 64);
    v16u32 r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    v16u32 special = (v16u32)((u & exp) == exp), nan = special & (v16u32)((u & man) != 0);
    r = (r & ~special) | (u & special) | (nan & 0x00400000u);
    __builtin_memcpy(a + i, &r, 64);
  }
#endif
  for (; i < n; i++) a[i] = round_bf16f(a[i]);
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && MOEC_VBYTES >= 64
#define WQ_FUSED_WIDEN 1
#ifndef WQ_FUSE_FIRST /* (-DWQ_FUSE_FIRST=0: the separate pass at every row count, for A/B runs; on an AVX-512 host
                        * without AVX512_BF16, perf samples of the whole model, fused / separate: int4_bf16 0.93x at 64
                        * tokens, 0.96x at 256; int8 (before wq_bf16_direct) equal at both) */
#define WQ_FUSE_FIRST 1
#endif
/* int8 / int4 weights with bf16 activations (below, wq_bf16_panel): pair row p of an item's bf16 pair panel (the
 * pairs of columns 0..15 in *lo, 16..31 in *hi) made from its narrow k-major panel (int8 codes, or symmetric
 * int4 -- zero point 8, v->z NULL -- q - 8; with zero points the loop in wq_bf16_panel).  tile_bf16_mx calls it
 * where it widens while it multiplies (tile_wq_bf16_first). */
static inline __attribute__((always_inline)) void wq_pair_row(const wview *v, const void *panel, int64_t p,
                                                              __m512i *lo, __m512i *hi) {
  if (v->mode == MOEC_WQ_INT8) {
    const int8_t *Bp = (const int8_t *)panel + 2 * p * NR;
    const __m512i m16 = _mm512_set1_epi32((int)0xffff0000u);
    const int odd = 2 * p + 1 < v->K; /* (an odd K's last pair: its second value is 0) */
    __m512 e0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)Bp)));
    __m512 e1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(Bp + 16))));
    __m512 o0 = odd ? _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(Bp + NR)))) : _mm512_setzero_ps();
    __m512 o1 = odd ? _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(Bp + NR + 16)))) : _mm512_setzero_ps();
    /* (exact: |code| <= 128 has 8 significant bits, so the f32's low half is 0) low half = e >> 16, high = o's top */
    *lo = _mm512_ternarylogic_epi32(_mm512_srli_epi32(_mm512_castps_si512(e0), 16), _mm512_castps_si512(o0), m16, 0xf8);
    *hi = _mm512_ternarylogic_epi32(_mm512_srli_epi32(_mm512_castps_si512(e1), 16), _mm512_castps_si512(o1), m16, 0xf8);
    return;
  }
  /* symmetric int4: q - 8 as bf16 bits from a 16-entry table (vpermw on u16 lanes whose u32 holds the codes of
   * k and k + 1), no float conversion */
  static const uint16_t tb[32] = {0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,
                                  0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
  const __m512i lut = _mm512_loadu_si512(tb);
  const __m128i m4 = _mm_set1_epi8(15);
  const uint8_t *Bp = (const uint8_t *)panel + 2 * p * (NR / 2);
  const __m128i b0 = _mm_loadu_si128((const __m128i *)Bp), b1 = _mm_loadu_si128((const __m128i *)(Bp + NR / 2));
  const __m512i l = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_and_si128(b0, m4)),
                                    _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(b1, m4)), 16));
  const __m512i h = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b0, 4), m4)),
                                    _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b1, 4), m4)), 16));
  *lo = _mm512_permutexvar_epi16(l, lut);
  *hi = _mm512_permutexvar_epi16(h, lut);
}
#endif
/* bf16 weights, every host: B panels hold, per pair p of the reduction, 32 columns x (w[2p], w[2p+1]) as bf16
 * pairs (cached like the other panels); A rows are bf16 pairs (the rounded f32 activations, converted
 * exactly).  tile_bf16 multiplies them: vdpbf16ps where the build host has AVX512_BF16, else widening FMAs. */
static void pack_b_bf16(const uint16_t *W, int64_t K, int64_t n0, int64_t nb, uint32_t *Bp) {
  int64_t P = (K + 1) / 2;
  for (int64_t p = 0; p < P; p++)
    for (int64_t j = 0; j < NR; j++) {
      uint32_t lo = 0, hi = 0;
      if (j < nb) {
        const uint16_t *w = W + (n0 + j) * K;
        lo = w[2 * p];
        hi = 2 * p + 1 < K ? w[2 * p + 1] : 0;
      }
      Bp[p * NR + j] = lo | (hi << 16);
    }
}
/* The pair panels of a [E, N, K] bf16 weight packed at compile time (moec_wq.pk_in / pk_out: codegen/c/gemm_pack.py,
 * the layout of ir/weight_layouts.py, MOEC_PAIR_NR wide), read where they lie in the weights file; NULL when none
 * were packed (a weight not in the weights file: the kernels pack per work item with pack_b_bf16).  *bad is set
 * when they do not have this runtime's shape (never read then). */
static const uint32_t *compiled_pairs(const moec_tensor *pk, int64_t E, int64_t N, int64_t K, int *bad) {
  if (!pk) return NULL;
  const int64_t want[5] = {E, (N + NR - 1) / NR, (K + 1) / 2, NR, 2};
  int ok = pk->dtype == MOEC_BF16 && pk->rank == 5 && NR == MOEC_PAIR_NR;
  for (int d = 0; ok && d < 5; d++) ok = pk->shape[d] == want[d];
  if (!ok) *bad = 1;
  return ok ? (const uint32_t *)pk->data : NULL;
}
/* the f32 experts' k-panels packed at compile time ([E, ceil(N/NR), K, NR]: pack_b's layout), as compiled_pairs */
static const float *compiled_kpanels(const moec_tensor *pk, int64_t E, int64_t N, int64_t K, int *bad) {
  if (!pk) return NULL;
  const int64_t want[4] = {E, (N + NR - 1) / NR, K, NR};
  int ok = pk->dtype == MOEC_F32 && pk->rank == 4 && NR == MOEC_KPANEL_NR;
  for (int d = 0; ok && d < 4; d++) ok = pk->shape[d] == want[d];
  if (!ok) *bad = 1;
  return ok ? (const float *)pk->data : NULL;
}
#define PAIRS_MISMATCH "internal error: the weight panels packed at compile time do not match this runtime (layout version %d, width %d)"
/* rows of f32 (already bf16-valued) -> bf16 pairs, P per row */
static void to_pairs(const float *a, int64_t K, uint32_t *out) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  /* pair p = a[2p] | a[2p+1] << 16 is, in memory, the bf16 halves in order: a narrowing of the high halves */
  uint16_t *o = (uint16_t *)out;
  int64_t k = 0;
#if MOEC_VBYTES >= 64
  for (; k + 16 <= K; k += 16) {
    v16u32 u;
    __builtin_memcpy(&u, a + k, 64);
    v16u16 h = __builtin_convertvector(u >> 16, v16u16);
    __builtin_memcpy(o + k, &h, 32);
  }
#endif
  for (; k < K; k++) {
    uint32_t u;
    __builtin_memcpy(&u, a + k, 4);
    o[k] = (uint16_t)(u >> 16);
  }
  if (K & 1) o[K] = 0;
#else
  int64_t P = (K + 1) / 2;
  for (int64_t p = 0; p < P; p++) {
    uint32_t lo, hi = 0;
    float x0 = a[2 * p], x1 = 2 * p + 1 < K ? a[2 * p + 1] : 0.f;
    __builtin_memcpy(&lo, &x0, 4);
    __builtin_memcpy(&hi, &x1, 4);
    out[p] = (lo >> 16) | (hi & 0xffff0000u);
  }
#endif
}
/* rows of f32 -> bf16 pairs of their values rounded to bf16 (round_bf16_row then to_pairs, bit for bit) in one
 * pass, the rows left as they are */
static void round_to_pairs(const float *a, int64_t K, uint32_t *out) {
  int64_t k = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && MOEC_VBYTES >= 64
  uint16_t *o = (uint16_t *)out;
  const v16u32 exp = (v16u32){0} + 0x7f800000u, man = (v16u32){0} + 0x007fffffu;
  for (; k + 16 <= K - (K & 1); k += 16) { /* (an odd K's last value and its zero partner: the loop below) */
    v16u32 u;
    __builtin_memcpy(&u, a + k, 64);
    v16u32 r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    v16u32 special = (v16u32)((u & exp) == exp), nan = special & (v16u32)((u & man) != 0);
    r = (r & ~special) | (u & special) | (nan & 0x00400000u);
    v16u16 h = __builtin_convertvector(r >> 16, v16u16);
    __builtin_memcpy(o + k, &h, 32);
  }
#endif
  for (int64_t p = k / 2; p < (K + 1) / 2; p++) {
    float x0 = round_bf16f(a[2 * p]), x1 = 2 * p + 1 < K ? round_bf16f(a[2 * p + 1]) : 0.f;
    uint32_t lo, hi;
    __builtin_memcpy(&lo, &x0, 4);
    __builtin_memcpy(&hi, &x1, 4);
    out[p] = (lo >> 16) | (hi & 0xffff0000u);
  }
}
#if defined(__AVX512BF16__) && defined(__AVX512F__)
/* vdpbf16ps: two 16-lane accumulators per row, 2 FLOP pairs per lane.  Numerics: the products of bf16 values
 * are exact in f32 and summed in f32 (the reference's rounding of x to bf16, then an f32 matmul, up to the
 * order of the sums); the instruction also treats bf16 subnormals as zero and flushes subnormal results
 * (DAZ/FTZ), i.e. values below 2^-126 count as 0, which the reference keeps (far below any tolerance).
 * C[m x nb] = A_pairs . B panel with MX rows unrolled (m <= MX; rows past m repeat row 0, unstored).
 * At one or two rows (decode) the panel streams from memory and each row's two accumulators would be
 * a chain of dependent vdpbf16ps: the pairs alternate between two accumulator sets (4 chains per row),
 * summed at the end.
 * Group scales gs (int8 / int4 weights with bf16 activations, tile_bf16_gs): the pairs run in groups of pg and at
 * the end of group g the accumulators times the 32 column scales at gs + g * 2 NR are added into a second set
 * (tot) and restart, i.e. each group's f32 partial sum times its scale; MX <= 4 there (both sets in registers).
 * gs NULL (the constant every plain tile_bf16 call passes): one group, no scaling.
 * nw (tile_wq_bf16_first's first row block of int8 / int4 weights; NULL elsewhere): B's pair rows are made from
 * the narrow panel nw of wv as the loop needs them (wq_pair_row) instead of read from Bp, and stored into Bst. */
static inline __attribute__((always_inline)) void tile_bf16_mx(const int MX, const uint32_t *A, int64_t P, int m,
                                                               const uint32_t *Bp, float *C, int64_t ldc, int64_t nb,
                                                               const float *gs, int64_t pg, const wview *wv,
                                                               const void *nw, uint32_t *Bst, const float *Af) {
  (void)Af; /* (the pairs are what vdpbf16ps takes) */
  __m512 acc[MR][2], acd[MR][2], tot[MR][2];
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++)
    acc[r][0] = acc[r][1] = acd[r][0] = acd[r][1] = tot[r][0] = tot[r][1] = _mm512_setzero_ps();
  const uint32_t *a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++) a[r] = A + (r < m ? r : 0) * P;
  const int64_t step = gs ? pg : P;
  for (int64_t p0 = 0; p0 < P; p0 += step) {
  const int64_t P1 = P - p0 < step ? P : p0 + step;
  int64_t p = p0;
  if (MX <= 2 && !nw)
    for (; p + 2 <= P1; p += 2) {
      const uint32_t *q = Bp + p * NR;
      __m512bh b0 = (__m512bh)_mm512_loadu_si512(q), b1 = (__m512bh)_mm512_loadu_si512(q + 16);
      __m512bh c0 = (__m512bh)_mm512_loadu_si512(q + NR), c1 = (__m512bh)_mm512_loadu_si512(q + NR + 16);
#pragma GCC unroll 16
      for (int r = 0; r < MX; r++) {
        __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r][p]), aw = (__m512bh)_mm512_set1_epi32((int)a[r][p + 1]);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
        acd[r][0] = _mm512_dpbf16_ps(acd[r][0], aw, c0);
        acd[r][1] = _mm512_dpbf16_ps(acd[r][1], aw, c1);
      }
    }
  for (; p < P1; p++) {
    __m512bh b0, b1;
#ifdef WQ_FUSED_WIDEN
    if (nw) { /* the pair row made from the narrow panel, kept in Bst for the later row blocks */
      __m512i lo, hi;
      wq_pair_row(wv, nw, p, &lo, &hi);
      _mm512_storeu_si512(Bst + p * NR, lo);
      _mm512_storeu_si512(Bst + p * NR + 16, hi);
      b0 = (__m512bh)lo;
      b1 = (__m512bh)hi;
    } else
#endif
    {
      b0 = (__m512bh)_mm512_loadu_si512(Bp + p * NR);
      b1 = (__m512bh)_mm512_loadu_si512(Bp + p * NR + 16);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r][p]);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
  }
  if (gs) { /* the group's f32 partial sums times its column scales */
    const __m512 s0 = _mm512_loadu_ps(gs + (p0 / pg) * 2 * NR), s1 = _mm512_loadu_ps(gs + (p0 / pg) * 2 * NR + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      tot[r][0] = _mm512_fmadd_ps(MX <= 2 ? _mm512_add_ps(acc[r][0], acd[r][0]) : acc[r][0], s0, tot[r][0]);
      tot[r][1] = _mm512_fmadd_ps(MX <= 2 ? _mm512_add_ps(acc[r][1], acd[r][1]) : acc[r][1], s1, tot[r][1]);
      acc[r][0] = acc[r][1] = acd[r][0] = acd[r][1] = _mm512_setzero_ps();
    }
  }
  }
  for (int r = 0; r < m; r++) {
    float tmp[NR];
    _mm512_storeu_ps(tmp, gs ? tot[r][0] : MX <= 2 ? _mm512_add_ps(acc[r][0], acd[r][0]) : acc[r][0]);
    _mm512_storeu_ps(tmp + 16, gs ? tot[r][1] : MX <= 2 ? _mm512_add_ps(acc[r][1], acd[r][1]) : acc[r][1]);
    if (nb == NR) __builtin_memcpy(C + r * ldc, tmp, sizeof tmp);
    else
      for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
  }
}
/* every row count, decode included: one (1, 2), four or MR rows unrolled (Af: unused here, see the kernel below) */
static void tile_bf16_f(const uint32_t *A, const float *Af, int64_t P, int m, const uint32_t *Bp, float *C, int64_t ldc,
                        int64_t nb) {
  (void)Af;
  if (m == 1) tile_bf16_mx(1, A, P, m, Bp, C, ldc, nb, NULL, 0, NULL, NULL, NULL, NULL);
  else if (m == 2) tile_bf16_mx(2, A, P, m, Bp, C, ldc, nb, NULL, 0, NULL, NULL, NULL, NULL);
  else if (m <= 4) tile_bf16_mx(4, A, P, m, Bp, C, ldc, nb, NULL, 0, NULL, NULL, NULL, NULL);
  else tile_bf16_mx(MR, A, P, m, Bp, C, ldc, nb, NULL, 0, NULL, NULL, NULL, NULL);
}
#define BF16_GS_MX 4
#else
/* Without AVX512_BF16: the same pair panels and activation pairs; each pair is widened to f32 in registers
 * (bf16 -> f32 is a 16-bit shift: the even k is the low half << 16, the odd k the high half masked) and
 * multiplied with FMAs: the same products (exact in f32) summed in f32, as vdpbf16ps.  In the build's own
 * vector width (NV vectors per 32 columns); 1, 2, 4 or MR rows unrolled on AVX-512, 2 on AVX2, 1 on
 * narrower vectors (the accumulators stay in registers). */
#define BF16_MX (VL >= 16 ? MR : (VL >= 8 ? 2 : 1))
typedef uint32_t vu_ __attribute__((vector_size(MOEC_VBYTES), aligned(4)));
static inline __attribute__((always_inline)) void tile_bf16_mx(const int MX, const uint32_t *A, int64_t P, int m,
                                                               const uint32_t *Bp, float *C, int64_t ldc, int64_t nb,
                                                               const float *gs, int64_t pg, const wview *wv,
                                                               const void *nw, uint32_t *Bst, const float *Af) {
  vf acc[MR][NV], tot[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++)
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) acc[r][v] = tot[r][v] = (vf){0};
  const uint32_t *a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++) a[r] = A + (r < m ? r : 0) * P;
  const int64_t step = gs ? pg : P; /* group scales: as in the vdpbf16ps kernel above */
  for (int64_t p0 = 0; p0 < P; p0 += step) {
  const int64_t P1 = P - p0 < step ? P : p0 + step;
  for (int64_t p = p0; p < P1; p++) {
#if MOEC_VBYTES >= 64 && defined(__AVX512F__)
    vf we[NV], wo[NV]; /* B's pair row widened (even k: the low halves << 16, odd k: the high halves) */
#ifdef WQ_FUSED_WIDEN
    vu_ wn[NV]; /* (nw: the pair row made from the narrow panel, kept in Bst; NV = 2 here) */
    if (nw) {
      __m512i lo, hi;
      wq_pair_row(wv, nw, p, &lo, &hi);
      _mm512_storeu_si512(Bst + p * NR, lo);
      _mm512_storeu_si512(Bst + p * NR + 16, hi);
      __builtin_memcpy(&wn[0], &lo, 64);
      __builtin_memcpy(&wn[NV - 1], &hi, 64);
    }
#endif
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
      vu_ u;
#ifdef WQ_FUSED_WIDEN
      if (nw) u = wn[v];
      else
#endif
      __builtin_memcpy(&u, Bp + p * NR + v * VL, sizeof u);
      we[v] = (vf)(u << 16);
      wo[v] = (vf)(u & 0xffff0000u);
    }
    /* then row by row: the row's pair broadcast from memory (a load: no shuffle port) and split in the vector
     * (the scalar split, vmovd and vbroadcastss per value of the loop below took the shuffle port the FMAs
     * share), its two splats live only for its FMAs (no spills at MR rows); with Af (the same rows as f32
     * values, 2 P a row: BF16_F32_ROWS) two broadcasts from memory and no vector op at all */
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      vf se, so;
      if (Af) { /* the same values as f32 rows: two broadcasts from memory, no vector op */
        se = splat(Af[(r < m ? r : 0) * 2 * P + 2 * p]);
        so = splat(Af[(r < m ? r : 0) * 2 * P + 2 * p + 1]);
      } else {
        const __m512i u = _mm512_set1_epi32((int)a[r][p]);
        const __m512 xe = _mm512_castsi512_ps(_mm512_slli_epi32(u, 16)),
                     xo = _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xffff0000u)));
        __builtin_memcpy(&se, &xe, 64);
        __builtin_memcpy(&so, &xo, 64);
      }
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++) { /* (per accumulator: the even k's product, then the odd k's) */
        acc[r][v] += we[v] * se;
        acc[r][v] += wo[v] * so;
      }
    }
#else
    (void)Af;
    vf se[MR], so[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      uint32_t ue = a[r][p] << 16, uo = a[r][p] & 0xffff0000u;
      float xe, xo;
      __builtin_memcpy(&xe, &ue, 4);
      __builtin_memcpy(&xo, &uo, 4);
      se[r] = splat(xe);
      so[r] = splat(xo);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
      vu_ u;
      __builtin_memcpy(&u, Bp + p * NR + v * VL, sizeof u);
      const vf we = (vf)(u << 16), wo = (vf)(u & 0xffff0000u);
#pragma GCC unroll 16
      for (int r = 0; r < MX; r++) {
        acc[r][v] += we * se[r];
        acc[r][v] += wo * so[r];
      }
    }
#endif
  }
  if (gs)
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
      vf sv;
      __builtin_memcpy(&sv, gs + (p0 / pg) * 2 * NR + v * VL, sizeof sv);
#pragma GCC unroll 16
      for (int r = 0; r < MX; r++) {
        tot[r][v] += acc[r][v] * sv;
        acc[r][v] = (vf){0};
      }
    }
  }
  for (int r = 0; r < m; r++) {
    float tmp[NR];
    for (int v = 0; v < NV; v++) __builtin_memcpy(tmp + v * VL, gs ? &tot[r][v] : &acc[r][v], sizeof(vf));
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
  }
}
/* BF16_MX rows at a time, each block by one (1, 2), four or MR rows unrolled; Af: the rows also as f32 values
 * (2 P a row), or NULL: the pairs only (always inlined, so a literal NULL folds the f32-row loads away) */
static inline __attribute__((always_inline)) void tile_bf16_rows(const uint32_t *A, const float *Af, int64_t P, int m,
                                                                 const uint32_t *Bp, float *C, int64_t ldc, int64_t nb) {
  for (int r = 0; r < m; r += BF16_MX) {
    int mm = m - r < BF16_MX ? m - r : BF16_MX;
    const uint32_t *Ar = A + r * P;
    const float *Fr = Af ? Af + r * 2 * P : NULL;
    float *Cr = C + r * ldc;
    if (mm == 1) tile_bf16_mx(1, Ar, P, mm, Bp, Cr, ldc, nb, NULL, 0, NULL, NULL, NULL, Fr);
    else if (mm == 2) tile_bf16_mx(2, Ar, P, mm, Bp, Cr, ldc, nb, NULL, 0, NULL, NULL, NULL, Fr);
    else if (mm <= 4) tile_bf16_mx(4, Ar, P, mm, Bp, Cr, ldc, nb, NULL, 0, NULL, NULL, NULL, Fr);
    else tile_bf16_mx(MR, Ar, P, mm, Bp, Cr, ldc, nb, NULL, 0, NULL, NULL, NULL, Fr);
  }
}
/* the bf16 tile with the rows also as f32 values (Af, 2 P a row; NULL: the pairs only) */
static void tile_bf16_f(const uint32_t *A, const float *Af, int64_t P, int m, const uint32_t *Bp, float *C, int64_t ldc,
                        int64_t nb) {
  if (Af) tile_bf16_rows(A, Af, P, m, Bp, C, ldc, nb);
  else tile_bf16_rows(A, NULL, P, m, Bp, C, ldc, nb);
}
#define BF16_GS_MX (BF16_MX < 4 ? BF16_MX : 4)
#endif
/* The rows of the bf16 products also as f32 values where the kernel takes them (AVX-512 builds without
 * AVX512_BF16: the f32 broadcasts replace splitting each pair per tile, which every column block repeated):
 * callers pass rows rounded to bf16 (the values the pairs hold), 2 P floats a row, when K is even (else NULL) */
#if !defined(__AVX512BF16__) && MOEC_VBYTES >= 64 && defined(__AVX512F__)
#define BF16_F32_ROWS 1
#else
#define BF16_F32_ROWS 0
#endif
/* C[m x nb] = sum over groups of pg pairs of (A_pairs . B panel over the group) times the group's column scales
 * (gs + g * 2 NR): tile_bf16_mx with group scales, BF16_GS_MX rows at a time */
static void tile_bf16_gs(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, const float *gs, int64_t pg, float *C,
                         int64_t ldc, int64_t nb, const float *Af) {
  for (int r = 0; r < m; r += BF16_GS_MX) {
    int mm = m - r < BF16_GS_MX ? m - r : BF16_GS_MX;
    const float *Fr = Af ? Af + r * 2 * P : NULL;
    if (Fr) { /* (two copies: the f32 rows' broadcasts, the pairs' split) */
      if (mm == 1) tile_bf16_mx(1, A + r * P, P, mm, Bp, C + r * ldc, ldc, nb, gs, pg, NULL, NULL, NULL, Fr);
      else if (mm == 2) tile_bf16_mx(2, A + r * P, P, mm, Bp, C + r * ldc, ldc, nb, gs, pg, NULL, NULL, NULL, Fr);
      else tile_bf16_mx(BF16_GS_MX, A + r * P, P, mm, Bp, C + r * ldc, ldc, nb, gs, pg, NULL, NULL, NULL, Fr);
    } else {
      if (mm == 1) tile_bf16_mx(1, A + r * P, P, mm, Bp, C + r * ldc, ldc, nb, gs, pg, NULL, NULL, NULL, NULL);
      else if (mm == 2) tile_bf16_mx(2, A + r * P, P, mm, Bp, C + r * ldc, ldc, nb, gs, pg, NULL, NULL, NULL, NULL);
      else tile_bf16_mx(BF16_GS_MX, A + r * P, P, mm, Bp, C + r * ldc, ldc, nb, gs, pg, NULL, NULL, NULL, NULL);
    }
  }
}

/* ---- weight-only int8 / int4 prefill: narrow k-major panels, dequantised in the micro-kernel ------
 * int8 panels: Bp[k * NR + j] = q[n0 + j][k] (K * NR bytes); each k step widens 2 x 16 codes to f32 in
 * registers and the per-output-channel scale multiplies the finished tile.  int4 panels: 16 bytes per
 * k, byte b = code of column b (low nibble) | code of column b + 16 (high nibble), so one load and two
 * nibble extractions give the two 16-lane halves; per group the column scales s and s * z (a small
 * per-item table) dequantise in registers, w = q * s - s * z (one FMA per 16 weights), before the
 * MR x NR FMAs.  No dequantised copy of a panel exists anywhere. */
/* The narrow panels are built once per weight (the run-time cache below, on the first prefill call of a model):
 * 16 x 16 byte tiles transposed in registers (four unpack stages) instead of one byte at a time (0.3-0.8 s of a
 * model's first call, most of it these loops); rows past nb and k past the last whole 16 (int4: 32) scalar. */
#if defined(__SSE2__)
#include <emmintrin.h>
/* r[j] = 16 bytes of row j -> d[k] = (r[0][k], ..., r[15][k]) */
static inline __attribute__((always_inline)) void tr16x16_u8(const __m128i r[16], __m128i d[16]) {
  __m128i a[16], b[16], c[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int g = 0; g < 4; g++)
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
      b[4 * g + 2 * i] = _mm_unpacklo_epi16(a[4 * g + i], a[4 * g + i + 2]);
      b[4 * g + 2 * i + 1] = _mm_unpackhi_epi16(a[4 * g + i], a[4 * g + i + 2]);
    }
#pragma GCC unroll 2
  for (int g = 0; g < 2; g++)
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      c[8 * g + 2 * i] = _mm_unpacklo_epi32(b[8 * g + i], b[8 * g + i + 4]);
      c[8 * g + 2 * i + 1] = _mm_unpackhi_epi32(b[8 * g + i], b[8 * g + i + 4]);
    }
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    d[2 * i] = _mm_unpacklo_epi64(c[i], c[i + 8]);
    d[2 * i + 1] = _mm_unpackhi_epi64(c[i], c[i + 8]);
  }
}
/* 16 bytes at offset m of rows n0 + j0 .. + 15 (zero past nb), transposed */
static inline __attribute__((always_inline)) void load_tr16(const uint8_t *W, int64_t ld, int64_t n0, int j0, int64_t nb, int64_t m, __m128i d[16]) {
  __m128i r[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; j++)
    r[j] = j0 + j < nb ? _mm_loadu_si128((const __m128i *)(W + (n0 + j0 + j) * ld + m)) : _mm_setzero_si128();
  tr16x16_u8(r, d);
}
#endif
static void pack_w8k_panel(const void *W, int64_t K, int64_t n0, int64_t nb, void *out) {
  int8_t *Bp = (int8_t *)out;
  int64_t k0 = 0;
#if defined(__SSE2__)
  for (; k0 + 16 <= K; k0 += 16)
    for (int j0 = 0; j0 < NR; j0 += 16) {
      __m128i d[16];
      load_tr16((const uint8_t *)W, K, n0, j0, nb, k0, d);
#pragma GCC unroll 16
      for (int t = 0; t < 16; t++) _mm_storeu_si128((__m128i *)(Bp + (k0 + t) * NR + j0), d[t]);
    }
#endif
  for (int64_t j = 0; j < NR; j++) {
    const int8_t *w = j < nb ? (const int8_t *)W + (n0 + j) * K : NULL;
    for (int64_t k = k0; k < K; k++) Bp[k * NR + j] = w ? w[k] : 0;
  }
}

static void pack_w4k_panel(const void *W, int64_t K, int64_t n0, int64_t nb, void *out) {
  uint8_t *Bp = (uint8_t *)out;
  const uint8_t *w = (const uint8_t *)W;
  int64_t k0 = 0;
#if defined(__SSE2__)
  const __m128i lo4 = _mm_set1_epi8(15), hi4 = _mm_set1_epi8((char)0xF0);
  for (; k0 + 32 <= K; k0 += 32) { /* 16 bytes (32 k) of columns b and b + 16: low nibbles even k, high odd */
    __m128i tl[16], th[16];
    load_tr16(w, K / 2, n0, 0, nb, k0 / 2, tl);
    load_tr16(w, K / 2, n0, 16, nb, k0 / 2, th);
#pragma GCC unroll 16
    for (int t = 0; t < 16; t++) {
      __m128i ev = _mm_or_si128(_mm_and_si128(tl[t], lo4), _mm_slli_epi16(_mm_and_si128(th[t], lo4), 4));
      __m128i od = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(tl[t], 4), lo4), _mm_and_si128(th[t], hi4));
      _mm_storeu_si128((__m128i *)(Bp + (k0 + 2 * t) * (NR / 2)), ev);
      _mm_storeu_si128((__m128i *)(Bp + (k0 + 2 * t + 1) * (NR / 2)), od);
    }
  }
#endif
  for (int64_t k = k0; k < K; k++)
    for (int64_t b = 0; b < NR / 2; b++) {
      uint8_t lo = b < nb ? (w[(n0 + b) * (K / 2) + k / 2] >> (4 * (k & 1))) & 15 : 0;
      uint8_t hi = b + NR / 2 < nb ? (w[(n0 + b + NR / 2) * (K / 2) + k / 2] >> (4 * (k & 1))) & 15 : 0;
      Bp[k * (NR / 2) + b] = (uint8_t)(lo | (hi << 4));
    }
}

static size_t wq_panel_bytes(const wview *v) {
  return v->mode == MOEC_WQ_INT4 ? (size_t)(v->K * NR / 2) : (size_t)(v->K * NR);
}

static const void *packed_panels_wq(const wview *v, int64_t E) {
  if (v->mode == MOEC_WQ_INT8)
    return cached_panels(v->w, (size_t)(v->N * v->K), E, v->N, v->K, wq_panel_bytes(v), pack_w8k_panel);
  return cached_panels(v->w, (size_t)(v->N * v->K / 2), E, v->N, v->K, wq_panel_bytes(v), pack_w4k_panel);
}

/* per-item scale table: int8 st[0..NR) = column scales (0 beyond nb); int4 st[g][0..NR) = s,
 * st[g][NR..2NR) = s * z (zero point 8 when symmetric) */
static void wq_scale_table(const wview *v, int64_t e, int64_t c0, int64_t nb, float *st) {
  if (v->mode == MOEC_WQ_INT8) {
    for (int64_t j = 0; j < NR; j++) st[j] = j < nb ? v->s[e * v->N + c0 + j] : 0.f;
    return;
  }
  int64_t ng = v->K / v->G;
  for (int64_t g = 0; g < ng; g++)
    for (int64_t j = 0; j < NR; j++) {
      int64_t gi = (e * v->N + c0 + j) * ng + g;
      float sc = j < nb ? v->s[gi] : 0.f, z = (j < nb && v->z) ? v->z[gi] : 8.0f;
      st[g * 2 * NR + j] = sc;
      st[g * 2 * NR + NR + j] = sc * z;
    }
}

/* Symmetric int4 (zero point 8, the default): every panel's scale table built once per scale tensor and cached
 * like the panels ([E][N/NR][K/G][2 NR] floats, half the bytes of the int4 codes at group 32); with zero points,
 * and for int8's 32 scales, the table is built per work item (at 64 tokens the per-item tables were 9% of an
 * int4 prefill's samples). */
static void pack_s4_table(const void *S, int64_t ng, int64_t n0, int64_t nb, void *out) {
  const wview t = {MOEC_WQ_INT4, NULL, (const float *)S, NULL, 0, ng, 1};
  wq_scale_table(&t, 0, n0, nb, (float *)out);
}
static const float *cached_scale_tables(const wview *v, int64_t E) {
  if (v->mode != MOEC_WQ_INT4 || v->z) return NULL;
  const int64_t ng = v->K / v->G;
  return (const float *)cached_panels(v->s, sizeof(float) * (size_t)(v->N * ng), E, v->N, ng,
                                      sizeof(float) * (size_t)(ng * 2 * NR), pack_s4_table);
}
/* the scale table of columns c0..c0+nb of expert e (block cb of nblk): the cached one, or built into buf */
static const float *wq_scales(const wview *v, const float *tables, int64_t e, int64_t nblk, int64_t cb, int64_t c0,
                              int64_t nb, float *buf) {
  if (tables) return tables + (size_t)(e * nblk + cb) * (size_t)(v->K / v->G) * 2 * NR;
  wq_scale_table(v, e, c0, nb, buf);
  return buf;
}

static inline __attribute__((always_inline)) void tile_wq_r(const wview *v, const float *A, int64_t lda, int m,
                                                            const void *panel, const float *st, float *C,
                                                            int64_t ldc, int64_t nb, const int R, const int PF,
                                                            const char *pf, int64_t pfs) {
  int64_t K = v->K;
  if (PF && !pf) pf = (const char *)panel, pfs = 0; /* (nothing ahead: the panel's first line, a no-op) */
  v16f acc[MR][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = (v16f){0};
  const float *a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++) a[r] = A + (r < m ? r : 0) * lda;
  if (v->mode == MOEC_WQ_INT8) {
    const int8_t *Bp = (const int8_t *)panel;
    for (int64_t k = 0; k < K; k++) {
      if (PF) {
        __builtin_prefetch(pf, 0, 2);
        pf += pfs;
      }
      v16f b0 = ld16_i8(Bp + k * NR), b1 = ld16_i8(Bp + k * NR + 16);
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) {
        v16f xr = splat16(a[r][k]);
        acc[r][0] += xr * b0;
        acc[r][1] += xr * b1;
      }
    }
    v16f s0 = ld16f(st), s1 = ld16f(st + 16);
    for (int r = 0; r < m; r++) { acc[r][0] *= s0; acc[r][1] *= s1; }
  } else {
    const uint8_t *Bp = (const uint8_t *)panel;
    for (int64_t g0 = 0; g0 < K; g0 += v->G) {
      const float *sg = st + (g0 / v->G) * 2 * NR;
      v16f s0 = ld16f(sg), s1 = ld16f(sg + 16), z0 = ld16f(sg + 32), z1 = ld16f(sg + 48);
      for (int64_t k = g0; k < g0 + v->G; k++) {
        if (PF) {
          __builtin_prefetch(pf, 0, 2);
          pf += pfs;
        }
        v16f lo, hi;
        ld16_u4(Bp + k * (NR / 2), &lo, &hi);
        v16f b0 = lo * s0 - z0, b1 = hi * s1 - z1;
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
          v16f xr = splat16(a[r][k]);
          acc[r][0] += xr * b0;
          acc[r][1] += xr * b1;
        }
      }
    }
  }
  for (int r = 0; r < m; r++) {
    float tmp[NR];
    __builtin_memcpy(tmp, &acc[r][0], 64);
    __builtin_memcpy(tmp + 16, &acc[r][1], 64);
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
  }
}


#if MOEC_VBYTES < 64 && defined(__AVX2__) && defined(__FMA__)
/* AVX2: the same panels and the same arithmetic (w = q s - s z per group, then the FMAs; int8: the scale
 * after) in explicit 8-lane registers, R <= 2 rows: 8 accumulators, the codes of 32 columns as 4 vectors.
 * (GCC keeps 16-lane generic vectors on AVX2 in memory and moves them through general registers: the
 * generic tile was ~40x slower than on AVX-512.) */
static inline __attribute__((always_inline)) void tile_wq_avx2(const wview *v, const float *A, int64_t lda,
                                                               const void *panel, const float *st, float *C,
                                                               int64_t ldc, int64_t nb, const int R) {
  const int64_t K = v->K;
  __m256 acc[2][4];
  for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = _mm256_setzero_ps();
  if (v->mode == MOEC_WQ_INT8) {
    const int8_t *Bp = (const int8_t *)panel;
    for (int64_t k = 0; k < K; k++) {
      __m128i c0 = _mm_loadu_si128((const __m128i *)(Bp + k * NR)), c1 = _mm_loadu_si128((const __m128i *)(Bp + k * NR + 16));
      __m256 b[4] = {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c0)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c0, 8))),
                     _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c1)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(c1, 8)))};
      for (int r = 0; r < R; r++) {
        __m256 x = _mm256_broadcast_ss(A + r * lda + k);
        for (int q = 0; q < 4; q++) acc[r][q] = _mm256_fmadd_ps(x, b[q], acc[r][q]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int q = 0; q < 4; q++) acc[r][q] = _mm256_mul_ps(acc[r][q], _mm256_loadu_ps(st + 8 * q));
  } else {
    const uint8_t *Bp = (const uint8_t *)panel;
    const __m128i m4 = _mm_set1_epi8(15);
    for (int64_t g0 = 0; g0 < K; g0 += v->G) {
      const float *sg = st + (g0 / v->G) * 2 * NR;
      for (int64_t k = g0; k < g0 + v->G; k++) {
        __m128i by = _mm_loadu_si128((const __m128i *)(Bp + k * (NR / 2)));
        __m128i lo = _mm_and_si128(by, m4), hi = _mm_and_si128(_mm_srli_epi16(by, 4), m4);
        __m128i c[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        __m256 b[4];
        for (int q = 0; q < 4; q++)
          b[q] = _mm256_fmsub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c[q])), _mm256_loadu_ps(sg + 8 * q),
                                 _mm256_loadu_ps(sg + NR + 8 * q));
        for (int r = 0; r < R; r++) {
          __m256 x = _mm256_broadcast_ss(A + r * lda + k);
          for (int q = 0; q < 4; q++) acc[r][q] = _mm256_fmadd_ps(x, b[q], acc[r][q]);
        }
      }
    }
  }
  for (int r = 0; r < R; r++) {
    float tmp[NR];
    for (int q = 0; q < 4; q++) _mm256_storeu_ps(tmp + 8 * q, acc[r][q]);
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = tmp[j];
  }
}
#endif

/* C = A (m <= MR rows) x the panel.  AVX-512: all MR rows at once (2 x 16 lanes each in zmm); AVX2: two rows
 * at a time in explicit 8-lane registers; otherwise the generic vectors, two rows at a time.  tile_wq_pf (AVX-512):
 * one prefetcht1 of pf per k step, advancing by pfs (a slice of the next item's narrow panel: wq_next_slice); tile_wq
 * has no prefetch (PF 0). */
static void tile_wq_pf(const wview *v, const float *A, int64_t lda, int m, const void *panel, const float *st, float *C,
                       int64_t ldc, int64_t nb, const char *pf, int64_t pfs) {
#if MOEC_VBYTES >= 64
  tile_wq_r(v, A, lda, m, panel, st, C, ldc, nb, MR, 1, pf, pfs);
#elif defined(__AVX2__) && defined(__FMA__)
  for (int r = 0; r < m; r += 2)
    if (m - r >= 2) tile_wq_avx2(v, A + r * lda, lda, panel, st, C + r * ldc, ldc, nb, 2);
    else tile_wq_avx2(v, A + r * lda, lda, panel, st, C + r * ldc, ldc, nb, 1);
#else
  for (int r = 0; r < m; r += 2)
    if (m - r >= 2) tile_wq_r(v, A + r * lda, lda, 2, panel, st, C + r * ldc, ldc, nb, 2, 0, NULL, 0);
    else tile_wq_r(v, A + r * lda, lda, 1, panel, st, C + r * ldc, ldc, nb, 1, 0, NULL, 0);
#endif
#if MOEC_VBYTES < 64
  (void)pf, (void)pfs;
#endif
}
static void tile_wq(const wview *v, const float *A, int64_t lda, int m, const void *panel, const float *st, float *C,
                    int64_t ldc, int64_t nb) {
#if MOEC_VBYTES >= 64
  tile_wq_r(v, A, lda, m, panel, st, C, ldc, nb, MR, 0, NULL, 0); /* (no prefetch: the loop as before) */
#else
  tile_wq_pf(v, A, lda, m, panel, st, C, ldc, nb, NULL, 0);
#endif
}

/* Prefill with more rows than a few tiles: tile_wq widens and scales the same panel once per MR rows, so
 * above wq_deq_rows rows a work item dequantises its panel once into the f32 panel layout (Bf[k * NR + j],
 * what pack_b_w gives and tile() reads; 4 K NR bytes, cache-resident) and runs the f32 micro-kernel, as
 * the f32 experts do: int8 / int4 weight-only prefill costs the f32 GEMM plus one dequantisation per panel
 * and row block.  The values are tile_wq's (int8 q s; int4 q s - s z per group, from the scale table).
 * Below the threshold the in-register dequantisation wins (measured, AVX-512, K = 1024, 1 thread: int4 equal
 * at 16 rows, 13% faster at 32; int8, whose tile scales only the finished tile, equal at 32, 5-10% faster
 * at 64 and 256).  AVX-512 builds only (below). */
#ifndef WQ_DEQ_ROWS
#if MOEC_VBYTES >= 64
#define WQ_DEQ_ROWS (2 * MR)
#else /* AVX2 / generic builds: never.  Their f32 micro-kernel is slower than tile_wq there (AVX2 build on an
       * AVX-512 host, 1 thread, Mixtral-like experts at 64 tokens: f32 149 ms, int8 via tile_wq 96 ms, int8
       * dequantised into tile() 138 ms), so the in-register path stays at every row count */
#define WQ_DEQ_ROWS (INT64_MAX / 4)
#endif
#endif
static inline int64_t wq_deq_rows(const wview *v) { return v->mode == MOEC_WQ_INT8 ? 2 * WQ_DEQ_ROWS : WQ_DEQ_ROWS; }
static void wq_dequant_panel(const wview *v, const void *panel, const float *st, float *Bf) {
  const int64_t K = v->K;
  if (v->mode == MOEC_WQ_INT8) {
    const int8_t *Bp = (const int8_t *)panel;
    const v16f s0 = ld16f(st), s1 = ld16f(st + 16);
    for (int64_t k = 0; k < K; k++) {
      st16f(Bf + k * NR, ld16_i8(Bp + k * NR) * s0);
      st16f(Bf + k * NR + 16, ld16_i8(Bp + k * NR + 16) * s1);
    }
    return;
  }
  const uint8_t *Bp = (const uint8_t *)panel;
  for (int64_t g0 = 0; g0 < K; g0 += v->G) {
    const float *sg = st + (g0 / v->G) * 2 * NR;
    const v16f s0 = ld16f(sg), s1 = ld16f(sg + 16), z0 = ld16f(sg + 32), z1 = ld16f(sg + 48);
    for (int64_t k = g0; k < g0 + v->G; k++) {
      v16f lo, hi;
      ld16_u4(Bp + k * (NR / 2), &lo, &hi);
      st16f(Bf + k * NR, lo * s0 - z0);
      st16f(Bf + k * NR + 16, hi * s1 - z1);
    }
  }
}

/* the narrow panel of columns c0..c0+nb of expert e: the cached one (block cb of nblk per expert), or packed
 * into buf */
static const void *wq_panel(const wview *v, const uint8_t *cached, int64_t e, int64_t nblk, int64_t cb, int64_t c0,
                            int64_t nb, void *buf) {
  if (cached) return cached + (size_t)(e * nblk + cb) * wq_panel_bytes(v);
  (v->mode == MOEC_WQ_INT8 ? pack_w8k_panel : pack_w4k_panel)(
      (const char *)v->w + (size_t)(e * v->N * v->K) / (v->mode == MOEC_WQ_INT4 ? 2 : 1), v->K, c0, nb, buf);
  return buf;
}
/* a worker's packing buffer for weight-only int8 / int4 prefill: the f32 panel (K NR floats), then room for
 * the narrow panel when it is packed per item */
static size_t wq_pack_bytes(int64_t kmax) { return sizeof(float) * (size_t)(kmax * NR + 16) + (size_t)(kmax * NR) + 64; }
static void *wq_narrow_buf(float *pack, int64_t K) { return pack + K * NR + 16; }

/* ---- int8 / int4 weights with bf16 activations (aq = 2: --weights int8|int4 --activations bf16) ---------
 * The GEMM inputs are rounded to bf16 (round_bf16_row) and stored as bf16 pairs (to_pairs), the weights enter
 * exactly: int8 codes and int4 values q - z (|q - z| <= 15 for the quantiser's integer zero points) are bf16
 * values, so tile_bf16's products (vdpbf16ps, or widened in registers) are exact and summed in f32, and the
 * scale multiplies the f32 sum in the micro-kernel's registers (tile_bf16_gs): per output channel after the
 * whole row (int8: one group of P pairs), per group after the group's partial sum (int4: G / 2 pairs).  Above
 * GEMV_ROWS rows a work item turns its narrow panel (the cached int8 / int4 k-major one) into the bf16 pair-panel
 * layout tile_bf16 reads, once, in the packing buffer (2 K NR bytes); at one or two rows the quantised GEMVs
 * take the rounded rows. */
static inline int64_t abf_group_pairs(const wview *v) { return v->mode == MOEC_WQ_INT4 ? v->G / 2 : (v->K + 1) / 2; }
static inline v16u32 bf16_pairs16(v16f lo, v16f hi) { return ((v16u32)lo >> 16) | ((v16u32)hi & 0xffff0000u); }
static inline v16f rne_bf16_16(v16f f) { /* finite values */
  v16u32 u = (v16u32)f;
  return (v16f)((u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
}
/* the narrow panel of columns c0..c0+nb of expert e -> bf16 pair panel Bq[p * NR + j] = w[2p] | w[2p+1] << 16
 * with w the int8 code or the int4 value q - z (z rounded to bf16 with it: exact for integer z) */
static void wq_bf16_panel(const wview *v, const void *panel, int64_t e, int64_t c0, int64_t nb, uint32_t *Bq) {
  const int64_t K = v->K;
#ifdef WQ_FUSED_WIDEN
  if (v->mode == MOEC_WQ_INT8 || !v->z) { /* (the fused kernel's widening, tile_wq_bf16_first) */
    for (int64_t p = 0; p < (K + 1) / 2; p++) {
      __m512i lo, hi;
      wq_pair_row(v, panel, p, &lo, &hi);
      _mm512_storeu_si512(Bq + p * NR, lo);
      _mm512_storeu_si512(Bq + p * NR + 16, hi);
    }
    return;
  }
#endif
  if (v->mode == MOEC_WQ_INT8) {
    const int8_t *Bp = (const int8_t *)panel;
    const int64_t P = (K + 1) / 2;
    for (int64_t p = 0; p < P; p++)
      for (int h = 0; h < 2; h++) {
        v16f w0 = ld16_i8(Bp + 2 * p * NR + 16 * h), w1 = 2 * p + 1 < K ? ld16_i8(Bp + (2 * p + 1) * NR + 16 * h) : (v16f){0};
        v16u32 pr = bf16_pairs16(w0, w1);
        __builtin_memcpy(Bq + p * NR + 16 * h, &pr, 64);
      }
    return;
  }
  const uint8_t *Bp = (const uint8_t *)panel;
  const int64_t G = v->G, ng = K / G;
  for (int64_t g = 0; g < ng; g++) {
    v16f z0 = splat16(8.0f), z1 = z0;
    if (v->z) {
      float zt[NR];
      for (int64_t j = 0; j < NR; j++) zt[j] = j < nb ? v->z[(e * v->N + c0 + j) * ng + g] : 0.f;
      z0 = ld16f(zt);
      z1 = ld16f(zt + 16);
    }
    for (int64_t k = g * G; k < (g + 1) * G; k += 2) { /* (G even: pairs never straddle groups) */
      v16f l0, h0, l1, h1;
      ld16_u4(Bp + k * (NR / 2), &l0, &h0);
      ld16_u4(Bp + (k + 1) * (NR / 2), &l1, &h1);
      l0 -= z0; l1 -= z0; h0 -= z1; h1 -= z1;
      if (v->z) { l0 = rne_bf16_16(l0); l1 = rne_bf16_16(l1); h0 = rne_bf16_16(h0); h1 = rne_bf16_16(h1); }
      v16u32 p0 = bf16_pairs16(l0, l1), p1 = bf16_pairs16(h0, h1);
      __builtin_memcpy(Bq + (k / 2) * NR, &p0, 64);
      __builtin_memcpy(Bq + (k / 2) * NR + 16, &p1, 64);
    }
  }
}
/* The narrow panels come from DRAM (the weights are read once per call), and wq_bf16_panel, a short loop over a
 * panel, waited on them: 11% of int8_bf16 prefill's samples for ~1/8 of that in arithmetic.  So while an item's
 * tiles run (compute-bound, from L2), slice s of ns of the next block's narrow panel (block `next` of `blocks`
 * in the cache) and of the scales tile_bf16_gs reads from its cached table are prefetched into L2: the
 * next item, whichever thread takes it, widens from cache.  No-op without cached panels. */
static void wq_prefetch_next(const wview *v, const uint8_t *cached, const float *tables, int64_t next, int64_t blocks,
                             int64_t s, int64_t ns) {
  if (!cached || next >= blocks || ns <= 0) return;
  const size_t pb = wq_panel_bytes(v);
  const char *p = (const char *)cached + (size_t)next * pb;
  for (size_t o = pb * (size_t)s / (size_t)ns / 64 * 64; o < pb * (size_t)(s + 1) / (size_t)ns; o += 64)
    __builtin_prefetch(p + o, 0, 2);
  if (tables) { /* the s half of each group's 2 NR floats (what the bf16 tiles read), spread like the panel */
    const int64_t ng = v->K / v->G;
    const float *t = tables + (size_t)next * (size_t)ng * 2 * NR;
    for (int64_t g = ng * s / ns; g < ng * (s + 1) / ns; g++)
      for (int64_t o = 0; o < NR; o += 16) __builtin_prefetch(t + g * 2 * NR + o, 0, 2);
  }
}
/* C[m x nb] = the rows at A (bf16 pairs, (K + 1) / 2 per row) times the pair panel Bq, each group's f32 sum
 * times its column scales (st: wq_scale_table's, s at st[g * 2 NR + j]) */
/* int8 weights where the rows are also f32 values (BF16_F32_ROWS, no AVX512_BF16): tile_wq on the narrow panel, every
 * row block, and no pair panel at all.  Its sums are the pair tile's: the exact products x_k q_k fused-multiply-added
 * into one f32 accumulator per output in k order, times the column scale at the end (tile_bf16_f then the scales);
 * its 2 conversions per k and 32 columns cost less than the pair panel's widening pass, 27% of int8_bf16's samples
 * at 64 tokens (16 rows an expert) on an Ice Lake host */
static inline int wq_bf16_direct(const wview *v, const float *Af) {
  return BF16_F32_ROWS && Af && v->mode == MOEC_WQ_INT8;
}
static void tile_wq_bf16(const wview *v, const uint32_t *A, const float *Af, int m, const uint32_t *Bq, const float *st,
                         float *C, int64_t ldc, int64_t nb) {
  const int64_t P = (v->K + 1) / 2, pg = abf_group_pairs(v);
  if (AMX_BF16_GS(A, P, m, Bq, st, pg, C, ldc, nb)) return; /* (rt_amx.h: the pairs on the tiles, 3+ rows) */
  if (pg < P) {
    tile_bf16_gs(A, P, m, Bq, st, pg, C, ldc, nb, Af);
    return;
  }
  /* one group (int8, int4 per row): the plain tile (MR rows at a time: tile_bf16_gs keeps two accumulator sets
   * and so 4), then the column scales; the group's f32 sum times its scale, rounded once, as tile_bf16_gs */
  tile_bf16_f(A, Af, P, m, Bq, C, ldc, nb);
  for (int r = 0; r < m; r++) {
    float *restrict c = C + r * ldc;
    const float *restrict sc = st;
    for (int64_t j = 0; j < nb; j++) c[j] *= sc[j];
  }
}
/* The first row block of a work item: C[m x nb] = tile_wq_bf16's product of the rows at A and the item's pair
 * panel, the pair panel made from the narrow one (wq_pair_row, the values wq_bf16_panel gives) inside the K loop
 * of the first BF16_GS_MX rows (tile_bf16_mx with nw) and stored into Bq for the later rows (tile_wq_bf16).  The
 * widening was a pass of its own over every panel (wq_bf16_panel: 11% of int8_bf16 prefill's samples on an
 * AVX512_BF16 host, its narrow panel's DRAM reads and its stores waited on); here its loads and conversions
 * overlap the first rows' products.  The same kernel and the same order of sums as tile_wq_bf16, so every row
 * comes out bit for bit as before.  AVX-512 builds (wq_pair_row); elsewhere, with int4 zero points, or with 1-2
 * rows: wq_bf16_panel, then tile_wq_bf16. */
static void tile_wq_bf16_first(const wview *v, const void *panel, int64_t e, int64_t c0, const uint32_t *A,
                               const float *Af, int m, uint32_t *Bq, const float *st, float *C, int64_t ldc,
                               int64_t nb) {
#ifdef WQ_FUSED_WIDEN
  const int64_t P = (v->K + 1) / 2, pg = abf_group_pairs(v);
  if ((v->mode == MOEC_WQ_INT8 || !v->z) && m >= 3 && WQ_FUSE_FIRST && !AMX_WANTS(m)) { /* (1 or 2 rows: the separate pass, below;
                                                                                      * AMX: the pass, then every row on the tiles) */
    if (!panel) __builtin_unreachable();
    const int mm = m < BF16_GS_MX ? m : BF16_GS_MX;
    if (Af) tile_bf16_mx(BF16_GS_MX, A, P, mm, Bq, C, ldc, nb, st, pg, v, panel, Bq, Af);
    else tile_bf16_mx(BF16_GS_MX, A, P, mm, Bq, C, ldc, nb, st, pg, v, panel, Bq, NULL);
    if (m > mm) tile_wq_bf16(v, A + mm * P, Af ? Af + mm * 2 * P : NULL, m - mm, Bq, st, C + mm * ldc, ldc, nb);
    return;
  }
#endif
  wq_bf16_panel(v, panel, e, c0, nb, Bq);
  tile_wq_bf16(v, A, Af, m, Bq, st, C, ldc, nb);
}

/* ---- w8a8: dynamic per-row int8 activations x int8 weights, exact int32 dot products -----------
 * A GEMM input row is quantised once (s = max|row| / 127, q = rint(row / s) in [-127, 127]) and stored
 * biased as u8 (q + 128), K padded to Kp (multiple of 4) with 128 (q = 0).  Weight panels hold, per
 * group p of four reduction steps, NR columns x 4 int8 (the vpdpbusd operand layout), then the NR
 * column sums (int32) that remove the bias: sum (q + 128) w = sum q w + 128 * colsum.  The tile keeps
 * MR x NR int32 accumulators; the result is acc * s_row * s_col in f32 (the row and column scales). */
#define KP4(K) (((K) + 3) / 4 * 4)
static size_t i8_panel_bytes(int64_t K) { return (size_t)(KP4(K) * NR) + sizeof(int32_t) * NR; }

static void pack_i8_panel(const void *W, int64_t K, int64_t n0, int64_t nb, void *out) {
  int8_t *Bp = (int8_t *)out;
  int64_t P = KP4(K) / 4;
  int32_t cs[NR];
  for (int64_t j = 0; j < NR; j++) {
    const int8_t *w = j < nb ? (const int8_t *)W + (n0 + j) * K : NULL;
    int32_t sum = 0;
    for (int64_t p = 0; p < P; p++)
      for (int i = 0; i < 4; i++) {
        int64_t k = 4 * p + i;
        int8_t v = (w && k < K) ? w[k] : 0;
        Bp[(p * NR + j) * 4 + i] = v;
        sum += v;
      }
    cs[j] = sum;
  }
  __builtin_memcpy(Bp + P * NR * 4, cs, sizeof cs);
}

static const int8_t *packed_panels_i8(const int8_t *W, int64_t E, int64_t N, int64_t K) {
  return (const int8_t *)cached_panels(W, (size_t)(N * K), E, N, K, i8_panel_bytes(K), pack_i8_panel);
}
/* the int8 panels packed at compile time (moec_wq.pk_in / pk_out, [E, ceil(N/NR), i8_panel_bytes(K)] u8: the layout
 * of ir/weight_layouts.py), else the run-time cache of the plain weight W; *bad set when they do not match */
static const int8_t *i8_panels(const moec_tensor *pk, const int8_t *W, int64_t E, int64_t N, int64_t K, int *bad) {
  if (!pk) return packed_panels_i8(W, E, N, K);
  int ok = pk->dtype == MOEC_U8 && pk->rank == 3 && pk->shape[0] == E && pk->shape[1] == (N + NR - 1) / NR &&
           pk->shape[2] == (int64_t)i8_panel_bytes(K) && NR == MOEC_I8PANEL_NR;
  if (!ok) *bad = 1;
  return ok ? (const int8_t *)pk->data : NULL;
}

/* the dynamic int8 scale of a span of activations: max|x| / 127 (1 for an all-zero span); NaN when the span
 * holds a NaN, so every product with it is NaN, as in the reference (w8a8 rows, w4a8 groups) */
/* (an infinite max too: inf / 127 would scale the span's codes to 0 and NaN, the NaN code clipped to -127 by the
 * vector path, so an inf input came out +-inf; with a NaN scale every product with it is NaN, as the reference's
 * dequantised span is) */
static inline float scale_127(float amax, int nan) {
  return nan || !(amax <= 3.40282347e38f) ? NAN : amax > 0.f ? amax / 127.0f : 1.0f;
}

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
static float span_scale_127(const float *x, int64_t n) {
  float amax = 0.f;
  int nan = 0;
  int64_t k = 0;
#if defined(__AVX512F__)
  /* 16 lanes (max is exact: the same value as the scalar loop's) */
  __m512 m = _mm512_setzero_ps();
  __mmask16 un = 0;
  for (; k + 16 <= n; k += 16) {
    __m512 v = _mm512_loadu_ps(x + k);
    un |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    m = _mm512_max_ps(m, _mm512_abs_ps(v));
  }
  amax = _mm512_reduce_max_ps(m);
  nan = un != 0;
#endif
  for (; k < n; k++) {
    float v = fabsf(x[k]);
    amax = v > amax ? v : amax;
    nan |= x[k] != x[k];
  }
  return scale_127(amax, nan);
}

#if defined(__AVX512F__)
/* The codes rint(x / s) of 16 lanes, bit for bit what the correctly rounded division (the scalar loops', the
 * reference's) gives, at a multiply's cost, for a row (group) whose scale s = fl(max|x| / 127) is normal and below
 * 2^125 (quot_fast_ok: then no lane is NaN or infinite and |x| <= max|x|): the division was 3.5% of a w8a8 / 4.8% of
 * a w4a8 prefill profile at 256 tokens (vdivps zmm: one per ~10 cycles on Ice Lake).  p = x * fl(1 / s) and
 * d = fl(x / s) differ from the true quotient t by at most 2u|t| and u|t| (u = 2^-24; fl(1 / s) is correctly rounded
 * and normal), so |p - d| <= 3u|t| (+ 2^-149 for subnormal products) < 2.4e-5, as |t| <= 127 (1 + u).  With
 * r = rint(p) (vcvtps2dq, to nearest even), e = p - r is exact (|e| <= 1/2, a multiple of p's ulp; GCC may contract
 * it into an FMA: then it moves by < 2^-18, inside the margin).  If |e| < 1/2 - 2^-14, d lies in the same open
 * interval (r - 1/2, r + 1/2) as p, so rint(d) = r; the lanes within 2^-14 of a tie are divided (a masked vdivps:
 * ~0.2% of the vectors of random data, every lane of a row of exact ties).  |r| <= 127 (|p| <= 127 (1 + 3u)): no
 * clamp, and no NaN lane to zero. */
static inline int quot_fast_ok(float s) { return s >= 1.17549435e-38f && s <= 4.2535296e37f; } /* (NaN: no) */
static inline __m512i quot_codes16(__m512 x, __m512 vs, __m512 vinv) {
  const int RN = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 p = _mm512_mul_ps(x, vinv);
  const __m512i r = _mm512_cvt_roundps_epi32(p, RN);
  const __mmask16 near = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(p, _mm512_cvtepi32_ps(r))),
                                            _mm512_set1_ps(0.5f - 6.103515625e-05f), _CMP_NLT_UQ);
  if (near) return _mm512_mask_cvt_roundps_epi32(r, near, _mm512_maskz_div_ps(near, x, vs), RN);
  return r;
}
#endif

/* q[0..Kp) = biased int8 codes of a[0..K), *s = the row's scale */
static void quant_row_u8(const float *a, int64_t K, uint8_t *q, float *s) {
  float sc = span_scale_127(a, K);
  int64_t k = 0;
#if defined(__AVX512F__)
  /* 16 lanes, the scalar loop's arithmetic: a correctly rounded division, round half to even, NaN -> 0, clamp */
  const __m512 vs = _mm512_set1_ps(sc), lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  if (quot_fast_ok(sc)) { /* (the same codes without the division: quot_codes16) */
    const __m512 vinv = _mm512_set1_ps(1.0f / sc);
    for (; k + 16 <= K; k += 16) {
      __m512i c = _mm512_add_epi32(quot_codes16(_mm512_loadu_ps(a + k), vs, vinv), _mm512_set1_epi32(128));
      _mm_storeu_si128((__m128i *)(void *)(q + k), _mm512_cvtepi32_epi8(c));
    }
  }
  for (; k + 16 <= K; k += 16) {
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(a + k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __mmask16 ok = _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q);
    r = _mm512_maskz_mov_ps(ok, _mm512_min_ps(_mm512_max_ps(r, lo), hi));
    __m512i c = _mm512_add_epi32(_mm512_cvtps_epi32(r), _mm512_set1_epi32(128));
    _mm_storeu_si128((__m128i *)(void *)(q + k), _mm512_cvtepi32_epi8(c));
  }
#endif
  for (; k < K; k++) {
    float r = rintf(a[k] / sc);
    r = r > 127.f ? 127.f : (r < -127.f ? -127.f : (r == r ? r : 0.f));
    q[k] = (uint8_t)((int)r + 128);
  }
  for (int64_t k = K; k < KP4(K); k++) q[k] = 128;
  *s = sc;
}

/* C[r][0..nb) = (sum_k A[r][k] Bp[k][j] - 128 colsum[j]) * xs[r] * ws[j] for r < m (m <= MR).  VNNI: MX rows
 * unrolled (1, 2, 4 or MR: the decode step's one row ran all MR rows' vpdpbusd, 8x its work, and was 47% of a
 * w8a8 decode profile); one row keeps two k chains (even / odd p) per 16 columns.  The int32 sums are exact,
 * so the chains' split does not change C.  The accumulators are indexed by compile-time constants only (the
 * stores too: a store loop bounded by m kept acc[][] addressable, and GCC then copied all 16 registers around
 * the k loop's back edge and spilled two, 30 extra moves per 16 vpdpbusd); the epilogue converts and scales
 * straight from the registers (masked to nb columns) instead of a scalar pass over an int32 copy, which cost
 * a third of the tile at K = 1024; the panel's next lines are prefetched (a panel over K ~ 1500 is read from L2
 * by every block of rows). */
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512F__)
#ifndef I8_PF
#define I8_PF 1024
#endif /* I8_PF: bytes ahead in the panel: 8 steps of 4 reduction indices */
#define I8_STR2(x) #x
#define I8_STR(x) I8_STR2(x)
/* one row of the asm k loop: the row's 4 codes broadcast, times the two column vectors t0, t1 */
#define I8_ROW(a, c0, c1) \
  "vpbroadcastd (" a ",%[q],4), %%zmm18\n\t" \
  "vpdpbusd %%zmm16, %%zmm18, %%zmm" c0 "\n\t" \
  "vpdpbusd %%zmm17, %%zmm18, %%zmm" c1 "\n\t"
static inline __attribute__((always_inline)) void tile_i8_mx(const int MX, const uint8_t *A, int64_t lda, int m,
                                                             const int8_t *Bp, int64_t P, const int32_t *cs,
                                                             const float *xs, const float *ws, float *C, int64_t ldc,
                                                             int64_t nb, const char *pf, int64_t pfs) {
  __m512i acc[MR][2], acd[2];
  acd[0] = acd[1] = _mm512_setzero_si512();
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  const uint8_t *a[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++) a[r] = A + (r < m ? r : 0) * lda;
  /* the output lines, fetched while the k loop runs (rows of a wide H are not in cache: the stores'
   * read-for-ownership misses cost ~12% of a K = 1024, 5632-column GEMM; this won back about half) */
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++)
    if (r < m) {
      __builtin_prefetch(C + r * ldc, 1, 3);
      __builtin_prefetch(C + r * ldc + 16, 1, 3);
    }
  int64_t p = 0;
  if (MX == 1)
    for (; p + 2 <= P; p += 2) {
      const int8_t *b = Bp + p * NR * 4;
      int32_t f0, f1;
      __builtin_memcpy(&f0, a[0] + 4 * p, 4);
      __builtin_memcpy(&f1, a[0] + 4 * p + 4, 4);
      const __m512i a0 = _mm512_set1_epi32(f0), a1 = _mm512_set1_epi32(f1);
      acc[0][0] = _mm512_dpbusd_epi32(acc[0][0], a0, _mm512_loadu_si512(b));
      acc[0][1] = _mm512_dpbusd_epi32(acc[0][1], a0, _mm512_loadu_si512(b + 64));
      acd[0] = _mm512_dpbusd_epi32(acd[0], a1, _mm512_loadu_si512(b + NR * 4));
      acd[1] = _mm512_dpbusd_epi32(acd[1], a1, _mm512_loadu_si512(b + NR * 4 + 64));
    }
  if (MX == 8 && P > 0) { /* (MR = 8 on these builds) the k loop in asm: see I8_ROW */
    int32_t am[8][2][16] __attribute__((aligned(64)));
    const int8_t *b = Bp;
    int64_t q = -P; /* the rows' pointers end-biased: q counts up to 0 */
    if (!pf) pf = (const char *)Bp, pfs = 128; /* (nothing ahead: the line just read, a no-op) */
    __asm__ volatile(
        "vpxord %%zmm0, %%zmm0, %%zmm0\n\tvmovdqa64 %%zmm0, %%zmm1\n\tvmovdqa64 %%zmm0, %%zmm2\n\t"
        "vmovdqa64 %%zmm0, %%zmm3\n\tvmovdqa64 %%zmm0, %%zmm4\n\tvmovdqa64 %%zmm0, %%zmm5\n\t"
        "vmovdqa64 %%zmm0, %%zmm6\n\tvmovdqa64 %%zmm0, %%zmm7\n\tvmovdqa64 %%zmm0, %%zmm8\n\t"
        "vmovdqa64 %%zmm0, %%zmm9\n\tvmovdqa64 %%zmm0, %%zmm10\n\tvmovdqa64 %%zmm0, %%zmm11\n\t"
        "vmovdqa64 %%zmm0, %%zmm12\n\tvmovdqa64 %%zmm0, %%zmm13\n\tvmovdqa64 %%zmm0, %%zmm14\n\t"
        "vmovdqa64 %%zmm0, %%zmm15\n"
        "1:\n\t"
        "prefetcht0 " I8_STR(I8_PF) "(%[b])\n\t"
        "prefetcht0 " I8_STR(I8_PF) "+64(%[b])\n\t"
        "prefetcht1 (%[pf])\n\t"
        "add %[pfs], %[pf]\n\t"
        "vmovdqu64 (%[b]), %%zmm16\n\t"
        "vmovdqu64 64(%[b]), %%zmm17\n\t"
        I8_ROW("%[a0]", "0", "1") I8_ROW("%[a1]", "2", "3") I8_ROW("%[a2]", "4", "5") I8_ROW("%[a3]", "6", "7")
        I8_ROW("%[a4]", "8", "9") I8_ROW("%[a5]", "10", "11") I8_ROW("%[a6]", "12", "13") I8_ROW("%[a7]", "14", "15")
        "sub $-128, %[b]\n\t"
        "inc %[q]\n\t"
        "jnz 1b\n\t"
        "vmovdqa64 %%zmm0, (%[am])\n\tvmovdqa64 %%zmm1, 64(%[am])\n\tvmovdqa64 %%zmm2, 128(%[am])\n\t"
        "vmovdqa64 %%zmm3, 192(%[am])\n\tvmovdqa64 %%zmm4, 256(%[am])\n\tvmovdqa64 %%zmm5, 320(%[am])\n\t"
        "vmovdqa64 %%zmm6, 384(%[am])\n\tvmovdqa64 %%zmm7, 448(%[am])\n\tvmovdqa64 %%zmm8, 512(%[am])\n\t"
        "vmovdqa64 %%zmm9, 576(%[am])\n\tvmovdqa64 %%zmm10, 640(%[am])\n\tvmovdqa64 %%zmm11, 704(%[am])\n\t"
        "vmovdqa64 %%zmm12, 768(%[am])\n\tvmovdqa64 %%zmm13, 832(%[am])\n\tvmovdqa64 %%zmm14, 896(%[am])\n\t"
        "vmovdqa64 %%zmm15, 960(%[am])"
        : [b] "+r"(b), [q] "+r"(q), [pf] "+r"(pf)
        : [pfs] "r"(pfs), [am] "r"(&am[0][0][0]), [a0] "r"(a[0] + 4 * P), [a1] "r"(a[1] + 4 * P), [a2] "r"(a[2] + 4 * P),
          [a3] "r"(a[3] + 4 * P), [a4] "r"(a[4] + 4 * P), [a5] "r"(a[5] + 4 * P), [a6] "r"(a[6] + 4 * P),
          [a7] "r"(a[7] + 4 * P)
        : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18");
#pragma GCC unroll 16
    for (int r = 0; r < 8; r++) {
      acc[r][0] = _mm512_load_si512(am[r][0]);
      acc[r][1] = _mm512_load_si512(am[r][1]);
    }
    p = P;
  }
  for (; p < P; p++) {
    const int8_t *b = Bp + p * NR * 4;
    if (MX > 2) {
      _mm_prefetch((const char *)b + I8_PF, _MM_HINT_T0);
      _mm_prefetch((const char *)b + I8_PF + 64, _MM_HINT_T0);
    }
    __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
#pragma GCC unroll 16
    for (int r = 0; r < MX; r++) {
      int32_t four;
      __builtin_memcpy(&four, a[r] + 4 * p, 4);
      __m512i av = _mm512_set1_epi32(four);
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
    }
  }
  if (MX == 1) {
    acc[0][0] = _mm512_add_epi32(acc[0][0], acd[0]);
    acc[0][1] = _mm512_add_epi32(acc[0][1], acd[1]);
  }
  /* (float)(dot - 128 colsum) * (xs[r] * ws[j]): the scalar loop's operations, in its order */
  const __mmask16 k0 = nb >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nb) - 1),
                  k1 = nb >= 32 ? (__mmask16)0xFFFF : nb <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nb - 16)) - 1);
  const __m512i c0 = _mm512_slli_epi32(_mm512_loadu_si512(cs), 7), c1 = _mm512_slli_epi32(_mm512_loadu_si512(cs + 16), 7);
  const __m512 w0 = _mm512_maskz_loadu_ps(k0, ws), w1 = _mm512_maskz_loadu_ps(k1, ws + 16);
#pragma GCC unroll 16
  for (int r = 0; r < MX; r++)
    if (r < m) {
      const __m512 sx = _mm512_set1_ps(xs[r]);
      _mm512_mask_storeu_ps(C + r * ldc, k0, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][0], c0)), _mm512_mul_ps(sx, w0)));
      _mm512_mask_storeu_ps(C + r * ldc + 16, k1,
                            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][1], c1)), _mm512_mul_ps(sx, w1)));
    }
}
#endif
/* tile_i8_pf: tile_i8 that also fetches [pf, pf + P pfs) into L2 while its k loop runs (8-row blocks of VNNI builds:
 * a slice of the panel the next item reads, see i8_next_slice; pf NULL: nothing) */
static void tile_i8_pf(const uint8_t *A, int64_t lda, int m, const int8_t *Bp, int64_t K, const float *xs,
                       const float *ws, float *C, int64_t ldc, int64_t nb, const char *pf, int64_t pfs) {
  int64_t P = KP4(K) / 4;
  const int32_t *cs = (const int32_t *)(const void *)(Bp + P * NR * 4);
#if defined(__AVX512VNNI__) && defined(__AVX512F__)
  if (m == 1) tile_i8_mx(1, A, lda, m, Bp, P, cs, xs, ws, C, ldc, nb, NULL, 0);
  else if (m == 2) tile_i8_mx(2, A, lda, m, Bp, P, cs, xs, ws, C, ldc, nb, NULL, 0);
  else if (m <= 4) tile_i8_mx(4, A, lda, m, Bp, P, cs, xs, ws, C, ldc, nb, NULL, 0);
  else tile_i8_mx(MR, A, lda, m, Bp, P, cs, xs, ws, C, ldc, nb, pf, pfs);
#elif defined(__AVX2__)
  /* AVX2 (or AVX-512 without VNNI): vpmaddubsw cannot take the biased codes (255 x 127 x 2 saturates int16),
   * so the signed code q = a ^ 0x80 moves onto the weight's sign: |w| (u8) x sign(q, w) (s8), pairs <= 2 x 128 x
   * 127, then vpmaddwd with ones to int32: sum q w exactly, which is sum a w - 128 colsum.  Two rows x 16
   * columns per pass (12 of the 16 ymm registers). */
  int32_t res[MR][NR];
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
  for (int r = 0; r < m; r += 2) {
    const uint8_t *a0 = A + r * lda, *a1 = A + (r + 1 < m ? r + 1 : r) * lda;
    for (int h = 0; h < 2; h++) {
      __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
      for (int64_t p = 0; p < P; p++) {
        const int8_t *b = Bp + p * NR * 4 + h * 64;
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)b),
                      w1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32));
        const __m256i u0 = _mm256_abs_epi8(w0), u1 = _mm256_abs_epi8(w1);
        int32_t f0, f1;
        __builtin_memcpy(&f0, a0 + 4 * p, 4);
        __builtin_memcpy(&f1, a1 + 4 * p, 4);
        const __m256i q0 = _mm256_xor_si256(_mm256_set1_epi32(f0), flip), q1 = _mm256_xor_si256(_mm256_set1_epi32(f1), flip);
        c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, _mm256_sign_epi8(q0, w0)), ones));
        c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, _mm256_sign_epi8(q0, w1)), ones));
        c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, _mm256_sign_epi8(q1, w0)), ones));
        c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, _mm256_sign_epi8(q1, w1)), ones));
      }
      /* (+ 128 colsum: the epilogue below removes the bias of the codes, as on the other paths) */
      const __m256i k0 = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(cs + 16 * h)), 7),
                    k1 = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(cs + 16 * h + 8)), 7);
      _mm256_storeu_si256((__m256i *)(void *)(res[r] + 16 * h), _mm256_add_epi32(c00, k0));
      _mm256_storeu_si256((__m256i *)(void *)(res[r] + 16 * h + 8), _mm256_add_epi32(c01, k1));
      if (r + 1 < m) {
        _mm256_storeu_si256((__m256i *)(void *)(res[r + 1] + 16 * h), _mm256_add_epi32(c10, k0));
        _mm256_storeu_si256((__m256i *)(void *)(res[r + 1] + 16 * h + 8), _mm256_add_epi32(c11, k1));
      }
    }
  }
  for (int r = 0; r < m; r++)
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = (float)(res[r][j] - 128 * cs[j]) * (xs[r] * ws[j]);
#else
  /* portable: the same exact integer sums, no VNNI */
  int32_t res[MR][NR];
  for (int r = 0; r < m; r++) {
    const uint8_t *ar = A + r * lda;
    for (int64_t j = 0; j < NR; j++) res[r][j] = 0;
    for (int64_t p = 0; p < P; p++) {
      const int8_t *b = Bp + p * NR * 4;
      int32_t a0 = ar[4 * p], a1 = ar[4 * p + 1], a2 = ar[4 * p + 2], a3 = ar[4 * p + 3];
      for (int64_t j = 0; j < NR; j++)
        res[r][j] += a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] + a3 * b[4 * j + 3];
    }
  }
  for (int r = 0; r < m; r++)
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = (float)(res[r][j] - 128 * cs[j]) * (xs[r] * ws[j]);
#endif
  (void)pf;
  (void)pfs;
}
static void tile_i8(const uint8_t *A, int64_t lda, int m, const int8_t *Bp, int64_t K, const float *xs,
                    const float *ws, float *C, int64_t ldc, int64_t nb) {
  tile_i8_pf(A, lda, m, Bp, K, xs, ws, C, ldc, nb, NULL, 0);
}
/* The panel the next item reads, fetched into L2 while this item's row blocks run: row block s of ns takes slice s of
 * the pb bytes at nx (NULL: none), at most one line per k step of its P (the call sites ask only for blocks of 5+
 * rows, the 8-row kernel's: I8_PF_BLOCKS; decode's one or two rows stream their panel anyway).  A panel read cold by
 * the first row block alone arrives at the core's memory bandwidth (~10 GB/s here), while its 8 rows consume 16
 * bytes a cycle: the first block of each item stalled (w8a8 prefill at 64 rows an expert: ~25% of the tile's time
 * on this host).  The next item is the one this thread takes next (item + the threads: the pool hands items out in
 * order). */
#define MOEC_I8_NEXT_SLICE 1
#define I8_PF_BLOCKS(n, mr) ((n) / (mr) + ((n) % (mr) > 4)) /* the blocks of n rows (mr each) that take a slice */
static inline const char *i8_next_slice(const int8_t *nx, size_t pb, int64_t s, int64_t ns, int64_t P, int64_t *pfs) {
  if (!nx || ns <= 0 || s >= ns || P <= 0) return NULL;
  size_t o0 = pb * (size_t)s / (size_t)ns, o1 = pb * (size_t)(s + 1) / (size_t)ns;
  int64_t st = (int64_t)((o1 - o0 + (size_t)P - 1) / (size_t)P);
  *pfs = st > 64 ? 64 : st;
  return (const char *)nx + o0;
}
/* The same for weight-only int8 / int4 prefill (f32 rows): slice s of ns of the cached narrow panel `next` of
 * `blocks` (NULL: none, or no cached panels), one line per k step of the row block's K at most.  The first row block
 * of each item read its panel cold (or wq_dequant_panel did), as tile_i8's did. */
static inline const char *wq_next_slice(const wview *v, const uint8_t *cached, int64_t next, int64_t blocks, int64_t s,
                                        int64_t ns, int64_t *pfs) {
  if (!cached || next < 0 || next >= blocks) return NULL;
  const size_t pb = wq_panel_bytes(v);
  return i8_next_slice((const int8_t *)cached + (size_t)next * pb, pb, s, ns, v->K, pfs);
}

/* ---- w4a8: int4 weights x dynamic int8 activations, exact int32 dot products per group ----------
 * A GEMM input row is quantised once per int4 group of G elements (s = max|group| / 127, 1 for a zero
 * group; q = rint(a / s) in [-127, 127], signed), each group padded to G4 (a multiple of 4) with q = 0,
 * and -8 x its code sum sumq kept (w4z).  The weights stay nibbles n in 0..15: vpdpbusd multiplies them as
 * the unsigned operand with the signed codes, so sum_k n q is exact, and the zero point enters once per
 * (row, group) as -z * sumq (z = 8 when symmetric): sum_k (n - z) q = sum n q - z sumq, exactly, in int32
 * (|sum| <= 15 * 127 * G).  Per group the int32 sum is converted and scaled once:
 * acc += float(dot) * (s_w[n, g] * s_a[row, g]).  A column panel (NR = 32 columns) has three parts, each
 * group-major: the nibbles, per group G4 / 4 steps of 64 bytes -- byte 4 c + i of a step holds k = 4 p + i of
 * column c in its low nibble and of column c + 16 in its high nibble (the vpdpbusd layout for two 16-lane
 * halves) --, the 32 column scales per group (f32), and with zero points the 32 z per group (f32).  They are
 * written at compile time (ir/weight_layouts.py w4a8_nibbles / group_major: each the size of the tensor it
 * replaces, so the weights are stored once) and read where they lie by prefill and decode alike; a weight
 * without them (not from the weights file) is packed per work item.  The integer dots: VNNI vpdpbusd, else
 * AVX-512BW or AVX2 vpmaddubsw + vpmaddwd, else plain C (the build host's flags choose). */
#define W4A8_MR 8
static inline int64_t g4_of(int64_t G) { return (G + 3) / 4 * 4; }
/* the high nibbles' dots in place (16 n: tile_w4a8_r, VNNI builds) for groups padded to G4 <= 65536 (the bound:
 * below); elsewhere shifted down (vpmaddubsw's int16 pairs would saturate; AVX2 and plain C read lo only) */
#if defined(__AVX512VNNI__) && defined(__AVX512F__) && defined(__AVX512BW__)
#define W4A8_HI_SHIFT(G4) ((G4) <= 65536 ? 4 : 0)
#else
#define W4A8_HI_SHIFT(G4) 0
#endif
/* per (row, group) of a quantised row (quant_row_g): the symmetric zero point's term, the values the int32 dots
 * start at: lo = -8 sumq (the low nibbles' dots), hi = lo << W4A8_HI_SHIFT (the high nibbles'), formed once per
 * row instead of per tile and column panel (an imul and a shift per row and group in tile_w4a8's group loop,
 * scalar ops that share Ice Lake's ports 0 and 5 with the vector ones: see tile_w4a8_r); with zero points the
 * kernels form -z sumq = z (lo / 8), exactly */
typedef struct { int32_t lo, hi; } w4z;
/* one column panel: nibbles [ng][G4 / 4][64], scales [ng][NR], zero points [ng][NR] (NULL: symmetric, z = 8) */
typedef struct { const uint8_t *nib; const float *sw, *z; } w4p;
static size_t w4a8_nib_bytes(const wview *v) { return (size_t)(v->K / v->G) * (size_t)g4_of(v->G) * 16; }
/* a panel packed at run time: the three parts back to back */
static size_t w4a8_panel_bytes(const wview *v) {
  return w4a8_nib_bytes(v) + (size_t)(v->K / v->G) * NR * sizeof(float) * (v->z ? 2 : 1);
}

/* the panel of columns n0..n0+nb of expert e, into out (w4a8_panel_bytes) */
static w4p pack_w4a8_panel(const wview *v, int64_t e, int64_t n0, int64_t nb, void *out) {
  const int64_t K = v->K, G = v->G, G4 = g4_of(G), ng = K / G;
  const uint8_t *W = (const uint8_t *)v->w;
  uint8_t *nibs = (uint8_t *)out;
  float *sw = (float *)(void *)(nibs + w4a8_nib_bytes(v)), *zs = v->z ? sw + ng * NR : NULL;
  for (int64_t g = 0; g < ng; g++) {
    for (int64_t j = 0; j < NR; j++) sw[g * NR + j] = j < nb ? v->s[(e * v->N + n0 + j) * ng + g] : 0.f;
    if (zs)
      for (int64_t j = 0; j < NR; j++) zs[g * NR + j] = j < nb ? v->z[(e * v->N + n0 + j) * ng + g] : 0.f;
    uint8_t *nib = nibs + g * G4 * 16;
    for (int64_t p = 0; p < G4 / 4; p++)
      for (int c = 0; c < 16; c++)
        for (int i = 0; i < 4; i++) {
          int64_t k = 4 * p + i, kk = g * G + k;
          uint8_t lo = 0, hi = 0;
          if (k < G && c < nb) lo = (W[(e * v->N + n0 + c) * (K / 2) + kk / 2] >> (4 * (kk & 1))) & 15;
          if (k < G && c + 16 < nb) hi = (W[(e * v->N + n0 + c + 16) * (K / 2) + kk / 2] >> (4 * (kk & 1))) & 15;
          nib[p * 64 + 4 * c + i] = (uint8_t)(lo | (hi << 4));
        }
  }
  return (w4p){nibs, sw, zs};
}

/* the compile-time panels of every expert (moec_wq.pk_* / pks_* / pkz_*: nibbles [E, nblk, ng, G4 / 4, 64] u8,
 * scales and zero points [E, nblk, ng, NR] f32), checked against the weight; NULL without them (*bad set when
 * they do not match) */
typedef struct { const uint8_t *nib; const float *sw, *z; } w4src;
static const w4src *w4a8_compiled(const moec_tensor *pk, const moec_tensor *ps, const moec_tensor *pz, const wview *v,
                                  int64_t E, w4src *out, int *bad) {
  if (!pk && !ps && !pz) return NULL;
  const int64_t nblk = (v->N + NR - 1) / NR, ng = v->K / v->G;
  int ok = pk && ps && (!v->z) == (!pz) && NR == MOEC_W4A8_NR && pk->dtype == MOEC_U8 && pk->rank == 5 &&
           pk->shape[0] == E && pk->shape[1] == nblk && pk->shape[2] == ng && pk->shape[3] == g4_of(v->G) / 4 &&
           pk->shape[4] == 64;
  for (int t = 0; ok && t < 2; t++) {
    const moec_tensor *q = t ? pz : ps;
    if (q)
      ok = q->dtype == MOEC_F32 && q->rank == 4 && q->shape[0] == E && q->shape[1] == nblk && q->shape[2] == ng &&
           q->shape[3] == NR;
  }
  if (!ok) {
    *bad = 1;
    return NULL;
  }
  *out = (w4src){(const uint8_t *)pk->data, (const float *)ps->data, pz ? (const float *)pz->data : NULL};
  return out;
}

/* column panel cb of expert e: the compile-time one where src has it, else packed into buf */
static w4p w4a8_panel(const wview *v, const w4src *src, int64_t e, int64_t nblk, int64_t cb, int64_t c0, int64_t nb,
                      void *buf) {
  if (!src) return pack_w4a8_panel(v, e, c0, nb, buf);
  const size_t i = (size_t)(e * nblk + cb), ng = (size_t)(v->K / v->G);
  return (w4p){src->nib + i * w4a8_nib_bytes(v), src->sw + i * ng * NR, src->z ? src->z + i * ng * NR : NULL};
}

/* q[ng * G4] signed codes, s[ng] scales, sq[ng] the dots' starting values (w4z: -8 x the code sums) of a[0..K) in
 * groups of G */
static void quant_row_g(const float *a, int64_t K, int64_t G, int8_t *q, float *s, w4z *sq) {
  const int64_t G4 = g4_of(G);
  const int sh = W4A8_HI_SHIFT(G4);
  for (int64_t g = 0; g * G < K; g++) {
    const float *x = a + g * G;
    int8_t *o = q + g * G4;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    { /* 16 lanes at a time (masked tails): the same f32 max, division, round-half-even and clip */
      __m512 mx = _mm512_setzero_ps();
      __mmask16 nan = 0;
      for (int64_t k = 0; k < G; k += 16) {
        __mmask16 mk = G - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (G - k)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(mk, x + k);
        nan |= _mm512_cmp_ps_mask(xv, xv, _CMP_UNORD_Q);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(xv));
      }
      float amax = _mm512_reduce_max_ps(mx);
      float sc = scale_127(amax, nan != 0);
      const __m512 scv = _mm512_set1_ps(sc), hi = _mm512_set1_ps(127.f), lo = _mm512_set1_ps(-127.f);
      __m512i sum = _mm512_setzero_si512();
      for (int64_t k = 0; k < G; k += 16) {
        __mmask16 mk = G - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (G - k)) - 1);
        __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(mk, x + k), scv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i qi = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
        sum = _mm512_add_epi32(sum, qi);
        _mm_mask_storeu_epi8(o + k, mk, _mm512_cvtepi32_epi8(qi));
      }
      for (int64_t k = G; k < G4; k++) o[k] = 0;
      s[g] = sc;
      const int32_t t = _mm512_reduce_add_epi32(sum);
      sq[g] = (w4z){-8 * t, -(8 << sh) * t};
      continue;
    }
#endif
    float sc = span_scale_127(x, G);
    int32_t sum = 0;
    for (int64_t k = 0; k < G; k++) {
      float r = rintf(x[k] / sc);
      r = r > 127.f ? 127.f : (r < -127.f ? -127.f : (r == r ? r : 0.f));
      o[k] = (int8_t)r;
      sum += (int32_t)r;
    }
    for (int64_t k = G; k < G4; k++) o[k] = 0;
    s[g] = sc;
    sq[g] = (w4z){-8 * sum, -(8 << sh) * sum};
  }
}

#ifdef __AVX512VNNI__
#define W4A8_DOT(d, b, a) (d) = _mm512_dpbusd_epi32((d), (b), (a))
#else /* AVX-512BW: u8 x s8 pairs to int16 (|2 * 15 * 127| fits), then pairs of those to int32 */
#define W4A8_DOT(d, b, a) (d) = _mm512_add_epi32((d), _mm512_madd_epi16(_mm512_maddubs_epi16((b), (a)), _mm512_set1_epi16(1)))
#endif
/* P steps of four reduction indices of one group: the nibbles of 32 columns, MR rows' four codes each.  HI: the
 * high nibbles are kept in place (raw & 0xF0, 16 n: one vpand per 64 bytes instead of a shift and a mask), so
 * their dots are 16 x the sums, exactly (VNNI only: vpmaddubsw's int16 pairs would saturate) */
#ifndef W4A8_PF
#define W4A8_PF 1024 /* bytes ahead in the nibbles, for 3+ rows (a panel over K ~ 2000 is read from L2 per row tile) */
#endif
#define W4A8_STEPS(PP, HI)                                                                                  \
  {                                                                                                         \
    _Pragma("GCC unroll 16") for (int64_t p = 0; p < (PP); p++) {                                           \
      if (W4A8_PF && R > 2) _mm_prefetch((const char *)nib + p * 64 + W4A8_PF, _MM_HINT_T0);                \
      __m512i raw = _mm512_loadu_si512(nib + p * 64);                                                       \
      __m512i b0 = _mm512_and_si512(raw, lo4),                                                              \
              b1 = (HI) ? _mm512_andnot_si512(lo4, raw) : _mm512_and_si512(_mm512_srli_epi16(raw, 4), lo4); \
      _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) { /* (R: a[R..] are unset) */                    \
        int32_t four;                                                                                       \
        __builtin_memcpy(&four, a[r] + g * G4 + 4 * p, 4);                                                  \
        __m512i av = _mm512_set1_epi32(four);                                                               \
        W4A8_DOT(dot[r][0], b0, av);                                                                        \
        W4A8_DOT(dot[r][1], b1, av);                                                                        \
      }                                                                                                     \
    }                                                                                                       \
  }
#if !(defined(__AVX512F__) && defined(__AVX512BW__)) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* AVX2 (no AVX-512): vpmaddubsw (u8 nibbles x s8 codes -> int16 pairs, |2 * 15 * 127| fits) then vpmaddwd
 * with ones -> int32, 8 columns per register: a 64-byte step is two loads, columns 0..7 / 8..15 in their
 * low nibbles and 16..23 / 24..31 in their high ones.  R <= 2 rows (16 ymm registers); the f32
 * accumulators live in memory (touched once per group). */
static inline __attribute__((always_inline)) void tile_w4a8_avx2(const wview *v, const int8_t *A, int64_t lda,
                                                                 const float *as, const w4z *aqs,
                                                                 const w4p *panel, float *acc, const int R) {
  const int64_t G4 = g4_of(v->G), ng = v->K / v->G, P = G4 / 4;
  const int zp = v->z != NULL;
  const __m256i lo4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < ng; g++) {
    const uint8_t *nib = panel->nib + g * G4 * 16;
    const float *pg = panel->sw + g * NR, *zg = zp ? panel->z + g * NR : NULL;
    __m256i d[2][4];
    for (int r = 0; r < R; r++) d[r][0] = d[r][1] = d[r][2] = d[r][3] = _mm256_setzero_si256();
    for (int64_t p = 0; p < P; p++) {
      __m256i y0 = _mm256_loadu_si256((const __m256i *)(nib + p * 64)), y1 = _mm256_loadu_si256((const __m256i *)(nib + p * 64 + 32));
      __m256i b[4] = {_mm256_and_si256(y0, lo4), _mm256_and_si256(y1, lo4), _mm256_and_si256(_mm256_srli_epi16(y0, 4), lo4),
                      _mm256_and_si256(_mm256_srli_epi16(y1, 4), lo4)};
      for (int r = 0; r < R; r++) {
        int32_t four;
        __builtin_memcpy(&four, A + r * lda + g * G4 + 4 * p, 4);
        __m256i av = _mm256_set1_epi32(four);
        for (int q = 0; q < 4; q++) d[r][q] = _mm256_add_epi32(d[r][q], _mm256_madd_epi16(_mm256_maddubs_epi16(b[q], av), ones));
      }
    }
    for (int r = 0; r < R; r++) {
      const int32_t z8 = aqs[r * ng + g].lo; /* -8 sumq */
      const __m256 sa = _mm256_set1_ps(as[r * ng + g]);
      for (int q = 0; q < 4; q++) {
        __m256i c = zp ? _mm256_mullo_epi32(_mm256_cvtps_epi32(_mm256_loadu_ps(zg + 8 * q)), _mm256_set1_epi32(z8 / 8))
                       : _mm256_set1_epi32(z8);
        __m256 sw = _mm256_loadu_ps(pg + 8 * q);
        __m256 a = _mm256_loadu_ps(acc + r * NR + 8 * q);
        _mm256_storeu_ps(acc + r * NR + 8 * q,
                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(d[r][q], c)), _mm256_mul_ps(sw, sa), a));
      }
    }
  }
}
#define W4A8_AVX2 1
#endif

/* C[r][0..nb) = sum_g float(sum_k (n - z) q) * s_w[g][j] * s_a[r][g] for r < m (m <= W4A8_MR).  A: row r's
 * codes at A + r * lda (ng * G4 bytes), its scales as + r * ng, the dots' starting values aqs + r * ng (w4z). */
#if defined(__AVX512F__) && defined(__AVX512BW__)
/* The vector ops of tile_w4a8_r per group of 32 (8 steps) on 8 rows, beside its 128 vpdpbusd: the nibble split 16
 * (one vpand / vpandn per 64 weights), the dots' starting values 16 (vpbroadcastd from general registers), the
 * scaling 48 (per row and 16 columns a cvt, the scale product and the FMA): 208 on Ice Lake's two 512-bit ports,
 * a 62% ceiling of the pure vpdpbusd loop.  Measured on this Ice Lake (one core, fractions of the pure loop): that
 * mix written out in assembly (operands in L1) 0.62-0.64, with no starting values at all 0.64; tile_w4a8 over
 * [64,1024]x[1024,1024] 0.51-0.53 before this version, 0.55-0.57 now (L1-resident panels: 362-366 -> 396-398
 * GOP/s); an assembly version of the whole group loop 0.50.  A signed-nibble layout (weights n - 8 as s8: the
 * high nibble in place as 16 (n ^ 8), the low one by vpermb or shift + mask; biased u8 activations; the bias
 * 128 sum(n - 8) per column and group) was weighed and not taken: its split is as many ops or more, its bias
 * term is 25% more panel bytes (which decode streams) or 2 more vpdpbusd a step, and all it could remove is the
 * starting values' 16 ops (~3% in the assembly mix); the scaling, which no nibble layout changes, is what holds
 * the tile near 60% at group 32.  Memory-operand broadcasts of the starting values measured slower (0.57 in the
 * assembly mix), embedded {1to16} broadcasts in vpdpbusd slower still (0.5-0.58); general-register broadcasts of
 * values quant_row_g precomputed (w4z: no imul / shl per row and group, scalar ops that share ports 0 and 5) and
 * one group loop per variant (below) measured best.  The scaling's 3 ops per row and 16 columns (cvt, s_w s_a, FMA)
 * are the format's: the activations' scale is per row and group (quant_row_g; llama.cpp's q8_0 blocks are the same
 * kind), so it cannot be applied once per row after the group sums (acc += cvt(dot) s_w[g], C = s_a acc: 2 ops, a
 * 67% ceiling instead of 62%) -- that needs one activation scale per row, a coarser format (ir/ops/moe.py
 * quantize_rows_int8's group), not another summation order of this one. */
/* groups 0 .. ng of one tile (R rows; PP steps a group, or 0: G4 / 4 at run time; ZP: zero points), into acc: one
 * instantiation per variant, each its own loop, so GCC allocates each group loop's registers on its own */
static inline __attribute__((always_inline)) void w4a8_groups(const int8_t *const *a, const w4p *panel, int64_t ng,
                                                              int64_t G4, int sh,
                                                              const float *const *sat, const w4z *const *zt,
                                                              float (*acc)[NR], const int R, const int PP,
                                                              const int ZP) {
  const int64_t P = PP ? PP : G4 / 4;
  const int hi = sh != 0;
  const __m512i lo4 = _mm512_set1_epi8(15);
  /* the high half's dots are 2^sh x the sums: its scales 2^-sh x (exact, powers of two: the same products
   * unless s_w s_a falls below 2^-122, into the subnormals) */
  const __m512 s1f = _mm512_set1_ps(hi ? 0.0625f : 1.f);
  for (int64_t g = 0; g < ng; g++) {
    const uint8_t *nib = panel->nib + g * G4 * 16;
    const float *pg = panel->sw + g * NR;
    __m512i dot[W4A8_MR][2];
    if (!ZP) { /* symmetric: the dots start at the zero point's term (quant_row_g's -8 sumq, 16 x that in place;
                * volatile: read into a general register and broadcast from there, as measured above) */
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        dot[r][0] = _mm512_set1_epi32(*(volatile const int32_t *)&zt[r][g].lo);
        dot[r][1] = _mm512_set1_epi32(*(volatile const int32_t *)&zt[r][g].hi);
      }
    } else { /* -z sumq = z (-8 sumq) / 8, exact */
      const __m512i z0 = _mm512_cvtps_epi32(_mm512_loadu_ps(panel->z + g * NR)),
                    z1 = _mm512_slli_epi32(_mm512_cvtps_epi32(_mm512_loadu_ps(panel->z + g * NR + 16)), sh);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const __m512i q = _mm512_srai_epi32(_mm512_set1_epi32(zt[r][g].lo), 3);
        dot[r][0] = _mm512_mullo_epi32(z0, q);
        dot[r][1] = _mm512_mullo_epi32(z1, q);
      }
    }
    if (PP) W4A8_STEPS(PP, 1)
    else if (hi) W4A8_STEPS(P, 1)
    else W4A8_STEPS(P, 0)
    const __m512 s0 = _mm512_loadu_ps(pg), s1 = _mm512_mul_ps(_mm512_loadu_ps(pg + 16), s1f);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      __m512 sv = _mm512_set1_ps(sat[r][g]);
      _mm512_store_ps(acc[r], _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][0]), _mm512_mul_ps(s0, sv), _mm512_load_ps(acc[r])));
      _mm512_store_ps(acc[r] + 16,
                      _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][1]), _mm512_mul_ps(s1, sv), _mm512_load_ps(acc[r] + 16)));
    }
  }
}

static inline __attribute__((always_inline)) void tile_w4a8_r(const wview *v, const int8_t *A, int64_t lda,
                                                              const float *as, const w4z *aqs, int m,
                                                              const w4p *panel, float *C, int64_t ldc,
                                                              int64_t nb, const int R) {
  const int64_t G4 = g4_of(v->G), ng = v->K / v->G, P = G4 / 4;
  const int zp = v->z != NULL;
  /* the f32 accumulators live in L1 (touched once per group): the 2R int32 dot registers, the nibble
   * registers and the broadcast codes then fit the 32 zmm registers without GCC copying or spilling the
   * dots inside the steps (2R more f32 registers did not fit at R = 8) */
  float acc[W4A8_MR][NR] __attribute__((aligned(64)));
  const float *sat[W4A8_MR];
  const w4z *zt[W4A8_MR];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    _mm512_store_ps(acc[r], _mm512_setzero_ps());
    _mm512_store_ps(acc[r] + 16, _mm512_setzero_ps());
  }
  const int8_t *a[W4A8_MR];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    a[r] = A + (r < m ? r : 0) * lda;
    sat[r] = as + (r < m ? r : 0) * ng;
    zt[r] = aqs + (r < m ? r : 0) * ng;
  }
  /* the high nibbles in place (W4A8_STEPS; W4A8_HI_SHIFT): every partial sum of 16 n q (0..15 x -127..127, from 0
   * or from the symmetric start -128 sumq) and the final 16 sum (n - z) q lie within 16 * 15 * 127 * G4, int32 up
   * to G4 = 70000 (larger groups: shifted nibbles, the plain dots) */
  const int sh = W4A8_HI_SHIFT(G4);
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) /* (the output lines, as tile_i8_mx) */
    if (r < m) {
      __builtin_prefetch(C + r * ldc, 1, 3);
      __builtin_prefetch(C + r * ldc + 16, 1, 3);
    }
  /* (the common groups, 32 and 64, with a constant trip count: fully unrolled, GCC then keeps the
   * accumulators in place instead of copying them around the loop's back edge) */
  if (sh && P == 8 && !zp) w4a8_groups(a, panel, ng, G4, sh, sat, zt, acc, R, 8, 0);
  else if (sh && P == 16 && !zp) w4a8_groups(a, panel, ng, G4, sh, sat, zt, acc, R, 16, 0);
  else if (sh && P == 8) w4a8_groups(a, panel, ng, G4, sh, sat, zt, acc, R, 8, 1);
  else if (sh && P == 16) w4a8_groups(a, panel, ng, G4, sh, sat, zt, acc, R, 16, 1);
  else if (!zp) w4a8_groups(a, panel, ng, G4, sh, sat, zt, acc, R, 0, 0);
  else w4a8_groups(a, panel, ng, G4, sh, sat, zt, acc, R, 0, 1);
  /* (masked stores: the scalar copy loop became a memmove call, 3% of a w4a8 prefill profile) */
  const __mmask16 k0 = nb >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nb) - 1),
                  k1 = nb >= 32 ? (__mmask16)0xFFFF : nb <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nb - 16)) - 1);
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
    if (r < m) {
      _mm512_mask_storeu_ps(C + r * ldc, k0, _mm512_load_ps(acc[r]));
      _mm512_mask_storeu_ps(C + r * ldc + 16, k1, _mm512_load_ps(acc[r] + 16));
    }
}
#endif

static void tile_w4a8(const wview *v, const int8_t *A, int64_t lda, const float *as, const w4z *aqs, int m,
                      const w4p *panel, float *C, int64_t ldc, int64_t nb) {
  const int64_t G4 = g4_of(v->G), ng = v->K / v->G, P = G4 / 4;
  const int zp = v->z != NULL;
#if defined(__AVX512F__) && defined(__AVX512BW__)
  (void)G4; (void)ng; (void)P; (void)zp;
  /* 5 and 6 rows as 4 + 1 and 4 + 2 (the panel read again from L1): the 8-row tile would do 3 or 2 rows' dots for
   * nothing; per row and group of 32, in vector ops, 8 rows cost ~26, 4 ~28, 2 ~32, 1 ~40 (the split is shared by
   * the tile's rows), so 4 + 1 is 152 against 208 and 4 + 2 176 */
  if (m == 5 || m == 6) {
    tile_w4a8_r(v, A, lda, as, aqs, 4, panel, C, ldc, nb, 4);
    if (m == 5) tile_w4a8_r(v, A + 4 * lda, lda, as + 4 * ng, aqs + 4 * ng, 1, panel, C + 4 * ldc, ldc, nb, 1);
    else tile_w4a8_r(v, A + 4 * lda, lda, as + 4 * ng, aqs + 4 * ng, 2, panel, C + 4 * ldc, ldc, nb, 2);
  } else if (m > 4) tile_w4a8_r(v, A, lda, as, aqs, m, panel, C, ldc, nb, W4A8_MR);
  else if (m > 2) tile_w4a8_r(v, A, lda, as, aqs, m, panel, C, ldc, nb, 4);
  else if (m == 2) tile_w4a8_r(v, A, lda, as, aqs, m, panel, C, ldc, nb, 2);
  else tile_w4a8_r(v, A, lda, as, aqs, m, panel, C, ldc, nb, 1);
#elif defined(W4A8_AVX2)
  (void)G4; (void)ng; (void)P; (void)zp;
  for (int r = 0; r < m; r += 2) {
    float acc[2 * NR] = {0};
    const int64_t ngr = v->K / v->G;
    if (m - r >= 2) tile_w4a8_avx2(v, A + r * lda, lda, as + r * ngr, aqs + r * ngr, panel, acc, 2);
    else tile_w4a8_avx2(v, A + r * lda, lda, as + r * ngr, aqs + r * ngr, panel, acc, 1);
    for (int q = 0; q < 2 && r + q < m; q++)
      for (int64_t j = 0; j < nb; j++) C[(r + q) * ldc + j] = acc[q * NR + j];
  }
#else
  /* portable: the same exact integer sums per group, then the same f32 scaling */
  for (int r = 0; r < m; r++) {
    float acc[NR];
    for (int j = 0; j < NR; j++) acc[j] = 0.f;
    for (int64_t g = 0; g < ng; g++) {
      const uint8_t *nib = panel->nib + g * G4 * 16;
      const int8_t *ar = A + r * lda + g * G4;
      const float *zq = zp ? panel->z + g * NR : NULL, *sw = panel->sw + g * NR;
      const int32_t z8 = aqs[r * ng + g].lo; /* -8 sumq */
      float sa = as[r * ng + g];
      int32_t dot[NR];
      for (int j = 0; j < NR; j++) dot[j] = zq ? (int32_t)zq[j] * (z8 / 8) : z8;
      for (int64_t p = 0; p < P; p++) {
        const uint8_t *b = nib + p * 64;
        for (int c = 0; c < 16; c++) {
          int32_t l = 0, h = 0;
          for (int i = 0; i < 4; i++) {
            l += (int32_t)(b[4 * c + i] & 15) * ar[4 * p + i];
            h += (int32_t)(b[4 * c + i] >> 4) * ar[4 * p + i];
          }
          dot[c] += l;
          dot[c + 16] += h;
        }
      }
      for (int j = 0; j < NR; j++) acc[j] += (float)dot[j] * (sw[j] * sa);
    }
    for (int64_t j = 0; j < nb; j++) C[r * ldc + j] = acc[j];
  }
#endif
}

/* The decode GEMVs stream each weight row once, four rows side by side.  Their rows are short (K or K/2
 * bytes), so the hardware prefetchers barely ramp up within one, and a prefetch into L1 (prefetcht0)
 * holds one of the core's few L1 miss buffers for the whole DRAM latency: with it the int8 loop read
 * 10.7 GB/s from DRAM, about a third of its in-cache rate.  Prefetched into L2 (prefetcht1, locality 2)
 * GEMV_PF_BYTES ahead in the stream (whole four-row blocks further on), the L1 misses hit L2: 28 GB/s
 * a core ([1,1024] x [2816,1024] int8, 1 thread, weights rotated over 256 MB; int4 g32: 13.5 -> 14.0, compute-bound). */
#ifndef GEMV_PF_BYTES
#define GEMV_PF_BYTES 8192
#endif
static inline int64_t gemv_pf_dist(int64_t row_bytes) { return (GEMV_PF_BYTES / (4 * row_bytes) + 1) * 4 * row_bytes; }

/* int8 rows (bf16 weights never come here: they always run tile_bf16 on pair panels, compile-time or
 * packed per work item): out[r * ldo + c] = sum_k w[row c][k] * X[r][k] * the row's scale, four weight
 * rows at a time with independent accumulators; at two X rows (GEMV_ROWS) each widened weight vector
 * serves both rows (the widening, not the FMA, is what limits these loops: vpmovsxbd / vcvtdq2ps per
 * 16 weights), so the second row costs one FMA per 16 weights instead of a second pass. */
static inline __attribute__((always_inline)) void gemv_w8_blk(const wview *v, int64_t r0, int rows, const float *X,
                                                              int64_t ldx, const int n, float *out, int64_t ldo) {
  const int64_t K = v->K;
  const float *x0 = X, *x1 = n > 1 ? X + ldx : X;
  v16f a[2][4];
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 4; i++) a[r][i] = (v16f){0};
  int64_t k = 0;
  /* rows are short (K narrow values) and four advance together: the rows a few blocks on are
   * prefetched into L2 (above) */
  const int8_t *w[4];
  w[0] = (const int8_t *)v->w + r0 * K;
  for (int i = 1; i < 4; i++) w[i] = rows > i ? w[0] + i * K : w[0];
  const int64_t pfd = gemv_pf_dist(K);
  for (; k + 64 <= K; k += 64) {
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) __builtin_prefetch(w[i] + k + pfd, 0, 2);
#pragma GCC unroll 4
    for (int u = 0; u < 64; u += 16) {
      v16f xv = ld16f(x0 + k + u), xw = n > 1 ? ld16f(x1 + k + u) : xv;
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        v16f wv = ld16_i8(w[i] + k + u);
        a[0][i] += wv * xv;
        if (n > 1) a[1][i] += wv * xw;
      }
    }
  }
  for (; k + 16 <= K; k += 16) {
    v16f xv = ld16f(x0 + k), xw = n > 1 ? ld16f(x1 + k) : xv;
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      v16f wv = ld16_i8(w[i] + k);
      a[0][i] += wv * xv;
      if (n > 1) a[1][i] += wv * xw;
    }
  }
  for (int r = 0; r < n; r++) {
    const float *x = r ? x1 : x0;
    for (int i = 0; i < rows; i++) {
      float t = hsum16(a[r][i]);
      for (int64_t kk = k; kk < K; kk++) t += (float)((const int8_t *)v->w)[(r0 + i) * K + kk] * x[kk];
      out[r * ldo + i] = t * v->s[r0 + i];
    }
  }
}

static void gemv_w8(const wview *v, int64_t e, int64_t c0, int64_t nb, const float *X, int64_t ldx, int64_t n,
                    float *out, int64_t ldo) {
  for (int64_t c = 0; c < nb; c += 4) {
    int rows = nb - c < 4 ? (int)(nb - c) : 4;
    int64_t r0 = e * v->N + c0 + c;
    for (int64_t r = 0; r < n; r += 2) {
      if (n - r >= 2) gemv_w8_blk(v, r0, rows, X + r * ldx, ldx, 2, out + r * ldo + c, ldo);
      else gemv_w8_blk(v, r0, rows, X + r * ldx, ldx, 1, out + r * ldo + c, ldo);
    }
  }
}

/* int4 rows.  Per group, full 32-element chunks are widened 16 low nibbles (even k) and 16 high
 * nibbles (odd k) at a time against x rearranged to match (xr: per chunk x[even] then x[odd]);
 * the group's partial sums are scaled in the vector accumulators and the zero point enters once per
 * group as s * z * sum(x over the group) (xs).  Chunk tails run scalar. */
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define W4_TABLE_GEMV 1 /* gemv_w4 below dequantises through a per-group table: no group sums needed */
#endif
/* x prepared for int4 rows: xr per group's full 32-chunks as x[even] then x[odd] (tails natural),
 * xs[g] = sum of x over group g (only the portable gemv_w4 uses them).  Done once per row (gather /
 * activation), not per work item. */
#ifdef W4_TABLE_GEMV
/* the 64-byte int4 rows (gemv_w4_wide): K whole 128-weight blocks and groups of 32, 64 or a multiple
 * of 128 */
static inline int w4_wide(int64_t K, int64_t G) { return K % 128 == 0 && (G == 32 || G == 64 || G % 128 == 0); }
#else
static inline int w4_wide(int64_t K, int64_t G) { (void)K; (void)G; return 0; }
#endif
static void prep_x4(const float *x, int64_t K, int64_t G, float *xr, float *xs) {
  int64_t full = G / 32 * 32;
  if (w4_wide(K, G)) { /* per 128-block: xr[16 j + l] = x[8 l + j] (lane l's dword, nibble j) */
    for (int64_t b = 0; b < K; b += 128)
      for (int jn = 0; jn < 8; jn++)
        for (int l = 0; l < 16; l++) xr[b + 16 * jn + l] = x[b + 8 * l + jn];
    (void)xs;
    return;
  }
  for (int64_t b = 0; b < K; b += G) {
    int64_t k = b;
    for (; k < b + full; k += 32)
      for (int i = 0; i < 16; i++) { xr[k + i] = x[k + 2 * i]; xr[k + 16 + i] = x[k + 2 * i + 1]; }
    for (; k < b + G; k++) xr[k] = x[k];
#ifdef W4_TABLE_GEMV
    (void)xs;
#else
    v16f acc = (v16f){0};
    float sum = 0;
    for (k = b; k + 16 <= b + G; k += 16) acc += ld16f(x + k);
    for (; k < b + G; k++) sum += x[k];
    xs[b / G] = sum + hsum16(acc);
#endif
  }
}

#ifdef W4_TABLE_GEMV
/* AVX-512: per (row, group) a 16-entry table holds the dequantised values (n - zp) * s of the 16
 * codes (the reference's rounding exactly); vpermps looks codes up by the low 4 bits of each dword,
 * so one byte widening serves both nibbles (low: as is, high: >> 4) and neither a mask, an int->float
 * conversion nor a per-group rescale is needed: 6 instructions per 32 weights and row instead of 9.
 * The lookups (the shuffles, which limit this loop) are shared by two X rows at GEMV_ROWS: the
 * second row adds two FMAs per 32 weights. */
static inline __attribute__((always_inline)) void gemv_w4_blk(const wview *v, const int64_t *rr, int rows,
                                                              const float *X, const float *xr, int64_t ldx,
                                                              const int n, float *out, int64_t ldo) {
  const int64_t K = v->K, G = v->G, ng = K / G, full = G / 32 * 32;
  const uint8_t *W = (const uint8_t *)v->w;
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const uint8_t *w[4];
  const float *sp[4], *zq[4];
  for (int i = 0; i < 4; i++) {
    w[i] = W + rr[i] * (K / 2);
    sp[i] = v->s + rr[i] * ng;
    zq[i] = v->z ? v->z + rr[i] * ng : NULL;
  }
  const int64_t pfd = gemv_pf_dist(K / 2);
  __m512 lo[2][4], hi[2][4];
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < 4; i++) lo[r][i] = hi[r][i] = _mm512_setzero_ps();
  float tail[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  const float *xq0 = xr, *xq1 = n > 1 ? xr + ldx : xr;
  for (int64_t g = 0; g < ng; g++) {
    __m512 tab[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
      tab[i] = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(zq[i] ? zq[i][g] : 8.0f)), _mm512_set1_ps(sp[i][g]));
    int64_t b = g * G, k = b;
    for (; k < b + full; k += 32) {
      if (!(k & 127)) { /* one 64-byte line per row: prefetch a later block's line into L2 */
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) __builtin_prefetch(w[i] + k / 2 + pfd, 0, 2);
      }
      __m512 xl = _mm512_loadu_ps(xq0 + k), xh = _mm512_loadu_ps(xq0 + k + 16);
      __m512 yl = n > 1 ? _mm512_loadu_ps(xq1 + k) : xl, yh = n > 1 ? _mm512_loadu_ps(xq1 + k + 16) : xh;
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w[i] + k / 2)));
        __m512 ql = _mm512_permutexvar_ps(z, tab[i]), qh = _mm512_permutexvar_ps(_mm512_srli_epi32(z, 4), tab[i]);
        lo[0][i] = _mm512_fmadd_ps(ql, xl, lo[0][i]);
        hi[0][i] = _mm512_fmadd_ps(qh, xh, hi[0][i]);
        if (n > 1) {
          lo[1][i] = _mm512_fmadd_ps(ql, yl, lo[1][i]);
          hi[1][i] = _mm512_fmadd_ps(qh, yh, hi[1][i]);
        }
      }
    }
    for (int i = 0; i < 4 && k < b + G; i++) {
      float sc = sp[i][g], zp = zq[i] ? zq[i][g] : 8.0f;
      for (int64_t kk = k; kk < b + G; kk += 2) {
        uint8_t by = w[i][kk / 2];
        float d0 = ((float)(by & 15) - zp) * sc, d1 = ((float)(by >> 4) - zp) * sc;
        for (int r = 0; r < n; r++) tail[r][i] += d0 * X[r * ldx + kk] + d1 * X[r * ldx + kk + 1];
      }
    }
  }
  for (int r = 0; r < n; r++)
    for (int i = 0; i < rows; i++)
      out[r * ldo + i] = _mm512_reduce_add_ps(_mm512_add_ps(lo[r][i], hi[r][i])) + tail[r][i];
}

/* AVX-512, w4_wide: each row's 128-weight block is one 64-byte load; lane l's dword holds weights
 * 8l..8l+7 (byte b: 2b low nibble, 2b+1 high), so nibble j of every lane is one shift (vpsrld, no
 * widening shuffle) and the vpermps lookup (which reads the low 4 bits) against x prepared to match
 * (prep_x4: xr[16 j + l] = x[8 l + j]).  Groups of a multiple of 128: the table (n - zp) * s per
 * (row, group) as above.  Groups of 32 / 64 (4 / 2 groups per block, a lane's 8 weights in one):
 * the table n - 8 (exact), per block and row sum x (n - 8) per lane, the zero point as (8 - z) *
 * sum x per lane, then times the lane's group scale: the scale and zero point leave the inner loop. */
static inline __attribute__((always_inline)) void gemv_w4_wide(const wview *v, const int64_t *rr, int rows,
                                                               const float *xr, int64_t ldx, const int n, float *out,
                                                               int64_t ldo) {
  const int64_t K = v->K, G = v->G, ng = K / G;
  const uint8_t *W = (const uint8_t *)v->w;
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 iota8 = _mm512_sub_ps(iota, _mm512_set1_ps(8.0f));
  const int small = G < 128, gpb = small ? (int)(128 / G) : 1; /* groups per block */
  /* lane l's group within the block: l / (16 / gpb) */
  const __m512i gidx = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         G == 32 ? 2 : 3);
  const __mmask16 gm = (__mmask16)((1u << gpb) - 1);
  const uint8_t *w[4];
  const float *sp[4], *zq[4];
  for (int i = 0; i < 4; i++) {
    w[i] = W + rr[i] * (K / 2);
    sp[i] = v->s + rr[i] * ng;
    zq[i] = v->z ? v->z + rr[i] * ng : NULL;
  }
  const float *x0 = xr, *x1 = n > 1 ? xr + ldx : xr;
  /* (small separate arrays: GCC keeps them in registers, one [2][4][2] array it spilled) */
  __m512 a0[4], a1[4], b0[4], b1[4]; /* X row 0 / 1, two chains each */
  for (int i = 0; i < 4; i++) a0[i] = a1[i] = b0[i] = b1[i] = _mm512_setzero_ps();
  __m512 tab[4];
  for (int i = 0; i < 4; i++) tab[i] = iota8;
  const int64_t pfd = gemv_pf_dist(K / 2);
  for (int64_t k = 0; k < K; k += 128) {
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) __builtin_prefetch(w[i] + k / 2 + pfd, 0, 2); /* a later block's line, into L2 */
    if (!small) {
      if (k % G == 0) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
          tab[i] = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(zq[i] ? zq[i][k / G] : 8.0f)),
                                 _mm512_set1_ps(sp[i][k / G]));
      }
      /* nibble position outer, rows inner: each x vector is live for four lookups only */
      __m512i d[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) d[i] = _mm512_loadu_si512((const void *)(w[i] + k / 2));
#pragma GCC unroll 8
      for (int jn = 0; jn < 8; jn++) {
        const __m512 xa = _mm512_loadu_ps(x0 + k + 16 * jn), xb = n > 1 ? _mm512_loadu_ps(x1 + k + 16 * jn) : xa;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
          const __m512 q = _mm512_permutexvar_ps(jn ? _mm512_srli_epi32(d[i], 4 * jn) : d[i], tab[i]);
          if (jn & 1) a1[i] = _mm512_fmadd_ps(q, xa, a1[i]);
          else a0[i] = _mm512_fmadd_ps(q, xa, a0[i]);
          if (n > 1) {
            if (jn & 1) b1[i] = _mm512_fmadd_ps(q, xb, b1[i]);
            else b0[i] = _mm512_fmadd_ps(q, xb, b0[i]);
          }
        }
      }
    } else {
      __m512 xsum[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      if (v->z) /* per lane sum of x over its 8 weights (shared by the four rows) */
        for (int r = 0; r < n; r++) {
          const float *xx = r ? x1 : x0;
          __m512 t0 = _mm512_add_ps(_mm512_loadu_ps(xx + k), _mm512_loadu_ps(xx + k + 16));
          __m512 t1 = _mm512_add_ps(_mm512_loadu_ps(xx + k + 32), _mm512_loadu_ps(xx + k + 48));
          __m512 t2 = _mm512_add_ps(_mm512_loadu_ps(xx + k + 64), _mm512_loadu_ps(xx + k + 80));
          __m512 t3 = _mm512_add_ps(_mm512_loadu_ps(xx + k + 96), _mm512_loadu_ps(xx + k + 112));
          xsum[r] = _mm512_add_ps(_mm512_add_ps(t0, t1), _mm512_add_ps(t2, t3));
        }
      __m512i d[4];
      __m512 p0[4], p1[4], q0[4], q1[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        d[i] = _mm512_loadu_si512((const void *)(w[i] + k / 2));
        p0[i] = p1[i] = q0[i] = q1[i] = _mm512_setzero_ps();
      }
#pragma GCC unroll 8
      for (int jn = 0; jn < 8; jn++) {
        const __m512 xa = _mm512_loadu_ps(x0 + k + 16 * jn), xb = n > 1 ? _mm512_loadu_ps(x1 + k + 16 * jn) : xa;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
          const __m512 q = _mm512_permutexvar_ps(jn ? _mm512_srli_epi32(d[i], 4 * jn) : d[i], iota8);
          if (jn & 1) p1[i] = _mm512_fmadd_ps(q, xa, p1[i]);
          else p0[i] = _mm512_fmadd_ps(q, xa, p0[i]);
          if (n > 1) {
            if (jn & 1) q1[i] = _mm512_fmadd_ps(q, xb, q1[i]);
            else q0[i] = _mm512_fmadd_ps(q, xb, q0[i]);
          }
        }
      }
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) {
        const __m512 sv = _mm512_permutexvar_ps(gidx, _mm512_maskz_loadu_ps(gm, sp[i] + k / G));
        __m512 zc = _mm512_setzero_ps();
        if (v->z) zc = _mm512_sub_ps(_mm512_set1_ps(8.0f), _mm512_permutexvar_ps(gidx, _mm512_maskz_loadu_ps(gm, zq[i] + k / G)));
        __m512 t = _mm512_add_ps(p0[i], p1[i]);
        if (v->z) t = _mm512_fmadd_ps(zc, xsum[0], t);
        a0[i] = _mm512_fmadd_ps(t, sv, a0[i]);
        if (n > 1) {
          t = _mm512_add_ps(q0[i], q1[i]);
          if (v->z) t = _mm512_fmadd_ps(zc, xsum[1], t);
          b0[i] = _mm512_fmadd_ps(t, sv, b0[i]);
        }
      }
    }
  }
  for (int i = 0; i < rows; i++) {
    out[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0[i], a1[i]));
    if (n > 1) out[ldo + i] = _mm512_reduce_add_ps(_mm512_add_ps(b0[i], b1[i]));
  }
}

static void gemv_w4(const wview *v, int64_t e, int64_t c0, int64_t nb, const float *X, int64_t ldx, int64_t n,
                    float *out, int64_t ldo, const float *xr, const float *xs) {
  (void)xs;
  if (w4_wide(v->K, v->G)) {
    for (int64_t c = 0; c < nb; c += 4) {
      int rows = nb - c < 4 ? (int)(nb - c) : 4;
      int64_t rr[4];
      for (int i = 0; i < 4; i++) rr[i] = e * v->N + c0 + c + (i < rows ? i : 0);
      for (int64_t r = 0; r < n; r += 2) {
        if (n - r >= 2) gemv_w4_wide(v, rr, rows, xr + r * ldx, ldx, 2, out + r * ldo + c, ldo);
        else gemv_w4_wide(v, rr, rows, xr + r * ldx, ldx, 1, out + r * ldo + c, ldo);
      }
    }
    return;
  }
  for (int64_t c = 0; c < nb; c += 4) {
    int rows = nb - c < 4 ? (int)(nb - c) : 4;
    int64_t rr[4];
    for (int i = 0; i < 4; i++) rr[i] = e * v->N + c0 + c + (i < rows ? i : 0);
    for (int64_t r = 0; r < n; r += 2) {
      if (n - r >= 2) gemv_w4_blk(v, rr, rows, X + r * ldx, xr + r * ldx, ldx, 2, out + r * ldo + c, ldo);
      else gemv_w4_blk(v, rr, rows, X + r * ldx, xr + r * ldx, ldx, 1, out + r * ldo + c, ldo);
    }
  }
}
#else
static void gemv_w4(const wview *v, int64_t e, int64_t c0, int64_t nb, const float *X, int64_t ldx, int64_t n,
                    float *out, int64_t ldo, const float *xr, const float *xs) {
  int64_t K = v->K, G = v->G, ng = K / G, full = G / 32 * 32;
  const uint8_t *W = (const uint8_t *)v->w;
  for (int64_t c = 0; c < nb; c += 4) {
    int rows = nb - c < 4 ? (int)(nb - c) : 4;
    int64_t rr[4];
    for (int i = 0; i < 4; i++) rr[i] = e * v->N + c0 + c + (i < rows ? i : 0);
    const uint8_t *w[4];
    for (int i = 0; i < 4; i++) w[i] = W + rr[i] * (K / 2);
    for (int64_t r = 0; r < n; r++) {
      const float *xq = xr + r * ldx, *x = X + r * ldx;
      v16f tot[4] = {(v16f){0}, (v16f){0}, (v16f){0}, (v16f){0}};
      float tail[4] = {0, 0, 0, 0};
      for (int64_t g = 0; g < ng; g++) {
        v16f l0 = (v16f){0}, l1 = (v16f){0}, l2 = (v16f){0}, l3 = (v16f){0};
        v16f h0 = (v16f){0}, h1 = (v16f){0}, h2 = (v16f){0}, h3 = (v16f){0};
        const uint8_t *p0 = w[0], *p1 = w[1], *p2 = w[2], *p3 = w[3];
        int64_t b = g * G, k = b;
        for (; k < b + full; k += 32) {
          if (!(k & 127)) { /* one 64-byte line per row: prefetch a later block's line into L2 */
            const int64_t pfd = gemv_pf_dist(K / 2);
            __builtin_prefetch(p0 + k / 2 + pfd, 0, 2); __builtin_prefetch(p1 + k / 2 + pfd, 0, 2);
            __builtin_prefetch(p2 + k / 2 + pfd, 0, 2); __builtin_prefetch(p3 + k / 2 + pfd, 0, 2);
          }
          v16f xl = ld16f(xq + k), xh = ld16f(xq + k + 16), ql, qh;
          ld16_u4(p0 + k / 2, &ql, &qh); l0 += ql * xl; h0 += qh * xh;
          ld16_u4(p1 + k / 2, &ql, &qh); l1 += ql * xl; h1 += qh * xh;
          ld16_u4(p2 + k / 2, &ql, &qh); l2 += ql * xl; h2 += qh * xh;
          ld16_u4(p3 + k / 2, &ql, &qh); l3 += ql * xl; h3 += qh * xh;
        }
        v16f part[4] = {l0 + h0, l1 + h1, l2 + h2, l3 + h3};
        for (int i = 0; i < 4; i++) {
          int64_t gi = rr[i] * ng + g;
          float sc = v->s[gi], zp = v->z ? v->z[gi] : 8.0f;
          tot[i] += part[i] * sc;
          float t = -zp * xs[r * (ldx / G) + g];
          for (int64_t kk = k; kk < b + G; kk += 2) {
            uint8_t by = w[i][kk / 2];
            t += (float)(by & 15) * x[kk] + (float)(by >> 4) * x[kk + 1];
          }
          tail[i] += t * sc;
        }
      }
      for (int i = 0; i < rows; i++) out[r * ldo + c + i] = hsum16(tot[i]) + tail[i];
    }
  }
}

#endif

/* out rows = X rows (n <= GEMV_ROWS) times rows c0..c0+nb of expert e (any weight mode) */
static void gemv_w(const wview *v, int64_t e, int64_t c0, int64_t nb, const float *X, int64_t ldx, int64_t n,
                   float *out, int64_t ldo, const float *xr, const float *xs) {
  if (v->mode == MOEC_WQ_NONE)
    gemv_block(X, ldx, n, (const float *)v->w + (e * v->N + c0) * v->K, v->K, nb, out, ldo);
  else if (v->mode == MOEC_WQ_INT4)
    gemv_w4(v, e, c0, nb, X, ldx, n, out, ldo, xr, xs);
  else
    gemv_w8(v, e, c0, nb, X, ldx, n, out, ldo);
}

typedef struct {
  int64_t E, D, I, F, k, rows_total;
  const int64_t *row0;   /* [E+1] first row of each expert in X/H/A */
  const int64_t *slot;   /* [rows_total] the (t*k+j) slot of each row */
  const float *X;        /* [rows_total, D] gathered inputs */
  float *H;              /* [rows_total, I] */
  float *A;              /* [rows_total, F] */
  wview vin, vout;
  const float *b_in, *b_out, *rw;
  float *y;              /* [T*k, D] */
  const moec_ffn_params *p;
  int weights_at;
  int64_t nb1, nb3;      /* column blocks per expert in phases 1 and 3 */
  float *pack[64];       /* one packing buffer per worker */
  float *XR, *XS, *AR, *AS; /* int4 decode: X and A rows prepared by prep_x4 (else NULL) */
  uint32_t *XB, *AB;        /* bf16 (vdpbf16ps, every row count): X and A rows as bf16 pairs (else NULL) */
  const uint32_t *pkb_in, *pkb_out; /* bf16: pair panels packed at compile time, or NULL (packed per item) */
  const float *pk_in, *pk_out; /* prepacked panels of w_in / w_out, or NULL */
  int aq;                       /* w8a8: X and A rows quantised to biased int8 (XQ/AQ, scales XQS/AQS) */
  uint8_t *XQ, *AQ;
  float *XQS, *AQS;
  const int8_t *pq_in, *pq_out; /* w8a8: cached int8 panels, or NULL (packed per work item) */
  const uint8_t *pw_in, *pw_out; /* int8 / int4 weight-only prefill: cached narrow panels, or NULL */
  float *stab[64];               /* int8 / int4 prefill: per-worker scale table (wq_scale_table) */
  int failed;
  w4z *XQZ, *AQZ;                /* w4a8 (aq with int4 weights): per (row, group) -8 x the code sums; XQ/AQ hold
                                  * signed codes, XQS/AQS the (row, group) scales */
  const w4src *p4_in, *p4_out;   /* w4a8: the compile-time panels, or NULL (packed per work item) */
  const float *sc_in, *sc_out;   /* symmetric int4 weight-only prefill: cached scale tables, or NULL */
  int kp_in, kp_out;             /* f32: pk_in / pk_out are the compile-time k-panels (the only copy: every row count) */
  int abf;                       /* int8 / int4 weights, bf16 activations (aq = 2): X and A rounded to bf16 and, */
  uint32_t *XH, *AH;             /* above GEMV_ROWS rows, as bf16 pairs ((K + 1) / 2 per row) */
  const float *XF, *AF;          /* bf16 products where BF16_F32_ROWS: X and A rounded to bf16 as f32 rows (X and A
                                  * themselves; D / F even), beside the pairs; else NULL */
  int64_t ahead;                 /* w8a8: items between this thread's one and its next (the pool's threads) */
} xjob;

static void phase1(void *arg, int64_t item, int tid) {
  xjob *j = (xjob *)arg;
  int64_t e = item / j->nb1, cb = item % j->nb1;
  int64_t r0 = j->row0[e], n = j->row0[e + 1] - r0;
  if (n == 0) return;
  int64_t c0 = cb * NR, nb = j->I - c0 < NR ? j->I - c0 : NR;
  if (j->aq && j->vin.mode == MOEC_WQ_INT4) { /* w4a8: one path for every row count, as w8a8 */
    const wview *v = &j->vin;
    const w4p Bp = w4a8_panel(v, j->p4_in, e, j->nb1, cb, c0, nb, j->pack[tid]);
    int64_t ld = (j->D / v->G) * g4_of(v->G), ng = j->D / v->G;
    for (int64_t r = 0; r < n; r += W4A8_MR) {
      int m = n - r < W4A8_MR ? (int)(n - r) : W4A8_MR;
      tile_w4a8(v, (const int8_t *)j->XQ + (r0 + r) * ld, ld, j->XQS + (r0 + r) * ng, j->XQZ + (r0 + r) * ng, m, &Bp,
                j->H + (r0 + r) * j->I + c0, j->I, nb);
    }
    return;
  }
  if (j->aq) { /* w8a8: one path for every row count (the int8 panel streams once per item) */
    const int8_t *Bp = j->pq_in ? j->pq_in + (size_t)(e * j->nb1 + cb) * i8_panel_bytes(j->D) : (const int8_t *)j->pack[tid];
    if (!j->pq_in) pack_i8_panel((const int8_t *)j->vin.w + e * j->I * j->D, j->D, c0, nb, j->pack[tid]);
    int64_t Kp = KP4(j->D);
    const int amr = AMX_ROWS(MR); /* (rt_amx.h: AMX's rows per call where it runs) */
    const size_t pb = i8_panel_bytes(j->D);
    const int8_t *nx = j->pq_in && item + j->ahead < j->E * j->nb1 ? j->pq_in + (size_t)(item + j->ahead) * pb : NULL;
    for (int64_t r = 0; r < n; r += amr) {
      int m = n - r < amr ? (int)(n - r) : amr;
      int64_t pfs = 0;
      const char *pf = m > 4 ? i8_next_slice(nx, pb, r / amr, I8_PF_BLOCKS(n, amr), Kp / 4, &pfs) : NULL;
      AMX_I8_OR(tile_i8_pf, j->XQ + (r0 + r) * Kp, Kp, m, Bp, j->D, j->XQS + r0 + r, j->vin.s + e * j->I + c0,
                j->H + (r0 + r) * j->I + c0, j->I, nb, pf, pfs);
    }
    return;
  }
  if (j->XB) { /* bf16, every row count */
    int64_t P = (j->D + 1) / 2;
    const uint32_t *Bq = j->pkb_in ? j->pkb_in + (e * j->nb1 + cb) * P * NR : (const uint32_t *)j->pack[tid];
    if (!j->pkb_in) pack_b_bf16((const uint16_t *)j->vin.w + e * j->I * j->D, j->D, c0, nb, (uint32_t *)j->pack[tid]);
    const int amr = AMX_ROWS(MR); /* (rt_amx.h) */
    for (int64_t r = 0; r < n; r += amr) {
      int m = n - r < amr ? (int)(n - r) : amr;
      if (!AMX_BF16(j->XB + (r0 + r) * P, P, m, Bq, j->H + (r0 + r) * j->I + c0, j->I, nb))
        tile_bf16_f(j->XB + (r0 + r) * P, j->XF ? j->XF + (r0 + r) * j->D : NULL, P, m, Bq,
                    j->H + (r0 + r) * j->I + c0, j->I, nb);
    }
    return;
  }
  if (n <= GEMV_ROWS && !j->kp_in) {
    gemv_w(&j->vin, e, c0, nb, j->X + r0 * j->D, j->D, n, j->H + r0 * j->I + c0, j->I,
           j->XR ? j->XR + r0 * j->D : NULL, j->XS ? j->XS + r0 * (j->D / j->vin.G) : NULL);
    return;
  }
  if (j->vin.mode == MOEC_WQ_INT8 || j->vin.mode == MOEC_WQ_INT4) {
    const wview *v = &j->vin;
    const void *Bw = wq_panel(v, j->pw_in, e, j->nb1, cb, c0, nb, wq_narrow_buf(j->pack[tid], v->K));
    const float *st = wq_scales(v, j->sc_in, e, j->nb1, cb, c0, nb, j->stab[tid]);
    if (j->abf) { /* bf16 activations: the pair panel once per item, then tile_bf16 per group */
      const int amr = AMX_ROWS(MR); /* (rt_amx.h) */
      for (int64_t r = 0; r < n; r += amr) { /* (the first row block widens the panel into the pack buffer) */
        int m = n - r < amr ? (int)(n - r) : amr;
        wq_prefetch_next(v, j->pw_in, j->sc_in, item + 1, j->E * j->nb1, r / amr, (n + amr - 1) / amr);
        if (wq_bf16_direct(v, j->XF) && !AMX_WANTS(m))
          tile_wq(v, j->XF + (r0 + r) * j->D, j->D, m, Bw, st, j->H + (r0 + r) * j->I + c0, j->I, nb);
        else if (r == 0)
          tile_wq_bf16_first(v, Bw, e, c0, j->XH + r0 * ((j->D + 1) / 2), j->XF ? j->XF + r0 * j->D : NULL, m,
                             (uint32_t *)j->pack[tid], st, j->H + r0 * j->I + c0, j->I, nb);
        else
          tile_wq_bf16(v, j->XH + (r0 + r) * ((j->D + 1) / 2), j->XF ? j->XF + (r0 + r) * j->D : NULL, m,
                       (const uint32_t *)j->pack[tid], st, j->H + (r0 + r) * j->I + c0, j->I, nb);
      }
      return;
    }
    if (n > wq_deq_rows(v)) wq_dequant_panel(v, Bw, st, j->pack[tid]);
    for (int64_t r = 0; r < n; r += MR) {
      int m = n - r < MR ? (int)(n - r) : MR;
      int64_t pfs = 0; /* (this thread's next item's narrow panel, a slice per row block: wq_next_slice) */
      const char *pf = m > 4 ? wq_next_slice(v, j->pw_in, item + j->ahead, j->E * j->nb1, r / MR, I8_PF_BLOCKS(n, MR), &pfs)
                             : NULL;
      if (n > wq_deq_rows(v))
        tile_pf(j->X + (r0 + r) * j->D, j->D, m, j->pack[tid], j->D, j->H + (r0 + r) * j->I + c0, j->I, nb, pf, pfs);
      else tile_wq_pf(v, j->X + (r0 + r) * j->D, j->D, m, Bw, st, j->H + (r0 + r) * j->I + c0, j->I, nb, pf, pfs);
    }
    return;
  }
  const float *Bp = j->pk_in ? j->pk_in + (e * j->nb1 + cb) * j->D * NR : j->pack[tid];
  if (!j->pk_in) pack_b_w(&j->vin, e, c0, nb, j->pack[tid]);
  if (n <= GEMV_ROWS) { /* (compile-time panels: decode reads them) */
    tile_dec(j->X + r0 * j->D, j->D, (int)n, Bp, j->D, j->H + r0 * j->I + c0, j->I, nb);
    return;
  }
  for (int64_t r = 0; r < n; r += FMR) {
    int m = n - r < FMR ? (int)(n - r) : FMR;
    tile(j->X + (r0 + r) * j->D, j->D, m, Bp, j->D, j->H + (r0 + r) * j->I + c0, j->I, nb);
  }
}

#define PHASE2_STACK_ROW 8192 /* floats (32 KiB) */
static void phase2(void *arg, int64_t row) {
  xjob *j = (xjob *)arg;
  int64_t e = 0;
  while (j->row0[e + 1] <= row) e++;
  /* w8a8 / w4a8: phase 3 reads the codes only, so the activation row is made on the stack (in L1 for the
   * quantiser) instead of into A, whose [rows, F] lines were written back to memory for nothing */
  float abuf[PHASE2_STACK_ROW] __attribute__((aligned(64)));
  float *restrict h = j->H + row * j->I, *restrict a = j->aq && j->F <= PHASE2_STACK_ROW ? abuf : j->A + row * j->F;
  const moec_ffn_params *p = j->p;
  if (j->b_in)
    for (int64_t i = 0; i < j->I; i++) h[i] += j->b_in[e * j->I + i];
  if (p->act == MOEC_ACT_SWIGLU) {
    swiglu_row(h, a, j->F, p->interleaved, isfinite(p->limit), (float)p->limit, (float)p->alpha, (float)p->beta);
  } else if (p->act == MOEC_ACT_SILU) {
    silu_row(h, a, j->F);
  } else if (MOEC_ACT_GATED(p->act)) { /* geglu / softcap_swiglu: G, U as swiglu_row reads them */
    const float cg = (float)p->gate_cap, cu = (float)p->up_cap;
    for (int64_t f = 0; f < j->F; f++) {
      float g = p->interleaved ? h[2 * f] : h[f], u = p->interleaved ? h[2 * f + 1] : h[j->F + f];
      if (p->act == MOEC_ACT_SOFTCAP_SWIGLU) a[f] = cg * tanhf(g / cg) * sigm_f(g) * (cu * tanhf(u / cu));
      else if (p->act == MOEC_ACT_GEGLU) a[f] = 0.5f * g * (1.0f + erff(g * 0.70710678f)) * u;
      else a[f] = 0.5f * g * (1.0f + tanhf(0.79788456f * (g + 0.044715f * g * g * g))) * u;
    }
  } else if (p->act == MOEC_ACT_RELU) { /* one loop per activation: a switch per element was a jump per value */
    for (int64_t f = 0; f < j->F; f++) a[f] = h[f] < 0 ? 0.f : h[f]; /* NaN passes */
  } else if (p->act == MOEC_ACT_RELU2) {
    for (int64_t f = 0; f < j->F; f++) a[f] = h[f] < 0 ? 0.f : h[f] * h[f];
  } else if (p->act == MOEC_ACT_GELU) {
    for (int64_t f = 0; f < j->F; f++) a[f] = 0.5f * h[f] * (1.0f + erff(h[f] * 0.70710678f));
  } else if (p->act == MOEC_ACT_GELU_TANH) {
    for (int64_t f = 0; f < j->F; f++) {
      float v = h[f];
      a[f] = 0.5f * v * (1.0f + tanhf(0.79788456f * (v + 0.044715f * v * v * v)));
    }
  } else {
    memcpy(a, h, sizeof(float) * (size_t)j->F);
  }
  if (j->AB && !j->abf && !j->AH && !j->AR && !j->aq && !j->AF) { /* bf16: phase 3 reads the pairs only (one pass) */
    round_to_pairs(a, j->F, j->AB + row * ((j->F + 1) / 2));
    return;
  }
  if (j->vout.mode == MOEC_WQ_BF16 || j->abf) round_bf16_row(a, j->F);
  if (j->AB) to_pairs(a, j->F, j->AB + row * ((j->F + 1) / 2));
  if (j->AH) to_pairs(a, j->F, j->AH + row * ((j->F + 1) / 2));
  if (j->AR) prep_x4(a, j->F, j->vout.G, j->AR + row * j->F, j->AS + row * (j->F / j->vout.G));
  if (j->aq && j->vout.mode == MOEC_WQ_INT4) {
    int64_t ng = j->F / j->vout.G;
    quant_row_g(a, j->F, j->vout.G, (int8_t *)j->AQ + row * ng * g4_of(j->vout.G), j->AQS + row * ng, j->AQZ + row * ng);
  } else if (j->aq) {
    quant_row_u8(a, j->F, j->AQ + row * KP4(j->F), j->AQS + row);
  }
}

static void phase3(void *arg, int64_t item, int tid) {
  xjob *j = (xjob *)arg;
  int64_t e = item / j->nb3, cb = item % j->nb3;
  int64_t r0 = j->row0[e], n = j->row0[e + 1] - r0;
  if (n == 0) return;
  int64_t c0 = cb * NR, nb = j->D - c0 < NR ? j->D - c0 : NR;
#ifdef MOEC_HAVE_AMX
  float out[(AMX_MR > W4A8_MR ? AMX_MR : W4A8_MR) * NR]; /* (AMX_MR >= MR: the tile kernels' 32 rows) */
#else
  float out[(FMR > W4A8_MR ? FMR : W4A8_MR) * NR]; /* (FMR >= MR) */
#endif
  const float *Bp = NULL;
  const int8_t *Bi = NULL;
  w4p B4p;
  const w4p *B4 = NULL;
  if (j->aq && j->vout.mode == MOEC_WQ_INT4) {
    B4p = w4a8_panel(&j->vout, j->p4_out, e, j->nb3, cb, c0, nb, j->pack[tid]);
    B4 = &B4p;
  } else if (j->aq) {
    Bi = j->pq_out ? j->pq_out + (size_t)(e * j->nb3 + cb) * i8_panel_bytes(j->F) : (const int8_t *)j->pack[tid];
    if (!j->pq_out) pack_i8_panel((const int8_t *)j->vout.w + e * j->D * j->F, j->F, c0, nb, j->pack[tid]);
  }
  const uint32_t *Bq = j->pkb_out ? j->pkb_out + (e * j->nb3 + cb) * ((j->F + 1) / 2) * NR : NULL;
  if (j->AB && !Bq) { /* bf16 without compile-time panels: this item's panel */
    pack_b_bf16((const uint16_t *)j->vout.w + e * j->D * j->F, j->F, c0, nb, (uint32_t *)j->pack[tid]);
    Bq = (const uint32_t *)j->pack[tid];
  }
  const void *Bw = NULL;
  const float *st = NULL;
  const uint32_t *Bh = NULL; /* bf16 activations: the pair panel */
  int wq = j->vout.mode == MOEC_WQ_INT8 || j->vout.mode == MOEC_WQ_INT4;
  if (n > GEMV_ROWS && !Bi && !B4 && wq) {
    const wview *v = &j->vout;
    Bw = wq_panel(v, j->pw_out, e, j->nb3, cb, c0, nb, wq_narrow_buf(j->pack[tid], v->K));
    st = wq_scales(v, j->sc_out, e, j->nb3, cb, c0, nb, j->stab[tid]);
    if (j->abf) { /* (the pair panel: made by the first row block's tile, below) */
      Bh = (const uint32_t *)j->pack[tid];
    } else if (n > wq_deq_rows(v)) { /* the f32 panel and tile() below */
      wq_dequant_panel(v, Bw, st, j->pack[tid]);
      Bp = j->pack[tid];
      Bw = NULL;
    }
  }
  int have_panel = Bi || Bw || B4 || Bp || Bh;
  have_panel = have_panel || Bq;
  if ((n > GEMV_ROWS || j->kp_out) && !have_panel) { /* f32 panel (dequantised when nothing narrower is packed) */
    if (j->pk_out) {
      Bp = j->pk_out + (e * j->nb3 + cb) * j->F * NR;
    } else {
      pack_b_w(&j->vout, e, c0, nb, j->pack[tid]);
      Bp = j->pack[tid];
    }
  }
  const int step = B4 ? W4A8_MR : Bi || Bq || Bh ? AMX_ROWS(MR) : Bp && !wq && n > GEMV_ROWS ? FMR : MR; /* (rt_amx.h) */
  for (int64_t r = 0; r < n; r += step) {
    int m = n - r < step ? (int)(n - r) : step;
    if (B4) {
      int64_t ng = j->F / j->vout.G, ld = ng * g4_of(j->vout.G);
      tile_w4a8(&j->vout, (const int8_t *)j->AQ + (r0 + r) * ld, ld, j->AQS + (r0 + r) * ng, j->AQZ + (r0 + r) * ng, m,
                B4, out, NR, nb);
    } else if (Bh) {
      wq_prefetch_next(&j->vout, j->pw_out, j->sc_out, item + 1, j->E * j->nb3, r / step, (n + step - 1) / step);
      const float *af = j->AF ? j->AF + (r0 + r) * j->F : NULL;
      if (wq_bf16_direct(&j->vout, af) && !AMX_WANTS(m)) tile_wq(&j->vout, af, j->F, m, Bw, st, out, NR, nb);
      else if (r == 0) tile_wq_bf16_first(&j->vout, Bw, e, c0, j->AH + r0 * ((j->F + 1) / 2), af, m, (uint32_t *)j->pack[tid], st, out, NR, nb);
      else tile_wq_bf16(&j->vout, j->AH + (r0 + r) * ((j->F + 1) / 2), af, m, Bh, st, out, NR, nb);
    }
    else if (Bw || (Bp && wq && n > GEMV_ROWS)) { /* weight-only: the narrow panel, or dequantised into Bp */
      int64_t pfs = 0; /* (this thread's next item's narrow panel, a slice per row block: wq_next_slice) */
      const char *pf = m > 4 ? wq_next_slice(&j->vout, j->pw_out, item + j->ahead, j->E * j->nb3, r / step,
                                             I8_PF_BLOCKS(n, step), &pfs)
                             : NULL;
      if (Bw) tile_wq_pf(&j->vout, j->A + (r0 + r) * j->F, j->F, m, Bw, st, out, NR, nb, pf, pfs);
      else tile_pf(j->A + (r0 + r) * j->F, j->F, m, Bp, j->F, out, NR, nb, pf, pfs);
    }
    else if (Bi) {
      const size_t pb = i8_panel_bytes(j->F);
      const int8_t *nx = j->pq_out && item + j->ahead < j->E * j->nb3 ? j->pq_out + (size_t)(item + j->ahead) * pb : NULL;
      int64_t pfs = 0;
      const char *pf = m > 4 ? i8_next_slice(nx, pb, r / step, I8_PF_BLOCKS(n, step), KP4(j->F) / 4, &pfs) : NULL;
      AMX_I8_OR(tile_i8_pf, j->AQ + (r0 + r) * KP4(j->F), KP4(j->F), m, Bi, j->F, j->AQS + r0 + r, j->vout.s + e * j->D + c0,
                out, NR, nb, pf, pfs);
    }
    else
    if (Bq) {
      if (!AMX_BF16(j->AB + (r0 + r) * ((j->F + 1) / 2), (j->F + 1) / 2, m, Bq, out, NR, nb)) /* (rt_amx.h) */
        tile_bf16_f(j->AB + (r0 + r) * ((j->F + 1) / 2), j->AF ? j->AF + (r0 + r) * j->F : NULL, (j->F + 1) / 2, m, Bq,
                    out, NR, nb);
    }
    else
    if (Bp && n <= GEMV_ROWS) tile_dec(j->A + (r0 + r) * j->F, j->F, m, Bp, j->F, out, NR, nb);
    else if (Bp) tile(j->A + (r0 + r) * j->F, j->F, m, Bp, j->F, out, NR, nb);
    else
      gemv_w(&j->vout, e, c0, nb, j->A + (r0 + r) * j->F, j->F, m, out, NR,
             j->AR ? j->AR + (r0 + r) * j->F : NULL, j->AS ? j->AS + (r0 + r) * (j->F / j->vout.G) : NULL);
    for (int q = 0; q < m; q++) {
      int64_t s = j->slot[r0 + r + q];
      float sc = (j->rw && j->weights_at == 2) ? j->rw[s] : 1.0f;
      float *dst = j->y + s * j->D + c0;
      for (int64_t c = 0; c < nb; c++) dst[c] = (out[q * NR + c] + (j->b_out ? j->b_out[e * j->D + c0 + c] : 0.f)) * sc;
    }
  }
}

/* Returns 0 on success, 1 if this path does not apply (caller falls back), -1 on error. */
/* activation rows made ready for a kernel (rounded to bf16 as pairs, quantised to int8, prepared for int4 GEMVs),
 * LQ_PREP_ROWS rows per item, in parallel when there is enough of it (one thread did it while the others waited:
 * 10% of w8a8 prefill).  The rows are x's, or, for the experts (slot), built first: row r of x is row
 * slot[r] / k of src, times rw[slot[r]] when rw, rounded to bf16 when round (written to xg == x). */
typedef struct {
  const float *x;
  int64_t M, K, G, ld;
  const float *src, *rw;
  const int64_t *slot;
  int64_t k;
  float *xg;
  int round;
  float *xr;     /* the rows rounded to bf16 (f32): linear_q's GEMV of bf16 activations */
  uint8_t *XQ;   /* int8 codes: quant_row_u8 (rows of KP4(K)), or with XQZ per group (quant_row_g, rows of ld) */
  float *XQS;
  w4z *XQZ;
  uint32_t *XB;  /* the rows rounded to bf16, as pairs */
  float *XR, *XS; /* prep_x4 (int4 weight-only GEMVs) */
} lqprep;
#define LQ_PREP_ROWS 8
static void lq_prep(void *arg, int64_t b) {
  const lqprep *p = (const lqprep *)arg;
  const int64_t K = p->K, r1 = (b + 1) * LQ_PREP_ROWS < p->M ? (b + 1) * LQ_PREP_ROWS : p->M;
  for (int64_t r = b * LQ_PREP_ROWS; r < r1; r++) {
    if (p->xg) {
      const float *src = p->src + (p->slot[r] / p->k) * K;
      float sc = p->rw ? p->rw[p->slot[r]] : 1.0f, *o = p->xg + r * K;
      int64_t d = 0;
      for (; d + 16 <= K; d += 16) st16f(o + d, ld16f(src + d) * splat16(sc)); /* (GCC left it scalar) */
      for (; d < K; d++) o[d] = src[d] * sc;
      if (p->round) round_bf16_row(o, K);
    }
    const float *a = p->x + r * K;
    if (p->xr) {
      memcpy(p->xr + r * K, a, sizeof(float) * (size_t)K);
      round_bf16_row(p->xr + r * K, K);
    }
    if (p->XB) round_to_pairs(a, K, p->XB + r * ((K + 1) / 2));
    if (p->XQ && p->XQZ) quant_row_g(a, K, p->G, (int8_t *)p->XQ + r * p->ld, p->XQS + r * (K / p->G), p->XQZ + r * (K / p->G));
    else if (p->XQ) quant_row_u8(a, K, p->XQ + r * KP4(K), p->XQS + r);
    if (p->XR) prep_x4(a, K, p->G, p->XR + r * K, p->XS + r * (K / p->G));
  }
}
static void lq_prep_run(moec_ctx *ctx, lqprep *p) {
  const int64_t nb = (p->M + LQ_PREP_ROWS - 1) / LQ_PREP_ROWS;
  if (p->M * p->K < 32768) {
    for (int64_t b = 0; b < nb; b++) lq_prep(p, b);
  } else {
    moec_parallel_for(ctx, nb, lq_prep, p);
  }
}

/* Phases 1 and 3 over the (expert, column block) items.  Prefill: every pair is an item (the pool hands them out
 * one at a time).  Decode (every expert at most GEMV_ROWS rows): only the experts with rows, their blocks in order,
 * cut into XRUNS_PER_THREAD runs of consecutive blocks per thread: a run streams one contiguous stretch of an
 * expert's weights, so the GEMVs' prefetch (and the hardware's) reads ahead into the blocks this thread runs next,
 * not into a block the other thread took (one-block items alternated between the threads, each prefetching ~10 KB
 * of the other's block); the empty experts' items (6 of 8 at top-2) cost nothing. */
#define XRUNS_PER_THREAD 8
typedef struct {
  xjob *j;
  moec_task_tid_fn fn;
  int64_t nb, nblk, per;
  int64_t act[64]; /* the experts with rows, in order (more than 64: xphase hands out single blocks instead) */
} xruns;
static void xrun_task(void *arg, int64_t item, int tid) {
  const xruns *r = (const xruns *)arg;
  const int64_t b0 = item * r->per, b1 = b0 + r->per < r->nblk ? b0 + r->per : r->nblk;
  for (int64_t b = b0; b < b1; b++) r->fn(r->j, r->act[b / r->nb] * r->nb + b % r->nb, tid);
}
static void xphase(moec_ctx *ctx, xjob *j, int64_t nb, moec_task_tid_fn fn, int64_t maxn, double fmas) {
  xruns r;
  int64_t nact = 0;
  /* a small phase (a narrow layer at a token or two) runs on the calling thread, its items in order */
  const int serial = fmas < MOEC_PAR_MIN_FMAS;
  if (maxn <= GEMV_ROWS)
    for (int64_t e = 0; e < j->E && nact <= 64; e++)
      if (j->row0[e + 1] > j->row0[e]) {
        if (nact < 64) r.act[nact] = e;
        nact++;
      }
  if (maxn > GEMV_ROWS || nact > 64) { /* prefill (or more than 64 experts with rows): one block per item */
    if (serial) {
      const int64_t ahead = j->ahead;
      j->ahead = 1; /* (the prefetch hint: this thread's next item is the next one) */
      for (int64_t i = 0; i < j->E * nb; i++) fn(j, i, 0);
      j->ahead = ahead;
    } else {
      moec_parallel_for_tid(ctx, j->E * nb, fn, j);
    }
    return;
  }
  r.j = j, r.fn = fn, r.nb = nb, r.nblk = nact * nb;
  int64_t runs = serial ? 1 : (int64_t)moec_num_threads(ctx, 1 << 30) * XRUNS_PER_THREAD;
  if (runs > r.nblk) runs = r.nblk;
  if (runs < 1) return;
  r.per = (r.nblk + runs - 1) / runs;
  moec_parallel_for_tid(ctx, (r.nblk + r.per - 1) / r.per, xrun_task, &r);
}

int moec_moe_experts_f32(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *ids, const moec_tensor *order,
                         const moec_tensor *offsets, const moec_tensor *w_in, const moec_tensor *w_out,
                         const moec_tensor *b_in, const moec_tensor *b_out, const moec_tensor *rw, int weights_at,
                         const moec_ffn_params *p, const moec_wq *q, moec_tensor *y) {
  int mode = q ? q->mode : MOEC_WQ_NONE;
  static const int wdt[4] = {MOEC_F32, MOEC_BF16, MOEC_I8, MOEC_U8};
  if (x->dtype != MOEC_F32 || w_in->dtype != wdt[mode] || w_out->dtype != wdt[mode]) return 1;
  if ((b_in && b_in->dtype != MOEC_F32) || (b_out && b_out->dtype != MOEC_F32) || (rw && rw->dtype != MOEC_F32)) return 1;
  int64_t T = x->shape[0], D = x->shape[1], k = ids->shape[1], E = w_in->shape[0], I = w_in->shape[1],
          F = mode == MOEC_WQ_INT4 ? 2 * w_out->shape[2] : w_out->shape[2];
  const int64_t *ord = (const int64_t *)order->data, *off = (const int64_t *)offsets->data;
  int64_t *row0 = (int64_t *)malloc(sizeof(int64_t) * (size_t)(E + 1));
  int64_t total = 0;
  if (!row0) return moec_fail(ctx, "out of memory");
  for (int64_t e = 0; e < E; e++) {
    row0[e] = total;
    for (int64_t i = off[e]; i < off[e + 1]; i++) total += ord[i] >= 0;
  }
  row0[E] = total;
  int bad = 0;
  const uint32_t *pkb_in = mode == MOEC_WQ_BF16 ? compiled_pairs(q->pk_in, E, I, D, &bad) : NULL,
                 *pkb_out = mode == MOEC_WQ_BF16 ? compiled_pairs(q->pk_out, E, D, F, &bad) : NULL;
  const float *pkf_in = mode == MOEC_WQ_NONE && q ? compiled_kpanels(q->pk_in, E, I, D, &bad) : NULL,
              *pkf_out = mode == MOEC_WQ_NONE && q ? compiled_kpanels(q->pk_out, E, D, F, &bad) : NULL;
  if (bad || (!pkf_in != !pkf_out)) { free(row0); return moec_fail(ctx, PAIRS_MISMATCH, MOEC_PAIR_LAYOUT_VERSION, NR); }
  int64_t maxn = 0; /* the panel paths are set up when some expert has more rows than the GEMV path takes */
  for (int64_t e = 0; e < E; e++) maxn = row0[e + 1] - row0[e] > maxn ? row0[e + 1] - row0[e] : maxn;
  { /* the gathered rows' sizes: total <= T*k, but total * D is a product of two tensors' dims: checked */
    int64_t sz;
    if (moec_mul_size(ctx, total, D, &sz) || moec_mul_size(ctx, total, I, &sz) || moec_mul_size(ctx, total, F, &sz)) {
      free(row0);
      return -1;
    }
  }
  int64_t *slot = (int64_t *)malloc(sizeof(int64_t) * (size_t)(total + 1));
  float *X = (float *)moec_scratch_alloc(sizeof(float) * (size_t)((total * D + 16 + 15) / 16 * 16));
  float *H = (float *)moec_scratch_alloc(sizeof(float) * (size_t)((total * I + 16 + 15) / 16 * 16));
  float *A = (float *)moec_scratch_alloc(sizeof(float) * (size_t)((total * F + 16 + 15) / 16 * 16));
  if (!slot || !X || !H || !A) { free(row0); free(slot); moec_scratch_free(X); moec_scratch_free(H); moec_scratch_free(A); return moec_fail(ctx, "out of memory"); }
  const float *xd = (const float *)x->data;
  const float *rwd = rw ? (const float *)rw->data : NULL;
  int64_t r = 0;
  for (int64_t e = 0; e < E; e++)
    for (int64_t i = off[e]; i < off[e + 1]; i++) {
      int64_t s = ord[i];
      if (s < 0) continue;
      slot[r++] = s;
    }
  /* the rows gathered (scaled, rounded) and made ready for phase 1 after the set-up below: lq_prep */
  lqprep prep = {0};
  prep.x = X, prep.xg = X, prep.M = total, prep.K = D, prep.src = xd, prep.slot = slot, prep.k = k;
  prep.rw = rwd && weights_at == 1 ? rwd : NULL;
  prep.round = mode == MOEC_WQ_BF16 || (q && q->aq == 2);
  int64_t yshape[3] = {T, k, D};
  /* (uninit: phase 3 stores the whole row of every slot in slot[] -- its items cover each expert's rows and all
   * of D; failing, it returns an error -- and the rows of the other slots (dropped: id -1, or left out of the plan)
   * are zeroed here, as the reference's dropped slots are 0) */
  if (moec_alloc_uninit(ctx, y, MOEC_F32, 3, yshape)) { free(row0); free(slot); moec_scratch_free(X); moec_scratch_free(H); moec_scratch_free(A); return -1; }
  {
    unsigned char *routed = (unsigned char *)calloc((size_t)(T * k) + 1, 1);
    if (!routed) { free(row0); free(slot); moec_scratch_free(X); moec_scratch_free(H); moec_scratch_free(A); return moec_fail(ctx, "out of memory"); }
    for (int64_t i = 0; i < total; i++) routed[slot[i]] = 1;
    for (int64_t s = 0; s < T * k; s++)
      if (!routed[s]) memset((float *)y->data + s * D, 0, sizeof(float) * (size_t)D);
    free(routed);
  }
  int64_t G = mode == MOEC_WQ_INT4 && q->group ? q->group : 0;
  wview vin = {mode, w_in->data, q && q->s_in ? (const float *)q->s_in->data : NULL,
               q && q->z_in ? (const float *)q->z_in->data : NULL, I, D, G ? G : D};
  wview vout = {mode, w_out->data, q && q->s_out ? (const float *)q->s_out->data : NULL,
                q && q->z_out ? (const float *)q->z_out->data : NULL, D, F, G ? G : F};
  xjob j = {E, D, I, F, k, total, row0, slot, X, H, A, vin, vout,
            b_in ? (const float *)b_in->data : NULL, b_out ? (const float *)b_out->data : NULL, rwd,
            (float *)y->data, p, weights_at, (I + NR - 1) / NR, (D + NR - 1) / NR, {0}, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, {0}, 0};
  w4src src4[2]; /* (w4a8's compile-time panels, read through j.p4_in / p4_out) */
  if (mode == MOEC_WQ_INT4 && q->aq == 1) { /* w4a8: rows quantised per int4 group (signed codes, sums) */
    j.aq = 1;
    int64_t ng1 = D / vin.G, ng3 = F / vout.G, l1 = ng1 * g4_of(vin.G), l3 = ng3 * g4_of(vout.G);
    j.XQ = (uint8_t *)moec_scratch_alloc((size_t)(total * l1) + 4);
    j.AQ = (uint8_t *)moec_scratch_alloc((size_t)(total * l3) + 4);
    j.XQS = (float *)malloc(sizeof(float) * (size_t)(total * ng1 + 1));
    j.AQS = (float *)malloc(sizeof(float) * (size_t)(total * ng3 + 1));
    j.XQZ = (w4z *)malloc(sizeof(w4z) * (size_t)(total * ng1 + 1));
    j.AQZ = (w4z *)malloc(sizeof(w4z) * (size_t)(total * ng3 + 1));
    if (!j.XQ || !j.AQ || !j.XQS || !j.AQS || !j.XQZ || !j.AQZ) j.failed = 1;
    else
      prep.XQ = j.XQ, prep.XQS = j.XQS, prep.XQZ = j.XQZ, prep.G = vin.G, prep.ld = l1;
    int bad4 = 0;
    j.p4_in = w4a8_compiled(q->pk_in, q->pks_in, q->pkz_in, &vin, E, &src4[0], &bad4);
    j.p4_out = w4a8_compiled(q->pk_out, q->pks_out, q->pkz_out, &vout, E, &src4[1], &bad4);
    if (bad4) j.failed = 3;
  } else if (mode == MOEC_WQ_INT8 && q->aq == 1) {
    j.aq = 1;
    j.XQ = (uint8_t *)moec_scratch_alloc((size_t)(total * KP4(D)) + 4);
    j.AQ = (uint8_t *)moec_scratch_alloc((size_t)(total * KP4(F)) + 4);
    j.XQS = (float *)malloc(sizeof(float) * (size_t)(total + 1));
    j.AQS = (float *)malloc(sizeof(float) * (size_t)(total + 1));
    if (!j.XQ || !j.AQ || !j.XQS || !j.AQS) j.failed = 1;
    else
      prep.XQ = j.XQ, prep.XQS = j.XQS;
    int bad8 = 0;
    j.pq_in = i8_panels(q->pk_in, (const int8_t *)w_in->data, E, I, D, &bad8);
    j.pq_out = i8_panels(q->pk_out, (const int8_t *)w_out->data, E, D, F, &bad8);
    if (bad8 || (!j.pq_in && q->pk_in) || (!j.pq_out && q->pk_out)) j.failed = 2;
  }
  if (mode == MOEC_WQ_BF16) { /* bf16, prefill and decode: tile_bf16 on the pair panels (packed at compile time) */
    j.pkb_in = pkb_in;
    j.pkb_out = pkb_out;
    int64_t P1 = (D + 1) / 2, P3 = (F + 1) / 2;
    j.XB = (uint32_t *)moec_scratch_alloc(sizeof(uint32_t) * (size_t)(total * P1 + 1));
    j.AB = (uint32_t *)moec_scratch_alloc(sizeof(uint32_t) * (size_t)(total * P3 + 1));
    if (!j.XB || !j.AB) j.failed = 1;
    else
      prep.XB = j.XB;
  }
  if (mode == MOEC_WQ_INT4 && !j.aq) {
    j.XR = (float *)moec_scratch_alloc(sizeof(float) * (size_t)((total * D + 16 + 15) / 16 * 16));
    j.XS = (float *)malloc(sizeof(float) * (size_t)(total * (D / vin.G) + 1));
    j.AR = (float *)moec_scratch_alloc(sizeof(float) * (size_t)((total * F + 16 + 15) / 16 * 16));
    j.AS = (float *)malloc(sizeof(float) * (size_t)(total * (F / vout.G) + 1));
    if (!j.XR || !j.XS || !j.AR || !j.AS) j.failed = 1;
    else
      prep.XR = j.XR, prep.XS = j.XS, prep.G = vin.G;
  }
  if ((mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4) && !(q && q->aq == 1) && maxn > GEMV_ROWS) {
    j.pw_in = (const uint8_t *)packed_panels_wq(&vin, E);
    j.pw_out = (const uint8_t *)packed_panels_wq(&vout, E);
    j.sc_in = cached_scale_tables(&vin, E);
    j.sc_out = cached_scale_tables(&vout, E);
    if (q->aq == 2) { /* bf16 activations: the rows as bf16 pairs (A's in phase 2) */
      j.abf = 1;
      j.XH = (uint32_t *)moec_scratch_alloc(sizeof(uint32_t) * (size_t)(total * ((D + 1) / 2) + 1));
      j.AH = (uint32_t *)moec_scratch_alloc(sizeof(uint32_t) * (size_t)(total * ((F + 1) / 2) + 1));
      if (!j.XH || !j.AH) j.failed = 1;
      else
        prep.XB = j.XH;
    }
  }
  if ((mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4) && q->aq == 2) j.abf = 1; /* (A rounded at every row count) */
  if (BF16_F32_ROWS && (j.XB || j.XH)) { /* the rounded rows as f32 too (X by lq_prep, A by phase 2, in place) */
    j.XF = D % 2 ? NULL : X;
    j.AF = F % 2 ? NULL : A;
  }
  if (pkf_in && pkf_out) { /* f32, k-panels packed at compile time: every row count reads them */
    j.pk_in = pkf_in;
    j.pk_out = pkf_out;
    j.kp_in = j.kp_out = 1;
  } else if (mode == MOEC_WQ_NONE && maxn > GEMV_ROWS) { /* f32 prefill: pack once (decode reads rows directly) */
    j.pk_in = packed_panels((const float *)w_in->data, E, I, D);
    j.pk_out = packed_panels((const float *)w_out->data, E, D, F);
  }
  int nt = moec_num_threads(ctx, E * (j.nb1 > j.nb3 ? j.nb1 : j.nb3));
  size_t kmax = (size_t)(D > F ? D : F);
  for (int t = 0; t < nt; t++) {
    size_t pb = mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4 ? wq_pack_bytes((int64_t)kmax) : sizeof(float) * (kmax * NR + 16),
           pbi = i8_panel_bytes((int64_t)kmax) + 64;
    if (j.aq && mode == MOEC_WQ_INT4) { /* w4a8 panels: larger than f32 ones only for tiny groups */
      size_t p4 = w4a8_panel_bytes(&vin) > w4a8_panel_bytes(&vout) ? w4a8_panel_bytes(&vin) : w4a8_panel_bytes(&vout);
      pbi = p4 + 64 > pbi ? p4 + 64 : pbi;
    }
    j.pack[t] = (float *)aligned_alloc(64, ((pb > pbi ? pb : pbi) + 63) & ~(size_t)63);
    if (!j.pack[t]) j.failed = 1;
    if (mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4) {
      j.stab[t] = (float *)aligned_alloc(64, (sizeof(float) * (size_t)(2 * NR * (kmax / 2 + 1) + 16) + 64) & ~(size_t)63);
      if (!j.stab[t]) j.failed = 1;
    }
  }
  j.ahead = nt;
  if (!j.failed) lq_prep_run(ctx, &prep);
  if (!j.failed) xphase(ctx, &j, j.nb1, phase1, maxn, (double)total * (double)I * (double)D);
  if (!j.failed) {
    if (total * F < 32768) { /* (decode: a row or two -- not worth waking the pool for) */
      for (int64_t rr = 0; rr < total; rr++) phase2(&j, rr);
    } else {
      moec_parallel_for(ctx, total, phase2, &j);
    }
  }
  if (!j.failed) xphase(ctx, &j, j.nb3, phase3, maxn, (double)total * (double)D * (double)F);
  for (int t = 0; t < nt; t++) { free(j.pack[t]); free(j.stab[t]); }
  moec_scratch_free(j.XR); free(j.XS); moec_scratch_free(j.AR); free(j.AS); moec_scratch_free(j.XB); moec_scratch_free(j.AB);
  moec_scratch_free(j.XH); moec_scratch_free(j.AH);
  moec_scratch_free(j.XQ); moec_scratch_free(j.AQ); free(j.XQS); free(j.AQS); free(j.XQZ); free(j.AQZ);
  free(row0); free(slot); moec_scratch_free(X); moec_scratch_free(H); moec_scratch_free(A);
  if (j.failed == 2) return moec_fail(ctx, PAIRS_MISMATCH, MOEC_I8PANEL_LAYOUT_VERSION, NR);
  if (j.failed == 3) return moec_fail(ctx, PAIRS_MISMATCH, MOEC_W4A8_LAYOUT_VERSION, NR);
  if (j.failed) return moec_fail(ctx, "out of memory in the expert GEMMs");
  return 0;
}

/* ---- dense linear layers with quantised weights (moec.linear_q) --------------------------------
 * One [N, K] weight in the experts' formats, run by the experts' kernels above (a stack of one expert):
 * the same dequantisation, panels, tiles and GEMVs, no second copy of any of them.  Work items are
 * (row block, run of NR-column blocks); at one or two rows (decode) the GEMVs stream the narrow rows
 * and the columns are split between the threads, so one token uses every core. */
typedef struct {
  wview v;
  int64_t M, N, K, nbk, rb, cpi, nrb, ncb;
  const float *X;           /* [M, K] (bf16 mode: rounded to bf16) */
  float *XR, *XS;           /* int4 GEMV: rows prepared by prep_x4 */
  uint32_t *XB;             /* bf16 (vdpbf16ps, every row count): rows as bf16 pairs */
  uint8_t *XQ;              /* w8a8: rows as biased int8, scales XQS; w4a8: signed codes per group */
  float *XQS;
  w4z *XQZ;                 /* w4a8: per (row, group) -8 x the code sums (quant_row_g) */
  const void *panels;       /* cached narrow / pair panels, or NULL (packed per item) */
  int kind;                 /* 0 gemv, 1 f32 tile on dequantised panels, 2 tile_wq, 3 tile_i8, 4 tile_bf16,
                             * 5 tile_w4a8, 6 tile_wq_bf16 (int8 / int4 weights, bf16 activations: rows XH) */
  uint32_t *XH;             /* kind 6: the rounded rows as bf16 pairs */
  const float *XF;          /* kinds 4 and 6 where BF16_F32_ROWS (K even): the rounded rows as f32, else NULL */
  const float *bias;
  float *y;
  float *pack[64], *stab[64];
  const float *scales;      /* kind 2, symmetric int4: cached scale tables, or NULL (built per item) */
  const w4src *p4;          /* kind 5: the compile-time panels, or NULL (packed per item) */
  int64_t ahead;            /* kind 3: items between this thread's one and its next (the threads) */
} lqjob;

static void lq_task(void *arg, int64_t item, int tid) {
  lqjob *j = (lqjob *)arg;
  int64_t rb = item % j->nrb, cc = item / j->nrb;
  int64_t r0 = rb * j->rb, r1 = r0 + j->rb < j->M ? r0 + j->rb : j->M;
  int64_t b0 = cc * j->cpi, b1 = b0 + j->cpi < j->nbk ? b0 + j->cpi : j->nbk;
  const wview *v = &j->v;
  const int64_t K = j->K, N = j->N;
  for (int64_t b = b0; b < b1; b++) {
    int64_t c0 = b * NR, nb = N - c0 < NR ? N - c0 : NR;
    const void *panel = NULL;
    const float *st = NULL;
    w4p p4;
    if (j->kind == 5) {
      p4 = w4a8_panel(v, j->p4, 0, j->nbk, b, c0, nb, j->pack[tid]);
    } else if (j->kind == 3) {
      panel = j->panels ? (const void *)((const int8_t *)j->panels + (size_t)b * i8_panel_bytes(K)) : j->pack[tid];
      if (!j->panels) pack_i8_panel(v->w, K, c0, nb, j->pack[tid]);
    } else if (j->kind == 2 || j->kind == 6) {
      panel = wq_panel(v, (const uint8_t *)j->panels, 0, j->nbk, b, c0, nb, wq_narrow_buf(j->pack[tid], K));
      st = wq_scales(v, j->scales, 0, j->nbk, b, c0, nb, j->stab[tid]);
      if (j->kind == 6) { /* the narrow panel, widened into the pack buffer by the item's first row block */
      } else if (r1 - r0 > wq_deq_rows(v)) { /* one dequantisation for the item's rows, then the f32 tile (kind 1) */
        wq_dequant_panel(v, panel, st, j->pack[tid]);
        panel = j->pack[tid];
      }
    }
    else if (j->kind == 4) { /* the compile-time pair panels, or this item's */
      panel = j->panels ? (const void *)((const uint32_t *)j->panels + (size_t)b * ((K + 1) / 2) * NR) : j->pack[tid];
      if (!j->panels) pack_b_bf16((const uint16_t *)v->w, K, c0, nb, (uint32_t *)j->pack[tid]);
    }
    if (j->kind == 0) {
      for (int64_t r = r0; r < r1; r += GEMV_ROWS) {
        int64_t n = r1 - r < GEMV_ROWS ? r1 - r : GEMV_ROWS;
        gemv_w(v, 0, c0, nb, j->X + r * K, K, n, j->y + r * N + c0, N, j->XR ? j->XR + r * K : NULL,
               j->XS ? j->XS + r * (K / v->G) : NULL);
      }
    } else if (j->kind == 5) {
      const int64_t ng = K / v->G, ld = ng * g4_of(v->G);
      for (int64_t r = r0; r < r1; r += W4A8_MR) {
        int m = r1 - r < W4A8_MR ? (int)(r1 - r) : W4A8_MR;
        tile_w4a8(v, (const int8_t *)j->XQ + r * ld, ld, j->XQS + r * ng, j->XQZ + r * ng, m, &p4,
                  j->y + r * N + c0, N, nb);
      }
    } else {
      const int amr = j->kind == 3 || j->kind == 4 || j->kind == 6 ? AMX_ROWS(MR) : MR; /* (rt_amx.h) */
      for (int64_t r = r0; r < r1; r += amr) {
        int m = r1 - r < amr ? (int)(r1 - r) : amr;
        float *C = j->y + r * N + c0;
        if (j->kind == 3) {
          /* (the next block: this item's next, else the first of this thread's next item) */
          const int64_t nxi = item + j->ahead, pb = (int64_t)i8_panel_bytes(K);
          const int64_t nxb = b + 1 < b1 ? b + 1 : nxi < j->nrb * j->ncb ? nxi / j->nrb * j->cpi : -1;
          int64_t pfs = 0;
          const char *pf = m <= 4 ? NULL : i8_next_slice(j->panels && nxb >= 0 ? (const int8_t *)j->panels + nxb * pb : NULL,
                                                         (size_t)pb, (r - r0) / amr, I8_PF_BLOCKS(r1 - r0, amr), KP4(K) / 4, &pfs);
          AMX_I8_OR(tile_i8_pf, j->XQ + r * KP4(K), KP4(K), m, (const int8_t *)panel, K, j->XQS + r, v->s + c0, C, N, nb, pf,
                    pfs);
        } else if (j->kind == 2) { /* the narrow panel, or dequantised into the pack buffer (above) */
          /* (the next block: this item's next, else the first of this thread's next item) */
          const int64_t nxi = item + j->ahead;
          const int64_t nxb = b + 1 < b1 ? b + 1 : nxi < j->nrb * j->ncb ? nxi / j->nrb * j->cpi : -1;
          int64_t pfs = 0;
          const char *pf = m <= 4 ? NULL : wq_next_slice(v, (const uint8_t *)j->panels, nxb, j->nbk, (r - r0) / amr,
                                                         I8_PF_BLOCKS(r1 - r0, amr), &pfs);
          if (r1 - r0 <= wq_deq_rows(v)) tile_wq_pf(v, j->X + r * K, K, m, panel, st, C, N, nb, pf, pfs);
          else tile_pf(j->X + r * K, K, m, (const float *)panel, K, C, N, nb, pf, pfs);
        } else if (j->kind == 4)
        {
          if (!AMX_BF16(j->XB + r * ((K + 1) / 2), (K + 1) / 2, m, (const uint32_t *)panel, C, N, nb)) /* (rt_amx.h) */
            tile_bf16_f(j->XB + r * ((K + 1) / 2), j->XF ? j->XF + r * K : NULL, (K + 1) / 2, m, (const uint32_t *)panel,
                        C, N, nb);
        } else if (j->kind == 6) {
          /* (the next block: this item's next, else the next item's first: items run row blocks first) */
          const int64_t nx = b + 1 < b1 ? b + 1 : rb + 1 < j->nrb ? b0 : b1;
          wq_prefetch_next(v, (const uint8_t *)j->panels, j->scales, nx, j->nbk, (r - r0) / amr, (r1 - r0 + amr - 1) / amr);
          const float *xf = j->XF ? j->XF + r * K : NULL;
          if (wq_bf16_direct(v, xf) && !AMX_WANTS(m)) tile_wq(v, xf, K, m, panel, st, C, N, nb);
          else if (r == r0) tile_wq_bf16_first(v, panel, 0, c0, j->XH + r * ((K + 1) / 2), xf, m, (uint32_t *)j->pack[tid], st, C, N, nb);
          else tile_wq_bf16(v, j->XH + r * ((K + 1) / 2), xf, m, (const uint32_t *)j->pack[tid], st, C, N, nb);
        }
        else
          tile(j->X + r * K, K, m, (const float *)panel, K, C, N, nb);
      }
    }
    if (j->bias)
      for (int64_t r = r0; r < r1; r++)
        for (int64_t c = 0; c < nb; c++) j->y[r * N + c0 + c] += j->bias[c0 + c];
  }
}

#define LQ_GEMV_ITEM_BYTES 65536
int moec_k_linear_q(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w, const moec_tensor *bias,
                    const moec_wq *q, moec_tensor *y) {
  static const int wdt[4] = {MOEC_F32, MOEC_BF16, MOEC_I8, MOEC_U8};
  int mode = q->mode;
  if (mode < MOEC_WQ_BF16 || mode > MOEC_WQ_INT4 || x->dtype != MOEC_F32 || w->dtype != wdt[mode] || w->rank != 2 ||
      x->rank < 1)
    return moec_fail(ctx, "linear_q: unsupported operand types");
  const int64_t N = w->shape[0], K = mode == MOEC_WQ_INT4 ? 2 * w->shape[1] : w->shape[1];
  if (x->shape[x->rank - 1] != K) return moec_fail(ctx, "linear_q: x has %lld features, the weight %lld",
                                                   (long long)x->shape[x->rank - 1], (long long)K);
  if (bias && (bias->dtype != MOEC_F32 || moec_numel(bias->rank, bias->shape) != N)) return moec_fail(ctx, "linear_q: bad bias");
  int64_t G = mode == MOEC_WQ_INT4 && q->group ? q->group : K;
  if (mode == MOEC_WQ_INT4 && (K % 2 || G <= 0 || K % G)) return moec_fail(ctx, "linear_q: int4 group does not divide K");
  int64_t yshape[MOEC_MAX_RANK];
  for (int d = 0; d < x->rank - 1; d++) yshape[d] = x->shape[d];
  yshape[x->rank - 1] = N;
  /* (w8a8 / w4a8: tile_i8 / tile_w4a8 store every element (kinds 3 and 5 below), so y is not zeroed first: the
   * memset was 1.1% of a w8a8 prefill profile at 256 tokens) */
  const int stores_all = q->aq == 1 && (mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4);
  if ((stores_all ? moec_alloc_uninit : moec_alloc)(ctx, y, MOEC_F32, x->rank, yshape)) return -1;
  const int64_t M = moec_numel(y->rank, y->shape) / (N ? N : 1);
  if (M == 0 || N == 0) return 0;
  float *yd = (float *)y->data;
  if (K == 0) { /* empty reduction: the bias (or zero) */
    for (int64_t r = 0; r < M; r++)
      for (int64_t c = 0; c < N; c++) yd[r * N + c] = bias ? ((const float *)bias->data)[c] : 0.f;
    return 0;
  }
  lqjob j;
  memset(&j, 0, sizeof j);
  w4src src4; /* (w4a8's compile-time panels, read through j.p4) */
  j.v = (wview){mode, w->data, q->s_in ? (const float *)q->s_in->data : NULL,
                q->z_in ? (const float *)q->z_in->data : NULL, N, K, G};
  j.M = M; j.N = N; j.K = K; j.nbk = (N + NR - 1) / NR;
  j.bias = bias ? (const float *)bias->data : NULL;
  j.y = yd;
  const float *xd = (const float *)x->data;
  float *xcopy = NULL;
  int failed = 0;
  const int abf = q->aq == 2 && (mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4); /* bf16 activations */
  lqprep prep = {0};
  prep.x = xd, prep.M = M, prep.K = K, prep.G = G;
  if (abf && M <= GEMV_ROWS) { /* the GEMV of bf16 activations takes x rounded to bf16 (the others: pairs) */
    xcopy = (float *)moec_scratch_alloc(sizeof(float) * (size_t)(M * K + 16));
    if (!xcopy) return moec_fail(ctx, "out of memory");
    prep.xr = xcopy;
    xd = xcopy;
  }
  j.X = xd;
  if (q->aq == 1 && mode == MOEC_WQ_INT4) { /* w4a8: every row count (decode streams the cached panels) */
    j.kind = 5;
    const int64_t ng = K / G, ld = ng * g4_of(G);
    j.XQ = (uint8_t *)moec_scratch_alloc((size_t)(M * ld) + 4);
    j.XQS = (float *)malloc(sizeof(float) * (size_t)(M * ng + 1));
    j.XQZ = (w4z *)malloc(sizeof(w4z) * (size_t)(M * ng + 1));
    if (!j.XQ || !j.XQS || !j.XQZ) failed = 1;
    else
      prep.XQ = j.XQ, prep.XQS = j.XQS, prep.XQZ = j.XQZ, prep.ld = ld;
    int bad4 = 0;
    if (!failed) j.p4 = w4a8_compiled(q->pk_in, q->pks_in, q->pkz_in, &j.v, 1, &src4, &bad4);
    if (bad4) failed = 3;
  } else if (q->aq == 1 && mode == MOEC_WQ_INT8) {
    j.kind = 3;
    j.XQ = (uint8_t *)moec_scratch_alloc((size_t)(M * KP4(K)) + 4);
    j.XQS = (float *)malloc(sizeof(float) * (size_t)(M + 1));
    if (!j.XQ || !j.XQS) failed = 1;
    else
      prep.XQ = j.XQ, prep.XQS = j.XQS;
    int bad8 = 0;
    if (!failed) j.panels = i8_panels(q->pk_in, (const int8_t *)w->data, 1, N, K, &bad8);
    if (bad8) failed = 2;
  }
  else if (mode == MOEC_WQ_BF16) {
    /* bf16, every row count (decode too): tile_bf16 on the pair panels packed at compile time */
    int bad = 0;
    j.panels = compiled_pairs(q->pk_in, 1, N, K, &bad);
    if (bad) { moec_scratch_free(xcopy); return moec_fail(ctx, PAIRS_MISMATCH, MOEC_PAIR_LAYOUT_VERSION, NR); }
    int64_t P = (K + 1) / 2;
    j.kind = 4;
    j.XB = (uint32_t *)moec_scratch_alloc(sizeof(uint32_t) * (size_t)(M * P + 1));
    if (!j.XB) failed = 1;
    else
      prep.XB = j.XB;
  }
  else if (M <= GEMV_ROWS) {
    j.kind = 0;
    if (mode == MOEC_WQ_INT4) {
      j.XR = (float *)moec_scratch_alloc(sizeof(float) * (size_t)(M * K + 16));
      j.XS = (float *)malloc(sizeof(float) * (size_t)(M * (K / G) + 1));
      if (!j.XR || !j.XS) failed = 1; /* (the rows prepared after lq_prep_run: xd may be its bf16 copy) */
    }
  } else if (mode == MOEC_WQ_INT8 || mode == MOEC_WQ_INT4) {
    j.kind = abf ? 6 : 2;
    j.panels = packed_panels_wq(&j.v, 1);
    j.scales = cached_scale_tables(&j.v, 1);
    if (abf) { /* bf16 activations above GEMV_ROWS rows: the rounded rows as bf16 pairs */
      j.XH = (uint32_t *)moec_scratch_alloc(sizeof(uint32_t) * (size_t)(M * ((K + 1) / 2) + 1));
      if (!j.XH) failed = 1;
      else
        prep.XB = j.XH;
    }
  }
  if (BF16_F32_ROWS && !failed && (j.kind == 4 || j.kind == 6) && K % 2 == 0) { /* the rounded rows as f32 too */
    if (!xcopy) {
      xcopy = (float *)moec_scratch_alloc(sizeof(float) * (size_t)(M * K + 16));
      if (!xcopy) failed = 1;
      else
        prep.xr = xcopy;
    }
    j.XF = xcopy;
  }
  if (!failed && (prep.xr || prep.XB || prep.XQ)) lq_prep_run(ctx, &prep);
  if (!failed && j.kind == 0 && mode == MOEC_WQ_INT4) /* int4 GEMV rows, from x or its rounded copy (filled above) */
    for (int64_t r = 0; r < M; r++) prep_x4(xd + r * K, K, G, j.XR + r * K, j.XS + r * (K / G));
  /* rows per item: all of them at decode; else a block whose f32 rows stay in L2 (~256 KiB) */
  const int64_t rstep = j.kind == 5 ? W4A8_MR : MR; /* (w4a8's rows are int8 codes: 4x as many fit) */
  int64_t rb = j.kind == 0 ? M : (j.kind == 5 ? 262144 / K : j.kind == 6 ? 131072 / K : 65536 / K) / rstep * rstep;
  if (rb < rstep) rb = rstep;
  if (rb > M) rb = M;
  j.rb = rb;
  j.nrb = (M + rb - 1) / rb;
  double work = (double)M * (double)N * (double)K;
  int nt = moec_num_threads(ctx, 1 << 30);
  if (work < 262144.0) nt = 1;
  /* about 16 items per thread, a run of at least one column block; the GEMVs (kind 0) at least LQ_GEMV_ITEM_BYTES
   * of weights an item: a thread's item streams one stretch of the weight, its prefetch reaching into its own next
   * rows rather than into the block the other thread took (a [1024, 1024] int4 projection: 8 items, not 32) */
  int64_t want = (int64_t)nt * 16;
  if (j.kind == 0) {
    const int64_t wb = N * (mode == MOEC_WQ_INT4 ? K / 2 : K) / LQ_GEMV_ITEM_BYTES;
    if (wb < want) want = wb > nt ? wb : nt;
  }
  int64_t split = j.nrb >= want ? 1 : (want + j.nrb - 1) / j.nrb;
  if (split > j.nbk) split = j.nbk;
  j.cpi = (j.nbk + split - 1) / split;
  j.ncb = (j.nbk + j.cpi - 1) / j.cpi;
  int64_t items = j.nrb * j.ncb;
  if (items < nt) nt = (int)items;
  if (nt > 64) nt = 64;
  if (j.kind != 0 && !(j.kind == 4 && j.panels)) {
    size_t pb = j.kind == 2 || j.kind == 6 ? wq_pack_bytes(K) : sizeof(float) * (size_t)(K * NR + 16), pbi = i8_panel_bytes(K) + 64;
    if (j.kind == 5 && w4a8_panel_bytes(&j.v) + 64 > pbi) pbi = w4a8_panel_bytes(&j.v) + 64;
    for (int t = 0; t < nt && !failed; t++) {
      j.pack[t] = (float *)aligned_alloc(64, ((pb > pbi ? pb : pbi) + 63) & ~(size_t)63);
      if (!j.pack[t]) failed = 1;
      if (j.kind == 2 || j.kind == 6) {
        j.stab[t] = (float *)aligned_alloc(64, (sizeof(float) * (size_t)(2 * NR * (K / 2 + 1) + 16) + 63) & ~(size_t)63);
        if (!j.stab[t]) failed = 1;
      }
    }
  }
  j.ahead = nt;
  if (!failed) {
    if (nt <= 1) {
      for (int64_t i = 0; i < items; i++) lq_task(&j, i, 0);
    } else {
      moec_ctx sub = *ctx;
      sub.nthreads = nt;
      moec_parallel_for_tid(&sub, items, lq_task, &j);
    }
  }
  for (int t = 0; t < 64; t++) { free(j.pack[t]); free(j.stab[t]); }
  moec_scratch_free(xcopy); moec_scratch_free(j.XR); free(j.XS); moec_scratch_free(j.XB); moec_scratch_free(j.XQ);
  moec_scratch_free(j.XH); free(j.XQS); free(j.XQZ);
  if (failed == 2) return moec_fail(ctx, PAIRS_MISMATCH, MOEC_I8PANEL_LAYOUT_VERSION, NR);
  if (failed == 3) return moec_fail(ctx, PAIRS_MISMATCH, MOEC_W4A8_LAYOUT_VERSION, NR);
  if (failed) return moec_fail(ctx, "out of memory in a quantised linear layer");
  return 0;
}

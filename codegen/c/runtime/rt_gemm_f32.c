/* f32 dense GEMM/GEMV for MatMul and Gemm: cache-blocked, register-blocked, threaded over rows and
 * columns.
 *
 *   C[m, n] = alpha * sum_k A[m, k] B[k, n]  (+ beta * c[m, n], c broadcast through strides)
 *
 * B comes either as panels packed at compile time (a constant weight: [ceil(N/NR)][K][NR], the NR
 * columns of a panel contiguous for each k, the last panel zero-padded; see codegen/c/gemm_pack.py)
 * or as an ordinary strided matrix (an activation: attention scores, attention x V).  A strided B is
 * read in place where a panel's NR columns are contiguous, and otherwise copied panel slice by panel
 * slice into a small per-task buffer.
 *
 * Loop nest (GotoBLAS order, B pre-packed): a task owns a block of MC rows and a run of panels; for
 * each panel and each KC slice of the reduction the slice stays in cache while the micro-kernel sweeps
 * the block's rows MR at a time (the A block MC x K stays in L2; a thread packs a row block's A once into
 * its own buffer and keeps it for its next runs of the same block).  A prepacked panel is read in place,
 * so its slice is long: up to 256 KiB (KC x NR floats; the whole reduction at K <= 2048 on AVX-512), in
 * L2 beside the A block, slices of equal length; each C tile is then loaded and stored once per slice
 * instead of once per 16 KiB (one core, [T,1024]x[1024,32000]: 7-8% less time at T = 64 and 256; at
 * K = 4096, 18-20%; on Ice Lake-SP with the 12 x 32 tile and its prefetches, 256 KiB and 32 KiB slices
 * measured within noise).  A B copied slice by slice keeps 16 KiB slices (the copy buffer).  The
 * micro-kernel keeps an MR x NR tile of C in vector registers (width MOEC_VBYTES from the target's
 * compiler flags: 64 on AVX-512 (12 x 32, intrinsics), 32 on AVX2 (6 x 16, intrinsics), 16 otherwise
 * (4 x 8, GCC vector extensions)) and does, per k, two vector loads of B, m broadcasts of A and 2m FMAs;
 * it is instantiated for every m <= MR so a GEMV (m = 1) does no wasted work.  A row block is cut into
 * row tiles of near-equal height (sg_tile_rows), and M into row blocks of near-equal height.  Tasks are handed out dynamically over (batch, row block,
 * run of panels); at one row the panels are split between the threads, so one token uses every core.
 * The epilogue (alpha, beta * c: a Gemm's bias or any broadcast addend) is applied as the last KC
 * slice of a tile is stored. */
#include "rt_linalg.h"

#include <stdlib.h>

#ifndef MOEC_VBYTES
#define MOEC_VBYTES 16
#endif
#define GVL (MOEC_VBYTES / 4)
#define GNR (2 * GVL)
#if GVL >= 16 && defined(__AVX512F__)
#define GMR 12 /* 12 x 2 zmm accumulators (sg_tile_avx512) */
#elif GVL >= 16
#define GMR 8 /* 8 x 2 zmm accumulators */
#elif GVL >= 8
#define GMR 6 /* 6 x 2 ymm */
#else
#define GMR 4
#endif
#define GKC (4096 / GNR)   /* a copied B slice: KC x NR floats = 16 KiB */
#define GKCP (65536 / GNR) /* a slice of a prepacked panel, read in place: at most 256 KiB */
#define GMC 256

typedef float gvf __attribute__((vector_size(MOEC_VBYTES), aligned(4)));
typedef int32_t gvi __attribute__((vector_size(MOEC_VBYTES)));
static inline gvf gsplat(float v) { return __builtin_shuffle((gvf){v}, (gvi){0}); }
static inline gvf gld(const float *p) { gvf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void gst(float *p, gvf v) { __builtin_memcpy(p, &v, sizeof v); }

int moec_sgemm_panel_width(void) { return GNR; }

typedef struct {
  const moec_sgemm *g;
  int64_t nbatch, nrb, ncc, cp, kc, mc;
  const int64_t *aoff, *boff; /* per batch (NULL: one batch) */
  int64_t cstride;           /* C elements per batch */
  float *abuf;               /* per thread: mc x K floats (the task's rows of A, packed) */
  int64_t abuf_len;
  int64_t *held;             /* per thread (16 apart: no false sharing): the (batch, row block) its abuf
                              * holds, -1 for none */
} sg_job;

static inline void sg_store_row0(const moec_sgemm *g, float *C, const float *acc, int nb, int64_t row,
                                 int64_t col0, int last);

/* the epilogue of one tile row: C[0..nb) = act(alpha * acc + beta * c(row, col0 + j)) (act: moec.linear's) */
static inline void sg_store_row(const moec_sgemm *g, float *C, const float *acc, int nb, int64_t row,
                                int64_t col0, int last) {
  sg_store_row0(g, C, acc, nb, row, col0, last);
  if (last && g->act) moec_linear_act_row(C, nb, g->act);
}

static inline void sg_store_row0(const moec_sgemm *g, float *C, const float *acc, int nb, int64_t row,
                                 int64_t col0, int last) {
  if (!last || (g->alpha == 1.0f && !g->c)) {
    for (int j = 0; j < nb; j++) C[j] = acc[j];
    return;
  }
  float al = g->alpha, be = g->beta;
  if (!g->c) {
    for (int j = 0; j < nb; j++) C[j] = al * acc[j];
    return;
  }
  const float *c = g->c + row * g->scm + col0 * g->scn;
  if (g->scn == 1) for (int j = 0; j < nb; j++) C[j] = al * acc[j] + be * c[j];
  else if (g->scn == 0) for (int j = 0; j < nb; j++) C[j] = al * acc[j] + be * c[0];
  else for (int j = 0; j < nb; j++) C[j] = al * acc[j] + be * c[j * g->scn];
}

/* C tile [m x nb] (+)= Ap[kn][MR] (A's rows, packed) . B[kn x NR] (rows ldb apart).  m is a
 * compile-time constant at every call (always_inline), so the tile loops unroll into registers.
 * first: start from zero (else from C); last: apply the epilogue. */
static inline __attribute__((always_inline)) void sg_tile(const int m, const moec_sgemm *g, const float *Ap,
                                                          const float *B, int64_t ldb, int64_t kn, float *C, int nb,
                                                          int first, int last, int64_t row, int64_t col,
                                                          const char *pf, int64_t pfs) {
  (void)pf, (void)pfs;
  const int64_t ldc = g->ldc;
  gvf acc[GMR][2];
#pragma GCC unroll 16
  for (int r = 0; r < m; r++) {
    if (first) {
      acc[r][0] = acc[r][1] = (gvf){0};
    } else if (nb == GNR) {
      acc[r][0] = gld(C + r * ldc);
      acc[r][1] = gld(C + r * ldc + GVL);
    } else {
      float t[GNR] = {0};
      for (int j = 0; j < nb; j++) t[j] = C[r * ldc + j];
      acc[r][0] = gld(t);
      acc[r][1] = gld(t + GVL);
    }
  }
  for (int64_t k = 0; k < kn; k++) {
    gvf b0 = gld(B + k * ldb), b1 = gld(B + k * ldb + GVL);
#pragma GCC unroll 16
    for (int r = 0; r < m; r++) {
      gvf x = gsplat(Ap[k * GMR + r]);
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < m; r++) {
    if (nb == GNR && (!last || (g->alpha == 1.0f && !g->c && !g->act))) {
      gst(C + r * ldc, acc[r][0]);
      gst(C + r * ldc + GVL, acc[r][1]);
    } else {
      float t[GNR];
      gst(t, acc[r][0]);
      gst(t + GVL, acc[r][1]);
      sg_store_row(g, C + r * ldc, t, nb, row + r, col, last);
    }
  }
}

#if GVL == 16 && defined(__AVX512F__)
#include <immintrin.h>
/* AVX-512: 12 rows x 32 columns (24 zmm accumulators, two B vectors and a broadcast of A: 27 of the 32
 * registers, no spill in GCC 12's output) written with intrinsics.  Ice Lake-SP, one core, [256,1024] x
 * [1024,32000] (per-thread CPU time, best of interleaved runs): the 8 x 32 generic-vector tile 80-100 GFLOP/s,
 * this tile 115-135 (the FMA peak ~150-160); 14 x 32 measured within noise of 12 x 32; an FMA with the
 * broadcast folded in ({1to16}: two loads per row instead of one) ~30% slower; k unrolled by 2 or 4 no
 * faster.  Per k: a T0 prefetch of B SG_PFD steps ahead (the slice comes from L2: 5% faster) and a T1
 * prefetch of a share of the next panel's slice (pf, pfs bytes per k: the first row tile of a panel
 * otherwise waits on memory; 5%).  1- and 2-row tiles prefetch nothing (the GEMV streams B once).  Every
 * accumulator's FMAs run in k order, from zero or the stored C: the bits do not depend on m or on the
 * tiling (tests/test_dense_gemm.py). */
#define SG_PFD 16 /* the T0 prefetch distance of B, in k steps */
static inline __attribute__((always_inline)) void sg_tile_avx512(const int m, const moec_sgemm *g, const float *Ap,
                                                                 const float *B, int64_t ldb, int64_t kn, float *C,
                                                                 int nb, int first, int last, int64_t row,
                                                                 int64_t col, const char *pf, int64_t pfs) {
  const int64_t ldc = g->ldc;
  __m512 c0[GMR], c1[GMR];
#pragma GCC unroll 16
  for (int r = 0; r < m; r++) {
    if (first) {
      c0[r] = c1[r] = _mm512_setzero_ps();
    } else if (nb == GNR) {
      c0[r] = _mm512_loadu_ps(C + r * ldc);
      c1[r] = _mm512_loadu_ps(C + r * ldc + 16);
    } else {
      const __mmask16 k0 = (__mmask16)(nb >= 16 ? 0xffff : (1u << nb) - 1),
                      k1 = (__mmask16)(nb >= 32 ? 0xffff : nb <= 16 ? 0 : (1u << (nb - 16)) - 1);
      c0[r] = _mm512_maskz_loadu_ps(k0, C + r * ldc);
      c1[r] = _mm512_maskz_loadu_ps(k1, C + r * ldc + 16);
    }
  }
  for (int64_t k = 0; k < kn; k++) {
    const float *b = B + k * ldb, *a = Ap + k * GMR;
    if (m > 2) {
      if (pf) _mm_prefetch(pf + k * pfs, _MM_HINT_T1);
      _mm_prefetch((const char *)(b + SG_PFD * ldb), _MM_HINT_T0);
      _mm_prefetch((const char *)(b + SG_PFD * ldb + 16), _MM_HINT_T0);
    }
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
    for (int r = 0; r < m; r++) {
      const __m512 x = _mm512_set1_ps(a[r]);
      c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < m; r++) {
    if (nb == GNR && (!last || (g->alpha == 1.0f && !g->c && !g->act))) {
      _mm512_storeu_ps(C + r * ldc, c0[r]);
      _mm512_storeu_ps(C + r * ldc + 16, c1[r]);
    } else {
      float t[GNR];
      _mm512_storeu_ps(t, c0[r]);
      _mm512_storeu_ps(t + 16, c1[r]);
      sg_store_row(g, C + r * ldc, t, nb, row + r, col, last);
    }
  }
}
#define SG_TILE sg_tile_avx512
#define SG_EVEN_TILES 1
#elif GVL == 8 && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* AVX2 + FMA (an AVX2 build, no AVX-512): the same tile (6 rows x 16 columns: 12 ymm accumulators, two
 * B vectors and a broadcast of A, 15 of the 16 registers) written with intrinsics.  The generic-vector
 * sg_tile above compiles on AVX2 to accumulators kept in memory (GCC 12 moved each 32-byte memcpy through
 * two xmm halves on the stack and gave up keeping the tile in registers): 3-12 GFLOP/s a core on an
 * AVX-512 host running the AVX2 build, where this reaches OpenBLAS's Haswell kernel
 * (benchmarks/bench_avx2_kernels.py).  K unrolled by 2 only: unrolled by 4, GCC's register allocation spilled
 * two accumulators of the 6-row tile to the stack (75 against 105 GFLOP/s); software prefetch of B gained
 * nothing (the panel is read in order) and cost 20% at one row.  Up to 6 rows the FMAs run in k order per
 * accumulator, as sg_tile's; 1 to 3 rows sum even and odd k apart (4 to 12 chains instead of 2 to 6: the
 * FMA latency bounds a 1-row tile otherwise). */
static inline __attribute__((always_inline)) void sg_tile_avx2(const int m, const moec_sgemm *g, const float *Ap,
                                                               const float *B, int64_t ldb, int64_t kn, float *C,
                                                               int nb, int first, int last, int64_t row, int64_t col,
                                                               const char *pf, int64_t pfs) {
  (void)pf, (void)pfs;
  const int64_t ldc = g->ldc;
  __m256 c0[GMR], c1[GMR];
#pragma GCC unroll 8
  for (int r = 0; r < m; r++) {
    if (first) {
      c0[r] = c1[r] = _mm256_setzero_ps();
    } else if (nb == GNR) {
      c0[r] = _mm256_loadu_ps(C + r * ldc);
      c1[r] = _mm256_loadu_ps(C + r * ldc + 8);
    } else {
      float t[GNR] = {0};
      for (int j = 0; j < nb; j++) t[j] = C[r * ldc + j];
      c0[r] = _mm256_loadu_ps(t);
      c1[r] = _mm256_loadu_ps(t + 8);
    }
  }
  /* one to three rows: even and odd k in two accumulator sets (4 to 12 chains of FMAs instead of 2 to 6) */
  const int split = m <= 3;
  __m256 d0[3], d1[3];
#pragma GCC unroll 3
  for (int r = 0; r < 3; r++) d0[r] = d1[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 2 <= kn; k += 2) {
#pragma GCC unroll 2
    for (int u = 0; u < 2; u++) {
      const float *b = B + (k + u) * ldb, *a = Ap + (k + u) * GMR;
      const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
      for (int r = 0; r < m; r++) {
        const __m256 x = _mm256_broadcast_ss(a + r);
        if (split && (u & 1)) {
          d0[r] = _mm256_fmadd_ps(x, b0, d0[r]);
          d1[r] = _mm256_fmadd_ps(x, b1, d1[r]);
        } else {
          c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
          c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
        }
      }
    }
  }
  if (split)
#pragma GCC unroll 3
    for (int r = 0; r < m; r++) {
      c0[r] = _mm256_add_ps(c0[r], d0[r]);
      c1[r] = _mm256_add_ps(c1[r], d1[r]);
    }
  for (; k < kn; k++) {
    const float *b = B + k * ldb, *a = Ap + k * GMR;
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
    for (int r = 0; r < m; r++) {
      const __m256 x = _mm256_broadcast_ss(a + r);
      c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < m; r++) {
    if (nb == GNR && (!last || (g->alpha == 1.0f && !g->c && !g->act))) {
      _mm256_storeu_ps(C + r * ldc, c0[r]);
      _mm256_storeu_ps(C + r * ldc + 8, c1[r]);
    } else {
      float t[GNR];
      _mm256_storeu_ps(t, c0[r]);
      _mm256_storeu_ps(t + 8, c1[r]);
      sg_store_row(g, C + r * ldc, t, nb, row + r, col, last);
    }
  }
}
#define SG_TILE sg_tile_avx2
#define SG_EVEN_TILES 0
#else
#define SG_TILE sg_tile
#define SG_EVEN_TILES 1
#endif

#define SG_CASE(M_) \
  case M_: SG_TILE(M_, g, Ap, B, ldb, kn, C, nb, first, last, row, col, pf, pfs); break;

static void sg_tile_m(int m, const moec_sgemm *g, const float *Ap, const float *B, int64_t ldb, int64_t kn, float *C,
                      int nb, int first, int last, int64_t row, int64_t col, const char *pf, int64_t pfs) {
  switch (m) {
    SG_CASE(1)
    SG_CASE(2)
    SG_CASE(3)
    SG_CASE(4)
#if GMR > 4
    SG_CASE(5)
    SG_CASE(6)
#endif
#if GMR > 6
    SG_CASE(7)
    SG_CASE(8)
#endif
#if GMR > 8
    SG_CASE(9)
    SG_CASE(10)
    SG_CASE(11)
    SG_CASE(12)
#endif
    default: break;
  }
}

/* A row block of n rows in ceil(n / MR) row tiles of near-equal height (64 rows at MR = 12: four tiles of 11
 * and two of 10 rather than five of 12 and one of 4): tile ti's first row (from the block's) and height */
static inline int64_t sg_tile_rows(int64_t n, int64_t ti, int *m) {
#if SG_EVEN_TILES
  int64_t nti = (n + GMR - 1) / GMR, base = n / nti, ext = n % nti;
#else /* the AVX2 tile sums 1 to 3 rows in another order than 4 to 6: its tiles stay MR high, the last one
       * the rest, so that each row keeps its bits */
  int64_t base = GMR, ext = 0;
  if (ti * GMR + GMR > n) {
    *m = (int)(n - ti * GMR);
    return ti * GMR;
  }
#endif
  *m = (int)(base + (ti < ext));
  return ti * base + (ti < ext ? ti : ext);
}

/* rows [r0, r1) of A, all of K, as row tiles (sg_tile_rows) [tile][k][MR] (one contiguous stream per tile;
 * rows of A a power of two apart would otherwise fall into the same L1 sets) */
static void sg_pack_a(const moec_sgemm *g, const float *A, int64_t r0, int64_t r1, float *Ap) {
  const int64_t K = g->K, sam = g->sam, sak = g->sak;
  for (int64_t ti = 0; ti * GMR < r1 - r0; ti++) {
    int m;
    const int64_t m0 = r0 + sg_tile_rows(r1 - r0, ti, &m);
    float *dst = Ap + ti * GMR * K;
    for (int r = 0; r < m; r++) {
      const float *src = A + (m0 + r) * sam;
      if (sak == 1) for (int64_t k = 0; k < K; k++) dst[k * GMR + r] = src[k];
      else for (int64_t k = 0; k < K; k++) dst[k * GMR + r] = src[k * sak];
    }
  }
}

static void sg_task(void *arg, int64_t item, int tid) {
  const sg_job *j = (const sg_job *)arg;
  const moec_sgemm *g = j->g;
  int64_t cc = item % j->ncc, rest = item / j->ncc;
  int64_t rb = rest % j->nrb, bi = rest / j->nrb;
  const int64_t M = g->M, N = g->N, K = g->K, P = (N + GNR - 1) / GNR;
  int64_t r0 = rb * j->mc, r1 = r0 + j->mc < M ? r0 + j->mc : M;
  int64_t p0 = cc * j->cp, p1 = p0 + j->cp < P ? p0 + j->cp : P;
  const float *Bm = g->B ? g->B + (j->boff ? j->boff[bi] : 0) : NULL;
  float *Cb = g->C + bi * j->cstride;
  float *Ap = j->abuf + (int64_t)tid * j->abuf_len;
  if (j->held[tid * 16] != rest) { /* items go out row block by row block: a thread packs its rows once, not
                                    * once per run of panels (at 64 rows, 4% of a 2-thread call's CPU time) */
    sg_pack_a(g, g->A + (j->aoff ? j->aoff[bi] : 0), r0, r1, Ap);
    j->held[tid * 16] = rest;
  }
  float buf[GKC * GNR] __attribute__((aligned(64)));
  for (int64_t p = p0; p < p1; p++) {
    int64_t n0 = p * GNR;
    int nb = (int)(N - n0 < GNR ? N - n0 : GNR);
    int64_t k0 = 0;
    do { /* (once when K == 0: the tile is zero, then the epilogue) */
      int64_t kn = K - k0 < j->kc ? K - k0 : j->kc;
      const float *B;
      int64_t ldb;
      if (g->Bp) {
        B = g->Bp + p * K * GNR + k0 * GNR;
        ldb = GNR;
      } else if (g->sbn == 1 && nb == GNR) {
        B = Bm + k0 * g->sbk + n0;
        ldb = g->sbk;
      } else { /* a strided or partial panel: copy the slice, zero-padded */
        for (int64_t k = 0; k < kn; k++) {
          const float *src = Bm + (k0 + k) * g->sbk + n0 * g->sbn;
          float *dst = buf + k * GNR;
          int jj = 0;
          for (; jj < nb; jj++) dst[jj] = src[jj * g->sbn];
          for (; jj < GNR; jj++) dst[jj] = 0.f;
        }
        B = buf;
        ldb = GNR;
      }
      int first = k0 == 0, last = k0 + kn >= K;
      /* the next panel's slice (prefetched into L2 by the row tiles, a share each, while this slice is in use) */
      const char *pf = NULL;
      int64_t pfs = 0, nti = (r1 - r0 + GMR - 1) / GMR;
      if (g->Bp && p + 1 < P && kn > 0) {
        pf = (const char *)(g->Bp + (p + 1) * K * GNR + k0 * GNR);
        pfs = (int64_t)sizeof(float) * GNR / nti;
      }
      for (int64_t ti = 0; ti < nti; ti++) {
        int m;
        const int64_t m0 = r0 + sg_tile_rows(r1 - r0, ti, &m);
        sg_tile_m(m, g, Ap + ti * GMR * K + k0 * GMR, B, ldb, kn, Cb + m0 * g->ldc + n0, nb, first, last, m0, n0,
                  pf ? pf + ti * kn * pfs : NULL, pfs);
      }
      k0 += kn;
    } while (k0 < K);
  }
}

int moec_sgemm_run(moec_ctx *ctx, const moec_sgemm *g, int64_t nbatch, const int64_t *aoff, const int64_t *boff,
                   int64_t cstride) {
  const int64_t M = g->M, N = g->N, K = g->K;
  if (M <= 0 || N <= 0 || nbatch <= 0) return 0;
  sg_job j;
  j.g = g;
  j.nbatch = nbatch;
  j.aoff = aoff;
  j.boff = boff;
  j.cstride = cstride;
  { /* K in slices of equal length, none longer than the path's bound */
    int64_t kmax = g->Bp ? GKCP : GKC, ns = K > kmax ? (K + kmax - 1) / kmax : 1;
    j.kc = K > 0 ? (K + ns - 1) / ns : kmax;
  }
  /* a row block's packed A (mc x K) about 512 KiB, so it stays in L2 while the panels stream past */
  int64_t mc = K > 0 ? (131072 / K) / GMR * GMR : GMC;
  if (mc < GMR) mc = GMR;
  if (mc > GMC) mc = GMC;
  if (SG_EVEN_TILES) { /* row blocks of near-equal height, a multiple of MR (256 rows at MR = 12: 96, 96, 64
                        * rather than 120, 120, 16: the panels stream once per block; not on AVX2, whose
                        * rows keep their tiles, sg_tile_rows) */
    int64_t nrb = (M + mc - 1) / mc, h = (M + nrb - 1) / nrb;
    h = (h + GMR - 1) / GMR * GMR;
    if (h < mc) mc = h;
  }
  j.mc = M < mc ? M : mc;
  j.nrb = (M + j.mc - 1) / j.mc;
  int64_t P = (N + GNR - 1) / GNR;
  /* work in FMAs; small products stay on the calling thread (waking the pool costs more) */
  double work = (double)nbatch * (double)M * (double)N * (double)(K ? K : 1);
  int nt = moec_num_threads(ctx, 1 << 30);
  if (work < MOEC_PAR_MIN_FMAS) nt = 1;
  /* about 32 tasks per thread over (batch, row block, run of panels), so a thread that is descheduled
   * on a busy host holds back little at the join; with more than MR rows a run keeps at least 8 panels
   * (packing the task's rows of A then costs at most 1/(8 NR) of its FMAs) */
  int64_t outer = nbatch * j.nrb, want = (int64_t)nt * 32, min_cp = M > GMR ? 8 : 1;
  int64_t split = outer >= want ? 1 : (want + outer - 1) / outer;
  if (split > (P + min_cp - 1) / min_cp) split = (P + min_cp - 1) / min_cp;
  if (split < 1) split = 1;
  j.cp = (P + split - 1) / split;
  j.ncc = (P + j.cp - 1) / j.cp;
  int64_t items = outer * j.ncc;
  if (items < nt) nt = (int)items;
  j.abuf_len = ((j.mc + GMR - 1) / GMR * GMR * (K ? K : 1) + 15) / 16 * 16;
  j.abuf = (float *)moec_scratch_alloc(sizeof(float) * (size_t)(j.abuf_len * nt) + sizeof(int64_t) * 16 * (size_t)nt);
  if (!j.abuf) return moec_fail(ctx, "out of memory (GEMM packing buffer)");
  j.held = (int64_t *)(j.abuf + j.abuf_len * nt); /* (abuf_len is a multiple of 16 floats: aligned) */
  for (int t = 0; t < nt; t++) j.held[t * 16] = -1;
  if (nt <= 1) {
    for (int64_t i = 0; i < items; i++) sg_task(&j, i, 0);
  } else {
    moec_parallel_for_tid(ctx, items, sg_task, &j);
  }
  moec_scratch_free(j.abuf);
  return 0;
}

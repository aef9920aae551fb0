/* KV-cache kernels (issue 17 item 4): see rt_kv.h. */
#include <string.h>
#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "rt_attention.h"
#include "rt_kv.h"

/* n f32 values rounded to f16 (round to nearest even: vcvtps2ph's imm 0 = _MM_FROUND_TO_NEAREST_INT, as
 * moec_f32_to_f16 in the scalar tail and in builds without F16C) */
static void kv_f32_to_f16(uint16_t *d, const float *s, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; i < n; i++) d[i] = moec_f32_to_f16(s[i]);
}

int moec_k_kv_append(moec_ctx *ctx, const moec_tensor *cache, const moec_tensor *newt, const moec_tensor *pos,
                     int64_t axis, moec_tensor *out) {
  int64_t p[1], np_;
  if (moec_read_ints(ctx, pos, p, 1, &np_, "kv_append position")) return -1;
  if (np_ != 1) return moec_fail(ctx, "kv_append position must hold one value, got %lld", (long long)np_);
  int r = cache->rank;
  if (newt->rank != r || r < 1) return moec_fail(ctx, "kv_append: cache rank %d, new rank %d", r, newt->rank);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return moec_fail(ctx, "kv_append: axis out of range");
  /* a half-precision cache takes f32 rows rounded to f16 (round to nearest even) */
  const int half = cache->dtype == MOEC_F16 && newt->dtype == MOEC_F32;
  if (newt->dtype != cache->dtype && !half)
    return moec_fail(ctx, "kv_append: cache and new differ in element type (an f16 cache takes f16 or f32 rows)");
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < r; d++) {
    if (d != axis && cache->shape[d] != newt->shape[d])
      return moec_fail(ctx, "kv_append: cache and new differ in dimension %d (%lld vs %lld)", d,
                       (long long)cache->shape[d], (long long)newt->shape[d]);
    if (d < axis && moec_mul_size(ctx, outer, cache->shape[d], &outer)) return -1;
    if (d > axis && moec_mul_size(ctx, inner, cache->shape[d], &inner)) return -1;
  }
  int64_t m = cache->shape[axis], t = newt->shape[axis];
  if (p[0] < 0 || p[0] + t > m)
    return moec_fail(ctx, "kv_append: rows %lld..%lld do not fit a cache of %lld positions", (long long)p[0],
                     (long long)(p[0] + t), (long long)m);
  size_t es = moec_elem_size(cache->dtype), row = (size_t)inner * es;
  char *dst = (char *)cache->data;
  const char *src = (const char *)newt->data;
  if (t > 0 && row > 0)
    for (int64_t o = 0; o < outer; o++) {
      char *d = dst + ((size_t)o * (size_t)m + (size_t)p[0]) * row;
      if (half) kv_f32_to_f16((uint16_t *)d, (const float *)src + (size_t)o * (size_t)t * (size_t)inner, t * inner);
      else memcpy(d, src + (size_t)o * (size_t)t * row, (size_t)t * row);
    }
  return moec_view(ctx, out, cache, r, cache->shape);
}

static int kvs_buffers(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v, int64_t pos,
                       const moec_tensor *mask, double scale, int causal, moec_tensor *y);

/* w [B, H, L, D] f32 = the first L rows of the f16 buffer c [B, H, M, D] (L <= M, checked by the caller) */
static int kv_widen_rows(moec_ctx *ctx, const moec_tensor *c, int64_t L, moec_tensor *w) {
  const int64_t shape[4] = {c->shape[0], c->shape[1], L, c->shape[3]};
  if (moec_alloc_uninit(ctx, w, MOEC_F32, 4, shape)) return -1;
  /* (both buffers exist: their element counts, hence these products, are already checked) */
  const int64_t bh = moec_dims_prod(c->shape, 0, 2), n = moec_dims_prod(shape, 2, 4), M = moec_dims_prod(c->shape, 2, 4);
  const uint16_t *src = (const uint16_t *)c->data;
  float *dst = (float *)w->data;
  for (int64_t i = 0; i < bh; i++)
    for (int64_t e = 0; e < n; e++) dst[i * n + e] = moec_f16_to_f32(src[i * M + e]);
  return 0;
}

int moec_k_kv_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                        const moec_tensor *pos, const moec_tensor *mask, double scale, int causal, moec_tensor *y) {
  int64_t p[1], np_;
  if (moec_read_ints(ctx, pos, p, 1, &np_, "kv_attention position")) return -1;
  if (np_ != 1) return moec_fail(ctx, "kv_attention position must hold one value");
  if (q->rank != 4 || k->rank != 4 || v->rank != 4) return moec_fail(ctx, "kv_attention: q, k, v must have rank 4");
  if (q->dtype != MOEC_F32 || (mask && mask->dtype != MOEC_F32)) return moec_fail(ctx, "kv_attention: f32 only");
  const int64_t S = q->shape[2], M = k->shape[2];
  if (p[0] < 0 || p[0] > M || S > M - p[0] || v->shape[2] != M)
    return moec_fail(ctx, "kv_attention: rows 0..%lld + %lld do not fit caches of %lld / %lld", (long long)p[0],
                     (long long)S, (long long)M, (long long)v->shape[2]);
  const int64_t L = p[0] + S;
  /* decode-sized queries (up to 4 rows): the decode kernel below (the GQA heads of a kv head together, one
   * pass over the rows < pos, the S newest rows as its new keys) */
  const int64_t Hq = q->shape[1], Hkv = k->shape[1];
  const int half = k->dtype == MOEC_F16 && v->dtype == MOEC_F16; /* (a half-precision cache) */
  if (!half && (k->dtype != MOEC_F32 || v->dtype != MOEC_F32))
    return moec_fail(ctx, "kv_attention: the k and v buffers must both be f32 or both f16");
  if (S >= 1 && S <= 4 && Hkv > 0 && Hq % Hkv == 0 &&
      k->shape[0] == q->shape[0] && v->shape[0] == q->shape[0] && v->shape[1] == Hkv && k->shape[3] == q->shape[3] &&
      (!mask || mask->rank <= 4))
    return kvs_buffers(ctx, q, k, v, p[0], mask, scale, causal, y);
  /* the first L rows only: decode reads O(L) bytes per step, whatever the buffers' capacity */
  if (!half) return moec_attention_rows(ctx, q, k, v, L, mask, scale, causal, y);
  /* an f16 cache and a prefill-sized query: the first L rows widened to f32 (O(L) beside the O(S L) attention) */
  moec_tensor kw = {0}, vw = {0};
  if (kv_widen_rows(ctx, k, L, &kw) || kv_widen_rows(ctx, v, L, &vw)) {
    moec_release(&kw);
    moec_release(&vw);
    return -1;
  }
  const int rc = moec_attention_rows(ctx, q, &kw, &vw, L, mask, scale, causal, y);
  moec_release(&kw);
  moec_release(&vw);
  return rc;
}

/* ---- moec.kv_step_attention: the decode step's attention over a cache read in place ------------------
 * One work item per (batch, kv head, group of up to KVS_RG query rows, split of the cache positions): the
 * G query heads of a kv head and the S query rows are the item's rows (r = g S + i), so K and V rows
 * read once serve all of them.  Both caches are rows, K [M][D] and V [M][Dv] per (batch, kv head): the
 * scores of a block of KVS_NB positions stream the block's K rows (4 rows at a time, D-long dot products
 * of every query row against each, vector accumulators reduced across lanes by a shuffle tree, so MV_L
 * positions' scores come out as one vector); then the online softmax (running max m, sum l, the output
 * accumulator rescaled by exp(m_old - m_new)) and p V over the block's rows of V.  Only positions < pos
 * (and, with a window, inside it) are read.  When the (batch, kv head, row group) items are fewer than
 * twice the threads, the positions are split across items and the partial (acc, m, l) combined after
 * (flash-decoding); the S new keys (causal, in the window) are folded in last, then acc / l is written.
 * No software prefetch: each item reads its K and V rows in sequence, which the hardware prefetchers
 * follow (a prefetch 16 rows or 2 blocks ahead measured no faster from memory, up to 10% slower warm).
 * A half-precision cache (f16 rows, ir/ops/kv.py) is read by the same loops, each vector of MV_L elements
 * widened on load (vcvtph2ps: 16 lanes from 32 bytes on AVX-512; F16C on AVX2; moec_f16_to_f32 per element
 * elsewhere): the element type is a constant in each instantiation (the `h` arguments), so the f32 loops
 * are the same code as before. */
#include <math.h>
#include <stdlib.h>

#include "rt_vmath.h"

#define KVS_NB (4 * MV_L) /* cache positions per block: 4 vectors of scores */
#define KVS_RG 4          /* query rows per item */
#define KVS_MIN_SPLIT 256 /* positions per split at least */

typedef struct {
  const float *q;
  const void *kc, *vc, *kn, *vn; /* f32, or f16 where kh / nh say so */
  float *y, *part; /* part: [items][KVS_RG][Dv + 2] (acc, then m and l) */
  int64_t Hq, Hkv, G, S, D, Dv, M, pos, W, R, nrg, nsplit, chunk;
  int64_t nhs;        /* rows between two (batch, kv head)s of kn / vn: S, or M where they are the buffer's */
  int causal;         /* new key t seen by row i iff t <= i (else all S) */
  const float *mask;  /* NULL, or added to the scores: [B, Hq, S, pos + S] through the strides ms */
  int64_t ms[4];
  float scale;
  int kh, nh;         /* the cache's rows (kc, vc) / the new keys' and values' (kn, vn) are f16 */
} kvs_args;

/* MV_L elements of a row from element i: f32, or f16 widened (h, a constant at every call) */
static inline __attribute__((always_inline)) mvf kvs_ld(const void *p, int64_t i, const int h) {
  if (!h) return mv_ld((const float *)p + i);
  const uint16_t *x = (const uint16_t *)p + i;
#if MV_L == 16 && defined(__AVX512F__)
  return (mvf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)x));
#elif MV_L == 8 && defined(__F16C__)
  return (mvf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x));
#elif MV_L == 4 && defined(__F16C__)
  return (mvf)_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)x));
#else
  mvf v;
  for (int c = 0; c < MV_L; c++) v[c] = moec_f16_to_f32(x[c]);
  return v;
#endif
}
static inline __attribute__((always_inline)) float kvs_at(const void *p, int64_t i, const int h) {
  return h ? moec_f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
/* the address of element i of a row of f32 / f16 (h) elements */
static inline __attribute__((always_inline)) const void *kvs_ptr(const void *p, int64_t i, const int h) {
  return (const char *)p + i * (h ? 2 : 4);
}

static inline float kvs_hsum(mvf v) { float r = 0.f; for (int c = 0; c < MV_L; c++) r += v[c]; return r; }

/* one level of the lane-sum tree: x and y each hold MV_L / s rows' partial sums in segments of s lanes;
 * the result holds x's rows then y's in segments of s / 2 lanes (each the sum of a segment's halves).
 * KVS_FOLDs_LO / _HI: the lanes of the segments' lower / upper halves, x's lanes 0.., y's MV_L.. */
#if MV_L == 16
#define KVS_FOLD16_LO ((mvi){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23})
#define KVS_FOLD16_HI ((mvi){8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31})
#define KVS_FOLD8_LO ((mvi){0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27})
#define KVS_FOLD8_HI ((mvi){4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31})
#define KVS_FOLD4_LO ((mvi){0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29})
#define KVS_FOLD4_HI ((mvi){2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31})
#define KVS_FOLD2_LO ((mvi){0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30})
#define KVS_FOLD2_HI ((mvi){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31})
#elif MV_L == 8
#define KVS_FOLD8_LO ((mvi){0, 1, 2, 3, 8, 9, 10, 11})
#define KVS_FOLD8_HI ((mvi){4, 5, 6, 7, 12, 13, 14, 15})
#define KVS_FOLD4_LO ((mvi){0, 1, 4, 5, 8, 9, 12, 13})
#define KVS_FOLD4_HI ((mvi){2, 3, 6, 7, 10, 11, 14, 15})
#define KVS_FOLD2_LO ((mvi){0, 2, 4, 6, 8, 10, 12, 14})
#define KVS_FOLD2_HI ((mvi){1, 3, 5, 7, 9, 11, 13, 15})
#elif MV_L == 4
#define KVS_FOLD4_LO ((mvi){0, 1, 4, 5})
#define KVS_FOLD4_HI ((mvi){2, 3, 6, 7})
#define KVS_FOLD2_LO ((mvi){0, 2, 4, 6})
#define KVS_FOLD2_HI ((mvi){1, 3, 5, 7})
#else
#error "kv_step_attention: MV_L must be 4, 8 or 16"
#endif
#define KVS_FOLD(x, y, s) (__builtin_shuffle((x), (y), KVS_FOLD##s##_LO) + __builtin_shuffle((x), (y), KVS_FOLD##s##_HI))

/* s[r][j] = sum_d q_r[d] K[j][d] for j < n <= KVS_NB (K's rows D floats apart, read in place: rows past n
 * are not read -- a group's missing rows repeat row 0, their scores dropped) */
static inline __attribute__((always_inline)) void kvs_scores(const void *K, int64_t D, int64_t n,
                                                              const float *const *qr, const int nr,
                                                              float s[KVS_RG][KVS_NB], const int h) {
  const int64_t Dvec = D / MV_L * MV_L;
  for (int64_t j0 = 0; j0 < n; j0 += MV_L) {
    mvf part[KVS_RG][MV_L / 4 > 0 ? MV_L / 4 : 1];
#pragma GCC unroll 4
    for (int sg = 0; sg < MV_L / 4; sg++) {
      if (j0 + 4 * sg >= n) { /* (no row of this group: a decode step's one new key) */
        for (int r = 0; r < nr; r++) part[r][sg] = mv_splat(0.f);
        continue;
      }
      const void *k[4];
      for (int c = 0; c < 4; c++) {
        const int64_t j = j0 + 4 * sg + c;
        k[c] = kvs_ptr(K, (j < n ? j : 0) * D, h);
      }
      mvf acc[KVS_RG][4];
      for (int r = 0; r < nr; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = mv_splat(0.f);
      for (int64_t d = 0; d < Dvec; d += MV_L) {
        const mvf k0 = kvs_ld(k[0], d, h), k1 = kvs_ld(k[1], d, h), k2 = kvs_ld(k[2], d, h), k3 = kvs_ld(k[3], d, h);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
          const mvf qv = mv_ld(qr[r] + d);
          acc[r][0] += qv * k0, acc[r][1] += qv * k1, acc[r][2] += qv * k2, acc[r][3] += qv * k3;
        }
      }
      for (int r = 0; r < nr; r++) {
#if MV_L == 16
        part[r][sg] = KVS_FOLD(KVS_FOLD(acc[r][0], acc[r][1], 16), KVS_FOLD(acc[r][2], acc[r][3], 16), 8);
#elif MV_L == 8
        part[r][sg] = KVS_FOLD(KVS_FOLD(acc[r][0], acc[r][1], 8), KVS_FOLD(acc[r][2], acc[r][3], 8), 4);
#else
        part[r][sg] = KVS_FOLD(KVS_FOLD(acc[r][0], acc[r][1], 4), KVS_FOLD(acc[r][2], acc[r][3], 4), 2);
#endif
      }
    }
    const int64_t nj = n - j0 < MV_L ? n - j0 : MV_L;
    for (int r = 0; r < nr; r++) {
#if MV_L == 16
      part[r][0] = KVS_FOLD(part[r][0], part[r][1], 4), part[r][2] = KVS_FOLD(part[r][2], part[r][3], 4);
      part[r][0] = KVS_FOLD(part[r][0], part[r][2], 2);
#elif MV_L == 8
      part[r][0] = KVS_FOLD(part[r][0], part[r][1], 2);
#endif
      float *sr = s[r] + j0;
      if (nj == MV_L) mv_st(sr, part[r][0]);
      else for (int64_t j = 0; j < nj; j++) sr[j] = part[r][0][j];
      if (Dvec < D) /* (head sizes off the vector width: the rest of each dot) */
        for (int64_t j = 0; j < nj; j++) {
          const void *kj = kvs_ptr(K, (j0 + j) * D, h);
          float t = 0.f;
          for (int64_t d = Dvec; d < D; d++) t += qr[r][d] * kvs_at(kj, d, h);
          sr[j] += t;
        }
    }
  }
}

/* kvs_scores for nr rows of K's element type (h): one instantiation per (nr, h) */
static inline __attribute__((always_inline)) void kvs_scores_nr(const void *K, int64_t D, int64_t n,
                                                                 const float *const *qr, const int nr,
                                                                 float s[KVS_RG][KVS_NB], const int h) {
  switch (nr) {
    case 1: kvs_scores(K, D, n, qr, 1, s, h); break;
    case 2: kvs_scores(K, D, n, qr, 2, s, h); break;
    case 3: kvs_scores(K, D, n, qr, 3, s, h); break;
    default: kvs_scores(K, D, n, qr, 4, s, h); break;
  }
}

/* the online-softmax update of row accumulator o (Dv) with running (m, l) by scores s[0..n) (-inf: not
 * seen) of the value rows V + j Dv (f32, or f16: h): s is overwritten with the probabilities */
static inline __attribute__((always_inline)) void kvs_update_h(float *s, int64_t n, const void *V, int64_t Dv,
                                                                float *o, float *m, float *l, const int h) {
  float bm = -INFINITY;
  for (int64_t j = 0; j < n; j++) bm = s[j] > bm ? s[j] : bm;
  if (bm == -INFINITY) return;
  const float mn = bm > *m ? bm : *m, alpha = *m == -INFINITY ? 0.f : expf(*m - mn);
  float sum = 0.f;
  int64_t j = 0;
  mvf vs = mv_splat(0.f);
  for (; j + MV_L <= n; j += MV_L) {
    const mvf p = mv_exp(mv_ld(s + j) - mv_splat(mn));
    mv_st(s + j, p);
    vs += p;
  }
  sum = kvs_hsum(vs);
  for (; j < n; j++) { s[j] = s[j] == -INFINITY ? 0.f : expf(s[j] - mn); sum += s[j]; }
  *l = *l * alpha + sum;
  *m = mn;
  int64_t d = 0;
  if (alpha != 1.f)
    for (int64_t e = 0; e < Dv; e++) o[e] *= alpha;
  for (; d + 8 * MV_L <= Dv; d += 8 * MV_L) { /* (a head of 128 floats: one pass over the block's rows) */
    mvf a[8];
    for (int c = 0; c < 8; c++) a[c] = mv_ld(o + d + c * MV_L);
    for (int64_t jj = 0; jj < n; jj++) {
      if (s[jj] == 0.f) continue; /* (unseen rows: their values are never read) */
      const mvf p = mv_splat(s[jj]);
      const int64_t v = jj * Dv + d;
#pragma GCC unroll 8
      for (int c = 0; c < 8; c++) a[c] += p * kvs_ld(V, v + c * MV_L, h);
    }
    for (int c = 0; c < 8; c++) mv_st(o + d + c * MV_L, a[c]);
  }
  for (; d + 4 * MV_L <= Dv; d += 4 * MV_L) {
    mvf a0 = mv_ld(o + d), a1 = mv_ld(o + d + MV_L), a2 = mv_ld(o + d + 2 * MV_L), a3 = mv_ld(o + d + 3 * MV_L);
    for (int64_t jj = 0; jj < n; jj++) {
      if (s[jj] == 0.f) continue; /* (unseen rows: their values are never read) */
      const mvf p = mv_splat(s[jj]);
      const int64_t v = jj * Dv + d;
      a0 += p * kvs_ld(V, v, h), a1 += p * kvs_ld(V, v + MV_L, h), a2 += p * kvs_ld(V, v + 2 * MV_L, h),
      a3 += p * kvs_ld(V, v + 3 * MV_L, h);
    }
    mv_st(o + d, a0), mv_st(o + d + MV_L, a1), mv_st(o + d + 2 * MV_L, a2), mv_st(o + d + 3 * MV_L, a3);
  }
  for (; d + MV_L <= Dv; d += MV_L) {
    mvf a0 = mv_ld(o + d);
    for (int64_t jj = 0; jj < n; jj++)
      if (s[jj] != 0.f) a0 += mv_splat(s[jj]) * kvs_ld(V, jj * Dv + d, h);
    mv_st(o + d, a0);
  }
  for (; d < Dv; d++) {
    float a = o[d];
    for (int64_t jj = 0; jj < n; jj++)
      if (s[jj] != 0.f) a += s[jj] * kvs_at(V, jj * Dv + d, h);
    o[d] = a;
  }
}

static void kvs_update(float *s, int64_t n, const void *V, int64_t Dv, float *o, float *m, float *l, int h) {
  if (h) kvs_update_h(s, n, V, Dv, o, m, l, 1);
  else kvs_update_h(s, n, V, Dv, o, m, l, 0);
}

static inline __attribute__((always_inline)) void kvs_cache_rows_h(const kvs_args *a, const void *K, const void *V,
                                                                    const float *const *qr, const float *const *mr,
                                                                    const int64_t *rlo, int nr, int64_t lo, int64_t hi,
                                                                    float *o, float *m, float *l, const int h) {
  float s[KVS_RG][KVS_NB] __attribute__((aligned(64)));
  const int64_t D = a->D, Dv = a->Dv;
  for (int64_t j0 = lo; j0 < hi; j0 += KVS_NB) {
    const int64_t n = hi - j0 < KVS_NB ? hi - j0 : KVS_NB;
    kvs_scores_nr(kvs_ptr(K, j0 * D, h), D, n, qr, nr, s, h);
    for (int r = 0; r < nr; r++) {
      float *sr = s[r];
      for (int64_t j = 0; j < n; j++) sr[j] = j0 + j < rlo[r] ? -INFINITY : sr[j] * a->scale;
      if (mr[r])
        for (int64_t j = 0; j < n; j++) sr[j] += mr[r][(j0 + j) * a->ms[3]];
      kvs_update_h(sr, n, kvs_ptr(V, j0 * Dv, h), Dv, o + r * Dv, m + r, l + r, h);
    }
  }
}

/* cache positions [lo, hi) of rows r0.. (nr rows, query pointers qr) folded into o/m/l */
static void kvs_cache_rows(const kvs_args *a, const void *K, const void *V, const float *const *qr,
                           const float *const *mr, const int64_t *rlo, int nr, int64_t lo, int64_t hi, float *o,
                           float *m, float *l) {
  if (a->kh) kvs_cache_rows_h(a, K, V, qr, mr, rlo, nr, lo, hi, o, m, l, 1);
  else kvs_cache_rows_h(a, K, V, qr, mr, rlo, nr, lo, hi, o, m, l, 0);
}

/* the item's (b, kv head, row group) coordinates, its rows' query pointers and cache lower bounds */
static int kvs_rows(const kvs_args *a, int64_t grp, const float **qr, const float **mr, int64_t *rlo,
                    int64_t *ri) {
  const int64_t rg = grp % a->nrg, bh = grp / a->nrg, b = bh / a->Hkv, hk = bh % a->Hkv;
  const int64_t r0 = rg * KVS_RG;
  const int nr = (int)(a->R - r0 < KVS_RG ? a->R - r0 : KVS_RG);
  for (int r = 0; r < nr; r++) {
    const int64_t g = (r0 + r) / a->S, i = (r0 + r) % a->S;
    qr[r] = a->q + ((b * a->Hq + hk * a->G + g) * a->S + i) * a->D;
    mr[r] = a->mask ? a->mask + b * a->ms[0] + (hk * a->G + g) * a->ms[1] + i * a->ms[2] : NULL;
    ri[r] = i;
    rlo[r] = a->W > 0 && a->pos + i - a->W + 1 > 0 ? a->pos + i - a->W + 1 : 0;
  }
  return nr;
}

/* the new keys (causal, in the window) folded in, then y = acc / l.  The new keys are rows [S][D] too: the
 * group's rows score blocks of them together (kvs_scores), each row's unseen keys then set to -inf */
static void kvs_finish(const kvs_args *a, int64_t grp, const float *const *qr, const float *const *mr,
                       const int64_t *ri, int nr, float *o, float *m, float *l) {
  const int64_t bh = grp / a->nrg, b = bh / a->Hkv, hk = bh % a->Hkv, D = a->D, Dv = a->Dv, S = a->S;
  const int h = a->nh;
  const void *Kn = kvs_ptr(a->kn, bh * a->nhs * D, h), *Vn = kvs_ptr(a->vn, bh * a->nhs * Dv, h);
  const int64_t r0 = (grp % a->nrg) * KVS_RG;
  float s[KVS_RG][KVS_NB] __attribute__((aligned(64)));
  int64_t lo[KVS_RG], hi[KVS_RG], glo = S, ghi = 0;
  for (int r = 0; r < nr; r++) {
    const int64_t i = ri[r];
    lo[r] = a->W > 0 && i - a->W + 1 > 0 ? i - a->W + 1 : 0, hi[r] = a->causal ? i + 1 : S;
    glo = lo[r] < glo ? lo[r] : glo, ghi = hi[r] > ghi ? hi[r] : ghi;
  }
  for (int64_t t0 = glo; t0 < ghi; t0 += KVS_NB) {
    const int64_t n = ghi - t0 < KVS_NB ? ghi - t0 : KVS_NB;
    if (h) kvs_scores_nr(kvs_ptr(Kn, t0 * D, 1), D, n, qr, nr, s, 1);
    else kvs_scores_nr(kvs_ptr(Kn, t0 * D, 0), D, n, qr, nr, s, 0);
    for (int r = 0; r < nr; r++) {
      float *sr = s[r];
      for (int64_t t = 0; t < n; t++) {
        const int64_t tt = t0 + t;
        sr[t] = tt < lo[r] || tt >= hi[r] ? -INFINITY
                : sr[t] * a->scale + (mr[r] ? mr[r][(a->pos + tt) * a->ms[3]] : 0.f);
      }
      kvs_update(sr, n, kvs_ptr(Vn, t0 * Dv, h), Dv, o + r * Dv, m + r, l + r, h);
    }
  }
  for (int r = 0; r < nr; r++) {
    const int64_t g = (r0 + r) / S, i = ri[r];
    float *y = a->y + ((b * a->Hq + hk * a->G + g) * S + i) * Dv;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f; /* (a row that sees no key: 0) */
    for (int64_t d = 0; d < Dv; d++) y[d] = l[r] > 0.f ? o[r * Dv + d] * inv : 0.f;
  }
}

static void kvs_task(void *arg, int64_t item) {
  const kvs_args *a = (const kvs_args *)arg;
  const int64_t grp = item / a->nsplit, sp = item % a->nsplit, bh = grp / a->nrg, Dv = a->Dv;
  const float *qr[KVS_RG], *mr[KVS_RG];
  int64_t rlo[KVS_RG], ri[KVS_RG];
  const int nr = kvs_rows(a, grp, qr, mr, rlo, ri);
  float *o = a->part + item * KVS_RG * (Dv + 2), *m = o + KVS_RG * Dv, *l = m + KVS_RG;
  memset(o, 0, sizeof(float) * (size_t)(KVS_RG * Dv));
  for (int r = 0; r < KVS_RG; r++) m[r] = -INFINITY, l[r] = 0.f;
  int64_t lo = rlo[0];
  for (int r = 1; r < nr; r++) lo = rlo[r] < lo ? rlo[r] : lo;
  const int64_t c0 = sp * a->chunk, c1 = c0 + a->chunk < a->pos ? c0 + a->chunk : a->pos;
  if (lo < c0) lo = c0;
  if (lo < c1)
    kvs_cache_rows(a, kvs_ptr(a->kc, bh * a->M * a->D, a->kh), kvs_ptr(a->vc, bh * a->M * Dv, a->kh), qr, mr, rlo,
                   nr, lo, c1, o, m, l);
  if (a->nsplit == 1) kvs_finish(a, grp, qr, mr, ri, nr, o, m, l);
}

/* the splits' partial (acc, m, l) of one row group combined, then the new keys and the output */
static void kvs_combine_task(void *arg, int64_t grp) {
  const kvs_args *a = (const kvs_args *)arg;
  const int64_t Dv = a->Dv, ns = a->nsplit, w = KVS_RG * (Dv + 2);
  const float *qr[KVS_RG], *mr[KVS_RG];
  int64_t rlo[KVS_RG], ri[KVS_RG];
  const int nr = kvs_rows(a, grp, qr, mr, rlo, ri);
  float *o0 = a->part + grp * ns * w, *m0 = o0 + KVS_RG * Dv, *l0 = m0 + KVS_RG;
  for (int r = 0; r < nr; r++) {
    float mx = -INFINITY;
    for (int64_t sp = 0; sp < ns; sp++) { const float ms = a->part[(grp * ns + sp) * w + KVS_RG * Dv + r]; mx = ms > mx ? ms : mx; }
    float lsum = 0.f;
    float *o = o0 + r * Dv;
    for (int64_t sp = 0; sp < ns; sp++) {
      const float *ps = a->part + (grp * ns + sp) * w;
      const float ms = ps[KVS_RG * Dv + r], f = ms == -INFINITY ? 0.f : expf(ms - mx);
      lsum += ps[KVS_RG * Dv + KVS_RG + r] * f;
      if (sp == 0) { for (int64_t d = 0; d < Dv; d++) o[d] *= f; }
      else { for (int64_t d = 0; d < Dv; d++) o[d] += f * ps[r * Dv + d]; }
    }
    m0[r] = mx, l0[r] = lsum;
  }
  kvs_finish(a, grp, qr, mr, ri, nr, o0, m0, l0);
}

static int kvs_run(moec_ctx *ctx, kvs_args *ap, int64_t B);

int moec_k_kv_step_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *kc, const moec_tensor *vc,
                             const moec_tensor *kn, const moec_tensor *vn, const moec_tensor *pos, double scale,
                             int64_t window, moec_tensor *y) {
  int64_t p[1], np_;
  if (moec_read_ints(ctx, pos, p, 1, &np_, "kv_step_attention position")) return -1;
  if (np_ != 1) return moec_fail(ctx, "kv_step_attention position must hold one value");
  const moec_tensor *ts[5] = {q, kc, vc, kn, vn};
  const int kh = kc->dtype == MOEC_F16; /* a half-precision cache: both caches f16, the rest f32 */
  for (int i = 0; i < 5; i++) {
    if (ts[i]->rank != 4) return moec_fail(ctx, "kv_step_attention: q, caches and new keys/values must have rank 4");
    if (ts[i]->dtype != ((i == 1 || i == 2) && kh ? MOEC_F16 : MOEC_F32))
      return moec_fail(ctx, "kv_step_attention: f32 q and new keys/values, and both caches f32 or both f16");
  }
  const int64_t B = q->shape[0], Hq = q->shape[1], S = q->shape[2], D = q->shape[3];
  const int64_t Hkv = kc->shape[1], M = kc->shape[2], Dv = vc->shape[3];
  if (kc->shape[0] != B || vc->shape[0] != B || kn->shape[0] != B || vn->shape[0] != B || kc->shape[3] != D ||
      vc->shape[1] != Hkv || vc->shape[2] != M || kn->shape[1] != Hkv || kn->shape[2] != S || kn->shape[3] != D ||
      vn->shape[1] != Hkv || vn->shape[2] != S || vn->shape[3] != Dv)
    return moec_fail(ctx, "kv_step_attention: q [%lld,%lld,%lld,%lld] and caches [%lld,%lld,%lld,%lld] / [%lld,%lld,%lld,%lld] "
                     "or the new keys/values do not fit", (long long)B, (long long)Hq, (long long)S, (long long)D,
                     (long long)kc->shape[0], (long long)kc->shape[1], (long long)kc->shape[2], (long long)kc->shape[3],
                     (long long)vc->shape[0], (long long)vc->shape[1], (long long)vc->shape[2], (long long)vc->shape[3]);
  if (Hkv == 0 ? Hq != 0 : Hq % Hkv)
    return moec_fail(ctx, "kv_step_attention: %lld query heads are not a multiple of %lld key/value heads",
                     (long long)Hq, (long long)Hkv);
  if (p[0] < 0 || p[0] > M)
    return moec_fail(ctx, "kv_step_attention: position %lld outside caches of %lld", (long long)p[0], (long long)M);
  if (window < 0) return moec_fail(ctx, "kv_step_attention: window %lld", (long long)window);
  int64_t out[4] = {B, Hq, S, Dv};
  /* (uninit: kvs_finish writes each of the B * Hkv * G * S rows whole, 0 for a row that sees no key) */
  if (moec_alloc_uninit(ctx, y, MOEC_F32, 4, out)) return -1;
  if (!B || !Hq || !S || !Dv) return 0;
  kvs_args a = {q->data, kc->data, vc->data, kn->data, vn->data, y->data, NULL, Hq, Hkv, Hq / Hkv, S, D, Dv, M, p[0],
                window, 0, 0, 1, 0, S, 1, NULL, {0, 0, 0, 0}, (float)scale, kh, 0};
  return kvs_run(ctx, &a, B);
}

/* the work items of a (the geometry filled in): splits chosen, partials combined */
static int kvs_run(moec_ctx *ctx, kvs_args *ap, int64_t B) {
  kvs_args a = *ap;
  const int64_t Hkv = a.Hkv, S = a.S, Dv = a.Dv;
  const int64_t p[1] = {a.pos};
  a.R = a.G * S;
  a.nrg = (a.R + KVS_RG - 1) / KVS_RG;
  const int64_t groups = B * Hkv * a.nrg;
  const int nt = moec_num_threads(ctx, 1 << 20);
  if (groups < 2 * nt && p[0] >= 2 * KVS_MIN_SPLIT) { /* few (batch, kv head) rows: split the positions */
    int64_t ns = (2 * nt + groups - 1) / groups, most = p[0] / KVS_MIN_SPLIT;
    a.nsplit = ns < most ? ns : most;
  }
  a.chunk = (p[0] + a.nsplit - 1) / a.nsplit;
  a.chunk = (a.chunk + KVS_NB - 1) / KVS_NB * KVS_NB;
  const int64_t items = groups * a.nsplit;
  a.part = (float *)moec_scratch_alloc(sizeof(float) * (size_t)(items * KVS_RG * (Dv + 2)));
  if (!a.part) return moec_fail(ctx, "kv_step_attention: out of memory");
  moec_parallel_for(ctx, items, kvs_task, &a);
  if (a.nsplit > 1) moec_parallel_for(ctx, groups, kvs_combine_task, &a);
  moec_scratch_free(a.part);
  return 0;
}

/* moec.kv_attention for decode-sized queries: the keys/values are the first pos + S rows of the buffers
 * [B,Hkv,M,D] (rows, not transposed), the S newest at pos (kn / vn point there, M rows per kv head) */
static int kvs_buffers(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v, int64_t pos,
                       const moec_tensor *mask, double scale, int causal, moec_tensor *y) {
  const int64_t B = q->shape[0], Hq = q->shape[1], S = q->shape[2], D = q->shape[3];
  const int64_t Hkv = k->shape[1], M = k->shape[2], Dv = v->shape[3], L = pos + S;
  int64_t out[4] = {B, Hq, S, Dv}, sc[4] = {B, Hq, S, L};
  const int h = k->dtype == MOEC_F16; /* (the caller checked: k and v both f32 or both f16) */
  kvs_args a = {q->data, k->data, v->data, kvs_ptr(k->data, pos * D, h), kvs_ptr(v->data, pos * Dv, h), NULL,
                NULL, Hq, Hkv, Hq / Hkv, S, D, Dv, M, pos, 0, 0, 0, 1, 0, M, causal, NULL, {0, 0, 0, 0},
                (float)scale, h, h};
  if (mask) {
    for (int i = 0; i < mask->rank; i++) {
      const int64_t want = sc[4 - mask->rank + i];
      if (mask->shape[i] != 1 && mask->shape[i] != want)
        return moec_fail(ctx, "kv_attention: the mask's dim %d (%lld) does not broadcast to %lld", i,
                         (long long)mask->shape[i], (long long)want);
    }
    moec_broadcast_strides(mask, 4, sc, a.ms);
    a.mask = (const float *)mask->data;
  }
  if (moec_alloc_uninit(ctx, y, MOEC_F32, 4, out)) return -1; /* (uninit: as kv_step_attention's) */
  a.y = (float *)y->data;
  if (!B || !Hq || !S || !Dv) return 0;
  return kvs_run(ctx, &a, B);
}

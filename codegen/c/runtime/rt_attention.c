/* Fused attention, flash-style: one task per (batch, query head, block of QB query rows); the keys are
 * visited in blocks of KB.  K is transposed once per call into one [D][KB] panel per (batch, kv head, key
 * block), shared by every query block, so that the scores of a block's rows are vector FMAs over the keys;
 * decode-sized queries (fewer than 4 rows) take dot products over K's rows in place instead.  The softmax
 * is online (running max m, running sum l, the accumulator rescaled by exp(m_old - m_new)), so the [S, T]
 * score matrix is never stored.  Causal attention skips the key blocks wholly in the future of the
 * block's last row, and within a block the key chunks a row quad cannot see.  Both products keep a
 * 4-row x 2-vector tile in registers (the f32 GEMM micro-kernel's shape, rt_gemm_f32.c). */
#include "rt_attention.h"
#include "rt_vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef MOEC_VBYTES
#define MOEC_VBYTES 16
#endif
#define VL (MOEC_VBYTES / 4)
#define QB 64 /* query rows per task (16 row quads): the key/value blocks are packed once per task */
#define KB 64 /* keys per block: a multiple of 2 * VL for every VL */
#define MAXD 65536

typedef float avf __attribute__((vector_size(MOEC_VBYTES), aligned(4)));
typedef int32_t avi __attribute__((vector_size(MOEC_VBYTES)));
static inline avf asplat(float v) { return __builtin_shuffle((avf){v}, (avi){0}); }
static inline avf ald(const float *p) { avf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void ast(float *p, avf v) { __builtin_memcpy(p, &v, sizeof v); }

/* sum_d a[d] b[d]: two vector accumulators, a scalar tail */
static inline float adot(const float *a, const float *b, int64_t n) {
  avf c0 = {0}, c1 = {0};
  int64_t d = 0;
  for (; d + 2 * VL <= n; d += 2 * VL) { c0 += ald(a + d) * ald(b + d); c1 += ald(a + d + VL) * ald(b + d + VL); }
  for (; d + VL <= n; d += VL) c0 += ald(a + d) * ald(b + d);
  c0 += c1;
  float r = 0.f;
  for (int c = 0; c < VL; c++) r += c0[c];
  for (; d < n; d++) r += a[d] * b[d];
  return r;
}

/* e^x on a vector: rt_vmath.h's (0 below -87.34 and at -inf, NaN stays NaN) */
static inline avf avexp(avf x) { return mv_exp(x); }

#if MOEC_VBYTES >= 64
typedef float t16f __attribute__((vector_size(64), aligned(4)));
typedef int32_t t16i __attribute__((vector_size(64)));
/* o[d * ldo + j] = K[j * D + d] for a full 16 x 16 tile: four rounds of two-register permutes (round s swaps
 * the off-diagonal s x s blocks of each 2s x 2s block), 64 vpermt2ps instead of 256 scalar moves */
static inline void kt_tile16(const float *K, int64_t D, float *o, int64_t ldo) {
  t16f r[16];
  for (int i = 0; i < 16; i++) __builtin_memcpy(&r[i], K + i * D, 64);
#pragma GCC unroll 4
  for (int s = 8; s >= 1; s /= 2) {
    t16i ma, mb;
    for (int l = 0; l < 16; l++) {
      ma[l] = (l & s) ? 16 + l - s : l;
      mb[l] = (l & s) ? 16 + l : l + s;
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
      if (!(i & s)) {
        const t16f a = r[i], b = r[i + s];
        r[i] = __builtin_shuffle(a, b, ma);
        r[i + s] = __builtin_shuffle(a, b, mb);
      }
  }
  for (int i = 0; i < 16; i++) __builtin_memcpy(o + i * ldo, &r[i], 64);
}
#endif

/* kt[d * KB + j] = K[j * D + d] for j < nk (K's rows D floats apart): through 16 x 16 tiles, so that
 * neither side walks memory a row apart per element (a block's 64 rows of D = 128 floats fill L1) */
static void kt_block(const float *K, int64_t D, int64_t nk, float *kt) {
  float tile[16][16];
  for (int64_t j0 = 0; j0 < nk; j0 += 16) {
    const int64_t nj = nk - j0 < 16 ? nk - j0 : 16;
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      const int64_t nd = D - d0 < 16 ? D - d0 : 16;
#if MOEC_VBYTES >= 64
      if (nj == 16 && nd == 16) {
        kt_tile16(K + j0 * D + d0, D, kt + d0 * KB + j0, KB);
        continue;
      }
#endif
      for (int64_t jj = 0; jj < nj; jj++)
        for (int64_t dd = 0; dd < nd; dd++) tile[dd][jj] = K[(j0 + jj) * D + d0 + dd];
      for (int64_t dd = 0; dd < nd; dd++) memcpy(kt + (d0 + dd) * KB + j0, tile[dd], sizeof(float) * (size_t)nj);
    }
  }
}

typedef struct {
  const float *q, *k, *v, *mask;
  float *kt; /* K transposed per (batch, kv head), one panel per key block: [B * Hkv][Tp / KB][D][KB] (Tp: T
              * padded to KB), or NULL */
  int64_t Tp;
  float *y;
  int64_t B, Hq, Hkv, S, T, D, Dv, Dvp, nqb;
  int64_t kcap; /* rows per (batch, kv head) in k and v (>= T: a KV-cache buffer's capacity; rows >= T are
                 * never read) */
  int64_t ms[4]; /* mask broadcast strides over [B, Hq, S, T] */
  float scale;
  int causal;
  volatile int oom;
} att_args;

/* sr[j] = sr[j] * scale (+ mr[j] where a mask row is given) for j < vis, returning their max (NaN when any is
 * NaN, -inf when vis = 0); vectors, then the tail (inlined per call: the NULL-mask copy has no mask load) */
static inline __attribute__((always_inline)) float scale_max_row(float *sr, const float *mr, int64_t vis, float scale) {
  const avf vsc = asplat(scale);
  avf vmx = asplat(-INFINITY);
  avi vnan = {0};
  float mx = -INFINITY;
  int64_t j = 0;
  for (; j + VL <= vis; j += VL) {
    avf x = ald(sr + j) * vsc;
    if (mr) x += ald(mr + j);
    ast(sr + j, x);
    vnan |= x != x;
    const avi gt = x > vmx;
    vmx = (avf)((gt & (avi)x) | (~gt & (avi)vmx));
  }
  for (int c = 0; c < VL; c++) {
    if (vnan[c]) mx = NAN;
    if (mx == mx && vmx[c] > mx) mx = vmx[c];
  }
  for (; j < vis; j++) {
    const float x = mr ? sr[j] * scale + mr[j] : sr[j] * scale;
    sr[j] = x;
    if (mx == mx && (x > mx || x != x)) mx = x;
  }
  return mx;
}

static void att_task(void *arg, int64_t item) {
  att_args *a = (att_args *)arg;
  const int64_t qb = item % a->nqb, bh = item / a->nqb, h = bh % a->Hq, b = bh / a->Hq;
  const int64_t hk = h / (a->Hq / a->Hkv), D = a->D, Dv = a->Dv, Dvp = a->Dvp, T = a->T, S = a->S;
  const int64_t i0 = qb * QB, i1 = i0 + QB < S ? i0 + QB : S, nr = i1 - i0;
  const float *Q = a->q + ((b * a->Hq + h) * S + i0) * D;
  const float *K = a->k + (b * a->Hkv + hk) * a->kcap * D;
  const float *V = a->v + (b * a->Hkv + hk) * a->kcap * Dv;
  float *Y = a->y + ((b * a->Hq + h) * S + i0) * Dv;
  /* per task: the accumulators [R][Dvp]; only where needed: q rows copied zero-padded to whole row quads,
   * the key block transposed [D][KB] (when K^T was not packed for every task), the value block [KB][Dvp]
   * zero-padded to a multiple of 2 VL columns (a task's buffer stays well under malloc's mmap threshold:
   * a fresh mapping per task cost page faults on every call) */
  const int qpad = nr % 4 != 0, vdirect = Dv == Dvp;
  const int64_t R = (nr + 3) / 4 * 4; /* rows kept: the task's, padded to a whole quad */
  const size_t nq = qpad ? (size_t)(R * D) : 0, nkt = a->kt ? 0 : (size_t)(D * KB), nvb = vdirect ? 0 : (size_t)(KB * Dvp);
  float *buf = (float *)malloc(sizeof(float) * ((size_t)(R * Dvp) + nq + nkt + nvb));
  if (!buf) { a->oom = 1; return; }
  float *acc = buf, *qbuf = acc + R * Dvp, *kt = qbuf + nq, *vb = kt + nkt;
  float s[QB][KB], m[QB], l[QB];
  if (qpad) {
    memset(qbuf, 0, sizeof(float) * (size_t)(R * D));
    memcpy(qbuf, Q, sizeof(float) * (size_t)(nr * D));
  } else {
    qbuf = (float *)Q; /* (read only) */
  }
  memset(acc, 0, sizeof(float) * (size_t)(R * Dvp));
  if (nvb) memset(vb, 0, sizeof(float) * nvb);
  for (int r = 0; r < QB; r++) { m[r] = -INFINITY; l[r] = 0.f; }
  const int64_t shift = T - S; /* causal: row i sees keys j <= i + shift */
  int64_t jend = T;
  if (a->causal) { jend = i1 + shift; if (jend > T) jend = T; if (jend < 0) jend = 0; }
  for (int64_t j0 = 0; j0 < jend; j0 += KB) {
    const int64_t nk = j0 + KB < jend ? KB : jend - j0;
    /* the key block transposed ([D][KB]): from the head's keys transposed once for every task (a.kt), or
     * here when that buffer could not be had */
    const float *ktb = kt;
    if (a->kt) {
      ktb = a->kt + (b * a->Hkv + hk) * D * a->Tp + j0 * D; /* (the block's panel: j0 / KB panels of D * KB) */
    } else if (nr < 4) {
      /* decode-sized task (fewer rows than a quad): the scores are dot products over K's rows, read in
       * place; no transposed copy (it cost as much as the attention) */
    } else {
      kt_block(K + j0 * D, D, nk, kt);
    }
    if (!vdirect)
      for (int64_t j = 0; j < nk; j++) memcpy(vb + j * Dvp, V + (j0 + j) * Dv, sizeof(float) * (size_t)Dv);
    const float *vblk = vdirect ? V + j0 * Dv : vb;
    /* keys a row quad can see in this block (causal: the rest of the block is masked, not computed) */
    int64_t qvis[QB / 4];
    for (int rq = 0; rq < QB; rq += 4) {
      int64_t v = nk;
      if (a->causal) { v = i0 + rq + 3 + shift - j0 + 1; if (v > nk) v = nk; if (v < 0) v = 0; }
      qvis[rq / 4] = v;
    }
    if (!a->kt && nr < 4) {
      for (int64_t r = 0; r < nr; r++)
        for (int64_t j = 0; j < qvis[0]; j++) s[r][j] = adot(qbuf + r * D, K + (j0 + j) * D, D);
    }
    /* scores: 4 rows x 2 vectors of keys in registers, over d */
    for (int rq = 0; !(!a->kt && nr < 4) && rq < QB; rq += 4) {
      if (rq >= nr) break;
      for (int jv = 0; jv < qvis[rq / 4]; jv += 2 * VL) {
        avf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
        const float *q0 = qbuf + rq * D, *q1 = q0 + D, *q2 = q1 + D, *q3 = q2 + D;
        for (int64_t d = 0; d < D; d++) {
          const avf k0 = ald(ktb + d * KB + jv), k1 = ald(ktb + d * KB + jv + VL);
          avf x = asplat(q0[d]); c00 += x * k0; c01 += x * k1;
          x = asplat(q1[d]); c10 += x * k0; c11 += x * k1;
          x = asplat(q2[d]); c20 += x * k0; c21 += x * k1;
          x = asplat(q3[d]); c30 += x * k0; c31 += x * k1;
        }
        ast(s[rq] + jv, c00); ast(s[rq] + jv + VL, c01); ast(s[rq + 1] + jv, c10); ast(s[rq + 1] + jv + VL, c11);
        ast(s[rq + 2] + jv, c20); ast(s[rq + 2] + jv + VL, c21); ast(s[rq + 3] + jv, c30); ast(s[rq + 3] + jv + VL, c31);
      }
    }
    /* online softmax per row; p replaces the scores (0 for padded keys and rows) */
    for (int64_t r = 0; r < R; r++) {
      float *sr = s[r];
      float mx = -INFINITY;
      const int64_t i = i0 + r;
      int64_t vis = 0; /* keys of the block this row sees; the others are -inf */
      if (r < nr) {
        vis = nk;
        if (a->causal) { vis = i + shift - j0 + 1; if (vis > nk) vis = nk; if (vis < 0) vis = 0; }
        if (a->mask && a->ms[3] == 1) /* (the mask's row contiguous over the keys: the same sums, vectorised) */
          mx = scale_max_row(sr, a->mask + b * a->ms[0] + h * a->ms[1] + i * a->ms[2] + j0, vis, a->scale);
        else if (a->mask) {
          for (int64_t j = 0; j < vis; j++) {
            float x = sr[j] * a->scale + a->mask[b * a->ms[0] + h * a->ms[1] + i * a->ms[2] + (j0 + j) * a->ms[3]];
            sr[j] = x;
            if (x > mx || x != x) mx = x;
          }
        } else
          mx = scale_max_row(sr, NULL, vis, a->scale);
      }
      if (mx == -INFINITY) { memset(sr, 0, sizeof s[0]); continue; } /* nothing visible in this block */
      const float mnew = mx > m[r] || mx != mx ? mx : m[r];
      const float corr = m[r] == -INFINITY ? 0.f : expf(m[r] - mnew);
      for (int64_t j = vis; j < KB; j++) sr[j] = -INFINITY;
      avf vs = {0};
      const avf vm = asplat(mnew);
      for (int64_t j = 0; j < KB; j += VL) { const avf e = avexp(ald(sr + j) - vm); ast(sr + j, e); vs += e; }
      float sum = 0.f;
      for (int c = 0; c < VL; c++) sum += vs[c];
      l[r] = l[r] * corr + sum;
      m[r] = mnew;
      if (corr != 1.f) { /* (Dvp is a multiple of the vector width) */
        const avf vc = asplat(corr);
        for (int64_t c = 0; c < Dvp; c += VL) ast(acc + r * Dvp + c, ald(acc + r * Dvp + c) * vc);
      }
    }
    /* acc += p v: 4 rows x 2 vectors of columns in registers, over the keys the quad sees */
    for (int rq = 0; rq < QB; rq += 4) {
      if (rq >= nr) break;
      const int64_t nj = qvis[rq / 4];
      for (int64_t cv = 0; cv < Dvp; cv += 2 * VL) {
        float *a0 = acc + rq * Dvp + cv, *a1 = a0 + Dvp, *a2 = a1 + Dvp, *a3 = a2 + Dvp;
        avf c00 = ald(a0), c01 = ald(a0 + VL), c10 = ald(a1), c11 = ald(a1 + VL);
        avf c20 = ald(a2), c21 = ald(a2 + VL), c30 = ald(a3), c31 = ald(a3 + VL);
        for (int64_t j = 0; j < nj; j++) {
          const avf v0 = ald(vblk + j * Dvp + cv), v1 = ald(vblk + j * Dvp + cv + VL);
          avf x = asplat(s[rq][j]); c00 += x * v0; c01 += x * v1;
          x = asplat(s[rq + 1][j]); c10 += x * v0; c11 += x * v1;
          x = asplat(s[rq + 2][j]); c20 += x * v0; c21 += x * v1;
          x = asplat(s[rq + 3][j]); c30 += x * v0; c31 += x * v1;
        }
        ast(a0, c00); ast(a0 + VL, c01); ast(a1, c10); ast(a1 + VL, c11);
        ast(a2, c20); ast(a2 + VL, c21); ast(a3, c30); ast(a3 + VL, c31);
      }
    }
  }
  for (int64_t r = 0; r < nr; r++) {
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    float *yr = Y + r * Dv;
    const float *ar = acc + r * Dvp;
    if (m[r] == -INFINITY) { memset(yr, 0, sizeof(float) * (size_t)Dv); continue; } /* every key masked */
    const avf vi = asplat(inv);
    int64_t c = 0;
    for (; c + VL <= Dv; c += VL) ast(yr + c, ald(ar + c) * vi);
    for (; c < Dv; c++) yr[c] = ar[c] * inv;
  }
  free(buf);
}

/* a.kt for (batch, kv head) bh: per key block p the panel [D][KB], kt[d][j] = K[p KB + j][d] (0 past T);
 * transposed through 16 x 16 tiles so that neither side walks memory 64 floats (or more) apart per
 * element: the panel's rows are KB floats apart and mapped to few cache sets */
static void kt_pack_task(void *arg, int64_t bh) {
  att_args *a = (att_args *)arg;
  const int64_t D = a->D, T = a->T, Tp = a->Tp;
  const float *K = a->k + bh * a->kcap * D;
  for (int64_t p0 = 0; p0 < Tp; p0 += KB) {
    float *o = a->kt + bh * D * Tp + p0 * D;
    const int64_t nk = T - p0 < KB ? T - p0 : KB;
    if (nk < KB) memset(o, 0, sizeof(float) * (size_t)(D * KB)); /* (the last panel: zero past T) */
    kt_block(K + p0 * D, D, nk, o);
  }
}

int moec_k_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                     const moec_tensor *mask, double scale, int causal, moec_tensor *y) {
  return moec_attention_rows(ctx, q, k, v, k->rank == 4 ? k->shape[2] : 0, mask, scale, causal, y);
}

int moec_attention_rows(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v, int64_t T,
                        const moec_tensor *mask, double scale, int causal, moec_tensor *y) {
  if (q->dtype != MOEC_F32 || k->dtype != MOEC_F32 || v->dtype != MOEC_F32 || (mask && mask->dtype != MOEC_F32))
    return moec_fail(ctx, "attention: the kernel takes f32 q, k, v and mask");
  if (q->rank != 4 || k->rank != 4 || v->rank != 4 || (mask && mask->rank > 4))
    return moec_fail(ctx, "attention: q, k, v must have rank 4, the mask at most 4");
  const int64_t B = q->shape[0], Hq = q->shape[1], S = q->shape[2], D = q->shape[3];
  const int64_t Hkv = k->shape[1], kcap = k->shape[2], Dv = v->shape[3];
  if (T < 0 || T > kcap)
    return moec_fail(ctx, "attention: %lld key rows asked of buffers of %lld", (long long)T, (long long)kcap);
  if (k->shape[0] != B || v->shape[0] != B || k->shape[3] != D || v->shape[1] != Hkv || v->shape[2] != kcap)
    return moec_fail(ctx, "attention: q [%lld,%lld,%lld,%lld], k [%lld,%lld,%lld,%lld], v [%lld,%lld,%lld,%lld] do not fit",
                     (long long)B, (long long)Hq, (long long)S, (long long)D, (long long)k->shape[0],
                     (long long)Hkv, (long long)kcap, (long long)k->shape[3], (long long)v->shape[0],
                     (long long)v->shape[1], (long long)v->shape[2], (long long)Dv);
  if (Hkv == 0 ? Hq != 0 : Hq % Hkv)
    return moec_fail(ctx, "attention: %lld query heads are not a multiple of %lld key/value heads", (long long)Hq,
                     (long long)Hkv);
  if (D > MAXD || Dv > MAXD) return moec_fail(ctx, "attention: head size above %d", MAXD);
  int64_t out[4] = {B, Hq, S, Dv}, sc[4] = {B, Hq, S, T};
  const int64_t Dvp = (Dv + 2 * VL - 1) / (2 * VL) * (2 * VL);
  att_args a = {q->data, k->data, v->data, NULL, NULL, 0, NULL, B, Hq, Hkv, S, T, D, Dv, Dvp, (S + QB - 1) / QB,
                kcap, {0, 0, 0, 0}, (float)scale, causal, 0};
  if (mask) {
    for (int i = 0; i < mask->rank; i++) {
      int64_t want = sc[4 - mask->rank + i];
      if (mask->shape[i] != 1 && mask->shape[i] != want)
        return moec_fail(ctx, "attention: the mask's dim %d (%lld) does not broadcast to %lld", i,
                         (long long)mask->shape[i], (long long)want);
    }
    moec_broadcast_strides(mask, 4, sc, a.ms);
    a.mask = mask->data;
  }
  if (moec_alloc_uninit(ctx, y, MOEC_F32, 4, out)) return -1; /* (every row written, 0 where nothing is visible) */
  a.y = y->data;
  /* items <= the element count of q (nqb <= S, D >= 1) or y: fits by the runtime's size invariant */
  /* K transposed once per (batch, kv head) for all the query blocks that read it (per task it was done
   * S / QB times per head); without the memory the tasks transpose their own blocks */
  /* (k's element count padded: its T rows to Tp, at most KB - 1 more per (batch, head, d); checked) */
  int64_t ktn = 0, Tp = (T + KB - 1) / KB * KB;
  /* (only where a head's keys are read by more than one task: with one query block and no GQA sharing each
   * task transposes its own key blocks, and the separate pass, its fork/join and buffer are saved;
   * decode-sized queries read K's rows in place instead) */
  if (B && Hkv && S >= 4 && T && D && a.nqb * (Hq / Hkv) > 1) {
    if (moec_mul_size(ctx, k->numel / kcap, Tp, &ktn)) return -1;
    a.kt = (float *)moec_scratch_alloc(sizeof(float) * (size_t)ktn);
    a.Tp = Tp;
    if (a.kt) moec_parallel_for(ctx, B * Hkv, kt_pack_task, &a);
  }
  if (B && Hq && S && Hkv) moec_parallel_for(ctx, moec_dims_prod(out, 0, 3) / S * a.nqb, att_task, &a);
  moec_scratch_free(a.kt);
  if (a.oom) return moec_fail(ctx, "attention: out of memory for a task's buffers");
  return 0;
}

#if defined(__x86_64__) || defined(__i386__)
#define ROT_OPAQUE(t) __asm__("" : "+v"(t))
#else
#define ROT_OPAQUE(t) __asm__("" : "+w"(t))
#endif
int moec_k_rotary(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *cos_t, const moec_tensor *sin_t,
                  int interleaved, moec_tensor *y) {
  if (x->dtype != MOEC_F32 || cos_t->dtype != MOEC_F32 || sin_t->dtype != MOEC_F32)
    return moec_fail(ctx, "rotary: the kernel takes f32 x, cos and sin");
  const int r = x->rank;
  if (r < 1 || x->shape[r - 1] % 2) return moec_fail(ctx, "rotary: x needs a last dim of even size");
  const moec_tensor *cs[2] = {cos_t, sin_t};
  for (int t = 0; t < 2; t++) {
    if (cs[t]->rank > r) return moec_fail(ctx, "rotary: cos/sin rank above x's");
    for (int i = 0; i < cs[t]->rank; i++) {
      int64_t d = cs[t]->shape[i], want = x->shape[r - cs[t]->rank + i];
      if (d != 1 && d != want) return moec_fail(ctx, "rotary: cos/sin do not broadcast to x");
    }
  }
  if (moec_alloc_uninit(ctx, y, MOEC_F32, r, x->shape)) return -1; /* (every element written) */
  int64_t sc[MOEC_MAX_RANK], ss[MOEC_MAX_RANK];
  moec_broadcast_strides(cos_t, r, x->shape, sc);
  moec_broadcast_strides(sin_t, r, x->shape, ss);
  const int64_t D = x->shape[r - 1], h = D / 2, rows = D ? x->numel / D : 0;
  const float *X = x->data, *C = cos_t->data, *Sn = sin_t->data;
  float *Y = y->data;
  int64_t idx[MOEC_MAX_RANK] = {0};
  for (int64_t row = 0; row < rows; row++) {
    int64_t oc = 0, os = 0;
    for (int i = 0; i < r - 1; i++) { oc += idx[i] * sc[i]; os += idx[i] * ss[i]; }
    const float *xr = X + row * D;
    float *yr = Y + row * D;
    if (!interleaved && sc[r - 1] == 1 && ss[r - 1] == 1) { /* (cos/sin rows contiguous: the same sums, vectorised) */
      /* (t = rot * sin rounded, then x * cos + t: the scalar loop's contraction, fma(x, cos, t); the empty asm
       * keeps GCC from fusing the other product instead) */
      const float *cr = C + oc, *sr = Sn + os;
      int64_t j = 0;
      for (; j + VL <= h; j += VL) {
        avf t = -ald(xr + j + h) * ald(sr + j);
        ROT_OPAQUE(t);
        ast(yr + j, ald(xr + j) * ald(cr + j) + t);
      }
      for (; j < h; j++) yr[j] = xr[j] * cr[j] + -xr[j + h] * sr[j];
      for (j = h; j + VL <= D; j += VL) {
        avf t = ald(xr + j - h) * ald(sr + j);
        ROT_OPAQUE(t);
        ast(yr + j, ald(xr + j) * ald(cr + j) + t);
      }
      for (; j < D; j++) yr[j] = xr[j] * cr[j] + xr[j - h] * sr[j];
    } else
    for (int64_t j = 0; j < D; j++) {
      float rot;
      if (interleaved) rot = (j & 1) ? xr[j - 1] : -xr[j + 1];
      else rot = j < h ? -xr[j + h] : xr[j - h];
      yr[j] = xr[j] * C[oc + j * sc[r - 1]] + rot * Sn[os + j * ss[r - 1]];
    }
    for (int i = r - 2; i >= 0; i--) { if (++idx[i] < x->shape[i]) break; idx[i] = 0; }
  }
  return 0;
}

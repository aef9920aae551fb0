/* Fused attention, flash-style: one task per (batch, query head, block of QB query rows); the keys are
 * visited in blocks of KB, each packed transposed once per task ([D][KB]) so that the scores of the
 * block's QB rows are vector FMAs over the keys; the softmax is online (running max m, running sum l,
 * the accumulator rescaled by exp(m_old - m_new)), so the [S, T] score matrix is never stored.
 * Causal attention skips the key blocks wholly in the future of the block's last row. */
#include "rt_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QB 16
#define KB 64
#define MAXD 1024

typedef struct {
  const float *q, *k, *v, *mask;
  float *y;
  int64_t B, Hq, Hkv, S, T, D, Dv, nqb;
  int64_t ms[4]; /* mask broadcast strides over [B, Hq, S, T] */
  float scale;
  int causal;
} att_args;

static void att_task(void *arg, int64_t item) {
  const att_args *a = (const att_args *)arg;
  const int64_t qb = item % a->nqb, bh = item / a->nqb, h = bh % a->Hq, b = bh / a->Hq;
  const int64_t hk = h / (a->Hq / a->Hkv), D = a->D, Dv = a->Dv, T = a->T, S = a->S;
  const int64_t i0 = qb * QB, i1 = i0 + QB < S ? i0 + QB : S, nr = i1 - i0;
  const float *Q = a->q + ((b * a->Hq + h) * S + i0) * D;
  const float *K = a->k + (b * a->Hkv + hk) * T * D;
  const float *V = a->v + (b * a->Hkv + hk) * T * Dv;
  float *Y = a->y + ((b * a->Hq + h) * S + i0) * Dv;
  float kt[MAXD * KB]; /* the key block, transposed: kt[d * KB + j] */
  float s[QB][KB], acc[QB][MAXD], m[QB], l[QB];
  for (int64_t r = 0; r < nr; r++) {
    m[r] = -INFINITY; l[r] = 0.f;
    memset(acc[r], 0, (size_t)Dv * sizeof(float));
  }
  const int64_t shift = T - S; /* causal: row i sees keys j <= i + shift */
  int64_t jend = T;
  if (a->causal) { jend = i1 - 1 + shift + 1; if (jend > T) jend = T; if (jend < 0) jend = 0; }
  for (int64_t j0 = 0; j0 < jend; j0 += KB) {
    const int64_t nk = j0 + KB < jend ? KB : jend - j0;
    for (int64_t j = 0; j < nk; j++)
      for (int64_t d = 0; d < D; d++) kt[d * KB + j] = K[(j0 + j) * D + d];
    for (int64_t r = 0; r < nr; r++) {
      float *sr = s[r];
      for (int64_t j = 0; j < KB; j++) sr[j] = 0.f;
      const float *qr = Q + r * D;
      for (int64_t d = 0; d < D; d++) {
        const float qd = qr[d], *kd = kt + d * KB;
        for (int64_t j = 0; j < KB; j++) sr[j] += qd * kd[j];
      }
      const int64_t i = i0 + r;
      float mx = -INFINITY;
      for (int64_t j = 0; j < nk; j++) {
        float x = sr[j] * a->scale;
        if (a->mask) x += a->mask[b * a->ms[0] + h * a->ms[1] + i * a->ms[2] + (j0 + j) * a->ms[3]];
        if (a->causal && j0 + j > i + shift) x = -INFINITY;
        sr[j] = x;
        if (x > mx || x != x) mx = x;
      }
      if (mx == -INFINITY) continue; /* nothing visible in this block */
      const float mnew = mx > m[r] || mx != mx ? mx : m[r];
      const float corr = m[r] == -INFINITY ? 0.f : expf(m[r] - mnew);
      float sum = 0.f;
      for (int64_t j = 0; j < nk; j++) { sr[j] = expf(sr[j] - mnew); sum += sr[j]; }
      l[r] = l[r] * corr + sum;
      m[r] = mnew;
      float *ar = acc[r];
      if (corr != 1.f) for (int64_t c = 0; c < Dv; c++) ar[c] *= corr;
      for (int64_t j = 0; j < nk; j++) {
        const float p = sr[j], *vr = V + (j0 + j) * Dv;
        for (int64_t c = 0; c < Dv; c++) ar[c] += p * vr[c];
      }
    }
  }
  for (int64_t r = 0; r < nr; r++) {
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    const int dead = m[r] == -INFINITY;
    for (int64_t c = 0; c < Dv; c++) Y[r * Dv + c] = dead ? 0.f : acc[r][c] * inv;
  }
}

int moec_k_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                     const moec_tensor *mask, double scale, int causal, moec_tensor *y) {
  if (q->dtype != MOEC_F32 || k->dtype != MOEC_F32 || v->dtype != MOEC_F32 || (mask && mask->dtype != MOEC_F32))
    return moec_fail(ctx, "attention: the kernel takes f32 q, k, v and mask");
  if (q->rank != 4 || k->rank != 4 || v->rank != 4 || (mask && mask->rank > 4))
    return moec_fail(ctx, "attention: q, k, v must have rank 4, the mask at most 4");
  const int64_t B = q->shape[0], Hq = q->shape[1], S = q->shape[2], D = q->shape[3];
  const int64_t Hkv = k->shape[1], T = k->shape[2], Dv = v->shape[3];
  if (k->shape[0] != B || v->shape[0] != B || k->shape[3] != D || v->shape[1] != Hkv || v->shape[2] != T)
    return moec_fail(ctx, "attention: q [%lld,%lld,%lld,%lld], k [%lld,%lld,%lld,%lld], v [%lld,%lld,%lld,%lld] do not fit",
                     (long long)B, (long long)Hq, (long long)S, (long long)D, (long long)k->shape[0],
                     (long long)Hkv, (long long)T, (long long)k->shape[3], (long long)v->shape[0],
                     (long long)v->shape[1], (long long)v->shape[2], (long long)Dv);
  if (Hkv == 0 ? Hq != 0 : Hq % Hkv)
    return moec_fail(ctx, "attention: %lld query heads are not a multiple of %lld key/value heads", (long long)Hq,
                     (long long)Hkv);
  if (D > MAXD || Dv > MAXD) return moec_fail(ctx, "attention: head size above %d", MAXD);
  int64_t out[4] = {B, Hq, S, Dv}, sc[4] = {B, Hq, S, T};
  att_args a = {q->data, k->data, v->data, NULL, NULL, B, Hq, Hkv, S, T, D, Dv, (S + QB - 1) / QB,
                {0, 0, 0, 0}, (float)scale, causal};
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
  if (moec_alloc(ctx, y, MOEC_F32, 4, out)) return -1;
  a.y = y->data;
  /* items <= the element count of q (nqb <= S, D >= 1) or y: fits by the runtime's size invariant */
  if (B && Hq && S && Hkv) moec_parallel_for(ctx, moec_dims_prod(out, 0, 3) / S * a.nqb, att_task, &a);
  return 0;
}

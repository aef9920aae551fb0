/* KV-cache kernels (issue 17 item 4): see rt_kv.h. */
#include <math.h>
#include <string.h>

#include "rt_attention.h"
#include "rt_kv.h"

int moec_k_kv_append(moec_ctx *ctx, const moec_tensor *cache, const moec_tensor *newt, const moec_tensor *pos,
                     int64_t axis, moec_tensor *out) {
  int64_t p[1], np_;
  if (moec_read_ints(ctx, pos, p, 1, &np_, "kv_append position")) return -1;
  if (np_ != 1) return moec_fail(ctx, "kv_append position must hold one value, got %lld", (long long)np_);
  int r = cache->rank;
  if (newt->rank != r || r < 1) return moec_fail(ctx, "kv_append: cache rank %d, new rank %d", r, newt->rank);
  if (axis < 0) axis += r;
  if (axis < 0 || axis >= r) return moec_fail(ctx, "kv_append: axis out of range");
  if (newt->dtype != cache->dtype) return moec_fail(ctx, "kv_append: cache and new differ in element type");
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
    for (int64_t o = 0; o < outer; o++)
      memcpy(dst + ((size_t)o * (size_t)m + (size_t)p[0]) * row, src + (size_t)o * (size_t)t * row, (size_t)t * row);
  return moec_view(ctx, out, cache, r, cache->shape);
}

int moec_k_kv_attention(moec_ctx *ctx, const moec_tensor *q, const moec_tensor *k, const moec_tensor *v,
                        const moec_tensor *pos, const moec_tensor *mask, double scale, int causal, moec_tensor *y) {
  int64_t p[1], np_;
  if (moec_read_ints(ctx, pos, p, 1, &np_, "kv_attention position")) return -1;
  if (np_ != 1) return moec_fail(ctx, "kv_attention position must hold one value");
  if (q->rank != 4 || k->rank != 4 || v->rank != 4) return moec_fail(ctx, "kv_attention: q, k, v must have rank 4");
  if (q->dtype != MOEC_F32 || (mask && mask->dtype != MOEC_F32)) return moec_fail(ctx, "kv_attention: f32 only");
  const int64_t B = q->shape[0], Hq = q->shape[1], S = q->shape[2], M = k->shape[2], L = p[0] + S;
  if (p[0] < 0 || L > M || v->shape[2] != M)
    return moec_fail(ctx, "kv_attention: rows 0..%lld do not fit caches of %lld / %lld", (long long)L, (long long)M,
                     (long long)v->shape[2]);
  int64_t sc[4] = {B, Hq, S, L}, ms[4] = {0, 0, 0, 0};
  int64_t Hm = 1;
  if (mask) {
    if (mask->rank > 4) return moec_fail(ctx, "kv_attention: mask rank above 4");
    for (int i = 0; i < mask->rank; i++) {
      int64_t want = sc[4 - mask->rank + i];
      if (mask->shape[i] != 1 && mask->shape[i] != want)
        return moec_fail(ctx, "kv_attention: the mask's dim %d (%lld) does not broadcast to %lld", i,
                         (long long)mask->shape[i], (long long)want);
    }
    moec_broadcast_strides(mask, 4, sc, ms);
    if (mask->rank >= 3 && mask->shape[mask->rank - 3] != 1) Hm = Hq;
  }
  int64_t shp[4] = {B, Hm, S, M};
  moec_tensor full;
  memset(&full, 0, sizeof full);
  if (moec_alloc(ctx, &full, MOEC_F32, 4, shp)) return -1;
  float *f = (float *)full.data;
  const float *mk = mask ? (const float *)mask->data : NULL;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < Hm; h++)
      for (int64_t i = 0; i < S; i++) {
        float *row = f + ((b * Hm + h) * S + i) * M;
        for (int64_t j = 0; j < M; j++) {
          float x;
          if (j >= L || (causal && j > p[0] + i)) x = -INFINITY;
          else x = mk ? mk[b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]] : 0.0f;
          row[j] = x;
        }
      }
  int rc = moec_k_attention(ctx, q, k, v, &full, scale, 0, y);
  moec_release(&full);
  return rc;
}

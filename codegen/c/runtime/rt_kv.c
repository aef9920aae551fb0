/* KV-cache kernels (issue 17 item 4): see rt_kv.h. */
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
  const int64_t S = q->shape[2], M = k->shape[2];
  if (p[0] < 0 || p[0] > M || S > M - p[0] || v->shape[2] != M)
    return moec_fail(ctx, "kv_attention: rows 0..%lld + %lld do not fit caches of %lld / %lld", (long long)p[0],
                     (long long)S, (long long)M, (long long)v->shape[2]);
  const int64_t L = p[0] + S;
  /* the first L rows only: decode reads O(L) bytes per step, whatever the buffers' capacity */
  return moec_attention_rows(ctx, q, k, v, L, mask, scale, causal, y);
}

/* Indexing kernels: gathers, scatters, nonzero, one-hot, cumsum, top-k, arg-max/min. */
#include "rt_index.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include <math.h>
#include <stdlib.h>

static int wrap(moec_ctx *ctx, int64_t i, int64_t n, int64_t *out) {
  if (i < -n || i >= n) return moec_fail(ctx, "index %lld out of range [%lld, %lld)", (long long)i, (long long)-n, (long long)n);
  *out = i < 0 ? i + n : i;
  return 0;
}

static void copy_block(moec_tensor *dst, int64_t di, const moec_tensor *src, int64_t si, int64_t n) {
  if (moec_dtype_bits(src->dtype) < 8) {
    for (int64_t j = 0; j < n; j++) moec_copy_elem(dst, di + j, src, si + j);
    return;
  }
  size_t es = moec_elem_size(src->dtype);
  memcpy((char *)dst->data + di * es, (const char *)src->data + si * es, (size_t)n * es);
}

int moec_k_gather(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, int64_t axis, moec_tensor *out) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, data->rank, &a)) return -1;
  int r = data->rank - 1 + idx->rank;
  if (r > MOEC_MAX_RANK) return moec_fail(ctx, "result rank %d too large", r);
  int64_t d[MOEC_MAX_RANK];
  int k = 0;
  for (int i = 0; i < a; i++) d[k++] = data->shape[i];
  for (int i = 0; i < idx->rank; i++) d[k++] = idx->shape[i];
  for (int i = (int)a + 1; i < data->rank; i++) d[k++] = data->shape[i];
  /* (uninit: (outer, index, inner) covers the output; a bad index is an error) */
  if (moec_alloc_uninit(ctx, out, data->dtype, r, d)) return -1;
  int64_t outer = moec_dims_prod(data->shape, 0, (int)a), inner = moec_dims_prod(data->shape, (int)a + 1, data->rank), n = data->shape[a];
  int64_t ni = idx->numel;
  for (int64_t j = 0; j < ni; j++) {
    int64_t v;
    if (wrap(ctx, moec_get_i64(idx, j), n, &v)) return -1;
    for (int64_t o = 0; o < outer; o++) copy_block(out, (o * ni + j) * inner, data, (o * n + v) * inner, inner);
  }
  return 0;
}

int moec_k_gather_elements(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, int64_t axis, moec_tensor *out) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, data->rank, &a)) return -1;
  if (idx->rank != data->rank) return moec_fail(ctx, "indices rank must equal data rank");
  for (int i = 0; i < data->rank; i++)
    if (i != a && idx->shape[i] > data->shape[i]) return moec_fail(ctx, "indices dim %d exceeds data's", i);
  if (moec_alloc_uninit(ctx, out, data->dtype, idx->rank, idx->shape)) return -1; /* (uninit: one write per index) */
  int64_t ds[MOEC_MAX_RANK], pos[MOEC_MAX_RANK] = {0};
  moec_strides(data, ds);
  for (int64_t j = 0; j < idx->numel; j++) {
    int64_t v, src = 0;
    if (wrap(ctx, moec_get_i64(idx, j), data->shape[a], &v)) return -1;
    for (int i = 0; i < data->rank; i++) src += (i == a ? v : pos[i]) * ds[i];
    moec_copy_elem(out, j, data, src);
    for (int i = idx->rank - 1; i >= 0; i--) { if (++pos[i] < idx->shape[i]) break; pos[i] = 0; }
  }
  return 0;
}

int moec_k_gather_nd(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, int64_t b, moec_tensor *out) {
  if (idx->rank < 1) return moec_fail(ctx, "indices must have rank >= 1");
  int64_t q = idx->shape[idx->rank - 1];
  if (b < 0 || b > data->rank || q > data->rank - b) return moec_fail(ctx, "indices last dim %lld + batch_dims %lld exceeds data rank %d",
                                                    (long long)q, (long long)b, data->rank);
  int r = idx->rank - 1 + data->rank - (int)(b + q);
  if (r > MOEC_MAX_RANK) return moec_fail(ctx, "result rank too large");
  int64_t d[MOEC_MAX_RANK];
  int k = 0;
  for (int i = 0; i < idx->rank - 1; i++) d[k++] = idx->shape[i];
  for (int i = (int)(b + q); i < data->rank; i++) d[k++] = data->shape[i];
  /* (not zeroed: each of the rows index tuples -- also empty ones, q == 0, which select the whole block after
   * the batch dims -- copies one block of inner elements, rows * inner = the output's size) */
  if (moec_alloc_uninit(ctx, out, data->dtype, r, d)) return -1;
  int64_t nb = moec_dims_prod(data->shape, 0, (int)b), inner = moec_dims_prod(data->shape, (int)(b + q), data->rank);
  int64_t ds[MOEC_MAX_RANK];
  moec_strides(data, ds);
  int64_t rows = moec_dims_prod(idx->shape, 0, idx->rank - 1); /* the index tuples (numel / q unless q == 0) */
  int64_t per_batch = nb ? rows / nb : 0;
  int64_t bstride = b ? ds[b - 1] : 0;
  for (int64_t row = 0; row < rows; row++) {
    int64_t bi = per_batch ? row / per_batch : 0, src = bi * bstride;
    for (int64_t j = 0; j < q; j++) {
      int64_t v;
      if (wrap(ctx, moec_get_i64(idx, row * q + j), data->shape[b + j], &v)) return -1;
      src += v * ds[b + j];
    }
    copy_block(out, row * inner, data, src, inner);
  }
  return 0;
}

static void reduce_into(moec_tensor *out, int64_t di, const moec_tensor *upd, int64_t ui, int red) {
  if (red == MOEC_RED_NONE) { moec_copy_elem(out, di, upd, ui); return; }
  if (moec_is_float(out->dtype)) {
    double a = moec_get_f64(out, di), b = moec_get_f64(upd, ui), r;
    r = red == MOEC_RED_ADD ? a + b : red == MOEC_RED_MUL ? a * b : red == MOEC_RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
    if (out->dtype == MOEC_F32 && red == MOEC_RED_ADD) ((float *)out->data)[di] = (float)a + (float)b; /* f32 sum like ORT */
    else moec_set_f64(out, di, r);
  } else {
    int64_t a = moec_get_i64(out, di), b = moec_get_i64(upd, ui), r;
    r = red == MOEC_RED_ADD ? (int64_t)((uint64_t)a + (uint64_t)b) : red == MOEC_RED_MUL ? (int64_t)((uint64_t)a * (uint64_t)b)
      : red == MOEC_RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
    moec_set_i64(out, di, r);
  }
}

int moec_k_scatter_elements(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, const moec_tensor *upd,
                            int64_t axis, int red, moec_tensor *out) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, data->rank, &a)) return -1;
  if (idx->rank != data->rank || upd->rank != data->rank) return moec_fail(ctx, "indices/updates rank must equal data rank");
  for (int i = 0; i < idx->rank; i++) {
    if (idx->shape[i] != upd->shape[i]) return moec_fail(ctx, "indices and updates shapes differ");
    if (i != a && idx->shape[i] > data->shape[i]) return moec_fail(ctx, "indices dim %d exceeds data's", i);
  }
  if (moec_clone(ctx, out, data)) return -1;
  int64_t ds[MOEC_MAX_RANK], pos[MOEC_MAX_RANK] = {0};
  moec_strides(data, ds);
  for (int64_t j = 0; j < idx->numel; j++) {
    int64_t v, dst = 0;
    if (wrap(ctx, moec_get_i64(idx, j), data->shape[a], &v)) return -1;
    for (int i = 0; i < data->rank; i++) dst += (i == a ? v : pos[i]) * ds[i];
    reduce_into(out, dst, upd, j, red);
    for (int i = idx->rank - 1; i >= 0; i--) { if (++pos[i] < idx->shape[i]) break; pos[i] = 0; }
  }
  return 0;
}

int moec_k_scatter_nd(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, const moec_tensor *upd, int red,
                      moec_tensor *out) {
  if (idx->rank < 1) return moec_fail(ctx, "indices must have rank >= 1");
  int64_t q = idx->shape[idx->rank - 1];
  if (q > data->rank) return moec_fail(ctx, "indices last dim %lld exceeds data rank %d", (long long)q, data->rank);
  /* updates shape must be indices.shape[:-1] + data.shape[q:] */
  if (upd->rank != idx->rank - 1 + data->rank - q) return moec_fail(ctx, "updates has the wrong rank");
  for (int i = 0; i < idx->rank - 1; i++)
    if (upd->shape[i] != idx->shape[i]) return moec_fail(ctx, "updates shape does not match indices");
  for (int i = (int)q; i < data->rank; i++)
    if (upd->shape[idx->rank - 1 + i - q] != data->shape[i]) return moec_fail(ctx, "updates shape does not match data");
  if (moec_clone(ctx, out, data)) return -1;
  int64_t ds[MOEC_MAX_RANK], inner = moec_dims_prod(data->shape, (int)q, data->rank);
  moec_strides(data, ds);
  int64_t rows = q ? idx->numel / q : 0;
  if (q == 0) rows = idx->numel == 0 ? moec_numel(idx->rank - 1, idx->shape) : 0;
  for (int64_t row = 0; row < rows; row++) {
    int64_t dst = 0;
    for (int64_t j = 0; j < q; j++) {
      int64_t v;
      if (wrap(ctx, moec_get_i64(idx, row * q + j), data->shape[j], &v)) return -1;
      dst += v * ds[j];
    }
    for (int64_t e = 0; e < inner; e++) reduce_into(out, dst + e, upd, row * inner + e, red);
  }
  return 0;
}

int moec_k_nonzero(moec_ctx *ctx, const moec_tensor *x, moec_tensor *out) {
  int64_t n = 0;
  int fl = moec_is_float(x->dtype);
  for (int64_t i = 0; i < x->numel; i++) n += fl ? moec_get_f64(x, i) != 0 : moec_get_i64(x, i) != 0;
  int64_t d[2] = {x->rank, n};
  /* (uninit: the second pass meets the same n nonzeros and writes each one's rank coordinates) */
  if (moec_alloc_uninit(ctx, out, MOEC_I64, 2, d)) return -1;
  int64_t *o = (int64_t *)out->data, pos[MOEC_MAX_RANK] = {0}, c = 0;
  for (int64_t i = 0; i < x->numel; i++) {
    int nz = fl ? moec_get_f64(x, i) != 0 : moec_get_i64(x, i) != 0;
    if (nz) {
      for (int k = 0; k < x->rank; k++) o[k * n + c] = pos[k];
      c++;
    }
    for (int k = x->rank - 1; k >= 0; k--) { if (++pos[k] < x->shape[k]) break; pos[k] = 0; }
  }
  return 0;
}

int moec_k_one_hot(moec_ctx *ctx, const moec_tensor *idx, const moec_tensor *depth, const moec_tensor *values,
                   int64_t axis, moec_tensor *out) {
  if (depth->numel != 1) return moec_fail(ctx, "depth must be a scalar");
  if (values->numel != 2) return moec_fail(ctx, "values must have 2 elements");
  int64_t dep = moec_get_i64(depth, 0); /* (floats: truncated, NaN/inf saturated: no UB) */
  if (dep < 1) return moec_fail(ctx, "depth must be positive, got %lld", (long long)dep); /* as onnxruntime */
  int r = idx->rank + 1;
  if (r > MOEC_MAX_RANK) return moec_fail(ctx, "result rank %d exceeds the runtime's maximum of %d", r, MOEC_MAX_RANK);
  int64_t a;
  if (moec_norm_axis(ctx, axis, r, &a)) return -1;
  int64_t d[MOEC_MAX_RANK];
  for (int i = 0, j = 0; i < r; i++) d[i] = i == a ? dep : idx->shape[j++];
  if (moec_alloc_uninit(ctx, out, values->dtype, r, d)) return -1; /* (uninit: on or off value at every position) */
  int64_t outer = moec_dims_prod(d, 0, (int)a), inner = moec_dims_prod(d, (int)a + 1, r);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t c = 0; c < dep; c++)
      for (int64_t in = 0; in < inner; in++) {
        int64_t ii = o * inner + in;
        int64_t v = moec_get_i64(idx, ii);
        if (v < 0) v += dep;
        moec_copy_elem(out, (o * dep + c) * inner + in, values, v == c ? 1 : 0);
      }
  return 0;
}

int moec_k_cumsum(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *axis_t, int exclusive, int reverse,
                  moec_tensor *out) {
  int64_t a;
  if (axis_t->numel != 1 || moec_is_float(axis_t->dtype)) return moec_fail(ctx, "axis must be one integer");
  if (moec_norm_axis(ctx, moec_get_i64(axis_t, 0), x->rank, &a)) return -1;
  if (moec_alloc_uninit(ctx, out, x->dtype, x->rank, x->shape)) return -1; /* (uninit: every (o, s, in) is set) */
  int64_t outer = moec_dims_prod(x->shape, 0, (int)a), inner = moec_dims_prod(x->shape, (int)a + 1, x->rank), n = x->shape[a];
  int fl = moec_is_float(x->dtype);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in = 0; in < inner; in++) {
      double sf = 0;
      int64_t si = 0;
      for (int64_t s = 0; s < n; s++) {
        int64_t j = reverse ? n - 1 - s : s;
        int64_t p = (o * n + j) * inner + in;
        if (fl) {
          double v = moec_get_f64(x, p);
          if (exclusive) { moec_set_f64(out, p, sf); sf += v; } else { sf += v; moec_set_f64(out, p, sf); }
        } else {
          int64_t v = moec_get_i64(x, p);
          if (exclusive) { moec_set_i64(out, p, si); si = (int64_t)((uint64_t)si + (uint64_t)v); } else { si = (int64_t)((uint64_t)si + (uint64_t)v); moec_set_i64(out, p, si); }
        }
      }
    }
  return 0;
}

typedef struct { double v; int64_t i; } kv;
static int largest_cmp(const void *p, const void *q) {
  const kv *a = (const kv *)p, *b = (const kv *)q;
  if (a->v > b->v) return -1;
  if (a->v < b->v) return 1;
  return a->i < b->i ? -1 : (a->i > b->i);
}
static int smallest_cmp(const void *p, const void *q) {
  const kv *a = (const kv *)p, *b = (const kv *)q;
  if (a->v < b->v) return -1;
  if (a->v > b->v) return 1;
  return a->i < b->i ? -1 : (a->i > b->i);
}

int moec_k_topk(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *kt, int64_t axis, int largest,
                moec_tensor *values, moec_tensor *indices) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  if (kt->numel != 1) return moec_fail(ctx, "k must have one element");
  int64_t k = moec_get_i64(kt, 0), n = x->shape[a];
  if (k < 0 || k > n) return moec_fail(ctx, "k=%lld out of range for dimension %lld", (long long)k, (long long)n);
  int64_t d[MOEC_MAX_RANK];
  memcpy(d, x->shape, sizeof d);
  d[a] = k;
  /* (uninit: each (outer, inner) line writes its k values and indices) */
  if (moec_alloc_uninit(ctx, values, x->dtype, x->rank, d) || moec_alloc_uninit(ctx, indices, MOEC_I64, x->rank, d))
    return -1;
  int64_t outer = moec_dims_prod(x->shape, 0, (int)a), inner = moec_dims_prod(x->shape, (int)a + 1, x->rank);
  kv *buf = (kv *)malloc(sizeof(kv) * (size_t)(n ? n : 1));
  if (!buf) return moec_fail(ctx, "out of memory");
  int fl = moec_is_float(x->dtype);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in = 0; in < inner; in++) {
      for (int64_t j = 0; j < n; j++) {
        int64_t p = (o * n + j) * inner + in;
        double v = fl ? moec_get_f64(x, p) : (double)moec_get_i64(x, p);
        if (v != v) v = INFINITY; /* NaN ranks like +inf */
        buf[j].v = v;
        buf[j].i = j;
      }
      if (k == 1) { /* common in routers: one linear scan */
        int64_t best = 0;
        for (int64_t j = 1; j < n; j++)
          if (largest ? buf[j].v > buf[best].v : buf[j].v < buf[best].v) best = j;
        buf[0] = buf[best];
      } else {
        qsort(buf, (size_t)n, sizeof(kv), largest ? largest_cmp : smallest_cmp);
      }
      for (int64_t j = 0; j < k; j++) {
        int64_t q = (o * k + j) * inner + in;
        moec_copy_elem(values, q, x, (o * n + buf[j].i) * inner + in);
        ((int64_t *)indices->data)[q] = buf[j].i;
      }
    }
  free(buf);
  return 0;
}

int moec_k_argextreme(moec_ctx *ctx, const moec_tensor *x, int64_t axis, int keepdims, int select_last, int largest,
                      moec_tensor *out) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  int64_t n = x->shape[a];
  if (n == 0) return moec_fail(ctx, "arg-max/min over an empty dimension");
  int64_t d[MOEC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++) {
    if (i == a) { if (keepdims) d[r++] = 1; }
    else d[r++] = x->shape[i];
  }
  if (moec_alloc_uninit(ctx, out, MOEC_I64, r, d)) return -1; /* (uninit: one index per (outer, inner); n > 0) */
  int64_t outer = moec_dims_prod(x->shape, 0, (int)a), inner = moec_dims_prod(x->shape, (int)a + 1, x->rank);
  int fl = moec_is_float(x->dtype);
  if (x->dtype == MOEC_F32 && inner == 1 && largest && !select_last) {
    /* contiguous f32 rows (a greedy step's logits): the scan's answer in two vectorisable passes. The scan keeps
     * x[0], then each x[j] > best; so the result is 0 when x[0] is NaN, else the first j with x[j] equal to the
     * largest non-NaN value (NaN never compares greater; -0 and +0 compare equal in both). */
    for (int64_t o = 0; o < outer; o++) {
      const float *r = (const float *)x->data + o * n;
      int64_t best = 0;
      float m = r[0];
      if (m == m) {
        int64_t j = 1;
#ifdef __AVX512F__
        /* vmaxps returns its second operand when either is NaN or both are zeros: max(x, m) keeps m then */
        __m512 mv = _mm512_set1_ps(m);
        for (; j + 16 <= n; j += 16) mv = _mm512_max_ps(_mm512_loadu_ps(r + j), mv);
        for (int l = 0; l < 16; l++) { float v = ((float *)&mv)[l]; m = v > m ? v : m; }
#endif
        for (; j < n; j++) m = r[j] > m ? r[j] : m;
#ifdef __AVX512F__
        __m512 want = _mm512_set1_ps(m);
        for (; best + 16 <= n; best += 16) {
          __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(r + best), want, _CMP_EQ_OQ);
          if (hit) { best += __builtin_ctz((unsigned)hit); break; }
        }
#endif
        while (r[best] != m) best++;
      }
      ((int64_t *)out->data)[o] = best;
    }
    return 0;
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in = 0; in < inner; in++) {
      int64_t best = 0;
      double bv = 0;
      for (int64_t j = 0; j < n; j++) {
        int64_t p = (o * n + j) * inner + in;
        double v = fl ? moec_get_f64(x, p) : (double)moec_get_i64(x, p);
        int better = j == 0 || (largest ? (select_last ? v >= bv : v > bv) : (select_last ? v <= bv : v < bv));
        if (better) { best = j; bv = v; }
      }
      ((int64_t *)out->data)[o * inner + in] = best;
    }
  return 0;
}

/* Shape and data-movement kernels.  Reshape-like ops return views (no copy). */
#include "rt_shape.h"

#include <math.h>

int moec_k_shape(moec_ctx *ctx, const moec_tensor *x, int64_t s, int64_t e, int has_end, moec_tensor *out) {
  int64_t r = x->rank;
  if (!has_end) e = r;
  if (s < 0) s += r;
  if (e < 0) e += r;
  s = s < 0 ? 0 : (s > r ? r : s);
  e = e < 0 ? 0 : (e > r ? r : e);
  int64_t n = e > s ? e - s : 0;
  if (moec_alloc_uninit(ctx, out, MOEC_I64, 1, &n)) return -1; /* (uninit: n dims copied) */
  for (int64_t i = 0; i < n; i++) ((int64_t *)out->data)[i] = x->shape[s + i];
  return 0;
}

int moec_k_reshape(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *shape, int allowzero, moec_tensor *out) {
  int64_t dims[MOEC_MAX_RANK], n;
  if (moec_read_ints(ctx, shape, dims, MOEC_MAX_RANK, &n, "reshape target")) return -1;
  int neg = -1;
  int64_t known = 1, tmp[MOEC_MAX_RANK];
  for (int64_t i = 0; i < n; i++) {
    if (dims[i] == 0 && !allowzero) {
      if (i >= x->rank) return moec_fail(ctx, "0 in the target shape at position %lld but input has rank %d", (long long)i, x->rank);
      dims[i] = x->shape[i];
    }
    if (dims[i] == -1) {
      if (neg >= 0) return moec_fail(ctx, "more than one -1 in the target shape");
      neg = (int)i;
      continue;
    }
    if (dims[i] < 0) return moec_fail(ctx, "negative dimension %lld in the target shape", (long long)dims[i]);
  }
  /* the known part's size, checked (a -1 counts as 1): no product of run-time values is taken raw */
  for (int64_t i = 0; i < n; i++) tmp[i] = (int)i == neg ? 1 : dims[i];
  if (moec_shape_numel(ctx, (int)n, tmp, &known)) return -1;
  if (neg >= 0) {
    if (known == 0 || x->numel % known)
      return moec_fail(ctx, "cannot infer -1: %lld elements into known size %lld", (long long)x->numel, (long long)known);
    dims[neg] = x->numel / known;
  }
  /* moec_view checks the whole shape (overflow, the 2^40 limit with zeros counted as one) and the count */
  return moec_view(ctx, out, x, (int)n, dims);
}

int moec_k_flatten(moec_ctx *ctx, const moec_tensor *x, int64_t axis, moec_tensor *out) {
  if (axis < 0) axis += x->rank;
  if (axis < 0 || axis > x->rank) return moec_fail(ctx, "axis out of range");
  int64_t d[2] = {moec_dims_prod(x->shape, 0, (int)axis), moec_dims_prod(x->shape, (int)axis, x->rank)};
  return moec_view(ctx, out, x, 2, d);
}

int moec_k_squeeze(moec_ctx *ctx, const moec_tensor *x, const int64_t *axes, int n, moec_tensor *out) {
  int drop[MOEC_MAX_RANK] = {0};
  for (int i = 0; i < n; i++) {
    int64_t a;
    if (moec_norm_axis(ctx, axes[i], x->rank, &a)) return -1;
    if (x->shape[a] != 1) return moec_fail(ctx, "cannot squeeze dimension %lld of size %lld", (long long)a, (long long)x->shape[a]);
    drop[a] = 1;
  }
  int64_t d[MOEC_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++) if (!drop[i]) d[r++] = x->shape[i];
  return moec_view(ctx, out, x, r, d);
}

int moec_k_unsqueeze(moec_ctx *ctx, const moec_tensor *x, const int64_t *axes, int n, moec_tensor *out) {
  int r = x->rank + n;
  if (r > MOEC_MAX_RANK) return moec_fail(ctx, "rank %d too large", r);
  int ins[MOEC_MAX_RANK] = {0};
  for (int i = 0; i < n; i++) {
    int64_t a;
    if (moec_norm_axis(ctx, axes[i], r, &a)) return -1;
    if (ins[a]) return moec_fail(ctx, "repeated axis %lld", (long long)a);
    ins[a] = 1;
  }
  int64_t d[MOEC_MAX_RANK];
  for (int i = 0, j = 0; i < r; i++) d[i] = ins[i] ? 1 : x->shape[j++];
  return moec_view(ctx, out, x, r, d);
}

int moec_k_squeeze_dyn(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *axes, int unsq, moec_tensor *out) {
  int64_t ax[MOEC_MAX_RANK], n;
  if (moec_read_ints(ctx, axes, ax, MOEC_MAX_RANK, &n, "axes")) return -1;
  return unsq ? moec_k_unsqueeze(ctx, x, ax, (int)n, out) : moec_k_squeeze(ctx, x, ax, (int)n, out);
}

int moec_k_transpose(moec_ctx *ctx, const moec_tensor *x, const int64_t *perm, moec_tensor *out) {
  int r = x->rank;
  int64_t d[MOEC_MAX_RANK], ss[MOEC_MAX_RANK], s[MOEC_MAX_RANK];
  moec_strides(x, ss);
  for (int i = 0; i < r; i++) {
    if (perm[i] < 0 || perm[i] >= r) return moec_fail(ctx, "bad permutation");
    d[i] = x->shape[perm[i]];
    s[i] = ss[perm[i]];
  }
  size_t es = moec_elem_size(x->dtype);
  int packed = moec_dtype_bits(x->dtype) < 8; /* (packed values are set into a zeroed output) */
  if ((packed ? moec_alloc : moec_alloc_uninit)(ctx, out, x->dtype, r, d)) return -1;
  int64_t idx[MOEC_MAX_RANK] = {0}, src = 0;
  const char *xd = (const char *)x->data;
  char *od = (char *)out->data;
  /* the output's trailing dims that are one contiguous run of x (e.g. [B,T,H,D] -> [B,H,T,D]: rows of D) are
   * copied as runs, the dims before them stepped as below (element by element: 2-3% of a model's prefill) */
  int64_t run = 1;
  int kr = r - 1;
  for (; kr >= 0 && (s[kr] == run || d[kr] == 1); kr--) run = moec_dims_prod(d, kr, r); /* (<= the numel) */
  if (!packed && run > 1 && out->numel > 0) {
    const size_t rb = (size_t)run * es;
    for (int64_t i = 0; i < out->numel; i += run) {
      memcpy(od + i * es, xd + src * es, rb);
      for (int k = kr; k >= 0; k--) {
        if (++idx[k] < d[k]) { src += s[k]; break; }
        src -= s[k] * (d[k] - 1);
        idx[k] = 0;
      }
    }
    return 0;
  }
  for (int64_t i = 0; i < out->numel; i++) {
    if (packed) moec_copy_elem(out, i, x, src);
    else if (es == 4) ((uint32_t *)od)[i] = ((const uint32_t *)xd)[src];
    else if (es == 8) ((uint64_t *)od)[i] = ((const uint64_t *)xd)[src];
    else memcpy(od + i * es, xd + src * es, es);
    for (int k = r - 1; k >= 0; k--) {
      if (++idx[k] < d[k]) { src += s[k]; break; }
      src -= s[k] * (d[k] - 1); /* an in-range offset: bounded by the tensor's extent */
      idx[k] = 0;
    }
  }
  return 0;
}

/* copy x broadcast into out (out already allocated with a shape x broadcasts to) */
static void bcast_copy(moec_tensor *out, const moec_tensor *x) {
  int64_t s[MOEC_MAX_RANK], idx[MOEC_MAX_RANK] = {0}, src = 0;
  int r = out->rank;
  moec_broadcast_strides(x, r, out->shape, s);
  size_t es = moec_elem_size(x->dtype);
  int packed = moec_dtype_bits(x->dtype) < 8;
  for (int64_t i = 0; i < out->numel; i++) {
    if (packed) moec_copy_elem(out, i, x, src);
    else memcpy((char *)out->data + i * es, (const char *)x->data + src * es, es);
    for (int k = r - 1; k >= 0; k--) {
      if (++idx[k] < out->shape[k]) { src += s[k]; break; }
      src -= s[k] * (out->shape[k] - 1);
      idx[k] = 0;
    }
  }
}

int moec_k_expand(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *shape, moec_tensor *out) {
  int64_t d[MOEC_MAX_RANK], n;
  if (moec_read_ints(ctx, shape, d, MOEC_MAX_RANK, &n, "expand shape")) return -1;
  moec_tensor tgt;
  memset(&tgt, 0, sizeof tgt);
  tgt.rank = (int)n;
  for (int i = 0; i < n; i++) {
    if (d[i] < 0) return moec_fail(ctx, "negative dimension in expand shape");
    tgt.shape[i] = d[i];
  }
  const moec_tensor *ts[2] = {x, &tgt};
  int r;
  int64_t os[MOEC_MAX_RANK];
  if (moec_broadcast_shape(ctx, 2, ts, &r, os)) return -1;
  if (moec_alloc_uninit(ctx, out, x->dtype, r, os)) return -1; /* (uninit: bcast_copy sets every element) */
  bcast_copy(out, x);
  return 0;
}

int moec_k_tile(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *repeats, moec_tensor *out) {
  int64_t rep[MOEC_MAX_RANK], n;
  if (moec_read_ints(ctx, repeats, rep, MOEC_MAX_RANK, &n, "repeats")) return -1;
  if (n != x->rank) return moec_fail(ctx, "repeats has %lld values, input has rank %d", (long long)n, x->rank);
  int64_t d[MOEC_MAX_RANK], xs[MOEC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) {
    if (rep[i] < 0) return moec_fail(ctx, "negative repeat %lld", (long long)rep[i]);
    if (moec_mul_size(ctx, x->shape[i], rep[i], &d[i])) return -1;
  }
  if (moec_alloc_uninit(ctx, out, x->dtype, x->rank, d)) return -1; /* (uninit: every element copied) */
  moec_strides(x, xs);
  int64_t idx[MOEC_MAX_RANK] = {0};
  for (int64_t i = 0; i < out->numel; i++) {
    int64_t src = 0;
    for (int k = 0; k < x->rank; k++) src += (idx[k] % x->shape[k]) * xs[k];
    moec_copy_elem(out, i, x, src);
    for (int k = x->rank - 1; k >= 0; k--) {
      if (++idx[k] < d[k]) break;
      idx[k] = 0;
    }
  }
  return 0;
}

int moec_k_constant_of_shape(moec_ctx *ctx, const moec_tensor *shape, const moec_tensor *value, moec_tensor *out) {
  int64_t d[MOEC_MAX_RANK], n;
  if (moec_read_ints(ctx, shape, d, MOEC_MAX_RANK, &n, "shape")) return -1;
  for (int i = 0; i < n; i++) if (d[i] < 0) return moec_fail(ctx, "negative dimension %lld", (long long)d[i]);
  if (moec_alloc_uninit(ctx, out, value->dtype, (int)n, d)) return -1; /* (uninit: the value at every element) */
  for (int64_t i = 0; i < out->numel; i++) moec_copy_elem(out, i, value, 0);
  return 0;
}

/* Range as onnxruntime computes it (its kernel is the reference for the extreme values).  Integers:
 * the exact count max(0, ceil((limit - start) / delta)), taken in 128-bit arithmetic so no int64
 * extreme overflows, and values start + i * delta (all between start and limit, so in range).
 * Floats: the count from the double difference, and values accumulated in the element type
 * (start, start + delta, ...), as onnxruntime does. */
static int range_count(moec_ctx *ctx, double c, int64_t *n) {
  if (!(c == c) || c == INFINITY || c == -INFINITY) return moec_fail(ctx, "range length is not a finite value");
  if (c <= 0) { *n = 0; return 0; }
  if (c > (double)MOEC_MAX_NUMEL)
    return moec_fail(ctx, "range has %.17g elements, more than the runtime's limit of 2^40", c);
  *n = (int64_t)c;
  return 0;
}

int moec_k_range(moec_ctx *ctx, const moec_tensor *start, const moec_tensor *limit, const moec_tensor *delta,
                 moec_tensor *out) {
  int dt = start->dtype;
  int64_t n;
  if (start->numel != 1 || limit->numel != 1 || delta->numel != 1)
    return moec_fail(ctx, "range start, limit and delta must be scalars");
  if (limit->dtype != dt || delta->dtype != dt) return moec_fail(ctx, "range operand types differ");
  if (moec_is_float(dt)) {
    double s = moec_get_f64(start, 0), l = moec_get_f64(limit, 0), d = moec_get_f64(delta, 0);
    if (d == 0) return moec_fail(ctx, "range delta is zero");
    if (range_count(ctx, ceil((l - s) / d), &n)) return -1;
    if (moec_alloc_uninit(ctx, out, dt, 1, &n)) return -1; /* (uninit: n values stored) */
    if (dt == MOEC_F32) {
      float *o = (float *)out->data, v = (float)s, fd = (float)d;
      for (int64_t i = 0; i < n; i++) { o[i] = v; v += fd; }
    } else {
      double v = s;
      for (int64_t i = 0; i < n; i++) { moec_set_f64(out, i, v); v += d; }
    }
  } else {
    int64_t s = moec_get_i64(start, 0), l = moec_get_i64(limit, 0), d = moec_get_i64(delta, 0);
    if (d == 0) return moec_fail(ctx, "range delta is zero");
    __int128 span = (__int128)l - (__int128)s, q;
    if (d > 0) q = span > 0 ? (span + d - 1) / d : 0;
    else q = span < 0 ? (span + d + 1) / d : 0;
    if (q > MOEC_MAX_NUMEL)
      return moec_fail(ctx, "range has %.17g elements, more than the runtime's limit of 2^40", (double)q);
    n = (int64_t)q;
    if (moec_alloc_uninit(ctx, out, dt, 1, &n)) return -1; /* (uninit: n values stored) */
    for (int64_t i = 0; i < n; i++) moec_set_i64(out, i, (int64_t)((__int128)s + (__int128)i * d));
  }
  return 0;
}

int moec_k_concat(moec_ctx *ctx, const moec_tensor *const *xs, int n, int64_t axis, moec_tensor *out) {
  if (n < 1) return moec_fail(ctx, "concat needs an operand");
  const moec_tensor *x0 = xs[0];
  int64_t a;
  if (moec_norm_axis(ctx, axis, x0->rank, &a)) return -1;
  int64_t d[MOEC_MAX_RANK];
  memcpy(d, x0->shape, sizeof d);
  d[a] = 0;
  for (int i = 0; i < n; i++) {
    if (xs[i]->rank != x0->rank || xs[i]->dtype != x0->dtype) return moec_fail(ctx, "operand %d rank/type mismatch", i);
    for (int k = 0; k < x0->rank; k++)
      if (k != a && xs[i]->shape[k] != x0->shape[k])
        return moec_fail(ctx, "operand %d dimension %d is %lld, expected %lld", i, k, (long long)xs[i]->shape[k],
                         (long long)x0->shape[k]);
    if (moec_add_size(ctx, d[a], xs[i]->shape[a], &d[a])) return -1;
  }
  /* (uninit: per outer row the operands' blocks are copied side by side, and they add up to the row) */
  if (moec_alloc_uninit(ctx, out, x0->dtype, x0->rank, d)) return -1;
  int64_t outer = moec_dims_prod(d, 0, (int)a), inner = moec_dims_prod(d, (int)a + 1, x0->rank);
  int packed = moec_dtype_bits(x0->dtype) < 8;
  size_t es = moec_elem_size(x0->dtype);
  int64_t row = moec_dims_prod(d, (int)a, x0->rank), off = 0;
  for (int i = 0; i < n; i++) {
    int64_t blk = moec_dims_prod(xs[i]->shape, (int)a, x0->rank);
    for (int64_t o = 0; o < outer; o++) {
      if (packed) for (int64_t j = 0; j < blk; j++) moec_copy_elem(out, o * row + off + j, xs[i], o * blk + j);
      else memcpy((char *)out->data + (o * row + off) * es, (const char *)xs[i]->data + o * blk * es, (size_t)blk * es);
    }
    off += blk;
  }
  return 0;
}

int moec_k_split(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *sizes, int64_t axis, moec_tensor *const *outs,
                 int n) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  int64_t sz[4096], m;
  if (moec_read_ints(ctx, sizes, sz, 4096, &m, "split sizes")) return -1;
  if (m != n) return moec_fail(ctx, "split has %lld sizes for %d outputs", (long long)m, n);
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    if (sz[i] < 0) return moec_fail(ctx, "negative split size");
    if (moec_add_size(ctx, total, sz[i], &total)) return -1;
  }
  if (total != x->shape[a])
    return moec_fail(ctx, "split sizes add up to %lld, dimension is %lld", (long long)total, (long long)x->shape[a]);
  int64_t outer = moec_dims_prod(x->shape, 0, (int)a), inner = moec_dims_prod(x->shape, (int)a + 1, x->rank);
  int64_t row = moec_dims_prod(x->shape, (int)a, x->rank), off = 0;
  for (int i = 0; i < n; i++) {
    int64_t d[MOEC_MAX_RANK];
    memcpy(d, x->shape, sizeof d);
    d[a] = sz[i];
    if (moec_alloc_uninit(ctx, outs[i], x->dtype, x->rank, d)) return -1; /* (uninit: outer * blk elements copied) */
    int64_t blk = sz[i] * inner; /* sz[i] <= x->shape[a] (they add up to it): bounded by x's extent */
    for (int64_t o = 0; o < outer; o++)
      for (int64_t j = 0; j < blk; j++) moec_copy_elem(outs[i], o * blk + j, x, o * row + off + j);
    off += blk;
  }
  return 0;
}

int moec_k_slice(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *starts, const moec_tensor *ends,
                 const moec_tensor *axes, const moec_tensor *steps, moec_tensor *out) {
  int64_t st[MOEC_MAX_RANK], en[MOEC_MAX_RANK], ax[MOEC_MAX_RANK], sp[MOEC_MAX_RANK], n1, n2, n3, n4;
  if (moec_read_ints(ctx, starts, st, MOEC_MAX_RANK, &n1, "starts") || moec_read_ints(ctx, ends, en, MOEC_MAX_RANK, &n2, "ends") ||
      moec_read_ints(ctx, axes, ax, MOEC_MAX_RANK, &n3, "axes") || moec_read_ints(ctx, steps, sp, MOEC_MAX_RANK, &n4, "steps"))
    return -1;
  if (n1 != n3 || n2 != n3 || n4 != n3) return moec_fail(ctx, "starts/ends/axes/steps lengths differ");
  int r = x->rank;
  int64_t s0[MOEC_MAX_RANK], cnt[MOEC_MAX_RANK], step[MOEC_MAX_RANK];
  int seen[MOEC_MAX_RANK] = {0};
  for (int i = 0; i < r; i++) { s0[i] = 0; cnt[i] = x->shape[i]; step[i] = 1; }
  for (int i = 0; i < n3; i++) {
    int64_t a;
    if (moec_norm_axis(ctx, ax[i], r, &a)) return -1;
    if (seen[a]++) return moec_fail(ctx, "repeated axis %lld", (long long)a);
    int64_t d = x->shape[a], s = st[i], e = en[i], k = sp[i];
    if (k == 0) return moec_fail(ctx, "slice step is 0");
    /* onnxruntime's rules, exactly (the extreme int64 values included): a step beyond the dimension
     * is clamped to it (one element either way, and step * stride stays in range); negative starts
     * and ends count from the end (s + d cannot overflow: d >= 0); a start is clamped to [0, d] or,
     * stepping backwards, [0, d-1]; an end of INT32_MAX or INT64_MAX means "to the end" (-1 when
     * stepping backwards), any other is clamped to [0, d] or [-1, d]. */
    if (d == 0) { cnt[a] = 0; s0[a] = 0; step[a] = 1; continue; }
    if (k > d) k = d;
    if (k < -d) k = -d;
    if (s < 0) s += d;
    s = s < 0 ? 0 : (k < 0 ? (s > d - 1 ? d - 1 : s) : (s > d ? d : s));
    if (e == INT32_MAX || e == INT64_MAX) e = k < 0 ? -1 : d;
    else {
      if (e < 0) e += d;
      e = e < (k < 0 ? -1 : 0) ? (k < 0 ? -1 : 0) : (e > d ? d : e);
    }
    /* s, e in [-1, d] and 1 <= |k| <= d, so nothing here can overflow */
    if (k > 0) cnt[a] = e > s ? (e - s + k - 1) / k : 0;
    else cnt[a] = s > e ? (s - e + (-k) - 1) / (-k) : 0;
    s0[a] = s;
    step[a] = k;
  }
  if (moec_alloc_uninit(ctx, out, x->dtype, r, cnt)) return -1; /* (uninit: every element copied) */
  if (out->numel == 0) return 0;
  int64_t xs[MOEC_MAX_RANK], idx[MOEC_MAX_RANK] = {0}, src = 0;
  moec_strides(x, xs);
  for (int k = 0; k < r; k++) src += s0[k] * xs[k];
  for (int64_t i = 0; i < out->numel; i++) {
    moec_copy_elem(out, i, x, src);
    for (int k = r - 1; k >= 0; k--) {
      if (++idx[k] < cnt[k]) { src += step[k] * xs[k]; break; }
      src -= step[k] * xs[k] * (cnt[k] - 1);
      idx[k] = 0;
    }
  }
  return 0;
}

int moec_k_trilu(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *kt, int upper, moec_tensor *out) {
  if (x->rank < 2) return moec_fail(ctx, "trilu needs rank >= 2");
  int64_t k = kt ? moec_get_i64(kt, 0) : 0;
  if (moec_clone(ctx, out, x)) return -1;
  int64_t R = x->shape[x->rank - 2], C = x->shape[x->rank - 1];
  int64_t mats = moec_dims_prod(x->shape, 0, x->rank - 2);
  moec_tensor zero;
  int64_t one = 1;
  memset(&zero, 0, sizeof zero);
  if (moec_alloc(ctx, &zero, x->dtype, 1, &one)) return -1; /* (the zero itself) */
  for (int64_t m = 0; m < mats; m++)
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < C; j++) {
        int keep = upper ? (j - i >= k) : (j - i <= k);
        if (!keep) moec_copy_elem(out, (m * R + i) * C + j, &zero, 0);
      }
  moec_release(&zero);
  return 0;
}

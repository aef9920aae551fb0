/* Reductions (accumulated in double / int64) and softmax along one axis. */
#include "rt_reduce.h"

#include <math.h>
#include <stdlib.h>

int moec_k_reduce(moec_ctx *ctx, const moec_tensor *x, const int64_t *axes, int n, int keepdims, int kind, moec_tensor *out) {
  int red[MOEC_MAX_RANK] = {0};
  int r = x->rank;
  if (n == 0) for (int i = 0; i < r; i++) red[i] = 1;
  for (int i = 0; i < n; i++) {
    int64_t a;
    if (moec_norm_axis(ctx, axes[i], r, &a)) return -1;
    red[a] = 1;
  }
  int64_t od[MOEC_MAX_RANK], ostr[MOEC_MAX_RANK];
  int orank = 0;
  for (int i = 0; i < r; i++) {
    if (!red[i]) od[orank++] = x->shape[i];
    else if (keepdims) od[orank++] = 1;
  }
  /* (uninit: the sums go to acc / iacc, then every output element is stored from them) */
  if (moec_alloc_uninit(ctx, out, x->dtype, orank, od)) return -1;
  /* stride in the output for each input dim (0 for reduced dims) */
  for (int i = r - 1, k = orank - 1; i >= 0; i--) {
    if (red[i]) { ostr[i] = 0; if (keepdims) k--; continue; }
    ostr[i] = moec_dims_prod(od, k + 1, orank);
    k--;
  }
  int64_t no = out->numel;
  double *acc = (double *)malloc(sizeof(double) * (size_t)(no ? no : 1));
  int64_t *iacc = (int64_t *)malloc(sizeof(int64_t) * (size_t)(no ? no : 1));
  if (!acc || !iacc) { free(acc); free(iacc); return moec_fail(ctx, "out of memory"); }
  int isf = moec_is_float(x->dtype);
  for (int64_t o = 0; o < no; o++) {
    acc[o] = kind == MOEC_R_MAX ? -INFINITY : kind == MOEC_R_MIN ? INFINITY : 0.0;
    iacc[o] = kind == MOEC_R_MAX ? INT64_MIN : kind == MOEC_R_MIN ? INT64_MAX : 0;
    if (x->dtype == MOEC_BOOL && (kind == MOEC_R_MAX || kind == MOEC_R_MIN)) iacc[o] = kind == MOEC_R_MIN;
  }
  int64_t idx[MOEC_MAX_RANK] = {0}, o = 0;
  for (int64_t i = 0; i < x->numel; i++) {
    if (isf) {
      double v = moec_get_f64(x, i);
      switch (kind) {
        case MOEC_R_SUM: case MOEC_R_MEAN: acc[o] += v; break;
        case MOEC_R_MAX: if (v > acc[o] || v != v) acc[o] = v; break;
        case MOEC_R_MIN: if (v < acc[o] || v != v) acc[o] = v; break;
        case MOEC_R_L1: acc[o] += fabs(v); break;
        case MOEC_R_L2: acc[o] += v * v; break;
      }
    } else {
      int64_t v = moec_get_i64(x, i);
      switch (kind) {
        case MOEC_R_SUM: case MOEC_R_MEAN: iacc[o] = (int64_t)((uint64_t)iacc[o] + (uint64_t)v); break; /* wraps */
        case MOEC_R_MAX: if (v > iacc[o]) iacc[o] = v; break;
        case MOEC_R_MIN: if (v < iacc[o]) iacc[o] = v; break;
        case MOEC_R_L1: iacc[o] = (int64_t)((uint64_t)iacc[o] + (v < 0 ? -(uint64_t)v : (uint64_t)v)); break;
        case MOEC_R_L2: iacc[o] = (int64_t)((uint64_t)iacc[o] + (uint64_t)v * (uint64_t)v); break;
      }
    }
    for (int d = r - 1; d >= 0; d--) {
      if (++idx[d] < x->shape[d]) { o += ostr[d]; break; }
      o -= ostr[d] * (x->shape[d] - 1);
      idx[d] = 0;
    }
  }
  int64_t cnt = no ? x->numel / no : 0;
  for (int64_t q = 0; q < no; q++) {
    if (isf) {
      double v = acc[q];
      /* the sum in the element type before the last step, as onnxruntime: a sum past FLT_MAX is inf */
      if ((kind == MOEC_R_MEAN || kind == MOEC_R_L2) && x->dtype != MOEC_F64) v = (double)(float)v;
      if (kind == MOEC_R_MEAN) v = cnt ? v / (double)cnt : NAN;
      if (kind == MOEC_R_L2) v = sqrt(v);
      moec_set_f64(out, q, v);
    } else {
      int64_t v = iacc[q];
      if (kind == MOEC_R_MEAN) v = cnt ? v / cnt : 0;
      if (kind == MOEC_R_L2) v = (int64_t)sqrt((double)v);
      moec_set_i64(out, q, v);
    }
  }
  free(acc);
  free(iacc);
  return 0;
}

int moec_k_reduce_dyn(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *axes, int keepdims, int noop, int kind,
                      moec_tensor *out) {
  int64_t ax[MOEC_MAX_RANK], n;
  if (moec_read_ints(ctx, axes, ax, MOEC_MAX_RANK, &n, "axes")) return -1;
  if (n == 0 && noop) return moec_clone(ctx, out, x);
  return moec_k_reduce(ctx, x, ax, (int)n, keepdims, kind, out);
}

int moec_k_softmax(moec_ctx *ctx, const moec_tensor *x, int64_t axis, int log_, moec_tensor *out) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  if (!moec_is_float(x->dtype)) return moec_fail(ctx, "softmax needs floats");
  if (moec_alloc_uninit(ctx, out, x->dtype, x->rank, x->shape)) return -1; /* (uninit: every (o, j, in) is set) */
  int64_t outer = moec_dims_prod(x->shape, 0, (int)a), inner = moec_dims_prod(x->shape, (int)a + 1, x->rank), n = x->shape[a];
  for (int64_t o = 0; o < outer; o++)
    for (int64_t in = 0; in < inner; in++) {
      int64_t base = o * n * inner + in;
      double m = -INFINITY, s = 0;
      for (int64_t j = 0; j < n; j++) { double v = moec_get_f64(x, base + j * inner); if (v > m || v != v) m = v; }
      for (int64_t j = 0; j < n; j++) s += exp(moec_get_f64(x, base + j * inner) - m);
      double ls = log(s);
      for (int64_t j = 0; j < n; j++) {
        double e = moec_get_f64(x, base + j * inner) - m;
        moec_set_f64(out, base + j * inner, log_ ? e - ls : exp(e) / s);
      }
    }
  return 0;
}

/* Layer and RMS normalisation over the trailing dims [axis, rank). */
#include "rt_norm.h"

#include <math.h>

/* strides of p broadcast against the normalised block x.shape[axis:] */
static int block_strides(moec_ctx *ctx, const moec_tensor *x, int64_t a, const moec_tensor *p, int64_t *st,
                         const char *what) {
  int br = x->rank - (int)a;
  if (p->rank > br) return moec_fail(ctx, "%s has rank %d, more than the %d normalised dims", what, p->rank, br);
  for (int i = 0; i < p->rank; i++) {
    int64_t d = p->shape[i], e = x->shape[a + br - p->rank + i];
    if (d != 1 && d != e) return moec_fail(ctx, "%s does not broadcast to the normalised dims", what);
  }
  moec_broadcast_strides(p, br, x->shape + a, st);
  return 0;
}

static int64_t block_off(const int64_t *idx, const int64_t *st, int br) {
  int64_t o = 0;
  for (int i = 0; i < br; i++) o += idx[i] * st[i];
  return o;
}

int moec_k_layer_norm(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *scale, const moec_tensor *bias,
                      int64_t axis, double eps, moec_tensor *y, moec_tensor *mean, moec_tensor *inv_std) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  int br = x->rank - (int)a;
  int64_t ss[MOEC_MAX_RANK], bs[MOEC_MAX_RANK];
  if (block_strides(ctx, x, a, scale, ss, "scale")) return -1;
  if (bias && block_strides(ctx, x, a, bias, bs, "bias")) return -1;
  int64_t sd[MOEC_MAX_RANK];
  for (int i = 0; i < x->rank; i++) sd[i] = i < a ? x->shape[i] : 1;
  int sdt = x->dtype == MOEC_F64 ? MOEC_F64 : MOEC_F32;
  if (moec_alloc(ctx, y, x->dtype, x->rank, x->shape) || moec_alloc(ctx, mean, sdt, x->rank, sd) ||
      moec_alloc(ctx, inv_std, sdt, x->rank, sd)) return -1;
  int64_t N = moec_dims_prod(x->shape, (int)a, x->rank), rows;
  rows = N ? x->numel / N : 0;
  for (int64_t r = 0; r < rows; r++) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < N; j++) m += moec_get_f64(x, r * N + j);
    m = N ? m / (double)N : 0;
    for (int64_t j = 0; j < N; j++) { double d = moec_get_f64(x, r * N + j) - m; v += d * d; }
    v = N ? v / (double)N : 0;
    double inv = 1.0 / sqrt(v + eps);
    int64_t idx[MOEC_MAX_RANK] = {0};
    for (int64_t j = 0; j < N; j++) {
      double out = (moec_get_f64(x, r * N + j) - m) * inv * moec_get_f64(scale, block_off(idx, ss, br));
      if (bias) out += moec_get_f64(bias, block_off(idx, bs, br));
      moec_set_f64(y, r * N + j, out);
      for (int k = br - 1; k >= 0; k--) { if (++idx[k] < x->shape[a + k]) break; idx[k] = 0; }
    }
    moec_set_f64(mean, r, m);
    moec_set_f64(inv_std, r, inv);
  }
  return 0;
}

int moec_k_rms_norm(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *scale, int64_t axis, double eps,
                    moec_tensor *y) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  int br = x->rank - (int)a;
  int64_t ss[MOEC_MAX_RANK];
  if (block_strides(ctx, x, a, scale, ss, "scale")) return -1;
  if (moec_alloc(ctx, y, x->dtype, x->rank, x->shape)) return -1;
  int64_t N = moec_dims_prod(x->shape, (int)a, x->rank);
  int64_t rows = N ? x->numel / N : 0;
  if (x->dtype == MOEC_F32 && scale->dtype == MOEC_F32 && scale->numel == N) {
    /* f32 with a full scale (a decoder's norms): the same double arithmetic as below, without the per-element
     * type switch and index walk (which took ~5% of a 2-layer model's prefill) */
    const float *xd = (const float *)x->data, *sc = (const float *)scale->data;
    float *yd = (float *)y->data;
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = xd + r * N;
      double s = 0;
      for (int64_t j = 0; j < N; j++) s += (double)xr[j] * (double)xr[j];
      double inv = 1.0 / sqrt(s / (double)N + eps);
      for (int64_t j = 0; j < N; j++) yd[r * N + j] = (float)((double)xr[j] * inv * (double)sc[j]);
    }
    return 0;
  }
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t j = 0; j < N; j++) { double v = moec_get_f64(x, r * N + j); s += v * v; }
    double inv = 1.0 / sqrt((N ? s / (double)N : 0) + eps);
    int64_t idx[MOEC_MAX_RANK] = {0};
    for (int64_t j = 0; j < N; j++) {
      moec_set_f64(y, r * N + j, moec_get_f64(x, r * N + j) * inv * moec_get_f64(scale, block_off(idx, ss, br)));
      for (int k = br - 1; k >= 0; k--) { if (++idx[k] < x->shape[a + k]) break; idx[k] = 0; }
    }
  }
  return 0;
}

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
  /* (y uninit: every row is written whole; mean / inv_std zeroed: with an empty normalised block (N == 0) there
   * are no rows, and their prod(x.shape[:axis]) values stay 0) */
  if (moec_alloc_uninit(ctx, y, x->dtype, x->rank, x->shape) || moec_alloc(ctx, mean, sdt, x->rank, sd) ||
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

/* f32 RMS norm with a full scale: RMS_ROWS rows per item, their sums of squares interleaved (each row's sum in
 * its own order, a chain of dependent double adds that one row alone leaves latency-bound), rows in parallel;
 * the outputs x * inv * w in double on vectors (the same two roundings of each product, then one to f32) */
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
typedef struct {
  const float *x, *sc;
  float *y;
  int64_t N, rows;
  double eps;
} rms_job;
#define RMS_ROWS 8
static void rms_rows(void *arg, int64_t b) {
  const rms_job *jb = (const rms_job *)arg;
  const int64_t N = jb->N, r0 = b * RMS_ROWS, n = jb->rows - r0 < RMS_ROWS ? jb->rows - r0 : RMS_ROWS;
  double s[RMS_ROWS] = {0};
  const float *x = jb->x + r0 * N;
  if (n == RMS_ROWS) {
    const float *x0 = x, *x1 = x0 + N, *x2 = x1 + N, *x3 = x2 + N, *x4 = x3 + N, *x5 = x4 + N, *x6 = x5 + N,
                *x7 = x6 + N;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (int64_t j = 0; j < N; j++) {
      s0 += (double)x0[j] * (double)x0[j];
      s1 += (double)x1[j] * (double)x1[j];
      s2 += (double)x2[j] * (double)x2[j];
      s3 += (double)x3[j] * (double)x3[j];
      s4 += (double)x4[j] * (double)x4[j];
      s5 += (double)x5[j] * (double)x5[j];
      s6 += (double)x6[j] * (double)x6[j];
      s7 += (double)x7[j] * (double)x7[j];
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3, s[4] = s4, s[5] = s5, s[6] = s6, s[7] = s7;
  } else {
    for (int64_t r = 0; r < n; r++)
      for (int64_t j = 0; j < N; j++) s[r] += (double)x[r * N + j] * (double)x[r * N + j];
  }
  for (int64_t r = 0; r < n; r++) {
    const float *xr = x + r * N, *sc = jb->sc;
    float *yr = jb->y + (r0 + r) * N;
    const double v = 1.0 / sqrt(s[r] / (double)N + jb->eps);
    int64_t j = 0;
#if defined(__AVX512F__)
    const __m512d vv = _mm512_set1_pd(v);
    for (; j + 8 <= N; j += 8) {
      __m512d p = _mm512_mul_pd(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(xr + j)), vv),
                                _mm512_cvtps_pd(_mm256_loadu_ps(sc + j)));
      _mm256_storeu_ps(yr + j, _mm512_cvtpd_ps(p));
    }
#endif
    for (; j < N; j++) yr[j] = (float)((double)xr[j] * v * (double)sc[j]);
  }
}

int moec_k_rms_norm(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *scale, int64_t axis, double eps,
                    moec_tensor *y) {
  int64_t a;
  if (moec_norm_axis(ctx, axis, x->rank, &a)) return -1;
  int br = x->rank - (int)a;
  int64_t ss[MOEC_MAX_RANK];
  if (block_strides(ctx, x, a, scale, ss, "scale")) return -1;
  if ((moec_dtype_bits(x->dtype) < 8 ? moec_alloc : moec_alloc_uninit)(ctx, y, x->dtype, x->rank, x->shape)) return -1;
  int64_t N = moec_dims_prod(x->shape, (int)a, x->rank);
  int64_t rows = N ? x->numel / N : 0;
  if (x->dtype == MOEC_F32 && scale->dtype == MOEC_F32 && scale->numel == N) {
    /* f32 with a full scale (a decoder's norms): the same double arithmetic as below, without the per-element
     * type switch and index walk (which took ~5% of a 2-layer model's prefill) */
    rms_job jb = {(const float *)x->data, (const float *)scale->data, (float *)y->data, N, rows, eps};
    const int64_t nb = (rows + RMS_ROWS - 1) / RMS_ROWS;
    if (rows * N >= 65536) moec_parallel_for(ctx, nb, rms_rows, &jb);
    else
      for (int64_t b = 0; b < nb; b++) rms_rows(&jb, b);
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

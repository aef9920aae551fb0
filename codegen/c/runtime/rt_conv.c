/* Convolution: a direct loop over the kernel per output element, one task per (batch, out channel). */
#include "rt_conv.h"

typedef struct {
  const moec_tensor *x, *w, *b;
  moec_tensor *out;
  int ns;
  int64_t C, M, Cg, Mg;
  int64_t S[MOEC_MAX_RANK], K[MOEC_MAX_RANK], O[MOEC_MAX_RANK], st[MOEC_MAX_RANK], pb[MOEC_MAX_RANK],
      dl[MOEC_MAX_RANK];
  int64_t Ssz, Ksz, Osz;
} conv_job;

static void conv_task(void *arg, int64_t nm) {
  const conv_job *j = (const conv_job *)arg;
  const int64_t n = nm / j->M, m = nm % j->M, g = m / j->Mg;
  const int ns = j->ns;
  const int f32 = j->x->dtype == MOEC_F32;
  const float *xf = (const float *)j->x->data, *wf = (const float *)j->w->data;
  int64_t oidx[MOEC_MAX_RANK] = {0};
  for (int64_t o = 0; o < j->Osz; o++) {
    double acc = j->b ? moec_get_f64(j->b, m) : 0.0;
    for (int64_t c = 0; c < j->Cg; c++) {
      const int64_t xbase = (n * j->C + g * j->Cg + c) * j->Ssz, wbase = (m * j->Cg + c) * j->Ksz;
      int64_t kidx[MOEC_MAX_RANK] = {0};
      for (int64_t k = 0; k < j->Ksz; k++) {
        int64_t off = 0;
        int inside = 1;
        for (int d = 0; d < ns; d++) {
          const int64_t p = oidx[d] * j->st[d] - j->pb[d] + kidx[d] * j->dl[d];
          if (p < 0 || p >= j->S[d]) { inside = 0; break; }
          off = off * j->S[d] + p;
        }
        if (inside)
          acc += f32 ? (double)xf[xbase + off] * (double)wf[wbase + k]
                     : moec_get_f64(j->x, xbase + off) * moec_get_f64(j->w, wbase + k);
        for (int d = ns - 1; d >= 0; d--) { if (++kidx[d] < j->K[d]) break; kidx[d] = 0; }
      }
    }
    moec_set_f64(j->out, nm * j->Osz + o, acc);
    for (int d = ns - 1; d >= 0; d--) { if (++oidx[d] < j->O[d]) break; oidx[d] = 0; }
  }
}

int moec_k_conv(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w, const moec_tensor *bias,
                const int64_t *strides, const int64_t *pads, const int64_t *dilations, int64_t group,
                moec_tensor *out) {
  const int ns = x->rank - 2;
  if (ns < 1 || w->rank != x->rank) return moec_fail(ctx, "conv: x has rank %d and w rank %d (need [N, C, spatial...] "
                                                     "and [M, C / group, kernel...])", x->rank, w->rank);
  if (!moec_is_float(x->dtype) || w->dtype != x->dtype || (bias && bias->dtype != x->dtype))
    return moec_fail(ctx, "conv: operands must be floats of one type");
  conv_job j = {0};
  j.x = x; j.w = w; j.b = bias; j.out = out; j.ns = ns;
  j.C = x->shape[1]; j.M = w->shape[0]; j.Cg = w->shape[1];
  if (group < 1 || j.M % group != 0 || j.C != j.Cg * group)
    return moec_fail(ctx, "conv: x has %lld channels, w [%lld, %lld, ...] with %lld groups",
                     (long long)j.C, (long long)j.M, (long long)j.Cg, (long long)group);
  if (bias && (bias->rank != 1 || bias->shape[0] != j.M))
    return moec_fail(ctx, "conv: bias must be [%lld]", (long long)j.M);
  j.Mg = j.M / group;
  int64_t od[MOEC_MAX_RANK];
  od[0] = x->shape[0];
  od[1] = j.M;
  j.Ssz = j.Ksz = j.Osz = 1;
  for (int d = 0; d < ns; d++) {
    const int64_t S = x->shape[2 + d], K = w->shape[2 + d], s = strides[d], p0 = pads[d], p1 = pads[ns + d],
                  dl = dilations[d];
    if (s < 1 || dl < 1 || p0 < 0 || p1 < 0 || K < 1) return moec_fail(ctx, "conv: bad stride / dilation / pads / kernel");
    int64_t span, padded;
    if (__builtin_mul_overflow(dl, K - 1, &span) || __builtin_add_overflow(S, p0, &padded) ||
        __builtin_add_overflow(padded, p1, &padded) || padded - span - 1 < 0)
      return moec_fail(ctx, "conv: spatial dim %d: the dilated kernel is longer than the padded input (%lld + %lld + %lld)",
                       d, (long long)S, (long long)p0, (long long)p1);
    od[2 + d] = (padded - span - 1) / s + 1;
    j.S[d] = S; j.K[d] = K; j.O[d] = od[2 + d]; j.st[d] = s; j.pb[d] = p0; j.dl[d] = dl;
    j.Ssz *= S; j.Ksz *= K;
  }
  /* (uninit: each (batch, out channel) task writes its Osz outputs, bias or 0 plus the sum, padding included) */
  if (moec_alloc_uninit(ctx, out, x->dtype, x->rank, od)) return -1;
  j.Osz = moec_dims_prod(od, 2, x->rank);
  if (out->numel) moec_parallel_for(ctx, od[0] * j.M, conv_task, &j);
  return 0;
}

/* MoE kernels: route, dispatch (sort and pad), grouped expert FFN, shared experts, combine.
 * Semantics: ir/ops/moe.py.  These portable versions compute in double; they are the
 * fallback and the baseline that the generated per-layer kernels are checked against. */
#include "rt_moe.h"

#include <math.h>
#include <stdlib.h>

static double sigm(double v) { return 1.0 / (1.0 + exp(-v)); }

/* indices of the top-n values of v[0..len), descending, ties -> lowest index (high = 0) or highest
 * index (high = 1); NaN values come last, in the same index order (insertion, n small) */
static int before(double x, int64_t i, double y, int64_t j, int high) {
  if (isnan(y)) return !isnan(x) || (high ? i > j : i < j);
  if (isnan(x)) return 0;
  return x > y || (x == y && (high ? i > j : i < j));
}

static void topn(const double *v, int64_t len, int64_t n, int64_t *out, int high) {
  int64_t m = 0;
  for (int64_t i = 0; i < len; i++) {
    double x = v[i];
    if (m == n && !before(x, i, v[out[m - 1]], out[m - 1], high)) continue;
    int64_t pos = m < n ? m : n - 1;
    while (pos > 0 && before(x, i, v[out[pos - 1]], out[pos - 1], high)) { out[pos] = out[pos - 1]; pos--; }
    out[pos] = i;
    if (m < n) m++;
  }
}

/* PhiMoE's sparsemixer weight of slot j (see moe.route): the softmax at sel[j] of the scores s with the
 * experts of earlier slots and those with (m - s[e]) / max(|s[e]|, m) > 2 eps masked out, m = s[sel[j]];
 * in float for non-f64 logits, as the reference (and torch) compute it: the mask's comparison decides */
static double mixer_weight(const double *s, int64_t E, const int64_t *sel, int64_t j, double eps, int f64) {
  double m = s[sel[j]], sum = 0;
  float mf = (float)m, thr = (float)(2 * eps), sumf = 0.f;
  for (int64_t e = 0; e < E; e++) {
    int taken = 0;
    for (int64_t q = 0; q < j; q++) taken |= sel[q] == e;
    if (taken) continue;
    if (f64) {
      double a = fabs(s[e]), factor = a < m ? m : a;
      if ((m - s[e]) / factor > 2 * eps) continue;
      sum += exp(s[e] - m);
    } else {
      float v = (float)s[e], a = fabsf(v), factor = a < mf ? mf : a;
      if ((mf - v) / factor > thr) continue;
      sumf += expf(v - mf);
    }
  }
  return f64 ? 1.0 / sum : (double)(1.0f / sumf);
}

int moec_k_moe_route(moec_ctx *ctx, const moec_tensor *logits, const moec_tensor *bias, moec_tensor *weights,
                     moec_tensor *ids, const moec_route_params *p) {
  /* [B, S, E] logits (capacity only): B sequences of Sq tokens, each counting its own capacity (Switch) */
  if (logits->rank != 2 && !(logits->rank == 3 && p->capacity > 0))
    return moec_fail(ctx, "logits must be [T, E] (or [B, S, E] with a capacity)");
  int64_t Sq = logits->rank == 3 ? logits->shape[1] : 0;
  /* n_shared S: the last S of the EL logit columns are always-on experts (scored, never selected) */
  int64_t T = moec_dims_prod(logits->shape, 0, logits->rank - 1), EL = logits->shape[logits->rank - 1],
          S = p->n_shared, E = EL - S, k = p->k, G = p->n_group;
  int64_t K = k + S; /* slots per token */
  if (S < 0 || E < 1 || (S && (G != 1 || p->capacity > 0 || p->post == MOEC_POST_SPARSEMIXER)))
    return moec_fail(ctx, "bad n_shared=%lld for %lld logit columns", (long long)S, (long long)EL);
  /* n_skip N: the last N of the E selectable columns are skip classes (selected, then dropped) */
  int64_t N = p->n_skip;
  if (N < 0 || (N && (N >= E || S || G != 1 || p->capacity > 0 || p->post == MOEC_POST_SPARSEMIXER)))
    return moec_fail(ctx, "bad n_skip=%lld for %lld logit columns", (long long)N, (long long)EL);
  if (k < 1 || k > E) return moec_fail(ctx, "k=%lld out of range for E=%lld", (long long)k, (long long)E);
  if (G < 1 || E % G || p->topk_group < 1 || p->topk_group > G) return moec_fail(ctx, "bad expert grouping");
  if (bias && bias->numel != E) return moec_fail(ctx, "bias has %lld values, E=%lld", (long long)bias->numel, (long long)E);
  int64_t wshape[2] = {T, K};
  /* (uninit: every token's K slots get an id and a weight, -1 / 0 for a dropped one) */
  if (moec_alloc_uninit(ctx, weights, logits->dtype, 2, wshape) || moec_alloc_uninit(ctx, ids, MOEC_I64, 2, wshape))
    return -1;
  double *s = (double *)malloc(sizeof(double) * (size_t)(3 * EL + G + 2 * K + 1));
  int64_t *sel = (int64_t *)malloc(sizeof(int64_t) * (size_t)(E + G + k + 1));
  int64_t *counts = (int64_t *)calloc((size_t)E + 1, sizeof(int64_t));
  if (!s || !sel || !counts) { free(s); free(sel); free(counts); return moec_fail(ctx, "out of memory"); }
  double *c = s + EL, *gs = c + EL, *w = gs + G;
  int64_t *gsel = sel + k;
  int64_t *out_ids = (int64_t *)ids->data;
  for (int64_t t = 0; t < T; t++) {
    if (Sq && t % Sq == 0) /* (a new sequence: its own counts) */
      for (int64_t e = 0; e < E; e++) counts[e] = 0;
    double mx = -INFINITY, sum = 0;
    const float *lf = logits->dtype == MOEC_F32 ? (const float *)logits->data + t * EL : NULL;
    for (int64_t e = 0; e < EL; e++) {
      s[e] = lf ? (double)lf[e] : moec_get_f64(logits, t * EL + e);
      if (s[e] > mx) mx = s[e];
    }
    if (p->scoring == MOEC_SCORE_SOFTMAX && logits->dtype != MOEC_F64) {
      /* in float, as the reference (and onnxruntime) compute it: the rounding decides which nearly
       * equal logits tie, and ties decide the experts */
      float mf = (float)mx, sf = 0.f;
      for (int64_t e = 0; e < EL; e++) { float v = expf((float)s[e] - mf); s[e] = v; sf += v; }
      for (int64_t e = 0; e < EL; e++) s[e] = (double)((float)s[e] / sf);
    } else if (p->scoring == MOEC_SCORE_SOFTMAX) {
      for (int64_t e = 0; e < EL; e++) { s[e] = exp(s[e] - mx); sum += s[e]; }
      for (int64_t e = 0; e < EL; e++) s[e] /= sum;
    } else if (p->scoring == MOEC_SCORE_SIGMOID) {
      for (int64_t e = 0; e < EL; e++) s[e] = sigm(s[e]);
    }
    for (int64_t e = 0; e < E; e++) c[e] = s[e] + (bias ? moec_get_f64(bias, e) : 0.0);
    if (G > 1) {
      int64_t gsz = E / G;
      for (int64_t g = 0; g < G; g++) {
        double a = -INFINITY, b = -INFINITY;
        for (int64_t e = g * gsz; e < (g + 1) * gsz; e++) {
          if (c[e] > a) { b = a; a = c[e]; } else if (c[e] > b) b = c[e];
        }
        gs[g] = p->group_top2_sum ? a + (gsz > 1 ? b : 0.0) : a;
      }
      topn(gs, G, p->topk_group, gsel, 0);
      for (int64_t g = 0; g < G; g++) {
        int keep = 0;
        for (int64_t j = 0; j < p->topk_group; j++) keep |= gsel[j] == g;
        if (!keep) for (int64_t e = g * gsz; e < (g + 1) * gsz; e++) c[e] = p->group_fill;
      }
    }
    topn(c, E, k, sel, p->tie_high);
    for (int64_t j = 0; j < k; j++) w[j] = s[sel[j]];
    for (int64_t j = k; j < K; j++) w[j] = s[E + j - k]; /* the always-on experts' slots */
    if (p->post == MOEC_POST_SOFTMAX) {
      double m2 = -INFINITY, s2 = 0;
      for (int64_t j = 0; j < K; j++) if (w[j] > m2) m2 = w[j];
      for (int64_t j = 0; j < K; j++) { w[j] = exp(w[j] - m2); s2 += w[j]; }
      for (int64_t j = 0; j < K; j++) w[j] /= s2;
    } else if (p->post == MOEC_POST_SIGMOID) {
      for (int64_t j = 0; j < K; j++) w[j] = sigm(w[j]);
    } else if (p->post == MOEC_POST_SPARSEMIXER) {
      for (int64_t j = 0; j < k; j++) w[j] = mixer_weight(s, E, sel, j, p->jitter_eps, logits->dtype == MOEC_F64);
    }
    if (p->norm != MOEC_NORM_NONE) {
      double n = 0;
      for (int64_t j = 0; j < K; j++) n += p->norm == MOEC_NORM_L1 ? fabs(w[j]) : w[j];
      double d = n + p->norm_eps;
      if (d < p->norm_min) d = p->norm_min; /* (a NaN sum stays NaN, as clamp keeps it) */
      for (int64_t j = 0; j < K; j++) w[j] /= d;
    }
    for (int64_t j = 0; j < K; j++) {
      int64_t e = j < k ? sel[j] : E + j - k;
      double wv = w[j] * p->scale;
      if (p->drop && !(wv > p->min_weight)) { e = -1; wv = 0; }  /* (NaN weights too) */
      if (N && e >= E - N) { e = -1; wv = 0; }  /* a skip class: the slot contributes nothing */
      if (e >= 0 && p->capacity > 0 && ++counts[e] > p->capacity) { e = -1; wv = 0; }
      out_ids[t * K + j] = e;
      if (weights->dtype == MOEC_F32) ((float *)weights->data)[t * K + j] = (float)wv;
      else moec_set_f64(weights, t * K + j, wv);
    }
  }
  free(s); free(sel); free(counts);
  return 0;
}

int moec_k_moe_dispatch(moec_ctx *ctx, const moec_tensor *ids, moec_tensor *order, moec_tensor *offsets,
                        int64_t E, int64_t block) {
  if (ids->rank != 2) return moec_fail(ctx, "ids must be [T, k]");
  if (E < 1 || E >= MOEC_MAX_NUMEL || block < 1) return moec_fail(ctx, "bad num_experts/block");
  int64_t n = ids->numel;
  int64_t *cnt = (int64_t *)calloc((size_t)E + 1, sizeof(int64_t));
  if (!cnt) return moec_fail(ctx, "out of memory");
  for (int64_t i = 0; i < n; i++) {
    int64_t e = moec_get_i64(ids, i);
    if (e < -1 || e >= E) { free(cnt); return moec_fail(ctx, "expert id %lld out of range [-1, %lld)", (long long)e, (long long)E); }
    if (e >= 0) cnt[e]++;
  }
  int64_t oshape[1] = {E + 1};
  if (moec_alloc_uninit(ctx, offsets, MOEC_I64, 1, oshape)) { free(cnt); return -1; } /* (uninit: off[0..E] set below) */
  int64_t *off = (int64_t *)offsets->data;
  off[0] = 0;
  for (int64_t e = 0; e < E; e++) { /* padded to whole blocks; block is an attribute (IR text): checked */
    int64_t padded, nb = cnt[e] / block + (cnt[e] % block != 0);
    if (moec_mul_size(ctx, nb, block, &padded) || moec_add_size(ctx, off[e], padded, &off[e + 1])) {
      free(cnt);
      return -1;
    }
  }
  int64_t N = off[E];
  if (moec_alloc_uninit(ctx, order, MOEC_I64, 1, &N)) { free(cnt); return -1; } /* (uninit: all -1 first) */
  int64_t *ord = (int64_t *)order->data;
  for (int64_t i = 0; i < N; i++) ord[i] = -1;
  for (int64_t e = 0; e < E; e++) cnt[e] = off[e]; /* fill cursor */
  for (int64_t i = 0; i < n; i++) {
    int64_t e = moec_get_i64(ids, i);
    if (e >= 0) ord[cnt[e]++] = i;
  }
  free(cnt);
  return 0;
}

static double act1(const moec_ffn_params *p, double h) {
  switch (p->act) {
    case MOEC_ACT_RELU: return h < 0 ? 0 : h; /* NaN passes, as in the reference and onnxruntime */
    case MOEC_ACT_RELU2: return h < 0 ? 0 : h * h;
    case MOEC_ACT_SILU: return h * sigm(h);
    case MOEC_ACT_GELU: return 0.5 * h * (1.0 + erf(h / sqrt(2.0)));
    case MOEC_ACT_GELU_TANH: return 0.5 * h * (1.0 + tanh(0.7978845608028654 * (h + 0.044715 * h * h * h)));
    default: return h;
  }
}

/* h [I] -> a [F] */
static void activate(const moec_ffn_params *p, const double *h, double *a, int64_t F) {
  if (p->act == MOEC_ACT_SWIGLU) {
    for (int64_t f = 0; f < F; f++) {
      double g = p->interleaved ? h[2 * f] : h[f], u = p->interleaved ? h[2 * f + 1] : h[F + f];
      if (isfinite(p->limit)) {
        if (g > p->limit) g = p->limit;
        if (u > p->limit) u = p->limit;
        if (u < -p->limit) u = -p->limit;
      }
      a[f] = g * sigm(p->alpha * g) * (u + p->beta);
    }
  } else if (MOEC_ACT_GATED(p->act)) {
    for (int64_t f = 0; f < F; f++) {
      double g = p->interleaved ? h[2 * f] : h[f], u = p->interleaved ? h[2 * f + 1] : h[F + f];
      if (p->act == MOEC_ACT_SOFTCAP_SWIGLU)
        a[f] = p->gate_cap * tanh(g / p->gate_cap) * sigm(g) * (p->up_cap * tanh(u / p->up_cap));
      else if (p->act == MOEC_ACT_GEGLU)
        a[f] = 0.5 * g * (1.0 + erf(g / sqrt(2.0))) * u;
      else
        a[f] = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * u;
    }
  } else {
    for (int64_t f = 0; f < F; f++) a[f] = act1(p, h[f]);
  }
}

/* y_row[D] = FFN_e(xrow) */
static void ffn_row(const moec_tensor *w_in, const moec_tensor *w_out, const moec_tensor *b_in,
                    const moec_tensor *b_out, int64_t e, const double *xr, double *h, double *a, double *yr,
                    const moec_ffn_params *p) {
  int64_t I = w_in->shape[1], D = w_in->shape[2], F = w_out->shape[2];
  for (int64_t i = 0; i < I; i++) {
    double acc = b_in ? moec_get_f64(b_in, e * I + i) : 0.0;
    int64_t base = (e * I + i) * D;
    if (w_in->dtype == MOEC_F32) {
      const float *wr = (const float *)w_in->data + base;
      for (int64_t d = 0; d < D; d++) acc += (double)wr[d] * xr[d];
    } else {
      for (int64_t d = 0; d < D; d++) acc += moec_get_f64(w_in, base + d) * xr[d];
    }
    h[i] = acc;
  }
  activate(p, h, a, F);
  for (int64_t d = 0; d < D; d++) {
    double acc = b_out ? moec_get_f64(b_out, e * D + d) : 0.0;
    int64_t base = (e * D + d) * F;
    if (w_out->dtype == MOEC_F32) {
      const float *wr = (const float *)w_out->data + base;
      for (int64_t f = 0; f < F; f++) acc += (double)wr[f] * a[f];
    } else {
      for (int64_t f = 0; f < F; f++) acc += moec_get_f64(w_out, base + f) * a[f];
    }
    yr[d] = acc;
  }
}

typedef struct {
  const moec_tensor *x, *ids, *order, *offsets, *w_in, *w_out, *b_in, *b_out, *rw, *gate;
  moec_tensor *y;
  const moec_ffn_params *p;
  int weights_at;
  int64_t k;
  int failed;
} moe_job;

/* one task = one entry of the plan (a slot routed to an expert) */
static void experts_task(void *arg, int64_t i) {
  moe_job *j = (moe_job *)arg;
  const int64_t *ord = (const int64_t *)j->order->data;
  const int64_t *off = (const int64_t *)j->offsets->data;
  int64_t slot = ord[i];
  if (slot < 0) return;
  int64_t E = j->offsets->numel - 1, e = 0;
  /* find the expert whose segment holds i (binary search over offsets) */
  int64_t lo = 0, hi = E;
  while (hi - lo > 1) { int64_t mid = (lo + hi) / 2; if (off[mid] <= i) lo = mid; else hi = mid; }
  e = lo;
  int64_t D = j->x->shape[1], I = j->w_in->shape[1], F = j->w_out->shape[2];
  int64_t t = slot / j->k;
  double *buf = (double *)malloc(sizeof(double) * (size_t)(2 * D + I + F));
  if (!buf) { j->failed = 1; return; }
  double *xr = buf, *yr = buf + D, *h = yr + D, *a = h + I;
  double scale_in = 1.0, scale_out = 1.0;
  if (j->rw && j->weights_at == 1) scale_in = moec_get_f64(j->rw, slot);
  if (j->rw && j->weights_at == 2) scale_out = moec_get_f64(j->rw, slot);
  for (int64_t d = 0; d < D; d++) xr[d] = moec_get_f64(j->x, t * D + d) * scale_in;
  ffn_row(j->w_in, j->w_out, j->b_in, j->b_out, e, xr, h, a, yr, j->p);
  for (int64_t d = 0; d < D; d++) moec_set_f64(j->y, slot * D + d, yr[d] * scale_out);
  free(buf);
}

int moec_k_moe_experts(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *ids, const moec_tensor *order,
                       const moec_tensor *offsets, const moec_tensor *w_in, const moec_tensor *w_out,
                       const moec_tensor *b_in, const moec_tensor *b_out, const moec_tensor *rw, int weights_at,
                       const moec_ffn_params *p, const moec_wq *q, const moec_tensor *pn_w, moec_tensor *y) {
  if (p->post_norm) {
    /* the FFNs without the output's routing weight, then each routed slot's row RMS-normalised (in double),
     * times its expert's row of pn_w (Ergo) and its routing weight: the norm comes between the down projection
     * and the weights (see moe.experts) */
    moec_ffn_params p2 = *p;
    p2.post_norm = 0;
    int at_out = weights_at == 2 && rw != NULL;
    int rc = moec_k_moe_experts(ctx, x, ids, order, offsets, w_in, w_out, b_in, b_out, at_out ? NULL : rw,
                                at_out ? 0 : weights_at, &p2, q, NULL, y);
    if (rc) return rc;
    if (y->rank != 3) return moec_fail(ctx, "bad output rank for moe.experts");
    int64_t n = moec_dims_prod(y->shape, 0, 2), D = y->shape[2], E = w_in->shape[0];
    if (pn_w && (pn_w->rank != 2 || pn_w->shape[0] != E || pn_w->shape[1] != D))
      return moec_fail(ctx, "the post-expert norm's weight must be [E, D] = [%lld, %lld]", (long long)E, (long long)D);
    for (int64_t r = 0; r < n; r++) {
      int64_t e = moec_get_i64(ids, r);
      if (e < 0) continue; /* (a dropped slot's row stays 0, as in the reference) */
      if (e >= E) return moec_fail(ctx, "expert id %lld out of range [0, %lld)", (long long)e, (long long)E);
      double ss = 0;
      for (int64_t d = 0; d < D; d++) { double v = moec_get_f64(y, r * D + d); ss += v * v; }
      double f = 1.0 / sqrt(ss / (double)D + p->post_norm_eps) * (at_out ? moec_get_f64(rw, r) : 1.0);
      for (int64_t d = 0; d < D; d++) {
        double g = pn_w ? moec_get_f64(pn_w, e * D + d) : 1.0;
        moec_set_f64(y, r * D + d, moec_get_f64(y, r * D + d) * f * g);
      }
    }
    return 0;
  }
  if (x->rank != 2 || ids->rank != 2 || w_in->rank != 3 || w_out->rank != 3)
    return moec_fail(ctx, "bad operand ranks for moe.experts");
  int64_t T = x->shape[0], D = x->shape[1], k = ids->shape[1], E = w_in->shape[0];
  int pk = q && q->mode == MOEC_WQ_INT4 ? 2 : 1; /* int4: the stored K is halved */
  if (ids->shape[0] != T) return moec_fail(ctx, "ids has %lld rows, x has %lld", (long long)ids->shape[0], (long long)T);
  if ((pk == 2 ? 2 * w_in->shape[2] : w_in->shape[2]) != D || w_out->shape[1] != D || w_out->shape[0] != E || offsets->numel != E + 1)
    return moec_fail(ctx, "expert weight shapes do not match x or the plan");
  int64_t I = w_in->shape[1], F = pk == 2 ? 2 * w_out->shape[2] : w_out->shape[2]; /* dims <= 2^40: no overflow */
  if (q && q->mode != MOEC_WQ_NONE && x->dtype != MOEC_F32)
    return moec_fail(ctx, "quantised expert weights need f32 activations");
  if (q && (q->mode == MOEC_WQ_INT8 || q->mode == MOEC_WQ_INT4)) {
    int64_t gi = q->mode == MOEC_WQ_INT8 ? 1 : (q->group ? D / q->group : 1);
    int64_t go = q->mode == MOEC_WQ_INT8 ? 1 : (q->group ? F / q->group : 1);
    if (!q->s_in || !q->s_out || q->s_in->dtype != MOEC_F32 || q->s_out->dtype != MOEC_F32 ||
        q->s_in->numel != E * I * gi || q->s_out->numel != E * D * go)
      return moec_fail(ctx, "weight scales do not match the quantised expert weights");
    if ((q->z_in && q->z_in->numel != q->s_in->numel) || (q->z_out && q->z_out->numel != q->s_out->numel))
      return moec_fail(ctx, "weight zero points do not match the scales");
    if (q->mode == MOEC_WQ_INT4 && q->group && (D % q->group || F % q->group))
      return moec_fail(ctx, "int4 group size does not divide the expert dimensions");
  }
  if (I != (MOEC_ACT_GATED(p->act) ? 2 * F : F)) return moec_fail(ctx, "w_in rows do not match the activation");
  if (b_in && b_in->numel != E * I) return moec_fail(ctx, "b_in must be [E, I]");
  if (b_out && b_out->numel != E * D) return moec_fail(ctx, "b_out must be [E, D]");
  if (rw && rw->numel != T * k) return moec_fail(ctx, "routing weights must be [T, k]");
  /* the plan must be consistent with ids: every entry a valid slot of its expert */
  const int64_t *ord = (const int64_t *)order->data, *off = (const int64_t *)offsets->data;
  if (off[0] != 0 || off[E] != order->numel) return moec_fail(ctx, "dispatch plan offsets are inconsistent");
  for (int64_t e = 0; e < E; e++) {
    if (off[e + 1] < off[e]) return moec_fail(ctx, "dispatch plan offsets decrease");
    for (int64_t i = off[e]; i < off[e + 1]; i++)
      if (ord[i] >= 0 && (ord[i] >= T * k || moec_get_i64(ids, ord[i]) != e))
        return moec_fail(ctx, "dispatch plan entry %lld does not match ids", (long long)i);
  }
  int fast = moec_moe_experts_f32(ctx, x, ids, order, offsets, w_in, w_out, b_in, b_out, rw, weights_at, p, q, y);
  if (fast <= 0) return fast;
  if (q && q->mode != MOEC_WQ_NONE) return moec_fail(ctx, "no kernel for these quantised expert weights");
  int64_t yshape[3] = {T, k, D};
  if (moec_alloc(ctx, y, x->dtype, 3, yshape)) return -1; /* (zeroed: a dropped slot's row stays 0) */
  moe_job j = {x, ids, order, offsets, w_in, w_out, b_in, b_out, rw, NULL, y, p, weights_at, k, 0};
  moec_parallel_for(ctx, order->numel, experts_task, &j);
  if (j.failed) return moec_fail(ctx, "out of memory in expert FFN");
  return 0;
}

static void shared_task(void *arg, int64_t t) {
  moe_job *j = (moe_job *)arg;
  int64_t D = j->x->shape[1], I = j->w_in->shape[1], F = j->w_out->shape[2], S = j->w_in->shape[0];
  double *buf = (double *)malloc(sizeof(double) * (size_t)(3 * D + I + F));
  if (!buf) { j->failed = 1; return; }
  double *xr = buf, *yr = xr + D, *acc = yr + D, *h = acc + D, *a = h + I;
  for (int64_t d = 0; d < D; d++) { xr[d] = moec_get_f64(j->x, t * D + d); acc[d] = 0; }
  for (int64_t s = 0; s < S; s++) {
    ffn_row(j->w_in, j->w_out, NULL, NULL, s, xr, h, a, yr, j->p);
    for (int64_t d = 0; d < D; d++) acc[d] += yr[d];
  }
  double g = 1.0;
  if (j->gate) {
    double z = 0;
    for (int64_t d = 0; d < D; d++) z += moec_get_f64(j->gate, d) * xr[d];
    g = sigm(z);
  }
  for (int64_t d = 0; d < D; d++) moec_set_f64(j->y, t * D + d, acc[d] * g);
  free(buf);
}

/* Shared experts through the f32 grouped GEMM: every token is routed to each of the S experts. */
static int shared_f32(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w_in, const moec_tensor *w_out,
                      const moec_tensor *gate, const moec_ffn_params *p, moec_tensor *y) {
  int64_t T = x->shape[0], D = x->shape[1], S = w_in->shape[0];
  moec_tensor ids, order, offsets, ys;
  memset(&ids, 0, sizeof ids); memset(&order, 0, sizeof order);
  memset(&offsets, 0, sizeof offsets); memset(&ys, 0, sizeof ys);
  int64_t ishape[2] = {T, S}, n = T * S, oshape[1] = {S + 1};
  int rc = -1;
  /* (uninit: the loops below fill the whole plan) */
  if (moec_alloc_uninit(ctx, &ids, MOEC_I64, 2, ishape) || moec_alloc_uninit(ctx, &order, MOEC_I64, 1, &n) ||
      moec_alloc_uninit(ctx, &offsets, MOEC_I64, 1, oshape)) goto done;
  int64_t *id = (int64_t *)ids.data, *ord = (int64_t *)order.data, *off = (int64_t *)offsets.data;
  for (int64_t t = 0; t < T; t++)
    for (int64_t e = 0; e < S; e++) id[t * S + e] = e;
  for (int64_t e = 0; e < S; e++) {
    off[e] = e * T;
    for (int64_t t = 0; t < T; t++) ord[e * T + t] = t * S + e;
  }
  off[S] = S * T;
  if (moec_moe_experts_f32(ctx, x, &ids, &order, &offsets, w_in, w_out, NULL, NULL, NULL, 0, p, NULL, &ys) != 0) goto done;
  if (moec_alloc_uninit(ctx, y, MOEC_F32, 2, x->shape)) goto done; /* (uninit: every (t, d) stored below) */
  const float *yv = (const float *)ys.data, *xv = (const float *)x->data, *g = gate ? (const float *)gate->data : NULL;
  float *out = (float *)y->data;
  for (int64_t t = 0; t < T; t++) {
    float sc = 1.0f;
    if (g) {
      double z = 0;
      for (int64_t d = 0; d < D; d++) z += (double)g[d] * xv[t * D + d];
      sc = (float)sigm(z);
    }
    for (int64_t d = 0; d < D; d++) {
      float acc = 0;
      for (int64_t e = 0; e < S; e++) acc += yv[(t * S + e) * D + d];
      out[t * D + d] = acc * sc;
    }
  }
  rc = 0;
done:
  moec_release(&ids); moec_release(&order); moec_release(&offsets); moec_release(&ys);
  return rc;
}

int moec_k_moe_shared(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w_in, const moec_tensor *w_out,
                      const moec_tensor *gate, const moec_ffn_params *p, moec_tensor *y) {
  if (x->rank != 2 || w_in->rank != 3 || w_out->rank != 3) return moec_fail(ctx, "bad operand ranks");
  int64_t D = x->shape[1];
  if (w_in->shape[2] != D || w_out->shape[1] != D || w_in->shape[0] != w_out->shape[0])
    return moec_fail(ctx, "shared expert weight shapes do not match x");
  if (w_in->shape[1] != (MOEC_ACT_GATED(p->act) ? 2 * w_out->shape[2] : w_out->shape[2]))
    return moec_fail(ctx, "w_in rows do not match the activation");
  if (gate && gate->numel != D) return moec_fail(ctx, "gate must be [D]");
  if (x->dtype == MOEC_F32 && w_in->dtype == MOEC_F32 && w_out->dtype == MOEC_F32 && (!gate || gate->dtype == MOEC_F32))
    return shared_f32(ctx, x, w_in, w_out, gate, p, y);
  if (moec_alloc_uninit(ctx, y, x->dtype, 2, x->shape)) return -1; /* (uninit: shared_task stores each token's row) */
  moe_job j = {x, NULL, NULL, NULL, w_in, w_out, NULL, NULL, NULL, gate, y, p, 0, 0, 0};
  moec_parallel_for(ctx, x->shape[0], shared_task, &j);
  if (j.failed) return moec_fail(ctx, "out of memory in shared experts");
  return 0;
}

int moec_k_moe_combine(moec_ctx *ctx, const moec_tensor *y, const moec_tensor *w, const moec_tensor *shared,
                       const moec_tensor *px, const moec_tensor *pids, int weighted, moec_tensor *out) {
  if (y->rank != 3 || w->rank != 2) return moec_fail(ctx, "y must be [T, k, D], weights [T, k]");
  int64_t T = y->shape[0], k = y->shape[1], D = y->shape[2];
  if (w->shape[0] != T || w->shape[1] != k) return moec_fail(ctx, "weights shape does not match y");
  if (shared && shared->numel != T * D) return moec_fail(ctx, "shared term must be [T, D]");
  if (px && (px->numel != T * D || !pids || pids->numel != T * k)) return moec_fail(ctx, "pass-through operands mismatch");
  int64_t oshape[2] = {T, D};
  /* (uninit: each row is stored whole -- the pass-through row, the shared row, the first slot's product (0 + w y), or
   * with no slot and no shared term zeros, below; the generic loop stores every element) */
  if (moec_alloc_uninit(ctx, out, y->dtype, 2, oshape)) return -1;
  if (y->dtype == MOEC_F32 && w->dtype == MOEC_F32 && (!shared || shared->dtype == MOEC_F32) &&
      (!px || px->dtype == MOEC_F32)) { /* the common case, without per-element type dispatch */
    const float *yv = (const float *)y->data, *wv = (const float *)w->data;
    const float *sv = shared ? (const float *)shared->data : NULL, *xv = px ? (const float *)px->data : NULL;
    float *o = (float *)out->data;
    for (int64_t t = 0; t < T; t++) {
      int dropped = px != NULL;
      if (px) for (int64_t j = 0; j < k; j++) dropped &= moec_get_i64(pids, t * k + j) < 0;
      float *restrict ot = o + t * D; /* (a fresh buffer: the loops below vectorise) */
      if (dropped) { memcpy(ot, xv + t * D, sizeof(float) * (size_t)D); continue; }
      if (sv) memcpy(ot, sv + t * D, sizeof(float) * (size_t)D);
      else if (k == 0) memset(ot, 0, sizeof(float) * (size_t)D);
      for (int64_t j = 0; j < k; j++) {
        float wj = weighted ? wv[t * k + j] : 1.f;
        const float *restrict yr = yv + (t * k + j) * D;
        if (j == 0 && !sv) for (int64_t d = 0; d < D; d++) ot[d] = 0.f + wj * yr[d];
        else for (int64_t d = 0; d < D; d++) ot[d] += wj * yr[d];
      }
    }
    return 0;
  }
  for (int64_t t = 0; t < T; t++) {
    int dropped = px != NULL;
    if (px) for (int64_t j = 0; j < k; j++) dropped &= moec_get_i64(pids, t * k + j) < 0;
    for (int64_t d = 0; d < D; d++) {
      double acc = 0;
      if (dropped) acc = moec_get_f64(px, t * D + d);
      else {
        for (int64_t j = 0; j < k; j++)
          acc += (weighted ? moec_get_f64(w, t * k + j) : 1.0) * moec_get_f64(y, (t * k + j) * D + d);
        if (shared) acc += moec_get_f64(shared, t * D + d);
      }
      moec_set_f64(out, t * D + d, acc);
    }
  }
  return 0;
}

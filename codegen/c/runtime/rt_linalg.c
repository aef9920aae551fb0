/* Matrix products: numpy.matmul semantics, f32 fast path, generic fallback. */
#include "rt_linalg.h"
#include "rt_vmath.h"

#include <math.h>

#include <stdlib.h>

typedef struct {
  const moec_tensor *a, *b;
  moec_tensor *out;
  int64_t M, N, K, batch;
  int rb;
  int64_t bshape[MOEC_MAX_RANK], sa[MOEC_MAX_RANK], sb[MOEC_MAX_RANK];
} mm_job;

static void batch_offsets(const mm_job *j, int64_t bi, int64_t *oa, int64_t *ob) {
  int64_t rem = bi, a = 0, b = 0;
  for (int d = j->rb - 1; d >= 0; d--) {
    int64_t k = rem % j->bshape[d];
    rem /= j->bshape[d];
    a += k * j->sa[d];
    b += k * j->sb[d];
  }
  *oa = a;
  *ob = b;
}

/* one task = one (batch, row) pair */
static void mm_task(void *arg, int64_t t) {
  const mm_job *j = (const mm_job *)arg;
  int64_t bi = t / (j->M ? j->M : 1), m = t % (j->M ? j->M : 1);
  int64_t oa, ob;
  batch_offsets(j, bi, &oa, &ob);
  const int64_t M = j->M, N = j->N, K = j->K;
  int64_t obase = bi * M * N + m * N;
  if (j->a->dtype == MOEC_F32) {
    const float *A = (const float *)j->a->data + oa * M * K + m * K;
    const float *B = (const float *)j->b->data + ob * K * N;
    float *C = (float *)j->out->data + obase;
    for (int64_t n = 0; n < N; n++) C[n] = 0.f;
    for (int64_t k = 0; k < K; k++) {
      float av = A[k];
      const float *Br = B + k * N;
      for (int64_t n = 0; n < N; n++) C[n] += av * Br[n];
    }
  } else if (moec_is_float(j->a->dtype)) {
    for (int64_t n = 0; n < N; n++) {
      double acc = 0;
      for (int64_t k = 0; k < K; k++)
        acc += moec_get_f64(j->a, oa * M * K + m * K + k) * moec_get_f64(j->b, ob * K * N + k * N + n);
      moec_set_f64(j->out, obase + n, acc);
    }
  } else {
    for (int64_t n = 0; n < N; n++) {
      uint64_t acc = 0;
      for (int64_t k = 0; k < K; k++)
        acc += (uint64_t)(moec_get_i64(j->a, oa * M * K + m * K + k) * moec_get_i64(j->b, ob * K * N + k * N + n));
      moec_set_i64(j->out, obase + n, (int64_t)acc);
    }
  }
}

static int mm_f32(moec_ctx *ctx, const mm_job *j);

int moec_k_matmul(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, moec_tensor *out) {
  if (a->dtype != b->dtype)
    return moec_fail(ctx, "operand types differ (%s vs %s)", moec_dtype_name(a->dtype), moec_dtype_name(b->dtype));
  if (a->rank < 1 || b->rank < 1) return moec_fail(ctx, "matmul operands must have rank >= 1");
  /* promoted shapes */
  int64_t as[MOEC_MAX_RANK + 1], bs[MOEC_MAX_RANK + 1];
  int ra = a->rank, rbk = b->rank;
  if (ra == 1) { as[0] = 1; as[1] = a->shape[0]; ra = 2; } else memcpy(as, a->shape, sizeof(int64_t) * ra);
  if (rbk == 1) { bs[0] = b->shape[0]; bs[1] = 1; rbk = 2; } else memcpy(bs, b->shape, sizeof(int64_t) * rbk);
  int64_t M = as[ra - 2], K = as[ra - 1], K2 = bs[rbk - 2], N = bs[rbk - 1];
  if (K != K2) return moec_fail(ctx, "contraction dims differ: %lld vs %lld", (long long)K, (long long)K2);
  mm_job j;
  memset(&j, 0, sizeof j);
  int rb = (ra > rbk ? ra : rbk) - 2;
  int64_t abatch[MOEC_MAX_RANK], bbatch[MOEC_MAX_RANK];
  for (int d = 0; d < rb; d++) {
    int da = d - (rb - (ra - 2)), db = d - (rb - (rbk - 2));
    abatch[d] = da >= 0 ? as[da] : 1;
    bbatch[d] = db >= 0 ? bs[db] : 1;
    if (abatch[d] != bbatch[d] && abatch[d] != 1 && bbatch[d] != 1)
      return moec_fail(ctx, "batch dims do not broadcast: %lld vs %lld", (long long)abatch[d], (long long)bbatch[d]);
    j.bshape[d] = abatch[d] == 1 ? bbatch[d] : abatch[d];
  }
  for (int d = rb - 1; d >= 0; d--) { /* products of an operand's batch dims: bounded by its extent */
    j.sa[d] = abatch[d] == 1 ? 0 : moec_dims_prod(abatch, d + 1, rb);
    j.sb[d] = bbatch[d] == 1 ? 0 : moec_dims_prod(bbatch, d + 1, rb);
  }
  int64_t oshape[MOEC_MAX_RANK + 2];
  int orank = 0;
  for (int d = 0; d < rb; d++) oshape[orank++] = j.bshape[d];
  if (a->rank != 1) oshape[orank++] = M;
  if (b->rank != 1) oshape[orank++] = N;
  /* (uninit: mm_f32's GEMMs and mm_task's rows store every element, K == 0 included (a zero sum)) */
  if (moec_alloc_uninit(ctx, out, a->dtype, orank, oshape)) return -1;
  j.a = a; j.b = b; j.out = out; j.M = M; j.N = N; j.K = K; j.rb = rb;
  j.batch = moec_numel(rb, j.bshape);
  if (a->dtype == MOEC_F32) return mm_f32(ctx, &j);
  moec_parallel_for(ctx, j.batch * M, mm_task, &j);
  return 0;
}

/* f32: the blocked GEMM (rt_gemm_f32.c), one product per batch entry; a B shared by every batch entry
 * with A's batch entries contiguous is one GEMM over all the rows */
static int mm_f32(moec_ctx *ctx, const mm_job *j) {
  const int64_t M = j->M, N = j->N, K = j->K;
  moec_sgemm g;
  memset(&g, 0, sizeof g);
  g.M = M; g.N = N; g.K = K;
  g.A = (const float *)j->a->data; g.sam = K; g.sak = 1;
  g.B = (const float *)j->b->data; g.sbk = N; g.sbn = 1;
  g.C = (float *)j->out->data; g.ldc = N;
  g.alpha = 1.0f; g.beta = 0.0f;
  if (j->batch == 0 || M == 0 || N == 0) return 0;
  int b_shared = 1, a_dense = 1; /* b broadcast over every batch dim, a over none (so a is [batch, M, K]) */
  for (int d = 0; d < j->rb; d++) {
    if (j->sb[d] != 0) b_shared = 0;
    if (j->sa[d] == 0 && j->bshape[d] != 1) a_dense = 0;
  }
  if (b_shared && a_dense) {
    g.M = j->batch * M;
    return moec_sgemm_run(ctx, &g, 1, NULL, NULL, 0);
  }
  int64_t *off = (int64_t *)malloc(sizeof(int64_t) * 2 * (size_t)j->batch);
  if (!off) return moec_fail(ctx, "out of memory (batched matmul offsets)");
  for (int64_t bi = 0; bi < j->batch; bi++) {
    int64_t oa, ob;
    batch_offsets(j, bi, &oa, &ob);
    off[bi] = oa * M * K;
    off[j->batch + bi] = ob * K * N;
  }
  int rc = moec_sgemm_run(ctx, &g, j->batch, off, off + j->batch, M * N);
  free(off);
  return rc;
}

static int moec_k_matmul_packed_c(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *w, const moec_tensor *wp,
                                  int nr, const moec_tensor *c, int act, moec_tensor *out);

int moec_k_matmul_packed(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *w, const moec_tensor *wp, int nr,
                         moec_tensor *out) {
  return moec_k_matmul_packed_c(ctx, a, w, wp, nr, NULL, 0, out);
}

static int linear_addend(moec_ctx *ctx, const moec_tensor *c, const moec_tensor *out, int64_t *scm, int64_t *scn);

/* (+ c and the activation in the epilogue: moec.linear) */
static int moec_k_matmul_packed_c(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *w, const moec_tensor *wp,
                                  int nr, const moec_tensor *c, int act, moec_tensor *out) {
  if (a->dtype != MOEC_F32 || w->dtype != MOEC_F32 || wp->dtype != MOEC_F32 || w->rank != 2 || a->rank < 1)
    return moec_fail(ctx, "packed matmul: f32 [..., K] @ f32 [K, N] expected, got %s rank %d @ %s rank %d",
                     moec_dtype_name(a->dtype), a->rank, moec_dtype_name(w->dtype), w->rank);
  int64_t K = w->shape[0], N = w->shape[1];
  if (a->shape[a->rank - 1] != K)
    return moec_fail(ctx, "contraction dims differ: %lld vs %lld", (long long)a->shape[a->rank - 1], (long long)K);
  if (nr != moec_sgemm_panel_width() || wp->rank != 3 || wp->shape[0] != (N + nr - 1) / nr || wp->shape[1] != K ||
      wp->shape[2] != nr)
    return moec_fail(ctx, "internal error: the packed weight panels do not match this runtime (width %d, runtime %d)",
                     nr, moec_sgemm_panel_width());
  int64_t oshape[MOEC_MAX_RANK];
  int orank = 0;
  for (int d = 0; d < a->rank - 1; d++) oshape[orank++] = a->shape[d];
  oshape[orank++] = N;
  /* (uninit: moec_sgemm_run stores every C tile, the epilogue applied; K == 0 stores 0 + the epilogue) */
  if (moec_alloc_uninit(ctx, out, MOEC_F32, orank, oshape)) return -1;
  moec_sgemm g;
  memset(&g, 0, sizeof g);
  g.M = K ? a->numel / K : moec_dims_prod(a->shape, 0, a->rank - 1);
  g.N = N; g.K = K;
  g.A = (const float *)a->data; g.sam = K; g.sak = 1;
  g.Bp = (const float *)wp->data;
  g.C = (float *)out->data; g.ldc = N;
  g.alpha = 1.0f; g.beta = 0.0f;
  if (c) {
    if (linear_addend(ctx, c, out, &g.scm, &g.scn)) return -1;
    g.c = (const float *)c->data;
    g.beta = 1.0f;
  }
  g.act = act;
  return moec_sgemm_run(ctx, &g, 1, NULL, NULL, 0);
}

/* c's (row, column) strides over the flattened [M, N] result: 0 where it broadcasts */
static int linear_addend(moec_ctx *ctx, const moec_tensor *c, const moec_tensor *out, int64_t *scm, int64_t *scn) {
  int64_t N = out->shape[out->rank - 1], M = N ? out->numel / N : 0;
  int64_t cl = c->rank ? c->shape[c->rank - 1] : 1, lead = cl ? c->numel / cl : 0;
  int same = c->rank == out->rank;
  for (int d = 0; same && d < c->rank - 1; d++) same = c->shape[d] == out->shape[d];
  if (c->dtype != MOEC_F32 || c->rank > out->rank || (cl != N && cl != 1) || (lead != 1 && !same) ||
      (cl == 0 && N != 0))
    return moec_fail(ctx, "linear: the addend (rank %d, %lld values) does not broadcast to the result [%lld x %lld] "
                     "as a bias or a residual", c->rank, (long long)c->numel, (long long)M, (long long)N);
  *scn = cl == N ? 1 : 0;
  *scm = lead == 1 ? 0 : cl;
  return 0;
}

/* one vector of moec.linear's activation (rt_vmath.h: vector exp / erfc, errors measured against float64 in
 * tests/test_dense_gemm.py) */
static inline mvf linear_act_vec(mvf v, int act) {
  switch (act) {
    case MOEC_LACT_SILU: return mv_silu(v);
    case MOEC_LACT_GELU: return mv_gelu(v);
    case MOEC_LACT_GELU_TANH: return mv_gelu_tanh(v);
    default: return v;
  }
}

/* y = act(y): relu as its unary op (NaN and -0 pass); silu, gelu, gelu_tanh on vectors, the row's tail
 * through the same vector formula (zero-padded), so an element's result does not depend on its column */
void moec_linear_act_row(float *y, int64_t n, int act) {
  if (act == MOEC_LACT_RELU) { /* (on vectors: the scalar loop stayed scalar, 15% of a 64 x 64 linear's call) */
    const mvf z = mv_splat(0.f);
    int64_t i = 0;
    for (; i + MV_L <= n; i += MV_L) {
      mvf v = mv_ld(y + i);
      mv_st(y + i, mv_sel(v < z, z, v)); /* (an ordered compare: NaN and -0 pass, as below) */
    }
    for (; i < n; i++) y[i] = y[i] < 0 ? 0.f : y[i];
    return;
  }
  if (act != MOEC_LACT_SILU && act != MOEC_LACT_GELU && act != MOEC_LACT_GELU_TANH) return;
  int64_t i = 0;
  for (; i + MV_L <= n; i += MV_L) mv_st(y + i, linear_act_vec(mv_ld(y + i), act));
  if (i < n) {
    float t[MV_L] = {0};
    memcpy(t, y + i, sizeof(float) * (size_t)(n - i));
    mv_st(t, linear_act_vec(mv_ld(t), act));
    memcpy(y + i, t, sizeof(float) * (size_t)(n - i));
  }
}

int moec_k_linear(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w, const moec_tensor *c,
                  const moec_tensor *wp, int nr, int act, moec_tensor *out) {
  if (act < MOEC_LACT_NONE || act > MOEC_LACT_GELU_TANH) return moec_fail(ctx, "linear: bad activation code %d", act);
  if (!wp) { /* no panels: the matmul, then the addition and the activation over the result */
    if (moec_k_matmul(ctx, x, w, out)) return -1;
    if (act && out->dtype != MOEC_F32) return moec_fail(ctx, "linear: f32 operands expected");
    if (!c) {
      if (act) moec_linear_act_row((float *)out->data, out->numel, act);
      return 0;
    }
    int64_t scm, scn;
    if (out->dtype != MOEC_F32 || linear_addend(ctx, c, out, &scm, &scn)) {
      if (out->dtype != MOEC_F32) return moec_fail(ctx, "linear: f32 operands expected");
      return -1;
    }
    int64_t N = out->shape[out->rank - 1], M = N ? out->numel / N : 0;
    float *o = (float *)out->data;
    const float *cv = (const float *)c->data;
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) o[m * N + n] = o[m * N + n] + cv[m * scm + n * scn];
    if (act) moec_linear_act_row(o, out->numel, act);
    return 0;
  }
  if (moec_k_matmul_packed_c(ctx, x, w, wp, nr, c, act, out)) return -1;
  return 0;
}

typedef struct {
  const moec_tensor *a, *b, *c;
  moec_tensor *out;
  int64_t M, N, K, sam, sak, sbk, sbn, scm, scn;
  double alpha, beta;
} gemm_job;

static void gemm_row(void *arg, int64_t m) {
  const gemm_job *j = (const gemm_job *)arg;
  int64_t N = j->N, K = j->K;
  if (j->a->dtype == MOEC_F32) {
    const float *A = (const float *)j->a->data, *B = (const float *)j->b->data;
    float *C = (float *)j->out->data + m * N;
    if (j->sbn == 1) { /* b not transposed: saxpy rows of B */
      for (int64_t n = 0; n < N; n++) C[n] = 0.f;
      for (int64_t k = 0; k < K; k++) {
        float av = A[m * j->sam + k * j->sak];
        const float *Br = B + k * j->sbk;
        for (int64_t n = 0; n < N; n++) C[n] += av * Br[n];
      }
    } else { /* b transposed: dot products over contiguous k */
      for (int64_t n = 0; n < N; n++) {
        float acc = 0.f;
        const float *Bn = B + n * j->sbn;
        if (j->sak == 1) { const float *Am = A + m * j->sam; for (int64_t k = 0; k < K; k++) acc += Am[k] * Bn[k]; }
        else for (int64_t k = 0; k < K; k++) acc += A[m * j->sam + k * j->sak] * Bn[k];
        C[n] = acc;
      }
    }
    for (int64_t n = 0; n < N; n++) {
      float v = (float)j->alpha * C[n];
      if (j->c) v += (float)j->beta * (float)moec_get_f64(j->c, m * j->scm + n * j->scn);
      C[n] = v;
    }
    return;
  }
  int isf = moec_is_float(j->a->dtype);
  for (int64_t n = 0; n < N; n++) {
    double acc = 0;
    int64_t iacc = 0;
    for (int64_t k = 0; k < K; k++) {
      int64_t ia = m * j->sam + k * j->sak, ib = k * j->sbk + n * j->sbn;
      if (isf) acc += moec_get_f64(j->a, ia) * moec_get_f64(j->b, ib);
      else iacc += moec_get_i64(j->a, ia) * moec_get_i64(j->b, ib);
    }
    if (isf) {
      double v = j->alpha * acc + (j->c ? j->beta * moec_get_f64(j->c, m * j->scm + n * j->scn) : 0.0);
      moec_set_f64(j->out, m * N + n, v);
    } else {
      double v = j->alpha * (double)iacc + (j->c ? j->beta * (double)moec_get_i64(j->c, m * j->scm + n * j->scn) : 0.0);
      moec_set_i64(j->out, m * N + n, (int64_t)v);
    }
  }
}

/* checks, strides and the output of a Gemm */
static int gemm_prepare(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, const moec_tensor *c, double alpha,
                        double beta, int ta, int tb, moec_tensor *out, gemm_job *jp) {
  if (a->rank != 2 || b->rank != 2) return moec_fail(ctx, "gemm operands must be 2-D");
  if (a->dtype != b->dtype) return moec_fail(ctx, "operand types differ");
  gemm_job j;
  memset(&j, 0, sizeof j);
  j.M = ta ? a->shape[1] : a->shape[0];
  j.K = ta ? a->shape[0] : a->shape[1];
  int64_t K2 = tb ? b->shape[1] : b->shape[0];
  j.N = tb ? b->shape[0] : b->shape[1];
  if (j.K != K2) return moec_fail(ctx, "contraction dims differ: %lld vs %lld", (long long)j.K, (long long)K2);
  j.sam = ta ? 1 : a->shape[1];
  j.sak = ta ? a->shape[1] : 1;
  j.sbk = tb ? 1 : b->shape[1];
  j.sbn = tb ? b->shape[1] : 1;
  if (c) {
    if (c->rank > 2) return moec_fail(ctx, "c must have rank <= 2");
    int64_t cm = c->rank == 2 ? c->shape[0] : 1, cn = c->rank >= 1 ? c->shape[c->rank - 1] : 1;
    if ((cm != 1 && cm != j.M) || (cn != 1 && cn != j.N)) return moec_fail(ctx, "c does not broadcast to [M, N]");
    j.scm = cm == 1 ? 0 : cn;
    j.scn = cn == 1 ? 0 : 1;
  }
  int64_t d[2] = {j.M, j.N};
  /* (uninit: moec_sgemm_run and gemm_row store every element of [M, N], K == 0 included) */
  if (moec_alloc_uninit(ctx, out, a->dtype, 2, d)) return -1;
  j.a = a; j.b = b; j.c = c; j.out = out; j.alpha = alpha; j.beta = beta;
  *jp = j;
  return 0;
}

static moec_sgemm gemm_f32_desc(const gemm_job *j, const float *bp);

int moec_k_gemm(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, const moec_tensor *c, double alpha,
                double beta, int ta, int tb, moec_tensor *out) {
  gemm_job j;
  if (gemm_prepare(ctx, a, b, c, alpha, beta, ta, tb, out, &j)) return -1;
  if (a->dtype == MOEC_F32 && (!c || c->dtype == MOEC_F32)) {
    moec_sgemm g = gemm_f32_desc(&j, NULL);
    g.B = (const float *)b->data;
    return moec_sgemm_run(ctx, &g, 1, NULL, NULL, 0);
  }
  moec_parallel_for(ctx, j.M, gemm_row, &j);
  return 0;
}

static moec_sgemm gemm_f32_desc(const gemm_job *j, const float *bp) {
  moec_sgemm g;
  memset(&g, 0, sizeof g);
  g.M = j->M; g.N = j->N; g.K = j->K;
  g.A = (const float *)j->a->data; g.sam = j->sam; g.sak = j->sak;
  g.sbk = j->sbk; g.sbn = j->sbn;
  g.Bp = bp;
  g.C = (float *)j->out->data; g.ldc = j->N;
  g.alpha = (float)j->alpha; g.beta = (float)j->beta;
  if (j->c) { g.c = (const float *)j->c->data; g.scm = j->scm; g.scn = j->scn; }
  return g;
}

int moec_k_gemm_packed(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, const moec_tensor *c, double alpha,
                       double beta, int ta, int tb, const moec_tensor *bp, int nr, moec_tensor *out) {
  if (a->dtype != MOEC_F32 || b->dtype != MOEC_F32 || bp->dtype != MOEC_F32 || (c && c->dtype != MOEC_F32) ||
      a->rank != 2 || b->rank != 2)
    return moec_fail(ctx, "packed gemm: 2-D f32 operands expected");
  int64_t K = tb ? b->shape[1] : b->shape[0], N = tb ? b->shape[0] : b->shape[1];
  if (nr != moec_sgemm_panel_width() || bp->rank != 3 || bp->shape[0] != (N + nr - 1) / nr || bp->shape[1] != K ||
      bp->shape[2] != nr)
    return moec_fail(ctx, "internal error: the packed weight panels do not match this runtime (width %d, runtime %d)",
                     nr, moec_sgemm_panel_width());
  gemm_job j;
  if (gemm_prepare(ctx, a, b, c, alpha, beta, ta, tb, out, &j)) return -1;
  moec_sgemm g = gemm_f32_desc(&j, (const float *)bp->data);
  return moec_sgemm_run(ctx, &g, 1, NULL, NULL, 0);
}

int moec_k_einsum(moec_ctx *ctx, const moec_tensor *const *xs, int n, const int64_t *labels, const int64_t *ranks,
                  const int64_t *out_labels, int n_out, int L, moec_tensor *out) {
  if (L > 64 || n > 16 || n_out < 0 || n_out > MOEC_MAX_RANK) return moec_fail(ctx, "einsum too large");
  int64_t size[64], strides[16][64];
  for (int l = 0; l < L; l++) size[l] = 1;
  const int64_t *lp = labels;
  for (int i = 0; i < n; i++) {
    if (xs[i]->rank != ranks[i]) return moec_fail(ctx, "operand %d has rank %d, the equation says %lld", i, xs[i]->rank, (long long)ranks[i]);
    if (xs[i]->dtype != xs[0]->dtype) return moec_fail(ctx, "operand types differ");
    int64_t st[MOEC_MAX_RANK];
    moec_strides(xs[i], st);
    for (int l = 0; l < L; l++) strides[i][l] = 0;
    for (int k = 0; k < ranks[i]; k++) {
      int64_t l = lp[k], d = xs[i]->shape[k];
      if (d != 1) {
        if (size[l] != 1 && size[l] != d) return moec_fail(ctx, "label size mismatch: %lld vs %lld", (long long)size[l], (long long)d);
        size[l] = d;
        strides[i][l] += st[k];
      }
    }
    lp += ranks[i];
  }
  int in_out[64] = {0};
  int64_t od[MOEC_MAX_RANK];
  for (int k = 0; k < n_out; k++) { in_out[out_labels[k]] = 1; od[k] = size[out_labels[k]]; }
  int red[64], nr = 0;
  for (int l = 0; l < L; l++) if (!in_out[l]) red[nr++] = l;
  if (moec_alloc_uninit(ctx, out, xs[0]->dtype, n_out, od)) return -1; /* (uninit: one store per output element) */
  int64_t rtotal = 1; /* labels of different operands: their product is not bounded by one tensor's extent */
  for (int r = 0; r < nr; r++) if (moec_mul_size(ctx, rtotal, size[red[r]], &rtotal)) return -1;
  int isf = moec_is_float(xs[0]->dtype);
  int64_t oidx[MOEC_MAX_RANK] = {0};
  for (int64_t o = 0; o < out->numel; o++) {
    int64_t base[16];
    for (int i = 0; i < n; i++) {
      base[i] = 0;
      for (int k = 0; k < n_out; k++) base[i] += oidx[k] * strides[i][out_labels[k]];
    }
    double acc = 0;
    int64_t iacc = 0;
    int64_t ridx[64] = {0}, off[16];
    for (int i = 0; i < n; i++) off[i] = base[i];
    for (int64_t r = 0; r < rtotal; r++) {
      if (isf) { double p = 1; for (int i = 0; i < n; i++) p *= moec_get_f64(xs[i], off[i]); acc += p; }
      else { /* integer products wrap (two's complement, as onnxruntime's), never signed overflow */
        uint64_t p = 1;
        for (int i = 0; i < n; i++) p *= (uint64_t)moec_get_i64(xs[i], off[i]);
        iacc = (int64_t)((uint64_t)iacc + p);
      }
      for (int q = nr - 1; q >= 0; q--) {
        int l = red[q];
        if (++ridx[q] < size[l]) { for (int i = 0; i < n; i++) off[i] += strides[i][l]; break; }
        for (int i = 0; i < n; i++) off[i] -= strides[i][l] * (size[l] - 1);
        ridx[q] = 0;
      }
    }
    if (isf) moec_set_f64(out, o, acc); else moec_set_i64(out, o, iacc);
    for (int k = n_out - 1; k >= 0; k--) { if (++oidx[k] < od[k]) break; oidx[k] = 0; }
  }
  return 0;
}

/* Matrix products: numpy.matmul semantics, f32 fast path, generic fallback. */
#include "rt_linalg.h"

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
  int64_t s1 = 1, s2 = 1;
  for (int d = rb - 1; d >= 0; d--) {
    j.sa[d] = abatch[d] == 1 ? 0 : s1;
    j.sb[d] = bbatch[d] == 1 ? 0 : s2;
    s1 *= abatch[d];
    s2 *= bbatch[d];
  }
  int64_t oshape[MOEC_MAX_RANK + 2];
  int orank = 0;
  for (int d = 0; d < rb; d++) oshape[orank++] = j.bshape[d];
  if (a->rank != 1) oshape[orank++] = M;
  if (b->rank != 1) oshape[orank++] = N;
  if (moec_alloc(ctx, out, a->dtype, orank, oshape)) return -1;
  j.a = a; j.b = b; j.out = out; j.M = M; j.N = N; j.K = K; j.rb = rb;
  j.batch = moec_numel(rb, j.bshape);
  moec_parallel_for(ctx, j.batch * M, mm_task, &j);
  return 0;
}

/* moec C runtime core: errors, memory, element access, broadcasting, threads. */
#include "moec_rt.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int moec_fail(moec_ctx *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char msg[1536];
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (ctx) {
    snprintf(ctx->err, sizeof ctx->err, "node '%s' (%s): %s", ctx->node ? ctx->node : "?",
             ctx->op ? ctx->op : "?", msg);
  }
  return -1;
}

static const size_t k_bits[] = {64, 32, 16, 16, 64, 32, 16, 8, 8, 8, 4, 4};
static const char *k_names[] = {"f64", "f32", "f16", "bf16", "i64", "i32", "i16", "i8", "ui8", "i1", "i4", "ui4"};

size_t moec_dtype_bits(int dt) { return (dt >= 0 && dt <= MOEC_U4) ? k_bits[dt] : 0; }
const char *moec_dtype_name(int dt) { return (dt >= 0 && dt <= MOEC_U4) ? k_names[dt] : "?"; }

size_t moec_storage_bytes(int dt, int64_t numel) {
  return (size_t)((numel * (int64_t)moec_dtype_bits(dt) + 7) / 8);
}

int64_t moec_numel(int rank, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= shape[i];
  return n;
}

int moec_alloc(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape) {
  if (rank < 0 || rank > MOEC_MAX_RANK)
    return moec_fail(ctx, "rank %d exceeds the runtime's maximum of %d", rank, MOEC_MAX_RANK);
  if (moec_dtype_bits(dtype) == 0) return moec_fail(ctx, "bad dtype code %d", dtype);
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (shape[i] < 0) return moec_fail(ctx, "negative dimension %lld", (long long)shape[i]);
    if (shape[i] && n > (INT64_C(1) << 40) / shape[i])
      return moec_fail(ctx, "tensor too large (dimension %d = %lld)", i, (long long)shape[i]);
    n *= shape[i];
  }
  size_t bytes = moec_storage_bytes(dtype, n);
#if defined(__SANITIZE_ADDRESS__)
  /* exact size under AddressSanitizer, so a read one past the end is caught */
  size_t alloc = bytes ? bytes : 1;
  void *p = NULL;
  if (posix_memalign(&p, 64, alloc)) p = NULL;
#else
  size_t alloc = (bytes + 63) & ~(size_t)63;
  if (alloc == 0) alloc = 64;
  void *p = aligned_alloc(64, alloc);
#endif
  if (!p) return moec_fail(ctx, "out of memory allocating %zu bytes", alloc);
  memset(p, 0, alloc);
  moec_release(t);
  t->data = p;
  t->rank = rank;
  t->dtype = dtype;
  t->numel = n;
  t->owned = 1;
  for (int i = 0; i < MOEC_MAX_RANK; i++) t->shape[i] = i < rank ? shape[i] : 0;
  return 0;
}

int moec_clone(moec_ctx *ctx, moec_tensor *dst, const moec_tensor *src) {
  moec_tensor tmp = {0};
  if (moec_alloc(ctx, &tmp, src->dtype, src->rank, src->shape)) return -1;
  memcpy(tmp.data, src->data, moec_storage_bytes(src->dtype, src->numel));
  moec_release(dst);
  *dst = tmp;
  return 0;
}

int moec_view(moec_ctx *ctx, moec_tensor *dst, const moec_tensor *src, int rank, const int64_t *shape) {
  if (rank < 0 || rank > MOEC_MAX_RANK) return moec_fail(ctx, "rank %d too large", rank);
  int64_t n = moec_numel(rank, shape);
  if (n != src->numel)
    return moec_fail(ctx, "cannot view %lld elements as %lld", (long long)src->numel, (long long)n);
  moec_tensor v = *src;
  v.owned = 0;
  v.rank = rank;
  for (int i = 0; i < MOEC_MAX_RANK; i++) v.shape[i] = i < rank ? shape[i] : 0;
  moec_release(dst);
  *dst = v;
  return 0;
}

void moec_release(moec_tensor *t) {
  if (t->owned && t->data) free(t->data);
  t->data = NULL;
  t->owned = 0;
  t->numel = 0;
}

/* IEEE half <-> float (round to nearest even). */
float moec_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
  if (exp == 0) {
    if (man == 0) u = sign;
    else { /* subnormal */
      float f = ldexpf((float)man, -24);
      memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t moec_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
  if (a < 0x38800000u) { /* subnormal or zero in half */
    float af;
    memcpy(&af, &a, 4);
    float scaled = af * 16777216.0f; /* 2^24 */
    uint32_t m = (uint32_t)nearbyintf(scaled);
    return (uint16_t)(sign | m);
  }
  uint32_t e = ((a >> 23) - 112) << 10;
  uint32_t m = (a >> 13) & 0x3ff;
  uint32_t r = a & 0x1fff;
  uint32_t h = e | m;
  if (r > 0x1000 || (r == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

double moec_get_f64(const moec_tensor *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
    case MOEC_F64: return ((const double *)p)[i];
    case MOEC_F32: return ((const float *)p)[i];
    case MOEC_F16: return moec_f16_to_f32(((const uint16_t *)p)[i]);
    case MOEC_BF16: return moec_bf16_to_f32(((const uint16_t *)p)[i]);
    case MOEC_I64: return (double)((const int64_t *)p)[i];
    case MOEC_I32: return ((const int32_t *)p)[i];
    case MOEC_I16: return ((const int16_t *)p)[i];
    case MOEC_I8: return ((const int8_t *)p)[i];
    case MOEC_U8: case MOEC_BOOL: return ((const uint8_t *)p)[i];
    case MOEC_I4: { int v = (((const uint8_t *)p)[i >> 1] >> ((i & 1) * 4)) & 0xf; return v >= 8 ? v - 16 : v; }
    case MOEC_U4: return (((const uint8_t *)p)[i >> 1] >> ((i & 1) * 4)) & 0xf;
  }
  return 0;
}

int64_t moec_get_i64(const moec_tensor *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
    case MOEC_I64: return ((const int64_t *)p)[i];
    case MOEC_I32: return ((const int32_t *)p)[i];
    case MOEC_I16: return ((const int16_t *)p)[i];
    case MOEC_I8: return ((const int8_t *)p)[i];
    case MOEC_U8: case MOEC_BOOL: return ((const uint8_t *)p)[i];
    case MOEC_I4: case MOEC_U4: return (int64_t)moec_get_f64(t, i);
    default: {
      double d = moec_get_f64(t, i);
      if (d != d) return INT64_MIN;
      if (d >= 9.2233720368547758e18) return INT64_MAX;
      if (d <= -9.2233720368547758e18) return INT64_MIN;
      return (int64_t)d;
    }
  }
}

void moec_set_f64(moec_tensor *t, int64_t i, double v) {
  void *p = t->data;
  switch (t->dtype) {
    case MOEC_F64: ((double *)p)[i] = v; break;
    case MOEC_F32: ((float *)p)[i] = (float)v; break;
    case MOEC_F16: ((uint16_t *)p)[i] = moec_f32_to_f16((float)v); break;
    case MOEC_BF16: ((uint16_t *)p)[i] = moec_f32_to_bf16((float)v); break;
    case MOEC_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    default: moec_set_i64(t, i, (int64_t)v); break;
  }
}

void moec_set_i64(moec_tensor *t, int64_t i, int64_t v) {
  void *p = t->data;
  switch (t->dtype) {
    case MOEC_I64: ((int64_t *)p)[i] = v; break;
    case MOEC_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case MOEC_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case MOEC_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case MOEC_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case MOEC_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case MOEC_I4: case MOEC_U4: {
      uint8_t *b = (uint8_t *)p + (i >> 1);
      int sh = (int)(i & 1) * 4;
      *b = (uint8_t)((*b & ~(0xf << sh)) | ((v & 0xf) << sh));
      break;
    }
    default: moec_set_f64(t, i, (double)v); break;
  }
}

void moec_copy_elem(moec_tensor *dst, int64_t di, const moec_tensor *src, int64_t si) {
  size_t bits = moec_dtype_bits(src->dtype);
  if (bits < 8) { moec_set_i64(dst, di, moec_get_i64(src, si)); return; }
  size_t b = bits / 8;
  memcpy((char *)dst->data + di * b, (const char *)src->data + si * b, b);
}

void moec_strides(const moec_tensor *t, int64_t *strides) {
  int64_t s = 1;
  for (int i = t->rank - 1; i >= 0; i--) { strides[i] = s; s *= t->shape[i]; }
}

int moec_broadcast_shape(moec_ctx *ctx, int n, const moec_tensor *const *ts, int *out_rank, int64_t *out_shape) {
  int r = 0;
  for (int k = 0; k < n; k++) if (ts[k]->rank > r) r = ts[k]->rank;
  for (int i = 0; i < r; i++) {
    int64_t d = 1;
    for (int k = 0; k < n; k++) {
      int j = i - (r - ts[k]->rank);
      if (j < 0) continue;
      int64_t e = ts[k]->shape[j];
      if (e == 1) continue;
      if (d == 1) d = e;
      else if (d != e)
        return moec_fail(ctx, "shapes do not broadcast: dimension %d is %lld in one operand and %lld in another",
                         i, (long long)d, (long long)e);
    }
    /* a zero-sized dim broadcasts with 1 only */
    out_shape[i] = d;
  }
  *out_rank = r;
  return 0;
}

void moec_broadcast_strides(const moec_tensor *t, int out_rank, const int64_t *out_shape, int64_t *strides) {
  int64_t s = 1;
  (void)out_shape;
  for (int i = out_rank - 1; i >= 0; i--) {
    int j = i - (out_rank - t->rank);
    if (j < 0 || t->shape[j] == 1) strides[i] = 0;
    else strides[i] = s;
    if (j >= 0) s *= t->shape[j];
  }
}

int moec_norm_axis(moec_ctx *ctx, int64_t axis, int rank, int64_t *out) {
  int64_t r = rank > 0 ? rank : 1;
  if (axis < -r || axis >= r) return moec_fail(ctx, "axis %lld out of range for rank %d", (long long)axis, rank);
  *out = axis < 0 ? axis + r : axis;
  return 0;
}

int moec_read_ints(moec_ctx *ctx, const moec_tensor *t, int64_t *out, int64_t cap, int64_t *n, const char *what) {
  if (t->rank > 1) return moec_fail(ctx, "%s must be a 1-D tensor, got rank %d", what, t->rank);
  if (moec_is_float(t->dtype)) return moec_fail(ctx, "%s must be integer, got %s", what, moec_dtype_name(t->dtype));
  if (t->numel > cap) return moec_fail(ctx, "%s has %lld values, at most %lld allowed", what, (long long)t->numel, (long long)cap);
  for (int64_t i = 0; i < t->numel; i++) out[i] = moec_get_i64(t, i);
  *n = t->numel;
  return 0;
}

/* -- a tiny thread pool: fork/join over [0, n) ---------------------------------*/
typedef struct {
  moec_task_fn fn;
  void *arg;
  int64_t n, nthreads;
  int64_t tid;
} moec_job;

static void *moec_worker(void *p) {
  moec_job *j = (moec_job *)p;
  int64_t per = (j->n + j->nthreads - 1) / j->nthreads;
  int64_t lo = j->tid * per, hi = lo + per < j->n ? lo + per : j->n;
  for (int64_t i = lo; i < hi; i++) j->fn(j->arg, i);
  return NULL;
}

void moec_parallel_for(moec_ctx *ctx, int64_t n, moec_task_fn fn, void *arg) {
  int nt = ctx && ctx->nthreads > 1 ? ctx->nthreads : 1;
  if (nt > n) nt = (int)n;
  if (nt <= 1) {
    for (int64_t i = 0; i < n; i++) fn(arg, i);
    return;
  }
  pthread_t th[64];
  moec_job jobs[64];
  if (nt > 64) nt = 64;
  for (int t = 0; t < nt; t++) {
    jobs[t] = (moec_job){fn, arg, n, nt, t};
    if (t > 0 && pthread_create(&th[t], NULL, moec_worker, &jobs[t]) != 0) {
      moec_worker(&jobs[t]); /* could not start a thread: run it here */
      th[t] = 0;
    }
  }
  moec_worker(&jobs[0]);
  for (int t = 1; t < nt; t++) if (th[t]) pthread_join(th[t], NULL);
}

/* -- dynamic fork/join with worker ids ------------------------------------------------*/
typedef struct {
  moec_task_tid_fn fn;
  void *arg;
  int64_t n;
  int64_t next; /* atomically incremented */
} moec_djob;

typedef struct {
  moec_djob *job;
  int tid;
} moec_dworker;

static void *moec_dwork(void *p) {
  moec_dworker *w = (moec_dworker *)p;
  for (;;) {
    int64_t i = __atomic_fetch_add(&w->job->next, 1, __ATOMIC_RELAXED);
    if (i >= w->job->n) break;
    w->job->fn(w->job->arg, i, w->tid);
  }
  return NULL;
}

int moec_num_threads(moec_ctx *ctx, int64_t n) {
  int nt = ctx && ctx->nthreads > 1 ? ctx->nthreads : 1;
  if (nt > 64) nt = 64;
  if (nt > n) nt = n > 0 ? (int)n : 1;
  return nt;
}

void moec_parallel_for_tid(moec_ctx *ctx, int64_t n, moec_task_tid_fn fn, void *arg) {
  int nt = moec_num_threads(ctx, n);
  moec_djob job = {fn, arg, n, 0};
  moec_dworker ws[64];
  pthread_t th[64];
  int started[64] = {0};
  for (int t = 0; t < nt; t++) ws[t] = (moec_dworker){&job, t};
  for (int t = 1; t < nt; t++) started[t] = pthread_create(&th[t], NULL, moec_dwork, &ws[t]) == 0;
  moec_dwork(&ws[0]);
  for (int t = 1; t < nt; t++) if (started[t]) pthread_join(th[t], NULL);
}

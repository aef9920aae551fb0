/* moec C runtime core: errors, memory, element access, broadcasting, threads. */
#include "moec_rt.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

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
  /* numel <= MOEC_MAX_NUMEL (2^40) for every tensor, so numel * 64 bits cannot overflow */
  if (numel < 0) return 0;
  return (size_t)(((uint64_t)numel * (uint64_t)moec_dtype_bits(dt) + 7) / 8);
}

int moec_mul_size(moec_ctx *ctx, int64_t a, int64_t b, int64_t *out) {
  int64_t r;
  if (a < 0 || b < 0) return moec_fail(ctx, "negative size (%lld x %lld)", (long long)a, (long long)b);
  if (__builtin_mul_overflow(a, b, &r) || r > MOEC_MAX_NUMEL)
    return moec_fail(ctx, "size %lld x %lld is larger than the runtime's limit of 2^40 elements", (long long)a,
                     (long long)b);
  *out = r;
  return 0;
}

int moec_add_size(moec_ctx *ctx, int64_t a, int64_t b, int64_t *out) {
  int64_t r;
  if (a < 0 || b < 0) return moec_fail(ctx, "negative size (%lld + %lld)", (long long)a, (long long)b);
  if (__builtin_add_overflow(a, b, &r) || r > MOEC_MAX_NUMEL)
    return moec_fail(ctx, "size %lld + %lld is larger than the runtime's limit of 2^40 elements", (long long)a,
                     (long long)b);
  *out = r;
  return 0;
}

static void shape_str(char *buf, size_t cap, int rank, const int64_t *shape) {
  size_t k = 0;
  buf[0] = 0;
  k += (size_t)snprintf(buf + k, cap - k, "[");
  for (int i = 0; i < rank && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

int moec_shape_numel(moec_ctx *ctx, int rank, const int64_t *shape, int64_t *numel) {
  if (rank < 0 || rank > MOEC_MAX_RANK)
    return moec_fail(ctx, "rank %d exceeds the runtime's maximum of %d", rank, MOEC_MAX_RANK);
  int64_t extent = 1, n = 1;
  for (int i = 0; i < rank; i++) {
    char s[256];
    if (shape[i] < 0) {
      shape_str(s, sizeof s, rank, shape);
      return moec_fail(ctx, "negative dimension %lld in shape %s", (long long)shape[i], s);
    }
    if (shape[i] == 0) { n = 0; continue; }
    if (__builtin_mul_overflow(extent, shape[i], &extent) || extent > MOEC_MAX_NUMEL) {
      shape_str(s, sizeof s, rank, shape);
      return moec_fail(ctx, "shape %s is too large (the runtime's limit is 2^40 elements, counting a 0 as 1)", s);
    }
  }
  *numel = n ? extent : 0;
  return 0;
}

int64_t moec_dims_prod(const int64_t *shape, int lo, int hi) {
  int64_t n = 1;
  for (int i = lo; i < hi; i++)
    if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) {
      fprintf(stderr, "moec runtime: internal error: a tensor with an invalid shape\n");
      abort();
    }
  return n;
}

/* Retained large blocks.  A layer call allocates tens of MB of intermediates (the expert GEMMs'
 * gathered rows and hidden activations); glibc returns blocks that large to the kernel on free, so
 * every call page-faulted them back in (15% of a 1024-token Mixtral-like layer).  Blocks of 1 MiB
 * to 1 GiB are kept on free (at most SCR_N, oldest unused evicted) and reused by an allocation of
 * between half and all of their size.  Under AddressSanitizer nothing is retained. */
#define SCR_N 16
#define SCR_MIN ((size_t)1 << 20)
#define SCR_MAX ((size_t)1 << 30)
static struct { void *p; size_t n; int used; unsigned long stamp; } g_scr[SCR_N];
static unsigned long g_scr_clock;
static pthread_mutex_t g_scr_mu = PTHREAD_MUTEX_INITIALIZER;

void *moec_scratch_alloc(size_t bytes) {
  size_t alloc = (bytes + 63) & ~(size_t)63;
  if (alloc == 0) alloc = 64;
#if !defined(__SANITIZE_ADDRESS__)
  if (alloc >= SCR_MIN && alloc <= SCR_MAX) {
    pthread_mutex_lock(&g_scr_mu);
    int best = -1;
    for (int i = 0; i < SCR_N; i++)
      if (g_scr[i].p && !g_scr[i].used && g_scr[i].n >= alloc && g_scr[i].n <= 2 * alloc &&
          (best < 0 || g_scr[i].n < g_scr[best].n))
        best = i;
    if (best >= 0) {
      g_scr[best].used = 1;
      g_scr[best].stamp = ++g_scr_clock;
      void *p = g_scr[best].p;
      pthread_mutex_unlock(&g_scr_mu);
      return p;
    }
    pthread_mutex_unlock(&g_scr_mu);
  }
#endif
  void *p = aligned_alloc(64, alloc);
#if !defined(__SANITIZE_ADDRESS__)
  if (p && alloc >= SCR_MIN && alloc <= SCR_MAX) {
    pthread_mutex_lock(&g_scr_mu);
    int slot = -1;
    for (int i = 0; i < SCR_N && slot < 0; i++)
      if (!g_scr[i].p) slot = i;
    for (int i = 0; i < SCR_N && !(slot >= 0 && !g_scr[slot].p); i++) /* full: the least recently used free block */
      if (!g_scr[i].used && (slot < 0 || g_scr[i].stamp < g_scr[slot].stamp)) slot = i;
    if (slot >= 0) {
      if (g_scr[slot].p) free(g_scr[slot].p);
      g_scr[slot].p = p;
      g_scr[slot].n = alloc;
      g_scr[slot].used = 1;
      g_scr[slot].stamp = ++g_scr_clock;
    }
    pthread_mutex_unlock(&g_scr_mu);
  }
#endif
  return p;
}

void moec_scratch_free(void *p) {
  if (!p) return;
#if !defined(__SANITIZE_ADDRESS__)
  pthread_mutex_lock(&g_scr_mu);
  for (int i = 0; i < SCR_N; i++)
    if (g_scr[i].p == p) {
      g_scr[i].used = 0;
      pthread_mutex_unlock(&g_scr_mu);
      return;
    }
  pthread_mutex_unlock(&g_scr_mu);
#endif
  free(p);
}

void *moec_alloc_weights(size_t bytes) {
  const size_t align = bytes >= ((size_t)4 << 20) ? (size_t)2 << 20 : 64;
  const size_t alloc = bytes ? (bytes + align - 1) & ~(align - 1) : 64;
  void *p = aligned_alloc(align, alloc);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && align > 64) (void)madvise(p, alloc, MADV_HUGEPAGE); /* (hosts with THP "never" keep 4 KiB pages) */
#endif
  return p;
}

static int alloc_tensor(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape, int zero);
int moec_alloc(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape) {
  return alloc_tensor(ctx, t, dtype, rank, shape, 1);
}
int moec_alloc_uninit(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape) {
  return alloc_tensor(ctx, t, dtype, rank, shape, 0);
}
static int alloc_tensor(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape, int zero) {
  if (moec_dtype_bits(dtype) == 0) return moec_fail(ctx, "bad dtype code %d", dtype);
  int64_t n;
  if (moec_shape_numel(ctx, rank, shape, &n)) return -1;
  size_t bytes = moec_storage_bytes(dtype, n);
#if defined(__SANITIZE_ADDRESS__)
  /* exact size under AddressSanitizer, so a read one past the end is caught */
  size_t alloc = bytes ? bytes : 1;
  void *p = NULL;
  if (posix_memalign(&p, 64, alloc)) p = NULL;
#else
  size_t alloc = (bytes + 63) & ~(size_t)63;
  if (alloc == 0) alloc = 64;
  void *p = moec_scratch_alloc(alloc);
#endif
  if (!p) return moec_fail(ctx, "out of memory allocating %zu bytes", alloc);
  /* packed (sub-byte) values are set nibble by nibble into their bytes (a read-modify-write): always zeroed */
  if (zero || moec_dtype_bits(dtype) < 8) memset(p, 0, alloc);
  else {
#if defined(MOEC_POISON_UNINIT)
    /* test builds (-DMOEC_POISON_UNINIT: the sanitize builds, and the test suite's via MOEC_POISON_UNINIT=1, see
     * targets/cpu.py): every byte 0xFF, so an element the kernel leaves unwritten reads as NaN (floats) or -1
     * (integers) and fails the comparison with the reference instead of passing as a lucky 0 */
    memset(p, 0xFF, bytes);
#endif
    if (alloc > bytes) memset((char *)p + bytes, 0, alloc - bytes); /* (the padding past the data stays zero) */
  }
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
  /* (uninit: the copy below writes every byte of the data) */
  if (moec_alloc_uninit(ctx, &tmp, src->dtype, src->rank, src->shape)) return -1;
  memcpy(tmp.data, src->data, moec_storage_bytes(src->dtype, src->numel));
  moec_release(dst);
  *dst = tmp;
  return 0;
}

int moec_view(moec_ctx *ctx, moec_tensor *dst, const moec_tensor *src, int rank, const int64_t *shape) {
  int64_t n;
  if (moec_shape_numel(ctx, rank, shape, &n)) return -1;
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
  if (t->owned && t->data) moec_scratch_free(t->data);
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
    default: return moec_f64_to_i64(moec_get_f64(t, i));
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
    default: moec_set_i64(t, i, moec_f64_to_i64(v)); break;
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
  for (int i = t->rank - 1; i >= 0; i--) strides[i] = moec_dims_prod(t->shape, i + 1, t->rank);
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
  (void)out_shape;
  for (int i = out_rank - 1; i >= 0; i--) {
    int j = i - (out_rank - t->rank);
    if (j < 0 || t->shape[j] == 1) strides[i] = 0;
    else strides[i] = moec_dims_prod(t->shape, j + 1, t->rank);
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

/* -- a persistent thread pool: fork/join over [0, n) -----------------------------------
 * Workers are started once per library (lazily, up to 63) and sleep on a condition variable
 * between jobs; a job hands out items through an atomic counter and the caller works too.
 * Submissions are serialised (one job at a time); a parallel_for called from inside a worker runs
 * serially (no nested parallelism). */
typedef struct {
  moec_task_tid_fn fn;
  void *arg;
  int64_t n;
  int64_t next; /* atomically incremented */
  int nw;       /* workers that may take part (tids 1..nw-1; the caller is tid 0) */
  int active;   /* workers that joined this job and are still running it */
  int closed;   /* the caller ran out of items: workers waking later do not join */
} moec_pool_job;

static pthread_mutex_t g_submit = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_lk = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER, g_done = PTHREAD_COND_INITIALIZER;
static int g_started = 1; /* threads alive, counting the caller */
static uint64_t g_gen;
static moec_pool_job g_job;
static __thread int g_in_worker;
static uint64_t g_birth_gen[64]; /* the job generation current when worker t was started */

static void pool_run(moec_pool_job *j, int tid) {
  for (;;) {
    int64_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
    if (i >= j->n) break;
    j->fn(j->arg, i, tid);
  }
}

/* A layer is several short fork/joins (route, two GEMM phases, activation, combine); waking a
 * sleeping thread for each costs tens of microseconds, more on a busy host.  So a worker that finished
 * a job, and the caller waiting for the workers, first wait actively (reading the shared state without
 * the lock, then taking it as before) and only then sleep on the condition variable.  The active wait
 * pauses a few microseconds and then yields the core while it waits: on a host with more runnable
 * threads than cores (another runtime's spinning pool, other processes) the thread waited for may be
 * queued on this very core, and a pure pause loop held it off for its whole time slice (a 64-token layer
 * beside onnxruntime's pool: 2.2x slower at 2 threads than at 1).  Bounded by time, ~200 us. */
#define POOL_PAUSES 64
#define POOL_WAIT_NS 200000
static inline void pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static inline int64_t pool_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* wait actively (up to POOL_WAIT_NS) while *p == v */
static void pool_wait_while_eq_u64(const uint64_t *p, uint64_t v) {
  for (int s = 0; s < POOL_PAUSES; s++) {
    if (__atomic_load_n(p, __ATOMIC_ACQUIRE) != v) return;
    pool_relax();
  }
  int64_t end = pool_now_ns() + POOL_WAIT_NS;
  while (__atomic_load_n(p, __ATOMIC_ACQUIRE) == v && pool_now_ns() < end) sched_yield();
}

static void pool_wait_while_pos(const int *p) {
  for (int s = 0; s < POOL_PAUSES; s++) {
    if (__atomic_load_n(p, __ATOMIC_ACQUIRE) <= 0) return;
    pool_relax();
  }
  int64_t end = pool_now_ns() + POOL_WAIT_NS;
  while (__atomic_load_n(p, __ATOMIC_ACQUIRE) > 0 && pool_now_ns() < end) sched_yield();
}

static void *pool_main(void *p) {
  int tid = (int)(intptr_t)p;
  uint64_t seen = 0;
  g_in_worker = 1;
  pthread_mutex_lock(&g_lk);
  seen = g_birth_gen[tid]; /* so a worker started for the next job does not miss it */
  for (;;) {
    if (g_gen == seen) {
      pthread_mutex_unlock(&g_lk);
      pool_wait_while_eq_u64(&g_gen, seen);
      pthread_mutex_lock(&g_lk);
    }
    while (g_gen == seen) pthread_cond_wait(&g_wake, &g_lk);
    seen = g_gen;
    /* a worker joins a job only while it is open: on a busy host a woken thread may get a core late, and
     * the caller, having run every item itself by then, must not wait for it to be scheduled */
    if (tid >= g_job.nw || g_job.closed) continue;
    g_job.active++;
    pthread_mutex_unlock(&g_lk);
    pool_run(&g_job, tid);
    pthread_mutex_lock(&g_lk);
    if (__atomic_sub_fetch(&g_job.active, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&g_done);
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
  if (nt <= 1 || g_in_worker) {
    for (int64_t i = 0; i < n; i++) fn(arg, i, 0);
    return;
  }
  pthread_mutex_lock(&g_submit);
  pthread_mutex_lock(&g_lk);
  while (g_started < nt) { /* start the missing workers (kept for later jobs) */
    pthread_t th;
    g_birth_gen[g_started] = g_gen;
    if (pthread_create(&th, NULL, pool_main, (void *)(intptr_t)g_started) != 0) break;
    pthread_detach(th);
    g_started++;
  }
  if (nt > g_started) nt = g_started;
  g_job = (moec_pool_job){fn, arg, n, 0, nt, 0, 0};
  __atomic_add_fetch(&g_gen, 1, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&g_wake);
  pthread_mutex_unlock(&g_lk);
  pool_run(&g_job, 0);
  pthread_mutex_lock(&g_lk);
  g_job.closed = 1; /* every item is taken: wait only for the workers that joined (they finish theirs) */
  pthread_mutex_unlock(&g_lk);
  pool_wait_while_pos(&g_job.active);
  pthread_mutex_lock(&g_lk);
  while (g_job.active > 0) pthread_cond_wait(&g_done, &g_lk);
  pthread_mutex_unlock(&g_lk);
  pthread_mutex_unlock(&g_submit);
}

/* static-style fork/join: contiguous chunks of [0, n), a few per thread */
typedef struct {
  moec_task_fn fn;
  void *arg;
  int64_t n, chunk;
} moec_chunks;

static void chunk_task(void *p, int64_t c, int tid) {
  (void)tid;
  moec_chunks *k = (moec_chunks *)p;
  int64_t lo = c * k->chunk, hi = lo + k->chunk < k->n ? lo + k->chunk : k->n;
  for (int64_t i = lo; i < hi; i++) k->fn(k->arg, i);
}

void moec_parallel_for(moec_ctx *ctx, int64_t n, moec_task_fn fn, void *arg) {
  int nt = moec_num_threads(ctx, n);
  if (nt <= 1 || g_in_worker) {
    for (int64_t i = 0; i < n; i++) fn(arg, i);
    return;
  }
  int64_t nchunks = (int64_t)nt * 4 < n ? (int64_t)nt * 4 : n;
  moec_chunks k = {fn, arg, n, (n + nchunks - 1) / nchunks};
  moec_parallel_for_tid(ctx, (n + k.chunk - 1) / k.chunk, chunk_task, &k);
}

/* moec C runtime: tensors, allocation, errors, element access.
 *
 * Every kernel has the shape
 *     int moec_k_<name>(moec_ctx *ctx, <const moec_tensor *inputs...>, <moec_tensor *outputs...>, <attrs>)
 * It validates its inputs, computes its output shapes at run time, allocates the
 * outputs with moec_alloc, fills them, and returns 0; on bad input it returns
 * moec_fail(ctx, ...) with a message (never crashes, never reads out of bounds).
 *
 * Element types are stored natively: f16/bf16 as uint16_t bits, bool as uint8_t,
 * packed int4 two per byte (low nibble first).
 */
#ifndef MOEC_RT_H
#define MOEC_RT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MOEC_MAX_RANK 8

/* Keep in sync with moec/codegen/c/dtypes.py */
enum moec_dtype {
  MOEC_F64 = 0, MOEC_F32 = 1, MOEC_F16 = 2, MOEC_BF16 = 3,
  MOEC_I64 = 4, MOEC_I32 = 5, MOEC_I16 = 6, MOEC_I8 = 7, MOEC_U8 = 8,
  MOEC_BOOL = 9, MOEC_I4 = 10, MOEC_U4 = 11
};

typedef struct moec_tensor {
  void *data;
  int64_t shape[MOEC_MAX_RANK];
  int64_t numel;
  int32_t rank;
  int32_t dtype;
  int32_t owned; /* 1: data was allocated by moec_alloc and is freed by moec_release */
  int32_t pad_;
} moec_tensor;

typedef struct moec_ctx {
  const char *node; /* the IR op being run (its source location) */
  const char *op;   /* the IR op name */
  int nthreads;
  char err[2048];
} moec_ctx;

/* -- errors ----------------------------------------------------------------*/
int moec_fail(moec_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* -- memory ----------------------------------------------------------------*/
size_t moec_dtype_bits(int dtype);
const char *moec_dtype_name(int dtype);
size_t moec_storage_bytes(int dtype, int64_t numel);
/* Allocate t (64-byte aligned, zero-filled). Checks rank and size overflow. */
int moec_alloc(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape);
/* moec_alloc without zeroing the data, for kernels that write every element of the output on every path that
 * returns 0 (a serial memset of each activation cost 1-2% of a model's prefill; a [256,1024]x[1024,32000]
 * MatMul's output is 32 MB).  Kernels that accumulate into the output, or leave some elements at zero (dropped
 * MoE slots, empty blocks), use moec_alloc.  Packed sub-byte types (i4 / u4) are zeroed anyway.  Built with
 * -DMOEC_POISON_UNINIT (the sanitize and test builds) the data is filled with 0xFF bytes instead: an element a
 * kernel forgets reads as NaN / -1. */
int moec_alloc_uninit(moec_ctx *ctx, moec_tensor *t, int dtype, int rank, const int64_t *shape);
/* 64-byte aligned scratch memory; large blocks are retained and reused across calls.  Free only
 * with moec_scratch_free. */
void *moec_scratch_alloc(size_t bytes);
void moec_scratch_free(void *p);
/* Memory for weights read or packed once and streamed by every call: 64-byte aligned; from 4 MiB on
 * 2 MiB-aligned and marked for transparent huge pages (Linux), so streaming it costs no TLB walk per 4 KiB
 * page (that halved a decode-sized GEMV's bandwidth).  Mark it before filling it.  Free with free(). */
void *moec_alloc_weights(size_t bytes);
/* Allocate like src and copy its data. */
int moec_clone(moec_ctx *ctx, moec_tensor *dst, const moec_tensor *src);
/* A view: same data, new shape (numel must match). dst does not own the data. */
int moec_view(moec_ctx *ctx, moec_tensor *dst, const moec_tensor *src, int rank, const int64_t *shape);
void moec_release(moec_tensor *t);

/* -- sizes (checked) -------------------------------------------------------------------------
 * The invariant: every tensor the runtime holds has a valid shape -- rank in [0, MOEC_MAX_RANK],
 * every dimension >= 0, and the product of its dimensions with zeros counted as one (its extent)
 * at most MOEC_MAX_NUMEL.  moec_alloc, moec_view, moec_bind_* and the input checks enforce it, so
 * every stride, partial product of dimensions and in-range element offset of a tensor fits in
 * int64 with room to spare.  Sizes computed from run-time values (reshape targets, repeats, range
 * lengths, sums of dimensions) go through the checked helpers below and are never multiplied raw. */
#define MOEC_MAX_NUMEL (INT64_C(1) << 40)
/* *out = a * b (a, b >= 0); fails (moec_fail) on overflow or a result above MOEC_MAX_NUMEL. */
int moec_mul_size(moec_ctx *ctx, int64_t a, int64_t b, int64_t *out);
/* *out = a + b (a, b >= 0); fails on overflow or a result above MOEC_MAX_NUMEL. */
int moec_add_size(moec_ctx *ctx, int64_t a, int64_t b, int64_t *out);
/* Check that (rank, shape) is a valid shape (see above) and give its element count. */
int moec_shape_numel(moec_ctx *ctx, int rank, const int64_t *shape, int64_t *numel);
/* Product of shape[lo..hi) of a valid shape (a tensor's): cannot overflow by the invariant; a
 * violation is a runtime bug and aborts rather than wrap. */
int64_t moec_dims_prod(const int64_t *shape, int lo, int hi);
/* Element count of a valid shape (moec_dims_prod over all of it). */
static inline int64_t moec_numel(int rank, const int64_t *shape) { return moec_dims_prod(shape, 0, rank); }

/* -- element access (slow path: one switch per element) ---------------------*/
double moec_get_f64(const moec_tensor *t, int64_t i);
void moec_set_f64(moec_tensor *t, int64_t i, double v);
int64_t moec_get_i64(const moec_tensor *t, int64_t i);
void moec_set_i64(moec_tensor *t, int64_t i, int64_t v);
/* Copy element si of src to element di of dst (same dtype, any width). */
void moec_copy_elem(moec_tensor *dst, int64_t di, const moec_tensor *src, int64_t si);

static inline int moec_is_float(int dt) { return dt <= MOEC_BF16; }
/* double -> int64 without undefined behaviour: NaN -> INT64_MIN, out of range saturates */
static inline int64_t moec_f64_to_i64(double d) {
  if (d != d) return INT64_MIN;
  if (d >= 9.2233720368547758e18) return INT64_MAX;
  if (d <= -9.2233720368547758e18) return INT64_MIN;
  return (int64_t)d;
}
static inline size_t moec_elem_size(int dt) { size_t b = moec_dtype_bits(dt); return b < 8 ? 1 : b / 8; }

float moec_f16_to_f32(uint16_t h);
uint16_t moec_f32_to_f16(float f);
static inline float moec_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline uint16_t moec_f32_to_bf16(float f) { /* round to nearest even, NaN kept */
  uint32_t u; memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* Strides (in elements) of a contiguous tensor, and broadcast strides of t
 * aligned to an output of rank out_rank (0 where t's dim is 1 or missing). */
void moec_strides(const moec_tensor *t, int64_t *strides);
int moec_broadcast_shape(moec_ctx *ctx, int n, const moec_tensor *const *ts, int *out_rank, int64_t *out_shape);
void moec_broadcast_strides(const moec_tensor *t, int out_rank, const int64_t *out_shape, int64_t *strides);

/* Normalise an axis to [0, rank); fails with a message if out of range. */
int moec_norm_axis(moec_ctx *ctx, int64_t axis, int rank, int64_t *out);

/* Read a 1-D (or scalar) integer tensor into a host array (at most cap values). */
int moec_read_ints(moec_ctx *ctx, const moec_tensor *t, int64_t *out, int64_t cap, int64_t *n, const char *what);

/* Run fn(arg, i) for i in [0, n) on the runtime's threads. */
typedef void (*moec_task_fn)(void *arg, int64_t i);
void moec_parallel_for(moec_ctx *ctx, int64_t n, moec_task_fn fn, void *arg);
/* Dynamic scheduling (items handed out one at a time) and the worker index in [0, nthreads). */
typedef void (*moec_task_tid_fn)(void *arg, int64_t i, int tid);
int moec_num_threads(moec_ctx *ctx, int64_t n);
void moec_parallel_for_tid(moec_ctx *ctx, int64_t n, moec_task_tid_fn fn, void *arg);
/* A job of fewer multiply-adds than this runs on the calling thread: waking the pool and joining it (microseconds
 * on an idle host, tens of them beside other runtimes' threads) costs more than a second core saves (a 64-wide
 * expert layer at one token: 2x slower on two threads than on one). */
#define MOEC_PAR_MIN_FMAS 65536.0

#define MOEC_TRY(expr) do { if ((expr) != 0) goto moec_fail_label; } while (0)

/* Dispatch a statement over the C storage type of a dtype:
 *   MOEC_SWITCH_NUMERIC(dt, T, { body using T }, { default }) */
#define MOEC_SWITCH_ALL_INT(dt, T, BODY, DEFAULT)                      \
  switch (dt) {                                                        \
    case MOEC_I64: { typedef int64_t T; BODY; } break;                 \
    case MOEC_I32: { typedef int32_t T; BODY; } break;                 \
    case MOEC_I16: { typedef int16_t T; BODY; } break;                 \
    case MOEC_I8: { typedef int8_t T; BODY; } break;                   \
    case MOEC_U8: case MOEC_BOOL: { typedef uint8_t T; BODY; } break;  \
    default: DEFAULT;                                                  \
  }

#ifdef __cplusplus
}
#endif
#endif

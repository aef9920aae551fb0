/* Elementwise kernels with numpy broadcasting.
 *
 * The output is walked as an outer loop over all dimensions but the last and an inner loop over
 * the last one, where each operand's stride is 0 (broadcast) or 1; the inner loops are typed
 * for f32, f64 and i64 (vectorisable when both strides are 1 or one is 0), generic otherwise. */
#include "rt_elementwise.h"

#include <math.h>

static int is_cmp(int op) { return op >= MOEC_BIN_EQ && op <= MOEC_BIN_LE; }

static inline double bin_d(int op, double a, double b) {
  switch (op) {
    case MOEC_BIN_ADD: return a + b;
    case MOEC_BIN_SUB: return a - b;
    case MOEC_BIN_MUL: return a * b;
    case MOEC_BIN_DIV: return a / b;
    case MOEC_BIN_POW: return pow(a, b);
    case MOEC_BIN_MIN: return (a != a || b != b) ? NAN : (a < b ? a : b);
    case MOEC_BIN_MAX: return (a != a || b != b) ? NAN : (a > b ? a : b);
    case MOEC_BIN_EQ: return a == b;
    case MOEC_BIN_GT: return a > b;
    case MOEC_BIN_GE: return a >= b;
    case MOEC_BIN_LT: return a < b;
    case MOEC_BIN_LE: return a <= b;
    case MOEC_BIN_AND: return (a != 0) && (b != 0);
    case MOEC_BIN_OR: return (a != 0) || (b != 0);
    case MOEC_BIN_FMOD: return fmod(a, b);
    case MOEC_BIN_MOD: { double r = fmod(a, b); return r == 0 ? copysign(0.0, b) : ((r < 0) != (b < 0) ? r + b : r); }
  }
  return NAN;
}

static inline float bin_f(int op, float a, float b) {
  switch (op) {
    case MOEC_BIN_ADD: return a + b;
    case MOEC_BIN_SUB: return a - b;
    case MOEC_BIN_MUL: return a * b;
    case MOEC_BIN_DIV: return a / b;
    case MOEC_BIN_POW: return powf(a, b);
    case MOEC_BIN_MIN: return (a != a || b != b) ? NAN : (a < b ? a : b);
    case MOEC_BIN_MAX: return (a != a || b != b) ? NAN : (a > b ? a : b);
    default: return (float)bin_d(op, a, b);
  }
}

static inline int64_t ipow(int64_t a, int64_t b) {
  if (b < 0) return a == 1 ? 1 : (a == -1 ? (b & 1 ? -1 : 1) : 0);
  uint64_t r = 1, base = (uint64_t)a;
  while (b) { if (b & 1) r *= base; base *= base; b >>= 1; }
  return (int64_t)r;
}

/* returns 1 on integer division by zero */
static inline int bin_i(int op, int64_t a, int64_t b, int64_t *r) {
  switch (op) {
    case MOEC_BIN_ADD: *r = (int64_t)((uint64_t)a + (uint64_t)b); return 0;
    case MOEC_BIN_SUB: *r = (int64_t)((uint64_t)a - (uint64_t)b); return 0;
    case MOEC_BIN_MUL: *r = (int64_t)((uint64_t)a * (uint64_t)b); return 0;
    case MOEC_BIN_DIV:
      if (b == 0) return 1;
      *r = (a == INT64_MIN && b == -1) ? INT64_MIN : a / b;
      return 0;
    case MOEC_BIN_POW: *r = ipow(a, b); return 0;
    case MOEC_BIN_MIN: *r = a < b ? a : b; return 0;
    case MOEC_BIN_MAX: *r = a > b ? a : b; return 0;
    case MOEC_BIN_EQ: *r = a == b; return 0;
    case MOEC_BIN_GT: *r = a > b; return 0;
    case MOEC_BIN_GE: *r = a >= b; return 0;
    case MOEC_BIN_LT: *r = a < b; return 0;
    case MOEC_BIN_LE: *r = a <= b; return 0;
    case MOEC_BIN_AND: *r = a && b; return 0;
    case MOEC_BIN_OR: *r = a || b; return 0;
    case MOEC_BIN_MOD:
    case MOEC_BIN_FMOD: {
      if (b == 0) return 1;
      int64_t m = b == -1 ? 0 : a % b; /* (INT64_MIN % -1 overflows in C) */
      if (op == MOEC_BIN_MOD && m != 0 && ((m < 0) != (b < 0))) m += b;
      *r = m;
      return 0;
    }
  }
  return 0;
}

/* f32 inner loop; vectorisable for the common stride patterns */
static void inner_f32(int op, const float *restrict a, int64_t sa, const float *restrict b, int64_t sb,
                      float *restrict o, int64_t n) {
#define LOOP(EXPR)                                                                     \
  if (sa == 1 && sb == 1) { for (int64_t i = 0; i < n; i++) { float x = a[i], y = b[i]; o[i] = EXPR; } } \
  else if (sa == 1) { float y = b[0]; for (int64_t i = 0; i < n; i++) { float x = a[i]; o[i] = EXPR; } } \
  else if (sb == 1) { float x = a[0]; for (int64_t i = 0; i < n; i++) { float y = b[i]; o[i] = EXPR; } } \
  else { float x = a[0], y = b[0]; float v = EXPR; for (int64_t i = 0; i < n; i++) o[i] = v; }
  switch (op) {
    case MOEC_BIN_ADD: LOOP(x + y); break;
    case MOEC_BIN_SUB: LOOP(x - y); break;
    case MOEC_BIN_MUL: LOOP(x * y); break;
    case MOEC_BIN_DIV: LOOP(x / y); break;
    default:
      for (int64_t i = 0; i < n; i++) o[i] = bin_f(op, a[i * sa], b[i * sb]);
  }
#undef LOOP
}

/* i64 x i64 -> i64 (or bool for comparisons) and bool x bool -> bool inner loops without the per-element type
 * switch (an attention mask's [T, T] comparisons and ands: ~1% of a model's prefill); ops that cannot fail */
static void inner_i64(int op, const int64_t *a, int64_t sa, const int64_t *b, int64_t sb, void *o, int64_t n,
                      int cmp) {
  uint8_t *ob = (uint8_t *)o;
  int64_t *oi = (int64_t *)o;
  /* (the common ops with the switch hoisted out of the loop; the rest through bin_i) */
#define I64_LOOP(OUT, EXPR) for (int64_t i = 0; i < n; i++) { const int64_t x = a[i * sa], y = b[i * sb]; OUT[i] = (EXPR); }
  switch (op) {
    case MOEC_BIN_EQ: I64_LOOP(ob, x == y); return;
    case MOEC_BIN_LT: I64_LOOP(ob, x < y); return;
    case MOEC_BIN_LE: I64_LOOP(ob, x <= y); return;
    case MOEC_BIN_GT: I64_LOOP(ob, x > y); return;
    case MOEC_BIN_GE: I64_LOOP(ob, x >= y); return;
    case MOEC_BIN_ADD: I64_LOOP(oi, (int64_t)((uint64_t)x + (uint64_t)y)); return;
    case MOEC_BIN_SUB: I64_LOOP(oi, (int64_t)((uint64_t)x - (uint64_t)y)); return;
    default: break;
  }
#undef I64_LOOP
  int64_t r;
  if (cmp)
    for (int64_t i = 0; i < n; i++) { bin_i(op, a[i * sa], b[i * sb], &r); ob[i] = r != 0; }
  else
    for (int64_t i = 0; i < n; i++) bin_i(op, a[i * sa], b[i * sb], oi + i);
}
static void inner_bool(int op, const uint8_t *a, int64_t sa, const uint8_t *b, int64_t sb, uint8_t *o, int64_t n) {
  int64_t r;
  if (op == MOEC_BIN_AND)
    for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] && b[i * sb];
  else
    for (int64_t i = 0; i < n; i++) { bin_i(op, a[i * sa], b[i * sb], &r); o[i] = r != 0; }
}

typedef struct {
  int r;
  int64_t shape[MOEC_MAX_RANK], sa[MOEC_MAX_RANK], sb[MOEC_MAX_RANK];
} bcast2;

int moec_k_binary(moec_ctx *ctx, int op, const moec_tensor *a, const moec_tensor *b, moec_tensor *out, int out_dtype) {
  if (a->dtype != b->dtype && op != MOEC_BIN_POW)
    return moec_fail(ctx, "operand types differ (%s vs %s)", moec_dtype_name(a->dtype), moec_dtype_name(b->dtype));
  const moec_tensor *ts[2] = {a, b};
  bcast2 g;
  if (moec_broadcast_shape(ctx, 2, ts, &g.r, g.shape)) return -1;
  if ((moec_dtype_bits(out_dtype) < 8 ? moec_alloc : moec_alloc_uninit)(ctx, out, out_dtype, g.r, g.shape)) return -1;
  if (out->numel == 0) return 0;
  moec_broadcast_strides(a, g.r, g.shape, g.sa);
  moec_broadcast_strides(b, g.r, g.shape, g.sb);
  int64_t inner = g.r ? g.shape[g.r - 1] : 1;
  int64_t isa = g.r ? g.sa[g.r - 1] : 0, isb = g.r ? g.sb[g.r - 1] : 0;
  int64_t outer = out->numel / inner;
  int64_t idx[MOEC_MAX_RANK] = {0};
  int64_t ia = 0, ib = 0;
  int afloat = moec_is_float(a->dtype), bfloat = moec_is_float(b->dtype);
  int cmp = is_cmp(op) || op == MOEC_BIN_AND || op == MOEC_BIN_OR;
  int fast_f32 = a->dtype == MOEC_F32 && b->dtype == MOEC_F32 && out_dtype == MOEC_F32;
  const int safe_i = op != MOEC_BIN_DIV && op != MOEC_BIN_MOD && op != MOEC_BIN_FMOD; /* (no division by zero) */
  int fast_i64 = a->dtype == MOEC_I64 && b->dtype == MOEC_I64 && safe_i &&
                 (cmp ? out_dtype == MOEC_BOOL : out_dtype == MOEC_I64);
  int fast_bool = a->dtype == MOEC_BOOL && b->dtype == MOEC_BOOL && out_dtype == MOEC_BOOL && cmp;
  for (int64_t ob = 0; ob < outer; ob++) {
    int64_t io = ob * inner;
    if (fast_f32) {
      inner_f32(op, (const float *)a->data + ia, isa, (const float *)b->data + ib, isb, (float *)out->data + io, inner);
    } else if (fast_i64) {
      inner_i64(op, (const int64_t *)a->data + ia, isa, (const int64_t *)b->data + ib, isb,
                cmp ? (void *)((uint8_t *)out->data + io) : (void *)((int64_t *)out->data + io), inner, cmp);
    } else if (fast_bool) {
      inner_bool(op, (const uint8_t *)a->data + ia, isa, (const uint8_t *)b->data + ib, isb, (uint8_t *)out->data + io, inner);
    } else if (afloat || bfloat) {
      for (int64_t i = 0; i < inner; i++) {
        double x = moec_get_f64(a, ia + i * isa), y = moec_get_f64(b, ib + i * isb);
        double v = bin_d(op, x, y);
        if (cmp) ((uint8_t *)out->data)[io + i] = v != 0;
        else if (!moec_is_float(out_dtype)) moec_set_i64(out, io + i, moec_f64_to_i64(v));
        else moec_set_f64(out, io + i, v);
      }
    } else {
      for (int64_t i = 0; i < inner; i++) {
        int64_t v;
        if (bin_i(op, moec_get_i64(a, ia + i * isa), moec_get_i64(b, ib + i * isb), &v))
          return moec_fail(ctx, "integer division (or remainder) by zero");
        if (cmp) ((uint8_t *)out->data)[io + i] = v != 0;
        else moec_set_i64(out, io + i, v);
      }
    }
    for (int d = g.r - 2; d >= 0; d--) {
      if (++idx[d] < g.shape[d]) { ia += g.sa[d]; ib += g.sb[d]; break; }
      ia -= g.sa[d] * (g.shape[d] - 1);
      ib -= g.sb[d] * (g.shape[d] - 1);
      idx[d] = 0;
    }
  }
  return 0;
}

static inline double un_d(int op, double v) {
  switch (op) {
    case MOEC_UN_RELU: return v < 0 ? 0.0 : v; /* NaN and -0.0 pass, as in onnxruntime */
    case MOEC_UN_NEG: return -v;
    case MOEC_UN_ABS: return fabs(v);
    case MOEC_UN_SIGN: return v > 0 ? 1.0 : (v < 0 ? -1.0 : (v != v ? v : 0.0));
    case MOEC_UN_FLOOR: return floor(v);
    case MOEC_UN_CEIL: return ceil(v);
    case MOEC_UN_SQRT: return sqrt(v);
    case MOEC_UN_RECIP: return 1.0 / v;
    case MOEC_UN_EXP: return exp(v);
    case MOEC_UN_LOG: return log(v);
    case MOEC_UN_SIN: return sin(v);
    case MOEC_UN_COS: return cos(v);
    case MOEC_UN_TANH: return tanh(v);
    case MOEC_UN_ERF: return erf(v);
    case MOEC_UN_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case MOEC_UN_GELU: return 0.5 * v * (1.0 + erf(v * 0.70710678118654752440));
    case MOEC_UN_GELU_TANH: return 0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
    case MOEC_UN_NOT: return v == 0;
    case MOEC_UN_LOG1P: return log1p(v);
  }
  return NAN;
}

static inline float un_f(int op, float v) {
  switch (op) {
    case MOEC_UN_RELU: return v < 0 ? 0.0f : v;
    case MOEC_UN_NEG: return -v;
    case MOEC_UN_ABS: return fabsf(v);
    case MOEC_UN_FLOOR: return floorf(v);
    case MOEC_UN_CEIL: return ceilf(v);
    case MOEC_UN_SQRT: return sqrtf(v);
    case MOEC_UN_RECIP: return 1.0f / v;
    case MOEC_UN_EXP: return expf(v);
    case MOEC_UN_LOG: return logf(v);
    case MOEC_UN_LOG1P: return log1pf(v);
    case MOEC_UN_SIN: return sinf(v);
    case MOEC_UN_COS: return cosf(v);
    case MOEC_UN_TANH: return tanhf(v);
    case MOEC_UN_ERF: return erff(v);
    case MOEC_UN_SIGMOID: return 1.0f / (1.0f + expf(-v));
    default: return (float)un_d(op, v);
  }
}

static inline int64_t un_i(int op, int64_t v) {
  switch (op) {
    case MOEC_UN_RELU: return v > 0 ? v : 0;
    case MOEC_UN_NEG: return (int64_t)(0 - (uint64_t)v);
    case MOEC_UN_ABS: return v < 0 ? (int64_t)(0 - (uint64_t)v) : v;
    case MOEC_UN_SIGN: return (v > 0) - (v < 0);
    case MOEC_UN_NOT: return v == 0;
    default: return v;
  }
}

typedef struct { int op; const moec_tensor *x; moec_tensor *out; int64_t chunk; } un_job;

static void un_task(void *arg, int64_t c) {
  un_job *j = (un_job *)arg;
  int64_t lo = c * j->chunk, hi = lo + j->chunk < j->x->numel ? lo + j->chunk : j->x->numel;
  int dt = j->x->dtype, op = j->op;
  if (dt == MOEC_F32) {
    const float *x = (const float *)j->x->data;
    float *o = (float *)j->out->data;
    for (int64_t i = lo; i < hi; i++) o[i] = un_f(op, x[i]);
  } else if (dt == MOEC_F64) {
    const double *x = (const double *)j->x->data;
    double *o = (double *)j->out->data;
    for (int64_t i = lo; i < hi; i++) o[i] = un_d(op, x[i]);
  } else if (moec_is_float(dt)) {
    for (int64_t i = lo; i < hi; i++) moec_set_f64(j->out, i, un_f(op, (float)moec_get_f64(j->x, i)));
  } else {
    for (int64_t i = lo; i < hi; i++) moec_set_i64(j->out, i, un_i(op, moec_get_i64(j->x, i)));
  }
}

int moec_k_unary(moec_ctx *ctx, int op, const moec_tensor *x, moec_tensor *out) {
  if (op < 0 || op > MOEC_UN_LOG1P) return moec_fail(ctx, "unknown unary opcode %d", op);
  if (moec_alloc_uninit(ctx, out, x->dtype, x->rank, x->shape)) return -1; /* (uninit: the chunks cover every element) */
  un_job j = {op, x, out, 1 << 16};
  moec_parallel_for(ctx, (x->numel + j.chunk - 1) / j.chunk, un_task, &j);
  return 0;
}

int moec_k_select(moec_ctx *ctx, const moec_tensor *c, const moec_tensor *a, const moec_tensor *b, moec_tensor *out) {
  if (a->dtype != b->dtype) return moec_fail(ctx, "branch types differ");
  const moec_tensor *ts[3] = {c, a, b};
  int r;
  int64_t shape[MOEC_MAX_RANK], sc[MOEC_MAX_RANK], sa[MOEC_MAX_RANK], sb[MOEC_MAX_RANK];
  if (moec_broadcast_shape(ctx, 3, ts, &r, shape)) return -1;
  if ((moec_dtype_bits(a->dtype) < 8 ? moec_alloc : moec_alloc_uninit)(ctx, out, a->dtype, r, shape)) return -1;
  moec_broadcast_strides(c, r, shape, sc);
  moec_broadcast_strides(a, r, shape, sa);
  moec_broadcast_strides(b, r, shape, sb);
  int64_t idx[MOEC_MAX_RANK] = {0}, ic = 0, ia = 0, ib = 0;
  const uint8_t *cd = (const uint8_t *)c->data;
  const int w4 = moec_dtype_bits(a->dtype) == 32; /* (4-byte values: copied as words, not through the type switch) */
  for (int64_t i = 0; i < out->numel; i++) {
    if (w4) ((uint32_t *)out->data)[i] = cd[ic] ? ((const uint32_t *)a->data)[ia] : ((const uint32_t *)b->data)[ib];
    else if (cd[ic]) moec_copy_elem(out, i, a, ia);
    else moec_copy_elem(out, i, b, ib);
    for (int d = r - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) { ic += sc[d]; ia += sa[d]; ib += sb[d]; break; }
      ic -= sc[d] * (shape[d] - 1); ia -= sa[d] * (shape[d] - 1); ib -= sb[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
  return 0;
}

int moec_k_clip(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *lo, const moec_tensor *hi, moec_tensor *out) {
  if (lo->numel != 1 || hi->numel != 1) return moec_fail(ctx, "clip bounds must be scalars");
  if (moec_alloc_uninit(ctx, out, x->dtype, x->rank, x->shape)) return -1; /* (uninit: both loops set every element) */
  if (moec_is_float(x->dtype)) {
    double l = moec_get_f64(lo, 0), h = moec_get_f64(hi, 0);
    for (int64_t i = 0; i < x->numel; i++) {
      double v = moec_get_f64(x, i);
      if (v == v) { if (v < l) v = l; if (v > h) v = h; }
      moec_set_f64(out, i, v);
    }
  } else {
    int64_t l = moec_get_i64(lo, 0), h = moec_get_i64(hi, 0);
    for (int64_t i = 0; i < x->numel; i++) {
      int64_t v = moec_get_i64(x, i);
      if (v < l) v = l;
      if (v > h) v = h;
      moec_set_i64(out, i, v);
    }
  }
  return 0;
}

static int int_range(int dt, double *lo, double *hi) {
  switch (dt) {
    case MOEC_I64: *lo = -9223372036854775808.0; *hi = 9223372036854774784.0; return 1;
    case MOEC_I32: *lo = -2147483648.0; *hi = 2147483647.0; return 1;
    case MOEC_I16: *lo = -32768.0; *hi = 32767.0; return 1;
    case MOEC_I8: *lo = -128.0; *hi = 127.0; return 1;
    case MOEC_U8: *lo = 0.0; *hi = 255.0; return 1;
    case MOEC_I4: *lo = -8.0; *hi = 7.0; return 1;
    case MOEC_U4: *lo = 0.0; *hi = 15.0; return 1;
  }
  return 0;
}

int moec_k_cast(moec_ctx *ctx, const moec_tensor *x, moec_tensor *out, int to) {
  if (moec_alloc_uninit(ctx, out, to, x->rank, x->shape)) return -1; /* (uninit: every branch sets all n elements) */
  int from = x->dtype;
  int64_t n = x->numel;
  if (from == to) { memcpy(out->data, x->data, moec_storage_bytes(to, n)); return 0; }
  if (to == MOEC_BOOL) {
    uint8_t *o = (uint8_t *)out->data;
    for (int64_t i = 0; i < n; i++) o[i] = moec_is_float(from) ? moec_get_f64(x, i) != 0 : moec_get_i64(x, i) != 0;
    return 0;
  }
  if (from == MOEC_F32 && to == MOEC_F16) {
    const float *s = (const float *)x->data; uint16_t *o = (uint16_t *)out->data;
    for (int64_t i = 0; i < n; i++) o[i] = moec_f32_to_f16(s[i]);
    return 0;
  }
  if (from == MOEC_F32 && to == MOEC_BF16) {
    const float *s = (const float *)x->data; uint16_t *o = (uint16_t *)out->data;
    for (int64_t i = 0; i < n; i++) o[i] = moec_f32_to_bf16(s[i]);
    return 0;
  }
  if (moec_is_float(from) && !moec_is_float(to)) {
    double lo, hi;
    int_range(to, &lo, &hi);
    for (int64_t i = 0; i < n; i++) {
      double v = trunc(moec_get_f64(x, i));
      moec_set_i64(out, i, (v == v && v >= lo && v <= hi) ? (int64_t)v : 0);
    }
    return 0;
  }
  if (!moec_is_float(from) && moec_is_float(to)) {
    for (int64_t i = 0; i < n; i++) moec_set_f64(out, i, (double)moec_get_i64(x, i));
    return 0;
  }
  if (moec_is_float(from)) {
    for (int64_t i = 0; i < n; i++) moec_set_f64(out, i, moec_get_f64(x, i));
  } else {
    for (int64_t i = 0; i < n; i++) moec_set_i64(out, i, moec_get_i64(x, i));
  }
  return 0;
}

/* Elementwise kernels with numpy broadcasting. */
#include "rt_elementwise.h"

#include <math.h>

static double bin_f(int op, double a, double b) {
  switch (op) {
    case MOEC_BIN_ADD: return a + b;
  }
  return NAN;
}

static int64_t bin_i(int op, int64_t a, int64_t b) {
  switch (op) {
    case MOEC_BIN_ADD: return (int64_t)((uint64_t)a + (uint64_t)b);
  }
  return 0;
}

int moec_k_binary(moec_ctx *ctx, int op, const moec_tensor *a, const moec_tensor *b, moec_tensor *out, int out_dtype) {
  if (a->dtype != b->dtype)
    return moec_fail(ctx, "operand types differ (%s vs %s)", moec_dtype_name(a->dtype), moec_dtype_name(b->dtype));
  const moec_tensor *ts[2] = {a, b};
  int r;
  int64_t shape[MOEC_MAX_RANK], sa[MOEC_MAX_RANK], sb[MOEC_MAX_RANK];
  if (moec_broadcast_shape(ctx, 2, ts, &r, shape)) return -1;
  if (moec_alloc(ctx, out, out_dtype, r, shape)) return -1;
  moec_broadcast_strides(a, r, shape, sa);
  moec_broadcast_strides(b, r, shape, sb);
  int64_t idx[MOEC_MAX_RANK] = {0};
  int64_t ia = 0, ib = 0;
  int isf = moec_is_float(a->dtype);
  for (int64_t i = 0; i < out->numel; i++) {
    if (isf) moec_set_f64(out, i, bin_f(op, moec_get_f64(a, ia), moec_get_f64(b, ib)));
    else moec_set_i64(out, i, bin_i(op, moec_get_i64(a, ia), moec_get_i64(b, ib)));
    for (int d = r - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) { ia += sa[d]; ib += sb[d]; break; }
      ia -= sa[d] * (shape[d] - 1);
      ib -= sb[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
  return 0;
}

int moec_k_unary(moec_ctx *ctx, int op, const moec_tensor *x, moec_tensor *out) {
  if (moec_alloc(ctx, out, x->dtype, x->rank, x->shape)) return -1;
  int isf = moec_is_float(x->dtype);
  for (int64_t i = 0; i < x->numel; i++) {
    switch (op) {
      case MOEC_UN_RELU:
        if (isf) { double v = moec_get_f64(x, i); moec_set_f64(out, i, v > 0 ? v : (v != v ? v : 0.0)); }
        else { int64_t v = moec_get_i64(x, i); moec_set_i64(out, i, v > 0 ? v : 0); }
        break;
      default: return moec_fail(ctx, "unknown unary opcode %d", op);
    }
  }
  return 0;
}

/* Elementwise kernels: numpy broadcasting, typed fast paths for f32/f64/i64. */
#ifndef MOEC_RT_ELEMENTWISE_H
#define MOEC_RT_ELEMENTWISE_H
#include "moec_rt.h"

enum moec_binop {
  MOEC_BIN_ADD = 0, MOEC_BIN_SUB, MOEC_BIN_MUL, MOEC_BIN_DIV, MOEC_BIN_POW, MOEC_BIN_MIN, MOEC_BIN_MAX,
  MOEC_BIN_EQ, MOEC_BIN_GT, MOEC_BIN_GE, MOEC_BIN_LT, MOEC_BIN_LE, MOEC_BIN_AND, MOEC_BIN_OR,
  MOEC_BIN_MOD, MOEC_BIN_FMOD /* floored (integers) / truncated remainder */
};
enum moec_unop {
  MOEC_UN_RELU = 0, MOEC_UN_NEG, MOEC_UN_ABS, MOEC_UN_SIGN, MOEC_UN_FLOOR, MOEC_UN_CEIL, MOEC_UN_SQRT,
  MOEC_UN_RECIP, MOEC_UN_EXP, MOEC_UN_LOG, MOEC_UN_SIN, MOEC_UN_COS, MOEC_UN_TANH, MOEC_UN_ERF,
  MOEC_UN_SIGMOID, MOEC_UN_GELU, MOEC_UN_GELU_TANH, MOEC_UN_NOT, MOEC_UN_LOG1P
};

/* out = a OP b with numpy broadcasting; out has dtype out_dtype (bool for comparisons). */
int moec_k_binary(moec_ctx *ctx, int opcode, const moec_tensor *a, const moec_tensor *b, moec_tensor *out, int out_dtype);
/* out = OP(x), same dtype as x. */
int moec_k_unary(moec_ctx *ctx, int opcode, const moec_tensor *x, moec_tensor *out);
/* out = cond ? a : b (three-way broadcasting). */
int moec_k_select(moec_ctx *ctx, const moec_tensor *cond, const moec_tensor *a, const moec_tensor *b, moec_tensor *out);
/* out = min(max(x, lo), hi), lo/hi scalars of x's dtype; NaN propagates. */
int moec_k_clip(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *lo, const moec_tensor *hi, moec_tensor *out);
/* element type conversion */
int moec_k_cast(moec_ctx *ctx, const moec_tensor *x, moec_tensor *out, int to);
#endif

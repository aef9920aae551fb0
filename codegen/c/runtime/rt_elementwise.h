/* Elementwise kernels. */
#ifndef MOEC_RT_ELEMENTWISE_H
#define MOEC_RT_ELEMENTWISE_H
#include "moec_rt.h"

enum moec_binop { MOEC_BIN_ADD = 0 };
enum moec_unop { MOEC_UN_RELU = 0 };

/* out = a OP b with numpy broadcasting; out has dtype out_dtype. */
int moec_k_binary(moec_ctx *ctx, int opcode, const moec_tensor *a, const moec_tensor *b, moec_tensor *out, int out_dtype);
/* out = OP(x), same dtype as x. */
int moec_k_unary(moec_ctx *ctx, int opcode, const moec_tensor *x, moec_tensor *out);
#endif

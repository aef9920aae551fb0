/* Reductions and softmax. */
#ifndef MOEC_RT_REDUCE_H
#define MOEC_RT_REDUCE_H
#include "moec_rt.h"

enum moec_reduce_kind { MOEC_R_SUM = 0, MOEC_R_MEAN, MOEC_R_MAX, MOEC_R_MIN, MOEC_R_L1, MOEC_R_L2 };

/* reduce over the listed axes (n == 0: all axes) */
int moec_k_reduce(moec_ctx *ctx, const moec_tensor *x, const int64_t *axes, int n, int keepdims, int kind, moec_tensor *out);
/* axes from a runtime tensor; empty axes reduce everything, or nothing with noop */
int moec_k_reduce_dyn(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *axes, int keepdims, int noop, int kind,
                      moec_tensor *out);
int moec_k_softmax(moec_ctx *ctx, const moec_tensor *x, int64_t axis, int log, moec_tensor *out);
#endif

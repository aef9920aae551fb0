/* Shape and data-movement kernels. */
#ifndef MOEC_RT_SHAPE_H
#define MOEC_RT_SHAPE_H
#include "moec_rt.h"

int moec_k_shape(moec_ctx *ctx, const moec_tensor *x, int64_t start, int64_t end, int has_end, moec_tensor *out);
/* view of x with the shape read from a shape tensor (ONNX 0 / -1 rules) */
int moec_k_reshape(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *shape, int allowzero, moec_tensor *out);
/* view of x with a shape computed from x's own shape */
int moec_k_flatten(moec_ctx *ctx, const moec_tensor *x, int64_t axis, moec_tensor *out);
int moec_k_squeeze(moec_ctx *ctx, const moec_tensor *x, const int64_t *axes, int n, moec_tensor *out);
int moec_k_unsqueeze(moec_ctx *ctx, const moec_tensor *x, const int64_t *axes, int n, moec_tensor *out);
/* squeeze (unsq=0) or unsqueeze (unsq=1) with axes read from a tensor */
int moec_k_squeeze_dyn(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *axes, int unsq, moec_tensor *out);
int moec_k_transpose(moec_ctx *ctx, const moec_tensor *x, const int64_t *perm, moec_tensor *out);
int moec_k_expand(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *shape, moec_tensor *out);
int moec_k_tile(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *repeats, moec_tensor *out);
int moec_k_constant_of_shape(moec_ctx *ctx, const moec_tensor *shape, const moec_tensor *value, moec_tensor *out);
int moec_k_range(moec_ctx *ctx, const moec_tensor *start, const moec_tensor *limit, const moec_tensor *delta,
                 moec_tensor *out);
int moec_k_concat(moec_ctx *ctx, const moec_tensor *const *xs, int n, int64_t axis, moec_tensor *out);
int moec_k_split(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *sizes, int64_t axis, moec_tensor *const *outs,
                 int n);
int moec_k_slice(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *starts, const moec_tensor *ends,
                 const moec_tensor *axes, const moec_tensor *steps, moec_tensor *out);
int moec_k_trilu(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *k, int upper, moec_tensor *out);
#endif

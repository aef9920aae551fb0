/* Indexing kernels. Indices are wrapped (negative from the end) and range-checked. */
#ifndef MOEC_RT_INDEX_H
#define MOEC_RT_INDEX_H
#include "moec_rt.h"

enum moec_reduction { MOEC_RED_NONE = 0, MOEC_RED_ADD, MOEC_RED_MUL, MOEC_RED_MAX, MOEC_RED_MIN };

int moec_k_gather(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, int64_t axis, moec_tensor *out);
int moec_k_gather_elements(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, int64_t axis, moec_tensor *out);
int moec_k_gather_nd(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, int64_t batch_dims, moec_tensor *out);
int moec_k_scatter_elements(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, const moec_tensor *upd,
                            int64_t axis, int reduction, moec_tensor *out);
int moec_k_scatter_nd(moec_ctx *ctx, const moec_tensor *data, const moec_tensor *idx, const moec_tensor *upd,
                      int reduction, moec_tensor *out);
int moec_k_nonzero(moec_ctx *ctx, const moec_tensor *x, moec_tensor *out);
int moec_k_one_hot(moec_ctx *ctx, const moec_tensor *idx, const moec_tensor *depth, const moec_tensor *values,
                   int64_t axis, moec_tensor *out);
int moec_k_cumsum(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *axis, int exclusive, int reverse,
                  moec_tensor *out);
int moec_k_topk(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *k, int64_t axis, int largest,
                moec_tensor *values, moec_tensor *indices);
int moec_k_argextreme(moec_ctx *ctx, const moec_tensor *x, int64_t axis, int keepdims, int select_last, int largest,
                      moec_tensor *out);
#endif

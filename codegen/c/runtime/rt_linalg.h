/* Matrix products. */
#ifndef MOEC_RT_LINALG_H
#define MOEC_RT_LINALG_H
#include "moec_rt.h"

/* numpy.matmul semantics (1-D promotion, broadcast batch dims). */
int moec_k_matmul(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, moec_tensor *out);


/* alpha * op(a) @ op(b) + beta * c (c may be NULL; broadcast to [M, N]) */
int moec_k_gemm(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, const moec_tensor *c, double alpha,
                double beta, int trans_a, int trans_b, moec_tensor *out);
/* einsum over n operands: labels[] holds each operand's label ids (ranks[i] of them, concatenated),
 * out_labels the output's; label ids are in [0, n_labels) */
int moec_k_einsum(moec_ctx *ctx, const moec_tensor *const *xs, int n, const int64_t *labels, const int64_t *ranks,
                  const int64_t *out_labels, int n_out, int n_labels, moec_tensor *out);
#endif

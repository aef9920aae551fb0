/* Matrix products. */
#ifndef MOEC_RT_LINALG_H
#define MOEC_RT_LINALG_H
#include "moec_rt.h"

/* numpy.matmul semantics (1-D promotion, broadcast batch dims). */
int moec_k_matmul(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, moec_tensor *out);
#endif

/* Convolution (moec.conv: ONNX Conv semantics, n >= 1 spatial dims, groups, strides, pads, dilations). */
#ifndef MOEC_RT_CONV_H
#define MOEC_RT_CONV_H
#include "moec_rt.h"

/* out [N, M, O...] = conv(x [N, C, S...], w [M, C / group, K...]) (+ bias [M], may be NULL): strides,
 * dilations (n values each) and pads (n begins, then n ends) as the IR op says; floats, accumulated in
 * double and rounded once to x's type. */
int moec_k_conv(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w, const moec_tensor *bias,
                const int64_t *strides, const int64_t *pads, const int64_t *dilations, int64_t group,
                moec_tensor *out);
#endif

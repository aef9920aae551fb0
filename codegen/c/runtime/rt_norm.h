/* Normalisations. */
#ifndef MOEC_RT_NORM_H
#define MOEC_RT_NORM_H
#include "moec_rt.h"

/* layer norm over dims [axis, rank); bias may be NULL; mean/inv_std outputs (f32 or f64) */
int moec_k_layer_norm(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *scale, const moec_tensor *bias,
                      int64_t axis, double eps, moec_tensor *y, moec_tensor *mean, moec_tensor *inv_std);
int moec_k_rms_norm(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *scale, int64_t axis, double eps,
                    moec_tensor *y);
#endif

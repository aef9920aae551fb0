/* Support for generated model units: weights, input checks, outputs. */
#ifndef MOEC_MODEL_H
#define MOEC_MODEL_H
#include "moec_rt.h"

#define MOEC_EXPORT __attribute__((visibility("default")))

/* Defined by the generated unit. */
int moec_init_weights(char *err, int errlen);
MOEC_EXPORT int moec_run(const moec_tensor *inputs, int n_in, moec_tensor *outputs, int n_out, int nthreads,
                         char *err, int errlen);

/* Provided by the runtime (rt_model.c). */
MOEC_EXPORT int moec_init(const char *weights_path, char *err, int errlen);
MOEC_EXPORT void moec_free_outputs(moec_tensor *outputs, int n_out);
MOEC_EXPORT void moec_free_block(void *p);
MOEC_EXPORT int moec_abi_version(void);
int moec_weights_ready(void);
/* true when p points into the loaded weights file (constant for the library's lifetime) */
int moec_in_weights(const void *p);
int moec_bind_weight(moec_tensor *t, int dtype, int rank, const int64_t *shape, int64_t offset, int64_t nbytes,
                     char *err, int errlen);
/* Bind t to constant data; 1 (and t empty) when the shape is invalid (see moec_rt.h). */
int moec_bind_static(moec_tensor *t, int dtype, int rank, const int64_t *shape, void *data);
int moec_bind_const(moec_tensor *t, int dtype, int rank, const int64_t *shape, void *data, char *err, int errlen);
int moec_check_input(moec_ctx *ctx, const moec_tensor *t, const char *name, const char *type, int dtype, int rank);
int moec_check_result(moec_ctx *ctx, const moec_tensor *t, int dtype, int rank);
int moec_output_taken(const moec_tensor *outputs, int k, const void *data);
#endif

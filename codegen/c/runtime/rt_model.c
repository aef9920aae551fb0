/* Runtime support for generated model units: weight file, input checks, outputs. */
#include "moec_model.h"

#include <stdio.h>
#include <stdlib.h>

static uint8_t *g_weights = NULL;
static int64_t g_weights_size = 0;
static int g_ready = 0;

int moec_abi_version(void) { return 1; }

int moec_in_weights(const void *p) {
  return g_weights && (const uint8_t *)p >= g_weights && (const uint8_t *)p < g_weights + g_weights_size;
}

int moec_weights_ready(void) { return g_ready; }

int moec_init(const char *weights_path, char *err, int errlen) {
  if (g_ready) return 0;
  if (weights_path && weights_path[0]) {
    FILE *f = fopen(weights_path, "rb");
    if (!f) { snprintf(err, errlen, "cannot open weights file '%s'", weights_path); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) { fclose(f); snprintf(err, errlen, "cannot size weights file '%s'", weights_path); return 1; }
    /* (huge pages for a large file: see moec_alloc_weights; marked before the read, which faults it in) */
    g_weights = (uint8_t *)moec_alloc_weights((size_t)n);
    if (!g_weights) { fclose(f); snprintf(err, errlen, "out of memory reading weights"); return 1; }
    if (n && fread(g_weights, 1, (size_t)n, f) != (size_t)n) {
      fclose(f);
      snprintf(err, errlen, "short read on weights file '%s'", weights_path);
      return 1;
    }
    fclose(f);
    g_weights_size = n;
  }
  if (moec_init_weights(err, errlen)) return 1;
  g_ready = 1;
  return 0;
}

int moec_bind_weight(moec_tensor *t, int dtype, int rank, const int64_t *shape, int64_t offset, int64_t nbytes,
                     char *err, int errlen) {
  if (!g_weights || offset < 0 || nbytes < 0 || offset > g_weights_size || nbytes > g_weights_size - offset) {
    snprintf(err, errlen, "weights file is too short or missing (need %lld bytes at offset %lld, have %lld)",
             (long long)nbytes, (long long)offset, (long long)g_weights_size);
    return 1;
  }
  if (moec_bind_static(t, dtype, rank, shape, g_weights + offset)) {
    snprintf(err, errlen, "weight at offset %lld has an invalid shape", (long long)offset);
    return 1;
  }
  if ((int64_t)moec_storage_bytes(dtype, t->numel) != nbytes) {
    snprintf(err, errlen, "weight at offset %lld has %lld bytes, its type needs %zu", (long long)offset,
             (long long)nbytes, moec_storage_bytes(dtype, t->numel));
    return 1;
  }
  return 0;
}

int moec_bind_static(moec_tensor *t, int dtype, int rank, const int64_t *shape, void *data) {
  int64_t n;
  memset(t, 0, sizeof *t);
  if (moec_shape_numel(NULL, rank, shape, &n)) return 1; /* keeps the invariant of moec_rt.h */
  t->data = data;
  t->dtype = dtype;
  t->rank = rank;
  for (int i = 0; i < rank; i++) t->shape[i] = shape[i];
  t->numel = n;
  t->owned = 0;
  return 0;
}

int moec_bind_const(moec_tensor *t, int dtype, int rank, const int64_t *shape, void *data, char *err, int errlen) {
  if (moec_bind_static(t, dtype, rank, shape, data)) {
    snprintf(err, errlen, "a constant has an invalid shape (negative or larger than 2^40 elements)");
    return 1;
  }
  return 0;
}

int moec_check_input(moec_ctx *ctx, const moec_tensor *t, const char *name, const char *type, int dtype, int rank) {
  if (t->dtype != dtype || t->rank != rank)
    return moec_fail(ctx, "input '%s' is %s of rank %d, expected %s", name, moec_dtype_name(t->dtype), t->rank, type);
  int64_t n;
  if (moec_shape_numel(NULL, t->rank, t->shape, &n))
    return moec_fail(ctx, "input '%s' has an invalid shape (a negative dimension, or more than 2^40 elements "
                     "counting a 0 as 1)", name);
  if (t->numel != n)
    return moec_fail(ctx, "input '%s': element count does not match its shape", name);
  if (!t->data && t->numel > 0) return moec_fail(ctx, "input '%s' has no data", name);
  return 0;
}

int moec_check_result(moec_ctx *ctx, const moec_tensor *t, int dtype, int rank) {
  if (t->dtype != dtype || t->rank != rank)
    return moec_fail(ctx, "internal error: result is %s rank %d, the IR declares %s rank %d",
                     moec_dtype_name(t->dtype), t->rank, moec_dtype_name(dtype), rank);
  if (!t->data) return moec_fail(ctx, "internal error: result has no data");
  return 0;
}

int moec_output_taken(const moec_tensor *outputs, int k, const void *data) {
  for (int j = 0; j < k; j++) if (outputs[j].data == data) return 1;
  return 0;
}

void moec_free_outputs(moec_tensor *outputs, int n_out) {
  for (int k = 0; k < n_out; k++) moec_release(&outputs[k]);
}

/* An output block the caller took over from moec_run (its tensor's owned flag cleared before moec_free_outputs),
 * given back when the caller is done with it: a large one returns to the scratch pool, so the next call's output
 * reuses it without page faults. */
void moec_free_block(void *p) { moec_scratch_free(p); }

/* Standalone harness for a generated model (used for AddressSanitizer runs).
 *   moec_main WEIGHTS_FILE INPUTS_FILE OUTPUTS_FILE NTHREADS
 * Tensor file format: int32 count, then per tensor: int32 dtype, int32 rank,
 * int64 shape[rank], raw data (moec_storage_bytes). */
#include <stdio.h>
#include <stdlib.h>

#include "../moec_model.h"

#define MAXT 256

static int read_tensors(const char *path, moec_tensor *ts, int *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return 1;
  int32_t cnt;
  if (fread(&cnt, 4, 1, f) != 1 || cnt < 0 || cnt > MAXT) { fclose(f); return 1; }
  for (int i = 0; i < cnt; i++) {
    int32_t dt, rank;
    memset(&ts[i], 0, sizeof ts[i]);
    if (fread(&dt, 4, 1, f) != 1 || fread(&rank, 4, 1, f) != 1 || rank < 0 || rank > MOEC_MAX_RANK) { fclose(f); return 1; }
    if (rank && fread(ts[i].shape, 8, (size_t)rank, f) != (size_t)rank) { fclose(f); return 1; }
    if (moec_alloc(NULL, &ts[i], dt, rank, ts[i].shape)) { fclose(f); return 1; }
    size_t nb = moec_storage_bytes(dt, ts[i].numel);
    if (nb && fread(ts[i].data, 1, nb, f) != nb) { fclose(f); return 1; }
  }
  *n = cnt;
  fclose(f);
  return 0;
}

static int write_tensors(const char *path, moec_tensor *ts, int n) {
  FILE *f = fopen(path, "wb");
  if (!f) return 1;
  int32_t cnt = n;
  fwrite(&cnt, 4, 1, f);
  for (int i = 0; i < n; i++) {
    int32_t dt = ts[i].dtype, rank = ts[i].rank;
    fwrite(&dt, 4, 1, f);
    fwrite(&rank, 4, 1, f);
    fwrite(ts[i].shape, 8, (size_t)rank, f);
    fwrite(ts[i].data, 1, moec_storage_bytes(dt, ts[i].numel), f);
  }
  fclose(f);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s WEIGHTS INPUTS OUTPUTS N_OUT NTHREADS\n", argv[0]);
    return 2;
  }
  char err[2048] = {0};
  if (moec_init(argv[1], err, sizeof err)) { fprintf(stderr, "init: %s\n", err); return 3; }
  static moec_tensor ins[MAXT], outs[MAXT];
  int n_in = 0;
  if (read_tensors(argv[2], ins, &n_in)) { fprintf(stderr, "cannot read inputs\n"); return 3; }
  int n_out = atoi(argv[4]);
  if (n_out < 0 || n_out > MAXT) return 2;
  int rc = moec_run(ins, n_in, outs, n_out, atoi(argv[5]), err, sizeof err);
  for (int i = 0; i < n_in; i++) moec_release(&ins[i]);
  if (rc) { fprintf(stderr, "run: %s\n", err); return 1; }
  rc = write_tensors(argv[3], outs, n_out);
  moec_free_outputs(outs, n_out);
  return rc ? 3 : 0;
}

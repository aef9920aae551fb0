/* A software model of Intel AMX for tests (rt_amx.c built with -DMOEC_HAVE_AMX -DMOEC_AMX_EMULATE): the eight
 * tile registers (16 rows x 64 bytes) and the palette-1 configuration of one thread, and the intrinsics rt_amx.c
 * uses, following the pseudocode of Intel's ISA reference (SDM vol. 2, TILELOADD / TILESTORED / TILEZERO /
 * LDTILECFG / STTILECFG / TDPBF16PS / TDPBUSD):
 *
 *   - the tile state is usable only after the process asked the kernel for it (moec_amx_emu_request_perm,
 *     standing for arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); the environment variable
 *     MOEC_AMX_EMU_REFUSE=1 makes the request fail, as a kernel without AMX support would); without it the
 *     first tile instruction faults (abort here, SIGILL there);
 *   - LDTILECFG checks the configuration (palette 0 or 1, start_row 0, reserved bytes 0, rows <= 16,
 *     colsb <= 64, rows and colsb both zero or both non-zero) and zeroes every tile; palette 0 releases;
 *   - every tile instruction faults without a configuration, on a tile whose rows / colsb are zero
 *     (unconfigured), and on shapes the instruction does not allow (TDP*: the three tiles distinct,
 *     dst.rows == a.rows, dst.colsb == b.colsb, a.colsb / 4 == b.rows, colsb multiples of 4);
 *   - loads read exactly rows x colsb bytes (rows stride apart) and zero the rest of the register; stores write
 *     exactly rows x colsb bytes, so an out-of-bounds access is the caller's and shows under ASan;
 *   - TDPBF16PS: per row m, two f32 partial sums per column n (even and odd element of the pairs) start at 0 and
 *     take, for every k of a's columns, an FMA of the bf16 products (bf16 -> f32 by a 16-bit shift; denormal
 *     inputs treated as zero, each result's denormals flushed, RNE: fmaf), then dst += even + odd (each add
 *     RNE, denormals flushed); TDPBUSD: per row, column and k, the four products of a's unsigned and b's signed
 *     bytes summed into the int32 of dst, wrapping.
 *
 * Only the kernels' hardware is faked: the kernels run unchanged against it. */
#ifndef MOEC_RT_AMX_EMU_H
#define MOEC_RT_AMX_EMU_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int configured;            /* a palette-1 configuration is loaded */
  uint8_t cfg[64];
  uint8_t rows[8];
  uint16_t colsb[8];
  uint8_t data[8][16][64];
} amx_emu_state;
static __thread amx_emu_state amx_emu;
static int amx_emu_perm; /* the process asked for the tile state and got it */

static void amx_emu_fault(const char *what, int t) {
  fprintf(stderr, "amx emulator: fault: %s (tile %d)\n", what, t);
  fflush(stderr);
  abort();
}
static int moec_amx_emu_request_perm(void) {
  const char *e = getenv("MOEC_AMX_EMU_REFUSE");
  if (e && e[0] && e[0] != '0') return -1;
  __atomic_store_n(&amx_emu_perm, 1, __ATOMIC_RELEASE);
  return 0;
}
static void amx_emu_need(int t) {
  if (!__atomic_load_n(&amx_emu_perm, __ATOMIC_ACQUIRE)) amx_emu_fault("tile instruction before the tile state was granted", t);
  if (!amx_emu.configured) amx_emu_fault("tile instruction without a tile configuration", t);
  if (t < 0 || t > 7) amx_emu_fault("no such tile register", t);
  if (amx_emu.rows[t] == 0 || amx_emu.colsb[t] == 0) amx_emu_fault("tile not configured (rows or colsb 0)", t);
}
static void amx_emu_loadconfig(const void *p) {
  if (!__atomic_load_n(&amx_emu_perm, __ATOMIC_ACQUIRE)) amx_emu_fault("LDTILECFG before the tile state was granted", -1);
  const uint8_t *c = (const uint8_t *)p;
  if (c[0] == 0) { /* palette 0: the init state */
    memset(&amx_emu, 0, sizeof amx_emu);
    return;
  }
  if (c[0] != 1) amx_emu_fault("LDTILECFG: palette other than 1", -1);
  if (c[1] != 0) amx_emu_fault("LDTILECFG: start_row not 0", -1);
  for (int i = 2; i < 16; i++)
    if (c[i]) amx_emu_fault("LDTILECFG: reserved byte not 0", -1);
  for (int i = 32; i < 48; i++)
    if (c[i]) amx_emu_fault("LDTILECFG: colsb of a tile past 7 not 0", -1);
  for (int i = 56; i < 64; i++)
    if (c[i]) amx_emu_fault("LDTILECFG: rows of a tile past 7 not 0", -1);
  for (int t = 0; t < 8; t++) {
    uint16_t cb = (uint16_t)(c[16 + 2 * t] | (c[17 + 2 * t] << 8));
    uint8_t r = c[48 + t];
    if (r > 16 || cb > 64) amx_emu_fault("LDTILECFG: tile larger than 16 rows x 64 bytes", t);
    if ((r == 0) != (cb == 0)) amx_emu_fault("LDTILECFG: rows and colsb not both zero or both non-zero", t);
    amx_emu.rows[t] = r;
    amx_emu.colsb[t] = cb;
  }
  memcpy(amx_emu.cfg, c, 64);
  memset(amx_emu.data, 0, sizeof amx_emu.data);
  amx_emu.configured = 1;
}
static void amx_emu_storeconfig(void *p) {
  if (amx_emu.configured) memcpy(p, amx_emu.cfg, 64);
  else memset(p, 0, 64);
}
static void amx_emu_release(void) { memset(&amx_emu, 0, sizeof amx_emu); }
static void amx_emu_loadd(int t, const void *base, long stride) {
  amx_emu_need(t);
  memset(amx_emu.data[t], 0, sizeof amx_emu.data[t]);
  for (int r = 0; r < amx_emu.rows[t]; r++)
    memcpy(amx_emu.data[t][r], (const uint8_t *)base + (long)r * stride, amx_emu.colsb[t]);
}
static void amx_emu_stored(int t, void *base, long stride) {
  amx_emu_need(t);
  for (int r = 0; r < amx_emu.rows[t]; r++) memcpy((uint8_t *)base + (long)r * stride, amx_emu.data[t][r], amx_emu.colsb[t]);
}
static void amx_emu_zero(int t) {
  amx_emu_need(t);
  memset(amx_emu.data[t], 0, sizeof amx_emu.data[t]);
}
static void amx_emu_dp_check(int d, int a, int b) {
  amx_emu_need(d);
  amx_emu_need(a);
  amx_emu_need(b);
  if (d == a || d == b || a == b) amx_emu_fault("TDP*: the tiles are not distinct", d);
  if (amx_emu.colsb[d] % 4 || amx_emu.colsb[a] % 4 || amx_emu.colsb[b] % 4) amx_emu_fault("TDP*: colsb not a multiple of 4", d);
  if (amx_emu.rows[d] != amx_emu.rows[a]) amx_emu_fault("TDP*: dst.rows != src1.rows", d);
  if (amx_emu.colsb[d] != amx_emu.colsb[b]) amx_emu_fault("TDP*: dst.colsb != src2.colsb", d);
  if (amx_emu.colsb[a] / 4 != amx_emu.rows[b]) amx_emu_fault("TDP*: src1.colsb / 4 != src2.rows", d);
}
static float amx_emu_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static float amx_emu_daz(float f) { /* a denormal input (or result: FTZ) as a zero of its sign */
  return (f != 0.f && fabsf(f) < 1.17549435e-38f) ? copysignf(0.f, f) : f;
}
static float amx_emu_bf16(const uint8_t *p) { return amx_emu_daz(amx_emu_f32((uint32_t)(p[0] | (p[1] << 8)) << 16)); }
static void amx_emu_dpbf16ps(int d, int a, int b) {
  amx_emu_dp_check(d, a, b);
  const int K = amx_emu.colsb[a] / 4, N = amx_emu.colsb[d] / 4;
  for (int m = 0; m < amx_emu.rows[d]; m++) {
    float t0[16], t1[16];
    for (int n = 0; n < N; n++) t0[n] = t1[n] = 0.f;
    for (int k = 0; k < K; k++) {
      const float a0 = amx_emu_bf16(&amx_emu.data[a][m][4 * k]), a1 = amx_emu_bf16(&amx_emu.data[a][m][4 * k + 2]);
      for (int n = 0; n < N; n++) {
        t0[n] = amx_emu_daz(fmaf(a0, amx_emu_bf16(&amx_emu.data[b][k][4 * n]), t0[n]));
        t1[n] = amx_emu_daz(fmaf(a1, amx_emu_bf16(&amx_emu.data[b][k][4 * n + 2]), t1[n]));
      }
    }
    for (int n = 0; n < N; n++) {
      float c;
      memcpy(&c, &amx_emu.data[d][m][4 * n], 4);
      c = amx_emu_daz(amx_emu_daz(c) + amx_emu_daz(t0[n] + t1[n]));
      memcpy(&amx_emu.data[d][m][4 * n], &c, 4);
    }
  }
}
static void amx_emu_dpbusd(int d, int a, int b) {
  amx_emu_dp_check(d, a, b);
  const int K = amx_emu.colsb[a] / 4, N = amx_emu.colsb[d] / 4;
  for (int m = 0; m < amx_emu.rows[d]; m++)
    for (int n = 0; n < N; n++) {
      uint32_t c;
      memcpy(&c, &amx_emu.data[d][m][4 * n], 4);
      for (int k = 0; k < K; k++) {
        int32_t s = 0;
        for (int i = 0; i < 4; i++) s += (int32_t)amx_emu.data[a][m][4 * k + i] * (int32_t)(int8_t)amx_emu.data[b][k][4 * n + i];
        c += (uint32_t)s; /* (four products of u8 x s8 fit an int32; the accumulation wraps) */
      }
      memcpy(&amx_emu.data[d][m][4 * n], &c, 4);
    }
}

#define _tile_loadconfig(p) amx_emu_loadconfig(p)
#define _tile_storeconfig(p) amx_emu_storeconfig(p)
#define _tile_release() amx_emu_release()
#define _tile_loadd(t, base, stride) amx_emu_loadd(t, base, stride)
#define _tile_stream_loadd(t, base, stride) amx_emu_loadd(t, base, stride)
#define _tile_stored(t, base, stride) amx_emu_stored(t, base, stride)
#define _tile_zero(t) amx_emu_zero(t)
#define _tile_dpbf16ps(d, a, b) amx_emu_dpbf16ps(d, a, b)
#define _tile_dpbusd(d, a, b) amx_emu_dpbusd(d, a, b)
#endif

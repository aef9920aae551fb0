/* AMX micro-kernels for the bf16 and w8a8 GEMMs (contracts, layouts and numerics: rt_amx.h).
 *
 * One call computes C for m rows x nb (<= 32) columns of one 32-column panel, 32 rows at a time: C as 2 x 2
 * tiles of 16 x 16 f32 / int32 (tmm0 rows 0-15 x columns 0-15, tmm1 rows 0-15 x 16-31, tmm2 / tmm3 rows
 * 16-31), A as two 16-row tiles (tmm4, tmm5: 16 pairs / 16 quads of k each row), B as the panel's two 16-column
 * halves (tmm6, tmm7: 16 k rows, 128 bytes apart in the panel).  Each step of 32 (bf16) or 64 (int8) k is four
 * TDP* on two A and two B loads.  The block's rows set the configuration's rows for A and C (a block of
 * 1-16 rows configures no tmm2 / tmm3 / tmm5); the K tail (P not a multiple of 16) runs once more on
 * zero-padded copies of A's and B's last columns / rows; C goes through a 32 x 32 buffer into its nb columns.
 * The configuration is loaded only when the thread's current one differs (STTILECFG reads it back, so a
 * configuration another library loaded on the thread is never trusted). */
#include "rt_amx.h"
#include "rt_moe.h"

#include <stdlib.h>
#include <string.h>

#ifdef MOEC_HAVE_AMX
#include <pthread.h>
#ifdef MOEC_AMX_EMULATE
#include "rt_amx_emu.h"
#else
#include <cpuid.h>
#include <errno.h>
#include <immintrin.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
/* gcc's tileloadd / ldtilecfg / sttilecfg asm statements pass the address in a register (or name 8 of the 64
 * config bytes) and do not tell the compiler they read / write the memory behind it: a compiler barrier after
 * filling a buffer a tile instruction reads (the padded K tail, the configuration) and after STTILECFG keeps
 * those stores and loads where they are.  (The emulator's functions need none; it is harmless there.) */
#define AMX_BARRIER() __asm__ volatile("" ::: "memory")

#define PNR 32 /* the panels' width (NR of rt_moe_f32.c, MOEC_PAIR_NR / MOEC_I8PANEL_NR): two 16-column B tiles */
_Static_assert(PNR == MOEC_PAIR_NR && PNR == MOEC_I8PANEL_NR, "the AMX kernels read 32-column panels as two B tiles");

static int g_amx = 0;           /* 0 not decided, 1 on, -1 off */
static const char *g_amx_why = "not initialised";
static char g_amx_msg[160] __attribute__((unused));
static pthread_once_t g_amx_once = PTHREAD_ONCE_INIT;

static void amx_decide(void) {
  const char *env = getenv("MOEC_AMX");
  int on = 0;
  if (env && env[0] == '0' && env[1] == 0) {
    g_amx_why = "off: MOEC_AMX=0";
  } else {
#ifdef MOEC_AMX_EMULATE
    if (moec_amx_emu_request_perm() != 0) g_amx_why = "off: the kernel refused the tile state (emulated)";
    else on = 1, g_amx_why = "on (emulated tiles)";
#else
    unsigned a, b, c, d;
    /* cpuid.(7, 0).edx: AMX-BF16 bit 22, AMX-TILE bit 24, AMX-INT8 bit 25 (the artifact may run elsewhere) */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 22) & 1) || !((d >> 24) & 1) || !((d >> 25) & 1)) {
      g_amx_why = "off: this CPU has no AMX-TILE / AMX-BF16 / AMX-INT8";
    } else if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0) {
      /* (ENOSPC: a thread's signal alternate stack is too small for the frame with the tile data) */
      snprintf(g_amx_msg, sizeof g_amx_msg, "off: the kernel refused the tile state (arch_prctl ARCH_REQ_XCOMP_PERM: %s)",
               errno == ENOSPC ? "ENOSPC, a signal alternate stack too small" : errno == EINVAL ? "EINVAL, a kernel without AMX support" : "error");
      g_amx_why = g_amx_msg;
    } else {
      unsigned long bits = 0; /* ARCH_GET_XCOMP_PERM: the permitted features, bit 18 the tile data */
      if (syscall(SYS_arch_prctl, 0x1022, &bits) == 0 && ((bits >> 18) & 1)) on = 1, g_amx_why = "on";
      else g_amx_why = "off: the tile state was not granted (arch_prctl ARCH_GET_XCOMP_PERM)";
    }
#endif
  }
  __atomic_store_n(&g_amx, on ? 1 : -1, __ATOMIC_RELEASE);
}

int moec_amx_on(void) {
  int s = __atomic_load_n(&g_amx, __ATOMIC_ACQUIRE);
  if (s == 0) {
    pthread_once(&g_amx_once, amx_decide);
    s = __atomic_load_n(&g_amx, __ATOMIC_ACQUIRE);
  }
  return s > 0;
}
/* decided when the library is loaded (MOEC_AMX read then), not at its first GEMM of 3+ rows */
__attribute__((constructor)) static void amx_decide_at_load(void) { moec_amx_on(); }
__attribute__((visibility("default"))) const char *moec_amx_status(void) { /* (read by the CPU backend's report) */
  moec_amx_on();
  return g_amx_why;
}

/* the palette-1 configuration for a block of h0 (1-16) + h1 (0-16) rows: C tiles 16 columns of 4 bytes, A tiles
 * 64 bytes (16 pairs / 16 quads), B tiles 16 rows of 64 bytes; loaded when the thread's differs */
static void amx_config(int h0, int h1);
static void amx_config_rows(int mb) { amx_config(mb < 16 ? mb : 16, mb < 16 ? 0 : mb - 16); }
static void amx_config(int h0, int h1) {
  uint8_t cfg[64], cur[64];
  memset(cfg, 0, sizeof cfg);
  cfg[0] = 1;
  const int rows[8] = {h0, h0, h1, h1, h0, h1, 16, 16};
  for (int t = 0; t < 8; t++) {
    cfg[48 + t] = (uint8_t)rows[t];
    cfg[16 + 2 * t] = rows[t] ? 64 : 0;
  }
  _tile_storeconfig(cur);
  AMX_BARRIER();
  if (memcmp(cur, cfg, 64)) _tile_loadconfig(cfg);
}

/* ---- bf16: TDPBF16PS on pair panels ---- */
static inline __attribute__((always_inline)) void bf16_step(const int TWO, const int H1, const uint32_t *a0, const uint32_t *a1,
                                                            int64_t sa, const uint32_t *b, int64_t sb) {
  _tile_loadd(6, b, sb);
  if (TWO) _tile_loadd(7, b + 16, sb);
  _tile_loadd(4, a0, sa);
  _tile_dpbf16ps(0, 4, 6);
  if (TWO) _tile_dpbf16ps(1, 4, 7);
  if (H1) {
    _tile_loadd(5, a1, sa);
    _tile_dpbf16ps(2, 5, 6);
    if (TWO) _tile_dpbf16ps(3, 5, 7);
  }
}
/* tmp[0..mb)[0..16 or 32) = rows of A (lda pairs apart) times the panel, over P pairs (a group: A and Bp start at its
 * first pair); the caller has configured the tiles for mb rows (amx_config_rows) */
static inline __attribute__((always_inline)) void bf16_block(const int TWO, const int H1, const uint32_t *A, int64_t lda,
                                                             int64_t P, int mb, const uint32_t *Bp, float (*tmp)[PNR]) {
  _tile_zero(0);
  if (TWO) _tile_zero(1);
  if (H1) {
    _tile_zero(2);
    if (TWO) _tile_zero(3);
  }
  const int64_t pf = P / 16 * 16;
  for (int64_t p = 0; p < pf; p += 16) bf16_step(TWO, H1, A + p, A + 16 * lda + p, lda * 4, Bp + p * PNR, PNR * 4);
  if (pf < P) { /* the last P - pf pairs, zero-padded to 16 (zero pairs add nothing) */
    uint32_t at[32][16], bt[16][PNR];
    memset(at, 0, sizeof at);
    memset(bt, 0, sizeof bt);
    for (int r = 0; r < mb; r++) memcpy(at[r], A + r * lda + pf, sizeof(uint32_t) * (size_t)(P - pf));
    memcpy(bt, Bp + pf * PNR, sizeof(uint32_t) * PNR * (size_t)(P - pf));
    AMX_BARRIER();
    bf16_step(TWO, H1, at[0], at[16], 64, bt[0], PNR * 4);
    AMX_BARRIER(); /* (at, bt are read before their storage is reused) */
  }
  _tile_stored(0, tmp[0], PNR * 4);
  if (TWO) _tile_stored(1, tmp[0] + 16, PNR * 4);
  if (H1) {
    _tile_stored(2, tmp[16], PNR * 4);
    if (TWO) _tile_stored(3, tmp[16] + 16, PNR * 4);
  }
}
static void bf16_any(int64_t nb, int mb, const uint32_t *A, int64_t lda, int64_t P, const uint32_t *Bp, float (*tmp)[PNR]) {
  if (nb > 16) {
    if (mb > 16) bf16_block(1, 1, A, lda, P, mb, Bp, tmp);
    else bf16_block(1, 0, A, lda, P, mb, Bp, tmp);
  } else {
    if (mb > 16) bf16_block(0, 1, A, lda, P, mb, Bp, tmp);
    else bf16_block(0, 0, A, lda, P, mb, Bp, tmp);
  }
}
void moec_amx_bf16(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, float *C, int64_t ldc, int64_t nb) {
  float tmp[32][PNR];
  for (int r0 = 0; r0 < m; r0 += 32) {
    const int mb = m - r0 < 32 ? m - r0 : 32;
    const uint32_t *Ar = A + r0 * P;
    amx_config_rows(mb);
    bf16_any(nb, mb, Ar, P, P, Bp, tmp);
    for (int r = 0; r < mb; r++) memcpy(C + (r0 + r) * ldc, tmp[r], sizeof(float) * (size_t)nb);
  }
}
/* tile_bf16_gs's contract: C = sum over groups of pg pairs of (the group's f32 sum) times its column scales
 * (gs + g * 2 PNR); per group the C tiles restart, are stored and scaled into f32 totals */
void moec_amx_bf16_gs(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, const float *gs, int64_t pg, float *C,
                      int64_t ldc, int64_t nb) {
  float tmp[32][PNR], tot[32][PNR];
  const int w = nb > 16 ? PNR : 16; /* the columns the tiles computed */
  for (int r0 = 0; r0 < m; r0 += 32) {
    const int mb = m - r0 < 32 ? m - r0 : 32;
    const uint32_t *Ar = A + r0 * P;
    for (int r = 0; r < mb; r++)
      for (int j = 0; j < PNR; j++) tot[r][j] = 0.f;
    amx_config_rows(mb); /* (once for all the groups) */
    for (int64_t p0 = 0; p0 < P; p0 += pg) {
      const int64_t n = P - p0 < pg ? P - p0 : pg;
      bf16_any(nb, mb, Ar + p0, P, n, Bp + p0 * PNR, tmp);
      const float *s = gs + (p0 / pg) * 2 * PNR;
      for (int r = 0; r < mb; r++)
        for (int j = 0; j < w; j++) tot[r][j] += tmp[r][j] * s[j];
    }
    for (int r = 0; r < mb; r++) memcpy(C + (r0 + r) * ldc, tot[r], sizeof(float) * (size_t)nb);
  }
}

/* ---- int8: TDPBUSD (u8 activations x s8 weights) on quad panels, tile_i8's epilogue ---- */
static inline __attribute__((always_inline)) void i8_step(const int TWO, const int H1, const uint8_t *a0, const uint8_t *a1,
                                                          int64_t sa, const int8_t *b, int64_t sb) {
  _tile_loadd(6, b, sb);
  if (TWO) _tile_loadd(7, b + 64, sb);
  _tile_loadd(4, a0, sa);
  _tile_dpbusd(0, 4, 6);
  if (TWO) _tile_dpbusd(1, 4, 7);
  if (H1) {
    _tile_loadd(5, a1, sa);
    _tile_dpbusd(2, 5, 6);
    if (TWO) _tile_dpbusd(3, 5, 7);
  }
}
static inline __attribute__((always_inline)) void i8_block(const int TWO, const int H1, const uint8_t *A, int64_t lda, int mb,
                                                           const int8_t *Bp, int64_t P, int32_t (*res)[PNR]) {
  amx_config_rows(mb);
  _tile_zero(0);
  if (TWO) _tile_zero(1);
  if (H1) {
    _tile_zero(2);
    if (TWO) _tile_zero(3);
  }
  const int64_t pf = P / 16 * 16;
  for (int64_t p = 0; p < pf; p += 16) i8_step(TWO, H1, A + 4 * p, A + 16 * lda + 4 * p, lda, Bp + p * PNR * 4, PNR * 4);
  if (pf < P) { /* the last P - pf quads, zero-padded to 16 */
    uint8_t at[32][64];
    int8_t bt[16][PNR * 4];
    memset(at, 0, sizeof at);
    memset(bt, 0, sizeof bt);
    for (int r = 0; r < mb; r++) memcpy(at[r], A + r * lda + 4 * pf, (size_t)(4 * (P - pf)));
    memcpy(bt, Bp + pf * PNR * 4, (size_t)(PNR * 4 * (P - pf)));
    AMX_BARRIER();
    i8_step(TWO, H1, at[0], at[16], 64, bt[0], PNR * 4);
    AMX_BARRIER();
  }
  _tile_stored(0, res[0], PNR * 4);
  if (TWO) _tile_stored(1, res[0] + 16, PNR * 4);
  if (H1) {
    _tile_stored(2, res[16], PNR * 4);
    if (TWO) _tile_stored(3, res[16] + 16, PNR * 4);
  }
}
void moec_amx_i8(const uint8_t *A, int64_t lda, int m, const int8_t *Bp, int64_t K, const float *xs, const float *ws,
                 float *C, int64_t ldc, int64_t nb) {
  const int64_t P = (K + 3) / 4; /* quads: KP4(K) / 4 */
  const int32_t *cs = (const int32_t *)(const void *)(Bp + P * PNR * 4);
  int32_t res[32][PNR];
  for (int r0 = 0; r0 < m; r0 += 32) {
    const int mb = m - r0 < 32 ? m - r0 : 32;
    const uint8_t *Ar = A + r0 * lda;
    if (nb > 16) {
      if (mb > 16) i8_block(1, 1, Ar, lda, mb, Bp, P, res);
      else i8_block(1, 0, Ar, lda, mb, Bp, P, res);
    } else {
      if (mb > 16) i8_block(0, 1, Ar, lda, mb, Bp, P, res);
      else i8_block(0, 0, Ar, lda, mb, Bp, P, res);
    }
    /* tile_i8's epilogue, the same expression (so the same floats) */
    for (int r = 0; r < mb; r++)
      for (int64_t j = 0; j < nb; j++)
        C[(r0 + r) * ldc + j] = (float)(res[r][j] - 128 * cs[j]) * (xs[r0 + r] * ws[j]);
  }
}

#else /* no AMX in this build: never called (the AMX_* macros of rt_amx.h are constants) */
int moec_amx_on(void) { return 0; }
const char *moec_amx_status(void) { return "off: not built for AMX (the build host has none)"; }
void moec_amx_bf16(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, float *C, int64_t ldc, int64_t nb) { abort(); }
void moec_amx_bf16_gs(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, const float *gs, int64_t pg, float *C,
                      int64_t ldc, int64_t nb) {
  abort();
}
void moec_amx_i8(const uint8_t *A, int64_t lda, int m, const int8_t *Bp, int64_t K, const float *xs, const float *ws,
                 float *C, int64_t ldc, int64_t nb) {
  abort();
}
#endif

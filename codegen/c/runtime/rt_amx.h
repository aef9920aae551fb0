/* AMX (Intel Advanced Matrix Extensions) micro-kernels for the bf16 and w8a8 GEMMs, chosen at build time.
 *
 * Built only where the build host has AMX (targets/description.py passes -mamx-tile -mamx-bf16 -mamx-int8
 * -DMOEC_HAVE_AMX); everywhere else the AMX_* macros below are constants and the AVX-512 / portable kernels
 * of rt_moe_f32.c run as before.  At run time the tile state is requested from the kernel once per process
 * (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) and the CPU's cpuid is checked; if either says no, or
 * MOEC_AMX=0 is set, moec_amx_on() is 0 and the AVX-512 kernels run (moec_amx_status() says why).
 *
 * The kernels have the contracts of the kernels they replace (rt_moe_f32.c) and read the same panels, which
 * are already AMX's B layout: a bf16 pair panel [P][32] x uint32 (P = ceil(K/2)) is two B tiles side by side
 * (16 rows of 16 columns x one bf16 pair, 128 bytes apart); an int8 quad panel [KP4(K)/4][32][4] likewise
 * (16 columns x 4 int8 of consecutive k), its column sums after it.
 *
 *   moec_amx_bf16: C[m x nb] = A . B, A rows of P bf16 pairs (uint32, P apart), f32 results   (tile_bf16)
 *   moec_amx_bf16_gs: the same per group of pg pairs, each group's f32 sum times its column scales
 *                  (gs + g * 2 * 32), the products summed in f32 totals                      (tile_bf16_gs)
 *   moec_amx_i8:   C[r][j] = (sum_k A[r][k] B[k][j] - 128 colsum[j]) * xs[r] * ws[j], A biased u8 codes
 *                  (lda apart, KP4(K) of them per row), exact int32 sums                         (tile_i8)
 *
 * Any m >= 1 (blocks of 32 rows: 2 x 2 tiles of 16 x 16 in C), nb <= 32; rows and K beyond whole tiles by the
 * tile configuration's rows and a zero-padded copy of the K tail: nothing outside A, B or C is read or written.
 * Numerics: TDPBF16PS's products of bf16 values are exact in f32 and summed in f32 (RNE; denormal inputs as
 * zero, denormal results flushed), as vdpbf16ps, in another order; TDPBUSD's int32 sums are exact, so moec_amx_i8
 * gives tile_i8's results bit for bit.
 *
 * -DMOEC_AMX_EMULATE (tests only, with MOEC_HAVE_AMX) builds the same source against rt_amx_emu.h, a software
 * model of the tile registers and instructions, so the kernels run on hosts without AMX. */
#ifndef MOEC_RT_AMX_H
#define MOEC_RT_AMX_H
#include <stdint.h>

#define AMX_MR 32       /* rows per call where AMX runs (2 x 16-row tiles) */
#define AMX_MIN_ROWS 3  /* below this (decode's one or two rows) the AVX-512 GEMV-like kernels stream the panel */

int moec_amx_on(void);            /* 1 when the AMX kernels run in this process */
const char *moec_amx_status(void); /* one line: "on", or why not */
void moec_amx_bf16(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, float *C, int64_t ldc, int64_t nb);
void moec_amx_bf16_gs(const uint32_t *A, int64_t P, int m, const uint32_t *Bp, const float *gs, int64_t pg, float *C,
                      int64_t ldc, int64_t nb);
void moec_amx_i8(const uint8_t *A, int64_t lda, int m, const int8_t *Bp, int64_t K, const float *xs, const float *ws,
                 float *C, int64_t ldc, int64_t nb);

#ifdef MOEC_HAVE_AMX
/* at a call site of tile_bf16_f / tile_wq_bf16 / tile_i8: the rows to hand each call, and the AMX call where it applies
 * (an expression: 1 when it ran, 0 when the caller's kernel must) */
#define AMX_ROWS(mr) (moec_amx_on() ? AMX_MR : (mr))
#define AMX_WANTS(m) ((m) >= AMX_MIN_ROWS && moec_amx_on()) /* the AMX_* calls below take m rows */
#define AMX_BF16(A, P, m, Bp, C, ldc, nb) \
  ((m) >= AMX_MIN_ROWS && moec_amx_on() ? (moec_amx_bf16(A, P, m, Bp, C, ldc, nb), 1) : 0)
#define AMX_I8(A, lda, m, Bp, K, xs, ws, C, ldc, nb) \
  ((m) >= AMX_MIN_ROWS && moec_amx_on() ? (moec_amx_i8(A, lda, m, Bp, K, xs, ws, C, ldc, nb), 1) : 0)
#define AMX_BF16_GS(A, P, m, Bp, gs, pg, C, ldc, nb) \
  ((m) >= AMX_MIN_ROWS && moec_amx_on() ? (moec_amx_bf16_gs(A, P, m, Bp, gs, pg, C, ldc, nb), 1) : 0)
#else
#define AMX_BF16_GS(A, P, m, Bp, gs, pg, C, ldc, nb) 0
#define AMX_ROWS(mr) (mr)
#define AMX_WANTS(m) 0
#define AMX_BF16(A, P, m, Bp, C, ldc, nb) 0
#define AMX_I8(A, lda, m, Bp, K, xs, ws, C, ldc, nb) 0
#endif
/* a call site's one change: AMX_I8_OR(tile_i8, args) runs AMX where it applies, else tile_i8(args), with the
 * fallback's own further arguments after nb (tile_i8_pf's prefetch); the bf16 call sites test AMX_BF16 /
 * AMX_BF16_GS themselves (their fallback kernels take the f32 rows too) */
#define AMX_I8_OR(fallback, A, lda, m, Bp, K, xs, ws, C, ldc, nb, ...) \
  do { if (!AMX_I8(A, lda, m, Bp, K, xs, ws, C, ldc, nb)) fallback(A, lda, m, Bp, K, xs, ws, C, ldc, nb, ##__VA_ARGS__); } while (0)
#endif

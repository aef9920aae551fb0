/* Matrix products. */
#ifndef MOEC_RT_LINALG_H
#define MOEC_RT_LINALG_H
#include "moec_rt.h"

/* numpy.matmul semantics (1-D promotion, broadcast batch dims). */
int moec_k_matmul(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, moec_tensor *out);


/* The f32 GEMM core (rt_gemm_f32.c): C[m*ldc + n] = alpha * sum_k A[m*sam + k*sak] * B(k, n)
 * (+ beta * c[m*scm + n*scn] when c is not NULL).  B(k, n) is Bp's packed panels when Bp is not NULL
 * ([ceil(N/NR)][K][NR] floats, NR = moec_sgemm_panel_width(), the last panel zero-padded), else
 * B[k*sbk + n*sbn]. */
typedef struct {
  int64_t M, N, K;
  const float *A;
  int64_t sam, sak;
  const float *B;
  int64_t sbk, sbn;
  const float *Bp;
  float *C;
  int64_t ldc;
  const float *c;
  int64_t scm, scn;
  float alpha, beta;
  int act; /* moec.linear's activation, applied as the last slice of a tile is stored (0: none) */
} moec_sgemm;
int moec_sgemm_panel_width(void);
/* nbatch products: batch i reads A + aoff[i], B + boff[i] (NULL: offsets 0) and writes C + i * cstride */
int moec_sgemm_run(moec_ctx *ctx, const moec_sgemm *g, int64_t nbatch, const int64_t *aoff, const int64_t *boff,
                    int64_t cstride);

/* a (f32, [..., K]) @ w (f32 [K, N], a constant) with w also given as compile-time packed panels
 * wp ([ceil(N/nr), K, nr]): the leading dims of a are rows of one GEMM. */
int moec_k_matmul_packed(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *w, const moec_tensor *wp, int nr,
                         moec_tensor *out);
/* moec.linear: act(x [..., K] @ w [K, N] + c), c a bias (leading dims 1) or a residual (the result's leading
 * dims), its last dim N or 1; added in the GEMM's epilogue.  wp: w's packed panels, or NULL (plain matmul,
 * then the addition) */
int moec_k_linear(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w, const moec_tensor *c,
                  const moec_tensor *wp, int nr, int act, moec_tensor *out);
/* the activations of moec.linear's epilogue (codes: ir/ops/linalg.py LINEAR_ACTIVATIONS) */
enum { MOEC_LACT_NONE, MOEC_LACT_RELU, MOEC_LACT_SILU, MOEC_LACT_GELU, MOEC_LACT_GELU_TANH };
void moec_linear_act_row(float *y, int64_t n, int act);
/* Gemm with op(b) (a constant, [K, N] after the transpose) given as packed panels bp */
int moec_k_gemm_packed(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, const moec_tensor *c, double alpha,
                       double beta, int trans_a, int trans_b, const moec_tensor *bp, int nr, moec_tensor *out);

/* alpha * op(a) @ op(b) + beta * c (c may be NULL; broadcast to [M, N]) */
int moec_k_gemm(moec_ctx *ctx, const moec_tensor *a, const moec_tensor *b, const moec_tensor *c, double alpha,
                double beta, int trans_a, int trans_b, moec_tensor *out);
/* einsum over n operands: labels[] holds each operand's label ids (ranks[i] of them, concatenated),
 * out_labels the output's; label ids are in [0, n_labels) */
int moec_k_einsum(moec_ctx *ctx, const moec_tensor *const *xs, int n, const int64_t *labels, const int64_t *ranks,
                  const int64_t *out_labels, int n_out, int n_labels, moec_tensor *out);
#endif

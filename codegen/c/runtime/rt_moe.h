/* MoE kernels (portable reference-grade versions; the fast generated kernels replace them per layer). */
#ifndef MOEC_RT_MOE_H
#define MOEC_RT_MOE_H
#include "moec_rt.h"

enum moec_moe_scoring { MOEC_SCORE_SOFTMAX = 0, MOEC_SCORE_SIGMOID = 1, MOEC_SCORE_NONE = 2 };
enum moec_moe_post { MOEC_POST_NONE = 0, MOEC_POST_SOFTMAX = 1, MOEC_POST_SIGMOID = 2, MOEC_POST_SPARSEMIXER = 3 };
enum moec_moe_norm { MOEC_NORM_NONE = 0, MOEC_NORM_SUM = 1, MOEC_NORM_L1 = 2 };
enum moec_moe_act {
  MOEC_ACT_SWIGLU = 0, MOEC_ACT_GELU = 1, MOEC_ACT_GELU_TANH = 2, MOEC_ACT_RELU = 3, MOEC_ACT_SILU = 4,
  MOEC_ACT_IDENTITY = 5, MOEC_ACT_RELU2 = 6, MOEC_ACT_GEGLU = 7, MOEC_ACT_GEGLU_TANH = 8, MOEC_ACT_SOFTCAP_SWIGLU = 9
};
/* gated activations read w_in rows [G; U] (2F rows): swiglu, geglu (gelu(G) U), softcap_swiglu */
#define MOEC_ACT_GATED(a) ((a) == MOEC_ACT_SWIGLU || (a) == MOEC_ACT_GEGLU || (a) == MOEC_ACT_GEGLU_TANH || \
                           (a) == MOEC_ACT_SOFTCAP_SWIGLU)

typedef struct moec_route_params {
  int64_t k, n_group, topk_group, capacity;
  int scoring, group_top2_sum, post, norm;
  double norm_eps, scale;
  int tie_high;       /* expert selection ties: 0 lowest index first, 1 highest */
  int drop;           /* 1: a slot whose weight is not > min_weight (NaN too) gets id -1, weight 0 */
  double min_weight;
  double jitter_eps;  /* post sparsemixer (PhiMoE): slot j keeps the scores within 2 eps of its own */
  double norm_min;    /* the renormalisation's denominator is at least this */
  double group_fill;  /* group-limited: the selection score of experts in groups not kept (-inf) */
  int64_t n_shared;   /* the last n_shared logit columns: always-on experts, slots k..k+n_shared-1 (Inkling) */
  int64_t n_skip;     /* the last n_skip logit columns: skip classes, a slot choosing one gets id -1, weight 0 (Zaya) */
} moec_route_params;

typedef struct moec_ffn_params {
  int act, interleaved;
  double alpha, beta, limit;
  double gate_cap, up_cap; /* softcap_swiglu: cg tanh(G / cg) sigmoid(G) cu tanh(U / cu) */
  int post_norm;            /* moe.experts: each slot's output v -> v / sqrt(mean(v^2) + post_norm_eps) (Muse Spark) */
  double post_norm_eps;
} moec_ffn_params;

/* quantised expert weights (see moe.experts in ir/ops/moe.py): mode 0 none (as x), 1 bf16, 2 int8 per
 * output channel (s [E, N]), 3 int4 packed two per byte, low nibble first (s, z [E, N, K/group];
 * z NULL: symmetric, zero point 8; group 0: whole row); aq below */
enum moec_wq_mode { MOEC_WQ_NONE = 0, MOEC_WQ_BF16 = 1, MOEC_WQ_INT8 = 2, MOEC_WQ_INT4 = 3 };
typedef struct moec_wq {
  int mode;
  int64_t group;
  const moec_tensor *s_in, *s_out, *z_in, *z_out;
  int aq; /* 1: dynamic per-token int8 activations (w8a8 with int8 weights, w4a8 with int4): each GEMM
           * input row is quantised symmetrically (s = max|row| / 127, q = rint(row / s); w4a8: per row
           * and int4 group, s = max|group| / 127) and the dot products are exact int32 sums (per group
           * for w4a8; VNNI vpdpbusd where present); 2 (int8_bf16 / int4_bf16): each GEMM input rounded to
           * bf16 (nearest even), the int8 codes / int4 q - z exact as bf16, products exact, f32 sums per
           * scale group (int8: the row), each group's sum times its scale (tile_bf16 on pair panels
           * dequantised per work item; the quantised GEMVs at one or two rows) */
  /* the weights' panels packed at compile time (codegen/c/gemm_pack.py, the layouts of ir/weight_layouts.py), read
   * where they lie: bf16 (mode 1) pair panels [E, ceil(N/MOEC_PAIR_NR), ceil(K/2), MOEC_PAIR_NR, 2] bf16; f32
   * experts (mode 0) k-panels [E, ceil(N/MOEC_KPANEL_NR), K, MOEC_KPANEL_NR] f32; w8a8 (mode 2, aq 1) int8 panels
   * [E, ceil(N/MOEC_I8PANEL_NR), panel bytes] u8.  NULL: none (bf16: the kernels pack per work item; f32, w8a8:
   * the plain weights, panels cached at run time) */
  const moec_tensor *pk_in, *pk_out;
  /* w4a8 (mode 3, aq 1): pk_in / pk_out the nibble panels [E, ceil(N/MOEC_W4A8_NR), K/G, G4/4, 64] u8, these the
   * scales and zero points group-major [E, ceil(N/MOEC_W4A8_NR), K/G, MOEC_W4A8_NR] f32 (all NULL: packed per
   * work item) */
  const moec_tensor *pks_in, *pks_out, *pkz_in, *pkz_out;
} moec_wq;
/* the pair panels' column width and the layout's version (the packer's: ir/weight_layouts.py; the generated
 * code stops the build when they differ) */
#define MOEC_PAIR_NR 32
#define MOEC_PAIR_LAYOUT_VERSION 1
#define MOEC_KPANEL_NR 32
#define MOEC_KPANEL_LAYOUT_VERSION 1
#define MOEC_I8PANEL_NR 32
#define MOEC_I8PANEL_LAYOUT_VERSION 1
#define MOEC_W4A8_NR 32
#define MOEC_W4A8_LAYOUT_VERSION 1

int moec_k_moe_route(moec_ctx *ctx, const moec_tensor *logits, const moec_tensor *bias, moec_tensor *weights,
                     moec_tensor *ids, const moec_route_params *p);
int moec_k_moe_dispatch(moec_ctx *ctx, const moec_tensor *ids, moec_tensor *order, moec_tensor *offsets,
                        int64_t num_experts, int64_t block);
/* b_in, b_out, rw, pn_w may be NULL; weights_at: 0 none, 1 input, 2 output; pn_w [E, D]: the post-expert
 * RMSNorm's per-expert weight (with p->post_norm) */
int moec_k_moe_experts(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *ids, const moec_tensor *order,
                       const moec_tensor *offsets, const moec_tensor *w_in, const moec_tensor *w_out,
                       const moec_tensor *b_in, const moec_tensor *b_out, const moec_tensor *rw, int weights_at,
                       const moec_ffn_params *p, const moec_wq *q, const moec_tensor *pn_w, moec_tensor *y);
/* the f32-activation packed-GEMM path (any weight mode); returns 1 when it does not apply */
int moec_moe_experts_f32(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *ids, const moec_tensor *order,
                         const moec_tensor *offsets, const moec_tensor *w_in, const moec_tensor *w_out,
                         const moec_tensor *b_in, const moec_tensor *b_out, const moec_tensor *rw, int weights_at,
                         const moec_ffn_params *p, const moec_wq *q, moec_tensor *y);
/* a dense linear layer with quantised weights (moec.linear_q): y[..., N] = x[..., K] . deq(w)[N, K]^T
 * (+ bias [N]); the formats of moec_wq (scales and zero points in s_in / z_in); bias may be NULL */
int moec_k_linear_q(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w, const moec_tensor *bias,
                    const moec_wq *q, moec_tensor *y);
int moec_k_moe_shared(moec_ctx *ctx, const moec_tensor *x, const moec_tensor *w_in, const moec_tensor *w_out,
                      const moec_tensor *gate, const moec_ffn_params *p, moec_tensor *y);
/* shared, px (x) and pids (ids) may be NULL */
int moec_k_moe_combine(moec_ctx *ctx, const moec_tensor *y, const moec_tensor *w, const moec_tensor *shared,
                       const moec_tensor *px, const moec_tensor *pids, int weighted, moec_tensor *out);
#endif

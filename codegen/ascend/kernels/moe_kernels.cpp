// moec AscendC kernels for MoE layers (vector cores, AIV), mirroring CANN's decomposition:
//   moe_gating        scores (softmax / sigmoid), selection bias, group-limited top-k, renorm, scaling
//   moe_init_routing  stable sort of the (expert, slot) pairs, per-expert offsets (the group list), drops
//   moe_gather_rows   expanded rows in expert order, cast to the GEMM input type    (MoeInitRouting's x)
//   moe_activation    SwiGLU/GELU/... between the two grouped matmuls, biases, int8 scales, cast
//                     (w8a8: the int32 sums times the row and channel scales first)
//   moe_scatter_rows  the down projection's rows back to their slots, bias, scales, routing weight
//                     (w8a8: likewise from int32 sums)
//   moe_dequant_int8  int8 expert weights widened to the cube's type (f32, or the model's bf16/half) for the
//                     cube (experts that received rows only; the scales come after the dot products)
//   moe_dequant_int4  int4 expert weights (two codes a byte, per-group scales and zero points) dequantised to
//                     the cube's type (f32, or the model's bf16/half)
//   moe_quant_rows_int8  w8a8: each GEMM input row quantised to int8 with its scale max|row| / 127
//   moe_finalize      weighted sum of the k slots + shared experts (+ gate), Switch pass-through
//   matmul_rows       out[r, n] = a[r, :] . bT[n, :] as vector dot products: only for matmuls the cube
//                     path cannot tile (a reduction longer than Nd2Nz's 65535-element rows)
// The grouped matmuls themselves (expert FFN projections, router and other constant-weight matmuls) run
// on the cube cores: cube_kernels.cpp.  Cube results reach these kernels through GM workspace (910B's
// AIC and AIV cores are separate).  Shapes that vary per call (tokens) travel in the tiling struct;
// blocks split rows round-robin; copies use TQue double buffering (num 2); all GM<->UB moves of rows use
// DataCopyPad (any length).
// Data types (t.xdt): the activations, routing weights, biases and outputs in GM are float (f32 models) or
// half (f16 models); the vector cores always compute in float in the Unified Buffer: half rows are widened
// by Cast after the copy in (exact) and rounded by Cast (nearest, ties to even) before the copy out.  The
// cube's outputs (h, yo) are float whatever the model's type (f32 accumulation); the GEMM inputs written
// by gather/activation are float, bfloat16_t or half (t.adt).
#include "kernel_operator.h"
using namespace AscendC;

#include "moec_kernel_common.h"

struct MoeTiling {
  int32_t T, D, E, K, F, I;
  int32_t scoring, n_group, topk_group, group_top2, post, norm, capacity, has_bias;
  float norm_eps, scale;
  int32_t act, interleaved, clamp, weights_at, has_b_in, has_b_out;
  float alpha, beta, limit;
  int32_t kt;          // reduction tile (elements) of the streamed weight rows
  int32_t shared;      // moe_expert_ffn: 1 = every token through each of the E (shared) experts
  int32_t weighted, has_shared, passthrough, has_gate;
  int32_t M, N, Kd;    // matmul_rows
  int32_t rows;        // FFN row kernels: rows sorted by expert (offsets[E]), or T*E for shared experts
  int32_t adt;         // GEMM input type written by gather/activation: 0 float, 1 bfloat16_t, 2 half
  int32_t chunk;       // columns per UB chunk
  int32_t qscale;      // int8 weights: per-output-channel scales applied after the cube's dot products
  int32_t xdt;         // GM type of x, logits, routing weights, biases, y and out: 0 float, 1 bfloat16_t, 2 half
  int32_t ydt;         // moe_finalize: type of y (the experts' rows): 0 float (shared experts), else as xdt
  int32_t aq;          // w8a8: the cube's outputs (h, yo) are int32 sums, scaled by the row scales s_row
  int32_t tie_high;    // moe_gating: selection ties -> highest index first (else lowest)
  int32_t drop;        // moe_gating: a slot whose weight is not > min_weight (NaN too) -> id -1, weight 0
  float min_weight;
  float jitter_eps;    // moe_gating, post 3 (sparsemixer): slot j keeps the scores within 2 eps of its own
  float norm_min;      // moe_gating: the renormalisation's denominator is at least this
  float group_fill;    // moe_gating: selection score of the experts in groups not kept (-inf)
  int32_t wgroup;      // moe_dequant_int4: elements per scale group along K (a divisor of Kd)
  int32_t zp;          // moe_dequant_int4: 1 = per-group zero points (f32), else the implicit 8
  int32_t bias_f32;    // moe_gating: the selection bias is float whatever the logits' type (bf16/f16 models
                       // that keep DeepSeek's e_score_correction_bias in f32)
  int32_t n_skip;      // moe_gating: the last n_skip of the E classes are skip classes (Zaya): a slot that chose one
                       // -> id -1, weight 0
  int32_t n_shared;    // moe_gating: the last n_shared of the E logit columns are always-on experts (Inkling): never
                       // selected, every token's slots K..K+n_shared-1 (their scores), in post / norm / scale / drop
  int32_t seq;         // moe_init_routing, capacity: tokens per sequence, each counting its own capacity (0: all)
};


// ------------------------------------------------------------------------------------------------
// logits, bias and the weights out in TX (float or half); scores, selection and weights computed in float
template <typename TX>
__aicore__ inline void gating_body(GM_ADDR logits, GM_ADDR bias, GM_ADDR w_out, GM_ADDR ids_out, const MoeTiling &t) {
  // E logit columns: the first ES selectable, the last n_shared always-on; KW = K + n_shared weights per token
  const uint32_t E = t.E, K = t.K, EP = pad8(E), NS = (uint32_t)t.n_shared, ES = E - NS, KW = K + NS,
                 KP = pad8(KW);
  GlobalTensor<TX> gl, gb, gw;
  GlobalTensor<int32_t> gi;
  gl.SetGlobalBuffer((__gm__ TX *)logits, (uint64_t)t.T * E);
  gw.SetGlobalBuffer((__gm__ TX *)w_out, (uint64_t)t.T * KW);
  gi.SetGlobalBuffer((__gm__ int32_t *)ids_out, (uint64_t)t.T * KW);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qw, qi;
  TBuf<TPosition::VECCALC> bs, bc, bwork, bbias, bxf, bwf;
  pipe.InitBuffer(qin, 2, bytes32(E * sizeof(TX)));
  pipe.InitBuffer(qw, 2, bytes32(KW * sizeof(TX)));
  pipe.InitBuffer(qi, 2, KP * 4);
  pipe.InitBuffer(bs, EP * 4);
  pipe.InitBuffer(bc, EP * 4);
  pipe.InitBuffer(bwork, EP * 4 + 64);
  pipe.InitBuffer(bbias, EP * 4);
  if constexpr (!moec_same<TX, float>::value) {  // the float logits and weights of a half row
    pipe.InitBuffer(bxf, EP * 4);
    pipe.InitBuffer(bwf, KP * 4);
  }
  LocalTensor<float> s = bs.Get<float>(), c = bc.Get<float>(), work = bwork.Get<float>(), vb = bbias.Get<float>();
  DataCopyPadExtParams<TX> nopad{false, 0, 0, (TX)0.f};
  if (t.has_bias) {
    gb.SetGlobalBuffer((__gm__ TX *)bias, ES);  // (the selectable experts' only)
    if (moec_same<TX, float>::value || t.bias_f32) {
      GlobalTensor<float> gbf;
      gbf.SetGlobalBuffer((__gm__ float *)bias, ES);
      DataCopyPad(vb, gbf, DataCopyExtParams{1, ES * 4, 0, 0, 0}, DataCopyPadExtParams<float>{false, 0, 0, 0.f});
    } else {  // a half bias goes through c (scratch until the first token) and is widened into vb
      LocalTensor<TX> bl = bc.Get<TX>();
      DataCopyPad(bl, gb, DataCopyExtParams{1, (uint32_t)(ES * sizeof(TX)), 0, 0, 0}, nopad);
      moec_sync<HardEvent::MTE2_V>();
      widen(bl, vb, ES);
    }
    moec_sync<HardEvent::MTE2_V>();  // vb (float) or bl's copy in before the vector unit reads them
  }
  for (int64_t tok = GetBlockIdx(); tok < t.T; tok += GetBlockNum()) {
    LocalTensor<TX> xq = qin.AllocTensor<TX>();
    DataCopyPad(xq, gl[tok * E], DataCopyExtParams{1, (uint32_t)(E * sizeof(TX)), 0, 0, 0}, nopad);
    qin.EnQue(xq);
    xq = qin.DeQue<TX>();
    LocalTensor<float> x;
    if constexpr (moec_same<TX, float>::value) x = xq;
    else x = widen(xq, bxf.Get<float>(), E);
    if (t.scoring == 0) {  // softmax
      ReduceMax(work, x, c, E);
      moec_sync<HardEvent::V_S>();  // the scalar unit reads the vector unit's result
      float m = work.GetValue(0);
      Adds(s, x, -m, E);
      Exp(s, s, E);
      ReduceSum(work, s, c, E);
      moec_sync<HardEvent::V_S>();
      Muls(s, s, 1.0f / work.GetValue(0), E);
    } else if (t.scoring == 1) {  // sigmoid = 1 / (1 + exp(-x))
      Muls(s, x, -1.0f, E);
      Exp(s, s, E);
      Adds(s, s, 1.0f, E);
      Reciprocal(s, s, E);
    } else {
      Adds(s, x, 0.0f, E);
    }
    qin.FreeTensor(xq);
    if (t.has_bias) Add(c, s, vb, ES); else Adds(c, s, 0.0f, ES);  // selection scores of the selectable experts
    moec_sync<HardEvent::V_S>();  // the selection below reads c and s with the scalar unit
    // group-limited selection (scalar: E <= a few hundred)
    const float NEG = -3.0e38f;
    if (t.n_group > 1) {
      uint32_t gs = ES / t.n_group;
      uint32_t keep = 0;  // bitmask of kept groups (n_group <= 32)
      for (int32_t r = 0; r < t.topk_group; r++) {
        float best = NEG * 2;
        int32_t bi = -1;
        for (int32_t g = 0; g < t.n_group; g++) {
          if (keep & (1u << g)) continue;
          float m1 = NEG * 2, m2 = NEG * 2;
          for (uint32_t j = 0; j < gs; j++) {
            float v = c.GetValue(g * gs + j);
            if (v > m1) { m2 = m1; m1 = v; } else if (v > m2) { m2 = v; }
          }
          float score = t.group_top2 ? m1 + m2 : m1;
          if (score > best) { best = score; bi = g; }
        }
        keep |= 1u << bi;
      }
      for (uint32_t e = 0; e < ES; e++)
        if (!(keep & (1u << (e / gs)))) c.SetValue(e, t.group_fill);
    }
    LocalTensor<TX> wq = qw.AllocTensor<TX>();
    LocalTensor<float> wv;
    if constexpr (moec_same<TX, float>::value) wv = wq;
    else wv = bwf.Get<float>();
    LocalTensor<int32_t> iv = qi.AllocTensor<int32_t>();
    moec_sync<HardEvent::MTE3_S>();  // the scalar unit rewrites wv/iv after their last copy out
    float sum = 0.f, asum = 0.f;
    for (uint32_t j = 0; j < K; j++) {  // top-k, ties -> lowest index (tie_high: highest); NaN last
      // (chosen entries are looked up in iv, not marked in c: a marker value would tie with -Inf
      // scores, and -Inf scores, from -Inf logits or masked groups, are valid choices after the rest)
      float best = 0.f;
      int32_t bi = -1;
      for (int pass = 0; pass < 2 && bi < 0; pass++) {  // pass 1: only NaN left, in the tie order
        for (uint32_t e = 0; e < ES; e++) {
          bool taken = false;
          for (uint32_t q = 0; q < j; q++) taken = taken || iv.GetValue(q) == (int32_t)e;
          if (taken) continue;
          float v = c.GetValue(e);
          if (pass == 0) {
            if (v != v) continue;
            if (bi < 0 || v > best || (t.tie_high && v == best)) { best = v; bi = (int32_t)e; }
          } else {
            bi = (int32_t)e;
            if (!t.tie_high) break;
          }
        }
      }
      float w = s.GetValue(bi);
      if (t.post == 3) {  // sparsemixer: softmax at bi of s without earlier slots' experts and those past 2 eps
        moec_sync<HardEvent::S_V>();  // wv/iv written by the scalar unit; work read by it before
        Adds(work, s, -w, E);  // exp(s - m) on the vector unit; the mask and the sum scalar
        Exp(work, work, E);
        moec_sync<HardEvent::V_S>();
        float sm = 0.f;
        for (uint32_t e = 0; e < E; e++) {
          bool taken = false;
          for (uint32_t q = 0; q < j; q++) taken = taken || iv.GetValue(q) == (int32_t)e;
          float v = s.GetValue(e), a = v < 0 ? -v : v, factor = a < w ? w : a;
          if (taken || (w - v) / factor > 2 * t.jitter_eps) continue;
          sm += work.GetValue(e);
        }
        w = 1.0f / sm;
      }
      wv.SetValue(j, w);
      iv.SetValue(j, bi);
    }
    for (uint32_t j = 0; j < NS; j++) {  // the always-on experts: slots K.., their own scores
      wv.SetValue(K + j, s.GetValue(ES + j));
      iv.SetValue(K + j, (int32_t)(ES + j));
    }
    moec_sync<HardEvent::S_V>();  // wv/iv (and c) written by the scalar unit before the vector unit uses them
    if (t.post == 1) {  // softmax over the k selected
      float m = wv.GetValue(0);
      for (uint32_t j = 1; j < KW; j++) m = wv.GetValue(j) > m ? wv.GetValue(j) : m;
      Adds(wv, wv, -m, KW);
      Exp(wv, wv, KW);
    } else if (t.post == 2) {
      Muls(wv, wv, -1.0f, KW);
      Exp(wv, wv, KW);
      Adds(wv, wv, 1.0f, KW);
      Reciprocal(wv, wv, KW);
    }
    moec_sync<HardEvent::V_S>();
    for (uint32_t j = 0; j < KW; j++) {
      float w = wv.GetValue(j);
      sum += w;
      asum += w < 0 ? -w : w;
    }
    float denom = t.post == 1 ? sum : (t.norm == 1 ? sum + t.norm_eps : (t.norm == 2 ? asum + t.norm_eps : 1.0f));
    if (t.post != 1 && t.norm != 0 && denom < t.norm_min) denom = t.norm_min;  // clamp(sum, min); NaN stays
    Muls(wv, wv, t.scale / denom, KW);
    if (t.post == 1 && t.norm != 0) {  // renormalise after the softmax too (sums to 1 already, + eps)
      Muls(wv, wv, 1.0f / (1.0f + t.norm_eps), KW);
    }
    if (t.drop) {
      moec_sync<HardEvent::V_S>();
      for (uint32_t j = 0; j < KW; j++) {
        float w = wv.GetValue(j);
        if (!(w > t.min_weight)) { wv.SetValue(j, 0.f); iv.SetValue(j, -1); }
      }
      moec_sync<HardEvent::S_V>();
    }
    if (t.n_skip > 0) {  // a slot that chose a skip class contributes nothing (after post / norm / scale)
      moec_sync<HardEvent::V_S>();
      for (uint32_t j = 0; j < KW; j++) {
        if (iv.GetValue(j) >= (int32_t)E - t.n_skip) { wv.SetValue(j, 0.f); iv.SetValue(j, -1); }
      }
      moec_sync<HardEvent::S_V>();
    }
    if constexpr (!moec_same<TX, float>::value) narrow(wq, wv, KW);
    moec_sync<HardEvent::S_MTE3>();  // iv (and a float wv) written by the scalar unit, copied out by MTE3
    qw.EnQue(wq);
    qi.EnQue(iv);
    wq = qw.DeQue<TX>();
    iv = qi.DeQue<int32_t>();
    DataCopyPad(gw[tok * KW], wq, DataCopyExtParams{1, (uint32_t)(KW * sizeof(TX)), 0, 0, 0});
    DataCopyPad(gi[tok * KW], iv, DataCopyExtParams{1, KW * 4, 0, 0, 0});
    qw.FreeTensor(wq);
    qi.FreeTensor(iv);
  }
}

extern "C" __global__ __aicore__ void moe_gating(GM_ADDR logits, GM_ADDR bias, GM_ADDR w_out, GM_ADDR ids_out,
                                                GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.xdt == 2) gating_body<half>(logits, bias, w_out, ids_out, t);
  else if (t.xdt == 1) gating_body<bfloat16_t>(logits, bias, w_out, ids_out, t);
  else gating_body<float>(logits, bias, w_out, ids_out, t);
}

// ------------------------------------------------------------------------------------------------
// Stable counting sort of the N = T*K slots by expert, per-expert offsets[E+1]; with a capacity C the
// (C+1)-th and later slots of an expert (in slot order) are dropped: id -1, weight 0 (w in TX).
// With t.seq > 0 (Switch Transformers) the capacity is counted per sequence of t.seq tokens (slots t.seq * K):
// each sequence's own count per expert (scnt) decides the drops, the totals (cnt) the offsets.
// Multi-core, every GM write by DMA from the Unified Buffer (no scalar GM writes: a scalar write sits in
// its core's data cache, and two cores' lines clobber each other): each block streams the ids through the
// UB in chunks and counts them (every block the whole list: the counts before its part decide where its
// slots go), then owns
//   - the slots [slo, shi) of its even share: their dropped ids and weights are rewritten (capacity only),
//   - the output positions [plo, phi) of its even share of the kept slots: a second pass over the ids
//     places the slots that land there in a UB window, copied out once per window,
//   - block 0 also writes offsets.
// Another block may read an id this block has just rewritten to -1: it counts the same either way (a slot
// is dropped only once C earlier slots of its expert are counted, and those stay counted).
constexpr uint32_t ROUTE_CH = 2048;  // ids per UB chunk
constexpr uint32_t ROUTE_WIN = 4096; // output positions per UB window
template <typename TX>
__aicore__ inline void init_routing_body(GM_ADDR ids, GM_ADDR w, GM_ADDR sorted, GM_ADDR offsets, const MoeTiling &t) {
  const uint32_t N = (uint32_t)t.T * t.K, E = t.E;
  const uint32_t nb = GetBlockNum(), bi = GetBlockIdx();
  GlobalTensor<int32_t> gi, gs, go;
  GlobalTensor<TX> gw;
  gi.SetGlobalBuffer((__gm__ int32_t *)ids, N);
  gw.SetGlobalBuffer((__gm__ TX *)w, N);
  gs.SetGlobalBuffer((__gm__ int32_t *)sorted, N);
  go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
  TPipe pipe;
  TBuf<TPosition::VECCALC> bids, bw, bcnt, boff, bwin, bscnt;
  pipe.InitBuffer(bids, ROUTE_CH * 4);
  pipe.InitBuffer(bw, bytes32(ROUTE_CH * sizeof(TX)));
  pipe.InitBuffer(bcnt, pad8(E + 1) * 4);
  pipe.InitBuffer(boff, pad8(E + 1) * 4);
  pipe.InitBuffer(bwin, ROUTE_WIN * 4);
  const uint32_t SS = t.capacity > 0 && t.seq > 0 ? (uint32_t)t.seq * t.K : 0;  // slots per sequence (0: one count)
  if (SS) pipe.InitBuffer(bscnt, pad8(E + 1) * 4);
  LocalTensor<int32_t> vi = bids.Get<int32_t>(), cnt = bcnt.Get<int32_t>(), off = boff.Get<int32_t>(),
                       win = bwin.Get<int32_t>();
  LocalTensor<TX> vw = bw.Get<TX>();
  LocalTensor<int32_t> scnt = SS ? bscnt.Get<int32_t>() : cnt;  // the capacity's count: per sequence, or cnt
  // slot shares start on 8-slot (32-byte) boundaries, so the UB side of their copies is aligned
  const uint32_t slo = bi == 0 ? 0 : (uint32_t)((uint64_t)N * bi / nb) / 8 * 8;
  const uint32_t shi = bi + 1 == nb ? N : (uint32_t)((uint64_t)N * (bi + 1) / nb) / 8 * 8;
  DataCopyPadExtParams<int32_t> nopad{false, 0, 0, 0};
  // pass 1: counts (capped by the capacity); this block's dropped slots rewritten
  for (uint32_t e = 0; e <= E; e++) cnt.SetValue(e, 0);
  for (uint32_t c0 = 0; c0 < N; c0 += ROUTE_CH) {
    const uint32_t n = N - c0 < ROUTE_CH ? N - c0 : ROUTE_CH;
    DataCopyPad(vi, gi[c0], DataCopyExtParams{1, n * 4, 0, 0, 0}, nopad);
    moec_sync<HardEvent::MTE2_S>();
    const uint32_t a = c0 > slo ? c0 : slo, b = c0 + n < shi ? c0 + n : shi;  // this block's part of the chunk
    const bool mine = t.capacity > 0 && a < b;
    if (mine) {  // its weights, to zero the dropped ones
      DataCopyPad(vw, gw[a], DataCopyExtParams{1, (uint32_t)((b - a) * sizeof(TX)), 0, 0, 0},
                  DataCopyPadExtParams<TX>{false, 0, 0, (TX)0.f});
      moec_sync<HardEvent::MTE2_S>();
    }
    for (uint32_t i = 0; i < n; i++) {
      if (SS && (c0 + i) % SS == 0)
        for (uint32_t q = 0; q < E; q++) scnt.SetValue(q, 0);  // a new sequence
      const int32_t e = vi.GetValue(i);
      if (e < 0) continue;
      if (t.capacity > 0 && scnt.GetValue(e) >= t.capacity) {
        if (mine && c0 + i >= a && c0 + i < b) {
          vi.SetValue(i, -1);
          vw.SetValue(c0 + i - a, (TX)0.0f);
        }
        continue;
      }
      cnt.SetValue(e, cnt.GetValue(e) + 1);
      if (SS) scnt.SetValue(e, scnt.GetValue(e) + 1);
    }
    if (mine) {
      moec_sync<HardEvent::S_MTE3>();
      DataCopyPad(gi[a], vi[a - c0], DataCopyExtParams{1, (b - a) * 4, 0, 0, 0});
      DataCopyPad(gw[a], vw, DataCopyExtParams{1, (uint32_t)((b - a) * sizeof(TX)), 0, 0, 0});
      moec_sync<HardEvent::MTE3_MTE2>();  // the next chunk lands in vi/vw after they are copied out
      moec_sync<HardEvent::MTE3_S>();
    }
  }
  // offsets: exclusive prefix sums of the counts (block 0 writes them)
  int32_t acc = 0;
  for (uint32_t e = 0; e < E; e++) {
    const int32_t c = cnt.GetValue(e);
    off.SetValue(e, acc);
    acc += c;
  }
  off.SetValue(E, acc);
  if (bi == 0) {
    moec_sync<HardEvent::S_MTE3>();
    DataCopyPad(go, off, DataCopyExtParams{1, (E + 1) * 4, 0, 0, 0});
    // the offsets and the ids may share a GM line (buffers packed 32-byte aligned): pass 2 reads the ids after it
    moec_sync<HardEvent::MTE3_MTE2>();
  }
  // pass 2: this block's share of the output positions, one UB window at a time; slot i of expert e, the
  // j-th kept one of e in slot order, goes to offsets[e] + j
  const uint32_t total = (uint32_t)acc;
  const uint32_t plo = (uint32_t)((uint64_t)total * bi / nb), phi = (uint32_t)((uint64_t)total * (bi + 1) / nb);
  for (uint32_t w0 = plo; w0 < phi; w0 += ROUTE_WIN) {
    const uint32_t w1 = phi - w0 < ROUTE_WIN ? phi : w0 + ROUTE_WIN;
    for (uint32_t e = 0; e <= E; e++) cnt.SetValue(e, 0);
    for (uint32_t c0 = 0; c0 < N; c0 += ROUTE_CH) {
      const uint32_t n = N - c0 < ROUTE_CH ? N - c0 : ROUTE_CH;
      DataCopyPad(vi, gi[c0], DataCopyExtParams{1, n * 4, 0, 0, 0}, nopad);
      moec_sync<HardEvent::MTE2_S>();
      for (uint32_t i = 0; i < n; i++) {
        if (SS && (c0 + i) % SS == 0)
          for (uint32_t q = 0; q < E; q++) scnt.SetValue(q, 0);
        const int32_t e = vi.GetValue(i);
        if (e < 0) continue;
        const int32_t j = cnt.GetValue(e);
        if (t.capacity > 0 && scnt.GetValue(e) >= t.capacity) continue;
        cnt.SetValue(e, j + 1);
        if (SS) scnt.SetValue(e, scnt.GetValue(e) + 1);
        const uint32_t p = (uint32_t)(off.GetValue(e) + j);
        if (p >= w0 && p < w1) win.SetValue(p - w0, (int32_t)(c0 + i));
      }
    }
    moec_sync<HardEvent::S_MTE3>();
    DataCopyPad(gs[w0], win, DataCopyExtParams{1, (w1 - w0) * 4, 0, 0, 0});
    moec_sync<HardEvent::MTE3_S>();  // the next window rewrites win
  }
}

extern "C" __global__ __aicore__ void moe_init_routing(GM_ADDR ids, GM_ADDR w, GM_ADDR sorted, GM_ADDR offsets,
                                                      GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.xdt == 2) init_routing_body<half>(ids, w, sorted, offsets, t);
  else if (t.xdt == 1) init_routing_body<bfloat16_t>(ids, w, sorted, offsets, t);
  else init_routing_body<float>(ids, w, sorted, offsets, t);
}

// ------------------------------------------------------------------------------------------------
// dot(v[0..n), W row) with the row streamed through a double-buffered VECIN queue in kt tiles
__aicore__ inline float dot_row(const LocalTensor<float> &v, const GlobalTensor<float> &row, uint32_t n, uint32_t kt,
                                TQue<TPosition::VECIN, 2> &qw, const LocalTensor<float> &tmp,
                                const LocalTensor<float> &red) {
  float acc = 0.f;
  DataCopyPadExtParams<float> nopad{false, 0, 0, 0.f};
  for (uint32_t k0 = 0; k0 < n; k0 += kt) {
    uint32_t len = n - k0 < kt ? n - k0 : kt;
    LocalTensor<float> wt = qw.AllocTensor<float>();
    DataCopyPad(wt, row[k0], DataCopyExtParams{1, len * 4, 0, 0, 0}, nopad);
    qw.EnQue(wt);
    wt = qw.DeQue<float>();
    Mul(tmp, v[k0], wt, len);
    ReduceSum(red, tmp, red[8], len);
    moec_sync<HardEvent::V_S>();
    acc += red.GetValue(0);
    qw.FreeTensor(wt);
  }
  return acc;
}

// erf(x) by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) with vector instructions
__aicore__ inline void erf_vec(const LocalTensor<float> &y, const LocalTensor<float> &x, const LocalTensor<float> &a,
                               const LocalTensor<float> &b, uint32_t n) {
  Abs(a, x, n);                       // a = |x|
  Muls(b, a, 0.3275911f, n);
  Adds(b, b, 1.0f, n);
  Reciprocal(b, b, n);                // b = t = 1 / (1 + p|x|)
  Muls(y, b, 1.061405429f, n);
  Adds(y, y, -1.453152027f, n);
  Mul(y, y, b, n);
  Adds(y, y, 1.421413741f, n);
  Mul(y, y, b, n);
  Adds(y, y, -0.284496736f, n);
  Mul(y, y, b, n);
  Adds(y, y, 0.254829592f, n);
  Mul(y, y, b, n);                    // y = poly(t) * t
  Mul(a, a, a, n);
  Muls(a, a, -1.0f, n);
  Exp(a, a, n);                       // a = exp(-x^2)
  Mul(y, y, a, n);
  Muls(y, y, -1.0f, n);
  Adds(y, y, 1.0f, n);                // y = erf(|x|)
  moec_sync<HardEvent::V_S>();
  for (uint32_t i = 0; i < n; i++)    // odd function
    if (x.GetValue(i) < 0) y.SetValue(i, -y.GetValue(i));
  moec_sync<HardEvent::S_V>();
}

__aicore__ inline void sigmoid_vec(const LocalTensor<float> &y, const LocalTensor<float> &x, float alpha, uint32_t n) {
  Muls(y, x, -alpha, n);
  Exp(y, y, n);
  Adds(y, y, 1.0f, n);
  Reciprocal(y, y, n);
}

// ---- the expert FFN around the cube's grouped matmuls (cube_kernels.cpp) ------------------------------
// moe_gather_rows   xe[p] = x[sorted[p] / K] (* the routing weight when it applies at the input), cast to
//                   the GEMM input type (float, or bfloat16_t rounded to nearest even)      -> GroupedMatmul
// moe_activation    a[p] = act(h[p] * s_in[e] + b_in[e]) cast to the GEMM input type       -> GroupedMatmul
// moe_scatter_rows  y[slot(p)] = (yo[p] * s_out[e] + b_out[e]) * (routing weight at the output)
// Row p belongs to expert e with offsets[e] <= p < offsets[e+1]; for shared experts (t.shared) the rows are
// expert-major, p = e*T + t, and slot(p) = t*E + e.  Rows are split round-robin over blocks and walked in
// column chunks of t.chunk elements (double-buffered queues), so any D/F fits the Unified Buffer.
__aicore__ inline int32_t expert_of(const GlobalTensor<int32_t> &go, uint32_t E, int64_t p) {
  int32_t e = 0;
  while (e + 1 < (int32_t)E && go.GetValue(e + 1) <= p) e++;
  return e;
}

template <typename TO>
__aicore__ inline void store_chunk(const GlobalTensor<TO> &g, const LocalTensor<float> &v, TQue<TPosition::VECOUT, 2> &q,
                                   uint32_t len) {
  LocalTensor<TO> o = q.AllocTensor<TO>();
  narrow(o, v, len);  // half/bfloat16_t: round to nearest, ties to even (the bf16 semantics)
  q.EnQue(o);
  o = q.DeQue<TO>();
  DataCopyPad(g, o, DataCopyExtParams{1, (uint32_t)(len * sizeof(TO)), 0, 0, 0});
  q.FreeTensor(o);
}

// dst = len elements of g (float, or half widened exactly); the queue's buffers hold len floats
template <typename TI>
__aicore__ inline void load_chunk(const LocalTensor<float> &dst, const GlobalTensor<TI> &g, TQue<TPosition::VECIN, 2> &q,
                                  uint32_t len) {
  LocalTensor<TI> v = q.AllocTensor<TI>();
  DataCopyPad(v, g, DataCopyExtParams{1, (uint32_t)(len * sizeof(TI)), 0, 0, 0},
              DataCopyPadExtParams<TI>{false, 0, 0, (TI)0.f});
  q.EnQue(v);
  v = q.DeQue<TI>();
  if constexpr (moec_same<TI, float>::value) Adds(dst, v, 0.0f, len);
  else Cast(dst, v, RoundMode::CAST_NONE, len);
  q.FreeTensor(v);
}

template <typename TX, typename TO>
__aicore__ inline void gather_rows_body(GM_ADDR x, GM_ADDR sorted, GM_ADDR rw, GM_ADDR xe, const MoeTiling &t) {
  const uint32_t D = t.D, ch = t.chunk;
  GlobalTensor<TX> gx, grw;
  GlobalTensor<int32_t> gs;
  GlobalTensor<TO> ge;
  gx.SetGlobalBuffer((__gm__ TX *)x, (uint64_t)t.T * D);
  gs.SetGlobalBuffer((__gm__ int32_t *)sorted, (uint64_t)t.rows);
  if (t.weights_at == 1) grw.SetGlobalBuffer((__gm__ TX *)rw, (uint64_t)t.T * t.K);
  ge.SetGlobalBuffer((__gm__ TO *)xe, (uint64_t)t.rows * D);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bv;
  pipe.InitBuffer(qin, 2, bytes32(ch * sizeof(TX)));
  pipe.InitBuffer(qout, 2, bytes32(ch * sizeof(TO)));
  pipe.InitBuffer(bv, pad8(ch) * 4);
  LocalTensor<float> v = bv.Get<float>();
  for (int64_t p = GetBlockIdx(); p < t.rows; p += GetBlockNum()) {
    const int32_t slot = gs.GetValue(p);
    const int64_t tok = slot / t.K;
    const float r = t.weights_at == 1 ? (float)grw.GetValue(slot) : 1.0f;
    for (uint32_t d0 = 0; d0 < D; d0 += ch) {
      const uint32_t len = D - d0 < ch ? D - d0 : ch;
      load_chunk(v, gx[tok * D + d0], qin, len);
      if (t.weights_at == 1) Muls(v, v, r, len);  // Llama-4: the routing weight scales the input
      store_chunk<TO>(ge[(uint64_t)p * D + d0], v, qout, len);
    }
  }
}

extern "C" __global__ __aicore__ void moe_gather_rows(GM_ADDR x, GM_ADDR sorted, GM_ADDR rw, GM_ADDR xe,
                                                     GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.aq && t.xdt == 2) gather_rows_body<half, float>(x, sorted, rw, xe, t);  // w8a8: float rows, quantised next
  else if (t.aq && t.xdt == 1) gather_rows_body<bfloat16_t, float>(x, sorted, rw, xe, t);
  else if (t.xdt == 2) gather_rows_body<half, half>(x, sorted, rw, xe, t);  // f16 models: half GEMM inputs
  else if (t.xdt == 1) gather_rows_body<bfloat16_t, bfloat16_t>(x, sorted, rw, xe, t);  // bf16 models
  else if (t.adt == 1) gather_rows_body<float, bfloat16_t>(x, sorted, rw, xe, t);
  else gather_rows_body<float, float>(x, sorted, rw, xe, t);
}

// gated (SwiGLU family): a = G * sigmoid(alpha G) * (U + beta), G <= limit, -limit <= U <= limit when clamped;
// 7 geglu, 8 geglu_tanh, 9 softcap_swiglu (ir/ops/moe.py ACTIVATIONS' codes)
__aicore__ inline void act_chunk(const MoeTiling &t, const LocalTensor<float> &a, const LocalTensor<float> &g,
                                 const LocalTensor<float> &u, const LocalTensor<float> &t1, const LocalTensor<float> &t2,
                                 uint32_t n) {
  if (t.act == 0) {
    if (t.clamp) {
      Mins(g, g, t.limit, n);
      Mins(u, u, t.limit, n);
      Maxs(u, u, -t.limit, n);
    }
    sigmoid_vec(a, g, t.alpha, n);
    Mul(a, a, g, n);
    Adds(u, u, t.beta, n);
    Mul(a, a, u, n);
  } else if (t.act == 1) {  // gelu (erf)
    Muls(t1, g, 0.70710678118654752f, n);
    erf_vec(a, t1, t2, u, n);
    Adds(a, a, 1.0f, n);
    Mul(a, a, g, n);
    Muls(a, a, 0.5f, n);
  } else if (t.act == 2) {  // gelu tanh: 0.5 h (1 + tanh(y)), tanh(y) = 2 sigmoid(2y) - 1
    Mul(t1, g, g, n);
    Mul(t1, t1, g, n);
    Muls(t1, t1, 0.044715f, n);
    Add(t1, t1, g, n);
    sigmoid_vec(t2, t1, 2.0f * 0.7978845608028654f, n);
    Muls(t2, t2, 2.0f, n);
    Mul(a, t2, g, n);
    Muls(a, a, 0.5f, n);
  } else if (t.act == 3) {
    Relu(a, g, n);
  } else if (t.act == 6) {  // squared ReLU
    Relu(a, g, n);
    Mul(a, a, a, n);
  } else if (t.act == 4) {
    sigmoid_vec(a, g, 1.0f, n);
    Mul(a, a, g, n);
  } else if (t.act == 7) {  // geglu: 0.5 (G U) (1 + erf(G / sqrt 2)); u is erf_vec's scratch once G U is kept
    Muls(t1, g, 0.70710678118654752f, n);
    Mul(g, g, u, n);
    erf_vec(a, t1, t2, u, n);
    Adds(a, a, 1.0f, n);
    Mul(a, a, g, n);
    Muls(a, a, 0.5f, n);
  } else if (t.act == 8) {  // geglu_tanh: gelu tanh (as act 2) times U
    Mul(t1, g, g, n);
    Mul(t1, t1, g, n);
    Muls(t1, t1, 0.044715f, n);
    Add(t1, t1, g, n);
    sigmoid_vec(t2, t1, 2.0f * 0.7978845608028654f, n);
    Mul(a, t2, g, n);
    Mul(a, a, u, n);
  } else if (t.act == 9) {  // softcap_swiglu, caps in alpha (gate) and beta (up): c tanh(v / c) = c (2 sigmoid(2v / c) - 1)
    sigmoid_vec(t1, g, 2.0f / t.alpha, n);
    Muls(t1, t1, 2.0f * t.alpha, n);
    Adds(t1, t1, -t.alpha, n);
    sigmoid_vec(t2, g, 1.0f, n);
    Mul(t1, t1, t2, n);
    sigmoid_vec(t2, u, 2.0f / t.beta, n);
    Muls(t2, t2, 2.0f * t.beta, n);
    Adds(t2, t2, -t.beta, n);
    Mul(a, t1, t2, n);
  } else {
    Adds(a, g, 0.0f, n);
  }
}

// v = h[row, off..off+len) (* rs) (* s[e, same]) (+ b[e, same]); h float (or int32 sums of int8 products,
// w8a8: widened, then scaled by the row's activation scale rs), s float, b in the model's type TX
template <typename TX, typename TH>
__aicore__ inline void load_pre(const MoeTiling &t, const LocalTensor<float> &v, const LocalTensor<float> &tmp,
                                const GlobalTensor<TH> &gh, const GlobalTensor<float> &gs,
                                const GlobalTensor<TX> &gb, uint64_t hoff, uint64_t eoff,
                                TQue<TPosition::VECIN, 2> &qin, uint32_t len, float rs) {
  load_chunk(v, gh[hoff], qin, len);
  if (t.aq) Muls(v, v, rs, len);
  if (t.qscale) {
    load_chunk(tmp, gs[eoff], qin, len);
    Mul(v, v, tmp, len);
  }
  if (t.has_b_in) {
    load_chunk(tmp, gb[eoff], qin, len);
    Add(v, v, tmp, len);
  }
}

template <typename TX, typename TO, typename TH = float>
__aicore__ inline void activation_body(GM_ADDR h, GM_ADDR offsets, GM_ADDR b_in, GM_ADDR s_in, GM_ADDR s_row,
                                       GM_ADDR aout, const MoeTiling &t) {
  const uint32_t F = t.F, I = t.I, E = t.E, ch = t.chunk;
  const bool gated = t.act == 0 || t.act >= 7;  // swiglu, geglu, geglu_tanh, softcap_swiglu: rows [G; U]
  GlobalTensor<TH> gh;
  GlobalTensor<float> gsc, grs;
  GlobalTensor<TX> gb;
  GlobalTensor<int32_t> go;
  GlobalTensor<TO> ga;
  gh.SetGlobalBuffer((__gm__ TH *)h, (uint64_t)t.rows * I);
  if (t.aq) grs.SetGlobalBuffer((__gm__ float *)s_row, (uint64_t)t.rows);
  if (!t.shared) go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
  if (t.has_b_in) gb.SetGlobalBuffer((__gm__ TX *)b_in, (uint64_t)E * I);
  if (t.qscale) gsc.SetGlobalBuffer((__gm__ float *)s_in, (uint64_t)E * I);
  ga.SetGlobalBuffer((__gm__ TO *)aout, (uint64_t)t.rows * F);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bg, bu, ba, b1, b2, bw;
  const uint32_t wide = gated && t.interleaved ? 2 * ch : ch;  // interleaved rows load 2*len values
  pipe.InitBuffer(qin, 2, pad8(wide) * 4);
  pipe.InitBuffer(qout, 2, bytes32(ch * sizeof(TO)));
  pipe.InitBuffer(bg, pad8(ch) * 4);
  pipe.InitBuffer(bu, pad8(ch) * 4);
  pipe.InitBuffer(ba, pad8(ch) * 4);
  pipe.InitBuffer(b1, pad8(ch) * 4);
  pipe.InitBuffer(b2, pad8(ch) * 4);
  pipe.InitBuffer(bw, pad8(wide) * 4 * 2);
  LocalTensor<float> g = bg.Get<float>(), u = bu.Get<float>(), a = ba.Get<float>(), t1 = b1.Get<float>(),
                     t2 = b2.Get<float>(), wv = bw.Get<float>();
  LocalTensor<float> wt = wv[pad8(wide)];
  for (int64_t p = GetBlockIdx(); p < t.rows; p += GetBlockNum()) {
    const int32_t e = t.shared ? (int32_t)(p / t.T) : expert_of(go, E, p);
    const uint64_t hrow = (uint64_t)p * I, erow = (uint64_t)e * I;
    const float rs = t.aq ? grs.GetValue(p) : 1.0f;
    for (uint32_t f0 = 0; f0 < F; f0 += ch) {
      const uint32_t len = F - f0 < ch ? F - f0 : ch;
      if (!gated) {
        load_pre(t, g, t1, gh, gsc, gb, hrow + f0, erow + f0, qin, len, rs);
      } else if (!t.interleaved) {  // rows [gate; up]
        load_pre(t, g, t1, gh, gsc, gb, hrow + f0, erow + f0, qin, len, rs);
        load_pre(t, u, t1, gh, gsc, gb, hrow + F + f0, erow + F + f0, qin, len, rs);
      } else {                      // rows g0 u0 g1 u1 ...: load 2*len, split (scalar de-interleave)
        load_pre(t, wv, wt, gh, gsc, gb, hrow + 2 * f0, erow + 2 * f0, qin, 2 * len, rs);
        moec_sync<HardEvent::V_S>();
        for (uint32_t i = 0; i < len; i++) {
          g.SetValue(i, wv.GetValue(2 * i));
          u.SetValue(i, wv.GetValue(2 * i + 1));
        }
        moec_sync<HardEvent::S_V>();
      }
      act_chunk(t, a, g, u, t1, t2, len);
      store_chunk<TO>(ga[(uint64_t)p * F + f0], a, qout, len);
    }
  }
}

extern "C" __global__ __aicore__ void moe_activation(GM_ADDR h, GM_ADDR offsets, GM_ADDR b_in, GM_ADDR s_in,
                                                    GM_ADDR s_row, GM_ADDR aout, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  // w8a8: int32 sums in, float rows out (quantised next); biases in the model's type
  if (t.aq && t.xdt == 2) activation_body<half, float, int32_t>(h, offsets, b_in, s_in, s_row, aout, t);
  else if (t.aq && t.xdt == 1) activation_body<bfloat16_t, float, int32_t>(h, offsets, b_in, s_in, s_row, aout, t);
  else if (t.xdt == 2) activation_body<half, half>(h, offsets, b_in, s_in, s_row, aout, t);
  else if (t.xdt == 1) activation_body<bfloat16_t, bfloat16_t>(h, offsets, b_in, s_in, s_row, aout, t);
  else if (t.aq) activation_body<float, float, int32_t>(h, offsets, b_in, s_in, s_row, aout, t);  // w8a8
  else if (t.adt == 1) activation_body<float, bfloat16_t>(h, offsets, b_in, s_in, s_row, aout, t);
  else activation_body<float, float>(h, offsets, b_in, s_in, s_row, aout, t);
}

// yo and s_out float (the cube's output, int8 scales; w8a8: yo int32 sums scaled by the row scales s_row);
// b_out, the routing weights and y in TX
template <typename TX, typename TY = float>
__aicore__ inline void scatter_rows_body(GM_ADDR yo, GM_ADDR sorted, GM_ADDR offsets, GM_ADDR b_out, GM_ADDR s_out,
                                         GM_ADDR s_row, GM_ADDR rw, GM_ADDR y, const MoeTiling &t) {
  const uint32_t D = t.D, E = t.E, ch = t.chunk, KS = t.shared ? t.E : t.K;
  GlobalTensor<TY> gyo;
  GlobalTensor<float> gsc, grs;
  GlobalTensor<TX> gb, grw, gy;
  GlobalTensor<int32_t> gs, go;
  gyo.SetGlobalBuffer((__gm__ TY *)yo, (uint64_t)t.rows * D);
  if (t.aq) grs.SetGlobalBuffer((__gm__ float *)s_row, (uint64_t)t.rows);
  if (!t.shared) {
    gs.SetGlobalBuffer((__gm__ int32_t *)sorted, (uint64_t)t.rows);
    go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
  }
  if (t.has_b_out) gb.SetGlobalBuffer((__gm__ TX *)b_out, (uint64_t)E * D);
  if (t.qscale) gsc.SetGlobalBuffer((__gm__ float *)s_out, (uint64_t)E * D);
  if (t.weights_at == 2) grw.SetGlobalBuffer((__gm__ TX *)rw, (uint64_t)t.T * t.K);
  gy.SetGlobalBuffer((__gm__ TX *)y, (uint64_t)t.T * KS * D);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bv, bt;
  pipe.InitBuffer(qin, 2, pad8(ch) * 4);
  pipe.InitBuffer(qout, 2, bytes32(ch * sizeof(TX)));
  pipe.InitBuffer(bv, pad8(ch) * 4);
  pipe.InitBuffer(bt, pad8(ch) * 4);
  LocalTensor<float> v = bv.Get<float>(), tmp = bt.Get<float>();
  for (int64_t p = GetBlockIdx(); p < t.rows; p += GetBlockNum()) {
    int32_t e, slot;
    if (t.shared) {
      e = (int32_t)(p / t.T);
      slot = (int32_t)((p % t.T) * E + e);
    } else {
      e = expert_of(go, E, p);
      slot = gs.GetValue(p);
    }
    const float r = t.weights_at == 2 ? (float)grw.GetValue(slot) : 1.0f;
    const float rs = t.aq ? grs.GetValue(p) : 1.0f;
    for (uint32_t d0 = 0; d0 < D; d0 += ch) {
      const uint32_t len = D - d0 < ch ? D - d0 : ch;
      load_chunk(v, gyo[(uint64_t)p * D + d0], qin, len);
      if (t.aq) Muls(v, v, rs, len);  // w8a8: the int32 sums times the row's activation scale
      if (t.qscale) {
        load_chunk(tmp, gsc[(uint64_t)e * D + d0], qin, len);
        Mul(v, v, tmp, len);
      }
      if (t.has_b_out) {
        load_chunk(tmp, gb[(uint64_t)e * D + d0], qin, len);
        Add(v, v, tmp, len);
      }
      if (t.weights_at == 2) Muls(v, v, r, len);  // the combine's multiply, folded into the expert's epilogue
      store_chunk<TX>(gy[(uint64_t)slot * D + d0], v, qout, len);
    }
  }
}

extern "C" __global__ __aicore__ void moe_scatter_rows(GM_ADDR yo, GM_ADDR sorted, GM_ADDR offsets, GM_ADDR b_out,
                                                      GM_ADDR s_out, GM_ADDR s_row, GM_ADDR rw, GM_ADDR y,
                                                      GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.aq && t.xdt == 2) scatter_rows_body<half, int32_t>(yo, sorted, offsets, b_out, s_out, s_row, rw, y, t);
  else if (t.aq && t.xdt == 1) scatter_rows_body<bfloat16_t, int32_t>(yo, sorted, offsets, b_out, s_out, s_row, rw, y, t);
  else if (t.xdt == 2) scatter_rows_body<half>(yo, sorted, offsets, b_out, s_out, s_row, rw, y, t);
  else if (t.xdt == 1) scatter_rows_body<bfloat16_t>(yo, sorted, offsets, b_out, s_out, s_row, rw, y, t);
  else if (t.aq) scatter_rows_body<float, int32_t>(yo, sorted, offsets, b_out, s_out, s_row, rw, y, t);  // w8a8
  else scatter_rows_body<float>(yo, sorted, offsets, b_out, s_out, s_row, rw, y, t);
}

// int8 expert weights (per-output-channel scales): the cube has no int8 x float mode, so the vector cores widen
// the int8 codes of the experts that received rows to the cube's operand type in a GM workspace (t.adt: float for
// f32 models, the model's bfloat16_t/half for bf16/f16 models) for the grouped matmul; the scales are applied
// after the dot products (moe_activation / moe_scatter_rows, qscale).  The codes are exact in every one of these
// types (|q| <= 127 < 2^8): int8 -> half (the Cast table's only int8 conversion) -> float (-> bfloat16_t).
// Items: (expert, row, K chunk).
template <typename TO>
__aicore__ inline void dequant_int8_body(GM_ADDR q, GM_ADDR offsets, GM_ADDR w, const MoeTiling &t) {
  const uint32_t E = t.E, N = t.M, Kd = t.Kd, ch = t.chunk;
  GlobalTensor<int8_t> gq;
  GlobalTensor<TO> gw;
  GlobalTensor<int32_t> go;
  gq.SetGlobalBuffer((__gm__ int8_t *)q, (uint64_t)E * N * Kd);
  gw.SetGlobalBuffer((__gm__ TO *)w, (uint64_t)E * N * Kd);
  go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bh, bf;
  pipe.InitBuffer(qin, 2, (ch + 31) / 32 * 32);
  pipe.InitBuffer(qout, 2, bytes32(ch * sizeof(TO)));
  pipe.InitBuffer(bh, (ch + 15) / 16 * 32);
  pipe.InitBuffer(bf, pad8(ch) * 4);
  LocalTensor<half> hv = bh.Get<half>();
  LocalTensor<float> fv = bf.Get<float>();
  const uint32_t chunks = (Kd + ch - 1) / ch;
  const int64_t blk = GetBlockIdx(), nblk = GetBlockNum();
  int64_t item = 0;
  for (uint32_t e = 0; e < E; e++) {
    if (go.GetValue(e + 1) <= go.GetValue(e)) continue;  // no rows: its weights are not needed
    for (uint32_t n = 0; n < N; n++)
      for (uint32_t c = 0; c < chunks; c++, item++) {
        if (item % nblk != blk) continue;
        const uint32_t k0 = c * ch, len = Kd - k0 < ch ? Kd - k0 : ch;
        const uint64_t off = ((uint64_t)e * N + n) * Kd + k0;
        LocalTensor<int8_t> v = qin.AllocTensor<int8_t>();
        DataCopyPad(v, gq[off], DataCopyExtParams{1, len, 0, 0, 0}, DataCopyPadExtParams<int8_t>{false, 0, 0, 0});
        qin.EnQue(v);
        v = qin.DeQue<int8_t>();
        LocalTensor<TO> o = qout.AllocTensor<TO>();
        if constexpr (moec_same<TO, half>::value) {
          Cast(o, v, RoundMode::CAST_NONE, len);
        } else {
          Cast(hv, v, RoundMode::CAST_NONE, len);
          if constexpr (moec_same<TO, float>::value) {
            Cast(o, hv, RoundMode::CAST_NONE, len);
          } else {
            Cast(fv, hv, RoundMode::CAST_NONE, len);
            Cast(o, fv, RoundMode::CAST_RINT, len);  // exact: the codes are integers below 2^8
          }
        }
        qin.FreeTensor(v);
        qout.EnQue(o);
        o = qout.DeQue<TO>();
        DataCopyPad(gw[off], o, DataCopyExtParams{1, (uint32_t)(len * sizeof(TO)), 0, 0, 0});
        qout.FreeTensor(o);
      }
  }
}

extern "C" __global__ __aicore__ void moe_dequant_int8(GM_ADDR q, GM_ADDR offsets, GM_ADDR w, GM_ADDR workspace,
                                                      GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.adt == 2) dequant_int8_body<half>(q, offsets, w, t);
  else if (t.adt == 1) dequant_int8_body<bfloat16_t>(q, offsets, w, t);
  else dequant_int8_body<float>(q, offsets, w, t);
}

// int4 expert weights (ir/ops/moe.py dequantize_weights): codes packed two a byte along K, the low nibble first,
// per-group scales s [E, N, Kd / wgroup] and zero points z (t.zp; else 8), w = (q - z) * s computed in float as
// the reference does, then rounded once to the cube's type (t.adt: float, bfloat16_t or half).  The nibbles come
// out of the bytes arithmetically (no bit instructions needed): b = (float) byte (uint8_t -> half -> float,
// exact), hi = floor(b / 16) (float -> int32 with CAST_FLOOR, exact: b / 16 is a multiple of 1/16), lo = b - 16 hi;
// a Gather with byte offsets (built once per block) interleaves lo and hi into K order.  Experts that received
// rows only; items: (expert, row, chunk), a chunk inside one scale group and an even number of codes.
template <typename TO>
__aicore__ inline void dequant_int4_body(GM_ADDR q, GM_ADDR s, GM_ADDR z, GM_ADDR offsets, GM_ADDR w,
                                         const MoeTiling &t) {
  const uint32_t E = t.E, N = t.M, Kd = t.Kd, G = t.wgroup, ch = t.chunk, half_ch = ch / 2;
  const uint32_t ngroups = Kd / G, per_group = (G + ch - 1) / ch, chunks = ngroups * per_group;
  GlobalTensor<uint8_t> gq;
  GlobalTensor<float> gs, gz;
  GlobalTensor<TO> gw;
  GlobalTensor<int32_t> go;
  gq.SetGlobalBuffer((__gm__ uint8_t *)q, (uint64_t)E * N * (Kd / 2));
  gs.SetGlobalBuffer((__gm__ float *)s, (uint64_t)E * N * ngroups);
  if (t.zp) gz.SetGlobalBuffer((__gm__ float *)z, (uint64_t)E * N * ngroups);
  gw.SetGlobalBuffer((__gm__ TO *)w, (uint64_t)E * N * Kd);
  go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bh, bb, bi, blh, bo, bv;
  pipe.InitBuffer(qin, 2, bytes32(half_ch));
  pipe.InitBuffer(qout, 2, bytes32(ch * sizeof(TO)));
  pipe.InitBuffer(bh, bytes32(half_ch * 2));
  pipe.InitBuffer(bb, pad8(half_ch) * 4);
  pipe.InitBuffer(bi, pad8(half_ch) * 4);
  pipe.InitBuffer(blh, pad8(half_ch) * 4 * 2);   // lo at [0, pad8(ch/2)), hi after it
  pipe.InitBuffer(bo, pad8(ch) * 4);             // Gather's byte offsets
  pipe.InitBuffer(bv, pad8(ch) * 4);
  LocalTensor<half> hv = bh.Get<half>();
  LocalTensor<float> bf = bb.Get<float>(), lohi = blh.Get<float>(), v = bv.Get<float>();
  LocalTensor<int32_t> iv = bi.Get<int32_t>();
  LocalTensor<uint32_t> offs = bo.Get<uint32_t>();
  const uint32_t hi_at = pad8(half_ch);
  LocalTensor<float> lo = lohi, hi = lohi[hi_at];
  for (uint32_t i = 0; i < ch; i++) offs.SetValue(i, (uint32_t)(((i % 2) * hi_at + i / 2) * 4));
  moec_sync<HardEvent::S_V>();
  const int64_t blk = GetBlockIdx(), nblk = GetBlockNum();
  int64_t item = 0;
  for (uint32_t e = 0; e < E; e++) {
    if (go.GetValue(e + 1) <= go.GetValue(e)) continue;  // no rows: its weights are not needed
    for (uint32_t n = 0; n < N; n++)
      for (uint32_t c = 0; c < chunks; c++, item++) {
        if (item % nblk != blk) continue;
        const uint32_t g = c / per_group, k0 = g * G + (c % per_group) * ch;
        const uint32_t len = g * G + G - k0 < ch ? g * G + G - k0 : ch;  // even: G and ch are
        const uint64_t row = (uint64_t)e * N + n, gi = row * ngroups + g;
        const float sc = gs.GetValue(gi), zp = t.zp ? gz.GetValue(gi) : 8.0f;
        LocalTensor<uint8_t> b = qin.AllocTensor<uint8_t>();
        DataCopyPad(b, gq[(row * Kd + k0) / 2], DataCopyExtParams{1, len / 2, 0, 0, 0},
                    DataCopyPadExtParams<uint8_t>{false, 0, 0, 0});
        qin.EnQue(b);
        b = qin.DeQue<uint8_t>();
        Cast(hv, b, RoundMode::CAST_NONE, len / 2);
        qin.FreeTensor(b);
        Cast(bf, hv, RoundMode::CAST_NONE, len / 2);
        Muls(lo, bf, 0.0625f, len / 2);
        Cast(iv, lo, RoundMode::CAST_FLOOR, len / 2);
        Cast(hi, iv, RoundMode::CAST_NONE, len / 2);
        Muls(lo, hi, -16.0f, len / 2);
        Add(lo, lo, bf, len / 2);
        Gather(v, lohi, offs, 0, len);
        Adds(v, v, -zp, len);
        Muls(v, v, sc, len);
        LocalTensor<TO> o = qout.AllocTensor<TO>();
        narrow(o, v, len);
        qout.EnQue(o);
        o = qout.DeQue<TO>();
        DataCopyPad(gw[row * Kd + k0], o, DataCopyExtParams{1, (uint32_t)(len * sizeof(TO)), 0, 0, 0});
        qout.FreeTensor(o);
      }
  }
}

extern "C" __global__ __aicore__ void moe_dequant_int4(GM_ADDR q, GM_ADDR s, GM_ADDR z, GM_ADDR offsets, GM_ADDR w,
                                                      GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.adt == 2) dequant_int4_body<half>(q, s, z, offsets, w, t);
  else if (t.adt == 1) dequant_int4_body<bfloat16_t>(q, s, z, offsets, w, t);
  else dequant_int4_body<float>(q, s, z, offsets, w, t);
}

// w8a8 (dynamic per-row int8 activations, ir/ops/moe.py quantize_rows_int8): for each row p of a [rows, M]
// float matrix, s[p] = max|row| / 127 (1 for an all-zero row) and q[p] = clip(rint(row / s), -127, 127) in
// int8, computed in f32 exactly as the reference: a true division (Div, not a multiply by 1/s), rounding to
// nearest with ties to even (Cast float -> int32, CAST_RINT), then int32 -> float -> half -> int8 (exact:
// |q| <= 127; a direct int32 -> half Cast is a dequantisation by the deq scale register).
// Two passes over the row's column chunks: the max, then the codes.  Rows round-robin over blocks.
extern "C" __global__ __aicore__ void moe_quant_rows_int8(GM_ADDR a, GM_ADDR q, GM_ADDR s, GM_ADDR workspace,
                                                         GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  const uint32_t W = t.M, ch = t.chunk;
  GlobalTensor<float> ga, gs;
  GlobalTensor<int8_t> gq;
  ga.SetGlobalBuffer((__gm__ float *)a, (uint64_t)t.rows * W);
  gq.SetGlobalBuffer((__gm__ int8_t *)q, (uint64_t)t.rows * W);
  gs.SetGlobalBuffer((__gm__ float *)s, (uint64_t)t.rows);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bv, bd, bi, bh, bred, bsc;
  pipe.InitBuffer(qin, 2, pad8(ch) * 4);
  pipe.InitBuffer(qout, 2, bytes32(ch));
  pipe.InitBuffer(bv, pad8(ch) * 4);
  pipe.InitBuffer(bd, pad8(ch) * 4);
  pipe.InitBuffer(bi, pad8(ch) * 4);
  pipe.InitBuffer(bh, bytes32(ch * 2));
  pipe.InitBuffer(bred, pad8(ch) * 4 + 64);
  pipe.InitBuffer(bsc, 32);
  LocalTensor<float> v = bv.Get<float>(), dv = bd.Get<float>(), red = bred.Get<float>(), scv = bsc.Get<float>();
  LocalTensor<int32_t> iv = bi.Get<int32_t>();
  LocalTensor<half> hv = bh.Get<half>();
  for (int64_t p = GetBlockIdx(); p < t.rows; p += GetBlockNum()) {
    float amax = 0.0f;
    for (uint32_t c0 = 0; c0 < W; c0 += ch) {
      const uint32_t len = W - c0 < ch ? W - c0 : ch;
      load_chunk(v, ga[(uint64_t)p * W + c0], qin, len);
      Abs(v, v, len);
      ReduceMax(dv, v, red, len);
      moec_sync<HardEvent::V_S>();
      const float m = dv.GetValue(0);
      amax = m > amax ? m : amax;
    }
    const float sc = amax > 0.0f ? amax / 127.0f : 1.0f;
    // the row's scale goes out by DMA (rows of neighbouring blocks share GM cache lines: no scalar GM write)
    scv.SetValue(0, sc);
    moec_sync<HardEvent::S_MTE3>();
    DataCopyPad(gs[p], scv, DataCopyExtParams{1, 4, 0, 0, 0});
    moec_sync<HardEvent::MTE3_S>();  // scv is rewritten for the next row
    for (uint32_t c0 = 0; c0 < W; c0 += ch) {
      const uint32_t len = W - c0 < ch ? W - c0 : ch;
      load_chunk(v, ga[(uint64_t)p * W + c0], qin, len);
      Duplicate(dv, sc, len);
      Div(v, v, dv, len);
      Mins(v, v, 127.0f, len);   // clip before rounding: the same as after, the bounds being integers
      Maxs(v, v, -127.0f, len);
      Cast(iv, v, RoundMode::CAST_RINT, len);
      // int32 -> half would multiply by the deq scale register: go through float (exact, |q| <= 127)
      Cast(v, iv, RoundMode::CAST_NONE, len);
      Cast(hv, v, RoundMode::CAST_NONE, len);
      LocalTensor<int8_t> o = qout.AllocTensor<int8_t>();
      Cast(o, hv, RoundMode::CAST_RINT, len);
      qout.EnQue(o);
      o = qout.DeQue<int8_t>();
      DataCopyPad(gq[(uint64_t)p * W + c0], o, DataCopyExtParams{1, len, 0, 0, 0});
      qout.FreeTensor(o);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// y in TY, every other GM tensor in TX (float or half; f16 shared experts: float y, the f32 sum of the experts
// scattered by moe_scatter_rows, and half x/gate/out); sums in float.  A half row is widened into rf first.
template <typename TY, typename TX>
__aicore__ inline void finalize_body(GM_ADDR y, GM_ADDR w, GM_ADDR shared, GM_ADDR x, GM_ADDR ids, GM_ADDR gate,
                                     GM_ADDR out, const MoeTiling &t) {
  constexpr bool F32 = moec_same<TX, float>::value && moec_same<TY, float>::value;
  const uint32_t D = t.D, K = t.K;
  GlobalTensor<TY> gy;
  GlobalTensor<TX> gw, gsh, gx, gg, gout;
  GlobalTensor<int32_t> gi;
  gy.SetGlobalBuffer((__gm__ TY *)y, (uint64_t)t.T * K * D);
  gout.SetGlobalBuffer((__gm__ TX *)out, (uint64_t)t.T * D);
  if (t.weighted) gw.SetGlobalBuffer((__gm__ TX *)w, (uint64_t)t.T * K);
  if (t.has_shared) gsh.SetGlobalBuffer((__gm__ TX *)shared, (uint64_t)t.T * D);
  if (t.passthrough || t.has_gate) gx.SetGlobalBuffer((__gm__ TX *)x, (uint64_t)t.T * D);
  if (t.passthrough) gi.SetGlobalBuffer((__gm__ int32_t *)ids, (uint64_t)t.T * K);
  if (t.has_gate) gg.SetGlobalBuffer((__gm__ TX *)gate, D);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bacc, bg, bred, brf;
  pipe.InitBuffer(qin, 2, bytes32(D * (sizeof(TX) > sizeof(TY) ? sizeof(TX) : sizeof(TY))));
  pipe.InitBuffer(qout, 2, bytes32(D * sizeof(TX)));
  pipe.InitBuffer(bacc, pad8(D) * 4);
  pipe.InitBuffer(bg, pad8(D) * 4);
  pipe.InitBuffer(bred, pad8(D) * 8 + 64);
  if constexpr (!F32) pipe.InitBuffer(brf, pad8(D) * 4);
  LocalTensor<float> acc = bacc.Get<float>(), gv = bg.Get<float>(), red = bred.Get<float>(), rf;
  if constexpr (!F32) rf = brf.Get<float>();
  DataCopyPadExtParams<TX> nopad{false, 0, 0, (TX)0.f};
  if (t.has_gate) {
    if constexpr (moec_same<TX, float>::value) {
      DataCopyPad(gv, gg, DataCopyExtParams{1, D * 4, 0, 0, 0}, nopad);
      moec_sync<HardEvent::MTE2_V>();
    } else {  // through red (scratch), widened into gv
      LocalTensor<TX> gh = bred.Get<TX>();
      DataCopyPad(gh, gg, DataCopyExtParams{1, (uint32_t)(D * sizeof(TX)), 0, 0, 0}, nopad);
      moec_sync<HardEvent::MTE2_V>();
      widen(gh, gv, D);
    }
  }
  const DataCopyExtParams row{1, (uint32_t)(D * sizeof(TX)), 0, 0, 0}, yrow{1, (uint32_t)(D * sizeof(TY)), 0, 0, 0};
  for (int64_t tok = GetBlockIdx(); tok < t.T; tok += GetBlockNum()) {
    Duplicate(acc, 0.0f, D);
    bool dropped = t.passthrough != 0;
    for (uint32_t j = 0; j < K; j++) {
      if (t.passthrough && gi.GetValue(tok * K + j) >= 0) dropped = false;
      LocalTensor<TY> vq = qin.AllocTensor<TY>();
      DataCopyPad(vq, gy[((uint64_t)tok * K + j) * D], yrow, DataCopyPadExtParams<TY>{false, 0, 0, (TY)0.f});
      qin.EnQue(vq);
      vq = qin.DeQue<TY>();
      LocalTensor<float> v = widen(vq, rf, D);
      if (t.weighted) Muls(v, v, (float)gw.GetValue(tok * K + j), D);
      Add(acc, acc, v, D);
      qin.FreeTensor(vq);
    }
    LocalTensor<TX> o = qout.AllocTensor<TX>();
    if (t.has_gate || dropped) {  // the token row x is needed
      LocalTensor<TX> xq = qin.AllocTensor<TX>();
      DataCopyPad(xq, gx[(uint64_t)tok * D], row, nopad);
      qin.EnQue(xq);
      xq = qin.DeQue<TX>();
      LocalTensor<float> xv = widen(xq, rf, D);
      if (t.has_gate) {  // Qwen2-MoE: sum of the shared experts times sigmoid(gate . x)
        // red: the products [0, P), ReduceSum's work [P, 2P), its result at 2P (no operand overlaps another)
        const uint32_t P = pad8(D);
        Mul(red, xv, gv, D);
        ReduceSum(red[2 * P], red, red[P], D);
        moec_sync<HardEvent::V_S>();
        float z = red.GetValue(2 * P);
        Duplicate(red, -z, 1);
        Exp(red, red, 1);
        moec_sync<HardEvent::V_S>();
        Muls(acc, acc, 1.0f / (1.0f + red.GetValue(0)), D);
      }
      if (dropped) Adds(acc, xv, 0.0f, D);
      qin.FreeTensor(xq);
    }
    if (t.has_shared) {
      LocalTensor<TX> sq = qin.AllocTensor<TX>();
      DataCopyPad(sq, gsh[(uint64_t)tok * D], row, nopad);
      qin.EnQue(sq);
      sq = qin.DeQue<TX>();
      Add(acc, acc, widen(sq, rf, D), D);
      qin.FreeTensor(sq);
    }
    narrow(o, acc, D);
    qout.EnQue(o);
    o = qout.DeQue<TX>();
    DataCopyPad(gout[(uint64_t)tok * D], o, row);
    qout.FreeTensor(o);
  }
}

extern "C" __global__ __aicore__ void moe_finalize(GM_ADDR y, GM_ADDR w, GM_ADDR shared, GM_ADDR x, GM_ADDR ids,
                                                  GM_ADDR gate, GM_ADDR out, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  if (t.xdt == 2 && t.ydt == 0) finalize_body<float, half>(y, w, shared, x, ids, gate, out, t);
  else if (t.xdt == 2) finalize_body<half, half>(y, w, shared, x, ids, gate, out, t);
  else if (t.xdt == 1 && t.ydt == 0) finalize_body<float, bfloat16_t>(y, w, shared, x, ids, gate, out, t);
  else if (t.xdt == 1) finalize_body<bfloat16_t, bfloat16_t>(y, w, shared, x, ids, gate, out, t);
  else finalize_body<float, float>(y, w, shared, x, ids, gate, out, t);
}

// ------------------------------------------------------------------------------------------------
extern "C" __global__ __aicore__ void matmul_rows(GM_ADDR a, GM_ADDR bT, GM_ADDR c, GM_ADDR workspace,
                                                 GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  const uint32_t M = t.M, N = t.N, Kd = t.Kd, kt = t.kt;
  GlobalTensor<float> ga, gb, gc;
  ga.SetGlobalBuffer((__gm__ float *)a, (uint64_t)M * Kd);
  gb.SetGlobalBuffer((__gm__ float *)bT, (uint64_t)N * Kd);
  gc.SetGlobalBuffer((__gm__ float *)c, (uint64_t)M * N);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qa, qw;
  TQue<TPosition::VECOUT, 2> qc;
  TBuf<TPosition::VECCALC> btmp, bred;
  pipe.InitBuffer(qa, 2, pad8(Kd) * 4);
  pipe.InitBuffer(qw, 2, pad8(kt) * 4);
  pipe.InitBuffer(qc, 2, pad8(N) * 4);
  pipe.InitBuffer(btmp, pad8(kt) * 4);
  pipe.InitBuffer(bred, pad8(kt) * 4 + 64);
  LocalTensor<float> tmp = btmp.Get<float>(), red = bred.Get<float>();
  DataCopyPadExtParams<float> nopad{false, 0, 0, 0.f};
  for (int64_t r = GetBlockIdx(); r < M; r += GetBlockNum()) {
    LocalTensor<float> av = qa.AllocTensor<float>();
    DataCopyPad(av, ga[(uint64_t)r * Kd], DataCopyExtParams{1, Kd * 4, 0, 0, 0}, nopad);
    qa.EnQue(av);
    av = qa.DeQue<float>();
    LocalTensor<float> cv = qc.AllocTensor<float>();
    for (uint32_t n = 0; n < N; n++) cv.SetValue(n, dot_row(av, gb[(uint64_t)n * Kd], Kd, kt, qw, tmp, red));
    qa.FreeTensor(av);
    qc.EnQue(cv);
    cv = qc.DeQue<float>();
    DataCopyPad(gc[(uint64_t)r * N], cv, DataCopyExtParams{1, N * 4, 0, 0, 0});
    qc.FreeTensor(cv);
  }
}

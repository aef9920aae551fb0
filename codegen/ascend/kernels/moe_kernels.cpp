// moec AscendC kernels for MoE layers (vector cores), mirroring CANN's decomposition:
//   moe_gating        scores (softmax / sigmoid), selection bias, group-limited top-k, renorm, scaling
//   moe_init_routing  stable sort of the (expert, slot) pairs, per-expert offsets, capacity drops
//   moe_expert_ffn    per sorted row: gate/up projections, activation, down projection, routing weight
//   moe_finalize      weighted sum of the k slots + shared experts (+ gate), Switch pass-through
//   matmul_rows       out[r, n] = a[r, :] . bT[n, :]  (router and other constant-weight matmuls)
// Shapes that vary per call (tokens) travel in the tiling struct; blocks split rows round-robin.
// Copies use TQue double buffering (num 2) for the streamed weight tiles; all GM<->UB moves of rows
// use DataCopyPad (any length).  The grouped matmuls run on the vector units in this version (dot
// products tile by tile); the cube path is not emitted yet (see the README of the emitted folder).
#include "kernel_operator.h"
using namespace AscendC;

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
};

__aicore__ inline void load_tiling(GM_ADDR tiling, MoeTiling &t) {
  GlobalTensor<int32_t> g;
  g.SetGlobalBuffer((__gm__ int32_t *)tiling, sizeof(MoeTiling) / 4);
  int32_t *dst = reinterpret_cast<int32_t *>(&t);
  for (uint32_t i = 0; i < sizeof(MoeTiling) / 4; i++) dst[i] = g.GetValue(i);
}

__aicore__ inline uint32_t pad8(uint32_t n) { return (n + 7) / 8 * 8; }

// ------------------------------------------------------------------------------------------------
extern "C" __global__ __aicore__ void moe_gating(GM_ADDR logits, GM_ADDR bias, GM_ADDR w_out, GM_ADDR ids_out,
                                                GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  const uint32_t E = t.E, K = t.K, EP = pad8(E), KP = pad8(K);
  GlobalTensor<float> gl, gb, gw;
  GlobalTensor<int32_t> gi;
  gl.SetGlobalBuffer((__gm__ float *)logits, (uint64_t)t.T * E);
  gw.SetGlobalBuffer((__gm__ float *)w_out, (uint64_t)t.T * K);
  gi.SetGlobalBuffer((__gm__ int32_t *)ids_out, (uint64_t)t.T * K);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qw, qi;
  TBuf<TPosition::VECCALC> bs, bc, bwork, bbias;
  pipe.InitBuffer(qin, 2, EP * 4);
  pipe.InitBuffer(qw, 2, KP * 4);
  pipe.InitBuffer(qi, 2, KP * 4);
  pipe.InitBuffer(bs, EP * 4);
  pipe.InitBuffer(bc, EP * 4);
  pipe.InitBuffer(bwork, EP * 4 + 64);
  pipe.InitBuffer(bbias, EP * 4);
  LocalTensor<float> s = bs.Get<float>(), c = bc.Get<float>(), work = bwork.Get<float>(), vb = bbias.Get<float>();
  DataCopyPadExtParams<float> nopad{false, 0, 0, 0.f};
  if (t.has_bias) {
    gb.SetGlobalBuffer((__gm__ float *)bias, E);
    DataCopyPad(vb, gb, DataCopyExtParams{1, E * 4, 0, 0, 0}, nopad);
  }
  for (int64_t tok = GetBlockIdx(); tok < t.T; tok += GetBlockNum()) {
    LocalTensor<float> x = qin.AllocTensor<float>();
    DataCopyPad(x, gl[tok * E], DataCopyExtParams{1, E * 4, 0, 0, 0}, nopad);
    qin.EnQue(x);
    x = qin.DeQue<float>();
    if (t.scoring == 0) {  // softmax
      ReduceMax(work, x, c, E);
      float m = work.GetValue(0);
      Adds(s, x, -m, E);
      Exp(s, s, E);
      ReduceSum(work, s, c, E);
      Muls(s, s, 1.0f / work.GetValue(0), E);
    } else if (t.scoring == 1) {  // sigmoid = 1 / (1 + exp(-x))
      Muls(s, x, -1.0f, E);
      Exp(s, s, E);
      Adds(s, s, 1.0f, E);
      Reciprocal(s, s, E);
    } else {
      Adds(s, x, 0.0f, E);
    }
    qin.FreeTensor(x);
    if (t.has_bias) Add(c, s, vb, E); else Adds(c, s, 0.0f, E);
    // group-limited selection (scalar: E <= a few hundred)
    const float NEG = -3.0e38f;
    if (t.n_group > 1) {
      uint32_t gs = E / t.n_group;
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
      for (uint32_t e = 0; e < E; e++)
        if (!(keep & (1u << (e / gs)))) c.SetValue(e, NEG * 2);
    }
    LocalTensor<float> wv = qw.AllocTensor<float>();
    LocalTensor<int32_t> iv = qi.AllocTensor<int32_t>();
    float sum = 0.f, asum = 0.f;
    for (uint32_t j = 0; j < K; j++) {  // top-k, ties -> lowest index
      float best = 0.f;
      int32_t bi = -1;
      for (uint32_t e = 0; e < E; e++) {
        float v = c.GetValue(e);
        if (v > NEG && (bi < 0 || v > best)) { best = v; bi = (int32_t)e; }
      }
      c.SetValue(bi, NEG * 2);
      float w = s.GetValue(bi);
      wv.SetValue(j, w);
      iv.SetValue(j, bi);
    }
    if (t.post == 1) {  // softmax over the k selected
      float m = wv.GetValue(0);
      for (uint32_t j = 1; j < K; j++) m = wv.GetValue(j) > m ? wv.GetValue(j) : m;
      Adds(wv, wv, -m, K);
      Exp(wv, wv, K);
    } else if (t.post == 2) {
      Muls(wv, wv, -1.0f, K);
      Exp(wv, wv, K);
      Adds(wv, wv, 1.0f, K);
      Reciprocal(wv, wv, K);
    }
    for (uint32_t j = 0; j < K; j++) {
      float w = wv.GetValue(j);
      sum += w;
      asum += w < 0 ? -w : w;
    }
    float denom = t.post == 1 ? sum : (t.norm == 1 ? sum + t.norm_eps : (t.norm == 2 ? asum + t.norm_eps : 1.0f));
    Muls(wv, wv, t.scale / denom, K);
    if (t.post == 1 && t.norm != 0) {  // renormalise after the softmax too (sums to 1 already, + eps)
      Muls(wv, wv, 1.0f / (1.0f + t.norm_eps), K);
    }
    qw.EnQue(wv);
    qi.EnQue(iv);
    wv = qw.DeQue<float>();
    iv = qi.DeQue<int32_t>();
    DataCopyPad(gw[tok * K], wv, DataCopyExtParams{1, K * 4, 0, 0, 0});
    DataCopyPad(gi[tok * K], iv, DataCopyExtParams{1, K * 4, 0, 0, 0});
    qw.FreeTensor(wv);
    qi.FreeTensor(iv);
  }
}

// ------------------------------------------------------------------------------------------------
// One core: counting sort of the T*K slots by expert (stable), offsets[E+1]; with a capacity C,
// the (C+1)-th and later slots of an expert (in slot order) are dropped: id -1, weight 0.
extern "C" __global__ __aicore__ void moe_init_routing(GM_ADDR ids, GM_ADDR w, GM_ADDR sorted, GM_ADDR offsets,
                                                      GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  if (GetBlockIdx() != 0) return;
  MoeTiling t;
  load_tiling(tiling, t);
  const uint32_t N = (uint32_t)t.T * t.K, E = t.E;
  GlobalTensor<int32_t> gi, gs, go;
  GlobalTensor<float> gw;
  gi.SetGlobalBuffer((__gm__ int32_t *)ids, N);
  gw.SetGlobalBuffer((__gm__ float *)w, N);
  gs.SetGlobalBuffer((__gm__ int32_t *)sorted, N);
  go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
  TPipe pipe;
  TBuf<TPosition::VECCALC> bcnt;
  pipe.InitBuffer(bcnt, pad8(E + 1) * 4);
  LocalTensor<int32_t> cnt = bcnt.Get<int32_t>();
  for (uint32_t e = 0; e <= E; e++) cnt.SetValue(e, 0);
  for (uint32_t i = 0; i < N; i++) {
    int32_t e = gi.GetValue(i);
    if (e < 0) continue;
    if (t.capacity > 0 && cnt.GetValue(e) >= t.capacity) {
      gi.SetValue(i, -1);
      gw.SetValue(i, 0.0f);
      continue;
    }
    cnt.SetValue(e, cnt.GetValue(e) + 1);
  }
  int32_t acc = 0;
  for (uint32_t e = 0; e < E; e++) {
    int32_t c = cnt.GetValue(e);
    go.SetValue(e, acc);
    cnt.SetValue(e, acc);
    acc += c;
  }
  go.SetValue(E, acc);
  for (uint32_t i = 0; i < N; i++) {
    int32_t e = gi.GetValue(i);
    if (e < 0) continue;
    int32_t p = cnt.GetValue(e);
    gs.SetValue(p, (int32_t)i);
    cnt.SetValue(e, p + 1);
  }
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
  for (uint32_t i = 0; i < n; i++)    // odd function
    if (x.GetValue(i) < 0) y.SetValue(i, -y.GetValue(i));
}

__aicore__ inline void sigmoid_vec(const LocalTensor<float> &y, const LocalTensor<float> &x, float alpha, uint32_t n) {
  Muls(y, x, -alpha, n);
  Exp(y, y, n);
  Adds(y, y, 1.0f, n);
  Reciprocal(y, y, n);
}

extern "C" __global__ __aicore__ void moe_expert_ffn(GM_ADDR x, GM_ADDR sorted, GM_ADDR offsets, GM_ADDR w_in,
                                                    GM_ADDR w_out, GM_ADDR b_in, GM_ADDR b_out, GM_ADDR rw,
                                                    GM_ADDR y, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  const uint32_t D = t.D, F = t.F, I = t.I, E = t.E, kt = t.kt;
  const uint32_t rows = t.shared ? (uint32_t)t.T * E : 0;
  GlobalTensor<float> gx, gwi, gwo, gbi, gbo, grw, gy;
  GlobalTensor<int32_t> gs, go;
  gx.SetGlobalBuffer((__gm__ float *)x, (uint64_t)t.T * D);
  gwi.SetGlobalBuffer((__gm__ float *)w_in, (uint64_t)E * I * D);
  gwo.SetGlobalBuffer((__gm__ float *)w_out, (uint64_t)E * D * F);
  uint32_t nrows = rows;
  if (!t.shared) {
    go.SetGlobalBuffer((__gm__ int32_t *)offsets, E + 1);
    nrows = (uint32_t)go.GetValue(E);
    gs.SetGlobalBuffer((__gm__ int32_t *)sorted, (uint64_t)t.T * t.K);
  }
  if (t.has_b_in) gbi.SetGlobalBuffer((__gm__ float *)b_in, (uint64_t)E * I);
  if (t.has_b_out) gbo.SetGlobalBuffer((__gm__ float *)b_out, (uint64_t)E * D);
  if (t.weights_at) grw.SetGlobalBuffer((__gm__ float *)rw, (uint64_t)t.T * t.K);
  const uint32_t KS = t.shared ? E : t.K;
  gy.SetGlobalBuffer((__gm__ float *)y, (uint64_t)t.T * KS * D);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qx, qw;
  TQue<TPosition::VECOUT, 2> qy;
  TBuf<TPosition::VECCALC> bh, ba, btmp, bred, bt1, bt2, bt3;
  uint32_t kmax = D > F ? D : F;
  pipe.InitBuffer(qx, 2, pad8(D) * 4);
  pipe.InitBuffer(qw, 2, pad8(kt) * 4);
  pipe.InitBuffer(qy, 2, pad8(D) * 4);
  pipe.InitBuffer(bh, pad8(I) * 4);
  pipe.InitBuffer(ba, pad8(F) * 4);
  pipe.InitBuffer(btmp, pad8(kt) * 4);
  pipe.InitBuffer(bred, pad8(kt) * 4 + 64);
  pipe.InitBuffer(bt1, pad8(kmax) * 4);
  pipe.InitBuffer(bt2, pad8(kmax) * 4);
  pipe.InitBuffer(bt3, pad8(kmax) * 4);
  LocalTensor<float> h = bh.Get<float>(), a = ba.Get<float>(), tmp = btmp.Get<float>(), red = bred.Get<float>();
  LocalTensor<float> t1 = bt1.Get<float>(), t2 = bt2.Get<float>(), t3 = bt3.Get<float>();
  DataCopyPadExtParams<float> nopad{false, 0, 0, 0.f};
  for (int64_t p = GetBlockIdx(); p < (int64_t)nrows; p += GetBlockNum()) {
    int32_t slot, e;
    int64_t tok;
    if (t.shared) {
      tok = p / E;
      e = (int32_t)(p % E);
      slot = (int32_t)p;
    } else {
      slot = gs.GetValue(p);
      e = 0;
      while (go.GetValue(e + 1) <= p) e++;
      tok = slot / t.K;
    }
    LocalTensor<float> xv = qx.AllocTensor<float>();
    DataCopyPad(xv, gx[tok * D], DataCopyExtParams{1, D * 4, 0, 0, 0}, nopad);
    qx.EnQue(xv);
    xv = qx.DeQue<float>();
    float r = t.weights_at ? grw.GetValue(slot) : 1.0f;
    if (t.weights_at == 1) Muls(xv, xv, r, D);  // Llama-4: the routing weight scales the input
    for (uint32_t i = 0; i < I; i++) {
      float v = dot_row(xv, gwi[((uint64_t)e * I + i) * D], D, kt, qw, tmp, red);
      if (t.has_b_in) v += gbi.GetValue((uint64_t)e * I + i);
      h.SetValue(i, v);
    }
    qx.FreeTensor(xv);
    if (t.act == 0) {  // gated: a = G * sigmoid(alpha G) * (U + beta), G/U clamped when limit is set
      LocalTensor<float> g = t1, u = t2;
      for (uint32_t f = 0; f < F; f++) {
        g.SetValue(f, h.GetValue(t.interleaved ? 2 * f : f));
        u.SetValue(f, h.GetValue(t.interleaved ? 2 * f + 1 : F + f));
      }
      if (t.clamp) {
        Mins(g, g, t.limit, F);
        Mins(u, u, t.limit, F);
        Maxs(u, u, -t.limit, F);
      }
      sigmoid_vec(a, g, t.alpha, F);
      Mul(a, a, g, F);
      Adds(u, u, t.beta, F);
      Mul(a, a, u, F);
    } else if (t.act == 1) {  // gelu (erf)
      Muls(t1, h, 0.70710678118654752f, F);
      erf_vec(a, t1, t2, t3, F);
      Adds(a, a, 1.0f, F);
      Mul(a, a, h, F);
      Muls(a, a, 0.5f, F);
    } else if (t.act == 2) {  // gelu tanh: 0.5 h (1 + tanh(y)), tanh(y) = 2 sigmoid(2y) - 1
      Mul(t1, h, h, F);
      Mul(t1, t1, h, F);
      Muls(t1, t1, 0.044715f, F);
      Add(t1, t1, h, F);
      sigmoid_vec(t2, t1, 2.0f * 0.7978845608028654f, F);
      Muls(t2, t2, 2.0f, F);
      Mul(a, t2, h, F);
      Muls(a, a, 0.5f, F);
    } else if (t.act == 3) {
      Relu(a, h, F);
    } else if (t.act == 4) {
      sigmoid_vec(a, h, 1.0f, F);
      Mul(a, a, h, F);
    } else {
      Adds(a, h, 0.0f, F);
    }
    LocalTensor<float> yv = qy.AllocTensor<float>();
    for (uint32_t d = 0; d < D; d++) {
      float v = dot_row(a, gwo[((uint64_t)e * D + d) * F], F, kt, qw, tmp, red);
      if (t.has_b_out) v += gbo.GetValue((uint64_t)e * D + d);
      yv.SetValue(d, t.weights_at == 2 ? v * r : v);
    }
    qy.EnQue(yv);
    yv = qy.DeQue<float>();
    DataCopyPad(gy[(uint64_t)slot * D], yv, DataCopyExtParams{1, D * 4, 0, 0, 0});
    qy.FreeTensor(yv);
  }
}

// ------------------------------------------------------------------------------------------------
extern "C" __global__ __aicore__ void moe_finalize(GM_ADDR y, GM_ADDR w, GM_ADDR shared, GM_ADDR x, GM_ADDR ids,
                                                  GM_ADDR gate, GM_ADDR out, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MoeTiling t;
  load_tiling(tiling, t);
  const uint32_t D = t.D, K = t.K;
  GlobalTensor<float> gy, gw, gsh, gx, gg, gout;
  GlobalTensor<int32_t> gi;
  gy.SetGlobalBuffer((__gm__ float *)y, (uint64_t)t.T * K * D);
  gout.SetGlobalBuffer((__gm__ float *)out, (uint64_t)t.T * D);
  if (t.weighted) gw.SetGlobalBuffer((__gm__ float *)w, (uint64_t)t.T * K);
  if (t.has_shared) gsh.SetGlobalBuffer((__gm__ float *)shared, (uint64_t)t.T * D);
  if (t.passthrough || t.has_gate) gx.SetGlobalBuffer((__gm__ float *)x, (uint64_t)t.T * D);
  if (t.passthrough) gi.SetGlobalBuffer((__gm__ int32_t *)ids, (uint64_t)t.T * K);
  if (t.has_gate) gg.SetGlobalBuffer((__gm__ float *)gate, D);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qin;
  TQue<TPosition::VECOUT, 2> qout;
  TBuf<TPosition::VECCALC> bacc, bg, bred;
  pipe.InitBuffer(qin, 2, pad8(D) * 4);
  pipe.InitBuffer(qout, 2, pad8(D) * 4);
  pipe.InitBuffer(bacc, pad8(D) * 4);
  pipe.InitBuffer(bg, pad8(D) * 4);
  pipe.InitBuffer(bred, pad8(D) * 8 + 64);
  LocalTensor<float> acc = bacc.Get<float>(), gv = bg.Get<float>(), red = bred.Get<float>();
  DataCopyPadExtParams<float> nopad{false, 0, 0, 0.f};
  if (t.has_gate) DataCopyPad(gv, gg, DataCopyExtParams{1, D * 4, 0, 0, 0}, nopad);
  for (int64_t tok = GetBlockIdx(); tok < t.T; tok += GetBlockNum()) {
    Duplicate(acc, 0.0f, D);
    bool dropped = t.passthrough != 0;
    for (uint32_t j = 0; j < K; j++) {
      if (t.passthrough && gi.GetValue(tok * K + j) >= 0) dropped = false;
      LocalTensor<float> v = qin.AllocTensor<float>();
      DataCopyPad(v, gy[((uint64_t)tok * K + j) * D], DataCopyExtParams{1, D * 4, 0, 0, 0}, nopad);
      qin.EnQue(v);
      v = qin.DeQue<float>();
      if (t.weighted) Muls(v, v, gw.GetValue(tok * K + j), D);
      Add(acc, acc, v, D);
      qin.FreeTensor(v);
    }
    LocalTensor<float> o = qout.AllocTensor<float>();
    if (t.has_gate || dropped) {  // the token row x is needed
      LocalTensor<float> xv = qin.AllocTensor<float>();
      DataCopyPad(xv, gx[(uint64_t)tok * D], DataCopyExtParams{1, D * 4, 0, 0, 0}, nopad);
      qin.EnQue(xv);
      xv = qin.DeQue<float>();
      if (t.has_gate) {  // Qwen2-MoE: sum of the shared experts times sigmoid(gate . x)
        Mul(red, xv, gv, D);
        ReduceSum(red, red, red[pad8(D)], D);
        float z = red.GetValue(0);
        Duplicate(red, -z, 1);
        Exp(red, red, 1);
        Muls(acc, acc, 1.0f / (1.0f + red.GetValue(0)), D);
      }
      if (dropped) Adds(acc, xv, 0.0f, D);
      qin.FreeTensor(xv);
    }
    if (t.has_shared) {
      LocalTensor<float> sv = qin.AllocTensor<float>();
      DataCopyPad(sv, gsh[(uint64_t)tok * D], DataCopyExtParams{1, D * 4, 0, 0, 0}, nopad);
      qin.EnQue(sv);
      sv = qin.DeQue<float>();
      Add(acc, acc, sv, D);
      qin.FreeTensor(sv);
    }
    Adds(o, acc, 0.0f, D);
    qout.EnQue(o);
    o = qout.DeQue<float>();
    DataCopyPad(gout[(uint64_t)tok * D], o, DataCopyExtParams{1, D * 4, 0, 0, 0});
    qout.FreeTensor(o);
  }
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

// moec AscendC vector (AIV) kernels for the ordinary ops of a graph, so that whole graphs, not only
// their MoE layers, run on the NPU (codegen/ascend/vector_ops.py decides what runs here):
//   vec_elementwise  c = f(a) (unary) or c = a (op) b (binary) over the output viewed as [rows, cols];
//                    each operand is full, one scalar, one row broadcast over the rows, or one value per
//                    row (column broadcast).  Work items are groups of whole rows (or, for rows longer
//                    than a tile, chunks of one row), dealt round-robin to the blocks.
//   vec_rowwise      per row of cols (the last axis): sum / mean / max / min, softmax, log-softmax,
//                    RMS norm, layer norm (+ its mean and 1/std).  A block owns a contiguous row range,
//                    so its per-row results leave in one copy per tile of rows.
// Every row sits 32-byte aligned in the Unified Buffer (DataCopyPad pads it), so each vector
// instruction starts aligned; streamed tiles use double-buffered queues (num 2).
// Types (t.dt): the tensors in GM are float or half (f16 models); the math is float either way: half tiles
// are widened by Cast after the copy in (exact) and rounded by Cast (nearest, ties to even) before the
// copy out, so an f16 op rounds once, like onnxruntime's f16 kernels that compute in f32.  A half row is
// padded to 16 elements (32 bytes) in the Unified Buffer, a float row to 8; the float copy of a half tile
// keeps the half layout (row stride a multiple of 16 elements, still 32-byte aligned).  Layer norm's mean
// and 1/std outputs are float for both.
#include "kernel_operator.h"
using namespace AscendC;

#include "moec_kernel_common.h"

enum VecOp : int32_t {
  V_NEG = 0, V_ABS, V_SQRT, V_RECIP, V_EXP, V_LOG, V_RELU, V_SIGMOID, V_TANH, V_CLIP, V_SQUARE, V_COPY,
  V_LOG1P, V_FLOOR, V_CEIL, V_SIGN, V_ERF, V_GELU, V_GELU_TANH, V_RSQRT,
  V_ADD = 32, V_SUB, V_MUL, V_DIV, V_MAX, V_MIN,
  V_RSUM = 64, V_RMEAN, V_RMAX, V_RMIN, V_SOFTMAX, V_LOGSOFTMAX, V_RMSNORM, V_LAYERNORM, V_RL2, V_RL1,
};
enum VecBcast : int32_t { B_FULL = 0, B_SCALAR = 1, B_ROW = 2, B_COL = 3 };

struct VecTiling {
  int32_t rows, cols;   // output (elementwise) or input (rowwise) viewed as [rows, cols]
  int32_t op;           // VecOp
  int32_t amode, bmode; // VecBcast of a and b (elementwise)
  int32_t tile;         // f32 elements per tile buffer, a multiple of 8 (the host sizes it from the UB)
  float s0, s1;         // clip bounds; norm epsilon in s0
  int32_t has_bias;     // layer norm
  int32_t dt;           // GM type of the operands and results: 0 float, 1 bfloat16_t, 2 half (layer-norm statistics: float)
};

// n rounded up to a whole 32-byte block of T (8 floats, 16 halves): a row's stride in the Unified Buffer
template <typename T>
__aicore__ inline uint32_t vpadb(uint32_t n) { return (n + 32 / sizeof(T) - 1) / (32 / sizeof(T)) * (32 / sizeof(T)); }

__aicore__ inline uint64_t operand_extent(int32_t mode, uint32_t R, uint32_t C) {
  return mode == B_SCALAR ? 1 : mode == B_ROW ? C : mode == B_COL ? R : (uint64_t)R * C;
}

// d = x (op) y over n elements
__aicore__ inline void bin_vv(int32_t op, const LocalTensor<float> &d, const LocalTensor<float> &x,
                              const LocalTensor<float> &y, uint32_t n) {
  switch (op) {
    case V_ADD: Add(d, x, y, n); break;
    case V_SUB: Sub(d, x, y, n); break;
    case V_MUL: Mul(d, x, y, n); break;
    case V_DIV: Div(d, x, y, n); break;
    case V_MAX: Max(d, x, y, n); break;
    default: Min(d, x, y, n); break;
  }
}

// d = x (op) s, or s (op) x when left; tmp (n elements) for the forms without a scalar instruction
__aicore__ inline void bin_vs(int32_t op, const LocalTensor<float> &d, const LocalTensor<float> &x, float s,
                              bool left, const LocalTensor<float> &tmp, uint32_t n) {
  switch (op) {
    case V_ADD: Adds(d, x, s, n); return;
    case V_MUL: Muls(d, x, s, n); return;
    case V_MAX: Maxs(d, x, s, n); return;
    case V_MIN: Mins(d, x, s, n); return;
    case V_SUB:
      if (left) { Muls(d, x, -1.0f, n); Adds(d, d, s, n); }  // s - x = (-x) + s, both steps exact
      else Adds(d, x, -s, n);
      return;
    default:  // division: no scalar form (x * (1/s) would round twice)
      Duplicate(tmp, s, n);
      if (left) Div(d, tmp, x, n);
      else Div(d, x, tmp, n);
      return;
  }
}

// q = erfc(|z|) ~ t P(t) exp(-z^2), t = 1 / (1 + p |z|), z = x * zs: Abramowitz & Stegun 7.1.26 (the error of
// erf = 1 - q is below 1.5e-7 absolute); x is kept, tmp is scratch
__aicore__ inline void erfc_abs(const LocalTensor<float> &q, const LocalTensor<float> &x, const LocalTensor<float> &tmp,
                                float zs, uint32_t n) {
  Abs(tmp, x, n);
  Muls(tmp, tmp, 0.3275911f * zs, n);
  Adds(tmp, tmp, 1.0f, n);
  Reciprocal(tmp, tmp, n);            // t
  Muls(q, tmp, 1.061405429f, n);
  Adds(q, q, -1.453152027f, n);
  Mul(q, q, tmp, n);
  Adds(q, q, 1.421413741f, n);
  Mul(q, q, tmp, n);
  Adds(q, q, -0.284496736f, n);
  Mul(q, q, tmp, n);
  Adds(q, q, 0.254829592f, n);
  Mul(q, q, tmp, n);                  // t P(t)
  Mul(tmp, x, x, n);
  Muls(tmp, tmp, -zs * zs, n);
  Exp(tmp, tmp, n);                   // exp(-z^2)
  Mul(q, q, tmp, n);
}
// s = sign(x) for every x but NaN: clip(x * 2^126, -1, 1) twice (+-1 down to the least subnormal, +-0 for +-0)
__aicore__ inline void sign_clip(const LocalTensor<float> &s, const LocalTensor<float> &x, uint32_t n) {
  Muls(s, x, 8.507059e37f, n); Maxs(s, s, -1.0f, n); Mins(s, s, 1.0f, n);
  Muls(s, s, 8.507059e37f, n); Maxs(s, s, -1.0f, n); Mins(s, s, 1.0f, n);
}

// bits: n / 8 bytes (rounded up to a whole Compare repeat) for the ops that Compare (sign's NaN, erf's branch), tmp2
// a second scratch tile; the tiles hold a whole number of 64-float repeats (the host sizes the tile so)
__aicore__ inline void unary(int32_t op, const LocalTensor<float> &d, const LocalTensor<float> &x,
                             const LocalTensor<float> &tmp, const LocalTensor<float> &tmp2,
                             const LocalTensor<uint8_t> &bits, float s0, float s1, uint32_t n) {
  switch (op) {
    case V_NEG: Muls(d, x, -1.0f, n); break;
    case V_ABS: Abs(d, x, n); break;
    case V_SQRT: Sqrt(d, x, n); break;
    case V_RECIP: Duplicate(tmp, 1.0f, n); Div(d, tmp, x, n); break;
    case V_EXP: Exp(d, x, n); break;
    case V_LOG: Ln(d, x, n); break;
    case V_RELU: Relu(d, x, n); break;
    case V_SIGMOID:  // 1 / (1 + exp(-x))
      Muls(d, x, -1.0f, n); Exp(d, d, n); Adds(d, d, 1.0f, n);
      Duplicate(tmp, 1.0f, n); Div(d, tmp, d, n);
      break;
    case V_TANH:  // 1 - 2 / (exp(2x) + 1): exact limits +-1, absolute error ~1 ulp of 1
      Muls(d, x, 2.0f, n); Exp(d, d, n); Adds(d, d, 1.0f, n);
      Duplicate(tmp, -2.0f, n); Div(d, tmp, d, n); Adds(d, d, 1.0f, n);
      break;
    case V_CLIP: Maxs(d, x, s0, n); Mins(d, d, s1, n); break;
    case V_RSQRT: Sqrt(d, x, n); Duplicate(tmp, 1.0f, n); Div(d, tmp, d, n); break;  // pow(x, -0.5)
    case V_SQUARE: Mul(d, x, x, n); break;
    case V_LOG1P:  // ln(u) - ((uc - 1) - xc) / max(u, 0.5), u = x + 1, xc = clip(x, -0.5, 2^24), uc = xc + 1:
      // the correction is the rounding error of 1 + x over u (exact: (uc - 1) - xc is that error), so
      // log1p(x) = x for |x| below half an ulp of 1; x <= -0.5 makes it 0 (1 + x exact), so ln(0) = -inf at -1
      Maxs(tmp, x, -0.5f, n); Mins(tmp, tmp, 16777216.0f, n);
      Adds(d, tmp, 1.0f, n); Adds(d, d, -1.0f, n); Sub(tmp, d, tmp, n);
      Adds(d, x, 1.0f, n); Maxs(x, d, 0.5f, n);   // (x: the staged operand, not read again)
      Div(tmp, tmp, x, n); Ln(d, d, n); Sub(d, d, tmp, n);
      break;
    case V_FLOOR: Cast(d, x, RoundMode::CAST_FLOOR, n); break;  // float -> float, rounded to an integer value
    case V_CEIL: Cast(d, x, RoundMode::CAST_CEIL, n); break;
    case V_SIGN: {  // sign_clip, then NaN where x is NaN (x == x is false only there: Compare is IEEE; Max/Min
                    // do not propagate NaN) -- numpy's sign(NaN) = NaN
      sign_clip(d, x, n);
      const uint32_t mp = (n + 63) / 64 * 64;
      Compare(bits, x, x, CMPMODE::EQ, mp);
      Select(d, bits, d, x, SELMODE::VSEL_TENSOR_TENSOR_MODE, mp);
      break;
    }
    case V_ERF: {  // |x| < 0.5: the Taylor series to x^13 (relative error below 3e-8, +-0 kept); else sign(x) (1 -
                   // erfc|x|) (absolute error below 1.5e-7, relative below 3e-7 there); NaN stays NaN (q is)
      const uint32_t mp = (n + 63) / 64 * 64;
      static constexpr float c[7] = {1.0f, -1.0f / 3, 1.0f / 10, -1.0f / 42, 1.0f / 216, -1.0f / 1320, 1.0f / 9360};
      Mul(tmp, x, x, mp);
      Muls(tmp2, tmp, c[6], mp);
      for (int i = 5; i >= 0; i--) {
        Adds(tmp2, tmp2, c[i], mp);
        if (i) Mul(tmp2, tmp2, tmp, mp);
      }
      Mul(tmp2, tmp2, x, mp);
      Muls(tmp2, tmp2, 1.1283791670955126f, mp);   // 2 / sqrt(pi)
      Abs(tmp, x, mp);
      Duplicate(d, 0.5f, (int32_t)mp);
      Compare(bits, tmp, d, CMPMODE::LT, mp);
      erfc_abs(d, x, tmp, 1.0f, n);
      Muls(d, d, -1.0f, n); Adds(d, d, 1.0f, n);
      sign_clip(tmp, x, n);
      Mul(d, d, tmp, n);
      Select(d, bits, tmp2, d, SELMODE::VSEL_TENSOR_TENSOR_MODE, mp);
      break;
    }
    case V_GELU:  // x (1 + erf(x / sqrt 2)) / 2 with 1 + erf(z) = (1 + s) - s q (s = sign x, q = erfc|z|): for x < 0
                  // that is q itself, no cancellation
      erfc_abs(d, x, tmp, 0.70710678118654752f, n);
      sign_clip(tmp, x, n);
      Mul(d, d, tmp, n);
      Adds(tmp, tmp, 1.0f, n);
      Sub(d, tmp, d, n);
      Muls(d, d, 0.5f, n);  // halved before the product: x (1 + erf) itself may overflow
      Mul(d, d, x, n);
      break;
    case V_GELU_TANH:  // x (1 + tanh y) / 2 = x / (1 + exp(-2y)), y = sqrt(2/pi) (x + 0.044715 x^3): no cancellation
      Mul(d, x, x, n); Mul(d, d, x, n); Muls(d, d, 0.044715f, n); Add(d, d, x, n);
      Muls(d, d, -2.0f * 0.7978845608028654f, n); Exp(d, d, n); Adds(d, d, 1.0f, n);
      Div(d, x, d, n);
      break;
    default: Muls(d, x, 1.0f, n); break;  // copy (keeps -0 and NaN)
  }
}

// ------------------------------------------------------------------------------------------------
// stage a streamed operand of elementwise_body: a full one as nr padded rows [r0, r0 + nr) x [c0, c0 + nc)
// of the [*, C] operand, a broadcast row as one padded row; returns its float view (a half tile widened)
template <typename T>
__aicore__ inline LocalTensor<float> stage_operand(TQue<TPosition::VECIN, 2> &q, const GlobalTensor<T> &g, int32_t mode,
                                                  LocalTensor<T> &raw, const LocalTensor<float> &f, uint32_t r0,
                                                  uint32_t nr, uint32_t c0, uint32_t nc, uint32_t C) {
  const uint32_t ncp = vpadb<T>(nc);
  const uint32_t nb = nc * sizeof(T), gap = (C - nc) * sizeof(T);
  const DataCopyPadExtParams<T> nopad{false, 0, 0, (T)0.f};
  raw = q.AllocTensor<T>();
  if (mode == B_FULL)
    DataCopyPad(raw, g[(uint64_t)r0 * C + c0], DataCopyExtParams{(uint16_t)nr, nb, gap, 0, 0}, nopad);
  else
    DataCopyPad(raw, g[c0], DataCopyExtParams{1, nb, 0, 0, 0}, nopad);
  q.EnQue(raw);
  raw = q.DeQue<T>();
  return widen(raw, f, mode == B_FULL ? nr * ncp : ncp);
}

template <typename T>
__aicore__ inline void elementwise_body(GM_ADDR a, GM_ADDR b, GM_ADDR c, const VecTiling &t) {
  constexpr bool F32 = moec_same<T, float>::value;
  const uint32_t R = t.rows, C = t.cols, TL = t.tile;  // TL: a multiple of 32 / sizeof(T) elements
  const bool binary = t.op >= V_ADD;
  GlobalTensor<T> ga, gb, gc;
  ga.SetGlobalBuffer((__gm__ T *)a, operand_extent(t.amode, R, C));
  if (binary) gb.SetGlobalBuffer((__gm__ T *)b, operand_extent(t.bmode, R, C));
  gc.SetGlobalBuffer((__gm__ T *)c, (uint64_t)R * C);
  // tile geometry: whole rows when a row fits in a tile, else chunks of TL columns of one row
  const bool whole = C <= TL;
  const uint32_t rows_per = whole ? TL / vpadb<T>(C) : 1, nch = whole ? 1 : (C + TL - 1) / TL;
  const uint64_t items = whole ? (R + rows_per - 1) / rows_per : (uint64_t)R * nch;
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qa, qb;
  TQue<TPosition::VECOUT, 2> qc;
  TBuf<TPosition::VECCALC> btmp, bfa, bfb, bfc;  // bf*: the float tiles of half operands
  const bool has_a = t.amode == B_FULL || t.amode == B_ROW, has_b = binary && (t.bmode == B_FULL || t.bmode == B_ROW);
  if (has_a) pipe.InitBuffer(qa, 2, TL * sizeof(T));
  if (has_b) pipe.InitBuffer(qb, 2, TL * sizeof(T));
  pipe.InitBuffer(qc, 2, TL * sizeof(T));
  pipe.InitBuffer(btmp, TL * 4);
  TBuf<TPosition::VECCALC> bbits, btmp2;  // unary ops: Compare bits and a second scratch tile (in b's room)
  LocalTensor<uint8_t> bits;
  LocalTensor<float> tmp2;
  if (!binary) {
    pipe.InitBuffer(bbits, bytes32(TL / 8));
    pipe.InitBuffer(btmp2, TL * 4);
    bits = bbits.Get<uint8_t>();
    tmp2 = btmp2.Get<float>();
  }
  LocalTensor<float> tmp = btmp.Get<float>(), fa, fb, fc;
  if constexpr (!F32) {
    if (has_a) pipe.InitBuffer(bfa, TL * 4);
    if (has_b) pipe.InitBuffer(bfb, TL * 4);
    pipe.InitBuffer(bfc, TL * 4);
    if (has_a) fa = bfa.Get<float>();
    if (has_b) fb = bfb.Get<float>();
    fc = bfc.Get<float>();
  }
  DataCopyPadExtParams<T> nopad{false, 0, 0, (T)0.f};
  // scalars of the scalar-broadcast operands
  const float sa = t.amode == B_SCALAR ? (float)ga.GetValue(0) : 0.f;
  const float sb = binary && t.bmode == B_SCALAR ? (float)gb.GetValue(0) : 0.f;
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    uint32_t r0, nr, c0, nc;
    if (whole) {
      r0 = (uint32_t)(it * rows_per);
      nr = R - r0 < rows_per ? R - r0 : rows_per;
      c0 = 0;
      nc = C;
    } else {
      r0 = (uint32_t)(it / nch);
      nr = 1;
      c0 = (uint32_t)(it % nch) * TL;
      nc = C - c0 < TL ? C - c0 : TL;
    }
    const uint32_t ncp = vpadb<T>(nc), nb = nc * sizeof(T), gap = (C - nc) * sizeof(T);
    LocalTensor<T> qva, qvb;
    LocalTensor<float> va, vb;
    if (has_a) va = stage_operand(qa, ga, t.amode, qva, fa, r0, nr, c0, nc, C);
    if (has_b) vb = stage_operand(qb, gb, t.bmode, qvb, fb, r0, nr, c0, nc, C);
    LocalTensor<T> qvc = qc.AllocTensor<T>();
    LocalTensor<float> vc;
    if constexpr (F32) vc = qvc;
    else vc = fc;
    const uint32_t n = nr * ncp;
    if (!binary) {
      unary(t.op, vc, va, tmp, tmp2, bits, t.s0, t.s1, n);
    } else if (t.amode == B_FULL && t.bmode == B_FULL) {
      bin_vv(t.op, vc, va, vb, n);
    } else if (t.amode == B_FULL && t.bmode == B_SCALAR) {
      bin_vs(t.op, vc, va, sb, false, tmp, n);
    } else if (t.amode == B_SCALAR && t.bmode == B_FULL) {
      bin_vs(t.op, vc, vb, sa, true, tmp, n);
    } else {  // a row or per-row value on one side: one instruction group per row
      for (uint32_t q = 0; q < nr; q++) {
        const uint32_t o = q * ncp;
        if (t.amode == B_FULL && t.bmode == B_ROW) bin_vv(t.op, vc[o], va[o], vb, ncp);
        else if (t.amode == B_ROW && t.bmode == B_FULL) bin_vv(t.op, vc[o], va, vb[o], ncp);
        else if (t.amode == B_FULL && t.bmode == B_COL) bin_vs(t.op, vc[o], va[o], (float)gb.GetValue(r0 + q), false, tmp, ncp);
        else if (t.amode == B_COL && t.bmode == B_FULL) bin_vs(t.op, vc[o], vb[o], (float)ga.GetValue(r0 + q), true, tmp, ncp);
        else if (t.amode == B_ROW && t.bmode == B_COL) bin_vs(t.op, vc[o], va, (float)gb.GetValue(r0 + q), false, tmp, ncp);
        else if (t.amode == B_COL && t.bmode == B_ROW) bin_vs(t.op, vc[o], vb, (float)ga.GetValue(r0 + q), true, tmp, ncp);
        else if (t.amode == B_ROW && t.bmode == B_SCALAR) bin_vs(t.op, vc[o], va, sb, false, tmp, ncp);
        else if (t.amode == B_SCALAR && t.bmode == B_ROW) bin_vs(t.op, vc[o], vb, sa, true, tmp, ncp);
        else if (t.amode == B_ROW && t.bmode == B_ROW) bin_vv(t.op, vc[o], va, vb, ncp);
        else {  // per-row value against a scalar or another per-row value: one value per row
          const float x = t.amode == B_COL ? (float)ga.GetValue(r0 + q) : sa;
          const float y = t.bmode == B_COL ? (float)gb.GetValue(r0 + q) : sb;
          Duplicate(tmp, y, ncp);
          Duplicate(vc[o], x, ncp);
          bin_vv(t.op, vc[o], vc[o], tmp, ncp);
        }
      }
    }
    if (has_a) qa.FreeTensor(qva);
    if (has_b) qb.FreeTensor(qvb);
    if constexpr (!F32) narrow(qvc, vc, n);
    qc.EnQue(qvc);
    qvc = qc.DeQue<T>();
    DataCopyPad(gc[(uint64_t)r0 * C + c0], qvc, DataCopyExtParams{(uint16_t)nr, nb, 0, gap, 0});
    qc.FreeTensor(qvc);
  }
}

extern "C" __global__ __aicore__ void vec_elementwise(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR workspace,
                                                     GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  VecTiling t;
  load_tiling(tiling, t);
  if (t.dt == 2) elementwise_body<half>(a, b, c, t);
  else if (t.dt == 1) elementwise_body<bfloat16_t>(a, b, c, t);
  else elementwise_body<float>(a, b, c, t);
}

// ------------------------------------------------------------------------------------------------
// x, scale, bias, y in T (float or half); y2/y3 (layer norm mean, 1/std) float
template <typename T>
__aicore__ inline void rowwise_body(GM_ADDR x, GM_ADDR scale, GM_ADDR bias, GM_ADDR y, GM_ADDR y2, GM_ADDR y3,
                                    const VecTiling &t) {
  constexpr bool F32 = moec_same<T, float>::value;
  const uint32_t R = t.rows, C = t.cols, Cp = vpadb<T>(C), TL = t.tile;
  const bool reduce = t.op <= V_RMIN || t.op == V_RL2 || t.op == V_RL1, norm = t.op == V_RMSNORM || t.op == V_LAYERNORM, ln = t.op == V_LAYERNORM;
  GlobalTensor<T> gx, gs, gbias, gy;
  GlobalTensor<float> gy2, gy3;
  gx.SetGlobalBuffer((__gm__ T *)x, (uint64_t)R * C);
  gy.SetGlobalBuffer((__gm__ T *)y, reduce ? R : (uint64_t)R * C);
  if (norm) gs.SetGlobalBuffer((__gm__ T *)scale, C);
  if (ln && t.has_bias) gbias.SetGlobalBuffer((__gm__ T *)bias, C);
  if (ln) {
    gy2.SetGlobalBuffer((__gm__ float *)y2, R);
    gy3.SetGlobalBuffer((__gm__ float *)y3, R);
  }
  // contiguous row range of this block
  const uint32_t nb = GetBlockNum(), bi = GetBlockIdx();
  const uint32_t lo = (uint32_t)((uint64_t)R * bi / nb), hi = (uint32_t)((uint64_t)R * (bi + 1) / nb);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qx;
  TQue<TPosition::VECOUT, 2> qy;
  TQue<TPosition::VECOUT, 1> qs;  // per-row results of a tile of rows (reductions, layer-norm stats)
  TBuf<TPosition::VECCALC> bwork, btmp, bparam, bxf, byf, bsh;  // bxf/byf/bsh: half rows' float copies, half results
  pipe.InitBuffer(qx, 2, Cp * sizeof(T));
  if (!reduce) pipe.InitBuffer(qy, 2, Cp * sizeof(T));
  if (reduce || ln) pipe.InitBuffer(qs, 1, TL * 4 * (ln ? 2 : 1));
  pipe.InitBuffer(bwork, Cp * 4 + 64);
  pipe.InitBuffer(btmp, Cp * 4);
  if (norm) pipe.InitBuffer(bparam, Cp * 4 * (ln && t.has_bias ? 2 : 1));
  LocalTensor<float> work = bwork.Get<float>(), tmp = btmp.Get<float>(), red = work[Cp], xf, yf;
  if constexpr (!F32) {
    pipe.InitBuffer(bxf, Cp * 4);
    xf = bxf.Get<float>();
    if (!reduce) {
      pipe.InitBuffer(byf, Cp * 4);
      yf = byf.Get<float>();
    }
    if (reduce) pipe.InitBuffer(bsh, bytes32(TL * sizeof(T)));
  }
  LocalTensor<float> sc, bs;
  DataCopyPadExtParams<T> nopad{false, 0, 0, (T)0.f};
  if (norm) {
    sc = bparam.Get<float>();
    if (ln && t.has_bias) bs = sc[Cp];
    if constexpr (F32) {
      DataCopyPad(sc, gs, DataCopyExtParams{1, C * 4, 0, 0, 0}, nopad);
      if (ln && t.has_bias) DataCopyPad(bs, gbias, DataCopyExtParams{1, C * 4, 0, 0, 0}, nopad);
      moec_sync<HardEvent::MTE2_V>();
    } else {  // half scale/bias through tmp (scratch until the first row), widened
      LocalTensor<T> th = btmp.Get<T>();
      DataCopyPad(th, gs, DataCopyExtParams{1, (uint32_t)(C * sizeof(T)), 0, 0, 0}, nopad);
      moec_sync<HardEvent::MTE2_V>();
      widen(th, sc, C);
      if (ln && t.has_bias) {
        moec_sync<HardEvent::V_MTE2>();
        DataCopyPad(th, gbias, DataCopyExtParams{1, (uint32_t)(C * sizeof(T)), 0, 0, 0}, nopad);
        moec_sync<HardEvent::MTE2_V>();
        widen(th, bs, C);
      }
    }
  }
  for (uint32_t base = lo; base < hi; base += TL) {  // tiles of up to TL rows for the per-row results
    const uint32_t nrow = hi - base < TL ? hi - base : TL;
    LocalTensor<float> st;
    if (reduce || ln) {
      st = qs.AllocTensor<float>();
      moec_sync<HardEvent::MTE3_S>();  // the scalar unit fills st after its last copy out
    }
    for (uint32_t q = 0; q < nrow; q++) {
      const uint64_t r = base + q;
      LocalTensor<T> qvx = qx.AllocTensor<T>();
      DataCopyPad(qvx, gx[r * C], DataCopyExtParams{1, (uint32_t)(C * sizeof(T)), 0, 0, 0}, nopad);
      qx.EnQue(qvx);
      qvx = qx.DeQue<T>();
      LocalTensor<float> vx = widen(qvx, xf, C), vy;
      LocalTensor<T> qvy;
      if (!reduce) {
        qvy = qy.AllocTensor<T>();
        if constexpr (F32) vy = qvy;
        else vy = yf;
      }
      float v = 0.f;
      switch (t.op) {
        case V_RSUM: case V_RMEAN:
          ReduceSum(red, vx, work, C);
          moec_sync<HardEvent::V_S>();
          v = red.GetValue(0);
          if (t.op == V_RMEAN) v = v / (float)C;
          break;
        case V_RL2: case V_RL1:  // sqrt(sum(x^2)) (the root on the vector unit), sum(|x|)
          if (t.op == V_RL2) Mul(vx, vx, vx, C);
          else Abs(vx, vx, C);
          ReduceSum(red, vx, work, C);
          if (t.op == V_RL2) Sqrt(red, red, 1);
          moec_sync<HardEvent::V_S>();
          v = red.GetValue(0);
          break;
        case V_RMAX: case V_RMIN:
          if (t.op == V_RMIN) Muls(vx, vx, -1.0f, C);
          ReduceMax(red, vx, work, C);
          moec_sync<HardEvent::V_S>();
          v = t.op == V_RMIN ? -red.GetValue(0) : red.GetValue(0);
          break;
        case V_SOFTMAX: case V_LOGSOFTMAX: {
          ReduceMax(red, vx, work, C);
          moec_sync<HardEvent::V_S>();
          const float m = red.GetValue(0);
          Adds(vx, vx, -m, C);  // e = x - max
          Exp(tmp, vx, C);
          ReduceSum(red, tmp, work, C);
          moec_sync<HardEvent::V_S>();
          const float s = red.GetValue(0);
          if (t.op == V_SOFTMAX) {
            Duplicate(work, s, C);
            Div(vy, tmp, work, C);
          } else {
            Duplicate(work, s, 1);
            Ln(work, work, 1);
            moec_sync<HardEvent::V_S>();
            Adds(vy, vx, -work.GetValue(0), C);  // e - log(sum exp e)
          }
          break;
        }
        case V_RMSNORM: {  // y = x / sqrt(mean(x^2) + eps) * scale
          Mul(tmp, vx, vx, C);
          ReduceSum(red, tmp, work, C);
          moec_sync<HardEvent::V_S>();
          const float ms = red.GetValue(0) / (float)C + t.s0;
          Duplicate(work, ms, 1);
          Sqrt(work, work, 1);
          moec_sync<HardEvent::V_S>();
          Duplicate(tmp, work.GetValue(0), C);
          Div(vy, vx, tmp, C);
          Mul(vy, vy, sc, C);
          break;
        }
        default: {  // layer norm: y = (x - mean) * inv * scale (+ bias), inv = 1 / sqrt(var + eps)
          ReduceSum(red, vx, work, C);
          moec_sync<HardEvent::V_S>();
          const float mean = red.GetValue(0) / (float)C;
          Adds(vx, vx, -mean, C);
          Mul(tmp, vx, vx, C);
          ReduceSum(red, tmp, work, C);
          moec_sync<HardEvent::V_S>();
          Duplicate(work, red.GetValue(0) / (float)C + t.s0, 1);
          Sqrt(work, work, 1);
          moec_sync<HardEvent::V_S>();
          const float inv = 1.0f / work.GetValue(0);
          Muls(vy, vx, inv, C);
          Mul(vy, vy, sc, C);
          if (t.has_bias) Add(vy, vy, bs, C);
          st.SetValue(q, mean);
          st.SetValue(TL + q, inv);
          break;
        }
      }
      qx.FreeTensor(qvx);
      if (reduce) st.SetValue(q, v);
      if (!reduce) {
        if constexpr (!F32) narrow(qvy, vy, C);
        qy.EnQue(qvy);
        qvy = qy.DeQue<T>();
        DataCopyPad(gy[r * C], qvy, DataCopyExtParams{1, (uint32_t)(C * sizeof(T)), 0, 0, 0});
        qy.FreeTensor(qvy);
      }
    }
    if (reduce || ln) {
      moec_sync<HardEvent::S_V>();     // st was filled by the scalar unit: the vector unit (narrow) and
      moec_sync<HardEvent::S_MTE3>();  // MTE3 read it next
      qs.EnQue(st);
      st = qs.DeQue<float>();
      if (reduce) {
        if constexpr (F32) {
          DataCopyPad(gy[base], st, DataCopyExtParams{1, nrow * 4, 0, 0, 0});
        } else {  // the tile's results rounded to half, then out
          LocalTensor<T> sh = bsh.Get<T>();
          moec_sync<HardEvent::MTE3_V>();  // the previous tile's copy out of sh has finished
          narrow(sh, st, nrow);
          moec_sync<HardEvent::V_MTE3>();
          DataCopyPad(gy[base], sh, DataCopyExtParams{1, (uint32_t)(nrow * sizeof(T)), 0, 0, 0});
        }
      }
      if (ln) {
        DataCopyPad(gy2[base], st, DataCopyExtParams{1, nrow * 4, 0, 0, 0});
        DataCopyPad(gy3[base], st[TL], DataCopyExtParams{1, nrow * 4, 0, 0, 0});
      }
      qs.FreeTensor(st);
    }
  }
}

// y: [rows, cols] (softmax, log-softmax, norms) or [rows] (reductions); y2/y3: layer norm mean, 1/std
extern "C" __global__ __aicore__ void vec_rowwise(GM_ADDR x, GM_ADDR scale, GM_ADDR bias, GM_ADDR y, GM_ADDR y2,
                                                 GM_ADDR y3, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  VecTiling t;
  load_tiling(tiling, t);
  if (t.dt == 2) rowwise_body<half>(x, scale, bias, y, y2, y3, t);
  else if (t.dt == 1) rowwise_body<bfloat16_t>(x, scale, bias, y, y2, y3, t);
  else rowwise_body<float>(x, scale, bias, y, y2, y3, t);
}

// ------------------------------------------------------------------------------------------------
// vec_copy: the data movement of the graph's layout ops (transpose, slice, expand/broadcast, the parts of a
// concat, a batched matmul's transposed operand): dst[do + sum_i idx_i * dstr_i] = src[so + sum_i idx_i *
// sstr_i] over the index space dims[0..ndim).  Strides are in elements and may be 0 (a broadcast source) or
// negative (a slice stepping backwards).  The elements are moved as bit patterns of their size (2, 4 or 8
// bytes), so one kernel serves every type.  Work items are chunks of at most `tile` elements of one
// innermost row, dealt round-robin to the blocks.  The innermost row moves as one DataCopyPad when its
// stride is 1 on that side; a stride-0 source row is one scalar read and a Duplicate; any other innermost
// stride falls back to scalar GM reads/writes (GetValue/SetValue: correct, slow -- the cost model charges a
// scalar access per element, and moec only plans it for the small transposed operands of batched matmuls).
struct CopyTiling {
  int32_t ndim;          // 1..8 (the host merges contiguous dimensions first)
  int32_t esize;         // bytes per element: 2, 4 or 8
  int32_t tile;          // elements per UB row chunk, a multiple of 32 / esize
  int32_t srcN, dstN;    // GM extents (elements) of the source and destination
  int32_t soff, doff;    // element offsets of index 0
  int32_t dims[8], sstr[8], dstr[8];
};

template <typename T>
__aicore__ inline void copy_body(GM_ADDR src, GM_ADDR dst, const CopyTiling &t) {
  GlobalTensor<T> gs, gd;
  gs.SetGlobalBuffer((__gm__ T *)src, (uint64_t)t.srcN);
  gd.SetGlobalBuffer((__gm__ T *)dst, (uint64_t)t.dstN);
  const int32_t nd = t.ndim;
  const uint32_t C = t.dims[nd - 1], TL = t.tile;
  const int64_t si = t.sstr[nd - 1], di = t.dstr[nd - 1];
  uint64_t rows = 1;
  for (int32_t i = 0; i < nd - 1; i++) rows *= (uint64_t)t.dims[i];
  const uint32_t nch = (C + TL - 1) / TL;
  const uint64_t items = rows * nch;
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qi;
  TQue<TPosition::VECOUT, 2> qo;
  pipe.InitBuffer(qi, 2, TL * sizeof(T));
  pipe.InitBuffer(qo, 2, TL * sizeof(T));
  DataCopyPadExtParams<T> nopad{false, 0, 0, (T)0};
  // a strided destination is written element by element by the scalar unit, through its data cache: one
  // core does it all (two cores' writes to one 64-byte GM line would clobber each other on write-back)
  const uint64_t first = di != 1 ? (GetBlockIdx() == 0 ? 0 : items) : (uint64_t)GetBlockIdx();
  const uint64_t step = di != 1 ? 1 : (uint64_t)GetBlockNum();
  for (uint64_t it = first; it < items; it += step) {
    const uint64_t row = it / nch;
    const uint32_t c0 = (uint32_t)(it % nch) * TL, n = C - c0 < TL ? C - c0 : TL;
    int64_t so = t.soff + (int64_t)c0 * si, dof = t.doff + (int64_t)c0 * di;
    uint64_t r = row;
    for (int32_t i = nd - 2; i >= 0; i--) {
      const int64_t ix = (int64_t)(r % (uint64_t)t.dims[i]);
      r /= (uint64_t)t.dims[i];
      so += ix * t.sstr[i];
      dof += ix * t.dstr[i];
    }
    LocalTensor<T> a = qi.AllocTensor<T>();
    if (si == 1) {
      DataCopyPad(a, gs[(uint64_t)so], DataCopyExtParams{1, (uint32_t)(n * sizeof(T)), 0, 0, 0}, nopad);
    } else if (si == 0 && sizeof(T) >= 2 && sizeof(T) <= 4) {  // (no 1- or 8-byte Duplicate: scalar below)
      Duplicate(a, gs.GetValue((uint64_t)so), (int32_t)vpadb<T>(n));
    } else {
      moec_sync<HardEvent::V_S>();  // the vector unit's last read of this buffer is done
      for (uint32_t j = 0; j < n; j++) a.SetValue(j, gs.GetValue((uint64_t)(so + (int64_t)j * si)));
      moec_sync<HardEvent::S_V>();
    }
    qi.EnQue(a);
    a = qi.DeQue<T>();
    LocalTensor<T> b = qo.AllocTensor<T>();
    DataCopy(b, a, vpadb<T>(n));  // UB -> UB (VECIN -> VECOUT), whole 32-byte blocks
    qi.FreeTensor(a);
    qo.EnQue(b);
    b = qo.DeQue<T>();
    if (di == 1) {
      DataCopyPad(gd[(uint64_t)dof], b, DataCopyExtParams{1, (uint32_t)(n * sizeof(T)), 0, 0, 0});
    } else {
      moec_sync<HardEvent::V_S>();
      for (uint32_t j = 0; j < n; j++) gd.SetValue((uint64_t)(dof + (int64_t)j * di), b.GetValue(j));
    }
    qo.FreeTensor(b);
  }
  // scalar GM writes sit in this core's data cache: write them back before the block ends
  if (di != 1 && GetBlockIdx() == 0) DataCacheCleanAndInvalid<T, CacheLine::ENTIRE_DATA_CACHE, DcciDst::CACHELINE_OUT>(gd);
}

extern "C" __global__ __aicore__ void vec_copy(GM_ADDR src, GM_ADDR dst, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  CopyTiling t;
  load_tiling(tiling, t);
  if (t.esize == 1) copy_body<uint8_t>(src, dst, t);
  else if (t.esize == 2) copy_body<uint16_t>(src, dst, t);
  else if (t.esize == 8) copy_body<uint64_t>(src, dst, t);
  else copy_body<uint32_t>(src, dst, t);
}

// ------------------------------------------------------------------------------------------------
// vec_gather: out[o, j, :] = data[o, idx[j], :] over data viewed as [outer, V, inner] (ONNX Gather on any
// axis: outer = the dims before it, inner = the dims after it; an embedding lookup is outer = 1).  Indices
// are int64 or int32 in GM, read by the scalar unit; a negative index counts from the end (idx + V) as
// ONNX says; an index outside [-V, V) writes nothing and sets status[0] = 1 (the host reports it, as
// onnxruntime refuses such an index).  Each row chunk is one DataCopyPad in and one out.
// scatter = 1 is the other direction, ONNX ScatterND without reduction (the output already holds a copy of
// the data): out[flat(idx[j, 0..q)), :] = upd[j, :], the row index flattened over the first q dims of the
// data (qdims), each component wrapped and checked like a gather index (outer = 1).
struct GatherTiling {
  int32_t outer, V, inner, n;  // data [outer, V, inner], n indices (scatter: n index tuples of q components)
  int32_t esize, tile;         // bytes per element (2, 4, 8); elements per UB chunk
  int32_t idx64;               // 1: int64 indices, 0: int32
  int32_t scatter, q;          // 1: ScatterND rows; components per index tuple (gather: 1)
  int32_t qdims[8];            // scatter: the first q dims of the data (their product is V)
};

template <typename T>
__aicore__ inline void gather_body(GM_ADDR data, GM_ADDR idx, GM_ADDR out, GM_ADDR status, const GatherTiling &t) {
  GlobalTensor<T> gsrc, gdst;
  GlobalTensor<int64_t> gi64;
  GlobalTensor<int32_t> gi32, gst;
  const uint64_t inner = (uint64_t)t.inner, V = (uint64_t)t.V, n = (uint64_t)t.n, q = (uint64_t)t.q;
  // gather: src = data [outer, V, inner], dst = out [outer, n, inner]; scatter: src = updates [n, inner], dst = out [V, inner]
  gsrc.SetGlobalBuffer((__gm__ T *)data, (uint64_t)t.outer * (t.scatter ? n : V) * inner);
  gdst.SetGlobalBuffer((__gm__ T *)out, (uint64_t)t.outer * (t.scatter ? V : n) * inner);
  if (t.idx64) gi64.SetGlobalBuffer((__gm__ int64_t *)idx, n * q);
  else gi32.SetGlobalBuffer((__gm__ int32_t *)idx, n * q);
  gst.SetGlobalBuffer((__gm__ int32_t *)status, 1);
  const uint32_t TL = t.tile, nch = (uint32_t)((inner + TL - 1) / TL);
  const uint64_t items = (uint64_t)t.outer * n * nch;
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qi;
  TQue<TPosition::VECOUT, 2> qo;
  pipe.InitBuffer(qi, 2, TL * sizeof(T));
  pipe.InitBuffer(qo, 2, TL * sizeof(T));
  TBuf<TPosition::VECCALC> bst;  // status 1, written by DMA (several cores may report: the same word, by DMA)
  pipe.InitBuffer(bst, 32);
  LocalTensor<int32_t> sv = bst.Get<int32_t>();
  sv.SetValue(0, 1);
  moec_sync<HardEvent::S_MTE3>();
  DataCopyPadExtParams<T> nopad{false, 0, 0, (T)0};
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    const uint64_t oj = it / nch, o = oj / n, j = oj % n;
    const uint32_t c0 = (uint32_t)(it % nch) * TL, m = (uint32_t)(inner - c0 < TL ? inner - c0 : TL);
    int64_t row = 0;
    bool ok = true;
    for (uint64_t k = 0; k < q; k++) {
      const int64_t d = t.scatter ? t.qdims[k] : (int64_t)V;
      int64_t id = t.idx64 ? gi64.GetValue(j * q + k) : (int64_t)gi32.GetValue(j * q + k);
      if (id < 0) id += d;
      if (id < 0 || id >= d) ok = false;
      row = row * d + id;
    }
    if (!ok) {
      DataCopyPad(gst, sv, DataCopyExtParams{1, 4, 0, 0, 0});
      continue;
    }
    const uint64_t src_row = t.scatter ? j : o * V + (uint64_t)row, dst_row = t.scatter ? (uint64_t)row : oj;
    LocalTensor<T> a = qi.AllocTensor<T>();
    DataCopyPad(a, gsrc[src_row * inner + c0], DataCopyExtParams{1, (uint32_t)(m * sizeof(T)), 0, 0, 0}, nopad);
    qi.EnQue(a);
    a = qi.DeQue<T>();
    LocalTensor<T> b = qo.AllocTensor<T>();
    DataCopy(b, a, vpadb<T>(m));
    qi.FreeTensor(a);
    qo.EnQue(b);
    b = qo.DeQue<T>();
    DataCopyPad(gdst[dst_row * inner + c0], b, DataCopyExtParams{1, (uint32_t)(m * sizeof(T)), 0, 0, 0});
    qo.FreeTensor(b);
  }
}

extern "C" __global__ __aicore__ void vec_gather(GM_ADDR data, GM_ADDR idx, GM_ADDR out, GM_ADDR status,
                                                 GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  GatherTiling t;
  load_tiling(tiling, t);
  if (t.esize == 1) gather_body<uint8_t>(data, idx, out, status, t);
  else if (t.esize == 2) gather_body<uint16_t>(data, idx, out, status, t);
  else if (t.esize == 8) gather_body<uint64_t>(data, idx, out, status, t);
  else gather_body<uint32_t>(data, idx, out, status, t);
}

// ------------------------------------------------------------------------------------------------
// vec_transpose: out[b, j, i] = in[b, i, j] for in [B, R, C] (2- or 4-byte elements): the B^T operand of a
// batched matmul (attention's V^T), or a transpose of the last two dims.  A work item is a block of rr rows
// of one batch entry: one DataCopyPad brings the rr x C block in (contiguous in GM), then C vector Gathers
// (a fixed offset table i * C * esize, the column in srcBaseAddr) write the block's C output rows of rr
// elements, and one DataCopyPad with a GM row stride of R takes them out.
struct TransTiling {
  int32_t B, R, C;     // input [B, R, C]
  int32_t esize;       // 2 or 4
  int32_t rr;          // rows per block, a multiple of 32 / esize, with rr * C and C * rr(padded) <= tile
  int32_t tile;        // elements per UB buffer
};

template <typename T>
__aicore__ inline void transpose_body(GM_ADDR src, GM_ADDR dst, const TransTiling &t) {
  const uint64_t R = t.R, C = t.C, rr = t.rr, TL = t.tile;
  GlobalTensor<T> gs, gd;
  gs.SetGlobalBuffer((__gm__ T *)src, (uint64_t)t.B * R * C);
  gd.SetGlobalBuffer((__gm__ T *)dst, (uint64_t)t.B * R * C);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qi;
  TQue<TPosition::VECOUT, 2> qo;
  TBuf<TPosition::VECCALC> boff;
  pipe.InitBuffer(qi, 2, TL * sizeof(T));
  pipe.InitBuffer(qo, 2, TL * sizeof(T));
  pipe.InitBuffer(boff, rr * sizeof(uint32_t));
  LocalTensor<uint32_t> off = boff.Get<uint32_t>();
  for (uint32_t i = 0; i < rr; i++) off.SetValue(i, (uint32_t)(i * C * sizeof(T)));
  moec_sync<HardEvent::S_V>();  // the offset table, written by the scalar unit, read by Gather
  DataCopyPadExtParams<T> nopad{false, 0, 0, (T)0};
  const uint64_t blocks = (R + rr - 1) / rr, items = (uint64_t)t.B * blocks;
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    const uint64_t b = it / blocks, r0 = (it % blocks) * rr;
    const uint32_t n = (uint32_t)(R - r0 < rr ? R - r0 : rr), np = vpadb<T>(n);
    LocalTensor<T> a = qi.AllocTensor<T>();
    DataCopyPad(a, gs[(b * R + r0) * C], DataCopyExtParams{1, (uint32_t)(n * C * sizeof(T)), 0, 0, 0}, nopad);
    qi.EnQue(a);
    a = qi.DeQue<T>();
    LocalTensor<T> o = qo.AllocTensor<T>();
    for (uint32_t j = 0; j < C; j++) Gather(o[j * np], a, off, (uint32_t)(j * sizeof(T)), n);
    qi.FreeTensor(a);
    qo.EnQue(o);
    o = qo.DeQue<T>();
    DataCopyPad(gd[b * C * R + r0], o,
                DataCopyExtParams{(uint16_t)C, (uint32_t)(n * sizeof(T)), 0, (uint32_t)((R - n) * sizeof(T)), 0});
    qo.FreeTensor(o);
  }
}

extern "C" __global__ __aicore__ void vec_transpose(GM_ADDR src, GM_ADDR dst, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  TransTiling t;
  load_tiling(tiling, t);
  if (t.esize == 2) transpose_body<uint16_t>(src, dst, t);
  else transpose_body<uint32_t>(src, dst, t);
}

// ------------------------------------------------------------------------------------------------
// vec_mask: the boolean side of a graph (attention padding masks): bool tensors are bytes (0/1) in GM.
//   K_NE0     out = (a != 0) for int64 (read as int32 pairs: a value is nonzero iff either half is), int32 or
//             bool a -- ONNX Cast to bool
//   K_AND / K_OR / K_NOT on bool operands
//   K_SELECT  out = cond ? a : b (ONNX Where) for float or half a, b (full, or one scalar each)
//   K_EQ / K_LT / K_LE / K_GT / K_GE  out = a (cmp) b for float or half a, b (full, or one scalar each): Compare on
//             the operands' own type (no widening), IEEE like numpy -- NaN is unequal to everything and unordered
//             (equal(x, x) is ONNX IsNaN's complement), +-inf compare as values, -0 == +0 -- its bit per element
//             turned into a 0/1 byte by Select of 1.0 / 0.0 and the narrowing below
// The bytes are widened to float in the Unified Buffer (Cast uint8 -> half -> float), combined by Mul / Max /
// Muls+Adds, and narrowed back (float -> half -> uint8, exact for 0/1).  Select uses Compare (a bit per element,
// on whole 256-byte repeats: the chunk is padded to 64 elements) and Select, so infinities and NaN in a and b
// pass through unchanged.  Operands arrive broadcast already (vec_copy), except Select's and the comparisons'
// scalar values.
enum MaskOp : int32_t { K_NE0 = 0, K_AND = 1, K_OR = 2, K_NOT = 3, K_SELECT = 4, K_EQ = 5, K_LT = 6, K_LE = 7,
                        K_GT = 8, K_GE = 9 };
struct MaskTiling {
  int32_t n, op;
  int32_t ain;           // K_NE0: a's type, 8 int64, 4 int32, 1 bool
  int32_t vdt;           // K_SELECT, comparisons: the values' type, 0 float, 2 half, 1 bfloat16_t
  int32_t amode, bmode;  // K_SELECT, comparisons: 0 full, 1 scalar
  int32_t tile;          // elements per chunk, a multiple of 256
};

// bytes in -> float 0/1 (or values): uint8 -> half -> float, both exact
__aicore__ inline void widen8(const LocalTensor<half> &hh, const LocalTensor<uint8_t> &src, const LocalTensor<float> &dst,
                              uint32_t n) {
  Cast(hh, src, RoundMode::CAST_NONE, n);
  Cast(dst, hh, RoundMode::CAST_NONE, n);
}

template <typename V>
__aicore__ inline void mask_body(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR out, const MaskTiling &t) {
  const uint32_t TL = t.tile;
  const uint64_t n = t.n;
  const bool sel = t.op == K_SELECT, two = t.op == K_AND || t.op == K_OR, cmp = t.op >= K_EQ;
  const bool vals = sel || cmp;  // a and b are float / half values (streamed through qb, qv)
  GlobalTensor<uint8_t> gc, gb8, gout8;
  GlobalTensor<int32_t> ga32;
  GlobalTensor<uint8_t> ga8;
  GlobalTensor<V> gva, gvb, gvo;
  const uint32_t aw = t.op == K_NE0 ? (t.ain == 8 ? 2 : t.ain == 4 ? 1 : 0) : 0;  // int32 words per element
  if (vals) {
    gva.SetGlobalBuffer((__gm__ V *)a, t.amode ? 1 : n);
    gvb.SetGlobalBuffer((__gm__ V *)b, t.bmode ? 1 : n);
  }
  if (sel) {
    gc.SetGlobalBuffer((__gm__ uint8_t *)c, n);
    gvo.SetGlobalBuffer((__gm__ V *)out, n);
  } else if (cmp) {
    gout8.SetGlobalBuffer((__gm__ uint8_t *)out, n);
  } else {
    if (aw) ga32.SetGlobalBuffer((__gm__ int32_t *)a, n * aw);
    else ga8.SetGlobalBuffer((__gm__ uint8_t *)a, n);
    if (two) gb8.SetGlobalBuffer((__gm__ uint8_t *)b, n);
    gout8.SetGlobalBuffer((__gm__ uint8_t *)out, n);
  }
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qa, qb, qv;
  TQue<TPosition::VECOUT, 2> qo;
  TBuf<TPosition::VECCALC> bfa, bfb, bfc, bh, bbits, boff, bzero;
  pipe.InitBuffer(qa, 2, TL * 8);
  pipe.InitBuffer(qb, 2, TL * 4);
  if (vals) pipe.InitBuffer(qv, 2, TL * 4);
  pipe.InitBuffer(qo, 2, TL * 4);
  pipe.InitBuffer(bfa, TL * 8);
  pipe.InitBuffer(bfb, TL * 4);
  pipe.InitBuffer(bfc, TL * 4);
  pipe.InitBuffer(bh, TL * 2);
  pipe.InitBuffer(bbits, TL / 8);
  pipe.InitBuffer(boff, TL * 4);
  pipe.InitBuffer(bzero, TL * 4);
  LocalTensor<float> fa = bfa.Get<float>(), fb = bfb.Get<float>(), fc = bfc.Get<float>(), zero = bzero.Get<float>();
  LocalTensor<half> hh = bh.Get<half>();
  LocalTensor<uint8_t> bits = bbits.Get<uint8_t>();
  LocalTensor<uint32_t> off = boff.Get<uint32_t>();
  Duplicate(zero, 0.0f, (int32_t)TL);
  for (uint32_t i = 0; i < TL; i++) off.SetValue(i, i * 8);  // int64 lo/hi halves: bytes 8i and 8i + 4
  moec_sync<HardEvent::S_V>();
  const V va = vals && t.amode ? gva.GetValue(0) : (V)0.f, vb = vals && t.bmode ? gvb.GetValue(0) : (V)0.f;
  const float sa = (float)va, sb = (float)vb;
  DataCopyPadExtParams<uint8_t> pad8{false, 0, 0, 0};
  DataCopyPadExtParams<int32_t> pad32{false, 0, 0, 0};
  DataCopyPadExtParams<V> padv{false, 0, 0, (V)0.f};
  const uint64_t items = (n + TL - 1) / TL;
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    const uint64_t e0 = it * TL;
    const uint32_t m = (uint32_t)(n - e0 < TL ? n - e0 : TL), mp = (m + 255) / 256 * 256;
    LocalTensor<uint8_t> ta;
    if (!cmp) {  // the bool / integer operand, or Select's condition
      ta = qa.AllocTensor<uint8_t>();
      if (sel) DataCopyPad(ta, gc[e0], DataCopyExtParams{1, m, 0, 0, 0}, pad8);
      else if (aw) {
        LocalTensor<int32_t> t32 = ta.template ReinterpretCast<int32_t>();
        DataCopyPad(t32, ga32[e0 * aw], DataCopyExtParams{1, m * 4 * aw, 0, 0, 0}, pad32);
      } else DataCopyPad(ta, ga8[e0], DataCopyExtParams{1, m, 0, 0, 0}, pad8);
      qa.EnQue(ta);
      ta = qa.DeQue<uint8_t>();
    }
    LocalTensor<uint8_t> tb, tv;  // tb: b (bool) or the a values (Select, comparisons); tv: the b values
    if (two || vals) {
      tb = qb.AllocTensor<uint8_t>();
      if (two) DataCopyPad(tb, gb8[e0], DataCopyExtParams{1, m, 0, 0, 0}, pad8);
      else if (!t.amode)
        DataCopyPad(tb.template ReinterpretCast<V>(), gva[e0], DataCopyExtParams{1, (uint32_t)(m * sizeof(V)), 0, 0, 0},
                    padv);
      qb.EnQue(tb);
      tb = qb.DeQue<uint8_t>();
    }
    if (vals) {
      tv = qv.AllocTensor<uint8_t>();
      if (!t.bmode)
        DataCopyPad(tv.template ReinterpretCast<V>(), gvb[e0], DataCopyExtParams{1, (uint32_t)(m * sizeof(V)), 0, 0, 0},
                    padv);
      qv.EnQue(tv);
      tv = qv.DeQue<uint8_t>();
    }
    LocalTensor<uint8_t> to = qo.AllocTensor<uint8_t>();
    if (t.op == K_NE0 && aw) {
      LocalTensor<int32_t> t32 = ta.template ReinterpretCast<int32_t>();
      Cast(fa, t32, RoundMode::CAST_NONE, mp * aw);  // a nonzero int32 is a nonzero float
      Abs(fa, fa, mp * aw);
      if (aw == 2) {
        Gather(fb, fa, off, 0, mp);
        Gather(fc, fa, off, 4, mp);
        Max(fb, fb, fc, mp);
      } else {
        Muls(fb, fa, 1.0f, mp);
      }
      Mins(fb, fb, 1.0f, mp);
    } else if (cmp) {
      LocalTensor<V> xa = tb.template ReinterpretCast<V>(), xb = tv.template ReinterpretCast<V>();
      const CMPMODE cm = t.op == K_EQ ? CMPMODE::EQ : t.op == K_LT ? CMPMODE::LT : t.op == K_LE ? CMPMODE::LE
                       : t.op == K_GT ? CMPMODE::GT : CMPMODE::GE;
      if constexpr (moec_same<V, bfloat16_t>::value) {
        // bfloat16_t is not a Compare type: both sides as float (exact), a scalar duplicated as float
        if (t.amode) Duplicate(fa, sa, (int32_t)mp);
        else Cast(fa, xa, RoundMode::CAST_NONE, mp);
        if (t.bmode) Duplicate(fc, sb, (int32_t)mp);
        else Cast(fc, xb, RoundMode::CAST_NONE, mp);
        Compare(bits, fa, fc, cm, mp);
      } else {
        if (t.amode) Duplicate(xa, va, (int32_t)mp);
        if (t.bmode) Duplicate(xb, vb, (int32_t)mp);
        Compare(bits, xa, xb, cm, mp);
      }
      Duplicate(fc, 1.0f, (int32_t)mp);
      Select(fb, bits, fc, zero, SELMODE::VSEL_TENSOR_TENSOR_MODE, mp);
    } else if (!sel) {
      widen8(hh, ta, fb, mp);
      if (t.op == K_NE0) Mins(fb, fb, 1.0f, mp);
      else if (t.op == K_NOT) { Muls(fb, fb, -1.0f, mp); Adds(fb, fb, 1.0f, mp); }
      else {
        widen8(hh, tb, fc, mp);
        if (t.op == K_AND) Mul(fb, fb, fc, mp);
        else Max(fb, fb, fc, mp);
      }
    }
    if (!sel) {  // float 0/1 -> bytes
      Cast(hh, fb, RoundMode::CAST_NONE, mp);
      Cast(to, hh, RoundMode::CAST_RINT, mp);
    } else {
      widen8(hh, ta, fa, mp);
      Compare(bits, fa, zero, CMPMODE::NE, mp);
      // the values as float in fb (a) and fc (b): a scalar duplicated, a full operand widened (float: copied)
      for (int side = 0; side < 2; side++) {
        const LocalTensor<float> &dst = side == 0 ? fb : fc;
        if (side == 0 ? t.amode : t.bmode) {
          Duplicate(dst, side == 0 ? sa : sb, (int32_t)mp);
          continue;
        }
        LocalTensor<V> v = (side == 0 ? tb : tv).template ReinterpretCast<V>();
        if constexpr (moec_same<V, float>::value) Muls(dst, v, 1.0f, mp);
        else Cast(dst, v, RoundMode::CAST_NONE, mp);
      }
      Select(fa, bits, fb, fc, SELMODE::VSEL_TENSOR_TENSOR_MODE, mp);
      LocalTensor<V> vo = to.template ReinterpretCast<V>();
      narrow(vo, fa, mp);
    }
    if (!cmp) qa.FreeTensor(ta);
    if (two || vals) qb.FreeTensor(tb);
    if (vals) qv.FreeTensor(tv);
    qo.EnQue(to);
    to = qo.DeQue<uint8_t>();
    if (sel) DataCopyPad(gvo[e0], to.template ReinterpretCast<V>(), DataCopyExtParams{1, (uint32_t)(m * sizeof(V)), 0, 0, 0});
    else DataCopyPad(gout8[e0], to, DataCopyExtParams{1, m, 0, 0, 0});
    qo.FreeTensor(to);
  }
}

extern "C" __global__ __aicore__ void vec_mask(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR out, GM_ADDR workspace,
                                               GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  MaskTiling t;
  load_tiling(tiling, t);
  if (t.vdt == 2) mask_body<half>(a, b, c, out, t);
  else if (t.vdt == 1) mask_body<bfloat16_t>(a, b, c, out, t);
  else mask_body<float>(a, b, c, out, t);
}

// ------------------------------------------------------------------------------------------------
// vec_index: integer and index ops on the AI core's scalar unit, exact for every value (int64 is a native
// scalar type there; the vector unit has no int64 Compare and its float paths lose integers past 2^24):
//   X_CMP        out[e] = a[e] (cmp) b[e] as a 0/1 byte, a and b int64 or int32 (full, or one scalar each)
//   X_SELECT     out[e] = c[e] ? a[e] : b[e] (ONNX Where) for values of 1, 2, 4 or 8 bytes, copied bit for bit
//   X_CUMSUM     out = cumsum(a) along L of a viewed as [outer, L, inner], int32 or int64, wrapping on overflow as
//                numpy does (the sums run in the unsigned type of the width: the same bits); reverse, exclusive
//   X_GATHER_EL  out[o, j, i] = a[o, b[o, j, i], i] (ONNX GatherElements) over data [outer, L, inner] and indices
//                [outer, k, inner] (int64 or int32; negative ones count from the end); an index outside [-L, L)
//                leaves 0 and sets status c[0] = 1 (the host reports it, as for vec_gather)
//   X_TOPK       the k largest (smallest) of each row of a [outer, L] (float, half or bfloat16_t): values to out,
//                int64 indices to c, sorted, ties to the lowest index, NaN ranked as +inf (numpy's stable sort
//                of the keys, as the reference); k passes over the row, each taking the first element ordered
//                after the previous pick, so no scratch per row; G = tile / k rows per copy out, or a row's
//                picks in chunks of tile when k > tile
// Inputs are read with the scalar unit through the core's data cache (GlobalTensor::GetValue: written by earlier
// launches, never by this one); results are staged in the Unified Buffer by the scalar unit and leave by DMA, one
// DataCopyPad per chunk of tile elements (MTE3 after S: a flag; the next chunk's scalar writes after MTE3: a flag).
//   X_ARITH      out = a (op) b on int64 / int32, op (in cmp) 0 add, 1 sub, 2 mul (wrapping, as numpy), 3 div
//                (truncating toward zero; a zero divisor sets status c[0] = 1), 4 max, 5 min; a, b full or scalar
//   X_IUNARY     out = -a, |a| (wrapping) or clip(a, b[0], c[0]) (cmp 0, 1, 2) on int64 / int32
//   X_CAST       integer / bool -> integer of another width (esize -> k bytes): sign-extended (zero-extended for
//                bool and uint8: flags 1), narrowed by keeping the low bytes (numpy's astype)
//   X_SCATTER_EL out (already a copy of the data, by vec_copy) [o, b[o, j, i], i] = c[o, j, i] over out viewed as
//                [outer, L, inner] and indices [outer, k, inner], in index order (a repeated index: the last write
//                wins, as the reference applies them in order): one core, GM written by the scalar unit and
//                cleaned out of the data cache at the end; an index outside [-L, L) sets status a[0] = 1.
//                With a reduction (cmp 1 add, 2 mul, 3 max, 4 min; vdt the values' type: 0 float, 1 bfloat16_t,
//                2 half, 3 int64, 4 int32) out[...] = out[...] (op) c[...] in index order, so a repeated index
//                accumulates every update in turn, as the reference: floats computed in float and rounded to
//                the element type once per update (numpy's half / bfloat16 arithmetic), max / min propagating NaN
//                (np.maximum), integers wrapping.  flags 2: one index per row of inner elements, indices [outer, k]
//                (ONNX ScatterND with 1-element index tuples and a reduction: transformers' index_add form)
//   X_TOPK_K     a run-time k (int64 a[0]) for X_TOPK: out[0] = k as int32 (read back by the host: the results'
//                size), or 0 with status c[0] = 1 when k is outside [0, L]
enum IndexOp : int32_t { X_CMP = 0, X_SELECT = 1, X_CUMSUM = 2, X_GATHER_EL = 3, X_TOPK = 4, X_ARITH = 5,
                         X_IUNARY = 6, X_CAST = 7, X_SCATTER_EL = 8, X_TOPK_K = 9 };
struct IndexTiling {
  int32_t op, n;            // n: output elements (X_CMP, X_SELECT, X_GATHER_EL)
  int32_t esize;            // bytes per element: the values (X_SELECT, X_CUMSUM, X_GATHER_EL, X_TOPK) or the
                            // compared integers (X_CMP: 4 or 8)
  int32_t amode, bmode;     // X_CMP, X_SELECT: 0 full, 1 one scalar
  int32_t cmp;              // X_CMP: 0 eq, 1 lt, 2 le, 3 gt, 4 ge
  int32_t outer, L, inner;  // X_CUMSUM, X_GATHER_EL (L: the data's axis), X_TOPK (inner 1)
  int32_t k;                // X_TOPK: k; X_GATHER_EL: the indices' axis length
  int32_t flags;            // X_CUMSUM: 1 reverse, 2 exclusive; X_TOPK: 1 largest; X_GATHER_EL: 1 int64 indices
  int32_t vdt;              // X_TOPK: values 0 float, 1 bfloat16_t, 2 half
  int32_t tile;             // output elements staged per chunk (a multiple of 32)
};

template <typename S>
__aicore__ inline bool index_cmp(int32_t c, S x, S y) {
  return c == 0 ? x == y : c == 1 ? x < y : c == 2 ? x <= y : c == 3 ? x > y : x >= y;
}

// X_CMP (S: int64_t / int32_t)
template <typename S>
__aicore__ inline void index_cmp_body(GM_ADDR a, GM_ADDR b, GM_ADDR out, const IndexTiling &t, TPipe &pipe) {
  const uint64_t n = (uint64_t)t.n, TL = (uint64_t)t.tile;
  GlobalTensor<S> ga, gb;
  GlobalTensor<uint8_t> go;
  ga.SetGlobalBuffer((__gm__ S *)a, t.amode ? 1 : n);
  gb.SetGlobalBuffer((__gm__ S *)b, t.bmode ? 1 : n);
  go.SetGlobalBuffer((__gm__ uint8_t *)out, n);
  TBuf<TPosition::VECCALC> bo;
  pipe.InitBuffer(bo, (uint32_t)TL);
  LocalTensor<uint8_t> ob = bo.Get<uint8_t>();
  const S sa = t.amode ? ga.GetValue(0) : (S)0, sb = t.bmode ? gb.GetValue(0) : (S)0;
  for (uint64_t it = GetBlockIdx(); it * TL < n; it += GetBlockNum()) {
    const uint64_t e0 = it * TL;
    const uint32_t m = (uint32_t)(n - e0 < TL ? n - e0 : TL);
    moec_sync<HardEvent::MTE3_S>();  // the previous chunk's copy out has read ob
    for (uint32_t i = 0; i < m; i++) {
      const S x = t.amode ? sa : ga.GetValue(e0 + i), y = t.bmode ? sb : gb.GetValue(e0 + i);
      ob.SetValue(i, index_cmp<S>(t.cmp, x, y) ? 1 : 0);
    }
    moec_sync<HardEvent::S_MTE3>();  // the 0/1 bytes, written by the scalar unit, leave by MTE3
    DataCopyPad(go[e0], ob, DataCopyExtParams{1, m, 0, 0, 0});
  }
}

// X_ARITH, X_IUNARY (S: int64_t / int32_t; U its unsigned type: sums and products wrap)
template <typename S, typename U>
__aicore__ inline void index_arith_body(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR out, const IndexTiling &t,
                                        TPipe &pipe) {
  const uint64_t n = (uint64_t)t.n, TL = (uint64_t)t.tile;
  const bool bin = t.op == X_ARITH;
  GlobalTensor<S> ga, gb, gc, go;
  GlobalTensor<int32_t> gst;
  ga.SetGlobalBuffer((__gm__ S *)a, t.amode ? 1 : n);
  if (bin) {
    gb.SetGlobalBuffer((__gm__ S *)b, t.bmode ? 1 : n);
    gst.SetGlobalBuffer((__gm__ int32_t *)c, 1);
  } else if (t.cmp == 2) {
    gb.SetGlobalBuffer((__gm__ S *)b, 1);
    gc.SetGlobalBuffer((__gm__ S *)c, 1);
  }
  go.SetGlobalBuffer((__gm__ S *)out, n);
  TBuf<TPosition::VECCALC> bo, bst;
  pipe.InitBuffer(bo, (uint32_t)(TL * sizeof(S)));
  pipe.InitBuffer(bst, 32);
  LocalTensor<S> ob = bo.Get<S>();
  LocalTensor<int32_t> sv = bst.Get<int32_t>();
  sv.SetValue(0, 1);
  const S sa = t.amode ? ga.GetValue(0) : (S)0, sb = (bin && t.bmode) || (!bin && t.cmp == 2) ? gb.GetValue(0) : (S)0;
  const S hi = !bin && t.cmp == 2 ? gc.GetValue(0) : (S)0;
  bool bad = false;
  for (uint64_t it = GetBlockIdx(); it * TL < n; it += GetBlockNum()) {
    const uint64_t e0 = it * TL;
    const uint32_t m = (uint32_t)(n - e0 < TL ? n - e0 : TL);
    moec_sync<HardEvent::MTE3_S>();
    for (uint32_t i = 0; i < m; i++) {
      const S x = t.amode ? sa : ga.GetValue(e0 + i);
      S r;
      if (bin) {
        const S y = t.bmode ? sb : gb.GetValue(e0 + i);
        switch (t.cmp) {
          case 0: r = (S)((U)x + (U)y); break;
          case 1: r = (S)((U)x - (U)y); break;
          case 2: r = (S)((U)x * (U)y); break;
          case 3:
            if (y == 0) { bad = true; r = 0; }
            else if (y == (S)-1) r = (S)((U)0 - (U)x);  // (the most negative value / -1 wraps, as numpy's does)
            else r = x / y;                               // C++ truncates toward zero
            break;
          case 4: r = x > y ? x : y; break;
          default: r = x < y ? x : y; break;
        }
      } else {
        r = t.cmp == 0 ? (S)((U)0 - (U)x) : t.cmp == 1 ? (x < 0 ? (S)((U)0 - (U)x) : x)
          : (x < sb ? sb : x) > hi ? hi : (x < sb ? sb : x);
      }
      ob.SetValue(i, r);
    }
    moec_sync<HardEvent::S_MTE3>();
    DataCopyPad(go[e0], ob, DataCopyExtParams{1, (uint32_t)(m * sizeof(S)), 0, 0, 0});
  }
  if (bad) DataCopyPad(gst, sv, DataCopyExtParams{1, 4, 0, 0, 0});
}

// X_CAST: S the source's signed type (its unsigned one for bool / uint8), D the destination's
template <typename S, typename D>
__aicore__ inline void index_cast_body(GM_ADDR a, GM_ADDR out, const IndexTiling &t, TPipe &pipe) {
  const uint64_t n = (uint64_t)t.n, TL = (uint64_t)t.tile;
  GlobalTensor<S> ga;
  GlobalTensor<D> go;
  ga.SetGlobalBuffer((__gm__ S *)a, n);
  go.SetGlobalBuffer((__gm__ D *)out, n);
  TBuf<TPosition::VECCALC> bo;
  pipe.InitBuffer(bo, (uint32_t)(TL * sizeof(D)));
  LocalTensor<D> ob = bo.Get<D>();
  for (uint64_t it = GetBlockIdx(); it * TL < n; it += GetBlockNum()) {
    const uint64_t e0 = it * TL;
    const uint32_t m = (uint32_t)(n - e0 < TL ? n - e0 : TL);
    moec_sync<HardEvent::MTE3_S>();
    for (uint32_t i = 0; i < m; i++) ob.SetValue(i, (D)(int64_t)ga.GetValue(e0 + i));
    moec_sync<HardEvent::S_MTE3>();
    DataCopyPad(go[e0], ob, DataCopyExtParams{1, (uint32_t)(m * sizeof(D)), 0, 0, 0});
  }
}
template <typename S>
__aicore__ inline void index_cast_from(GM_ADDR a, GM_ADDR out, const IndexTiling &t, TPipe &pipe) {
  if (t.k == 8) index_cast_body<S, int64_t>(a, out, t, pipe);
  else if (t.k == 4) index_cast_body<S, int32_t>(a, out, t, pipe);
  else if (t.k == 2) index_cast_body<S, int16_t>(a, out, t, pipe);
  else index_cast_body<S, int8_t>(a, out, t, pipe);
}

// one reduction step of X_SCATTER_EL: V the element type, C float (float types) or V's unsigned type (wrapping)
template <typename V, typename C>
__aicore__ inline V scatter_reduce(int32_t r, V a, V b) {
  if constexpr (moec_same<C, float>::value) {
    const float x = (float)a, y = (float)b;
    if (r == 3 || r == 4) {
      if (x != x) return a;  // NaN propagates (the first operand's, as np.maximum / np.minimum)
      if (y != y) return b;
      return (r == 3 ? x >= y : x <= y) ? a : b;
    }
    return (V)(r == 1 ? x + y : x * y);
  } else {
    if (r == 3 || r == 4) return (r == 3 ? a >= b : a <= b) ? a : b;
    return (V)(r == 1 ? (C)a + (C)b : (C)a * (C)b);
  }
}

// X_SCATTER_EL, one core, in index order: RED, with a reduction (V, C: as scatter_reduce), else the update
// replaces the element (V: the unsigned type of the element width)
template <typename V, typename C, bool RED>
__aicore__ inline void index_scatter_body(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR out, const IndexTiling &t,
                                                 TPipe &pipe) {
  const uint64_t L = (uint64_t)t.L, K = (uint64_t)t.k, inner = (uint64_t)t.inner, n = (uint64_t)t.n;
  GlobalTensor<V> gu, go;
  GlobalTensor<int64_t> gi64;
  GlobalTensor<int32_t> gi32, gst;
  gst.SetGlobalBuffer((__gm__ int32_t *)a, 1);
  const uint64_t ni = (t.flags & 2) ? n / inner : n;  // the indices' count
  if (t.flags & 1) gi64.SetGlobalBuffer((__gm__ int64_t *)b, ni);
  else gi32.SetGlobalBuffer((__gm__ int32_t *)b, ni);
  gu.SetGlobalBuffer((__gm__ V *)c, n);
  go.SetGlobalBuffer((__gm__ V *)out, (uint64_t)t.outer * L * inner);
  TBuf<TPosition::VECCALC> bst;
  pipe.InitBuffer(bst, 32);
  LocalTensor<int32_t> sv = bst.Get<int32_t>();
  if (GetBlockIdx() != 0) return;
  bool bad = false;
  for (uint64_t e = 0; e < n; e++) {
    const uint64_t ii = e % inner, o = e / inner / K;
    const uint64_t ie = (t.flags & 2) ? e / inner : e;  // flags 2: one index per row of inner elements (ScatterND)
    int64_t id = (t.flags & 1) ? gi64.GetValue(ie) : (int64_t)gi32.GetValue(ie);
    if (id < 0) id += (int64_t)L;
    if (id < 0 || id >= (int64_t)L) { bad = true; continue; }
    const uint64_t pos = (o * L + (uint64_t)id) * inner + ii;
    if constexpr (RED) go.SetValue(pos, scatter_reduce<V, C>(t.cmp, go.GetValue(pos), gu.GetValue(e)));
    else go.SetValue(pos, gu.GetValue(e));
  }
  DataCacheCleanAndInvalid<V, CacheLine::ENTIRE_DATA_CACHE, DcciDst::CACHELINE_OUT>(go);
  if (bad) {
    sv.SetValue(0, 1);
    moec_sync<HardEvent::S_MTE3>();
    DataCopyPad(gst, sv, DataCopyExtParams{1, 4, 0, 0, 0});
  }
}

// X_SELECT, X_CUMSUM, X_GATHER_EL (U: the unsigned type of the element width)
template <typename U>
__aicore__ inline void index_bits_body(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR out, const IndexTiling &t,
                                       TPipe &pipe) {
  const uint64_t TL = (uint64_t)t.tile;
  TBuf<TPosition::VECCALC> bo, bc;
  pipe.InitBuffer(bo, (uint32_t)(TL * sizeof(U)));
  LocalTensor<U> ob = bo.Get<U>();
  GlobalTensor<U> ga, gb, go;
  if (t.op == X_SELECT) {
    const uint64_t n = (uint64_t)t.n;
    GlobalTensor<uint8_t> gc;
    gc.SetGlobalBuffer((__gm__ uint8_t *)c, n);
    ga.SetGlobalBuffer((__gm__ U *)a, t.amode ? 1 : n);
    gb.SetGlobalBuffer((__gm__ U *)b, t.bmode ? 1 : n);
    go.SetGlobalBuffer((__gm__ U *)out, n);
    const U sa = t.amode ? ga.GetValue(0) : (U)0, sb = t.bmode ? gb.GetValue(0) : (U)0;
    for (uint64_t it = GetBlockIdx(); it * TL < n; it += GetBlockNum()) {
      const uint64_t e0 = it * TL;
      const uint32_t m = (uint32_t)(n - e0 < TL ? n - e0 : TL);
      moec_sync<HardEvent::MTE3_S>();
      for (uint32_t i = 0; i < m; i++) {
        const bool cond = gc.GetValue(e0 + i) != 0;
        ob.SetValue(i, cond ? (t.amode ? sa : ga.GetValue(e0 + i)) : (t.bmode ? sb : gb.GetValue(e0 + i)));
      }
      moec_sync<HardEvent::S_MTE3>();
      DataCopyPad(go[e0], ob, DataCopyExtParams{1, (uint32_t)(m * sizeof(U)), 0, 0, 0});
    }
  } else if (t.op == X_GATHER_EL) {
    const uint64_t n = (uint64_t)t.n, L = (uint64_t)t.L, K = (uint64_t)t.k, inner = (uint64_t)t.inner;
    GlobalTensor<int64_t> gi64;
    GlobalTensor<int32_t> gi32, gst;
    ga.SetGlobalBuffer((__gm__ U *)a, (uint64_t)t.outer * L * inner);
    if (t.flags & 1) gi64.SetGlobalBuffer((__gm__ int64_t *)b, n);
    else gi32.SetGlobalBuffer((__gm__ int32_t *)b, n);
    gst.SetGlobalBuffer((__gm__ int32_t *)c, 1);
    go.SetGlobalBuffer((__gm__ U *)out, n);
    pipe.InitBuffer(bc, 32);  // the status word 1, written out by DMA (several cores may report it)
    LocalTensor<int32_t> sv = bc.Get<int32_t>();
    sv.SetValue(0, 1);
    bool bad = false;
    for (uint64_t it = GetBlockIdx(); it * TL < n; it += GetBlockNum()) {
      const uint64_t e0 = it * TL;
      const uint32_t m = (uint32_t)(n - e0 < TL ? n - e0 : TL);
      moec_sync<HardEvent::MTE3_S>();
      for (uint32_t i = 0; i < m; i++) {
        const uint64_t e = e0 + i, ii = e % inner, o = e / inner / K;
        int64_t id = (t.flags & 1) ? gi64.GetValue(e) : (int64_t)gi32.GetValue(e);
        if (id < 0) id += (int64_t)L;
        U v = (U)0;
        if (id < 0 || id >= (int64_t)L) bad = true;
        else v = ga.GetValue((o * L + (uint64_t)id) * inner + ii);
        ob.SetValue(i, v);
      }
      moec_sync<HardEvent::S_MTE3>();
      DataCopyPad(go[e0], ob, DataCopyExtParams{1, (uint32_t)(m * sizeof(U)), 0, 0, 0});
    }
    if (bad) DataCopyPad(gst, sv, DataCopyExtParams{1, 4, 0, 0, 0});
  } else {  // X_CUMSUM over [outer, L, inner]: items (o, a chunk of W inner columns), rows staged R at a time
    const uint64_t L = (uint64_t)t.L, inner = (uint64_t)t.inner;
    const bool rev = t.flags & 1, excl = t.flags & 2;
    const uint32_t W = (uint32_t)(inner < TL / 2 ? inner : TL / 2);      // columns per item
    const uint32_t ss = bytes32(W * sizeof(U)) / sizeof(U);             // a staged row's stride (32-byte aligned)
    uint32_t R = (uint32_t)(TL / ss);                                     // rows per copy out
    R = R < 1 ? 1 : R > 4095 ? 4095 : R;
    pipe.InitBuffer(bc, bytes32(W * sizeof(U)));                       // the running sums of the item's columns
    LocalTensor<U> cb = bc.Get<U>();
    ga.SetGlobalBuffer((__gm__ U *)a, (uint64_t)t.outer * L * inner);
    go.SetGlobalBuffer((__gm__ U *)out, (uint64_t)t.outer * L * inner);
    const uint64_t nch = (inner + W - 1) / W, items = (uint64_t)t.outer * nch;
    for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
      const uint64_t o = it / nch, c0 = (it % nch) * W;
      const uint32_t w = (uint32_t)(inner - c0 < W ? inner - c0 : W);
      for (uint32_t i = 0; i < w; i++) cb.SetValue(i, (U)0);
      for (uint64_t b0 = 0; b0 < L; b0 += R) {
        const uint64_t lo = rev ? (L - b0 > R ? L - b0 - R : 0) : b0, hi = rev ? L - b0 : (b0 + R < L ? b0 + R : L);
        moec_sync<HardEvent::MTE3_S>();
        for (uint64_t s = 0; s < hi - lo; s++) {
          const uint64_t l = rev ? hi - 1 - s : lo + s;
          for (uint32_t i = 0; i < w; i++) {
            const U prev = cb.GetValue(i), sum = (U)(prev + ga.GetValue((o * L + l) * inner + c0 + i));
            cb.SetValue(i, sum);
            ob.SetValue((uint32_t)(l - lo) * ss + i, excl ? prev : sum);
          }
        }
        moec_sync<HardEvent::S_MTE3>();
        DataCopyPad(go[(o * L + lo) * inner + c0], ob,
                    DataCopyExtParams{(uint16_t)(hi - lo), (uint32_t)(w * sizeof(U)),
                                      (uint32_t)((ss * sizeof(U) - bytes32(w * sizeof(U))) / 32),
                                      (uint32_t)((inner - w) * sizeof(U)), 0});
      }
    }
  }
}

// X_TOPK (V: float, half, bfloat16_t): rows of a [outer, L], G rows per copy out
template <typename V>
__aicore__ inline void index_topk_body(GM_ADDR a, GM_ADDR c, GM_ADDR out, const IndexTiling &t, TPipe &pipe) {
  const uint64_t L = (uint64_t)t.L, K = (uint64_t)t.k, TL = (uint64_t)t.tile;
  const bool largest = t.flags & 1;
  GlobalTensor<V> ga, go;
  GlobalTensor<int64_t> gi;
  ga.SetGlobalBuffer((__gm__ V *)a, (uint64_t)t.outer * L);
  go.SetGlobalBuffer((__gm__ V *)out, (uint64_t)t.outer * K);
  gi.SetGlobalBuffer((__gm__ int64_t *)c, (uint64_t)t.outer * K);
  TBuf<TPosition::VECCALC> bv, bi;
  pipe.InitBuffer(bv, (uint32_t)(TL * sizeof(V)));
  pipe.InitBuffer(bi, (uint32_t)(TL * 8));
  LocalTensor<V> ov = bv.Get<V>();
  LocalTensor<int64_t> oi = bi.Get<int64_t>();
  // G rows per copy out; a row of more than TL picks (k > TL: a vocabulary's top-k) leaves in chunks of TL
  const uint64_t G = K <= TL ? TL / K : 1, items = ((uint64_t)t.outer + G - 1) / G;
  const uint64_t CH = K <= TL ? K : TL;  // picks staged per row and copy out
  const float inf = 1.0f / 0.0f;
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    const uint64_t r0 = it * G, nr = (uint64_t)t.outer - r0 < G ? (uint64_t)t.outer - r0 : G;
    float pk = 0.f;
    int64_t pi = -1;
    for (uint64_t j0 = 0; j0 < K; j0 += CH) {  // (one pass when K <= TL)
      const uint64_t m = K - j0 < CH ? K - j0 : CH;
      moec_sync<HardEvent::MTE3_S>();
      for (uint64_t r = 0; r < nr; r++) {
        const uint64_t base = (r0 + r) * L;
        if (j0 == 0) {  // a new row (several chunks only when the group is one row: its state carries over)
          pk = 0.f;
          pi = -1;
        }
        for (uint64_t j = 0; j < m; j++) {
          float bk = 0.f;
          int64_t best = -1;
          for (uint64_t e = 0; e < L; e++) {
            float x = (float)ga.GetValue(base + e);
            if (x != x) x = inf;  // NaN ranks as +inf
            // after the previous pick (ordered by key, then index) and before the best so far
            const bool after = pi < 0 || (largest ? (x < pk || (x == pk && (int64_t)e > pi))
                                                   : (x > pk || (x == pk && (int64_t)e > pi)));
            if (after && (best < 0 || (largest ? x > bk : x < bk))) {
              bk = x;
              best = (int64_t)e;
            }
          }
          pk = bk;
          pi = best;
          ov.SetValue((uint32_t)(r * m + j), ga.GetValue(base + (uint64_t)best));
          oi.SetValue((uint32_t)(r * m + j), best);
        }
      }
      moec_sync<HardEvent::S_MTE3>();
      DataCopyPad(go[r0 * K + j0], ov, DataCopyExtParams{1, (uint32_t)(nr * m * sizeof(V)), 0, 0, 0});
      DataCopyPad(gi[r0 * K + j0], oi, DataCopyExtParams{1, (uint32_t)(nr * m * 8), 0, 0, 0});
    }
  }
}

// X_TOPK_K, one core
__aicore__ inline void index_topk_k_body(GM_ADDR a, GM_ADDR c, GM_ADDR out, const IndexTiling &t, TPipe &pipe) {
  GlobalTensor<int64_t> ga;
  GlobalTensor<int32_t> go, gst;
  ga.SetGlobalBuffer((__gm__ int64_t *)a, 1);
  go.SetGlobalBuffer((__gm__ int32_t *)out, 1);
  gst.SetGlobalBuffer((__gm__ int32_t *)c, 1);
  TBuf<TPosition::VECCALC> bo;
  pipe.InitBuffer(bo, 64);
  LocalTensor<int32_t> ov = bo.Get<int32_t>();
  if (GetBlockIdx() != 0) return;
  const int64_t k = ga.GetValue(0);
  const bool bad = k < 0 || k > (int64_t)t.L;
  ov.SetValue(0, bad ? 0 : (int32_t)k);
  ov.SetValue(8, 1);
  moec_sync<HardEvent::S_MTE3>();
  DataCopyPad(go, ov, DataCopyExtParams{1, 4, 0, 0, 0});
  if (bad) DataCopyPad(gst, ov[8], DataCopyExtParams{1, 4, 0, 0, 0});
}

extern "C" __global__ __aicore__ void vec_index(GM_ADDR a, GM_ADDR b, GM_ADDR c, GM_ADDR out, GM_ADDR workspace,
                                                GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  IndexTiling t;
  load_tiling(tiling, t);
  TPipe pipe;
  if (t.op == X_CMP) {
    if (t.esize == 8) index_cmp_body<int64_t>(a, b, out, t, pipe);
    else index_cmp_body<int32_t>(a, b, out, t, pipe);
  } else if (t.op == X_TOPK) {
    if (t.vdt == 2) index_topk_body<half>(a, c, out, t, pipe);
    else if (t.vdt == 1) index_topk_body<bfloat16_t>(a, c, out, t, pipe);
    else index_topk_body<float>(a, c, out, t, pipe);
  } else if (t.op == X_ARITH || t.op == X_IUNARY) {
    if (t.esize == 8) index_arith_body<int64_t, uint64_t>(a, b, c, out, t, pipe);
    else index_arith_body<int32_t, uint32_t>(a, b, c, out, t, pipe);
  } else if (t.op == X_CAST) {
    if (t.esize == 8) index_cast_from<int64_t>(a, out, t, pipe);
    else if (t.esize == 4) index_cast_from<int32_t>(a, out, t, pipe);
    else if (t.esize == 2) index_cast_from<int16_t>(a, out, t, pipe);
    else if (t.flags & 1) index_cast_from<uint8_t>(a, out, t, pipe);
    else index_cast_from<int8_t>(a, out, t, pipe);
  } else if (t.op == X_TOPK_K) {
    index_topk_k_body(a, c, out, t, pipe);
  } else if (t.op == X_SCATTER_EL && t.cmp != 0) {
    if (t.vdt == 3) index_scatter_body<int64_t, uint64_t, true>(a, b, c, out, t, pipe);
    else if (t.vdt == 4) index_scatter_body<int32_t, uint32_t, true>(a, b, c, out, t, pipe);
    else if (t.vdt == 2) index_scatter_body<half, float, true>(a, b, c, out, t, pipe);
    else if (t.vdt == 1) index_scatter_body<bfloat16_t, float, true>(a, b, c, out, t, pipe);
    else index_scatter_body<float, float, true>(a, b, c, out, t, pipe);
  } else if (t.op == X_SCATTER_EL) {
    if (t.esize == 1) index_scatter_body<uint8_t, uint8_t, false>(a, b, c, out, t, pipe);
    else if (t.esize == 2) index_scatter_body<uint16_t, uint16_t, false>(a, b, c, out, t, pipe);
    else if (t.esize == 8) index_scatter_body<uint64_t, uint64_t, false>(a, b, c, out, t, pipe);
    else index_scatter_body<uint32_t, uint32_t, false>(a, b, c, out, t, pipe);
  } else if (t.esize == 1) {
    index_bits_body<uint8_t>(a, b, c, out, t, pipe);
  } else if (t.esize == 2) {
    index_bits_body<uint16_t>(a, b, c, out, t, pipe);
  } else if (t.esize == 8) {
    index_bits_body<uint64_t>(a, b, c, out, t, pipe);
  } else {
    index_bits_body<uint32_t>(a, b, c, out, t, pipe);
  }
}

// ------------------------------------------------------------------------------------------------
// vec_kv: the KV-cache ops (ir/ops/kv.py; codegen/ascend/kv_ops.py plans them).  The cache in GM is float or
// half (a half-precision cache under float queries: t.cdt); everything else is float.  Half rows come into
// the Unified Buffer as they are (half the bytes of the DMA) and are widened by Cast (exact) before any
// arithmetic; appended rows are rounded to half by Cast (CAST_RINT: nearest, ties to even) on the way out.
//   KV_STEP    moec.kv_step_attention: a = q [B,Hq,S,D], k_cache, v_cache [B,Hkv,M,D|DV], k_new, v_new
//              [B,Hkv,S,D|DV], pos, y [B,Hq,S,DV], status.  A work item is one query row (b, h, i) at position
//              qpos = pos + i: the cache's rows j < pos, then the new rows i' <= i, keys within the window;
//              the visible keys of each part are one contiguous range, read in tiles of nk rows (one
//              DataCopyPad each for keys and values); an online softmax (running max m, sum l, acc = sum p v)
//              in float.  Scores: Mul + ReduceSum per key row (the scalar unit collects them), then the
//              tile's max / exp / sum on the vector unit.
//   KV_ATTN    moec.kv_attention without a mask: the buffer's rows j < pos + S (causal: j <= qpos).
//   KV_APPEND  moec.kv_append: a = cache [outer, M, inner], new [outer, T, inner], pos, status: cache[o, pos + t]
//              = new[o, t] in the cache's type; a work item is a chunk of one row.  In place (the op's result is
//              the cache buffer itself): only the T new rows are written.
// A position outside the cache (pos < 0, or past the capacity) writes nothing and sets status[0] = 1.
enum KvMode : int32_t { KV_STEP = 0, KV_APPEND = 1, KV_ATTN = 2 };
struct KvTiling {
  int32_t mode;                       // KvMode
  int32_t B, Hq, Hkv, S, D, DV, M;    // attention shapes (M: the cache's capacity)
  int32_t window, causal;             // KV_STEP's window (0: none); KV_ATTN: causal
  float scale;
  int32_t cdt;                        // the cache's GM type: 0 float, 2 half
  int32_t nk;                         // key rows per tile (a multiple of 8)
  int32_t pos64;                      // pos is int64 (1) or int32 (0)
  int32_t outer, T, inner, tile;      // KV_APPEND: cache [outer, M, inner], new [outer, T, inner]; elements per chunk
};

__aicore__ inline int64_t kv_pos(GM_ADDR pos, int32_t pos64) {
  if (pos64) {
    GlobalTensor<int64_t> g;
    g.SetGlobalBuffer((__gm__ int64_t *)pos, 1);
    return g.GetValue(0);
  }
  GlobalTensor<int32_t> g;
  g.SetGlobalBuffer((__gm__ int32_t *)pos, 1);
  return (int64_t)g.GetValue(0);
}

__aicore__ inline void kv_status(GM_ADDR status) {  // (only block 0 writes it: one word, one writer)
  if (GetBlockIdx() != 0) return;
  GlobalTensor<int32_t> g;
  g.SetGlobalBuffer((__gm__ int32_t *)status, 1);
  g.SetValue(0, 1);
  DataCacheCleanAndInvalid<int32_t, CacheLine::ENTIRE_DATA_CACHE, DcciDst::CACHELINE_OUT>(g);
}

template <typename C>
__aicore__ inline void kv_append_body(GM_ADDR cache, GM_ADDR nw, GM_ADDR pos, GM_ADDR status, const KvTiling &t) {
  const uint64_t M = (uint64_t)t.M, T = (uint64_t)t.T, inner = (uint64_t)t.inner;
  const int64_t p = kv_pos(pos, t.pos64);
  if (p < 0 || (uint64_t)p + T > M) {
    kv_status(status);
    return;
  }
  GlobalTensor<C> gc;
  GlobalTensor<float> gn;
  gc.SetGlobalBuffer((__gm__ C *)cache, (uint64_t)t.outer * M * inner);
  gn.SetGlobalBuffer((__gm__ float *)nw, (uint64_t)t.outer * T * inner);
  const uint32_t TL = t.tile, nch = (uint32_t)((inner + TL - 1) / TL);
  const uint64_t items = (uint64_t)t.outer * T * nch;
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qi;
  TQue<TPosition::VECOUT, 2> qo;
  pipe.InitBuffer(qi, 2, TL * 4);
  pipe.InitBuffer(qo, 2, TL * sizeof(C));
  DataCopyPadExtParams<float> nopad{false, 0, 0, 0.f};
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    const uint64_t row = it / nch, o = row / T, r = row % T;
    const uint32_t c0 = (uint32_t)(it % nch) * TL, n = (uint32_t)(inner - c0 < TL ? inner - c0 : TL);
    LocalTensor<float> a = qi.AllocTensor<float>();
    DataCopyPad(a, gn[row * inner + c0], DataCopyExtParams{1, n * 4, 0, 0, 0}, nopad);
    qi.EnQue(a);
    a = qi.DeQue<float>();
    LocalTensor<C> b = qo.AllocTensor<C>();
    narrow(b, a, n);  // (half: round to nearest even; float: a copy)
    qi.FreeTensor(a);
    qo.EnQue(b);
    b = qo.DeQue<C>();
    DataCopyPad(gc[(o * M + (uint64_t)p + r) * inner + c0], b, DataCopyExtParams{1, (uint32_t)(n * sizeof(C)), 0, 0, 0});
    qo.FreeTensor(b);
  }
}

struct KvRun {  // the online softmax of one query row
  float m, l;
};

// fold key rows [lo, hi) of one head (GM row j at kg[j * D], vg[j * DV]) into the running softmax (m, l, acc)
template <typename C>
__aicore__ inline void kv_part(const GlobalTensor<C> &kg, const GlobalTensor<C> &vg, int64_t lo, int64_t hi,
                               const KvTiling &t, const LocalTensor<float> &qf, const LocalTensor<float> &acc,
                               const LocalTensor<C> &kraw, const LocalTensor<C> &vraw, const LocalTensor<float> &kf,
                               const LocalTensor<float> &vf, const LocalTensor<float> &sc,
                               const LocalTensor<float> &prod, const LocalTensor<float> &work,
                               const LocalTensor<float> &red, const LocalTensor<float> &tmpv, KvRun &run) {
  const uint32_t D = t.D, DV = t.DV, Dc = vpadb<C>(D), DVc = vpadb<C>(DV);
  DataCopyPadExtParams<C> zpad{true, 0, 0, (C)0.f};
  for (int64_t j0 = lo; j0 < hi; j0 += t.nk) {
    const uint32_t nk = (uint32_t)(hi - j0 < t.nk ? hi - j0 : t.nk);
    moec_sync<HardEvent::V_MTE2>();  // the previous tile's rows are no longer read
    DataCopyPad(kraw, kg[(uint64_t)j0 * D], DataCopyExtParams{(uint16_t)nk, (uint32_t)(D * sizeof(C)), 0, 0, 0}, zpad);
    DataCopyPad(vraw, vg[(uint64_t)j0 * DV], DataCopyExtParams{(uint16_t)nk, (uint32_t)(DV * sizeof(C)), 0, 0, 0}, zpad);
    moec_sync<HardEvent::MTE2_V>();
    LocalTensor<float> k = widen(kraw, kf, nk * Dc), v = widen(vraw, vf, nk * DVc);
    for (uint32_t j = 0; j < nk; j++) {  // s_j = scale * q . k_j
      Mul(prod, k[j * Dc], qf, D);
      ReduceSum(red, prod, work, D);
      moec_sync<HardEvent::V_S>();
      const float s = red.GetValue(0) * t.scale;
      sc.SetValue(j, s);
      moec_sync<HardEvent::S_V>();
    }
    ReduceMax(red, sc, work, nk);
    moec_sync<HardEvent::V_S>();
    const float mt = red.GetValue(0), mn = mt > run.m ? mt : run.m;
    moec_sync<HardEvent::S_V>();
    Adds(sc, sc, -mn, nk);
    Exp(sc, sc, nk);
    ReduceSum(red, sc, work, nk);
    Duplicate(red[8], run.m - mn, 8);  // alpha = exp(m_old - m_new) (0 for the first tile: m_old the lowest float)
    Exp(red[8], red[8], 8);
    moec_sync<HardEvent::V_S>();
    const float alpha = red.GetValue(8);
    run.l = run.l * alpha + red.GetValue(0);
    run.m = mn;
    Muls(acc, acc, alpha, DV);
    for (uint32_t j = 0; j < nk; j++) {  // acc += p_j v_j
      const float pj = sc.GetValue(j);
      Muls(tmpv, v[j * DVc], pj, DV);
      Add(acc, acc, tmpv, DV);
    }
  }
}

template <typename C>
__aicore__ inline void kv_attn_body(GM_ADDR q, GM_ADDR kc, GM_ADDR vc, GM_ADDR kn, GM_ADDR vn, GM_ADDR pos, GM_ADDR y,
                                    GM_ADDR status, const KvTiling &t) {
  const uint32_t B = t.B, Hq = t.Hq, Hkv = t.Hkv, S = t.S, D = t.D, DV = t.DV, M = t.M, G = Hq / Hkv;
  const bool step = t.mode == KV_STEP;
  const int64_t p = kv_pos(pos, t.pos64);
  if (p < 0 || p + (step ? 0 : (int64_t)S) > (int64_t)M) {
    kv_status(status);
    return;
  }
  GlobalTensor<float> gq, gy, gkn, gvn;
  GlobalTensor<C> gkc, gvc;
  gq.SetGlobalBuffer((__gm__ float *)q, (uint64_t)B * Hq * S * D);
  gy.SetGlobalBuffer((__gm__ float *)y, (uint64_t)B * Hq * S * DV);
  gkc.SetGlobalBuffer((__gm__ C *)kc, (uint64_t)B * Hkv * M * D);
  gvc.SetGlobalBuffer((__gm__ C *)vc, (uint64_t)B * Hkv * M * DV);
  if (step) {
    gkn.SetGlobalBuffer((__gm__ float *)kn, (uint64_t)B * Hkv * S * D);
    gvn.SetGlobalBuffer((__gm__ float *)vn, (uint64_t)B * Hkv * S * DV);
  }
  const uint32_t NK = t.nk, Dc = vpadb<C>(D), DVc = vpadb<C>(DV), Dp = pad8(D), DVp = pad8(DV);
  const uint32_t Dm = Dc > Dp ? Dc : Dp, DVm = DVc > DVp ? DVc : DVp;  // (float rows of the new keys: Dp)
  TPipe pipe;
  TBuf<TPosition::VECCALC> bq, bacc, btmp, bprod, bwork, bred, bsc, bkr, bvr, bkf, bvf, bknr, bvnr;
  pipe.InitBuffer(bq, Dp * 4);
  pipe.InitBuffer(bacc, DVp * 4);
  pipe.InitBuffer(btmp, DVp * 4);
  pipe.InitBuffer(bprod, Dp * 4);
  pipe.InitBuffer(bwork, (Dm > NK ? Dm : NK) * 4 + 64);
  pipe.InitBuffer(bred, 64);
  pipe.InitBuffer(bsc, NK * 4);
  pipe.InitBuffer(bkr, NK * Dc * sizeof(C));
  pipe.InitBuffer(bvr, NK * DVc * sizeof(C));
  if constexpr (!moec_same<C, float>::value) {
    pipe.InitBuffer(bkf, NK * Dc * 4);
    pipe.InitBuffer(bvf, NK * DVc * 4);
  }
  if (step) {  // the new keys / values are float rows
    pipe.InitBuffer(bknr, NK * Dp * 4);
    pipe.InitBuffer(bvnr, NK * DVp * 4);
  }
  LocalTensor<float> qf = bq.Get<float>(), acc = bacc.Get<float>(), tmpv = btmp.Get<float>(), prod = bprod.Get<float>();
  LocalTensor<float> work = bwork.Get<float>(), red = bred.Get<float>(), sc = bsc.Get<float>(), kf, vf, knr, vnr;
  LocalTensor<C> kraw = bkr.Get<C>(), vraw = bvr.Get<C>();
  if constexpr (!moec_same<C, float>::value) {
    kf = bkf.Get<float>();
    vf = bvf.Get<float>();
  }
  if (step) {
    knr = bknr.Get<float>();
    vnr = bvnr.Get<float>();
  }
  DataCopyPadExtParams<float> zpad{true, 0, 0, 0.f};
  const uint64_t items = (uint64_t)B * Hq * S;
  for (uint64_t it = GetBlockIdx(); it < items; it += GetBlockNum()) {
    const uint64_t i = it % S, bh = it / S, h = bh % Hq, b = bh / Hq, g = h / G;
    const int64_t qpos = p + (int64_t)i;
    moec_sync<HardEvent::V_MTE2>();  // the previous item's q no longer read
    moec_sync<HardEvent::MTE3_V>();  // the previous item's acc has left
    DataCopyPad(qf, gq[it * D], DataCopyExtParams{1, D * 4, 0, 0, 0}, zpad);
    Duplicate(acc, 0.f, DVp);
    moec_sync<HardEvent::MTE2_V>();
    KvRun run{-3.402823466e+38f, 0.f};  // (the lowest float: exp(m - m_new) underflows to 0)
    const uint64_t head = (b * Hkv + g) * (uint64_t)M;
    int64_t lo = 0, hi = step ? p : (t.causal ? qpos + 1 : p + (int64_t)S);
    if (step && t.window > 0 && qpos - t.window + 1 > lo) lo = qpos - t.window + 1;
    kv_part<C>(gkc[head * D], gvc[head * DV], lo, hi, t, qf, acc, kraw, vraw, kf, vf, sc, prod, work, red, tmpv, run);
    if (step) {  // the new rows i' <= i (positions p + i'), within the window
      const uint64_t nh = (b * Hkv + g) * (uint64_t)S;
      int64_t lo2 = t.window > 0 && (int64_t)i - t.window + 1 > 0 ? (int64_t)i - t.window + 1 : 0;
      kv_part<float>(gkn[nh * D], gvn[nh * DV], lo2, (int64_t)i + 1, t, qf, acc, knr, vnr, knr, vnr, sc, prod, work,
                     red, tmpv, run);
    }
    Muls(acc, acc, 1.0f / run.l, DV);
    moec_sync<HardEvent::V_MTE3>();
    DataCopyPad(gy[it * DV], acc, DataCopyExtParams{1, DV * 4, 0, 0, 0});
  }
}

extern "C" __global__ __aicore__ void vec_kv(GM_ADDR a0, GM_ADDR a1, GM_ADDR a2, GM_ADDR a3, GM_ADDR a4, GM_ADDR a5,
                                             GM_ADDR a6, GM_ADDR a7, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  KvTiling t;
  load_tiling(tiling, t);
  if (t.mode == KV_APPEND) {
    if (t.cdt == 2) kv_append_body<half>(a0, a1, a2, a3, t);
    else kv_append_body<float>(a0, a1, a2, a3, t);
  } else if (t.cdt == 2) {
    kv_attn_body<half>(a0, a1, a2, a3, a4, a5, a6, a7, t);
  } else {
    kv_attn_body<float>(a0, a1, a2, a3, a4, a5, a6, a7, t);
  }
}

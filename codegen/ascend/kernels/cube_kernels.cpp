// moec AscendC grouped matmul on the cube cores (AIC), mirroring CANN's GroupedMatmul:
//   C[r, :] = A[r, :] . W[g]^T  for the rows r of group g,   A [rows, K], W [G, N, K] (B^T per group), C f32
//   (int32 for int8 A and W: w8a8)
//   (or half: cdt = 2, the fixpipe rounds the f32 accumulators to half on the way out, F322F16)
// Rows are sorted by group (MoeInitRouting's expanded rows); the group list is the cumsum offsets[G+1] in GM
// (it changes every call, so it is read on the device); the token count and tile sizes travel in the tiling
// struct, chosen on the host by the cost model (codegen/ascend/plan.py) from the L1/L0 capacities.
//
// Each AIC block takes the (group, m-tile, n-tile) work items i with i % blockDim == blockIdx and runs
//   GM -> L1   DataCopy with Nd2NzParams (ND -> NZ): an A tile [m, kL1] and a B^T tile [n, kL1]
//   L1 -> L0A  LoadData, one call per 16-row fractal row of A (its fractals sit one NZ column block apart)
//   L1 -> L0B  LoadData, one contiguous run: B^T's NZ column blocks are exactly L0B's fractal rows
//   Mmad       k-tiles of baseK accumulate in L0C (cmatrixInitVal on the first), f32 accumulation
//              (int32 for int8 operands); PipeBarrier<PIPE_M> between accumulating Mmads of a small tile
//              ((m/16)*(n/16) < 10: the Mmad documentation's condition; the cube core has no auto-sync)
//   Fixpipe    L0C -> GM, NZ -> ND rows of the f32 output (or rounded to half: F322F16)
// Double buffering: the L1 and L0 queues hold two buffers each, so the MTE2 copy of the next k-slice and
// the MTE1 load of the next k-tile overlap the current Mmad; L0C holds two tiles when they fit (dbL0C), so
// an item's Fixpipe overlaps the next item's Mmad.
// Data types: float (910B's cube takes f32 at a reduced rate; f32 models verify at f32 tolerance),
// bfloat16_t and half (f32 accumulation; half is f16 models' type: their GEMM inputs are already half), and
// int8_t (w8a8: per-row quantised activations x int8 weights; 16 x 32 fractals, exact int32 accumulation in
// L0C, Fixpipe NoQuant writes the int32 sums to a GM workspace; the vector cores apply the row and channel
// scales after).
// aShared = 1: every group reads the same A rows (shared experts, or one group for a plain matmul).
#include "kernel_operator.h"
#include "moec_kernel_common.h"
using namespace AscendC;

struct GmmTiling {
  int32_t T;                          // tokens of this call
  int32_t G;                          // groups (experts)
  int32_t N, K;                       // output columns, reduction length
  int32_t baseM, baseN, baseK, stepK; // L0 tile [baseM x baseK] x [baseK x baseN]; L1 holds stepK*baseK of K
  int32_t aShared;                    // 1: all groups read A rows [0, aRows)
  int32_t aRows;                      // rows of A in GM
  int32_t outRows;                    // rows of C in GM
  int32_t dbL0C;                      // L0C buffers (1 or 2)
  int32_t dtype;                      // A and W: 0 float, 1 bfloat16_t, 2 half, 3 int8_t (w8a8)
  int32_t cdt;                        // C: 0 float, 2 half (Fixpipe F322F16; with half A/W only); int8: int32
};

__aicore__ inline uint32_t align16(uint32_t n) { return (n + 15) / 16 * 16; }

template <typename TA, typename TC, typename TL0C = float>
__aicore__ inline void gmm_body(GM_ADDR a, GM_ADDR w, GM_ADDR group_list, GM_ADDR c, const GmmTiling &t) {
  const uint32_t C0 = 32 / sizeof(TA);        // elements per 32-byte fractal row
  const uint32_t FRAC = 512 / sizeof(TA);     // elements per 16 x C0 fractal
  const uint32_t N = t.N, K = t.K, bm = t.baseM, bn = t.baseN, bk = t.baseK, kL1 = t.baseK * t.stepK;
  GlobalTensor<int32_t> gl;
  GlobalTensor<TA> ga, gw;
  GlobalTensor<TC> gc;
  gl.SetGlobalBuffer((__gm__ int32_t *)group_list, t.G + 1);
  ga.SetGlobalBuffer((__gm__ TA *)a, (uint64_t)t.aRows * K);
  gw.SetGlobalBuffer((__gm__ TA *)w, (uint64_t)t.G * N * K);
  gc.SetGlobalBuffer((__gm__ TC *)c, (uint64_t)t.outRows * N);
  TPipe pipe;
  TQue<TPosition::A1, 1> qa1;
  TQue<TPosition::B1, 1> qb1;
  TQue<TPosition::A2, 1> qa2;
  TQue<TPosition::B2, 1> qb2;
  TQue<TPosition::CO1, 1> qc;
  pipe.InitBuffer(qa1, 2, bm * kL1 * sizeof(TA));
  pipe.InitBuffer(qb1, 2, bn * kL1 * sizeof(TA));
  pipe.InitBuffer(qa2, 2, bm * bk * sizeof(TA));
  pipe.InitBuffer(qb2, 2, bn * bk * sizeof(TA));
  pipe.InitBuffer(qc, t.dbL0C, bm * bn * sizeof(TL0C));
  const int64_t blk = GetBlockIdx(), nblk = GetBlockNum();
  const uint32_t ntiles = (N + bn - 1) / bn;
  int64_t item = 0;
  for (int32_t g = 0; g < t.G; g++) {
    const int32_t r0 = gl.GetValue(g), rows = gl.GetValue(g + 1) - r0;
    if (rows <= 0) continue;
    const uint32_t mtiles = ((uint32_t)rows + bm - 1) / bm;
    for (uint32_t mi = 0; mi < mtiles; mi++)
      for (uint32_t ni = 0; ni < ntiles; ni++, item++) {
        if (item % nblk != blk) continue;
        const uint32_t m = (uint32_t)rows - mi * bm < bm ? (uint32_t)rows - mi * bm : bm;
        const uint32_t n = N - ni * bn < bn ? N - ni * bn : bn;
        const uint32_t m16 = align16(m), n16 = align16(n), M1 = m16 / 16, N1 = n16 / 16;
        const uint64_t arow = (uint64_t)(t.aShared ? 0 : r0) + mi * bm;
        const uint64_t wrow = (uint64_t)g * N + ni * bn;
        LocalTensor<TL0C> cl = qc.AllocTensor<TL0C>();
        for (uint32_t k0 = 0; k0 < K; k0 += kL1) {
          const uint32_t kl = K - k0 < kL1 ? K - k0 : kL1;
          // GM -> L1, ND -> NZ: column blocks C0 wide, m16 (n16) fractal rows apart
          LocalTensor<TA> a1 = qa1.AllocTensor<TA>();
          Nd2NzParams pa;
          pa.ndNum = 1; pa.nValue = (uint16_t)m; pa.dValue = (uint16_t)kl; pa.srcNdMatrixStride = 0;
          pa.srcDValue = (uint16_t)K; pa.dstNzC0Stride = (uint16_t)m16; pa.dstNzNStride = 1; pa.dstNzMatrixStride = 0;
          DataCopy(a1, ga[arow * K + k0], pa);
          qa1.EnQue(a1);
          LocalTensor<TA> b1 = qb1.AllocTensor<TA>();
          Nd2NzParams pb = pa;
          pb.nValue = (uint16_t)n; pb.dstNzC0Stride = (uint16_t)n16;
          DataCopy(b1, gw[wrow * K + k0], pb);
          qb1.EnQue(b1);
          a1 = qa1.DeQue<TA>();
          b1 = qb1.DeQue<TA>();
          for (uint32_t ks = 0; ks < kl; ks += bk) {
            const uint32_t kk = kl - ks < bk ? kl - ks : bk;
            const uint32_t K1 = (kk + C0 - 1) / C0, kb0 = ks / C0;
            // L1 -> L0A: fractal (mb, kb) of the NZ tile is at kb*M1 + mb; L0A wants it at mb*K1 + kb
            LocalTensor<TA> a2 = qa2.AllocTensor<TA>();
            for (uint32_t mb = 0; mb < M1; mb++) {
              LoadData2DParams la;
              la.startIndex = (uint16_t)(kb0 * M1 + mb);
              la.repeatTimes = (uint8_t)K1;
              la.srcStride = (uint16_t)M1;
              la.dstGap = 0;
              la.ifTranspose = false;
              LoadData(a2[mb * K1 * FRAC], a1, la);
            }
            qa2.EnQue(a2);
            // L1 -> L0B: B^T's fractal (nb, kb) is at kb*N1 + nb in L1 and in L0B: one run (<= 255 per call)
            LocalTensor<TA> b2 = qb2.AllocTensor<TA>();
            const uint32_t nfrac = K1 * N1;
            for (uint32_t f0 = 0; f0 < nfrac; f0 += 255) {
              LoadData2DParams lb;
              lb.startIndex = (uint16_t)(kb0 * N1 + f0);
              lb.repeatTimes = (uint8_t)(nfrac - f0 < 255 ? nfrac - f0 : 255);
              lb.srcStride = 1;
              lb.dstGap = 0;
              lb.ifTranspose = false;
              LoadData(b2[f0 * FRAC], b1, lb);
            }
            qb2.EnQue(b2);
            a2 = qa2.DeQue<TA>();
            b2 = qb2.DeQue<TA>();
            MmadParams mp;
            mp.m = (uint16_t)m; mp.n = (uint16_t)n; mp.k = (uint16_t)kk;
            mp.cmatrixInitVal = (k0 + ks == 0);
            // accumulating into L0C: a small Mmad ((m/16)*(n/16) < 10) must finish before the next reads its C
            if (!mp.cmatrixInitVal && M1 * N1 < 10) PipeBarrier<PIPE_M>();
            Mmad(cl, a2, b2, mp);
            qa2.FreeTensor(a2);
            qb2.FreeTensor(b2);
          }
          qa1.FreeTensor(a1);
          qb1.FreeTensor(b1);
        }
        qc.EnQue(cl);
        cl = qc.DeQue<TL0C>();
        FixpipeParamsV220 fp;
        fp.nSize = (uint16_t)n; fp.mSize = (uint16_t)m; fp.srcStride = (uint16_t)m16; fp.dstStride = N;
        fp.quantPre = moec_same<TC, half>::value ? F322F16 : moec_same<TC, bfloat16_t>::value ? F322BF16 : NoQuant;
        Fixpipe<TC, TL0C, CFG_ROW_MAJOR>(gc[((uint64_t)r0 + mi * bm) * N + ni * bn], cl, fp);
        qc.FreeTensor(cl);
      }
  }
}

extern "C" __global__ __aicore__ void grouped_matmul(GM_ADDR a, GM_ADDR w, GM_ADDR group_list, GM_ADDR c,
                                                    GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY);
  GmmTiling t;
  load_tiling(tiling, t);
  if (t.dtype == 3) gmm_body<int8_t, int32_t, int32_t>(a, w, group_list, c, t);  // int32 in L0C and out (NoQuant)
  else if (t.dtype == 1 && t.cdt == 1) gmm_body<bfloat16_t, bfloat16_t>(a, w, group_list, c, t);  // F322BF16
  else if (t.dtype == 1) gmm_body<bfloat16_t, float>(a, w, group_list, c, t);
  else if (t.dtype == 2 && t.cdt == 2) gmm_body<half, half>(a, w, group_list, c, t);
  else if (t.dtype == 2) gmm_body<half, float>(a, w, group_list, c, t);
  else gmm_body<float, float>(a, w, group_list, c, t);
}

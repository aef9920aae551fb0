// Kernels that each break one hardware rule (and good twins that keep it), for the emulator's tests.
// Usage: rules <case>; prints the emulator's verdict and exits 0 (clean) or 1 (violation).
#include <cstdio>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "acl/acl.h"
#include "kernel_operator.h"
using namespace AscendC;

static float *gm(size_t n) {
  void *p;
  aclrtMalloc(&p, n * 4, ACL_MEM_MALLOC_HUGE_FIRST);
  memset(p, 0, n * 4);
  return (float *)p;
}

// a double-buffered vector add over tiles, split across blocks; `bad` selects the broken variant
extern "C" __global__ __aicore__ void vadd(GM_ADDR a, GM_ADDR b, GM_ADDR c, int n, int bad) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  const int TILE = 64;
  GlobalTensor<float> ga, gb, gc;
  ga.SetGlobalBuffer((__gm__ float *)a, n);
  gb.SetGlobalBuffer((__gm__ float *)b, n);
  gc.SetGlobalBuffer((__gm__ float *)c, n);
  TPipe pipe;
  TQue<TPosition::VECIN, 2> qa, qb;
  TQue<TPosition::VECOUT, 2> qc;
  pipe.InitBuffer(qa, 2, TILE * 4);
  pipe.InitBuffer(qb, 2, TILE * 4);
  pipe.InitBuffer(qc, 2, TILE * 4);
  if (bad == 1) {  // capacity: 200 KiB more in the Unified Buffer
    TBuf<TPosition::VECCALC> big;
    pipe.InitBuffer(big, 200 * 1024);
  }
  if (bad == 8) {  // too many buffers
    static TBuf<TPosition::VECCALC> many[70];
    for (auto &t : many) pipe.InitBuffer(t, 32);
  }
  int tiles = n / TILE;
  for (int i = GetBlockIdx(); i < tiles; i += GetBlockNum()) {
    LocalTensor<float> x = qa.AllocTensor<float>(), y = qb.AllocTensor<float>();
    DataCopy(x, ga[i * TILE], bad == 2 ? 10 : TILE);  // 2: 40 bytes, not whole 32-byte blocks
    DataCopy(y, gb[bad == 6 ? n : i * TILE], TILE);     // 6: beyond the GlobalTensor
    qa.EnQue(x);
    qb.EnQue(y);
    if (bad == 4) {  // DeQue before EnQue: qc is empty
      qc.DeQue<float>();
    }
    x = qa.DeQue<float>();
    y = qb.DeQue<float>();
    LocalTensor<float> z = qc.AllocTensor<float>();
    if (bad == 7) {  // a second alloc with one buffer of the pair already out, then a third
      LocalTensor<float> z2 = qc.AllocTensor<float>();
      LocalTensor<float> z3 = qc.AllocTensor<float>();
      (void)z2; (void)z3;
    }
    Add(z, x, y, TILE);
    qa.FreeTensor(x);
    if (bad == 5) Add(z, x, y, TILE);  // use after free
    if (!(bad == 3 && i + GetBlockNum() >= tiles)) qb.FreeTensor(y);  // 3: leak on the last tile
    qc.EnQue(z);
    z = qc.DeQue<float>();
    DataCopy(gc[i * TILE], z, TILE);
    qc.FreeTensor(z);
  }
}

extern "C" __global__ __aicore__ void cube_misuse(GM_ADDR c, int bad) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY);
  TPipe pipe;
  TBuf<TPosition::A2> a2;
  TBuf<TPosition::B2> b2;
  TBuf<TPosition::CO1> c1;
  pipe.InitBuffer(a2, 16 * 16 * 4);
  pipe.InitBuffer(b2, 16 * 16 * 4);
  pipe.InitBuffer(c1, 16 * 16 * 4);
  LocalTensor<float> A = a2.Get<float>(), B = b2.Get<float>(), C = c1.Get<float>();
  if (bad == 10) {  // a vector instruction on L0A
    Muls(A, A, 2.0f, 16);
  }
  MmadParams p;
  p.m = 16; p.n = 16; p.k = bad == 11 ? 5000 : 16;
  Mmad(C, A, B, p);
}

extern "C" __global__ __aicore__ void cmp(GM_ADDR, int bad) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  TPipe pipe;
  TBuf<TPosition::VECCALC> ba, bm;
  pipe.InitBuffer(ba, 1024);
  pipe.InitBuffer(bm, 256);
  LocalTensor<float> a = ba.Get<float>();
  Duplicate(a, 1.0f, 256);
  Compare(bm.Get<uint8_t>(), a, a, CMPMODE::EQ, bad == 12 ? 40 : 64);
  if (bad == 59) Compare(bm.Get<uint8_t>(), a.ReinterpretCast<bfloat16_t>(), a.ReinterpretCast<bfloat16_t>(),
                         CMPMODE::EQ, 128);  // 59: bf16 operands (not a Compare type)
  // 28: a vector operand 3 floats (12 bytes) into its buffer; 13: 8 floats (32 bytes) in, aligned
  Adds(a[bad == 28 ? 3 : 8], a[bad == 28 ? 3 : 8], 1.0f, 64);
  // Gather: 13 reads a[255 - i] (byte offsets), 29 one element past the 256-float source, 30 half an element
  TBuf<TPosition::VECCALC> bo, bd;
  pipe.InitBuffer(bo, 256);
  pipe.InitBuffer(bd, 256);
  LocalTensor<uint32_t> off = bo.Get<uint32_t>();
  for (uint32_t i = 0; i < 64; i++) off.SetValue(i, (255 - i) * 4);
  if (bad == 29) off.SetValue(5, 256 * 4);
  if (bad == 30) off.SetValue(5, 2);
  TEventID e = GetTPipePtr()->FetchEventID(HardEvent::S_V);  // the offsets come from the scalar unit
  SetFlag<HardEvent::S_V>(e);
  WaitFlag<HardEvent::S_V>(e);
  Gather(bd.Get<float>(), a, off, 0, 64);
}

// ---- cube: one block computes C [M, N] = A [M, K] . B with the low-level path --------------------------
// B is stored [N, K] (B^T, any type) or [K, N] (2-byte types: each fractal is transposed on the L1 -> L0B
// load).  K runs in k-tiles of 32 accumulating in L0C.  `bad` selects a broken variant.
template <typename TA, typename TC, typename TO>
void cube_mm(GM_ADDR a, GM_ADDR b, GM_ADDR c, int M, int N, int K, int bT, int bad) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIC_ONLY);
  const uint32_t C0 = 32 / sizeof(TA), FRAC = 512 / sizeof(TA), BK = 32;
  const uint32_t M16 = (M + 15) / 16 * 16, N16 = (N + 15) / 16 * 16, KC = (K + C0 - 1) / C0 * C0;
  const uint32_t K16 = (K + 15) / 16 * 16, M1 = M16 / 16, N1 = N16 / 16;
  GlobalTensor<TA> ga, gb;
  GlobalTensor<TO> gc;
  ga.SetGlobalBuffer((__gm__ TA *)a, (uint64_t)M * K);
  gb.SetGlobalBuffer((__gm__ TA *)b, (uint64_t)N * K);
  gc.SetGlobalBuffer((__gm__ TO *)c, (uint64_t)M * N);
  TPipe pipe;
  TQue<TPosition::A1, 1> qa1;
  TQue<TPosition::B1, 1> qb1;
  TQue<TPosition::A2, 1> qa2;
  TQue<TPosition::B2, 1> qb2;
  TQue<TPosition::CO1, 1> qc;
  pipe.InitBuffer(qa1, 1, bad == 56 ? 512 * 1024 : M16 * KC * sizeof(TA));  // 56: all 512 KiB of L1
  pipe.InitBuffer(qb1, 1, N16 * (bT ? KC : K16) * sizeof(TA));
  pipe.InitBuffer(qa2, bad == 21 ? 2 : 1, bad == 21 ? 40 * 1024 : M16 * BK * sizeof(TA));  // 21: 80 KiB of L0A
  pipe.InitBuffer(qb2, 1, N16 * BK * sizeof(TA));
  pipe.InitBuffer(qc, 1, M16 * N16 * sizeof(TC));
  LocalTensor<TA> a1 = qa1.AllocTensor<TA>(), b1 = qb1.AllocTensor<TA>();
  Nd2NzParams pa;
  pa.nValue = M; pa.dValue = K; pa.srcDValue = K; pa.dstNzC0Stride = bad == 18 ? M : M16;  // 18: unaligned stride
  if (bad == 52) pa.dstNzC0Stride = 20000;  // 52: past the 16384 limit
  if (bad == 53) pa.ndNum = 5000;           // 53: past the 4095 limit
  if (bad == 54) pa.dstNzC0Stride = M - 5;  // 54: the column blocks overlap
  DataCopy(a1, ga, pa);
  Nd2NzParams pb;
  if (bT) { pb.nValue = N; pb.dValue = K; pb.srcDValue = K; pb.dstNzC0Stride = N16; }
  else { pb.nValue = K; pb.dValue = N; pb.srcDValue = N; pb.dstNzC0Stride = K16; }
  DataCopy(b1, gb, pb);
  qa1.EnQue(a1); qb1.EnQue(b1);
  a1 = qa1.DeQue<TA>(); b1 = qb1.DeQue<TA>();
  LocalTensor<TC> cl = qc.AllocTensor<TC>();
  for (uint32_t k0 = 0; k0 < (uint32_t)K; k0 += BK) {
    const uint32_t kk = K - k0 < BK ? K - k0 : BK, K1 = (kk + C0 - 1) / C0, kb0 = k0 / C0;
    LocalTensor<TA> a2 = qa2.AllocTensor<TA>(), b2 = qb2.AllocTensor<TA>();
    if (bad == 26) DataCopy(a2, ga, 256);  // GM straight into L0A
    for (uint32_t mb = 0; mb < M1; mb++) {
      LoadData2DParams la;
      la.startIndex = kb0 * M1 + mb + (bad == 27 ? 1000 : 0);  // 27: past the L1 tensor
      la.repeatTimes = K1; la.srcStride = M1;
      LoadData(a2[mb * K1 * FRAC], a1, la);
    }
    if (bT) {
      LoadData2DParams lb;
      lb.startIndex = kb0 * N1; lb.repeatTimes = K1 * N1; lb.srcStride = 1;
      lb.ifTranspose = bad == 24;  // 24: a transposing load of 4-byte fractals
      LoadData(b2, b1, lb);
    } else {  // [K, N] in L1: fractal (kb, nb) at nb*K16/16 + kb, k rows inside: transpose each one
      for (uint32_t kb = 0; kb < K1; kb++) {
        LoadData2DParams lb;
        lb.startIndex = kb0 + kb; lb.repeatTimes = N1; lb.srcStride = K16 / 16;
        lb.ifTranspose = bad != 19;  // 19: forgets the transpose
        LoadData(b2[kb * N1 * FRAC], b1, lb);
      }
    }
    if (bad != 57) {  // 57: Mmad reads L0A/L0B with no MTE1 -> M hand-off (EnQue/DeQue) after the loads
      qa2.EnQue(a2); qb2.EnQue(b2);
      a2 = qa2.DeQue<TA>(); b2 = qb2.DeQue<TA>();
    }
    MmadParams mp;
    mp.m = M; mp.n = N; mp.k = kk;
    mp.cmatrixInitVal = bad == 20 ? false : k0 == 0;  // 20: accumulates onto an uninitialised L0C
    // the Mmad documentation: PipeBarrier<PIPE_M> between Mmads accumulating into one L0C when
    // (m/16)*(n/16) < 10; 51 leaves it out
    if (!mp.cmatrixInitVal && bad != 51) PipeBarrier<PIPE_M>();
    if (bad == 22) Mmad(cl, a1, b2, mp);               // 22: A still in L1
    else Mmad(cl, a2, b2, mp);
    qa2.FreeTensor(a2); qb2.FreeTensor(b2);
  }
  qa1.FreeTensor(a1); qb1.FreeTensor(b1);
  qc.EnQue(cl);
  cl = qc.DeQue<TC>();
  FixpipeParamsV220 fp;
  fp.nSize = N; fp.mSize = M; fp.srcStride = M16; fp.dstStride = N;
  if (bad == 55) { fp.nSize = 5000; fp.dstStride = 5000; }  // 55: nSize past 4095
  fp.quantPre = std::is_same<TO, bfloat16_t>::value ? F322BF16 : NoQuant;
  if constexpr (std::is_same<TA, float>::value) {
    if (bad == 23) {  // 23: Fixpipe from an L1 tensor
      TQue<TPosition::B1, 1> qx;
      pipe.InitBuffer(qx, 1, 1024);
      LocalTensor<float> x = qx.AllocTensor<float>();
      Fixpipe<TO, float, CFG_ROW_MAJOR>(gc, x, fp);
    }
  }
  Fixpipe<TO, TC, CFG_ROW_MAJOR>(gc, cl, fp);
  qc.FreeTensor(cl);
}

extern "C" __global__ __aicore__ void aiv_with_l1(GM_ADDR, int) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  TPipe pipe;
  TQue<TPosition::A1, 1> q;
  pipe.InitBuffer(q, 1, 1024);
}

// element i of an operand: small multiples of 1/8, exact in every input type, so products and their
// sums are exact in f32 (and in int32 for the int8 case: the integers themselves)
template <typename T>
static T val(int i, bool integer) {
  int v = (i * 7 + 3) % 17 - 8;
  return integer ? (T)v : (T)(v / 8.0f);
}

template <typename TA, typename TC, typename TO>
static int run_cube(int bad, int M, int N, int K, int bT) {
  bool integer = std::is_same<TA, int8_t>::value;
  std::vector<TA> A(M * K), B(N * K);
  std::vector<double> want(M * N, 0.0);
  for (int i = 0; i < M * K; i++) A[i] = val<TA>(i, integer);
  for (int i = 0; i < N * K; i++) B[i] = val<TA>(3 * i + 1, integer);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++)
        want[m * N + n] += (double)(float)A[m * K + k] * (double)(float)(bT ? B[n * K + k] : B[k * N + n]);
  void *pa, *pb, *pc;
  aclrtMalloc(&pa, A.size() * sizeof(TA), ACL_MEM_MALLOC_HUGE_FIRST);
  aclrtMalloc(&pb, B.size() * sizeof(TA), ACL_MEM_MALLOC_HUGE_FIRST);
  aclrtMalloc(&pc, M * N * sizeof(TO), ACL_MEM_MALLOC_HUGE_FIRST);
  memcpy(pa, A.data(), A.size() * sizeof(TA));
  memcpy(pb, B.data(), B.size() * sizeof(TA));
  memset(pc, 0, M * N * sizeof(TO));
  int rc = moec_emu::Launch("cube_mm", 1, cube_mm<TA, TC, TO>, (GM_ADDR)pa, (GM_ADDR)pb, (GM_ADDR)pc, M, N, K, bT, bad);
  if (rc) {
    printf("VIOLATION %s\n", moec_emu::LastError().c_str());
    return 1;
  }
  const TO *c = (const TO *)pc;
  double tol = std::is_same<TO, bfloat16_t>::value ? 1.0 / 128 : 0.0;  // bf16 output: one rounding
  for (int i = 0; i < M * N; i++) {
    double got = (double)(float)c[i];
    if (!(std::fabs(got - want[i]) <= tol * std::fabs(want[i]))) {
      printf("WRONG c[%d]=%g expected %g\n", i, got, want[i]);
      return 2;
    }
  }
  printf("OK\n");
  return 0;
}

// float -> half / bfloat16_t bits for every float in FILE (raw uint32), written to FILE.out (2 x uint16 each)
static int convert_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 3;
  std::vector<uint32_t> in;
  uint32_t x;
  while (fread(&x, 4, 1, f) == 1) in.push_back(x);
  fclose(f);
  std::string out = std::string(path) + ".out";
  FILE *g = fopen(out.c_str(), "wb");
  for (uint32_t v : in) {
    float fv;
    memcpy(&fv, &v, 4);
    uint16_t h = half(fv).bits, b = bfloat16_t(fv).bits;
    float hb = (float)half::from_bits(h), bb = (float)bfloat16_t::from_bits(b);  // and back
    fwrite(&h, 2, 1, g);
    fwrite(&b, 2, 1, g);
    fwrite(&hb, 4, 1, g);
    fwrite(&bb, 4, 1, g);
  }
  fclose(g);
  printf("OK\n");
  return 0;
}

// one pipe waits for another on an id the pipe hands out
template <HardEvent E>
__aicore__ inline void sync_on() {
  TEventID id = GetTPipePtr()->FetchEventID(E);
  SetFlag<E>(id);
  WaitFlag<E>(id);
}

// ---- the pipe model, event ids, Cast, overlap, capacity, DataCopyPad limits (one AIV block) ------------
// bad 0 (here: 32) is the good kernel: every cross-pipe dependency carried by a flag on a pipe-given id
extern "C" __global__ __aicore__ void sync_rules(GM_ADDR a, GM_ADDR c, int bad) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  GlobalTensor<float> ga, gc;
  ga.SetGlobalBuffer((__gm__ float *)a, 256);
  gc.SetGlobalBuffer((__gm__ float *)c, 256);
  TPipe pipe;
  TBuf<TPosition::VECCALC> bx, by, bi, bh;
  TQue<TPosition::VECIN, 1> qin;
  pipe.InitBuffer(bx, 256 * 4);
  pipe.InitBuffer(by, 256 * 4);
  pipe.InitBuffer(bi, 64 * 4);
  pipe.InitBuffer(bh, 64 * 2);
  pipe.InitBuffer(qin, 1, 64 * 4);
  if (bad == 44) {  // 44: 186 KiB in all: under the physical 192 KiB, over the usable 184 KiB
    TBuf<TPosition::VECCALC> big;
    pipe.InitBuffer(big, 186 * 1024 - 2 * 256 * 4 - 64 * 4 - 64 * 2 - 64 * 4);
  }
  LocalTensor<float> x = bx.Get<float>(), y = by.Get<float>();
  DataCopy(x, ga, 64);
  if (bad != 31) sync_on<HardEvent::MTE2_V>();  // 31: the vector unit reads what MTE2 may still be writing
  Adds(y, x, 1.0f, 64);
  if (bad != 33) sync_on<HardEvent::V_MTE2>();  // 33: MTE2 overwrites x while the vector unit may still read it
  DataCopy(x, ga[64], 64);
  sync_on<HardEvent::MTE2_V>();
  Add(y, y, x, 64);
  if (bad != 34) sync_on<HardEvent::V_S>();     // 34: the scalar unit reads y before the vector unit has written it
  float v = y.GetValue(0);
  y.SetValue(1, v);
  if (bad != 40) sync_on<HardEvent::S_MTE3>();  // 40: MTE3 copies y out before the scalar write lands
  DataCopy(gc, y, 64);
  sync_on<HardEvent::S_V>();    // y: written by the scalar unit and
  sync_on<HardEvent::MTE3_V>();  // read by MTE3 before the vector unit rewrites it
  if (bad == 35) {  // 35: a hard-coded id 0 while a queue's EnQue holds MTE2_V id 0
    LocalTensor<float> q = qin.AllocTensor<float>();
    DataCopy(q, ga, 64);
    qin.EnQue(q);
    SetFlag<HardEvent::MTE2_V>(0);
  }
  if (bad == 36) SetFlag<HardEvent::V_S>(0);  // 36: a hard-coded id in a TPipe kernel
  TEventID id = pipe.AllocEventID<HardEvent::V_S>();
  SetFlag<HardEvent::V_S>(id);
  if (bad == 37) SetFlag<HardEvent::V_S>(id);  // 37: set twice
  WaitFlag<HardEvent::V_S>(id);
  if (bad == 38) WaitFlag<HardEvent::V_S>(id);  // 38: nothing set: the pipe would wait forever
  if (bad != 39) pipe.ReleaseEventID<HardEvent::V_S>(id);  // 39: never released
  // int32 -> half: through float (exact), or with the deq scale register set
  LocalTensor<int32_t> iv = bi.Get<int32_t>();
  LocalTensor<half> hv = bh.Get<half>();
  Cast(iv, x, RoundMode::CAST_RINT, 64);
  if (bad == 41) {  // 41: the deq scale register was never set
    Cast(hv, iv, RoundMode::CAST_NONE, 64);
  } else {
    Cast(y, iv, RoundMode::CAST_NONE, 64);
    Cast(hv, y, RoundMode::CAST_NONE, 64);
    SetDeqScale((half)1.0f);
    Cast(hv, iv, RoundMode::CAST_NONE, 64);
  }
  if (bad == 58) {  // 58: int8 -> float has no instruction (int8 -> half -> float does)
    LocalTensor<int8_t> i8 = bh.Get<int8_t>();
    Cast(y, i8, RoundMode::CAST_NONE, 64);
  }
  if (bad == 42) ReduceSum(y, y, y[64], 64);  // 42: the destination is part of the source
  else ReduceSum(y[128], y, y[64], 64);
  if (bad == 43) Add(x[8], x, y, 64);  // 43: destination 8 elements into a source
  LocalTensor<float> o = x;
  sync_on<HardEvent::V_MTE3>();
  if (bad == 45) DataCopyPad(gc, o, DataCopyExtParams{0, 4, 0, 0, 0});  // 45: blockCount 0
  DataCopyPad(gc, o, DataCopyExtParams{2, 16, 0, 0, 0});
}

// ---- per-core data caches: scalar GM writes (2 blocks) -------------------------------------------------
extern "C" __global__ __aicore__ void gm_rules(GM_ADDR g, GM_ADDR h, int bad) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  GlobalTensor<float> gg, gh;
  gg.SetGlobalBuffer((__gm__ float *)g, 64);
  gh.SetGlobalBuffer((__gm__ float *)h, 64);
  TPipe pipe;
  TBuf<TPosition::VECCALC> bv;
  pipe.InitBuffer(bv, 256);
  LocalTensor<float> v = bv.Get<float>();
  const int b = (int)GetBlockIdx();
  if (bad == 46) {  // 46: both cores write a float of the same 64-byte line with SetValue (each flushes)
    gg.SetValue(b, 10.0f + b);
    DataCacheCleanAndInvalid<float, CacheLine::SINGLE_CACHE_LINE, DcciDst::CACHELINE_OUT>(gg);
    return;
  }
  if (bad == 47) {  // 47: a SetValue never written back
    gh.SetValue(16 * b, 1.0f);
    return;
  }
  if (bad == 48) {  // 48: DMA reads a line the scalar unit wrote and has not flushed
    gh.SetValue(16 * b, 1.0f);
    DataCopy(v, gh[16 * b], 8);
    DataCacheCleanAndInvalid<float, CacheLine::ENTIRE_DATA_CACHE, DcciDst::CACHELINE_OUT>(gh);
    return;
  }
  if (bad == 49) {  // 49: the scalar unit reads GM that MTE3 may still be writing
    v.SetValue(0, 5.0f);
    sync_on<HardEvent::S_MTE3>();
    DataCopyPad(gh[16 * b], v, DataCopyExtParams{1, 4, 0, 0, 0});
    float r = gh.GetValue(16 * b);
    (void)r;
    return;
  }
  // good: each core's value to adjacent floats of one line by DMA (byte-exact: no clobbering); core 0 also
  // writes a line of its own with SetValue and flushes it, then reads it back by DMA after an S -> MTE2 flag
  v.SetValue(0, 10.0f + b);
  sync_on<HardEvent::S_MTE3>();
  DataCopyPad(gg[b], v, DataCopyExtParams{1, 4, 0, 0, 0});
  if (b == 0) {
    gh.SetValue(0, 7.0f);
    DataCacheCleanAndInvalid<float, CacheLine::SINGLE_CACHE_LINE, DcciDst::CACHELINE_OUT>(gh);
    sync_on<HardEvent::S_MTE2>();
    sync_on<HardEvent::MTE3_MTE2>();
    DataCopy(v, gh, 8);
  }
}

// ---- f32 accumulation order: ReduceSum of the floats in FILE, its result's bits printed ---------------
extern "C" __global__ __aicore__ void reduce_order(GM_ADDR a, GM_ADDR c, int n) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
  GlobalTensor<float> ga, gc;
  ga.SetGlobalBuffer((__gm__ float *)a, n);
  gc.SetGlobalBuffer((__gm__ float *)c, 8);
  TPipe pipe;
  TQue<TPosition::VECIN, 1> qin;
  TQue<TPosition::VECOUT, 1> qout;
  TBuf<TPosition::VECCALC> bw;
  pipe.InitBuffer(qin, 1, (n + 7) / 8 * 32);
  pipe.InitBuffer(qout, 1, 32);
  pipe.InitBuffer(bw, (n + 7) / 8 * 32);
  LocalTensor<float> x = qin.AllocTensor<float>();
  DataCopyPad(x, ga, DataCopyExtParams{1, (uint32_t)n * 4, 0, 0, 0}, DataCopyPadExtParams<float>{false, 0, 0, 0.f});
  qin.EnQue(x);
  x = qin.DeQue<float>();
  LocalTensor<float> r = qout.AllocTensor<float>();
  ReduceSum(r, x, bw.Get<float>(), n);
  qin.FreeTensor(x);
  qout.EnQue(r);
  r = qout.DeQue<float>();
  DataCopyPad(gc, r, DataCopyExtParams{1, 4, 0, 0, 0});
  qout.FreeTensor(r);
}

static int reduce_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 3;
  std::vector<float> in;
  float x;
  while (fread(&x, 4, 1, f) == 1) in.push_back(x);
  fclose(f);
  float *a = gm(in.size()), *c = gm(8);
  memcpy(a, in.data(), in.size() * 4);
  if (moec_emu::Launch("reduce_order", 1, reduce_order, (GM_ADDR)a, (GM_ADDR)c, (int)in.size())) {
    printf("VIOLATION %s\n", moec_emu::LastError().c_str());
    return 1;
  }
  uint32_t bits;
  memcpy(&bits, c, 4);
  printf("SUM %u\n", bits);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "reduce")) return reduce_file(argv[2]);
  if (argc > 2 && !strcmp(argv[1], "conv")) return convert_file(argv[2]);
  int bad = argc > 1 ? atoi(argv[1]) : 0;
  // cube cases: 14 f16 (B as [K, N], transposed on load), 15 bf16 -> bf16 output, 16 f32, 17 int8 -> int32;
  // 18..27 break one thing each (18..20 only give wrong numbers; the others violate a rule)
  switch (bad) {
    case 14: case 19: return run_cube<half, float, float>(bad, 40, 48, 72, 0);
    case 15: return run_cube<bfloat16_t, float, bfloat16_t>(bad, 33, 20, 100, 1);
    case 16: case 18: case 20: case 22: case 23: case 24: case 26: case 27:
      return run_cube<float, float, float>(bad, 37, 24, 70, 1);
    case 17: return run_cube<int8_t, int32_t, int32_t>(bad, 20, 17, 96, 1);
    case 21: return run_cube<half, float, float>(bad, 16, 16, 32, 1);
    case 51: case 52: case 53: case 54: case 55: case 56: case 57:
      return run_cube<half, float, float>(bad, 40, 48, 72, 1);
    case 25: {
      int rc = moec_emu::Launch("aiv_with_l1", 1, aiv_with_l1, (GM_ADDR) nullptr, 0);
      if (rc) { printf("VIOLATION %s\n", moec_emu::LastError().c_str()); return 1; }
      printf("OK\n");
      return 0;
    }
    default: break;
  }
  const int n = 64 * 40;
  float *a = gm(n), *b = gm(n), *c = gm(n);
  for (int i = 0; i < n; i++) { a[i] = (float)i; b[i] = 2.0f * i; }
  int rc;
  if ((bad >= 31 && bad <= 45) || bad == 58) {
    rc = moec_emu::Launch("sync_rules", 1, sync_rules, (GM_ADDR)a, (GM_ADDR)c, bad == 32 ? 0 : bad);
  } else if (bad >= 46 && bad <= 50) {
    float *g = gm(64), *h = gm(64);
    rc = moec_emu::Launch("gm_rules", 2, gm_rules, (GM_ADDR)g, (GM_ADDR)h, bad);
    if (!rc && (g[0] != 10.0f || g[1] != 11.0f || h[0] != 7.0f)) { printf("WRONG\n"); return 2; }
  } else if (bad >= 10 && bad <= 11) {
    rc = moec_emu::Launch("cube_misuse", 4, cube_misuse, (GM_ADDR)c, bad);
  } else if (bad == 12 || bad == 13 || bad == 28 || bad == 29 || bad == 30 || bad == 59) {
    rc = moec_emu::Launch("cmp", 1, cmp, (GM_ADDR)c, bad);
  } else {
    uint32_t blocks = bad == 9 ? 64 : 8;  // 9: more blocks than the 48 vector cores
    rc = moec_emu::Launch("vadd", blocks, vadd, (GM_ADDR)a, (GM_ADDR)b, (GM_ADDR)c, n, bad);
  }
  if (rc) {
    printf("VIOLATION %s\n", moec_emu::LastError().c_str());
    return 1;
  }
  if (bad == 0 || bad == 13)
    for (int i = 0; i < n && bad == 0; i++)
      if (c[i] != 3.0f * i) { printf("WRONG c[%d]=%g\n", i, c[i]); return 2; }
  printf("OK\n");
  return 0;
}

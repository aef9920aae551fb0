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
  pipe.InitBuffer(qa1, 1, M16 * KC * sizeof(TA));
  pipe.InitBuffer(qb1, 1, N16 * (bT ? KC : K16) * sizeof(TA));
  pipe.InitBuffer(qa2, bad == 21 ? 2 : 1, bad == 21 ? 40 * 1024 : M16 * BK * sizeof(TA));  // 21: 80 KiB of L0A
  pipe.InitBuffer(qb2, 1, N16 * BK * sizeof(TA));
  pipe.InitBuffer(qc, 1, M16 * N16 * sizeof(TC));
  LocalTensor<TA> a1 = qa1.AllocTensor<TA>(), b1 = qb1.AllocTensor<TA>();
  Nd2NzParams pa;
  pa.nValue = M; pa.dValue = K; pa.srcDValue = K; pa.dstNzC0Stride = bad == 18 ? M : M16;  // 18: unaligned stride
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
    qa2.EnQue(a2); qb2.EnQue(b2);
    a2 = qa2.DeQue<TA>(); b2 = qb2.DeQue<TA>();
    MmadParams mp;
    mp.m = M; mp.n = N; mp.k = kk;
    mp.cmatrixInitVal = bad == 20 ? false : k0 == 0;  // 20: accumulates onto an uninitialised L0C
    if (bad == 22) Mmad(cl, a1, b2, mp);               // 22: A still in L1
    else Mmad(cl, a2, b2, mp);
    qa2.FreeTensor(a2); qb2.FreeTensor(b2);
  }
  qa1.FreeTensor(a1); qb1.FreeTensor(b1);
  qc.EnQue(cl);
  cl = qc.DeQue<TC>();
  FixpipeParamsV220 fp;
  fp.nSize = N; fp.mSize = M; fp.srcStride = M16; fp.dstStride = N;
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

int main(int argc, char **argv) {
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
  if (bad >= 10 && bad <= 11) {
    rc = moec_emu::Launch("cube_misuse", 4, cube_misuse, (GM_ADDR)c, bad);
  } else if (bad == 12 || bad == 13 || bad == 28 || bad == 29 || bad == 30) {
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

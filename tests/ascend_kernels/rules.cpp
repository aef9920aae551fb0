// Kernels that each break one hardware rule (and good twins that keep it), for the emulator's tests.
// Usage: rules <case>; prints the emulator's verdict and exits 0 (clean) or 1 (violation).
#include <cstdio>
#include <cstring>
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
}

int main(int argc, char **argv) {
  int bad = argc > 1 ? atoi(argv[1]) : 0;
  const int n = 64 * 40;
  float *a = gm(n), *b = gm(n), *c = gm(n);
  for (int i = 0; i < n; i++) { a[i] = (float)i; b[i] = 2.0f * i; }
  int rc;
  if (bad >= 10 && bad <= 11) {
    rc = moec_emu::Launch("cube_misuse", 4, cube_misuse, (GM_ADDR)c, bad);
  } else if (bad == 12 || bad == 13) {
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

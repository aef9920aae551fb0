// Host-side launch wrappers for moec's AscendC kernels.  On a CANN machine this file is compiled by
// the CMake project beside it and launches with <<<blockDim, nullptr, stream>>>; here it is compiled
// by g++ with -DMOEC_EMULATOR against moec's clean-room emulation header and the ACL stand-in, and
// every block runs on the CPU with the hardware rules checked.
#include <cstddef>
#include <cstdint>

#include "acl/acl.h"

#ifdef MOEC_EMULATOR
#include "../kernels/moe_kernels.cpp"
#define MOEC_LAUNCH(kernel, blockDim, stream, ...) ::moec_emu::Launch(#kernel, blockDim, kernel, __VA_ARGS__)
extern "C" const char *moec_last_error() { return moec_emu::LastError().c_str(); }
extern "C" void moec_register(void *p, size_t n) { moec_emu::RegisterGM(p, n); }
extern "C" void moec_unregister(void *p) { moec_emu::UnregisterGM(p); }
extern "C" int moec_set_soc(const char *soc) {
  try { moec_emu::SetSoc(soc); } catch (const moec_emu::Violation &) { return 1; }
  return 0;
}
#else
#include "kernel_operator.h"
extern "C" __global__ __aicore__ void moe_gating(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_init_routing(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_expert_ffn(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR,
                                                    GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_finalize(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR,
                                                  GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void matmul_rows(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
static aclrtStream g_stream = nullptr;
extern "C" void moec_set_stream(aclrtStream s) { g_stream = s; }
#define MOEC_LAUNCH(kernel, blockDim, stream, ...) \
  (kernel<<<blockDim, nullptr, g_stream>>>(__VA_ARGS__), aclrtSynchronizeStream(g_stream))
#endif

#define G(p) ((GM_ADDR)(p))
extern "C" int moec_launch_moe_gating(uint32_t bd, void *logits, void *bias, void *w, void *ids, void *ws,
                                      void *tiling) {
  return MOEC_LAUNCH(moe_gating, bd, nullptr, G(logits), G(bias), G(w), G(ids), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_init_routing(uint32_t bd, void *ids, void *w, void *sorted, void *offsets, void *ws,
                                            void *tiling) {
  return MOEC_LAUNCH(moe_init_routing, bd, nullptr, G(ids), G(w), G(sorted), G(offsets), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_expert_ffn(uint32_t bd, void *x, void *sorted, void *offsets, void *w_in, void *w_out,
                                          void *b_in, void *b_out, void *rw, void *y, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_expert_ffn, bd, nullptr, G(x), G(sorted), G(offsets), G(w_in), G(w_out), G(b_in), G(b_out),
                     G(rw), G(y), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_finalize(uint32_t bd, void *y, void *w, void *shared, void *x, void *ids, void *gate,
                                        void *out, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_finalize, bd, nullptr, G(y), G(w), G(shared), G(x), G(ids), G(gate), G(out), G(ws),
                     G(tiling));
}
extern "C" int moec_launch_matmul_rows(uint32_t bd, void *a, void *bT, void *c, void *ws, void *tiling) {
  return MOEC_LAUNCH(matmul_rows, bd, nullptr, G(a), G(bT), G(c), G(ws), G(tiling));
}

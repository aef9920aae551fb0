// Host-side launch wrappers for moec's AscendC kernels.  On a CANN machine this file is compiled by
// the CMake project beside it and launches with <<<blockDim, nullptr, stream>>>; here it is compiled
// by g++ with -DMOEC_EMULATOR against moec's clean-room emulation header and the ACL stand-in, and
// every block runs on the CPU with the hardware rules checked.
// Kernel types (declared in each kernel with KERNEL_TASK_TYPE_DEFAULT): grouped_matmul is AIC-only
// (blockDim <= the cube cores), every other kernel AIV-only (blockDim <= the vector cores).  The host
// fills each tiling struct and the GM workspaces between the cube and vector kernels (moec's
// AscendArtifact does it from Python here; a CANN host program does the same with aclrtMalloc).
#include <cstddef>
#include <cstdint>

#include "acl/acl.h"

#ifdef MOEC_EMULATOR
#include "../kernels/moe_kernels.cpp"
#include "../kernels/cube_kernels.cpp"
#include "../kernels/vector_kernels.cpp"
#define MOEC_LAUNCH(kernel, blockDim, stream, ...) ::moec_emu::Launch(#kernel, blockDim, kernel, __VA_ARGS__)
extern "C" const char *moec_last_error() { return moec_emu::LastError().c_str(); }
extern "C" void moec_register(void *p, size_t n) { moec_emu::RegisterGM(p, n); }
extern "C" void moec_unregister(void *p) { moec_emu::UnregisterGM(p); }
extern "C" int moec_set_soc(const char *soc) {
  try { moec_emu::SetSoc(soc); } catch (const moec_emu::Violation &) { return 1; }
  return 0;
}
// cube instruction counters since the last call (Mmad calls, MACs, LoadData, Nd2Nz copies, Fixpipe, then
// Mmad calls by operand type: float, bfloat16_t, half, int8_t)
extern "C" void moec_cube_stats(uint64_t *out) {
  moec_emu::State &s = moec_emu::st();
  out[0] = s.mmad_calls; out[1] = s.mmad_macs; out[2] = s.loaddata_calls; out[3] = s.nd2nz_calls;
  out[4] = s.fixpipe_calls;
  for (int i = 0; i < 4; i++) out[5 + i] = s.mmad_by_type[i], s.mmad_by_type[i] = 0;
  s.mmad_calls = s.mmad_macs = s.loaddata_calls = s.nd2nz_calls = s.fixpipe_calls = 0;
}
#else
#include "kernel_operator.h"
extern "C" __global__ __aicore__ void moe_gating(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_init_routing(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_gather_rows(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_activation(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR,
                                                    GM_ADDR);
extern "C" __global__ __aicore__ void moe_scatter_rows(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR,
                                                      GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_quant_rows_int8(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void grouped_matmul(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_dequant_int8(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void moe_finalize(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR,
                                                  GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void matmul_rows(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void vec_elementwise(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void vec_rowwise(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR,
                                                 GM_ADDR);
extern "C" __global__ __aicore__ void vec_copy(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void vec_transpose(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void vec_mask(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
extern "C" __global__ __aicore__ void vec_gather(GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR, GM_ADDR);
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
extern "C" int moec_launch_moe_gather_rows(uint32_t bd, void *x, void *sorted, void *rw, void *xe, void *ws,
                                           void *tiling) {
  return MOEC_LAUNCH(moe_gather_rows, bd, nullptr, G(x), G(sorted), G(rw), G(xe), G(ws), G(tiling));
}
extern "C" int moec_launch_grouped_matmul(uint32_t bd, void *a, void *w, void *group_list, void *c, void *ws,
                                          void *tiling) {
  return MOEC_LAUNCH(grouped_matmul, bd, nullptr, G(a), G(w), G(group_list), G(c), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_activation(uint32_t bd, void *h, void *offsets, void *b_in, void *s_in, void *s_row,
                                          void *a, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_activation, bd, nullptr, G(h), G(offsets), G(b_in), G(s_in), G(s_row), G(a), G(ws),
                     G(tiling));
}
extern "C" int moec_launch_moe_scatter_rows(uint32_t bd, void *yo, void *sorted, void *offsets, void *b_out,
                                            void *s_out, void *s_row, void *rw, void *y, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_scatter_rows, bd, nullptr, G(yo), G(sorted), G(offsets), G(b_out), G(s_out), G(s_row), G(rw),
                     G(y), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_quant_rows_int8(uint32_t bd, void *a, void *q, void *s, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_quant_rows_int8, bd, nullptr, G(a), G(q), G(s), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_dequant_int8(uint32_t bd, void *q, void *offsets, void *w, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_dequant_int8, bd, nullptr, G(q), G(offsets), G(w), G(ws), G(tiling));
}
extern "C" int moec_launch_moe_finalize(uint32_t bd, void *y, void *w, void *shared, void *x, void *ids, void *gate,
                                        void *out, void *ws, void *tiling) {
  return MOEC_LAUNCH(moe_finalize, bd, nullptr, G(y), G(w), G(shared), G(x), G(ids), G(gate), G(out), G(ws),
                     G(tiling));
}
extern "C" int moec_launch_matmul_rows(uint32_t bd, void *a, void *bT, void *c, void *ws, void *tiling) {
  return MOEC_LAUNCH(matmul_rows, bd, nullptr, G(a), G(bT), G(c), G(ws), G(tiling));
}
// ordinary ops (kernels/vector_kernels.cpp)
extern "C" int moec_launch_vec_elementwise(uint32_t bd, void *a, void *b, void *c, void *ws, void *tiling) {
  return MOEC_LAUNCH(vec_elementwise, bd, nullptr, G(a), G(b), G(c), G(ws), G(tiling));
}
extern "C" int moec_launch_vec_rowwise(uint32_t bd, void *x, void *scale, void *bias, void *y, void *y2, void *y3,
                                       void *ws, void *tiling) {
  return MOEC_LAUNCH(vec_rowwise, bd, nullptr, G(x), G(scale), G(bias), G(y), G(y2), G(y3), G(ws), G(tiling));
}
extern "C" int moec_launch_vec_copy(uint32_t bd, void *src, void *dst, void *ws, void *tiling) {
  return MOEC_LAUNCH(vec_copy, bd, nullptr, G(src), G(dst), G(ws), G(tiling));
}
extern "C" int moec_launch_vec_gather(uint32_t bd, void *data, void *idx, void *out, void *status, void *ws,
                                      void *tiling) {
  return MOEC_LAUNCH(vec_gather, bd, nullptr, G(data), G(idx), G(out), G(status), G(ws), G(tiling));
}
extern "C" int moec_launch_vec_transpose(uint32_t bd, void *src, void *dst, void *ws, void *tiling) {
  return MOEC_LAUNCH(vec_transpose, bd, nullptr, G(src), G(dst), G(ws), G(tiling));
}
extern "C" int moec_launch_vec_mask(uint32_t bd, void *a, void *b, void *c, void *out, void *ws, void *tiling) {
  return MOEC_LAUNCH(vec_mask, bd, nullptr, G(a), G(b), G(c), G(out), G(ws), G(tiling));
}

// Host-side launch entry for moec's AscendC kernels: moec_launch(kernel, blockDim, stream, args, nargs, workspace,
// tiling) launches one kernel by name with its GM arguments (the launch plan's "launch" steps; see
// host/moec_run.cpp and codegen/ascend/launch_plan.py).
//
// On a CANN machine (no MOEC_EMULATOR) this file is ordinary host C++ built into the shared library
// libmoec_host.so: it launches through the headers that CANN's ascendc_library generates for each kernel
// (aclrtlaunch_<kernel>.h) with ACLRT_LAUNCH_KERNEL(kernel)(blockDim, stream, args...); the kernels themselves
// (kernels/*.cpp, with their <<<>>>-free __global__ __aicore__ entry points) are compiled by ascendc_library
// into the static library moec_kernels (position-independent, see CMakeLists.txt).
// Here it is compiled by g++ with -DMOEC_EMULATOR against moec's clean-room emulation header and the ACL
// stand-in (which this library exports, as libascendcl does), and every block runs on the CPU with the hardware
// rules checked.
// Kernel types (declared in each kernel with KERNEL_TASK_TYPE_DEFAULT): grouped_matmul is AIC-only
// (blockDim <= the cube cores), every other kernel AIV-only (blockDim <= the vector cores).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#ifdef MOEC_EMULATOR
#define MOEC_ACL_API extern "C"
#include "acl/acl.h"
#include "../kernels/moe_kernels.cpp"
#include "../kernels/cube_kernels.cpp"
#include "../kernels/vector_kernels.cpp"
#define MOEC_LAUNCH(kernel, blockDim, stream, ...) ::moec_emu::Launch(#kernel, blockDim, kernel, __VA_ARGS__)
#define G(p) ((GM_ADDR)(p))
static std::string g_host_error;
extern "C" const char *moec_last_error() {
  return g_host_error.empty() ? moec_emu::LastError().c_str() : g_host_error.c_str();
}
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
#elif defined(MOEC_CPU_DEBUG)
// CANN's CPU-debug mode (CMake -DMOEC_CPU_DEBUG=ON, ASCENDC_CPU_DEBUG): the kernels are compiled by the host
// compiler against CANN's headers and run by its CPU simulation library (tikicpulib) with ICPU_RUN_KF, as its
// CPU-mode samples launch them; GM is AscendC::GmAlloc memory, and this library provides the few ACL calls
// moec_run makes on top of it (there is no device).  Written from the public samples; not built here.
#include "acl/acl.h"
#include "tikicpulib.h"
#include "../kernels/moe_kernels.cpp"
#include "../kernels/cube_kernels.cpp"
#include "../kernels/vector_kernels.cpp"
static std::string g_host_error;
extern "C" const char *moec_last_error() { return g_host_error.c_str(); }
extern "C" {
aclError aclInit(const char *) { return ACL_SUCCESS; }
aclError aclFinalize() { return ACL_SUCCESS; }
aclError aclrtSetDevice(int32_t) { return ACL_SUCCESS; }
aclError aclrtResetDevice(int32_t) { return ACL_SUCCESS; }
aclError aclrtCreateStream(aclrtStream *s) { *s = nullptr; return ACL_SUCCESS; }
aclError aclrtDestroyStream(aclrtStream) { return ACL_SUCCESS; }
aclError aclrtSynchronizeStream(aclrtStream) { return ACL_SUCCESS; }
aclError aclrtMalloc(void **p, size_t n, aclrtMemMallocPolicy) {
  *p = AscendC::GmAlloc(n ? n : 1);
  return *p ? ACL_SUCCESS : ACL_ERROR_BAD_ALLOC;
}
aclError aclrtFree(void *p) { AscendC::GmFree(p); return ACL_SUCCESS; }
aclError aclrtMemcpy(void *dst, size_t dmax, const void *src, size_t n, aclrtMemcpyKind) {
  if (n > dmax) return ACL_ERROR_INVALID_PARAM;
  if (n) std::memcpy(dst, src, n);
  return ACL_SUCCESS;
}
aclError aclrtMemset(void *dst, size_t dmax, int32_t v, size_t n) {
  if (n > dmax) return ACL_ERROR_INVALID_PARAM;
  if (n) std::memset(dst, v, n);
  return ACL_SUCCESS;
}
}
// the cube kernel runs on an AIC core, every other kernel on AIV cores
#define MOEC_LAUNCH(kernel, blockDim, stream, ...)                                                                 \
  (AscendC::SetKernelMode(std::strcmp(#kernel, "grouped_matmul") == 0 ? KernelMode::AIC_MODE : KernelMode::AIV_MODE), \
   ICPU_RUN_KF(kernel, blockDim, __VA_ARGS__), 0)
#define G(p) ((GM_ADDR)(p))
#else
#include "acl/acl.h"
#include "aclrtlaunch_moe_gating.h"
#include "aclrtlaunch_moe_init_routing.h"
#include "aclrtlaunch_moe_gather_rows.h"
#include "aclrtlaunch_moe_activation.h"
#include "aclrtlaunch_moe_scatter_rows.h"
#include "aclrtlaunch_moe_quant_rows_int8.h"
#include "aclrtlaunch_moe_dequant_int8.h"
#include "aclrtlaunch_moe_dequant_int4.h"
#include "aclrtlaunch_moe_finalize.h"
#include "aclrtlaunch_matmul_rows.h"
#include "aclrtlaunch_grouped_matmul.h"
#include "aclrtlaunch_vec_elementwise.h"
#include "aclrtlaunch_vec_rowwise.h"
#include "aclrtlaunch_vec_copy.h"
#include "aclrtlaunch_vec_transpose.h"
#include "aclrtlaunch_vec_gather.h"
#include "aclrtlaunch_vec_mask.h"
#include "aclrtlaunch_vec_index.h"
#include "aclrtlaunch_vec_kv.h"
#define MOEC_LAUNCH(kernel, blockDim, stream, ...) ACLRT_LAUNCH_KERNEL(kernel)(blockDim, stream, __VA_ARGS__)
#define G(p) (p)
static std::string g_host_error;
extern "C" const char *moec_last_error() { return g_host_error.c_str(); }
#endif

// kernel name -> GM argument count (the workspace and the tiling struct come after them)
#define MOEC_KERNELS(X)                                                                                            \
  X(moe_gating, 4) X(moe_init_routing, 4) X(moe_gather_rows, 4) X(grouped_matmul, 4) X(moe_activation, 6)          \
  X(moe_scatter_rows, 8) X(moe_quant_rows_int8, 3) X(moe_dequant_int8, 3) X(moe_finalize, 7) X(matmul_rows, 3)     \
  X(moe_dequant_int4, 5)                                                                                           \
  X(vec_elementwise, 3) X(vec_rowwise, 6) X(vec_copy, 2) X(vec_gather, 4) X(vec_transpose, 2) X(vec_mask, 4)      \
  X(vec_index, 4) X(vec_kv, 8)

#define A(i) G(a[i])
#define MOEC_ARGS_2 A(0), A(1)
#define MOEC_ARGS_3 MOEC_ARGS_2, A(2)
#define MOEC_ARGS_4 MOEC_ARGS_3, A(3)
#define MOEC_ARGS_5 MOEC_ARGS_4, A(4)
#define MOEC_ARGS_6 MOEC_ARGS_5, A(5)
#define MOEC_ARGS_7 MOEC_ARGS_6, A(6)
#define MOEC_ARGS_8 MOEC_ARGS_7, A(7)
#define MOEC_DISPATCH(kernel, n)                                                                                   \
  if (std::strcmp(name, #kernel) == 0) {                                                                           \
    if (nargs != n) {                                                                                              \
      g_host_error = std::string(#kernel " takes " #n " GM arguments, the launch gave ") + std::to_string(nargs); \
      return 2;                                                                                                    \
    }                                                                                                              \
    return MOEC_LAUNCH(kernel, blockDim, stream, MOEC_ARGS_##n, G(ws), G(tiling));                                 \
  }

extern "C" int moec_launch(const char *name, uint32_t blockDim, void *stream, void **a, int nargs, void *ws,
                           void *tiling) {
  g_host_error.clear();
  (void)stream;
  MOEC_KERNELS(MOEC_DISPATCH)
  g_host_error = std::string("no kernel named ") + name;
  return 2;
}

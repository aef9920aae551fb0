// moec's thin stand-in for the ACL runtime calls its host code makes (clean-room; emulator builds
// only).  Device memory is host memory; every allocation is registered so kernels' GM accesses are
// bounds-checked by the emulator.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "kernel_operator.h"

typedef int aclError;
typedef void *aclrtStream;
#define ACL_SUCCESS 0
#define ACL_ERROR_BAD_ALLOC 200000
enum aclrtMemMallocPolicy { ACL_MEM_MALLOC_HUGE_FIRST = 0, ACL_MEM_MALLOC_NORMAL_ONLY = 2 };
enum aclrtMemcpyKind { ACL_MEMCPY_HOST_TO_HOST, ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST,
                       ACL_MEMCPY_DEVICE_TO_DEVICE };

inline aclError aclInit(const char *) { return ACL_SUCCESS; }
inline aclError aclFinalize() { return ACL_SUCCESS; }
inline aclError aclrtSetDevice(int) { return ACL_SUCCESS; }
inline aclError aclrtResetDevice(int) { return ACL_SUCCESS; }
inline aclError aclrtCreateStream(aclrtStream *s) { *s = nullptr; return ACL_SUCCESS; }
inline aclError aclrtDestroyStream(aclrtStream) { return ACL_SUCCESS; }
inline aclError aclrtSynchronizeStream(aclrtStream) { return ACL_SUCCESS; }
inline aclError aclrtMalloc(void **p, size_t n, aclrtMemMallocPolicy) {
  *p = std::aligned_alloc(64, (n + 63) / 64 * 64 + 64);
  if (!*p) return ACL_ERROR_BAD_ALLOC;
  moec_emu::RegisterGM(*p, n);
  return ACL_SUCCESS;
}
inline aclError aclrtFree(void *p) { moec_emu::UnregisterGM(p); std::free(p); return ACL_SUCCESS; }
inline aclError aclrtMallocHost(void **p, size_t n) { *p = std::malloc(n ? n : 1); return *p ? ACL_SUCCESS : ACL_ERROR_BAD_ALLOC; }
inline aclError aclrtFreeHost(void *p) { std::free(p); return ACL_SUCCESS; }
inline aclError aclrtMemcpy(void *dst, size_t dmax, const void *src, size_t n, aclrtMemcpyKind) {
  if (n > dmax) return 100000;
  std::memcpy(dst, src, n);
  return ACL_SUCCESS;
}

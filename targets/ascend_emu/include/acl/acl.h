// moec's thin stand-in for the ACL runtime calls its host code makes (clean-room, written from the public
// ACL API documentation; emulator builds only).  Device memory is host memory; every allocation is registered
// so kernels' GM accesses are bounds-checked by the emulator.
//
// Three ways to include it:
//   - a standalone harness (tests): the functions are inline here;
//   - the emulator build of host/launch.cpp defines MOEC_ACL_API as extern "C" first, so the library exports
//     them (as libascendcl does on a CANN machine);
//   - host/moec_run.cpp (and any program linked against that library) defines MOEC_ACL_DECLARE_ONLY and
//     gets the declarations, like the real acl/acl.h.
#pragma once
// (only this stand-in defines it: host code registers memory it did not allocate, such as a caller's device
// tensors, with the emulator library under #ifdef MOEC_ACL_STANDIN)
#define MOEC_ACL_STANDIN 1
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

typedef int aclError;
typedef void *aclrtStream;
#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_BAD_ALLOC 200000
enum aclrtMemMallocPolicy { ACL_MEM_MALLOC_HUGE_FIRST = 0, ACL_MEM_MALLOC_NORMAL_ONLY = 2 };
enum aclrtMemcpyKind { ACL_MEMCPY_HOST_TO_HOST, ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_HOST,
                       ACL_MEMCPY_DEVICE_TO_DEVICE };

#ifdef MOEC_ACL_DECLARE_ONLY
extern "C" {
aclError aclInit(const char *);
aclError aclFinalize();
aclError aclrtSetDevice(int32_t);
aclError aclrtResetDevice(int32_t);
aclError aclrtCreateStream(aclrtStream *);
aclError aclrtDestroyStream(aclrtStream);
aclError aclrtSynchronizeStream(aclrtStream);
aclError aclrtMalloc(void **, size_t, aclrtMemMallocPolicy);
aclError aclrtFree(void *);
aclError aclrtMallocHost(void **, size_t);
aclError aclrtFreeHost(void *);
aclError aclrtMemcpy(void *, size_t, const void *, size_t, aclrtMemcpyKind);
aclError aclrtMemset(void *, size_t, int32_t, size_t);
}
#else
#include "kernel_operator.h"
#ifndef MOEC_ACL_API
#define MOEC_ACL_API inline
#endif
MOEC_ACL_API aclError aclInit(const char *) { return ACL_SUCCESS; }
MOEC_ACL_API aclError aclFinalize() { return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtSetDevice(int32_t) { return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtResetDevice(int32_t) { return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtCreateStream(aclrtStream *s) { *s = nullptr; return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtDestroyStream(aclrtStream) { return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtSynchronizeStream(aclrtStream) { return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtMalloc(void **p, size_t n, aclrtMemMallocPolicy) {
  *p = std::aligned_alloc(64, (n + 63) / 64 * 64 + 64);
  if (!*p) return ACL_ERROR_BAD_ALLOC;
  moec_emu::RegisterGM(*p, n);
  return ACL_SUCCESS;
}
MOEC_ACL_API aclError aclrtFree(void *p) { moec_emu::UnregisterGM(p); std::free(p); return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtMallocHost(void **p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return *p ? ACL_SUCCESS : ACL_ERROR_BAD_ALLOC;
}
MOEC_ACL_API aclError aclrtFreeHost(void *p) { std::free(p); return ACL_SUCCESS; }
MOEC_ACL_API aclError aclrtMemcpy(void *dst, size_t dmax, const void *src, size_t n, aclrtMemcpyKind) {
  if (n > dmax) return ACL_ERROR_INVALID_PARAM;
  if (n) std::memcpy(dst, src, n);
  return ACL_SUCCESS;
}
MOEC_ACL_API aclError aclrtMemset(void *dst, size_t dmax, int32_t v, size_t n) {
  if (n > dmax) return ACL_ERROR_INVALID_PARAM;
  if (n) std::memset(dst, v, n);
  return ACL_SUCCESS;
}
#endif

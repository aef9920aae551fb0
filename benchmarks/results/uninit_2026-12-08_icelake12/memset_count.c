#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
/* LD_PRELOAD: counts memset calls of >= 4 KiB (bytes, calls) while enabled; read through ctypes */
static void *(*real)(void *, int, size_t);
static size_t g_bytes, g_calls;
static int g_on;
void memset_count_enable(int on) { g_on = on; }
size_t memset_count_bytes(void) { return g_bytes; }
size_t memset_count_calls(void) { return g_calls; }
void memset_count_reset(void) { g_bytes = g_calls = 0; }
void *memset(void *s, int c, size_t n) {
  if (!real) {
    static int resolving;
    if (resolving) { unsigned char *p = s; for (size_t i = 0; i < n; i++) p[i] = (unsigned char)c; return s; }
    resolving = 1;
    real = (void *(*)(void *, int, size_t))dlsym(RTLD_NEXT, "memset");
    resolving = 0;
  }
  if (g_on && n >= 4096) { __atomic_add_fetch(&g_bytes, n, __ATOMIC_RELAXED); __atomic_add_fetch(&g_calls, 1, __ATOMIC_RELAXED); }
  return real(s, c, n);
}

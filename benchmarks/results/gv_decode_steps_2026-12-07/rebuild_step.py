"""A compiled artifact's model.c rebuilt against this checkout's C runtime (issue 17, GV: A/B of runtime changes on
the same generated code; run with the checkout's python):

    python rebuild_step.py SRC_ART DST_ART [inst]

DST_ART: a copy of SRC_ART (weights symlinked, no COMPLETE stamp) whose model.so is built from SRC_ART's model.c
and this checkout's runtime archive.  With 'inst': every MOEC_TRY'd call is timed (wall ns per call site; an
exported inst_reset() clears the sums, the table is written at unload to $MOEC_INST_OUT)."""
import os, sys, shutil, subprocess
from moec.targets import cpu
from moec.targets.description import host_cpu
src, dst = sys.argv[1], sys.argv[2]
inst = len(sys.argv) > 3
os.makedirs(dst, exist_ok=True)
for f in os.listdir(src):
    if f in ("model.so", "COMPLETE"):
        continue
    d = os.path.join(dst, f)
    if os.path.lexists(d):
        os.unlink(d)
    if f.endswith(".bin"):
        os.symlink(os.path.abspath(os.path.join(src, f)), d)
    else:
        shutil.copy(os.path.join(src, f), d)
c = open(os.path.join(src, "model.c")).read()
if inst:
    hdr = r'''
#include <time.h>
static long long inst_ns[4096]; static long long inst_n[4096]; static const char *inst_s[4096];
static inline long long inst_now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ll + t.tv_nsec; }
void inst_reset(void) { for (int i = 0; i < 4096; i++) inst_ns[i] = inst_n[i] = 0; }
__attribute__((destructor)) static void inst_dump(void) {
  const char *o = getenv("MOEC_INST_OUT"); FILE *f = o ? fopen(o, "w") : NULL; if (!f) return;
  for (int i = 0; i < 4096; i++) if (inst_n[i]) fprintf(f, "%d\t%lld\t%lld\t%s\n", i, inst_n[i], inst_ns[i], inst_s[i]);
  fclose(f);
}
#undef MOEC_TRY
#define MOEC_TRY(expr) do { long long _t0 = inst_now(); int _r = (expr); inst_ns[__LINE__] += inst_now() - _t0; inst_n[__LINE__]++; inst_s[__LINE__] = #expr; if (_r != 0) goto moec_fail_label; } while (0)
'''
    i = c.index("static const int64_t")
    c = c[:i] + hdr + c[i:]
open(os.path.join(dst, "model.c"), "w").write(c)
t = host_cpu()
if os.path.exists(os.path.join(dst, "model.so")):
    os.unlink(os.path.join(dst, "model.so"))
rt = cpu.build_runtime(t)
flags = cpu.cflags_for(t)
subprocess.check_call([cpu.cc(), *flags, "-I", cpu.RUNTIME_DIR, "-shared", "-Wl,-Bsymbolic", os.path.join(dst, "model.c"), rt,
                       "-o", os.path.join(dst, "model.so"), "-lm"])
print("built", dst, "runtime", rt)

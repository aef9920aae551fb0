# usage: LD_PRELOAD=./memset_count.so MEMSET_COUNT_SO=./memset_count.so python count_memset.py ART[,ART] mm|ids 1,8,64,256
# (gcc -O2 -shared -fPIC memset_count.c -o memset_count.so -ldl)  The memset calls of >= 4 KiB during one call of each
# artifact (after a warm-up call): the C runtime's zeroing of outputs (alloc_tensor) and the kernels' own memsets.
import os, sys, ctypes, numpy as np
from moec.targets.cpu_backend import CpuArtifact
lib = ctypes.CDLL(os.environ.get("MEMSET_COUNT_SO", "./memset_count.so"))
lib.memset_count_bytes.restype = ctypes.c_size_t
lib.memset_count_calls.restype = ctypes.c_size_t
mode, Ts = sys.argv[2], [int(v) for v in sys.argv[3].split(",")]
for d in sys.argv[1].split(","):
    art = CpuArtifact(d, threads=2)
    for T in Ts:
        x = (np.random.default_rng(T).standard_normal((T, 1024)).astype(np.float32) if mode == "mm"
             else np.random.default_rng(T).integers(0, 32000, (1, T)).astype(np.int64))
        art([x])
        lib.memset_count_reset(); lib.memset_count_enable(1)
        art([x])
        lib.memset_count_enable(0)
        print(f"{d} T={T}: memset >= 4 KiB per call: {lib.memset_count_calls()} calls, {lib.memset_count_bytes() / 2**20:.2f} MiB")

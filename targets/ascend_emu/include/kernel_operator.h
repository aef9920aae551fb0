// moec's clean-room emulation of the subset of the AscendC kernel API that moec emits.
//
// Written from the public description of the programming model (moec/shared design notes: queues,
// positions, DataCopy granularity, buffer capacities, the cube's fractal layouts) -- no code or text of
// Huawei's headers.  Each block of a kernel runs on the CPU (GetBlockIdx over blockDim); every hardware
// rule moec relies on is checked and a violation throws, naming the kernel, the block, the API call and
// the rule.
//
// Rules enforced: per-position capacity (UB = VECIN+VECOUT+VECCALC 184 KiB usable of 192, L1 512 KiB - 128 B,
// L0A/L0B 64 KiB, L0C 128 KiB); buffer lengths rounded to 32 B (L0A/L0B 512 B, L0C 64 B) and 32 B aligned;
// at most 64 buffers per kernel and 8 per queue; queue protocol (AllocTensor -> EnQue -> DeQue ->
// FreeTensor, no more live tensors than buffers, no use of a freed or still-enqueued tensor,
// nothing left allocated when the block ends); DataCopy moves whole 32-byte blocks (count*sizeof(T)
// % 32 == 0, else use DataCopyPad); GM accesses inside SetGlobalBuffer's size and inside a
// registered device allocation; vector APIs only on vector positions (VECIN/VECOUT/VECCALC) and
// within the tensor; count-form vector APIs with count <= the tensors' sizes; repeat-form limits
// (repeatTimes <= 255, 256 B per repeat); blockDim <= the SoC's core count for the kernel type.
// Cube (see "cube" below): L1/L0 only in AIC/MIX kernels, UB only in AIV/MIX kernels; Nd2Nz GM -> L1,
// LoadData L1 -> L0A/L0B, Mmad on A2/B2/CO1, Fixpipe CO1 -> GM, each with its parameter limits; the
// NZ/ZZ/ZN fractal layouts are modelled element by element, and cube buffers start as NaN bytes, so a
// wrong layout parameter produces wrong numbers.
// The pipe model (each instruction on its pipe; cross-pipe hazards without a flag, barrier or queue hand-off;
// event-id rules), per-core data caches for scalar GM access, the int32 -> half Cast rule, partial operand
// overlap, parameter limits and the f32 reduction order: see "the pipe model" below and README.md.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <string>
#include <unordered_map>
#include <vector>

#define __global__
#define __aicore__
#define __gm__
typedef uint8_t *GM_ADDR;
#define KERNEL_TYPE_AIV_ONLY 1
#define KERNEL_TYPE_AIC_ONLY 2
#define KERNEL_TYPE_MIX_AIC_1_2 3
#define KERNEL_TYPE_MIX_AIC_1_1 4
#define KERNEL_TASK_TYPE_DEFAULT(x) ::moec_emu::set_kernel_type(x)

// ---- 16-bit floating-point storage types -----------------------------------------------------------
// IEEE binary16 (`half`) and bfloat16 (`bfloat16_t`): 16-bit storage, arithmetic in float, conversion
// from float rounds to nearest, ties to even (overflow to infinity, NaN kept quiet), as the hardware's
// CAST_RINT does.  Bit-exactness against numpy/ml_dtypes is tested (tests/test_ascend.py).
namespace moec_emu {
inline uint32_t f32_bits(float f) { uint32_t x; memcpy(&x, &f, 4); return x; }
inline float bits_f32(uint32_t x) { float f; memcpy(&f, &x, 4); return f; }
inline uint16_t f32_to_bf16_rne(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  // NaN stays a (quiet) NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}
inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }
inline uint16_t f32_to_f16_rne(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to infinity (ties to even)
  if (ax < 0x38800000u) {                                     // |f| < 2^-14: a subnormal half (or zero)
    if (ax <= 0x33000000u) return sign;                       // <= 2^-25 rounds to zero (2^-25 is a tie -> 0)
    uint32_t e = ax >> 23, mant = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) q++;
    return (uint16_t)(sign | q);
  }
  uint32_t r = ax - 0x38000000u;  // rebias the exponent 127 -> 15
  uint32_t q = r >> 13, rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;  // a carry into the exponent is correct rounding
  return (uint16_t)(sign | q);
}
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (!m) return bits_f32(sign);
    float v = (float)m * (1.0f / 16777216.0f);  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}
}  // namespace moec_emu

struct half {
  uint16_t bits = 0;
  half() = default;
  half(float f) : bits(moec_emu::f32_to_f16_rne(f)) {}
  half(double d) : half((float)d) {}
  half(int i) : half((float)i) {}
  operator float() const { return moec_emu::f16_to_f32(bits); }
  static half from_bits(uint16_t b) { half h; h.bits = b; return h; }
};
struct bfloat16_t {
  uint16_t bits = 0;
  bfloat16_t() = default;
  bfloat16_t(float f) : bits(moec_emu::f32_to_bf16_rne(f)) {}
  bfloat16_t(double d) : bfloat16_t((float)d) {}
  bfloat16_t(int i) : bfloat16_t((float)i) {}
  operator float() const { return moec_emu::bf16_to_f32(bits); }
  static bfloat16_t from_bits(uint16_t b) { bfloat16_t h; h.bits = b; return h; }
};

namespace moec_emu {

struct Violation : std::runtime_error {
  explicit Violation(const std::string &m) : std::runtime_error(m) {}
};

struct Soc {
  const char *name;
  int aic, aiv;
};

// where in the kernel source an API call was made (every API takes it as a defaulted last argument)
struct Loc {
  const char *file;
  int line;
  Loc(const char *f = __builtin_FILE(), int l = __builtin_LINE()) : file(f), line(l) {}
};

// ---- the pipe model -------------------------------------------------------------------------------
// An AI core issues each instruction to one pipe; the pipes run concurrently and only meet at flags
// (SetFlag/WaitFlag), barriers (PipeBarrier) and queue hand-offs (EnQue/DeQue, FreeTensor/AllocTensor).
// Each pipe p keeps a vector clock vc[p][q]: the last instruction of pipe q that p is known to follow.
// Every access to an on-chip buffer (per 32-byte granule) and every GM line a scalar or DMA instruction
// touches remembers its last writer and its readers; an access from another pipe that does not follow
// them is a read-after-write / write-after-read / write-after-write hazard.  Scalar reads are synchronous
// (the scalar unit waits for its load), so they leave no write-after-read hazard behind.
enum PipeId : int { P_S = 0, P_V, P_M, P_MTE1, P_MTE2, P_MTE3, P_FIX, NPIPE };
inline const char *pipe_name(int p) {
  static const char *n[] = {"PIPE_S", "PIPE_V", "PIPE_M", "PIPE_MTE1", "PIPE_MTE2", "PIPE_MTE3", "PIPE_FIX"};
  return n[p];
}
struct Instr {
  const char *call;
  Loc loc;
};
constexpr int NEVENT = 24, NEVID = 8;  // HardEvent kinds, event ids per kind
struct Flag {
  bool set = false, fetched = false;
  uint8_t holder = 0;  // 0 free, 1 AllocEventID, 2 a queue's EnQue -> DeQue
  uint64_t snap[NPIPE] = {};
  Loc at{"", 0};
};
struct GLine {  // one 64-byte GM line as seen by one core
  uint8_t w_pipe = 0;
  uint64_t w_clk = 0;
  uint32_t w_instr = 0;
  bool dirty = false;   // written by the scalar unit, still in this core's data cache
  bool cached = false;  // in this core's data cache
  bool stale = false;   // cached, then written by DMA: the cache holds old bytes
};
struct XLine {  // one 64-byte GM line across the cores of one launch
  int32_t s_writer = -1;    // core that wrote it with SetValue
  int32_t dma_writer = -1;  // core that wrote it by DMA (-2: several)
};

struct State {
  const char *kernel = "?";
  int64_t block = 0, block_num = 1;
  int kernel_type = 1;
  size_t used[5] = {0, 0, 0, 0, 0};  // UB, L1, L0A, L0B, L0C
  int nbuf = 0;
  Soc soc{"Ascend910B2", 24, 48};
  std::vector<std::pair<const uint8_t *, size_t>> gm;  // registered device allocations
  std::string last_error;
  // cube instruction counters (read by the host through moec_cube_stats: proves the cube path ran)
  uint64_t mmad_calls = 0, mmad_macs = 0, loaddata_calls = 0, nd2nz_calls = 0, fixpipe_calls = 0;
  uint64_t mmad_by_type[4] = {0, 0, 0, 0};  // Mmad calls with float, bfloat16_t, half, int8_t operands
  // pipe model (reset at every block)
  Loc loc{"", 0};
  uint64_t clk[NPIPE] = {};
  uint64_t vc[NPIPE][NPIPE] = {};
  std::vector<Instr> instrs;
  Flag flags[NEVENT][NEVID];
  bool pipe_alive = false;  // a TPipe exists: event ids must come from it
  uint64_t barriers[NPIPE] = {};
  void *last_mmad_c = nullptr;  // BufRec of the last Mmad's C, its byte range and the PIPE_M barrier count then
  size_t last_mmad_lo = 0, last_mmad_hi = 0;
  uint64_t last_mmad_barriers = 0;
  bool deq_set = false;
  float deq_scale = 1.0f;
  // data caches: this block's GM lines, and every core's writes in this launch
  std::unordered_map<uint64_t, GLine> lines;
  std::unordered_map<uint64_t, XLine> xlines;
  uint64_t hazard_checks = 0;  // accesses checked by the pipe model (read by the tests: proves it ran)
};

inline State &st() {
  static thread_local State s;
  return s;
}

inline std::string where(const Loc &l) {
  const char *f = l.file ? strrchr(l.file, '/') : nullptr;
  return std::string(f ? f + 1 : (l.file ? l.file : "")) + ":" + std::to_string(l.line);
}
[[noreturn]] inline void fail(const char *call, const std::string &rule) {
  char head[512];
  snprintf(head, sizeof head, "[moec-ascend-emu] kernel '%s' block %lld: %s: ", st().kernel, (long long)st().block,
           call);
  throw Violation(std::string(head) + rule + " [at " + where(st().loc) + "]");
}

// issue one instruction on pipe p at loc: returns its clock on that pipe
inline uint64_t issue(int p, const char *call, const Loc &loc) {
  State &s = st();
  s.loc = loc;
  s.instrs.push_back({call, loc});
  s.clk[p]++;
  s.vc[p][p] = s.clk[p];
  return s.clk[p];
}
inline uint32_t last_instr() { return (uint32_t)st().instrs.size(); }  // 1-based id of the last issued
inline std::string instr_name(uint32_t id) {
  if (!id || id > st().instrs.size()) return "?";
  const Instr &i = st().instrs[id - 1];
  return std::string(i.call) + " at " + where(i.loc);
}
inline void join(int dst, const uint64_t *snap) {
  State &s = st();
  for (int q = 0; q < NPIPE; q++) s.vc[dst][q] = std::max(s.vc[dst][q], snap[q]);
}
inline void reset_block_sync() {
  State &s = st();
  memset(s.clk, 0, sizeof s.clk);
  memset(s.vc, 0, sizeof s.vc);
  s.instrs.clear();
  for (auto &row : s.flags)
    for (Flag &f : row) f = Flag();
  s.pipe_alive = false;
  memset(s.barriers, 0, sizeof s.barriers);
  s.last_mmad_c = nullptr;
  s.deq_set = false;
  s.lines.clear();
}

inline void set_kernel_type(int t) { st().kernel_type = t; }

inline void SetSoc(const char *name) {
  static const Soc socs[] = {{"Ascend910B1", 24, 48}, {"Ascend910B2", 24, 48}, {"Ascend910B3", 20, 40},
                             {"Ascend910B4", 20, 40}, {"Ascend910_93", 24, 48}};
  for (const Soc &s : socs)
    if (!strcmp(s.name, name)) { st().soc = s; return; }
  throw Violation(std::string("[moec-ascend-emu] unknown SoC '") + name + "'");
}

inline void RegisterGM(const void *p, size_t bytes) { st().gm.push_back({(const uint8_t *)p, bytes}); }
inline void UnregisterGM(const void *p) {
  auto &g = st().gm;
  g.erase(std::remove_if(g.begin(), g.end(), [p](auto &e) { return e.first == p; }), g.end());
}

inline void check_gm(const void *p, size_t bytes, const char *call) {
  const uint8_t *a = (const uint8_t *)p;
  for (auto &e : st().gm)
    if (a >= e.first && a + bytes <= e.first + e.second) return;
  fail(call, "global memory access of " + std::to_string(bytes) +
                 " bytes outside every device allocation (out-of-bounds GM access)");
}

inline const std::string &LastError() { return st().last_error; }

// ---- event flags --------------------------------------------------------------------------------
// HardEvent k synchronises pipe ev_src(k) (SetFlag) to pipe ev_dst(k) (WaitFlag); each kind has 8 ids.
inline int ev_src(int k);
inline int ev_dst(int k);
inline const char *ev_name(int k);
inline int ev_of(int src, int dst);  // the kind for a pipe pair, -1 if none
inline std::string pair_name(int src, int dst) {
  std::string a = pipe_name(src), b = pipe_name(dst);
  return a.substr(5) + "_" + b.substr(5);
}
inline void set_flag(int k, int id, const Loc &loc) {
  State &s = st();
  s.loc = loc;
  if (id < 0 || id >= NEVID) fail("SetFlag", "event id " + std::to_string(id) + " outside 0..7");
  Flag &f = s.flags[k][id];
  if (s.pipe_alive && f.holder != 1 && !f.fetched) {
    if (f.holder == 2)
      fail("SetFlag", std::string("event id ") + std::to_string(id) + " of HardEvent::" + ev_name(k) +
                          " is held by a queue (a tensor is between EnQue and DeQue on it): a hard-coded id collides "
                          "with the queues' ids; take one from TPipe::AllocEventID/FetchEventID");
    fail("SetFlag", std::string("event id ") + std::to_string(id) + " of HardEvent::" + ev_name(k) +
                        " was not obtained from TPipe::AllocEventID/FetchEventID (a hard-coded id can collide with "
                        "the ids the queues take)");
  }
  if (f.set)
    fail("SetFlag", std::string("HardEvent::") + ev_name(k) + " id " + std::to_string(id) + " set twice (at " +
                        where(f.at) + " and here) without a WaitFlag between: the second set is lost");
  memcpy(f.snap, s.vc[ev_src(k)], sizeof f.snap);
  f.set = true;
  f.at = loc;
}
inline void wait_flag(int k, int id, const Loc &loc) {
  State &s = st();
  s.loc = loc;
  if (id < 0 || id >= NEVID) fail("WaitFlag", "event id " + std::to_string(id) + " outside 0..7");
  Flag &f = s.flags[k][id];
  if (!f.set)
    fail("WaitFlag", std::string("HardEvent::") + ev_name(k) + " id " + std::to_string(id) +
                         " was never set: the pipe would wait forever");
  join(ev_dst(k), f.snap);
  f.set = false;
  if (f.holder == 0) f.fetched = false;
}
inline int free_id(int k) {
  for (int i = 0; i < NEVID; i++) {
    Flag &f = st().flags[k][i];
    if (!f.holder && !f.set && !f.fetched) return i;
  }
  return -1;
}

// ---- per-core data caches for scalar GM access (64-byte lines) -----------------------------------
// The scalar unit reads and writes GM through its core's data cache; DMA (DataCopy, Fixpipe) reads and
// writes GM itself.  A SetValue stays in the cache until DataCacheCleanAndInvalid writes the line back.
constexpr uint64_t GM_LINE = 64;
inline std::string line_name(uint64_t l) {
  char b[64];
  snprintf(b, sizeof b, "GM line 0x%llx", (unsigned long long)(l * GM_LINE));
  return b;
}
inline void gm_hazard(const char *call, const GLine &g, uint64_t l, int pipe, bool write) {
  fail(call, std::string(write ? "write-after-write" : "read-after-write") + " hazard on " + line_name(l) +
                 ": written by " + pipe_name(g.w_pipe) + " (" + instr_name(g.w_instr) + "), accessed by " +
                 pipe_name(pipe) + " with no flag or barrier between them (SetFlag/WaitFlag<HardEvent::" +
                 pair_name(g.w_pipe, pipe) + ">)");
}
inline void gm_scalar(const void *p, size_t n, bool write, const char *call) {
  State &s = st();
  const uint64_t a = (uint64_t)(uintptr_t)p;
  for (uint64_t l = a / GM_LINE; l <= (a + n - 1) / GM_LINE; l++) {
    GLine &g = s.lines[l];
    if (g.w_clk && g.w_pipe != P_S && s.vc[P_S][g.w_pipe] < g.w_clk) gm_hazard(call, g, l, P_S, write);
    if (!write && g.stale)
      fail(call, "reads " + line_name(l) + " through the data cache after DMA (" + instr_name(g.w_instr) +
                     ") rewrote it: the cache holds the old bytes; DataCacheCleanAndInvalid before the read");
    auto it = s.xlines.find(l);
    if (it != s.xlines.end()) {
      const XLine &x = it->second;
      if (x.s_writer >= 0 && x.s_writer != s.block)
        fail(call, line_name(l) + " was written with SetValue by core " + std::to_string(x.s_writer) +
                       " in this launch: another core's data cache is invisible here, and two cores writing one "
                       "64-byte line clobber each other on write-back");
      if (write && (x.dma_writer == -2 || (x.dma_writer >= 0 && x.dma_writer != s.block)))
        fail(call, "two cores write one 64-byte line: " + line_name(l) + " was written by DMA on core " +
                       std::to_string(x.dma_writer) + ", this core's SetValue write-back clobbers it");
    }
    g.cached = true;
    if (write) {
      g.dirty = true;
      g.stale = false;
      g.w_pipe = P_S;
      g.w_clk = s.clk[P_S];
      g.w_instr = last_instr();
      s.xlines[l].s_writer = (int32_t)s.block;
    }
  }
}
inline void gm_dma(const void *p, size_t n, bool write, int pipe, const char *call) {
  if (!n) return;
  State &s = st();
  const uint64_t a = (uint64_t)(uintptr_t)p;
  for (uint64_t l = a / GM_LINE; l <= (a + n - 1) / GM_LINE; l++) {
    auto it = s.lines.find(l);
    if (it != s.lines.end()) {
      GLine &g = it->second;
      if (g.dirty)
        fail(call, std::string(write ? "DMA writes " : "DMA reads ") + line_name(l) + ", which SetValue (" +
                       instr_name(g.w_instr) + ") left in the data cache: DMA " +
                       (write ? "is then clobbered by the line's write-back" : "sees GM, not the cache") +
                       "; DataCacheCleanAndInvalid first");
      if (g.w_clk && g.w_pipe != pipe && s.vc[pipe][g.w_pipe] < g.w_clk) gm_hazard(call, g, l, pipe, write);
      if (write && g.cached) g.stale = true;
    }
    auto xt = s.xlines.find(l);
    if (xt != s.xlines.end() && xt->second.s_writer >= 0 && xt->second.s_writer != s.block)
      fail(call, line_name(l) + " was written with SetValue by core " + std::to_string(xt->second.s_writer) +
                     " in this launch: cores are not ordered within a launch, and that core's write-back clobbers "
                     "the line");
    if (write) {
      GLine &g = s.lines[l];
      g.w_pipe = (uint8_t)pipe;
      g.w_clk = s.clk[pipe];
      g.w_instr = last_instr();
      XLine &x = s.xlines[l];
      x.dma_writer = x.dma_writer == -1 || x.dma_writer == (int32_t)s.block ? (int32_t)s.block : -2;
    }
  }
}

// end of a block: every flag waited, every allocated event id released, every SetValue flushed
inline void end_block_checks() {
  State &s = st();
  for (int k = 0; k < NEVENT; k++)
    for (int i = 0; i < NEVID; i++) {
      const Flag &f = s.flags[k][i];
      if (f.set)
        fail("kernel end", std::string("HardEvent::") + ev_name(k) + " id " + std::to_string(i) + " set at " +
                               where(f.at) + " was never waited for");
    }
  for (auto &e : s.lines)
    if (e.second.dirty)
      fail("kernel end", line_name(e.first) + " written with SetValue (" + instr_name(e.second.w_instr) +
                             ") is still in this core's data cache: flush it with DataCacheCleanAndInvalid (other "
                             "cores, DMA and later kernels read GM, not this cache)");
}

// Runs every block of a kernel; returns 0, or 1 with LastError() set on a rule violation.
template <typename F, typename... A>
int Launch(const char *name, uint32_t blockDim, F kernel, A... args) {
  State &s = st();
  s.kernel = name;
  s.last_error.clear();
  s.xlines.clear();
  try {
    s.kernel_type = 1;
    int limit = s.soc.aiv;
    s.loc = Loc("<<<>>>", 0);
    if (blockDim == 0) fail("<<<>>>", "blockDim must be >= 1");
    for (uint32_t b = 0; b < blockDim; b++) {
      s.block = b;
      s.block_num = blockDim;
      for (size_t &u : s.used) u = 0;
      s.nbuf = 0;
      reset_block_sync();
      kernel(args...);
      end_block_checks();
      // a cube or mixed kernel's block is one AI core (AIC, plus its AIV pair when mixed)
      limit = s.kernel_type == KERNEL_TYPE_AIV_ONLY ? s.soc.aiv : s.soc.aic;
      if ((int)blockDim > limit)
        fail("<<<>>>", "blockDim " + std::to_string(blockDim) + " exceeds the " + std::to_string(limit) +
                           " cores of " + s.soc.name + " for this kernel type");
    }
  } catch (const Violation &v) {
    s.last_error = v.what();
    s.xlines.clear();
    s.lines.clear();
    return 1;
  }
  s.xlines.clear();
  s.lines.clear();
  return 0;
}

}  // namespace moec_emu

#define MOEC_EMU_LAUNCH(kernel, blockDim, stream, ...) ::moec_emu::Launch(#kernel, blockDim, kernel, __VA_ARGS__)

namespace AscendC {

enum class TPosition { GM, VECIN, VECOUT, VECCALC, A1, B1, A2, B2, CO1, CO2 };
using QuePosition = TPosition;
enum class RoundMode { CAST_NONE, CAST_RINT, CAST_ROUND, CAST_FLOOR, CAST_CEIL, CAST_TRUNC };
enum class HardEvent {
  MTE2_V, V_MTE3, MTE3_V, V_MTE2, MTE2_MTE3, MTE3_MTE2, S_V, V_S, MTE2_S, S_MTE2, MTE3_S, S_MTE3,
  MTE2_MTE1, MTE1_MTE2, MTE1_M, M_MTE1, M_FIX, FIX_M, FIX_S, S_FIX, S_MTE1, MTE1_S, S_M, M_S
};
enum PipeType { PIPE_S, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_FIX, PIPE_ALL };
using TEventID = int8_t;
enum event_t : int32_t { EVENT_ID0, EVENT_ID1, EVENT_ID2, EVENT_ID3, EVENT_ID4, EVENT_ID5, EVENT_ID6, EVENT_ID7 };
}  // namespace AscendC

namespace moec_emu {
struct EvDef {
  const char *name;
  int src, dst;
};
inline const EvDef &ev_def(int k) {
  static const EvDef d[NEVENT] = {
      {"MTE2_V", P_MTE2, P_V},    {"V_MTE3", P_V, P_MTE3},    {"MTE3_V", P_MTE3, P_V},    {"V_MTE2", P_V, P_MTE2},
      {"MTE2_MTE3", P_MTE2, P_MTE3}, {"MTE3_MTE2", P_MTE3, P_MTE2}, {"S_V", P_S, P_V},    {"V_S", P_V, P_S},
      {"MTE2_S", P_MTE2, P_S},    {"S_MTE2", P_S, P_MTE2},    {"MTE3_S", P_MTE3, P_S},    {"S_MTE3", P_S, P_MTE3},
      {"MTE2_MTE1", P_MTE2, P_MTE1}, {"MTE1_MTE2", P_MTE1, P_MTE2}, {"MTE1_M", P_MTE1, P_M}, {"M_MTE1", P_M, P_MTE1},
      {"M_FIX", P_M, P_FIX},      {"FIX_M", P_FIX, P_M},      {"FIX_S", P_FIX, P_S},      {"S_FIX", P_S, P_FIX},
      {"S_MTE1", P_S, P_MTE1},    {"MTE1_S", P_MTE1, P_S},    {"S_M", P_S, P_M},          {"M_S", P_M, P_S}};
  return d[k];
}
inline int ev_src(int k) { return ev_def(k).src; }
inline int ev_dst(int k) { return ev_def(k).dst; }
inline const char *ev_name(int k) { return ev_def(k).name; }
inline int ev_of(int src, int dst) {
  for (int k = 0; k < NEVENT; k++)
    if (ev_def(k).src == src && ev_def(k).dst == dst) return k;
  return -1;
}
}  // namespace moec_emu

namespace AscendC {

inline int64_t GetBlockIdx() { return moec_emu::st().block; }
inline int64_t GetBlockNum() { return moec_emu::st().block_num; }

inline int phys_of(TPosition p) {
  switch (p) {
    case TPosition::VECIN: case TPosition::VECOUT: case TPosition::VECCALC: case TPosition::CO2: return 0;
    case TPosition::A1: case TPosition::B1: return 1;
    case TPosition::A2: return 2;
    case TPosition::B2: return 3;
    case TPosition::CO1: return 4;
    default: return -1;
  }
}
inline size_t capacity_of(int phys) {
  // usable sizes: the top 8 KiB of the 192 KiB Unified Buffer is scratch for some instructions, and the
  // last 128 bytes of the 512 KiB L1 are reserved
  static const size_t cap[5] = {184 * 1024, 512 * 1024 - 128, 64 * 1024, 64 * 1024, 128 * 1024};
  return cap[phys];
}
inline size_t granule_of(int phys) {
  static const size_t g[5] = {32, 32, 512, 512, 64};
  return g[phys];
}
inline const char *pos_name(TPosition p) {
  static const char *n[] = {"GM", "VECIN", "VECOUT", "VECCALC", "A1", "B1", "A2", "B2", "CO1", "CO2"};
  return n[(int)p];
}

// one physical buffer handed out by TPipe
struct BufRec {
  std::vector<uint8_t> mem;  // over-allocated for 32-byte alignment
  uint8_t *base = nullptr;
  uint32_t len = 0;
  TPosition pos = TPosition::VECCALC;
  int state = 0;  // 0 free, 1 allocated, 2 enqueued, 3 dequeued (TBuf: always 1)
  uint32_t gen = 0;
  // pipe model: per 32-byte granule, the last writer and the readers since (pipe clocks, 0 = none)
  struct Acc {
    uint32_t w_clk = 0, w_instr = 0;
    uint32_t r_clk[moec_emu::NPIPE] = {};
    uint8_t w_pipe = 0;
  };
  std::vector<Acc> acc;
  int id = 0;                   // buffer number in the kernel (InitBuffer order)
  moec_emu::Loc init{"", 0};    // where InitBuffer made it
  uint64_t enq_snap[moec_emu::NPIPE] = {}, free_snap[moec_emu::NPIPE] = {};
  int enq_ev = -1, enq_id = -1; // the event a queue hand-off holds between EnQue and DeQue
};

inline std::string buf_name(const BufRec *b) {
  return std::string(pos_name(b->pos)) + " buffer #" + std::to_string(b->id) + " (InitBuffer at " +
         moec_emu::where(b->init) + ")";
}
// the pipe model's check of one access: bytes [lo, hi) of b by the instruction just issued on `pipe`
inline void touch(BufRec *b, size_t lo, size_t hi, int pipe, bool write, const char *call) {
  using namespace moec_emu;
  State &s = st();
  s.hazard_checks++;
  if (hi <= lo) return;
  const uint32_t clk = (uint32_t)s.clk[pipe], iid = last_instr();
  const size_t g1 = std::min((hi - 1) / 32, b->acc.size() - 1);
  for (size_t g = lo / 32; g <= g1; g++) {
    BufRec::Acc &a = b->acc[g];
    const char *kind = nullptr;
    int other = 0;
    uint32_t oi = 0;
    if (a.w_clk && a.w_pipe != pipe && s.vc[pipe][a.w_pipe] < a.w_clk) {
      kind = write ? "write-after-write" : "read-after-write";
      other = a.w_pipe;
      oi = a.w_instr;
    } else if (write) {
      for (int q = 0; q < NPIPE; q++)
        if (q != pipe && a.r_clk[q] && s.vc[pipe][q] < a.r_clk[q]) {
          kind = "write-after-read";
          other = q;
          break;
        }
    }
    if (kind)
      fail(call, std::string(kind) + " hazard on " + buf_name(b) + " bytes [" + std::to_string(g * 32) + ", " +
                     std::to_string(g * 32 + 32) + "): " + (oi ? "written by " : "read by ") + pipe_name(other) +
                     (oi ? " (" + instr_name(oi) + ")" : std::string()) + ", then " + (write ? "written" : "read") +
                     " by " + pipe_name(pipe) + " with no flag, barrier or queue hand-off between them "
                     "(SetFlag/WaitFlag<HardEvent::" + pair_name(other, pipe) + ">)");
    if (write) {
      a.w_pipe = (uint8_t)pipe;
      a.w_clk = clk;
      a.w_instr = iid;
      memset(a.r_clk, 0, sizeof a.r_clk);
    } else if (pipe != P_S) {
      a.r_clk[pipe] = clk;
    }
  }
}

template <typename T>
class LocalTensor {
 public:
  LocalTensor() = default;
  LocalTensor(BufRec *b, uint32_t off, uint32_t n) : buf_(b), off_(off), n_(n), gen_(b ? b->gen : 0) {}
  T *addr(const char *call, uint32_t count = 0) const {
    if (!buf_) moec_emu::fail(call, "use of an empty LocalTensor (never allocated)");
    if (buf_->gen != gen_ || buf_->state == 0) moec_emu::fail(call, "use of a LocalTensor after FreeTensor");
    if (count > n_)
      moec_emu::fail(call, "count " + std::to_string(count) + " exceeds the tensor's " + std::to_string(n_) +
                               " elements (local buffer overflow)");
    return reinterpret_cast<T *>(buf_->base + off_ * sizeof(T));
  }
  T *vec(const char *call, uint32_t count) const {
    T *p = addr(call, count);
    int ph = phys_of(buf_->pos);
    if (ph != 0)
      moec_emu::fail(call, std::string("vector instruction on a tensor in position ") + pos_name(buf_->pos) +
                               " (vector units only reach the Unified Buffer: VECIN/VECOUT/VECCALC)");
    if (buf_->state == 2) moec_emu::fail(call, "tensor is enqueued: DeQue it before computing on it");
    if ((off_ * sizeof(T)) % 32)
      moec_emu::fail(call, "vector operand starts " + std::to_string(off_ * sizeof(T)) +
                               " bytes into its buffer, not on a 32-byte boundary (vector instructions address the "
                               "Unified Buffer in 32-byte blocks)");
    return p;
  }
  T GetValue(uint32_t i, moec_emu::Loc loc = moec_emu::Loc()) const {
    moec_emu::issue(moec_emu::P_S, "LocalTensor::GetValue", loc);
    T *p = addr("LocalTensor::GetValue", i + 1);
    use(moec_emu::P_S, i, 1, false, "LocalTensor::GetValue");
    return p[i];
  }
  void SetValue(uint32_t i, T v, moec_emu::Loc loc = moec_emu::Loc()) const {
    moec_emu::issue(moec_emu::P_S, "LocalTensor::SetValue", loc);
    T *p = addr("LocalTensor::SetValue", i + 1);
    use(moec_emu::P_S, i, 1, true, "LocalTensor::SetValue");
    p[i] = v;
  }
  // the pipe model: elements [first, first + count) of this tensor accessed by the instruction just issued
  void use(int pipe, uint32_t first, uint32_t count, bool write, const char *call) const {
    if (buf_) touch(buf_, (size_t)(off_ + first) * sizeof(T), (size_t)(off_ + first + count) * sizeof(T), pipe, write, call);
  }
  // bytes of this tensor's first count elements in its buffer (for overlap checks)
  size_t byte_lo() const { return (size_t)off_ * sizeof(T); }
  LocalTensor operator[](uint32_t off) const {
    if (off > n_) moec_emu::fail("LocalTensor::operator[]", "offset beyond the tensor");
    LocalTensor t(*this);
    t.off_ += off;
    t.n_ -= off;
    return t;
  }
  uint32_t GetSize() const { return n_; }
  // the same bytes viewed as another element type (the offset must be a whole number of the new elements)
  template <typename U>
  LocalTensor<U> ReinterpretCast() const {
    if ((off_ * sizeof(T)) % sizeof(U)) moec_emu::fail("LocalTensor::ReinterpretCast", "offset not a whole element");
    LocalTensor<U> t(buf_, (uint32_t)(off_ * sizeof(T) / sizeof(U)), (uint32_t)(n_ * sizeof(T) / sizeof(U)));
    t.set_gen(gen_);
    return t;
  }
  void set_gen(uint32_t g) { gen_ = g; }
  uint32_t offset() const { return off_; }
  BufRec *rec() const { return buf_; }
  uint32_t gen() const { return gen_; }
  TPosition GetPosition() const { return buf_ ? buf_->pos : TPosition::GM; }

 private:
  BufRec *buf_ = nullptr;
  uint32_t off_ = 0, n_ = 0, gen_ = 0;
};

template <typename T>
class GlobalTensor {
 public:
  void SetGlobalBuffer(__gm__ T *p, uint64_t n) {
    p_ = p;
    n_ = n;
    moec_emu::check_gm(p, n * sizeof(T), "GlobalTensor::SetGlobalBuffer");
  }
  GlobalTensor operator[](uint64_t off) const {
    if (off > n_) moec_emu::fail("GlobalTensor::operator[]", "offset " + std::to_string(off) + " beyond the "
                                 + std::to_string(n_) + " elements given to SetGlobalBuffer");
    GlobalTensor g(*this);
    g.p_ += off;
    g.n_ -= off;
    return g;
  }
  T *span(const char *call, uint64_t count) const {
    if (count > n_)
      moec_emu::fail(call, "access of " + std::to_string(count) + " elements beyond the " + std::to_string(n_) +
                               " left in the GlobalTensor (out-of-bounds GM access)");
    moec_emu::check_gm(p_, count * sizeof(T), call);
    return p_;
  }
  T GetValue(uint64_t i, moec_emu::Loc loc = moec_emu::Loc()) const {
    moec_emu::issue(moec_emu::P_S, "GlobalTensor::GetValue", loc);
    T *p = span("GlobalTensor::GetValue", i + 1);
    moec_emu::gm_scalar(p + i, sizeof(T), false, "GlobalTensor::GetValue");
    return p[i];
  }
  void SetValue(uint64_t i, T v, moec_emu::Loc loc = moec_emu::Loc()) const {
    moec_emu::issue(moec_emu::P_S, "GlobalTensor::SetValue", loc);
    T *p = span("GlobalTensor::SetValue", i + 1);
    moec_emu::gm_scalar(p + i, sizeof(T), true, "GlobalTensor::SetValue");
    p[i] = v;
  }
  // the pipe model: count elements from the start accessed by DMA on `pipe` (the instruction just issued)
  void dma(int pipe, uint64_t first, uint64_t count, bool write, const char *call) const {
    moec_emu::gm_dma(p_ + first, count * sizeof(T), write, pipe, call);
  }
  T *raw() const { return p_; }
  uint64_t GetSize() const { return n_; }

 private:
  T *p_ = nullptr;
  uint64_t n_ = 0;
};

class TPipe;

// the pipes a queue hands tensors between: its producer (EnQue side) and consumer (DeQue side)
inline int que_producer(TPosition p) {
  switch (p) {
    case TPosition::VECIN: case TPosition::A1: case TPosition::B1: return moec_emu::P_MTE2;
    case TPosition::A2: case TPosition::B2: return moec_emu::P_MTE1;
    case TPosition::CO1: return moec_emu::P_M;
    default: return moec_emu::P_V;  // VECOUT, VECCALC
  }
}
inline int que_consumer(TPosition p) {
  switch (p) {
    case TPosition::VECOUT: return moec_emu::P_MTE3;
    case TPosition::A1: case TPosition::B1: return moec_emu::P_MTE1;
    case TPosition::A2: case TPosition::B2: return moec_emu::P_M;
    case TPosition::CO1: return moec_emu::P_FIX;
    default: return moec_emu::P_V;  // VECIN, VECCALC
  }
}

template <TPosition P, int DEPTH = 1>
class TQue {
 public:
  // AllocTensor waits until the consumer has released the buffer (FreeTensor): consumer -> producer
  template <typename T>
  LocalTensor<T> AllocTensor(moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    for (BufRec *b : bufs_)
      if (b->state == 0) {
        b->state = 1;
        b->gen++;
        moec_emu::join(que_producer(P), b->free_snap);
        return LocalTensor<T>(b, 0, b->len / sizeof(T));
      }
    if (bufs_.empty()) moec_emu::fail("TQue::AllocTensor", "queue has no buffers (call TPipe::InitBuffer first)");
    moec_emu::fail("TQue::AllocTensor", "all " + std::to_string(bufs_.size()) +
                                            " buffers of the queue are in use (FreeTensor one first)");
  }
  // EnQue sets a flag producer -> consumer on an event id the queue takes until DeQue waits on it
  template <typename T>
  bool EnQue(const LocalTensor<T> &t, moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::State &s = moec_emu::st();
    s.loc = loc;
    BufRec *b = own(t, "TQue::EnQue");
    if (b->state != 1) moec_emu::fail("TQue::EnQue", "only a freshly allocated tensor can be enqueued");
    if ((int)fifo_.size() >= std::max(DEPTH, 1) * (int)bufs_.size())
      moec_emu::fail("TQue::EnQue", "queue depth exceeded");
    const int pr = que_producer(P), co = que_consumer(P);
    memcpy(b->enq_snap, s.vc[pr], sizeof b->enq_snap);
    b->enq_ev = pr != co ? moec_emu::ev_of(pr, co) : -1;
    if (b->enq_ev >= 0) {
      b->enq_id = moec_emu::free_id(b->enq_ev);
      if (b->enq_id < 0)
        moec_emu::fail("TQue::EnQue", std::string("no free event id of HardEvent::") + moec_emu::ev_name(b->enq_ev) +
                                          " (8 per kind): too many tensors in flight or ids held elsewhere");
      moec_emu::Flag &f = s.flags[b->enq_ev][b->enq_id];
      f.holder = 2;
      f.set = true;
      f.at = loc;
      memcpy(f.snap, s.vc[pr], sizeof f.snap);
    }
    b->state = 2;
    fifo_.push_back(b);
    return true;
  }
  template <typename T>
  LocalTensor<T> DeQue(moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::State &s = moec_emu::st();
    s.loc = loc;
    if (fifo_.empty()) moec_emu::fail("TQue::DeQue", "queue is empty (DeQue before EnQue)");
    BufRec *b = fifo_.front();
    fifo_.erase(fifo_.begin());
    b->state = 3;
    moec_emu::join(que_consumer(P), b->enq_snap);
    if (b->enq_ev >= 0) {
      moec_emu::Flag &f = s.flags[b->enq_ev][b->enq_id];
      f = moec_emu::Flag();
      b->enq_ev = b->enq_id = -1;
    }
    return LocalTensor<T>(b, 0, b->len / sizeof(T));
  }
  // FreeTensor: the consumer is done with the buffer (the next AllocTensor of it waits for that)
  template <typename T>
  void FreeTensor(const LocalTensor<T> &t, moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    BufRec *b = own(t, "TQue::FreeTensor");
    if (b->state == 2) moec_emu::fail("TQue::FreeTensor", "tensor is still enqueued (DeQue it first)");
    memcpy(b->free_snap, moec_emu::st().vc[que_consumer(P)], sizeof b->free_snap);
    b->state = 0;
    b->gen++;
  }
  std::vector<BufRec *> bufs_;
  std::vector<BufRec *> fifo_;

 private:
  template <typename T>
  BufRec *own(const LocalTensor<T> &t, const char *call) {
    BufRec *b = t.rec();
    if (!b || std::find(bufs_.begin(), bufs_.end(), b) == bufs_.end())
      moec_emu::fail(call, "tensor does not belong to this queue");
    if (b->gen != t.gen() || b->state == 0) moec_emu::fail(call, "tensor was already freed");
    return b;
  }
};

template <TPosition P>
class TBuf {
 public:
  template <typename T>
  LocalTensor<T> Get() {
    if (!rec_) moec_emu::fail("TBuf::Get", "TBuf has no memory (call TPipe::InitBuffer first)");
    return LocalTensor<T>(rec_, 0, rec_->len / sizeof(T));
  }
  template <typename T>
  LocalTensor<T> Get(uint32_t n) {
    LocalTensor<T> t = Get<T>();
    if (n > t.GetSize()) moec_emu::fail("TBuf::Get", "requested more elements than the buffer holds");
    return LocalTensor<T>(rec_, 0, n);
  }
  BufRec *rec_ = nullptr;
};

inline TPipe *&current_pipe() {
  static thread_local TPipe *p = nullptr;
  return p;
}
inline TPipe *GetTPipePtr() {
  if (!current_pipe()) moec_emu::fail("GetTPipePtr", "no TPipe exists in this kernel");
  return current_pipe();
}

class TPipe {
 public:
  TPipe() {
    current_pipe() = this;
    moec_emu::st().pipe_alive = true;
  }
  TPipe(const TPipe &) = delete;
  template <TPosition P, int D>
  void InitBuffer(TQue<P, D> &q, uint32_t num, uint32_t len, moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    if (num < 1 || num > 8) moec_emu::fail("TPipe::InitBuffer", "a queue holds 1..8 buffers, got " + std::to_string(num));
    for (uint32_t i = 0; i < num; i++) {
      q.bufs_.push_back(alloc(P, len, loc));
      qbufs_.push_back(q.bufs_.back());  // owned here: queues may be destroyed before the pipe
    }
  }
  template <TPosition P>
  void InitBuffer(TBuf<P> &b, uint32_t len, moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    b.rec_ = alloc(P, len, loc);
    b.rec_->state = 1;
  }
  // event ids: AllocEventID holds an id until ReleaseEventID; FetchEventID names a free id for an immediate
  // SetFlag/WaitFlag pair without holding it.  SetFlag/WaitFlag in a TPipe kernel take only such ids.
  template <HardEvent E>
  TEventID AllocEventID(moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    int id = moec_emu::free_id((int)E);
    if (id < 0)
      moec_emu::fail("TPipe::AllocEventID", std::string("no free event id of HardEvent::") + moec_emu::ev_name((int)E));
    moec_emu::st().flags[(int)E][id].holder = 1;
    return (TEventID)id;
  }
  template <HardEvent E>
  void ReleaseEventID(TEventID id, moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    if (id < 0 || id >= moec_emu::NEVID || moec_emu::st().flags[(int)E][id].holder != 1)
      moec_emu::fail("TPipe::ReleaseEventID", "event id " + std::to_string(id) + " of HardEvent::" +
                                                  moec_emu::ev_name((int)E) + " was not allocated by AllocEventID");
    moec_emu::Flag &f = moec_emu::st().flags[(int)E][id];
    if (f.set) moec_emu::fail("TPipe::ReleaseEventID", "the id is still set (WaitFlag first)");
    f.holder = 0;
  }
  TEventID FetchEventID(HardEvent e, moec_emu::Loc loc = moec_emu::Loc()) {
    moec_emu::st().loc = loc;
    int id = moec_emu::free_id((int)e);
    if (id < 0)
      moec_emu::fail("TPipe::FetchEventID", std::string("no free event id of HardEvent::") + moec_emu::ev_name((int)e));
    moec_emu::st().flags[(int)e][id].fetched = true;
    return (TEventID)id;
  }
  template <HardEvent E>
  TEventID FetchEventID(moec_emu::Loc loc = moec_emu::Loc()) { return FetchEventID(E, loc); }
  // end of the block: nothing may remain allocated or enqueued
  ~TPipe() noexcept(false) {
    bool unwinding = std::uncaught_exceptions() > 0;
    if (current_pipe() == this) current_pipe() = nullptr;
    moec_emu::State &s = moec_emu::st();
    s.pipe_alive = false;
    std::vector<BufRec *> recs;
    recs.swap(recs_);
    struct Cleanup {
      std::vector<BufRec *> &r;
      ~Cleanup() { for (BufRec *b : r) delete b; }
    } cleanup{recs};
    for (BufRec *b : qbufs_)
      if (b->state != 0 && !unwinding)
        moec_emu::fail("kernel end", std::string("a tensor of a ") + pos_name(b->pos) +
                                         " queue is still allocated or enqueued (missing FreeTensor: leak)");
    if (!unwinding)
      for (int k = 0; k < moec_emu::NEVENT; k++)
        for (int i = 0; i < moec_emu::NEVID; i++)
          if (s.flags[k][i].holder == 1)
            moec_emu::fail("kernel end", std::string("event id ") + std::to_string(i) + " of HardEvent::" +
                                             moec_emu::ev_name(k) + " taken by AllocEventID was never released");
  }
  void Destroy() {}

 private:
  BufRec *alloc(TPosition p, uint32_t len, const moec_emu::Loc &loc) {
    int ph = phys_of(p);
    if (ph < 0) moec_emu::fail("TPipe::InitBuffer", "GM is not an on-chip position");
    moec_emu::State &s = moec_emu::st();
    if (++s.nbuf > 64) moec_emu::fail("TPipe::InitBuffer", "more than 64 buffers in one kernel");
    // 910B: the cube core (AIC) owns L1/L0A/L0B/L0C, the vector core (AIV) owns the Unified Buffer
    if (ph != 0 && s.kernel_type == KERNEL_TYPE_AIV_ONLY)
      moec_emu::fail("TPipe::InitBuffer", std::string("position ") + pos_name(p) + " is a cube-core buffer (L1/L0): "
                     "a KERNEL_TYPE_AIV_ONLY kernel runs on vector cores, which have none (declare AIC or MIX)");
    if (ph == 0 && s.kernel_type == KERNEL_TYPE_AIC_ONLY)
      moec_emu::fail("TPipe::InitBuffer", std::string("position ") + pos_name(p) + " is the Unified Buffer: a "
                     "KERNEL_TYPE_AIC_ONLY kernel runs on cube cores, which have none (declare AIV or MIX)");
    size_t g = granule_of(ph);
    size_t rounded = (len + g - 1) / g * g;
    if (s.used[ph] + rounded > capacity_of(ph))
      moec_emu::fail("TPipe::InitBuffer", std::string("capacity of ") + pos_name(p) + " exceeded: " +
                                              std::to_string(s.used[ph] + rounded) + " bytes requested in total, the "
                                              "physical buffer holds " + std::to_string(capacity_of(ph)));
    s.used[ph] += rounded;
    BufRec *b = new BufRec();
    // on-chip memory is not cleared between uses: the cube buffers start as NaN bytes (0xFF) so a kernel
    // that reads what it never wrote (an unset C matrix, a fractal a layout parameter skipped) gets
    // wrong numbers instead of lucky zeros
    b->mem.assign(rounded + 64, ph == 0 ? 0 : 0xFF);
    uintptr_t a = ((uintptr_t)b->mem.data() + 31) & ~(uintptr_t)31;
    b->base = (uint8_t *)a;
    b->len = (uint32_t)rounded;
    b->pos = p;
    b->acc.assign(rounded / 32 ? rounded / 32 : 1, BufRec::Acc());
    b->id = s.nbuf;
    b->init = loc;
    recs_.push_back(b);
    return b;
  }
  std::vector<BufRec *> recs_;
  std::vector<BufRec *> qbufs_;
};

// ---- data movement ------------------------------------------------------------------------------
struct DataCopyParams {
  uint16_t blockCount = 1, blockLen = 0, srcStride = 0, dstStride = 0;  // blockLen/strides: 32-byte units
};
struct DataCopyExtParams {
  uint16_t blockCount = 1;
  uint32_t blockLen = 0;  // bytes
  uint32_t srcStride = 0, dstStride = 0;
  uint32_t rsv = 0;
};
template <typename T>
struct DataCopyPadExtParams {
  bool isPad = false;
  uint8_t leftPadding = 0, rightPadding = 0;
  T paddingValue = T();
};

// L0A/L0B/L0C are reached only by LoadData (in), Mmad and Fixpipe (out), never by DataCopy
template <typename T>
inline void no_l0(const LocalTensor<T> &t, const char *call) {
  TPosition p = t.GetPosition();
  if (p == TPosition::A2 || p == TPosition::B2 || p == TPosition::CO1)
    moec_emu::fail(call, std::string("DataCopy cannot reach ") + pos_name(p) +
                             " (L0 buffers are filled by LoadData and drained by Fixpipe)");
}
template <typename T>
inline void check_granule(uint32_t count, const char *call) {
  if ((count * sizeof(T)) % 32)
    moec_emu::fail(call, "count*sizeof(T)=" + std::to_string(count * sizeof(T)) +
                             " bytes is not a multiple of 32 (DataCopy moves whole 32-byte blocks; use DataCopyPad)");
}

using moec_emu::Loc;
using moec_emu::P_S;
using moec_emu::P_V;
using moec_emu::P_M;
using moec_emu::P_MTE1;
using moec_emu::P_MTE2;
using moec_emu::P_MTE3;
using moec_emu::P_FIX;

template <typename T>
inline void DataCopy(const LocalTensor<T> &dst, const GlobalTensor<T> &src, uint32_t count, Loc loc = Loc()) {
  const char *call = "DataCopy(GM->local)";
  moec_emu::issue(P_MTE2, call, loc);
  check_granule<T>(count, call);
  no_l0(dst, call);
  memcpy(dst.addr(call, count), src.span(call, count), count * sizeof(T));
  src.dma(P_MTE2, 0, count, false, call);
  dst.use(P_MTE2, 0, count, true, call);
}
template <typename T>
inline void DataCopy(const GlobalTensor<T> &dst, const LocalTensor<T> &src, uint32_t count, Loc loc = Loc()) {
  const char *call = "DataCopy(local->GM)";
  moec_emu::issue(P_MTE3, call, loc);
  check_granule<T>(count, call);
  no_l0(src, call);
  src.use(P_MTE3, 0, count, false, call);
  dst.dma(P_MTE3, 0, count, true, call);
  memcpy(dst.span(call, count), src.addr(call, count), count * sizeof(T));
}
// UB -> UB copies run on the vector pipe
template <typename T>
inline void DataCopy(const LocalTensor<T> &dst, const LocalTensor<T> &src, uint32_t count, Loc loc = Loc()) {
  const char *call = "DataCopy(local->local)";
  moec_emu::issue(P_V, call, loc);
  check_granule<T>(count, call);
  no_l0(dst, call);
  no_l0(src, call);
  T *d = dst.addr(call, count);
  const T *x = src.addr(call, count);
  src.use(P_V, 0, count, false, call);
  dst.use(P_V, 0, count, true, call);
  memmove(d, x, count * sizeof(T));
}
inline void check_pad_params(const DataCopyExtParams &p, const char *call) {
  if (p.blockCount < 1 || p.blockCount > 4095)
    moec_emu::fail(call, "blockCount " + std::to_string(p.blockCount) + " outside 1..4095");
  if (p.blockLen < 1 || p.blockLen > 2097151)
    moec_emu::fail(call, "blockLen " + std::to_string(p.blockLen) + " bytes outside 1..2097151");
}
// GM -> UB, rows of blockLen bytes (any length; the UB side of each row is padded to 32 bytes)
template <typename T>
inline void DataCopyPad(const LocalTensor<T> &dst, const GlobalTensor<T> &src, const DataCopyExtParams &p,
                        const DataCopyPadExtParams<T> &pad, Loc loc = Loc()) {
  const char *call = "DataCopyPad(GM->local)";
  moec_emu::issue(P_MTE2, call, loc);
  no_l0(dst, call);
  check_pad_params(p, call);
  if (p.blockLen % sizeof(T)) moec_emu::fail(call, "blockLen must be a whole number of elements");
  uint32_t row = p.blockLen / sizeof(T);
  uint32_t ub_row = (p.blockLen + 31) / 32 * 32 / sizeof(T) + p.dstStride * 32 / sizeof(T);
  uint64_t g_row = row + p.srcStride / sizeof(T);
  const uint32_t ub_n = (p.blockCount - 1) * ub_row + (p.blockLen + 31) / 32 * 32 / sizeof(T);
  T *d = dst.addr(call, ub_n);
  const T *s = src.span(call, (p.blockCount - 1) * g_row + row);
  for (uint32_t r = 0; r < p.blockCount; r++) src.dma(P_MTE2, r * g_row, row, false, call);
  dst.use(P_MTE2, 0, ub_n, true, call);
  for (uint32_t r = 0; r < p.blockCount; r++) {
    memcpy(d + r * ub_row, s + r * g_row, p.blockLen);
    if (pad.isPad)
      for (uint32_t i = row; i < (p.blockLen + 31) / 32 * 32 / sizeof(T); i++) d[r * ub_row + i] = pad.paddingValue;
  }
}
// UB -> GM, rows of blockLen bytes
template <typename T>
inline void DataCopyPad(const GlobalTensor<T> &dst, const LocalTensor<T> &src, const DataCopyExtParams &p,
                        Loc loc = Loc()) {
  const char *call = "DataCopyPad(local->GM)";
  moec_emu::issue(P_MTE3, call, loc);
  no_l0(src, call);
  check_pad_params(p, call);
  if (p.blockLen % sizeof(T)) moec_emu::fail(call, "blockLen must be a whole number of elements");
  uint32_t row = p.blockLen / sizeof(T);
  uint32_t ub_row = (p.blockLen + 31) / 32 * 32 / sizeof(T) + p.srcStride * 32 / sizeof(T);
  uint64_t g_row = row + p.dstStride / sizeof(T);
  const T *s = src.addr(call, (p.blockCount - 1) * ub_row + row);
  T *d = dst.span(call, (p.blockCount - 1) * g_row + row);
  src.use(P_MTE3, 0, (p.blockCount - 1) * ub_row + row, false, call);
  for (uint32_t r = 0; r < p.blockCount; r++) dst.dma(P_MTE3, r * g_row, row, true, call);
  for (uint32_t r = 0; r < p.blockCount; r++) memcpy(d + r * g_row, s + r * ub_row, p.blockLen);
}

// ---- vector instructions (count form) --------------------------------------------------------------
// Operand overlap: a destination may be the very same elements as a source (in place) or share no byte
// with it; a partial overlap is forbidden (the hardware reads and writes in 256-byte repeats).
template <typename A, typename B>
inline void no_partial_overlap(const char *call, const LocalTensor<A> &x, uint32_t nx, const LocalTensor<B> &y,
                               uint32_t ny, bool identical_ok = true) {
  if (!x.rec() || x.rec() != y.rec()) return;
  const size_t x0 = x.byte_lo(), x1 = x0 + (size_t)nx * sizeof(A), y0 = y.byte_lo(), y1 = y0 + (size_t)ny * sizeof(B);
  if (x0 < y1 && y0 < x1 && !(identical_ok && x0 == y0 && x1 == y1))
    moec_emu::fail(call, "operands overlap partly: bytes [" + std::to_string(x0) + ", " + std::to_string(x1) +
                             ") and [" + std::to_string(y0) + ", " + std::to_string(y1) + ") of " + buf_name(x.rec()) +
                             " (an operand must be the same elements as another or share no byte with it)");
}
#define MOEC_EMU_BIN(NAME, EXPR)                                                                       \
  template <typename T>                                                                                \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &a, const LocalTensor<T> &b,        \
                   int32_t count, Loc loc = Loc()) {                                                   \
    moec_emu::issue(P_V, #NAME, loc);                                                                  \
    T *d = dst.vec(#NAME, count);                                                                      \
    const T *x = a.vec(#NAME, count), *y = b.vec(#NAME, count);                                        \
    no_partial_overlap(#NAME, dst, count, a, count);                                                   \
    no_partial_overlap(#NAME, dst, count, b, count);                                                   \
    a.use(P_V, 0, count, false, #NAME);                                                                \
    b.use(P_V, 0, count, false, #NAME);                                                                \
    dst.use(P_V, 0, count, true, #NAME);                                                               \
    for (int32_t i = 0; i < count; i++) d[i] = (EXPR);                                                 \
  }
MOEC_EMU_BIN(Add, x[i] + y[i])
MOEC_EMU_BIN(Sub, x[i] - y[i])
MOEC_EMU_BIN(Mul, x[i] * y[i])
MOEC_EMU_BIN(Div, x[i] / y[i])
MOEC_EMU_BIN(Max, x[i] > y[i] ? x[i] : y[i])
MOEC_EMU_BIN(Min, x[i] < y[i] ? x[i] : y[i])
#define MOEC_EMU_SCALAR(NAME, EXPR)                                                                    \
  template <typename T>                                                                                \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &a, T s, int32_t count,             \
                   Loc loc = Loc()) {                                                                  \
    moec_emu::issue(P_V, #NAME, loc);                                                                  \
    T *d = dst.vec(#NAME, count);                                                                      \
    const T *x = a.vec(#NAME, count);                                                                  \
    no_partial_overlap(#NAME, dst, count, a, count);                                                   \
    a.use(P_V, 0, count, false, #NAME);                                                                \
    dst.use(P_V, 0, count, true, #NAME);                                                               \
    for (int32_t i = 0; i < count; i++) d[i] = (EXPR);                                                 \
  }
MOEC_EMU_SCALAR(Adds, x[i] + s)
MOEC_EMU_SCALAR(Muls, x[i] * s)
MOEC_EMU_SCALAR(Maxs, x[i] > s ? x[i] : s)
MOEC_EMU_SCALAR(Mins, x[i] < s ? x[i] : s)
#define MOEC_EMU_UN(NAME, EXPR)                                                                        \
  template <typename T>                                                                                \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &a, int32_t count, Loc loc = Loc()) { \
    moec_emu::issue(P_V, #NAME, loc);                                                                  \
    T *d = dst.vec(#NAME, count);                                                                      \
    const T *x = a.vec(#NAME, count);                                                                  \
    no_partial_overlap(#NAME, dst, count, a, count);                                                   \
    a.use(P_V, 0, count, false, #NAME);                                                                \
    dst.use(P_V, 0, count, true, #NAME);                                                               \
    for (int32_t i = 0; i < count; i++) d[i] = (EXPR);                                                 \
  }
MOEC_EMU_UN(Exp, (T)std::exp((double)x[i]))
MOEC_EMU_UN(Ln, (T)std::log((double)x[i]))
MOEC_EMU_UN(Abs, x[i] < 0 ? -x[i] : x[i])
MOEC_EMU_UN(Sqrt, (T)std::sqrt((double)x[i]))
MOEC_EMU_UN(Reciprocal, (T)1 / x[i])
MOEC_EMU_UN(Relu, x[i] > 0 ? x[i] : (T)0)

template <typename T>
inline void Duplicate(const LocalTensor<T> &dst, T v, int32_t count, Loc loc = Loc()) {
  moec_emu::issue(P_V, "Duplicate", loc);
  T *d = dst.vec("Duplicate", count);
  dst.use(P_V, 0, count, true, "Duplicate");
  for (int32_t i = 0; i < count; i++) d[i] = v;
}
// Gather (count form): dst[i] = the element at byte srcBaseAddr + offset[i] of src, for i < count.  Offsets are
// uint32 byte offsets in the Unified Buffer; each address must be a whole element inside src (the hardware
// reads whatever lies there otherwise: the emulator refuses it).  2- and 4-byte element types.
template <typename T>
inline void Gather(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<uint32_t> &offset,
                   uint32_t srcBaseAddr, uint32_t count, Loc loc = Loc()) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4, "Gather takes 2- and 4-byte element types");
  moec_emu::issue(P_V, "Gather", loc);
  T *d = dst.vec("Gather", count);
  const uint32_t *o = offset.vec("Gather", count);
  const T *x = src.vec("Gather", 0);
  const uint64_t n = src.GetSize();
  no_partial_overlap("Gather", dst, count, src, (uint32_t)n, false);
  no_partial_overlap("Gather", dst, count, offset, count, false);
  offset.use(P_V, 0, count, false, "Gather");
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t b = (uint64_t)srcBaseAddr + o[i];
    if (b % sizeof(T) || b / sizeof(T) >= n)
      moec_emu::fail("Gather", "byte address " + std::to_string(b) + " is not a whole element inside the " +
                                   std::to_string(n) + "-element source tensor");
    src.use(P_V, (uint32_t)(b / sizeof(T)), 1, false, "Gather");
  }
  dst.use(P_V, 0, count, true, "Gather");
  for (uint32_t i = 0; i < count; i++) d[i] = x[((uint64_t)srcBaseAddr + o[i]) / sizeof(T)];
}
// the order the vector unit adds: each 256-byte repeat is reduced pairwise (a tree), then the repeats' sums
// again, until one value is left; all in the element type (f32 for float), not in double
template <typename T>
inline T tree_sum(const T *x, uint32_t n) {
  const uint32_t per = 256 / sizeof(T);
  std::vector<T> v(x, x + n);
  while (v.size() > 1) {
    std::vector<T> next;
    for (size_t r = 0; r < v.size(); r += per) {
      size_t m = std::min<size_t>(per, v.size() - r);
      T buf[256 / sizeof(T)];
      for (size_t i = 0; i < m; i++) buf[i] = v[r + i];
      while (m > 1) {
        for (size_t i = 0; i < m / 2; i++) buf[i] = (T)(buf[2 * i] + buf[2 * i + 1]);
        if (m % 2) buf[m / 2] = buf[m - 1];
        m = (m + 1) / 2;
      }
      next.push_back(buf[0]);
    }
    v.swap(next);
  }
  return n ? v[0] : (T)0;
}
// result in dst[0]; the work tensor must hold at least count elements.  dst, src and work share no byte.
template <typename T>
inline void ReduceSum(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &work, int32_t count,
                      Loc loc = Loc()) {
  moec_emu::issue(P_V, "ReduceSum", loc);
  const T *x = src.vec("ReduceSum", count);
  work.vec("ReduceSum", count);
  T *d = dst.vec("ReduceSum", 1);
  no_partial_overlap("ReduceSum", dst, 1, src, count, false);
  no_partial_overlap("ReduceSum", dst, 1, work, count, false);
  no_partial_overlap("ReduceSum", src, count, work, count, false);
  src.use(P_V, 0, count, false, "ReduceSum");
  work.use(P_V, 0, count, true, "ReduceSum");
  dst.use(P_V, 0, 1, true, "ReduceSum");
  d[0] = tree_sum(x, (uint32_t)count);
}
template <typename T>
inline void ReduceMax(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &work, int32_t count,
                      bool calIndex = false, Loc loc = Loc()) {
  moec_emu::issue(P_V, "ReduceMax", loc);
  const T *x = src.vec("ReduceMax", count);
  work.vec("ReduceMax", count);
  if (count < 1) moec_emu::fail("ReduceMax", "count must be >= 1");
  T *d = dst.vec("ReduceMax", calIndex ? 2 : 1);
  no_partial_overlap("ReduceMax", dst, calIndex ? 2 : 1, src, count, false);
  no_partial_overlap("ReduceMax", dst, calIndex ? 2 : 1, work, count, false);
  no_partial_overlap("ReduceMax", src, count, work, count, false);
  src.use(P_V, 0, count, false, "ReduceMax");
  work.use(P_V, 0, count, true, "ReduceMax");
  dst.use(P_V, 0, calIndex ? 2 : 1, true, "ReduceMax");
  int32_t best = 0;
  for (int32_t i = 1; i < count; i++)
    if (x[i] > x[best]) best = i;
  d[0] = x[best];
  if (calIndex) {
    uint32_t u = (uint32_t)best;
    memcpy(&d[1], &u, sizeof(u) < sizeof(T) ? sizeof(u) : sizeof(T));
  }
}
// repeat form: repeatTimes repeats of 256 bytes each, strides in 32-byte blocks (only the limits are
// modelled beyond the arithmetic: repeatTimes <= 255)
template <typename T>
inline void Add(const LocalTensor<T> &dst, const LocalTensor<T> &a, const LocalTensor<T> &b, uint64_t mask,
                uint8_t repeatTimes, int /*params*/, Loc loc = Loc()) {
  (void)mask;
  moec_emu::st().loc = loc;
  if (repeatTimes == 0) moec_emu::fail("Add(repeat)", "repeatTimes must be 1..255");
  Add(dst, a, b, (int32_t)(repeatTimes * 256 / sizeof(T)), loc);
}
inline void check_repeat(int repeatTimes, const char *call) {
  if (repeatTimes < 1 || repeatTimes > 255)
    moec_emu::fail(call, "repeatTimes " + std::to_string(repeatTimes) + " outside 1..255 (one repeat is 256 bytes)");
}
enum class CMPMODE { LT, GT, EQ, LE, GE, NE };
// Compare: one bit per element into dst (uint8), count*sizeof(T) must be a multiple of 256 bytes
template <typename T>
inline void Compare(const LocalTensor<uint8_t> &dst, const LocalTensor<T> &a, const LocalTensor<T> &b, CMPMODE m,
                    uint32_t count, Loc loc = Loc()) {
  moec_emu::issue(P_V, "Compare", loc);
  if (std::is_same<T, bfloat16_t>::value)  // the documented operand types are half and float
    moec_emu::fail("Compare", "bfloat16_t operands: Compare takes half or float (Cast to float first)");
  if ((count * sizeof(T)) % 256)
    moec_emu::fail("Compare", "count*sizeof(T)=" + std::to_string(count * sizeof(T)) +
                                  " bytes is not a multiple of 256 (Compare works on whole repeats)");
  const T *x = a.vec("Compare", count), *y = b.vec("Compare", count);
  uint8_t *d = dst.vec("Compare", (count + 7) / 8);
  no_partial_overlap("Compare", dst, (count + 7) / 8, a, count, false);
  no_partial_overlap("Compare", dst, (count + 7) / 8, b, count, false);
  a.use(P_V, 0, count, false, "Compare");
  b.use(P_V, 0, count, false, "Compare");
  dst.use(P_V, 0, (count + 7) / 8, true, "Compare");
  for (uint32_t i = 0; i < count; i++) {
    bool r = m == CMPMODE::LT ? x[i] < y[i] : m == CMPMODE::GT ? x[i] > y[i] : m == CMPMODE::EQ ? x[i] == y[i]
           : m == CMPMODE::LE ? x[i] <= y[i] : m == CMPMODE::GE ? x[i] >= y[i] : x[i] != y[i];
    d[i / 8] = (uint8_t)((d[i / 8] & ~(1u << (i % 8))) | ((r ? 1u : 0u) << (i % 8)));
  }
}

// ---- synchronisation --------------------------------------------------------------------------------
// PipeBarrier<PIPE_X>: the pipe's later instructions wait for its earlier ones (the cube's PIPE_M between
// accumulating Mmads); PIPE_ALL: every pipe waits for every other.
template <PipeType P>
inline void PipeBarrier(Loc loc = Loc()) {
  moec_emu::State &s = moec_emu::st();
  s.loc = loc;
  if constexpr (P == PIPE_ALL) {
    uint64_t all[moec_emu::NPIPE] = {};
    for (int p = 0; p < moec_emu::NPIPE; p++)
      for (int q = 0; q < moec_emu::NPIPE; q++) all[q] = std::max(all[q], s.vc[p][q]);
    for (int p = 0; p < moec_emu::NPIPE; p++) {
      moec_emu::join(p, all);
      s.barriers[p]++;
    }
  } else {
    static const int map[] = {P_S, P_V, P_M, P_MTE1, P_MTE2, P_MTE3, P_FIX};
    s.barriers[map[(int)P]]++;
  }
}
template <HardEvent E>
inline void SetFlag(int32_t id, Loc loc = Loc()) { moec_emu::set_flag((int)E, id, loc); }
template <HardEvent E>
inline void WaitFlag(int32_t id, Loc loc = Loc()) { moec_emu::wait_flag((int)E, id, loc); }

// GM data cache maintenance: write the line(s) back and drop them from this core's cache
enum class CacheLine { SINGLE_CACHE_LINE, ENTIRE_DATA_CACHE };
enum class DcciDst { CACHELINE_ALL, CACHELINE_UB, CACHELINE_OUT, CACHELINE_ATOMIC };
template <typename T, CacheLine L, DcciDst D = DcciDst::CACHELINE_OUT>
inline void DataCacheCleanAndInvalid(const GlobalTensor<T> &g, Loc loc = Loc()) {
  moec_emu::State &s = moec_emu::st();
  moec_emu::issue(P_S, "DataCacheCleanAndInvalid", loc);
  auto clean = [&](moec_emu::GLine &l) {
    if (l.dirty) {
      l.dirty = false;
      l.w_clk = s.clk[P_S];  // the write-back is a scalar-pipe write: DMA after it still needs S -> MTE sync
      l.w_instr = moec_emu::last_instr();
    }
    l.cached = l.stale = false;
  };
  if constexpr (L == CacheLine::ENTIRE_DATA_CACHE) {
    for (auto &e : s.lines) clean(e.second);
  } else {
    auto it = s.lines.find((uint64_t)(uintptr_t)g.raw() / moec_emu::GM_LINE);
    if (it != s.lines.end()) clean(it->second);
  }
}

// Select (count form, VSEL_TENSOR_TENSOR_MODE): dst[i] = bit i of selMask (the bit-per-element output of
// Compare) ? src0[i] : src1[i].  The other modes are not modelled (refused).
enum class SELMODE { VSEL_CMPMASK_SPR, VSEL_TENSOR_SCALAR_MODE, VSEL_TENSOR_TENSOR_MODE };
template <typename T, typename U>
inline void Select(const LocalTensor<T> &dst, const LocalTensor<U> &selMask, const LocalTensor<T> &src0,
                   const LocalTensor<T> &src1, SELMODE mode, uint32_t count, Loc loc = Loc()) {
  moec_emu::issue(P_V, "Select", loc);
  if (mode != SELMODE::VSEL_TENSOR_TENSOR_MODE)
    moec_emu::fail("Select", "only VSEL_TENSOR_TENSOR_MODE is modelled");
  T *d = dst.vec("Select", count);
  const T *a = src0.vec("Select", count), *b = src1.vec("Select", count);
  const uint32_t mn = (uint32_t)((count + 8 * sizeof(U) - 1) / (8 * sizeof(U)));
  const uint8_t *m = reinterpret_cast<const uint8_t *>(selMask.vec("Select", mn));
  no_partial_overlap("Select", dst, count, src0, count);
  no_partial_overlap("Select", dst, count, src1, count);
  no_partial_overlap("Select", dst, count, selMask, mn, false);
  selMask.use(P_V, 0, mn, false, "Select");
  src0.use(P_V, 0, count, false, "Select");
  src1.use(P_V, 0, count, false, "Select");
  dst.use(P_V, 0, count, true, "Select");
  for (uint32_t i = 0; i < count; i++) d[i] = ((m[i / 8] >> (i % 8)) & 1u) ? a[i] : b[i];
}

// ---- conversions ---------------------------------------------------------------------------------
// Cast(dst, src, mode, count) between float, half, bfloat16_t, int32_t, int16_t, int8_t.  Narrowing
// float -> half/bfloat16_t rounds by `mode` (CAST_NONE and CAST_RINT: nearest, ties to even; bf16 also
// CAST_ROUND/FLOOR/CEIL/TRUNC); float -> integer rounds by `mode` (CAST_NONE is rejected there: such a
// cast must say how it rounds) and saturates; widening casts are exact.
template <typename T> struct is_f16like { static constexpr bool value = false; };
template <> struct is_f16like<half> { static constexpr bool value = true; };
template <> struct is_f16like<bfloat16_t> { static constexpr bool value = true; };

inline float round_float(float v, RoundMode m) {
  switch (m) {
    case RoundMode::CAST_RINT: return std::nearbyint(v);  // default FE_TONEAREST: ties to even
    case RoundMode::CAST_ROUND: return std::round(v);
    case RoundMode::CAST_FLOOR: return std::floor(v);
    case RoundMode::CAST_CEIL: return std::ceil(v);
    case RoundMode::CAST_TRUNC: return std::trunc(v);
    default: return v;
  }
}
inline bfloat16_t bf16_round(float v, RoundMode m) {
  if (m == RoundMode::CAST_NONE || m == RoundMode::CAST_RINT || std::isnan(v)) return bfloat16_t(v);
  uint32_t x = moec_emu::f32_bits(v), lo = x & 0xffff0000u;  // lo: truncated toward zero
  if (lo == x) return bfloat16_t::from_bits((uint16_t)(x >> 16));
  bool neg = x >> 31;
  uint32_t hi = lo + 0x10000u;                                // next away from zero
  uint32_t pick;
  if (m == RoundMode::CAST_TRUNC) pick = lo;
  else if (m == RoundMode::CAST_FLOOR) pick = neg ? hi : lo;
  else if (m == RoundMode::CAST_CEIL) pick = neg ? lo : hi;
  else pick = (x & 0xffffu) >= 0x8000u ? hi : lo;            // CAST_ROUND: ties away from zero
  return bfloat16_t::from_bits((uint16_t)(pick >> 16));
}
template <typename D, typename S>
inline D cast_one(S v, RoundMode m) {
  if constexpr (std::is_same<D, bfloat16_t>::value) {
    return bf16_round((float)v, m);
  } else if constexpr (std::is_same<D, half>::value) {
    if (m != RoundMode::CAST_NONE && m != RoundMode::CAST_RINT && !std::is_same<S, half>::value)
      moec_emu::fail("Cast", "to half: only CAST_RINT/CAST_NONE (nearest, ties to even) are modelled");
    return half((float)v);
  } else if constexpr (std::is_integral<D>::value) {
    float f = (float)v;
    if (!std::is_integral<S>::value) {
      if (m == RoundMode::CAST_NONE) moec_emu::fail("Cast", "float -> integer needs a rounding mode (CAST_RINT, ...)");
      f = round_float(f, m);
    }
    double lo = (double)std::numeric_limits<D>::min(), hi = (double)std::numeric_limits<D>::max();
    double d = std::isnan(f) ? 0.0 : std::min(hi, std::max(lo, (double)f));
    if (std::is_integral<S>::value) d = std::min(hi, std::max(lo, (double)(int64_t)v));
    return (D)(int64_t)d;
  } else if constexpr (std::is_same<D, float>::value && std::is_same<S, float>::value) {
    return round_float(v, m);  // float -> float: rounded to an integer value by `mode` (the Cast type table's
                               // float -> float row; CAST_NONE: a copy)
  } else {
    return (D)(float)v;
  }
}
// the deq scale register: int32 -> half Casts multiply by it (SetDeqScale); nothing else sets it
inline void SetDeqScale(half scale, Loc loc = Loc()) {
  moec_emu::issue(P_V, "SetDeqScale", loc);
  moec_emu::st().deq_set = true;
  moec_emu::st().deq_scale = (float)scale;
}
inline void SetDeqScale(float scale, Loc loc = Loc()) {
  moec_emu::issue(P_V, "SetDeqScale", loc);
  moec_emu::st().deq_set = true;
  moec_emu::st().deq_scale = scale;
}
// the conversions the vector unit has (the Cast documentation's type table, as far as moec uses it): anything
// else, such as int8_t -> float, goes through an intermediate type (int8_t -> half -> float)
template <typename D, typename S>
constexpr bool cast_in_table() {
  using std::is_same;
  if constexpr (is_same<S, half>::value)
    return is_same<D, float>::value || is_same<D, int32_t>::value || is_same<D, int16_t>::value ||
           is_same<D, int8_t>::value || is_same<D, uint8_t>::value;
  else if constexpr (is_same<S, float>::value)
    return is_same<D, half>::value || is_same<D, bfloat16_t>::value || is_same<D, int32_t>::value ||
           is_same<D, int16_t>::value || is_same<D, int64_t>::value || is_same<D, float>::value;
  else if constexpr (is_same<S, bfloat16_t>::value)
    return is_same<D, float>::value || is_same<D, int32_t>::value;
  else if constexpr (is_same<S, int32_t>::value)
    return is_same<D, float>::value || is_same<D, half>::value || is_same<D, int16_t>::value ||
           is_same<D, int64_t>::value;
  else if constexpr (is_same<S, int16_t>::value)
    return is_same<D, half>::value || is_same<D, float>::value;
  else if constexpr (is_same<S, int8_t>::value || is_same<S, uint8_t>::value)
    return is_same<D, half>::value;
  else if constexpr (is_same<S, int64_t>::value)
    return is_same<D, int32_t>::value || is_same<D, float>::value;
  else
    return false;
}
template <typename T> constexpr const char *type_name() {
  return std::is_same<T, half>::value ? "half" : std::is_same<T, float>::value ? "float"
       : std::is_same<T, bfloat16_t>::value ? "bfloat16_t" : std::is_same<T, int32_t>::value ? "int32_t"
       : std::is_same<T, int16_t>::value ? "int16_t" : std::is_same<T, int8_t>::value ? "int8_t"
       : std::is_same<T, uint8_t>::value ? "uint8_t" : std::is_same<T, int64_t>::value ? "int64_t" : "?";
}
template <typename D, typename S>
inline void Cast(const LocalTensor<D> &dst, const LocalTensor<S> &src, RoundMode m, uint32_t count, Loc loc = Loc()) {
  moec_emu::issue(P_V, "Cast", loc);
  if (!cast_in_table<D, S>())
    moec_emu::fail("Cast", std::string(type_name<S>()) + " -> " + type_name<D>() +
                               " is not in the vector unit's conversion table (go through an intermediate type)");
  D *d = dst.vec("Cast", count);
  const S *x = src.vec("Cast", count);
  if ((const void *)d != (const void *)x && sizeof(D) != sizeof(S)) {
    // in-place casts between different widths overwrite their own input: only same-width aliasing is legal
    const uint8_t *db = (const uint8_t *)d, *xb = (const uint8_t *)x;
    if (db < xb + count * sizeof(S) && xb < db + count * sizeof(D))
      moec_emu::fail("Cast", "source and destination of a widening/narrowing Cast overlap");
  }
  src.use(P_V, 0, count, false, "Cast");
  dst.use(P_V, 0, count, true, "Cast");
  if constexpr (std::is_same<D, half>::value && std::is_same<S, int32_t>::value) {
    // int32 -> half is a dequantisation on the vector unit: it multiplies by the deq scale register
    if (!moec_emu::st().deq_set)
      moec_emu::fail("Cast", "int32_t -> half multiplies by the deq scale register, which no SetDeqScale set in this "
                             "block (the codes come out scaled by whatever it holds): cast int32_t -> float -> half, "
                             "or SetDeqScale first");
    const float sc = moec_emu::st().deq_scale;
    for (uint32_t i = 0; i < count; i++) d[i] = half((float)x[i] * sc);
  } else {
    for (uint32_t i = 0; i < count; i++) d[i] = cast_one<D, S>(x[i], m);
  }
}

// ---- cube: GM -> L1 (ND -> NZ), L1 -> L0A/L0B, Mmad, L0C -> GM -----------------------------------------
// Layouts (C0 = 32 bytes of elements: 16 half/bf16, 8 float, 32 int8; one fractal = 16 rows x C0 = 512 B):
//   L1 (NZ, written by DataCopy with Nd2NzParams): the matrix is cut into column blocks C0 wide; block j
//     starts dstNzC0Stride*C0 elements after block j-1, row r of a block sits at r*dstNzNStride*C0; columns
//     past dValue in the last block are zero-filled.  So an [R, C] matrix with dstNzC0Stride = R16 (R
//     rounded up to 16) holds fractal (rb, cb) at fractal index cb*R16/16 + rb.
//   L0A (A [m, k], "ZZ"): fractal (mb, kb) at mb*K1 + kb, rows m inside, k contiguous (K1 = ceil(k/C0)).
//   L0B (B [k, n], "ZN"): fractal (kb, nb) at kb*N1 + nb, each stored n-major: 16 n rows of C0 k values
//     (N1 = ceil(n/16)).  B^T [n, k] in ND, moved to L1 as NZ, is already in this form fractal by fractal;
//     B [k, n] in ND needs each fractal transposed on the way (LoadData ifTranspose, 2-byte types only).
//   L0C (C [m, n], "NZ", 16 x 16 fractals of float/int32): fractal (mb, nb) at nb*M1 + mb (M1 = ceil(m/16)).
// Mmad reads only rows < m, columns < n and k-indices < k: what lies beyond in a fractal is ignored.
struct Nd2NzParams {
  uint16_t ndNum = 1, nValue = 0, dValue = 0, srcNdMatrixStride = 0, srcDValue = 0, dstNzC0Stride = 0,
           dstNzNStride = 1, dstNzMatrixStride = 0;
};
struct LoadData2DParams {
  uint16_t startIndex = 0;
  uint8_t repeatTimes = 0;
  uint16_t srcStride = 0;
  uint8_t sid = 0;
  uint16_t dstGap = 0;
  bool ifTranspose = false;
  uint8_t addrMode = 0;
};
struct MmadParams {
  uint16_t m = 0, n = 0, k = 0;
  bool isBias = false;
  int16_t fmOffset = 0;
  bool enSsparse = false, enWinogradA = false, enWinogradB = false;
  uint8_t unitFlag = 0;
  bool kDirectionAlign = false;  // float inputs: k blocks of 16 instead of 8 in L0A
  bool cmatrixSource = false;    // true: the initial C comes from the bias table (not modelled)
  bool cmatrixInitVal = true;    // true: C = A*B; false: C += A*B
};
enum QuantMode_t { NoQuant, F322F16, F322BF16, DEQF16, VDEQF16, QF322B8_PRE, VQF322B8_PRE, REQ8, VREQ8 };
struct FixpipeParamsV220 {
  uint16_t nSize = 0, mSize = 0;
  uint16_t srcStride = 0;   // L0C: distance between 16-column blocks, in 16-element fractal rows (>= mSize, %16 == 0)
  uint32_t dstStride = 0;   // GM (row-major): elements between rows
  QuantMode_t quantPre = NoQuant;
  uint64_t deqScalar = 0;   // DEQF16: the scale's float bits in the low 32 bits
  uint16_t ndNum = 1, srcNdStride = 0, dstNdStride = 0;
  bool reluEn = false;
  uint8_t unitFlag = 0;
  bool isChannelSplit = false;
};
enum class CO2Layout { NZ, ROW_MAJOR, COLUMN_MAJOR };
struct FixpipeConfig {
  CO2Layout format;
};
inline constexpr FixpipeConfig CFG_NZ = {CO2Layout::NZ};
inline constexpr FixpipeConfig CFG_ROW_MAJOR = {CO2Layout::ROW_MAJOR};

template <typename T>
constexpr uint32_t c0_of() { return 32 / sizeof(T); }
inline bool is_l1(TPosition p) { return p == TPosition::A1 || p == TPosition::B1; }

template <typename T>
inline void DataCopy(const LocalTensor<T> &dst, const GlobalTensor<T> &src, const Nd2NzParams &p, Loc loc = Loc()) {
  const char *call = "DataCopy(GM->L1, Nd2NzParams)";
  moec_emu::issue(P_MTE2, call, loc);
  if (!dst.rec() || !is_l1(dst.GetPosition()))
    moec_emu::fail(call, std::string("ND->NZ copies land in L1 (A1/B1), not ") + pos_name(dst.GetPosition()));
  const uint32_t C0 = c0_of<T>();
  if ((dst.offset() * sizeof(T)) % 32) moec_emu::fail(call, "L1 destination not 32-byte aligned");
  if (p.ndNum < 1 || p.nValue < 1 || p.dValue < 1) moec_emu::fail(call, "ndNum, nValue and dValue must be >= 1");
  if (p.nValue > 16384) moec_emu::fail(call, "nValue " + std::to_string(p.nValue) + " > 16384");
  if (p.srcDValue < p.dValue)
    moec_emu::fail(call, "srcDValue " + std::to_string(p.srcDValue) + " (source row length) < dValue " +
                             std::to_string(p.dValue));
  if (p.dstNzNStride < 1 || p.dstNzNStride > 16384)
    moec_emu::fail(call, "dstNzNStride " + std::to_string(p.dstNzNStride) + " outside 1..16384");
  if (p.ndNum > 4095) moec_emu::fail(call, "ndNum " + std::to_string(p.ndNum) + " > 4095");
  if (p.dstNzC0Stride < 1 || p.dstNzC0Stride > 16384)
    moec_emu::fail(call, "dstNzC0Stride " + std::to_string(p.dstNzC0Stride) + " outside 1..16384");
  uint32_t blocks = (p.dValue + C0 - 1) / C0;
  // the destination may not overlap itself: column block j+1 starts after row nValue-1 of block j
  if (blocks > 1 && p.dstNzC0Stride < (uint32_t)(p.nValue - 1) * p.dstNzNStride + 1)
    moec_emu::fail(call, "dstNzC0Stride " + std::to_string(p.dstNzC0Stride) + " makes the NZ column blocks overlap ("
                             + std::to_string(p.nValue) + " rows " + std::to_string(p.dstNzNStride) + " C0 apart)");
  uint64_t src_need = (uint64_t)(p.ndNum - 1) * p.srcNdMatrixStride + (uint64_t)(p.nValue - 1) * p.srcDValue + p.dValue;
  uint64_t dst_need = (uint64_t)(p.ndNum - 1) * p.dstNzMatrixStride + (uint64_t)(blocks - 1) * p.dstNzC0Stride * C0 +
                      (uint64_t)(p.nValue - 1) * p.dstNzNStride * C0 + C0;
  if (dst_need > dst.GetSize())
    moec_emu::fail(call, "the NZ image needs " + std::to_string(dst_need) + " elements, the L1 tensor holds " +
                             std::to_string(dst.GetSize()) + " (local buffer overflow)");
  const T *sp = src.span(call, src_need);
  T *d = dst.addr(call, (uint32_t)dst_need);
  for (uint32_t i = 0; i < p.ndNum; i++)
    for (uint32_t r = 0; r < p.nValue; r++)
      src.dma(P_MTE2, (uint64_t)i * p.srcNdMatrixStride + (uint64_t)r * p.srcDValue, p.dValue, false, call);
  dst.use(P_MTE2, 0, (uint32_t)dst_need, true, call);
  for (uint32_t i = 0; i < p.ndNum; i++)
    for (uint32_t r = 0; r < p.nValue; r++)
      for (uint32_t c = 0; c < blocks * C0; c++) {
        uint64_t di = (uint64_t)i * p.dstNzMatrixStride + (uint64_t)(c / C0) * p.dstNzC0Stride * C0 +
                      (uint64_t)r * p.dstNzNStride * C0 + c % C0;
        d[di] = c < p.dValue ? sp[(uint64_t)i * p.srcNdMatrixStride + (uint64_t)r * p.srcDValue + c] : T(0);
      }
  moec_emu::st().nd2nz_calls++;
}

template <typename T>
inline void LoadData(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LoadData2DParams &p, Loc loc = Loc()) {
  const char *call = "LoadData(L1->L0, LoadData2DParams)";
  moec_emu::issue(P_MTE1, call, loc);
  if (!src.rec() || !is_l1(src.GetPosition()))
    moec_emu::fail(call, std::string("the source must be in L1 (A1/B1), got ") + pos_name(src.GetPosition()));
  TPosition dp = dst.GetPosition();
  if (!dst.rec() || (dp != TPosition::A2 && dp != TPosition::B2))
    moec_emu::fail(call, std::string("the destination must be L0A (A2) or L0B (B2), got ") + pos_name(dp));
  if (p.repeatTimes < 1) moec_emu::fail(call, "repeatTimes must be 1..255 (one fractal of 512 bytes per repeat)");
  if (p.ifTranspose && dp != TPosition::B2) moec_emu::fail(call, "ifTranspose is only available into L0B (B2)");
  if (p.ifTranspose && sizeof(T) != 2)
    moec_emu::fail(call, "ifTranspose transposes 16x16 fractals of 2-byte types only (use LoadDataWithTranspose)");
  if ((dst.offset() * sizeof(T)) % 512) moec_emu::fail(call, "L0 destination not 512-byte (fractal) aligned");
  if ((src.offset() * sizeof(T)) % 512) moec_emu::fail(call, "L1 source not fractal (512-byte) aligned");
  const uint32_t F = 512 / sizeof(T);  // elements per fractal
  uint32_t src_frac = (uint32_t)p.startIndex + (uint32_t)(p.repeatTimes - 1) * p.srcStride + 1;
  uint32_t dst_frac = (uint32_t)(p.repeatTimes - 1) * (1u + p.dstGap) + 1;
  if ((uint64_t)src_frac * F > src.GetSize())
    moec_emu::fail(call, "reads fractal " + std::to_string(src_frac - 1) + " past the L1 tensor (" +
                             std::to_string(src.GetSize() / F) + " fractals)");
  if ((uint64_t)dst_frac * F > dst.GetSize())
    moec_emu::fail(call, "writes fractal " + std::to_string(dst_frac - 1) + " past the L0 tensor (" +
                             std::to_string(dst.GetSize() / F) + " fractals)");
  const T *s = src.addr(call, src_frac * F);
  T *d = dst.addr(call, dst_frac * F);
  for (uint32_t r = 0; r < p.repeatTimes; r++) {
    const T *sf = s + (uint64_t)(p.startIndex + r * p.srcStride) * F;
    T *df = d + (uint64_t)r * (1u + p.dstGap) * F;
    src.use(P_MTE1, (p.startIndex + r * p.srcStride) * F, F, false, call);
    dst.use(P_MTE1, r * (1u + p.dstGap) * F, F, true, call);
    if (p.ifTranspose) {
      for (uint32_t a = 0; a < 16; a++)
        for (uint32_t b = 0; b < 16; b++) df[a * 16 + b] = sf[b * 16 + a];
    } else {
      memcpy(df, sf, 512);
    }
  }
  moec_emu::st().loaddata_calls++;
}

template <typename C, typename A, typename B>
constexpr bool mmad_types() {
  return (std::is_same<C, float>::value && std::is_same<A, half>::value && std::is_same<B, half>::value) ||
         (std::is_same<C, float>::value && std::is_same<A, bfloat16_t>::value && std::is_same<B, bfloat16_t>::value) ||
         (std::is_same<C, float>::value && std::is_same<A, float>::value && std::is_same<B, float>::value) ||
         (std::is_same<C, int32_t>::value && std::is_same<A, int8_t>::value && std::is_same<B, int8_t>::value);
}

template <typename C, typename A, typename B>
inline void Mmad(const LocalTensor<C> &c, const LocalTensor<A> &a, const LocalTensor<B> &b, const MmadParams &p,
                 Loc loc = Loc()) {
  moec_emu::issue(P_M, "Mmad", loc);
  if (p.m > 4095 || p.n > 4095 || p.k > 4095)
    moec_emu::fail("Mmad", "m, n, k must be <= 4095 (got " + std::to_string(p.m) + ", " + std::to_string(p.n) + ", " +
                               std::to_string(p.k) + ")");
  if (a.GetPosition() != TPosition::A2 || b.GetPosition() != TPosition::B2 || c.GetPosition() != TPosition::CO1)
    moec_emu::fail("Mmad", std::string("operands must be in A2 (L0A), B2 (L0B) and CO1 (L0C), got ") +
                               pos_name(a.GetPosition()) + ", " + pos_name(b.GetPosition()) + ", " +
                               pos_name(c.GetPosition()));
  if (!mmad_types<C, A, B>())
    moec_emu::fail("Mmad", "unsupported types: the cube takes half/bfloat16_t/float (float C) or int8_t (int32_t C)");
  if (p.isBias || p.cmatrixSource) moec_emu::fail("Mmad", "bias-table initialisation is not modelled");
  if (p.m == 0 || p.n == 0 || p.k == 0) return;
  if ((a.offset() * sizeof(A)) % 512 || (b.offset() * sizeof(B)) % 512)
    moec_emu::fail("Mmad", "L0A/L0B operands must start on a 512-byte fractal boundary");
  if ((c.offset() * sizeof(C)) % 64) moec_emu::fail("Mmad", "L0C operand must start on a 64-byte boundary");
  const uint32_t C0 = c0_of<A>();
  const uint32_t M1 = (p.m + 15) / 16, N1 = (p.n + 15) / 16;
  const uint32_t K1 = std::is_same<A, float>::value && p.kDirectionAlign ? (p.k + 15) / 16 * 2 : (p.k + C0 - 1) / C0;
  const A *x = a.addr("Mmad", M1 * K1 * 16 * C0);
  const B *y = b.addr("Mmad", K1 * N1 * 16 * C0);
  C *z = c.addr("Mmad", M1 * N1 * 256);
  a.use(P_M, 0, M1 * K1 * 16 * C0, false, "Mmad");
  b.use(P_M, 0, K1 * N1 * 16 * C0, false, "Mmad");
  if (!p.cmatrixInitVal) c.use(P_M, 0, M1 * N1 * 256, false, "Mmad");
  c.use(P_M, 0, M1 * N1 * 256, true, "Mmad");
  // accumulating into the C of the previous Mmad: the documentation requires PipeBarrier<PIPE_M> between
  // the two when (m/16)*(n/16) < 10 (a small Mmad finishes before the next one reads its C otherwise)
  {
    moec_emu::State &s = moec_emu::st();
    const size_t lo = c.byte_lo(), hi = lo + (size_t)M1 * N1 * 256 * sizeof(C);
    if (!p.cmatrixInitVal && s.last_mmad_c == (void *)c.rec() && lo < s.last_mmad_hi && s.last_mmad_lo < hi &&
        s.barriers[P_M] == s.last_mmad_barriers && M1 * N1 < 10)
      moec_emu::fail("Mmad", "accumulates into the L0C result of the previous Mmad with (m/16)*(n/16) = " +
                                 std::to_string(M1 * N1) + " < 10 and no PipeBarrier<PIPE_M>() between them");
    s.last_mmad_c = (void *)c.rec();
    s.last_mmad_lo = lo;
    s.last_mmad_hi = hi;
    s.last_mmad_barriers = s.barriers[P_M];
  }
  for (uint32_t i = 0; i < p.m; i++)
    for (uint32_t j = 0; j < p.n; j++) {
      C *zp = z + ((j / 16) * M1 + i / 16) * 256 + (i % 16) * 16 + j % 16;
      C acc = p.cmatrixInitVal ? (C)0 : *zp;
      const A *xr = x + (i / 16) * K1 * 16 * C0 + (i % 16) * C0;
      const B *yc = y + (j / 16) * 16 * C0 + (j % 16) * C0;
      // f32 (int32) arithmetic in the cube's order: the products of one C0-wide k block summed as a
      // pairwise tree, each block's sum added to the accumulator in turn (a model of the order, see README)
      for (uint32_t q0 = 0; q0 < p.k; q0 += C0) {
        C prod[64];
        const uint32_t nk = std::min<uint32_t>(C0, p.k - q0), kb = q0 / C0;
        for (uint32_t kc = 0; kc < nk; kc++) {
          C av, bv;
          if constexpr (std::is_same<C, int32_t>::value) {
            av = (int32_t)xr[kb * 16 * C0 + kc];
            bv = (int32_t)yc[kb * N1 * 16 * C0 + kc];
          } else {
            av = (float)xr[kb * 16 * C0 + kc];
            bv = (float)yc[kb * N1 * 16 * C0 + kc];
          }
          prod[kc] = av * bv;
        }
        for (uint32_t m = nk; m > 1; m = (m + 1) / 2) {
          for (uint32_t t = 0; t < m / 2; t++) prod[t] = prod[2 * t] + prod[2 * t + 1];
          if (m % 2) prod[m / 2] = prod[m - 1];
        }
        acc += prod[0];
      }
      *zp = acc;
    }
  moec_emu::State &s = moec_emu::st();
  s.mmad_calls++;
  s.mmad_macs += (uint64_t)p.m * p.n * p.k;
  s.mmad_by_type[std::is_same<A, float>::value ? 0 : std::is_same<A, bfloat16_t>::value ? 1
                 : std::is_same<A, half>::value ? 2 : 3]++;
}

// L0C -> GM through the fixpipe: NZ fractals out as a row-major (ND) matrix, with the optional cast
template <typename T, typename U, const FixpipeConfig &config = CFG_ROW_MAJOR>
inline void Fixpipe(const GlobalTensor<T> &dst, const LocalTensor<U> &src, const FixpipeParamsV220 &p, Loc loc = Loc()) {
  const char *call = "Fixpipe(L0C->GM)";
  moec_emu::issue(P_FIX, call, loc);
  if (!src.rec() || src.GetPosition() != TPosition::CO1)
    moec_emu::fail(call, std::string("the source must be in CO1 (L0C), got ") + pos_name(src.GetPosition()));
  if (config.format != CO2Layout::ROW_MAJOR) moec_emu::fail(call, "only the ROW_MAJOR (ND) output is modelled");
  if (p.ndNum != 1) moec_emu::fail(call, "ndNum > 1 is not modelled");
  if (p.mSize < 1 || p.nSize < 1) moec_emu::fail(call, "mSize and nSize must be >= 1");
  if (p.nSize > 4095) moec_emu::fail(call, "nSize " + std::to_string(p.nSize) + " > 4095");
  if (p.srcStride < p.mSize || p.srcStride % 16)
    moec_emu::fail(call, "srcStride " + std::to_string(p.srcStride) + " must be a multiple of 16 and >= mSize " +
                             std::to_string(p.mSize));
  if (p.dstStride < p.nSize) moec_emu::fail(call, "dstStride (row length in GM) < nSize");
  bool f32src = std::is_same<U, float>::value, i32src = std::is_same<U, int32_t>::value;
  bool ok = (p.quantPre == NoQuant && std::is_same<T, U>::value && (f32src || i32src)) ||
            (p.quantPre == F322F16 && f32src && std::is_same<T, half>::value) ||
            (p.quantPre == F322BF16 && f32src && std::is_same<T, bfloat16_t>::value) ||
            (p.quantPre == DEQF16 && i32src && std::is_same<T, half>::value);
  if (!ok) moec_emu::fail(call, "quantPre does not match the source/destination types (NoQuant: same type; "
                                "F322F16: float->half; F322BF16: float->bfloat16_t; DEQF16: int32_t->half)");
  const uint32_t N1 = (p.nSize + 15) / 16;
  const U *s = src.addr(call, ((N1 - 1) * p.srcStride + p.mSize) * 16);
  T *d = dst.span(call, (uint64_t)(p.mSize - 1) * p.dstStride + p.nSize);
  src.use(P_FIX, 0, ((N1 - 1) * p.srcStride + p.mSize) * 16, false, call);
  for (uint32_t i = 0; i < p.mSize; i++) dst.dma(P_FIX, (uint64_t)i * p.dstStride, p.nSize, true, call);
  float deq = moec_emu::bits_f32((uint32_t)(p.deqScalar & 0xffffffffu));
  for (uint32_t i = 0; i < p.mSize; i++)
    for (uint32_t j = 0; j < p.nSize; j++) {
      U v = s[((j / 16) * p.srcStride + i) * 16 + j % 16];
      if (p.reluEn && v < (U)0) v = (U)0;
      T &o = d[(uint64_t)i * p.dstStride + j];
      if constexpr (std::is_same<U, int32_t>::value && std::is_same<T, half>::value) o = half((float)v * deq);
      else o = T(v);
    }
  moec_emu::st().fixpipe_calls++;
}

}  // namespace AscendC
